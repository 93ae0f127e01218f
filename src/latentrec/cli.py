"""The `latentrec` command line: the only module that reads argv, prints or exits."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from latentrec import __version__, checkpoints, distributed, memory
from latentrec.data import (
    BUNDLED,
    LARGEST_SEED,
    Ratings,
    Split,
    as_trained,
    combine,
    is_database_url,
    load_ratings,
)
from latentrec.errors import (
    ConfigError,
    DataError,
    LatentrecError,
    ModelFileError,
    UnknownIdError,
    listed,
)
from latentrec.metrics import LARGEST_K, RANKING_METRICS, cutoff_of
from latentrec.models import DEFAULT_MODEL, MODELS, model_class
from latentrec.recommend import (
    Recommendation,
    Recommender,
    evaluate_ranking,
    relevance_floor,
)
from latentrec.storage import CHECKPOINT_DIR, check_publish, check_target, load, publish, save
from latentrec.training import (
    STEP_PENALTIES,
    History,
    TrainConfig,
    evaluate,
    fit,
    make_configs,
    option_owners,
    resolve_device,
)
from latentrec.tuning import (
    DEFAULT_TRIALS,
    TuneResult,
    TuneTrial,
    check_output,
    check_read_alike,
    read_tuned,
    tune,
)

MODEL_NAMES = ", ".join(f"{name} ({cls.__name__})" for name, cls in MODELS.items())
STEPPED = [name for name, cls in MODELS.items() if "solve" not in cls.engines]
# the model config fields the command line sets, by option
MODEL_OPTIONS = {
    "n_factors": "--factors",
    "layers": "--layers",
    "dropout": "--dropout",
    "emb_dropout": "--emb-dropout",
    "l2": "--l2",
    "alpha": "--alpha",
    "iterations": "--iterations",
    "samples": "--samples",
    "burn_in": "--burn-in",
    "kept": "--kept",
    "implicit_signals": "--implicit-signals",
    "item_features": "--item-features",
    "feature_weight": "--feature-weight",
    "session_weight": "--session-weight",
    "session_gap": "--session-gap",
    "session_run": "--session-run",
}
TABLE_ROWS = 20  # epochs or iterations a training table shows at most
# training options that only models trained by steps take
STEP_OPTIONS = {
    "epochs": "--epochs",
    "lr": "--lr",
    "wd": "--wd",
    "batch_size": "--batch-size",
    "accumulate": "--accumulate",
    "effective_batch_size": "--effective-batch-size",
    "negatives": "--negatives",
    "checkpoint_every": "--checkpoint-every",
    "optimizer": "--optimizer",
    "order": "--order",
}


class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a value out of range) as one line and exit status 2,
    instead of click's usage box."""

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # click's errors: usage, bad values, files
            context = getattr(err, "ctx", None)
            if type(err).__name__ == "NoArgsIsHelpError":
                pass  # the help was printed as the error was made
            else:
                where = context.command_path if context is not None else "latentrec"
                message = err.format_message() if hasattr(err, "format_message") else str(err)
                errors.print(
                    Text.assemble(
                        ("error: ", "bold red"),
                        " ".join(message.split()) + f" (see `{where} --help`)",
                    ),
                    soft_wrap=True,
                )
            code = getattr(err, "exit_code", 2)
        except typer.Abort:
            errors.print("aborted")
            code = 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
    help="Learn latent factors from ratings and recommend (MovieLens sample bundled).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# ids, titles and messages come from data and users: printed verbatim, never read as markup
console = Console(highlight=False, markup=False, emoji=False)
errors = Console(stderr=True, highlight=False, markup=False, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])

DataOption = Annotated[
    str,
    typer.Option(
        "--data",
        help=f"'{BUNDLED}', 'synthetic:ratings=N,users=U,items=I,seed=S', a MovieLens "
        "directory, or a CSV/TSV/Parquet file.",
    ),
]
UserCol = Annotated[str | None, typer.Option(help="User column of a table file.")]
ItemCol = Annotated[str | None, typer.Option(help="Item column of a table file.")]
RatingCol = Annotated[str | None, typer.Option(help="Rating column of a table file.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="End with one line of JSON on stdout.")]
LastN = Annotated[int | None, typer.Option(help="Time split: each user's last n.")]
Cutoff = Annotated[float | None, typer.Option(help="Time split: timestamps >= cutoff.")]
CountCol = Annotated[
    str | None, typer.Option(help="Interactions: the column that counts them (weights).")
]
K = Annotated[int, typer.Option("-k", "--k", min=1, max=10_000, help="How many items.")]
RatingModel = Annotated[
    Path | None,
    typer.Option(
        help="A rating model's directory to pair with a ranking model: its predicted ratings "
        "go beside the ranking model's list."
    ),
]


def user_errors(command: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except LatentrecError as err:
            fail(str(err))
        except OSError as err:
            fail(_os_error(err))
        except MemoryError:
            fail("not enough memory; use fewer --factors or a smaller --batch-size")
        except RuntimeError as err:  # torch's allocators say so with a RuntimeError
            if not _out_of_memory(err):
                raise
            fail(
                "not enough memory for this model and batch; use fewer --factors or --layers, "
                f"or a smaller --batch-size ({str(err).splitlines()[0][:200]})"
            )
        except KeyboardInterrupt:
            errors.print("interrupted; nothing was saved")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# control characters in data (an escape sequence in a title) would drive the terminal
_CONTROLS = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}


def shown(value: object) -> str:
    """`value` as text for the terminal: verbatim, but control characters as `\\xNN`."""
    return str(value).translate(_CONTROLS)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` as one line on stderr and exit with `code`."""
    line = shown(" ".join(message.splitlines()))  # one line, whatever the message holds
    errors.print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)
    raise typer.Exit(code)


def _out_of_memory(err: RuntimeError) -> bool:
    oom = getattr(torch, "OutOfMemoryError", ())
    text = str(err)
    return isinstance(err, oom) or "can't allocate memory" in text or "out of memory" in text


def _os_error(err: OSError) -> str:
    """`cannot write out/model: Permission denied`: what was asked for and why not."""
    reason = err.strerror or str(err)
    if err.filename is None:
        return reason
    return f"{Path(err.filename)}: {reason}"


def print_json(data: Any) -> None:
    """One line of strict JSON on stdout: non-finite numbers become null."""
    print(json.dumps(_finite(data), allow_nan=False, default=str))


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def _version(value: bool) -> None:
    if value:
        console.print(f"latentrec {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """latentrec: collaborative filtering with PyTorch."""


def _layers(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"--layers must be comma-separated widths like 100,50, got {text!r}"
        ) from None
    if not widths:
        raise ConfigError(f"--layers needs at least one width, got {text!r}")
    return widths


def _check_model_options(model: str, given: dict[str, Any]) -> None:
    """A model option given for a model whose config lacks it, or a step option for a solved
    model, is one line naming what it applies to; so is a bad value of a model or a training
    option, before any data is read."""
    cls = model_class(model)
    if "solve" in cls.engines:
        given_steps = [option for name, option in STEP_OPTIONS.items() if given.get(name)]
        if given_steps:
            raise ConfigError(
                f"{', '.join(given_steps)} train by steps; the {model} model is solved"
                + (", set by --iterations" if "iterations" in cls.Config.field_names() else "")
            )
    fields = cls.Config.field_names()
    for name, option in MODEL_OPTIONS.items():
        if given.get(name) is not None and model not in (owners := option_owners(name)):
            noun = "models" if len(owners) > 1 else "model"
            raise ConfigError(f"{option} applies to the {listed(owners)} {noun}, not {model}")
    # the values themselves, before any data is read (the data's shape is filled in later)
    cls.Config(
        **{
            name: given[name]
            for name in fields & MODEL_OPTIONS.keys()
            if given.get(name) is not None
        }
    )
    training = [*STEP_OPTIONS, "memory_budget"]
    if "solve" not in cls.engines:
        training += [name for name in STEP_PENALTIES if name not in fields]
    TrainConfig.for_model(model, **{k: given[k] for k in training if given.get(k) is not None})


def _rating_range(text: str) -> list[float]:
    """`"1,10"` -> [1.0, 10.0]; `"-2,2"` too."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise ConfigError(
            f"--rating-range takes LOW,HIGH like 1,10 or -2.5,2.5, got {text!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"--rating-range needs finite LOW < HIGH, got {text!r}")
    largest = 3.4028234663852886e38  # float32's largest
    if max(-low, high) > largest:
        raise ConfigError(
            f"--rating-range {text} reaches past {largest:.3g}, the largest rating float32 "
            "(in which ratings are kept) holds; give a range within it"
        )
    return [low, high]


def _load_split(
    data: str,
    test: Path | None,
    test_fraction: float,
    seed: int,
    split: str,
    last_n: int | None,
    cutoff: float | None,
    columns: dict[str, Any],
    positive_min: float | None = None,
    also: str | None = None,
) -> tuple[Split, Ratings | None]:
    """The train and test parts, and with --positive-min the training ratings below it (held
    out as the liked ones are): the model never trains on them, but its lists leave them out."""
    every = _load_sources(data, also, columns)
    ratings = _positives(every, positive_min)
    below = None
    if positive_min is not None:
        below = every.take(np.flatnonzero(every.rating < positive_min))
    if test is not None:
        parts = Split.from_parts(ratings, _positives(load_ratings(test, **columns), positive_min))
        return parts, below
    parts = ratings.split(test_fraction, seed=seed, by=split, last_n=last_n, cutoff=cutoff)
    if below is not None and len(below):  # its own draw: either part may come out empty
        held_out = below.test_mask(test_fraction, seed=seed, by=split, last_n=last_n, cutoff=cutoff)
        below = below.take(np.flatnonzero(~held_out))
    return parts, below


def _resume_command(where: Path, notes: dict[str, Any]) -> str:
    """How to continue the run whose checkpoint `notes` describe: under torchrun with as many
    processes as wrote it (the checkpoint refuses another count)."""
    processes = int(notes.get("world_size", 1))
    if processes > 1:
        return (
            f"`torchrun <the options it started with> -m latentrec train --resume {where}` "
            f"({processes} processes in all)"
        )
    return f"`latentrec train --resume {where}`"


def _given_options(context_: typer.Context) -> set[str]:
    """The names of the options given on the command line (or through the environment)."""
    return {
        parameter.name
        for parameter in context_.command.params
        if parameter.name is not None
        and getattr(context_.get_parameter_source(parameter.name), "name", None)
        in ("COMMANDLINE", "ENVIRONMENT")
    }


def _check_split_options(given: set[str], test: Path | None, split: str) -> None:
    """ConfigError for a split option that the split asked for would ignore."""
    if test is not None:
        ignored = [
            f"--{n.replace('_', '-')}"
            for n in ("split", "test_fraction", "last_n", "cutoff")
            if n in given
        ]
        if ignored:
            raise ConfigError(
                f"--test names the test set, so there is no split: leave out {', '.join(ignored)}"
            )
    elif split == "time" and "test_fraction" in given:
        raise ConfigError(
            "--test-fraction holds out a share in the random and user splits; the time split "
            "holds out each user's --last-n latest ratings or those from --cutoff on"
        )


def _load_sources(data: str, also: str | None, columns: dict[str, Any]) -> Ratings:
    """`--data`, with `--with`'s source added when given. The column options are for files; a
    database takes only --implicit. What the loading warns of is printed."""
    loaded = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for source in (data, also) if also is not None else (data,):
            database = is_database_url(source) and also is not None
            options = {"implicit": columns["implicit"]} if database else columns
            loaded.append(load_ratings(source, **options))
    for warning in caught:
        errors.print(shown(f"warning: {warning.message}"), soft_wrap=True)
    return combine(*loaded) if len(loaded) == 2 else loaded[0]


def _positives(ratings: Ratings, minimum: float | None) -> Ratings:
    """`--positive-min`: the ratings at or above it, as interactions."""
    if minimum is None:
        return ratings
    if ratings.implicit:
        raise ConfigError(
            f"--positive-min picks liked ratings, and {ratings.source} holds interactions (no "
            "ratings, or --implicit); drop one of them"
        )
    kept = ratings.positives(minimum)
    if len(kept) == 0:
        low, high = ratings.rating_range
        raise DataError(
            f"no rating of {ratings.source} is at or above --positive-min {minimum:g} (they run "
            f"from {low:g} to {high:g}); choose a lower one"
        )
    return kept


@app.command()
@user_errors
def train(
    context_: typer.Context,
    data: DataOption = BUNDLED,
    with_: Annotated[
        str | None,
        typer.Option(
            "--with",
            help="A second source to train on beside --data (any --data value), e.g. "
            "--data sqlite:///latentrec.db --with movielens-small; a database's visitors "
            "become users 'visitor:<id>'.",
        ),
    ] = None,
    test: Annotated[
        Path | None, typer.Option(help="A separate test file instead of a split.")
    ] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of ratings held out.")] = 0.1,
    split: Annotated[str, typer.Option(help="random, user (per-user holdout) or time.")] = "random",
    last_n: LastN = None,
    cutoff: Cutoff = None,
    seed: Annotated[
        int,
        typer.Option(help="Seeds the split, initialisation and order.", min=0, max=LARGEST_SEED),
    ] = TrainConfig.seed,
    model: Annotated[
        str | None,
        typer.Option(help=f"{MODEL_NAMES}; default {DEFAULT_MODEL}, or the --config file's."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A file written by `latentrec tune --out`: its model and options; options "
            "given here win over the file's."
        ),
    ] = None,
    factors: Annotated[int | None, typer.Option(help="Factors of the dot model.")] = None,
    layers: Annotated[str | None, typer.Option(help="Hidden widths of the nn model.")] = None,
    dropout: Annotated[float | None, typer.Option(help="nn: dropout after hidden layers.")] = None,
    emb_dropout: Annotated[
        float | None, typer.Option(help="nn: dropout on the embeddings.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (one-cycle).")] = None,
    wd: Annotated[float | None, typer.Option(help="Weight decay.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Ratings per micro-batch.")] = None,
    accumulate: Annotated[int | None, typer.Option(help="Micro-batches per step.")] = None,
    effective_batch_size: Annotated[
        int | None,
        typer.Option(
            help="Ratings per optimiser step in each process (sets --accumulate); under "
            "torchrun a step covers this times the number of processes."
        ),
    ] = None,
    memory_budget: Annotated[
        str | None,
        typer.Option(help="Memory one step may use (e.g. 2GiB): picks batch and accumulate."),
    ] = None,
    negatives: Annotated[
        int | None,
        typer.Option(help="Sampled unrated items per rating: train for top-N ranking."),
    ] = None,
    rating_range: Annotated[
        str | None,
        typer.Option(
            help="LOWEST,HIGHEST: the scale ratings are given on (e.g. 1,10), if the training "
            "ratings do not span it. Default: the lowest and highest training rating."
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = TrainConfig.device,
    engine: Annotated[
        str,
        typer.Option(
            help="auto, fused (compiled CPU kernel, for models that have one) or autograd."
        ),
    ] = TrainConfig.engine,
    optimizer: Annotated[
        str | None,
        typer.Option(
            help="adagrad (row-wise: one number per table row, the dot model's default) or "
            "adamw; each comes with its own --lr, --wd and --epochs defaults."
        ),
    ] = None,
    order: Annotated[
        str | None,
        typer.Option(
            help="shuffled (the default) or blocked: each epoch visits blocks of 8,192 users x "
            "8,192 items in a random order, its ratings shuffled within each; at scale an "
            "epoch reads fewer rows from memory, for a little accuracy per epoch."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Save the model to this directory.")] = None,
    publish_to: Annotated[
        Path | None,
        typer.Option(
            "--publish",
            help="Save the model as a new version in this folder (FOLDER/v-DATE-TIME-XXXXXX) "
            "and point FOLDER/current at it, for `latentrec serve FOLDER/current`; instead "
            "of --out.",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(min=1, help="Write a checkpoint to OUT/checkpoint every N optimiser steps."),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run that was saving to this --out directory from its last "
            "checkpoint, with the options it was started with."
        ),
    ] = None,
    user_col: UserCol = None,
    item_col: ItemCol = None,
    rating_col: RatingCol = None,
    implicit: Annotated[
        bool,
        typer.Option(
            help="Every rated pair is an interaction (the rating values are not used); a file "
            "with no rating column is interactions anyway."
        ),
    ] = False,
    count_col: CountCol = None,
    positive_min: Annotated[
        float | None,
        typer.Option(help="Ratings at or above this become interactions; the rest are dropped."),
    ] = None,
    relevant_min: Annotated[
        float | None,
        typer.Option(
            help="Ranking metrics: only test ratings at or above this are relevant (with "
            "--positive-min, at most it: the interactions keep no stars)."
        ),
    ] = None,
    l2: Annotated[
        float | None,
        typer.Option(
            help="L2 penalty. ease, als: the ridge penalty (lambda); dot, nn: per rating, on "
            "the squared norms of the table rows it reads."
        ),
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="als: confidence of an interaction, 1 + alpha x weight.")
    ] = None,
    iterations: Annotated[
        int | None, typer.Option(min=1, help="als: alternations of the two halves.")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="bayes: Gibbs samples drawn, the burn-in included.")
    ] = None,
    burn_in: Annotated[
        int | None, typer.Option(help="bayes: first samples left out of the predictions.")
    ] = None,
    kept: Annotated[
        int | None, typer.Option(help="bayes: samples kept and averaged after the burn-in.")
    ] = None,
    implicit_signals: Annotated[
        bool | None,
        typer.Option(
            "--implicit-signals/--no-implicit-signals",
            help="bayes: use which items each user rated and who rated each item (default on).",
        ),
    ] = None,
    feature_weight: Annotated[
        float | None,
        typer.Option(
            help="ease: weight of the items' genres and release decades as rows beside the "
            "users' (MovieLens item files; 0 leaves them out)."
        ),
    ] = None,
    session_weight: Annotated[
        float | None,
        typer.Option(
            help="ease: weight of each user's sessions (interactions with no long pause) as "
            "rows beside the users' (data with timestamps; 0 leaves them out)."
        ),
    ] = None,
    session_gap: Annotated[
        float | None, typer.Option(help="ease: the pause, in hours, that ends a session.")
    ] = None,
    session_run: Annotated[
        int | None,
        typer.Option(
            help="ease: also cut each session longer than this into runs of this many "
            "consecutive interactions, each one more row (0: none)."
        ),
    ] = None,
    item_features: Annotated[
        bool | None,
        typer.Option(
            "--item-features/--no-item-features",
            help="bayes: use the items' genres and release decades where the data name them "
            "(MovieLens item files; default on).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a model, print the per-epoch table and the test metrics, save it with --out (or
    as a new version with --publish)."""
    context = distributed.from_environment()
    if not context.is_main:
        console.quiet = True  # under torchrun only rank 0 prints and writes files
    given = {
        "n_factors": factors,
        "layers": list(_layers(layers)) if layers else None,
        "dropout": dropout,
        "emb_dropout": emb_dropout,
        "l2": l2,
        "alpha": alpha,
        "iterations": iterations,
        "samples": samples,
        "burn_in": burn_in,
        "kept": kept,
        "implicit_signals": implicit_signals,
        "item_features": item_features,
        "feature_weight": feature_weight,
        "session_weight": session_weight,
        "session_gap": session_gap,
        "session_run": session_run,
        "epochs": epochs,
        "lr": lr,
        "wd": wd,
        "batch_size": batch_size,
        "accumulate": accumulate,
        "effective_batch_size": effective_batch_size,
        "memory_budget": memory_budget,
        "negatives": negatives,
        "checkpoint_every": checkpoint_every,
        "optimizer": optimizer,
        "order": order,
        "rating_range": _rating_range(rating_range) if rating_range is not None else None,
    }
    model, given = _with_tuned(config, model, given)
    if config is not None:
        check_read_alike(config, positive_min)
    _check_model_options(model, given)
    if checkpoint_every is not None and out is None and resume is None:
        raise ConfigError("--checkpoint-every needs --out: checkpoints go to OUT/checkpoint")
    if publish_to is not None and (out is not None or resume is not None):
        raise ConfigError(
            "--publish saves to a new version of its own; give it without --out and --resume"
        )
    _check_split_options(_given_options(context_), test, split)
    if relevant_min is not None and model_class(model).predicts_ratings:
        raise ConfigError(
            f"--relevant-min picks the relevant test items of a ranking model's lists; the "
            f"{model} model is scored by RMSE: leave it out, or train a ranking model"
        )
    if relevant_min is not None and not math.isfinite(relevant_min):
        raise ConfigError(f"--relevant-min must be a finite number, got {relevant_min}")
    if None not in (relevant_min, positive_min) and relevant_min > positive_min:
        raise ConfigError(
            f"--relevant-min {relevant_min:g} is above --positive-min {positive_min:g}: each "
            f"rating of {positive_min:g} or more became one interaction without its stars, so "
            f"every one is relevant; give --relevant-min at most {positive_min:g}, or leave "
            "--positive-min out"
        )
    if out is not None:
        check_target(out)  # a bad --out is refused now, not after training
    if publish_to is not None:
        check_publish(publish_to)  # so is a bad --publish
    run = {
        "data": data,
        "with": with_,
        "test": str(test) if test is not None else None,
        "test_fraction": test_fraction,
        "split": split,
        "last_n": last_n,
        "cutoff": cutoff,
        "seed": seed,
        "model": model,
        "columns": {
            "user_col": user_col,
            "item_col": item_col,
            "rating_col": rating_col,
            "implicit": implicit,
            "count_col": count_col,
        },
        "positive_min": positive_min,
        "relevant_min": relevant_min,
        "options": {k: v for k, v in given.items() if v is not None},
        "device": device,
        "engine": engine,
        "out": str(out) if out is not None else None,
        "publish": str(publish_to) if publish_to is not None else None,
    }
    notes = None
    if resume is not None:
        named = _given_options(context_) - {"resume", "as_json"}
        given_too = [p.opts[0] for p in context_.command.params if p.name in named]
        if given_too:
            raise ConfigError(
                "--resume continues a run with the options it was started with; leave out "
                f"{', '.join(given_too)} (or start a new run with --out)"
            )
        notes = checkpoints.notes_of(resume / CHECKPOINT_DIR)
        if notes is None:
            raise ConfigError(
                f"no checkpoint in {resume / CHECKPOINT_DIR}; was the run started with "
                "--checkpoint-every and this --out?"
            )
        # the run's directory is the one given now: a run moved or copied resumes there
        run = notes["run"] | {"out": str(resume)}
        try:
            check_target(resume)  # where the model is saved: refused now, not after training
        except ModelFileError as err:
            if "is not a latentrec model directory" not in str(err):
                raise
            raise ModelFileError(
                f"{str(err).split('; refusing')[0]}; a resumed run saves its model there: move "
                "the other files out of it, then resume again"
            ) from None
        if run.get("publish") is not None:
            check_publish(Path(run["publish"]))
    elif context.restart and out is not None and checkpoint_every is not None:
        # torchrun restarted the worker group: carry on from the last checkpoint, if any
        notes = checkpoints.notes_of(out / CHECKPOINT_DIR)
        if notes is None:
            errors.print(f"restart {context.restart}: no checkpoint yet, starting over")
    elif out is not None:
        left = None
        with contextlib.suppress(ModelFileError):  # damaged only: nothing to resume
            left = checkpoints.notes_of(out / CHECKPOINT_DIR)
        if left is not None:  # an interrupted run's: a new run would discard it
            raise ConfigError(
                f"{out / CHECKPOINT_DIR} holds the checkpoint of an interrupted run (step "
                f"{left['step']}): continue it with {_resume_command(out, left)}, or remove "
                f"{out / CHECKPOINT_DIR} to start over"
            )
    if notes is not None and context.is_main:
        errors.print(
            f"resuming from the checkpoint at step {notes['step']} (epoch "
            f"{notes['epoch'] + 1}, step {notes['step_in_epoch']} of {notes['steps_per_epoch']})",
            soft_wrap=True,
        )
    try:
        _train_run(run, resume=notes is not None, as_json=as_json, context=context)
    except KeyboardInterrupt:
        where = Path(run["out"]) if run["out"] is not None else None
        last = checkpoints.notes_of(where / CHECKPOINT_DIR) if where is not None else None
        if last is None:
            raise
        errors.print(
            f"interrupted; the checkpoint at step {last['step']} is kept: continue with "
            f"{_resume_command(where, last)}",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    finally:
        distributed.shutdown()


def _train_run(
    run: dict[str, Any], resume: bool, as_json: bool, context: distributed.Context
) -> None:
    """Load and split the data, fit, save and print: the body of `train`."""
    columns = run["columns"]
    test = Path(run["test"]) if run["test"] is not None else None
    parts, below = _load_split(
        run["data"],
        test,
        run["test_fraction"],
        run["seed"],
        run["split"],
        run["last_n"],
        run["cutoff"],
        columns,
        run.get("positive_min"),  # runs checkpointed before it was an option have none
        also=run.get("with"),
    )
    if (parts.cold_users or parts.cold_items) and context.is_main:
        handled = (
            "they are predicted from the known side's average and biases"
            if model_class(run["model"]).predicts_ratings
            else "a ranking model cannot list them, and the ranking metrics leave them out"
        )
        errors.print(
            f"{parts.cold_users} users and {parts.cold_items} items appear only in the test set "
            f"({parts.cold_ratings} test ratings): {handled}",
            soft_wrap=True,
        )
    options: dict[str, Any] = {
        "seed": run["seed"],
        "device": run["device"],
        "engine": run["engine"],
        "progress": None,
        **run["options"],
    }
    if "layers" in options:
        options["layers"] = tuple(options["layers"])
    out = Path(run["out"]) if run["out"] is not None else None
    stepped = "solve" not in model_class(run["model"]).engines
    if options.get("memory_budget") is not None and stepped and context.is_main:
        errors.print(f"measuring training steps to fit a budget of {options['memory_budget']}...")
    net, history = fit(
        parts,
        run["model"],
        checkpoint_dir=out / CHECKPOINT_DIR if out is not None else None,
        resume=resume,
        run=run,
        **options,
    )
    if history.plan is not None:
        console.print(
            f"memory plan: micro-batch {history.plan.batch_size} x accumulate "
            f"{history.plan.accumulate}: {history.plan.reason}"
        )
    model_dir = None
    if out is not None and context.is_main:
        model_dir = save(net, out, parts.train, info=_info(history), also_rated=below)
    published = run.get("publish")  # runs checkpointed before it was an option have none
    if published is not None and context.is_main:
        model_dir = publish(net, published, parts.train, info=_info(history), also_rated=below)
    _print_history(history)
    info = _info(history)
    if net.predicts_ratings:
        scores = f"test RMSE {_fmt(history.rmse)}  MAE {_fmt(history.mae)}  "
    else:  # a ranking model: how its lists do on the test users
        relevant_min = relevance_floor(parts.test, run.get("relevant_min"))
        try:
            with _ranking_progress() as progress:
                recommender = Recommender(net, parts.train)
                ranking = evaluate_ranking(
                    recommender, parts.test, 10, relevant_min=relevant_min, on_progress=progress
                )
        except DataError as err:  # nothing to rank: the model is trained (and saved) all the same
            errors.print(f"no ranking metrics: {err}")
            info["ranking"] = None
            scores = "test NDCG@10 n/a  P@10 n/a  "
        else:
            info["ranking"] = ranking
            scores = f"test NDCG@10 {ranking['ndcg@10']:.4f}  P@10 {ranking['precision@10']:.4f}  "
    console.print(
        scores + f"({history.n_test:,} ratings); trained on {history.n_train:,} ratings in "
        f"{history.train_seconds:.2f} s ({history.ratings_per_second:,.0f} ratings/s)"
        + (f" by {history.world_size} processes" if history.world_size > 1 else "")
        + (f"; saved to {shown(model_dir)}" if model_dir else "")
        + (f" ({shown(Path(published) / 'current')} points at it)" if published else "")
    )
    if as_json and context.is_main:
        print_json(info | {"model_dir": str(model_dir) if model_dir else None})


def _info(history: History) -> dict[str, Any]:
    return {
        "model": history.model_config.kind,
        "rmse": history.rmse,
        "mae": history.mae,
        "epochs": len(history.epochs),
        "train_seconds": history.train_seconds,
        "setup_seconds": history.setup_seconds,
        "ratings_per_second": history.ratings_per_second,
        "n_train": history.n_train,
        "n_test": history.n_test,
        "cold_users": history.cold_users,
        "cold_items": history.cold_items,
        "device": history.device,
        "engine": history.engine,
        "world_size": history.world_size,
        "resumed_from_step": history.resumed_from,
        "batch_size": history.train_config.batch_size,
        "accumulate": history.train_config.accumulate,
        # ratings per optimiser step over all processes: batch x accumulate x world size
        "effective_batch_size": history.train_config.samples_per_step * history.world_size,
        "optimizer": history.train_config.optimizer,
        "order": history.train_config.order,
        "lr": history.train_config.lr,
        "wd": history.train_config.wd,
        "l2": getattr(history.model_config, "l2", history.train_config.l2),
        "seed": history.train_config.seed,
        "per_epoch": [
            {
                "epoch": e.epoch,
                "train_loss": e.train_loss,
                "rmse": e.test_rmse,
                "mae": e.test_mae,
                "seconds": e.seconds,
            }
            for e in history.epochs
        ],
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _print_history(history: History) -> None:
    solved = history.engine == "solve"
    how = f"{history.engine} engine"
    if not solved:
        how += f", {history.train_config.optimizer}"
        how += ", blocked order" if history.train_config.order == "blocked" else ""
    table = Table(title=f"{history.model_config.kind} model on {history.device} ({how})")
    rated = any(e.test_rmse is not None for e in history.epochs) or history.n_test == 0
    columns = ["iteration" if solved else "epoch", "train loss"]
    columns += ["test RMSE", "test MAE"] if rated else []
    for column in (*columns, "seconds"):
        table.add_column(column, justify="right")
    epochs = history.epochs
    if len(epochs) > TABLE_ROWS:  # a long solve: its first and last rows, the rest counted
        half = TABLE_ROWS // 2
        epochs = [*epochs[:half], None, *epochs[-half:]]
    for e in epochs:
        if e is None:
            skipped = len(history.epochs) - TABLE_ROWS // 2 * 2
            table.add_row(f"({skipped} more)", *[""] * len(columns))
            continue
        cells = [str(e.epoch), _fmt(e.train_loss)]
        cells += [_fmt(e.test_rmse), _fmt(e.test_mae)] if rated else []
        table.add_row(*cells, f"{e.seconds:.2f}")
    console.print(table)


# ----------------------------------------------------------------------------- tune

_BUDGET_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def _budget(text: str) -> float:
    """`--budget`: `"600"`, `"600s"`, `"10m"`, `"1.5h"` -> seconds."""
    body = text.strip().lower()
    unit = next((u for u in ("min", "s", "m", "h") if body.endswith(u)), "")
    try:
        seconds = float(body[: len(body) - len(unit)]) * _BUDGET_UNITS[unit]
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--budget takes a time such as 600, 600s, 10m or 1h, got {text!r}")
    return seconds


def _with_tuned(
    path: Path | None, model: str | None, given: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """`train --config`: the file's model, and its options where the command line gives none."""
    if path is None:
        return model or DEFAULT_MODEL, given
    tuned_model, options = read_tuned(path)
    if model is not None and model != tuned_model:
        raise ConfigError(
            f"{path} holds options tuned for the {tuned_model} model, not {model}; drop --model "
            f"or tune the {model} model"
        )
    return tuned_model, {**options, **{k: v for k, v in given.items() if v is not None}}


@app.command(name="tune")
@user_errors
def tune_command(
    context_: typer.Context,
    out: Annotated[
        Path, typer.Option(help="Write the best configuration here (JSON), for train --config.")
    ],
    data: DataOption = BUNDLED,
    model: Annotated[str, typer.Option(help=f"{MODEL_NAMES}.")] = DEFAULT_MODEL,
    budget: Annotated[
        str | None,
        typer.Option(
            help="Time for the search: 600, 600s, 10m or 1h; the trial running then finishes."
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(min=1, help=f"Trials at most (default {DEFAULT_TRIALS} without --budget)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            help="rmse or mae (rating models), ndcg@10, precision@10, recall@10, ... (default: "
            "rmse for a rating model, ndcg@10 for a ranking model)."
        ),
    ] = None,
    validation_fraction: Annotated[
        float, typer.Option(help="Share of each user's training ratings that scores a trial.")
    ] = 0.2,
    test: Annotated[
        Path | None, typer.Option(help="A separate test file: all of --data is training.")
    ] = None,
    test_fraction: Annotated[float, typer.Option(help="Share held out as train's is.")] = 0.1,
    split: Annotated[str, typer.Option(help="random, user or time, as for train.")] = "random",
    last_n: LastN = None,
    cutoff: Cutoff = None,
    seed: Annotated[
        int,
        typer.Option(help="Seeds the splits, the search and each trial.", min=0, max=LARGEST_SEED),
    ] = TrainConfig.seed,
    user_col: UserCol = None,
    item_col: ItemCol = None,
    rating_col: RatingCol = None,
    implicit: Annotated[
        bool, typer.Option(help="Every rated pair is an interaction (as train --implicit).")
    ] = False,
    count_col: CountCol = None,
    positive_min: Annotated[
        float | None,
        typer.Option(help="Ratings at or above this become interactions (as for train)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = TrainConfig.device,
    as_json: JsonFlag = False,
) -> None:
    """Search a model's options (Optuna) for the best score on validation ratings carved from
    the training split, and write them to a file `train --config` reads.

    The data is split as train splits it (same options, same seed), and only the training
    part is searched: the test ratings play no part in the choice.
    """
    _check_split_options(_given_options(context_), test, split)
    seconds = _budget(budget) if budget is not None else None
    target = check_output(out)  # a bad --out is refused now, not after the search
    columns = {
        "user_col": user_col,
        "item_col": item_col,
        "rating_col": rating_col,
        "implicit": implicit,
        "count_col": count_col,
    }
    parts, _ = _load_split(
        data, test, test_fraction, seed, split, last_n, cutoff, columns, positive_min
    )
    with _TuneProgress(trials, seconds) as progress:
        result = tune(
            parts.train,
            model,
            budget_seconds=seconds,
            trials=trials,
            metric=metric,
            seed=seed,
            validation_fraction=validation_fraction,
            on_trial=progress.update,
            device=device,
        )
    written = result.save(target)
    _print_tuning(result)
    command = ["latentrec", "train", "--data", data]
    given = {
        "--test": test,
        "--test-fraction": test_fraction if test_fraction != 0.1 else None,
        "--split": split if split != "random" else None,
        "--last-n": last_n,
        "--cutoff": cutoff,
        "--seed": seed if seed != TrainConfig.seed else None,
        "--user-col": user_col,
        "--item-col": item_col,
        "--rating-col": rating_col,
        "--count-col": count_col,
        "--positive-min": positive_min,
    }
    for name, value in given.items():
        command += [name, str(value)] if value is not None else []
    command += ["--implicit"] if implicit else []
    command += ["--config", str(written)]
    console.print(f"written to {shown(written)}; train with it:", soft_wrap=True)
    console.print(shown(shlex.join(command)), soft_wrap=True)
    if as_json:
        every = [trial.to_json() for trial in result.trials]
        extra = {"out": str(written), "seconds": result.seconds, "all_trials": every}
        print_json(result.to_json() | extra)


@contextlib.contextmanager
def _ranking_progress(k: int = 10) -> Iterator[Callable[[int, int], None]]:
    """A bar over the users a ranking evaluation lists items for, on stderr, drawn on a
    terminal only: at scale it scores every item for every test user."""
    with Progress(
        TextColumn(f"ranking the test users' top {k}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as bar:
        task = bar.add_task("rank", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class _TuneProgress:
    """A bar over the trials (or the budget's seconds) with the best score so far, on stderr,
    drawn on a terminal only."""

    def __init__(self, trials: int | None, seconds: float | None) -> None:
        self.by_time = trials is None and seconds is not None
        total = seconds if self.by_time else trials or DEFAULT_TRIALS
        self.started = time.perf_counter()
        self.bar = Progress(
            TextColumn("tuning"),
            BarColumn(),
            TextColumn("{task.fields[done]} trials, best {task.fields[best]}"),
            TimeElapsedColumn(),
            console=errors,
            transient=True,
            disable=not errors.is_terminal,
        )
        self.task = self.bar.add_task("tune", total=total, done=0, best="-")

    def __enter__(self) -> _TuneProgress:
        self.bar.start()
        return self

    def update(self, trial: TuneTrial, best: TuneTrial | None) -> None:
        elapsed = time.perf_counter() - self.started
        self.bar.update(
            self.task,
            completed=elapsed if self.by_time else trial.number + 1,
            done=trial.number + 1,
            best=f"{best.value:.4f}" if best is not None else "-",
        )

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _print_tuning(result: TuneResult, top: int = 5) -> None:
    """The best trials as a table, the failed ones in a line, and the best's score."""
    ranked = result.ranked()
    names = list(ranked[0].options)
    table = Table(title=f"{result.model} model: the best {min(top, len(ranked))} trials")
    for column in ("trial", *names, result.metric, "seconds"):
        table.add_column(column, justify="right")
    for trial in ranked[:top]:
        values = [_option_text(trial.options[name]) for name in names]
        table.add_row(str(trial.number), *values, f"{trial.value:.4f}", f"{trial.seconds:.2f}")
    console.print(table)
    failed = [t for t in result.trials if t.state != "complete"]
    if failed:
        console.print(
            f"{len(failed)} trials failed; trial {failed[0].number}: {shown(failed[0].reason)}",
            soft_wrap=True,
        )
    split = result.validation
    console.print(
        f"best {result.metric} {result.best_value:.4f} (trial {ranked[0].number}; trial 0 is the "
        f"defaults) on {split['validation_rows']:,} validation ratings, each trial fit on "
        f"{split['fit_rows']:,}; {len(result.trials)} trials in {result.seconds:.1f} s",
        soft_wrap=True,
    )


def _option_text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command(name="evaluate")
@user_errors
def evaluate_command(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by train --out.")],
    data: DataOption = BUNDLED,
    user_col: UserCol = None,
    item_col: ItemCol = None,
    rating_col: RatingCol = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: rmse, mae, ndcg@10, recall@10, ... (default: rmse,mae for a "
            "rating model, ndcg@10,precision@10 for a ranking model)"
        ),
    ] = None,
    implicit: Annotated[
        bool, typer.Option(help="Every rated pair is an interaction (as train --implicit).")
    ] = False,
    count_col: Annotated[
        str | None, typer.Option(help="Interactions: the column that counts them.")
    ] = None,
    positive_min: Annotated[
        float | None,
        typer.Option(help="Only ratings at or above this are relevant (as train --positive-min)."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rating and ranking metrics of a saved model on every rating of a data source.

    Ranking metrics (precision@k, recall@k, ndcg@k, hit_rate@k, map@k, coverage@k) treat each
    user's ratings in the data as their relevant items; candidates are all training items
    minus the user's own training items.
    """
    saved = load(model_dir)
    columns = {"user_col": user_col, "item_col": item_col, "rating_col": rating_col}
    ratings = load_ratings(data, **columns, implicit=implicit, count_col=count_col)
    # a database's visitors as a model trained on it `--with` another source named them
    ratings = as_trained(_positives(ratings, positive_min), saved.ratings.users)
    known = ratings.reindexed(saved.ratings.users, saved.ratings.items)
    cold = int(((known.user_index < 0) | (known.item_index < 0)).sum())
    result: dict[str, Any] = {"n": len(known), "cold_ratings": cold}
    if metrics is None:
        rated = saved.model.predicts_ratings and not ratings.implicit
        metrics = "rmse,mae" if rated else "ndcg@10,precision@10"
    wanted = []
    for given_name in (m.strip().lower() for m in metrics.split(",") if m.strip()):
        base, at, k = given_name.partition("@")
        cutoff = cutoff_of(k) if at else None
        name = f"{base}@{cutoff}" if cutoff is not None else given_name  # ndcg@010: ndcg@10
        if name not in wanted:
            wanted.append(name)
    if not wanted:
        raise ConfigError(f"--metrics names no metric: {metrics!r}; give e.g. rmse or ndcg@10")
    if ratings.implicit and {"rmse", "mae"} & set(wanted):
        raise ConfigError(
            f"{ratings.source} holds interactions, not ratings: rmse and mae need ratings; ask "
            "for ranking metrics (ndcg@10, precision@10)"
        )
    ranking_ks = set()
    for name in wanted:
        base, _, k = name.partition("@")
        if name in ("rmse", "mae"):
            continue
        if base not in (*RANKING_METRICS, "coverage") or cutoff_of(k) is None:
            raise ConfigError(
                f"unknown metric {name!r}: use rmse, mae, or precision@K, recall@K, ndcg@K, "
                f"hit_rate@K, map@K, coverage@K (K from 1 to {LARGEST_K:,})"
            )
        ranking_ks.add(int(k))
    if {"rmse", "mae"} & set(wanted):
        result |= {k: v for k, v in evaluate(saved.model, known).items() if k != "n"}
    recommender = Recommender(saved.model, saved.ratings) if ranking_ks else None
    for k in sorted(ranking_ks):
        with _ranking_progress(k) as progress:
            result |= evaluate_ranking(recommender, known, k, on_progress=progress)
    table = Table(title=shown(f"{model_dir} on {ratings.source}"))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in wanted:
        table.add_row(name, _fmt(result[name]))
    console.print(table)
    console.print(f"{len(known):,} ratings; {cold:,} with a user or item the model has not seen")
    if as_json:
        print_json(result | {"model_dir": str(model_dir)})


def _print_items(title: str, items: list[Recommendation], score_name: str, as_json: bool) -> None:
    table = Table(title=shown(title))
    paired = any(rec.predicted is not None for rec in items)
    columns = ("#", "item", "title", score_name) + (("predicted",) if paired else ())
    for column in columns:
        table.add_column(column, justify="right" if column != "title" else "left")
    for rank, rec in enumerate(items, start=1):
        row = [str(rank), shown(rec.item_id), shown(rec.title or ""), f"{rec.score:.3f}"]
        if paired:
            row.append("" if rec.predicted is None else f"{rec.predicted:.2f}")
        table.add_row(*row)
    console.print(table)
    if as_json:
        print_json([rec.to_json() for rec in items])


def _new_user_ratings(text: str) -> dict[str, float]:
    """`"318:5,296:4.5"` -> {"318": 5.0, "296": 4.5}."""
    ratings: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        item, sep, value = part.rpartition(":")
        try:
            if not sep or not item.strip():
                raise ValueError
            rating = float(value)
        except ValueError:
            raise ConfigError(
                f"--new-user takes item:rating pairs like '318:5,296:4.5', got {part!r}"
            ) from None
        if item.strip() in ratings:
            raise ConfigError(f"--new-user rates item {item.strip()!r} twice; rate it once")
        ratings[item.strip()] = rating
    if not ratings:
        raise ConfigError("--new-user needs at least one item:rating pair")
    return ratings


def _one_of(first: str | None, second: str | None, names: str) -> None:
    if (first is None) == (second is None):
        raise ConfigError(f"give exactly one of {names}")


@app.command()
@user_errors
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by train --out.")],
    user: Annotated[str | None, typer.Option(help="Raw user id, as in the data.")] = None,
    new_user: Annotated[
        str | None, typer.Option(help="Ratings of a new user: '318:5,296:4.5,1:4' (fold-in).")
    ] = None,
    k: K = 10,
    rating_model: RatingModel = None,
    as_json: JsonFlag = False,
) -> None:
    """Top-k items for a user (or a new user's ratings), leaving out what they rated."""
    _one_of(user, new_user, "--user or --new-user")
    recommender = Recommender.from_dir(model_dir, rating_model=rating_model)
    if new_user is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            target: Any = recommender.fold_in(_new_user_ratings(new_user))
        for warning in caught:
            errors.print(shown(f"warning: {warning.message}"))
        label = f"a new user ({len(target.ratings)} ratings)"
    else:
        target, label = user, f"user {user}"
    items = recommender.recommend(target, k=k)
    score = "predicted" if recommender.model.predicts_ratings else "score"
    _print_items(f"top {k} for {label}", items, score, as_json)
    if recommender.rating_model is not None and all(r.predicted is None for r in items):
        errors.print(
            f"the rating model in {shown(rating_model)} does not know {label}: no predicted "
            "ratings",
            soft_wrap=True,
        )


@app.command()
@user_errors
def similar(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by train --out.")],
    item: Annotated[str | None, typer.Option(help="Raw item id, as in the data.")] = None,
    title: Annotated[str | None, typer.Option(help="Part of a title, e.g. 'toy story'.")] = None,
    k: K = 10,
    as_json: JsonFlag = False,
) -> None:
    """Items whose learned factors are closest (cosine) to an item's."""
    _one_of(item, title, "--item or --title")
    recommender = Recommender.from_dir(model_dir)
    if title is not None:
        item = _item_by_title(recommender, title)
    index = recommender.item_index(item)
    items = recommender.similar_items(item, k=k)
    name = recommender.title(index) or item
    _print_items(f"{k} items most similar to {name}", items, "cosine", as_json)


def _item_by_title(recommender: Recommender, title: str) -> Any:
    matches = recommender.find_items(title, limit=5)
    if not matches or not matches[0].exact:
        hint = "; close matches: " + "; ".join(m.title for m in matches) if matches else ""
        raise UnknownIdError(f"no title contains {title!r}{hint}")
    if len(matches) > 1:
        errors.print(shown(f"{len(matches)}+ titles match {title!r}; using {matches[0].title}"))
    return matches[0].item_id


@app.command()
@user_errors
def explain(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by train --out.")],
    user: Annotated[str | None, typer.Option(help="Explain a recommendation to this user.")] = None,
    item: Annotated[str | None, typer.Option(help="... of this item.")] = None,
    n: Annotated[int, typer.Option("-n", min=1, max=1000, help="Rows per table.")] = 10,
    plot: Annotated[Path | None, typer.Option(help="Draw the 2-D item map as PNG.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Item biases (liked regardless of taste), a 2-D map of item factors, and why an item
    is recommended to a user."""
    if (user is None) != (item is None):
        raise ConfigError("--user and --item go together")
    if plot is not None:
        memory.plot_path(plot)  # a bad path fails now, not after the tables
    recommender = Recommender.from_dir(model_dir)
    if plot is not None:
        recommender.require("map")  # before any table: the plot is what was asked for
    # an unknown user or item fails now, not after the other tables
    reasons = None if user is None else recommender.explain(user, item, n)
    for extra in sorted({"biases", "map"} - recommender.model.extras):
        errors.print(f"the {recommender.model.kind} model has no {extra!r}: that table is left out")
    result: dict[str, Any] = {}
    if recommender.supports("biases"):
        top, bottom = recommender.item_biases(n)
        _print_items("highest item biases: liked regardless of taste", top, "bias", False)
        _print_items("lowest item biases", bottom, "bias", False)
        result["top_biases"] = [r.to_json() for r in top]
        result["bottom_biases"] = [r.to_json() for r in bottom]
    if recommender.supports("map"):
        points = recommender.factor_map(50)
        result["map"] = [p._asdict() | {"item_id": p.item_id} for p in points]
        if plot is not None:
            console.print(f"item map written to {_plot_map(points, plot)}")
    if reasons is not None:
        named = recommender.title(recommender.item_index(item))
        table = Table(
            title=shown(f"why user {user} gets {named or recommender.items.coerce(item)}")
        )
        for column in ("item", "title", "rating", "weight"):
            table.add_column(column, justify="left" if column == "title" else "right")
        for reason in reasons:
            table.add_row(
                shown(reason.item_id),
                shown(reason.title or ""),
                f"{reason.rating:g}",
                f"{reason.weight:.3f}",
            )
        console.print(table)
        result["because"] = [r._asdict() for r in reasons]
    if as_json:
        print_json(result)


def _plot_map(points: list, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    target = memory.plot_path(path)
    figure, axes = plt.subplots(figsize=(10, 8))
    xs, ys = [p.x for p in points], [p.y for p in points]
    axes.scatter(xs, ys, s=12, color="tab:blue")
    for point in points:
        label = (point.title or str(point.item_id))[:32]
        # titles are text, never math: "$x^$" would not parse, "$\\frac{1}{2}$" would typeset
        axes.annotate(label, (point.x, point.y), fontsize=7, parse_math=False)
    axes.set_title(f"item factors of the {len(points)} most-rated items, first two components")
    figure.tight_layout()
    try:
        return memory.save_plot(figure, target)
    finally:
        plt.close(figure)


def _numbers(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{option} takes whole numbers >= 1, got {text!r}")
    if max(values) > LARGEST_COUNT:
        raise ConfigError(f"{option} takes whole numbers up to {LARGEST_COUNT:,}, got {text!r}")
    return values


# the most a --factors, --batch-size or --accumulate value may be (a measured step's rows and
# tables are drawn for it)
LARGEST_COUNT = 1 << 24


@app.command(name="memory")
@user_errors
def memory_command(
    now: Annotated[bool, typer.Option("--now", help="Report memory in use now and exit.")] = False,
    model: Annotated[
        str, typer.Option(help=f"Models to compare, comma-separated: {', '.join(MODELS)}.")
    ] = ",".join(STEPPED),
    factors: Annotated[
        str | None,
        typer.Option(help="Factor counts of models with factors, e.g. 50,200 (default: theirs)."),
    ] = None,
    layers: Annotated[
        list[str] | None,
        typer.Option(
            help="Hidden widths of models with layers, e.g. 1000,500; repeat for several."
        ),
    ] = None,
    batch_size: Annotated[str, typer.Option(help="Micro-batch sizes.")] = "64,1024,8192",
    accumulate: Annotated[str, typer.Option(help="Accumulation counts.")] = "1",
    data: DataOption = BUNDLED,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    plot: Annotated[Path | None, typer.Option(help="Draw the table as a PNG bar chart.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Peak memory of one training step per model, batch size and accumulation."""
    if now:
        _print_report(memory.report(), as_json)
        return
    if plot is not None:
        memory.plot_path(plot)
    TrainConfig(device=device)  # the check train makes: auto, cpu, cuda or cuda:N
    if not [part for part in model.split(",") if part.strip()]:
        raise ConfigError(f"--model names no model: {model!r}; give e.g. {DEFAULT_MODEL}")
    sweeps = {
        "n_factors": _numbers(factors, "--factors") if factors else None,
        "layers": [_layers(spec) for spec in layers] if layers else None,
    }
    variants: list[tuple[str, dict[str, Any]]] = []
    names = [part.strip() for part in model.split(",") if part.strip()]
    solved = [name for name in names if "solve" in model_class(name).engines]
    for name in names:
        if name in solved:
            continue
        fields = model_class(name).Config.field_names()
        options: list[dict[str, Any]] = [{}]
        for field, values in sweeps.items():
            if values and field in fields:
                options = [o | {field: v} for o in options for v in values]
        variants += [(name, o) for o in options]
    shapes = [
        (b, n)
        for b in _numbers(batch_size, "--batch-size")
        for n in _numbers(accumulate, "--accumulate")
    ]
    if variants and max(b * n for b, n in shapes) > LARGEST_COUNT:
        b, n = max(shapes, key=lambda shape: shape[0] * shape[1])
        raise ConfigError(
            f"--batch-size {b} x --accumulate {n} is a step of {b * n:,} rows, past the "
            f"{LARGEST_COUNT:,} a measured step takes; give smaller ones"
        )
    target = str(resolve_device(device))
    ratings = load_ratings(data)
    # a step reads micro-batch x accumulate rows; past the data's size they repeat anyway
    rows = memory.sample_rows(ratings, min(max(b * n for b, n in shapes), max(len(ratings), 1)))
    solves = []  # for --json: what each solved model's solve needs
    for name in solved:  # no steps to measure: what its solve needs, from the config
        fields = model_class(name).Config.field_names()
        sizes = sweeps["n_factors"] if "n_factors" in fields and sweeps["n_factors"] else [None]
        for size in sizes:
            config = make_configs(ratings, name, {"n_factors": size} if size else {})[0]
            console.print(
                f"{name} {config.shape()} is solved, not trained by steps: "
                f"{memory.format_bytes(config.solve_bytes())} at the solve's peak for "
                f"{config.n_items:,} items",
                soft_wrap=True,
            )
            solves.append(
                {
                    "model": name,
                    "config": config.shape(),
                    "solved": True,
                    "solve_bytes": config.solve_bytes(),
                    "n_items": config.n_items,
                }
            )
    if not variants:
        if plot is not None:
            raise ConfigError("--plot draws training steps; give a model trained by steps too")
        if as_json:
            print_json(solves)
        return
    configs = [
        # each model with the optimiser it trains with by default, whose state it keeps
        memory.StepConfig(model, b, n, target, optimizer=training.optimizer, l2=training.l2)
        for model, training in (make_configs(ratings, kind, options) for kind, options in variants)
        for b, n in shapes
    ]
    uses = []
    with Progress(
        TextColumn("measuring"),
        BarColumn(),
        MofNCompleteColumn(),
        console=errors,
        transient=True,
    ) as progress:
        for step in progress.track(configs):
            uses.append(memory.measure_step(step, rows))
    _print_memory_table(uses, ratings.source)
    if plot is not None:
        console.print(f"plot written to {memory.plot(uses, plot)}")
    if as_json:
        print_json([use.to_json() for use in uses] + solves)


def _print_report(report: memory.MemoryReport, as_json: bool) -> None:
    table = Table(title="memory in use now")
    table.add_column("what")
    table.add_column("bytes", justify="right")
    for name, value in report.to_json().items():
        if name != "gpu_processes":
            table.add_row(name, "n/a" if value is None else memory.format_bytes(value))
    console.print(table)
    for process in report.gpu_processes:
        console.print(f"GPU process {process}")
    if as_json:
        print_json(report.to_json())


def _print_memory_table(uses: list[memory.MemoryUse], source: str) -> None:
    table = Table(title=f"peak memory of one training step ({source}, {uses[0].device})")
    columns = (
        "model",
        "batch",
        "accum",
        "peak",
        "params",
        "optimiser",
        "grads",
        "other",
        "/row",
        "ratio",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    size = memory.format_bytes
    for use in uses:
        table.add_row(
            f"{use.model} {use.shape}, {use.optimizer}",
            str(use.batch_size),
            str(use.accumulate),
            size(use.peak_bytes),
            size(use.parameter_bytes),
            size(use.optimizer_bytes),
            size(use.gradient_bytes),
            size(use.other_bytes),
            size(use.bytes_per_sample),
            f"{use.peak_bytes / uses[0].peak_bytes:.2f}",
        )
    console.print(table)
    console.print(
        "peak = params + optimiser state + what the step allocates (grads + other: activations and "
        "workspace); /row = step allocation per micro-batch row; ratio = peak / first row's peak"
    )


@app.command()
@user_errors
def serve(
    model_dir: Annotated[Path, typer.Argument(help="A directory written by train --out.")],
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless told.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    rating_model: RatingModel = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="A database URL (sqlite:///latentrec.db, postgresql+psycopg://...) that keeps "
            "visitors' ratings; make its schema first with `latentrec db upgrade --db URL`.",
        ),
    ] = None,
    check_every: Annotated[
        float,
        typer.Option(
            min=0,
            max=86_400,
            help="Seconds between looks for a new model in MODEL_DIR (a save, or a publish "
            "moving FOLDER/current), swapped in without stopping; 0: only on SIGHUP.",
        ),
    ] = 1.0,
) -> None:
    """Serve the model over HTTP: JSON API (docs at /docs) and a web page at /.

    A new model saved or published to MODEL_DIR is loaded in the background and swapped in
    between requests; one that fails to load is logged and the old one keeps serving.
    """
    # SIGHUP asks a running service to reload; one that arrives while it starts (the model
    # loading) must not end it: what starts is the newest model already
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # the web stack loads only for this command, keeping the others quick to start
    import os

    import uvicorn

    from latentrec.database import Store, safe_url
    from latentrec.serving import (
        CHECK_EVERY_VARIABLE,
        DATABASE_VARIABLE,
        MAX_HEADER_BYTES,
        MODEL_DIR_VARIABLE,
        RATING_MODEL_VARIABLE,
        check_port_free,
    )

    # a damaged directory or a pair that does not fit fails here, with one line, not in
    # every worker
    Recommender.from_dir(model_dir, rating_model=rating_model)
    if db is not None:
        # so do a database out of reach and a schema behind the code (the Store's messages
        # show its URL without the password)
        Store(db).close()
    check_port_free(host, port)  # a busy port is one line here, not uvicorn's log
    # absolute, but links kept: the workers follow models/current to each new version
    os.environ[MODEL_DIR_VARIABLE] = str(model_dir.absolute())
    os.environ[CHECK_EVERY_VARIABLE] = repr(check_every)
    if rating_model is not None:
        os.environ[RATING_MODEL_VARIABLE] = str(rating_model.absolute())
    else:
        os.environ.pop(RATING_MODEL_VARIABLE, None)
    if db is not None:
        os.environ[DATABASE_VARIABLE] = db  # the workers open their own Store from it
    else:
        os.environ.pop(DATABASE_VARIABLE, None)
    paired = f" with predicted ratings from {rating_model}" if rating_model is not None else ""
    kept = f", visitors' ratings in {safe_url(db)}" if db is not None else ""
    console.print(f"serving {model_dir}{paired}{kept} at http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(
        "latentrec.serving:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        log_config=_log_config(),
        # the app answers 431 over MAX_HEADER_BYTES; where uvicorn parses with h11 (no
        # httptools installed), h11 itself drops far larger request heads before they are read
        h11_max_incomplete_event_size=4 * MAX_HEADER_BYTES,
        **_worker_start_limit(),
    )


# seconds a new worker may take to start (import torch, load the model) when SIGHUP replaces
# the workers one by one; uvicorn's default, 5 s, kept the old workers on a busy machine
WORKER_START_SECONDS = 300


def _worker_start_limit() -> dict[str, Any]:
    import inspect

    import uvicorn

    parameters = inspect.signature(uvicorn.run).parameters
    if "timeout_worker_healthcheck" in parameters:  # uvicorn 0.36 and later
        return {"timeout_worker_healthcheck": WORKER_START_SECONDS}
    return {}


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with the service's own lines (models swapped in or kept, database
    errors) beside uvicorn's on stderr."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["latentrec"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


# ----------------------------------------------------------------------------- db

db_app = typer.Typer(
    help="The database of visitors' ratings (`serve --db`): its schema.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")


@db_app.command(name="upgrade")
@user_errors
def db_upgrade(
    db: Annotated[
        str,
        typer.Option(
            "--db",
            help="The database's URL: sqlite:///latentrec.db (a file, created when missing) or "
            "postgresql+psycopg://user:password@host:5432/database.",
        ),
    ],
    as_json: JsonFlag = False,
) -> None:
    """Create the database's tables, or bring them to the newest schema revision."""
    from latentrec.database import Store, safe_url  # SQLAlchemy loads only for this command

    revision = Store.upgrade(db)
    console.print(f"the database at {shown(safe_url(db))} is at revision {revision} (the newest)")
    if as_json:
        print_json({"database": safe_url(db), "revision": revision})


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as done:
        if distributed.joined():
            _end_worker(done.code)
        raise


def _end_worker(code: int | str | None) -> NoReturn:
    """End a torchrun worker without the interpreter's teardown (see `distributed.joined`)."""
    distributed.shutdown()
    if isinstance(code, str):
        errors.print(code)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code if isinstance(code, int) else int(code is not None))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
