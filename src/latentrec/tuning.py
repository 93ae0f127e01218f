"""tune(): a seeded search over a model's `tunable` options, each trial trained on part of the
rows it is given and scored on the rest, and the file that keeps the best configuration.

`tune` sees only the rows it is handed: give it the training rows, and the test rows stay out
of every choice. It holds out a share of each user's rows for validation (`Ratings.split` with
`by="user"`), trains one model per trial on the others with `fit`, and scores it there: RMSE or
MAE for a model that predicts ratings, a ranking metric (ndcg@10, ...) with the candidates
`evaluate_ranking` uses (every item of the fit rows the user did not rate) for any model.

The search is Optuna's TPE sampler, seeded, so the same rows, seed and number of trials give
the same trials and the same best. The first trial is the model's defaults, so the best found
is never worse on the validation rows than the defaults. A later trial that fails (training
diverged, a configuration refused for its memory) is recorded with its reason and the search
goes on; when the defaults fail, the data or the fixed options are at fault, and it is raised.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from latentrec.data import Ratings, Split
from latentrec.errors import ConfigError, DataError, LatentrecError
from latentrec.metrics import LARGEST_K, RANKING_METRICS, cutoff_of
from latentrec.models import ModelConfig, model_class
from latentrec.recommend import Recommender, evaluate_ranking
from latentrec.storage import umask
from latentrec.training import STEP_ONLY, TrainConfig, fit, l2_for

FORMAT = "latentrec-tuning"
# 4: ease's sessions' runs came in (an older file solves without them, keeping every other
# option it names); 3: a file for a solved model names every option of its config, so a
# later release's defaults (ease's sessions came in 3) do not change what it solves; 2: the
# file names the training options its trials trained with (optimizer, epochs, lr, wd, l2), so
# a later release's defaults do not change what it trains; 1: only those searched or fixed,
# and no L2 penalty per rating yet
FORMAT_VERSION = 4
# the training options a trial's model depends on, written whether searched or not
RESOLVED = ("optimizer", "epochs", "lr", "wd", "l2")
DEFAULT_TRIALS = 20
RATING_METRICS = ("rmse", "mae")
# how a run goes rather than what it learns: never written to the file, given at training time
RUNTIME = frozenset({"seed", "device", "engine", "progress", "checkpoint_every"})
_LARGEST_FILE = 2**20  # a tuning file holds a few hundred bytes


@dataclass(frozen=True)
class TuneTrial:
    """One trial: the tuned options it tried, its score on the validation rows (None when it
    failed, with the reason), and its seconds."""

    number: int
    options: dict[str, Any]
    value: float | None
    seconds: float
    state: str  # "complete" or "failed"
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuneResult:
    """What `tune` found.

    Args:
        best_options: the best trial's tuned options with the fixed ones given to `tune`
            (runtime switches and the seed left out): what `fit` takes as `**options`.
        best_value: the best trial's score on the validation rows.
        trials: every trial, in the order they ran.
        validation: how the validation rows were carved (split, fraction, seed, row counts).
    """

    model: str
    metric: str
    best_options: dict[str, Any]
    best_value: float
    trials: list[TuneTrial]
    validation: dict[str, Any]
    seconds: float

    @property
    def maximize(self) -> bool:
        return self.metric not in RATING_METRICS

    def ranked(self) -> list[TuneTrial]:
        """The trials that completed, best first (ties: the earlier trial)."""
        done = [t for t in self.trials if t.state == "complete"]
        sign = -1.0 if self.maximize else 1.0
        return sorted(done, key=lambda t: (sign * t.value, t.number))

    def to_json(self) -> dict[str, Any]:
        """The reusable file's content: the model, its options and how they were chosen."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "model": self.model,
            "options": self.best_options,
            "metric": self.metric,
            "value": self.best_value,
            "trials": len(self.trials),
            "validation": self.validation,
        }

    def save(self, path: str | Path) -> Path:
        """Write the file (`to_json`) atomically; `latentrec train --config PATH` and
        `read_tuned` read it. Only a new path or a file `save` wrote is replaced."""
        target = check_output(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"
        handle, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                os.fchmod(stream.fileno(), 0o666 & ~umask())  # a new file's, not mkstemp's 0600
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            check_output(target)  # a file that appeared during the search is not replaced
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target


def tune(
    data: Ratings,
    model: str,
    *,
    budget_seconds: float | None = None,
    trials: int | None = None,
    metric: str | None = None,
    seed: int = TrainConfig.seed,
    validation_fraction: float = 0.2,
    on_trial: Callable[[TuneTrial, TuneTrial | None], None] | None = None,
    **fixed_options: Any,
) -> TuneResult:
    """Search the model's `tunable` options for the best score on validation rows carved from
    `data`.

    Args:
        data: the rows to tune on: training rows only, never a test set's.
        model: a registered model's name.
        budget_seconds: start no trial after this many seconds (the one running finishes;
            the first, the model's defaults, always runs).
        trials: run at most this many trials; with neither limit, `DEFAULT_TRIALS`.
        metric: "rmse" or "mae" (rating models), or a ranking metric such as "ndcg@10",
            "precision@10", "recall@10"; None: rmse for a rating model, ndcg@10 otherwise.
        seed: seeds the validation split, the sampler and every trial's training.
        validation_fraction: share of each user's rows held out for validation.
        on_trial: called after each trial with it and the best trial so far (None while no
            trial has a score).
        **fixed_options: options of `fit` every trial uses; a tunable option given here is
            not searched.

    Returns:
        A `TuneResult`; `result.save(path)` writes the reusable file.
    """
    if not isinstance(data, Ratings):
        raise ConfigError(
            f"tune takes the training rows as Ratings, got {type(data).__name__}; pass a "
            "split's train part, so that its test rows stay out of the search"
        )
    cls = model_class(model)
    metric, maximize = _metric(model, metric)
    if budget_seconds is not None and not (budget_seconds > 0 and math.isfinite(budget_seconds)):
        raise ConfigError(
            f"the time budget must be a positive number of seconds, got {budget_seconds!r}"
        )
    if trials is not None and (
        not isinstance(trials, int) or isinstance(trials, bool) or trials < 1
    ):
        raise ConfigError(f"trials must be a whole number >= 1, got {trials!r}")
    if budget_seconds is None and trials is None:
        trials = DEFAULT_TRIALS
    space = {k: v for k, v in cls.Config.tunable.items() if k not in fixed_options}
    if not space:
        names = ", ".join(cls.Config.tunable) or "none"
        raise ConfigError(
            f"nothing to tune: the {model} model's tunable options ({names}) are all fixed"
        )
    parts = _validation_split(data, validation_fraction, seed, metric)
    # every trial scores its last epoch only, and draws no progress bar
    options = {"seed": seed, "evaluate_every_epoch": False, **fixed_options, "progress": False}
    search = _Search(parts, model, metric, maximize, space, options, on_trial)
    started = time.perf_counter()
    previous = optuna.logging.get_verbosity()
    # Optuna logs the study and each trial, a failed one with its traceback: tune reports
    # them itself
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        direction = "maximize" if maximize else "minimize"
        sampler = optuna.samplers.TPESampler(seed=seed % 2**32)  # it takes 32-bit seeds
        study = optuna.create_study(direction=direction, sampler=sampler)
        # trial 0: where an untuned run on the fit rows starts, run whatever the budget
        study.enqueue_trial(_defaults(model, space, parts.train))
        run = {"func": search.objective, "catch": (_TrialFailed,), "callbacks": [search.record]}
        study.optimize(n_trials=1, **run)
        left = None if budget_seconds is None else budget_seconds - (time.perf_counter() - started)
        more = None if trials is None else trials - 1
        if (left is None or left > 0) and (more is None or more > 0):
            study.optimize(n_trials=more, timeout=left, **run)
    finally:
        optuna.logging.set_verbosity(previous)
    best = search.best
    if best is None:  # the defaults gave no number (NaN), and no trial did better
        raise DataError(
            f"no trial gave a {metric} on the {len(parts.test):,} validation rows; check the data"
        )
    kept = {k: v for k, v in {**fixed_options, **best.options}.items() if k not in RUNTIME}
    kept = _resolved(model, kept)
    validation = {
        "split": "user",
        "fraction": validation_fraction,
        "seed": seed,
        "fit_rows": len(parts.train),
        "validation_rows": len(parts.test),
        "source": data.source,
        # how the data were read: `train --config` checks it reads them alike
        "positive_min": data.positive_min,
    }
    seconds = time.perf_counter() - started
    return TuneResult(model, metric, kept, best.value, search.trials, validation, seconds)


class _Search:
    """The objective Optuna calls for each trial, and the record of the trials."""

    def __init__(
        self,
        parts: Split,
        model: str,
        metric: str,
        maximize: bool,
        space: Mapping[str, tuple[str, float, float]],
        options: dict[str, Any],
        on_trial: Callable[[TuneTrial, TuneTrial | None], None] | None,
    ) -> None:
        self.parts, self.model, self.metric, self.maximize = parts, model, metric, maximize
        self.space, self.options, self.on_trial = space, options, on_trial
        self.trials: list[TuneTrial] = []
        self.best: TuneTrial | None = None

    def objective(self, trial: optuna.Trial) -> float:
        tried = {name: _suggest(trial, name, *bounds) for name, bounds in self.space.items()}
        try:
            return _score(self.parts, self.model, self.metric, {**self.options, **tried})
        except (LatentrecError, MemoryError, torch.cuda.OutOfMemoryError) as err:
            if trial.number == 0:  # the defaults fail: the data or fixed options are at fault
                raise
            trial.set_user_attr("reason", " ".join(str(err).split()) or type(err).__name__)
            raise _TrialFailed from err

    def record(self, study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        complete = frozen.state == optuna.trial.TrialState.COMPLETE
        trial = TuneTrial(
            frozen.number,
            dict(frozen.params),
            float(frozen.value) if complete else None,
            frozen.duration.total_seconds() if frozen.duration else 0.0,
            "complete" if complete else "failed",
            None if complete else str(frozen.user_attrs.get("reason", "no score")),
        )
        self.trials.append(trial)
        if complete and (self.best is None or _better(trial.value, self.best.value, self.maximize)):
            self.best = trial
        if self.on_trial is not None:
            self.on_trial(trial, self.best)


class _TrialFailed(Exception):
    """A trial that failed for its sampled values; the search goes on."""


def _metric(model: str, metric: str | None) -> tuple[str, bool]:
    """The metric's canonical name, and whether larger is better."""
    rates = model_class(model).predicts_ratings
    if metric is None:
        return ("rmse", False) if rates else ("ndcg@10", True)
    name = str(metric).strip().lower()
    if name in RATING_METRICS:
        if not rates:
            raise ConfigError(
                f"the {model} model ranks items and predicts no ratings: it has no {name}; tune "
                "it on a ranking metric such as ndcg@10"
            )
        return name, False
    base, _, k = name.partition("@")
    cutoff = cutoff_of(k)
    if base not in RANKING_METRICS or cutoff is None:
        raise ConfigError(
            f"unknown metric {metric!r}: use rmse or mae (rating models), or "
            f"{', '.join(f'{m}@K' for m in RANKING_METRICS)} (K a whole number from 1 to "
            f"{LARGEST_K:,}, e.g. ndcg@10)"
        )
    return f"{base}@{cutoff}", True


def _validation_split(data: Ratings, fraction: float, seed: int, metric: str) -> Split:
    if not (isinstance(fraction, (int, float)) and 0.0 < fraction < 1.0):
        raise ConfigError(f"validation_fraction must be between 0 and 1, got {fraction!r}")
    if len(data) == 0:
        raise DataError("there are no rows to tune on")
    try:
        parts = data.split(fraction, seed=seed, by="user")
    except DataError as err:
        raise DataError(
            f"holding out {fraction:g} of each user's rows of {data.source or 'the data'} for "
            "validation leaves none: its users have too few rows; give more rows or a larger "
            "validation fraction"
        ) from err
    known = (parts.test.user_index >= 0) & (parts.test.item_index >= 0)
    if metric not in RATING_METRICS and not known.any():
        raise DataError(
            "no validation row has an item the fit rows hold, so no list can be scored; give "
            "more rows"
        )
    return parts


def _defaults(
    model: str, space: Mapping[str, tuple[str, float, float]], train: Ratings
) -> dict[str, Any]:
    """The values an untuned run on `train` uses for the searched options (a default taken
    from the data, as the dot model's l2, from `train`)."""
    config = model_class(model).Config()
    training = TrainConfig.for_model(model)
    if training.l2 is None:
        training = replace(training, l2=l2_for(train))
    names = config.field_names()
    return {name: getattr(config if name in names else training, name) for name in space}


def _suggest(trial: optuna.Trial, name: str, kind: str, low: float, high: float) -> Any:
    if kind.startswith("int"):
        return trial.suggest_int(name, int(low), int(high), log=kind == "int_log")
    return trial.suggest_float(name, float(low), float(high), log=kind == "log")


def _score(parts: Split, model: str, metric: str, options: dict[str, Any]) -> float:
    """Train on the fit rows and score on the validation rows."""
    net, history = fit(parts, model, **options)
    if metric == "rmse":
        return float(history.rmse)
    if metric == "mae":
        return float(history.mae)
    k = int(metric.partition("@")[2])
    return float(evaluate_ranking(Recommender(net, parts.train), parts.test, k)[metric])


def _better(value: float, than: float, maximize: bool) -> bool:
    return value > than if maximize else value < than


# ----------------------------------------------------------------------------- the file


def check_output(path: str | Path) -> Path:
    """Check, before a search, that `TuneResult.save` may write `path`: a path where nothing
    is yet, or a file `save` wrote earlier; never anything else."""
    target = Path(path).expanduser()
    if target.is_dir() and not target.is_symlink():
        raise ConfigError(f"{target} is a directory; name a file, such as {target / 'best.json'}")
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise ConfigError(f"{target} is not a plain file; name another path")
    if target.exists() and _tuning_file_at(target) is None:
        raise ConfigError(
            f"{target} exists and was not written by latentrec tune; choose another path or "
            "remove it"
        )
    folder = next((p for p in target.absolute().parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        raise ConfigError(f"cannot write {target}: {folder} is a file")
    if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {target}: {folder} is not writable")
    return target


def read_tuned(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The model and options of a file `TuneResult.save` wrote, checked against the model's
    config and `TrainConfig`; ConfigError says what is wrong with it."""
    target = Path(path).expanduser()
    try:
        with open(target, encoding="utf-8") as stream:
            text = stream.read(_LARGEST_FILE + 1)
    except OSError as err:
        raise ConfigError(f"cannot read the tuning file {target}: {err.strerror or err}") from err
    try:
        data = json.loads(text) if len(text) <= _LARGEST_FILE else None
    except (ValueError, RecursionError) as err:
        raise ConfigError(
            f"{target} is not a tuning file (not valid JSON: {err}); give a file written by "
            "`latentrec tune --out`"
        ) from err
    if _tuning_file(data) is None:
        raise ConfigError(
            f'{target} was not written by latentrec tune (it lacks "format": "{FORMAT}" and '
            f"a version up to {FORMAT_VERSION}); give a file written by `latentrec tune --out`"
        )
    try:
        cls = model_class(data.get("model"))
    except ConfigError as err:
        raise ConfigError(f"{target}: {err}") from err
    options = data.get("options")  # a missing key is reported below
    if not isinstance(options, dict):
        raise ConfigError(f"{target}: options must be a JSON object, got {options!r}")
    model_fields = cls.Config.field_names() - {"n_users", "n_items"}
    train_fields = {f.name for f in fields(TrainConfig)} - RUNTIME
    if data["version"] < 2 and "solve" not in cls.engines and "l2" not in options:
        options = {**options, "l2": 0.0}  # tuned before the per-rating penalty existed
    if data["version"] < 4 and "solve" in cls.engines:
        # tuned before the fields its model gained since (ease's sessions, their runs):
        # without them
        options = {**cls.Config.earlier, **options}
    unknown = sorted(set(options) - model_fields - train_fields)
    if unknown:
        raise ConfigError(
            f"{target} sets {', '.join(unknown)}, which the {data['model']} model does not "
            f"take; its options are {', '.join(sorted(model_fields))}, and training options "
            f"{', '.join(sorted(train_fields))}"
        )
    stepped = [k for k in STEP_ONLY if options.get(k) is not None and k not in model_fields]
    if "solve" in cls.engines and stepped:
        raise ConfigError(
            f"{target} sets {', '.join(stepped)}, which train by steps, but the "
            f"{data['model']} model is solved: remove them from the file"
        )
    try:
        cls.Config.from_json({k: v for k, v in options.items() if k in model_fields})
        TrainConfig.for_model(
            data["model"], **{k: v for k, v in options.items() if k in train_fields}
        )
    except (TypeError, ValueError) as err:  # ConfigError is a ValueError
        raise ConfigError(f"{target}: {err}") from err
    return data["model"], options


def check_read_alike(path: str | Path, positive_min: float | None) -> None:
    """ConfigError unless `train --config PATH` reads the data as the search did: liked
    ratings at or above the same --positive-min, or all of them (files that predate the
    record pass)."""
    target = Path(path).expanduser()
    try:
        validation = json.loads(target.read_text(encoding="utf-8")).get("validation", {})
    except (OSError, ValueError, AttributeError):
        return  # read_tuned has said what is wrong with the file
    if not isinstance(validation, dict) or "positive_min" not in validation:
        return
    tuned = validation["positive_min"]
    if tuned != positive_min:
        read = "all the ratings" if tuned is None else f"the ratings at or above {tuned:g}"
        ask = "leave out --positive-min" if tuned is None else f"give --positive-min {tuned:g}"
        raise ConfigError(
            f"{target} was tuned on {read} (--positive-min); {ask} to train on the same, or "
            "tune again"
        )


def _resolved(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options with what the trials took from the defaults written out: the training
    options (`RESOLVED`) of a model trained by steps, every option of a solved model's config.
    The file then trains what its trials trained."""
    cls = model_class(model)
    if "solve" in cls.engines:
        shared = {f.name for f in fields(ModelConfig)}
        own = [f for f in fields(cls.Config) if f.name not in shared]
        return {**{f.name: f.default for f in own if f.default is not MISSING}, **options}
    model_fields = cls.Config.field_names()
    train_fields = {f.name for f in fields(TrainConfig)}
    config = TrainConfig.for_model(
        model, **{k: v for k, v in options.items() if k in train_fields and k not in model_fields}
    )
    return {**{name: getattr(config, name) for name in RESOLVED}, **options}


def _tuning_file_at(path: Path) -> dict[str, Any] | None:
    """The content of a tuning file at `path`, or None when it is not one."""
    try:
        if path.stat().st_size > _LARGEST_FILE:
            return None
        return _tuning_file(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return None


def _tuning_file(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        return None
    return data
