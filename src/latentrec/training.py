"""fit(): epochs of optimiser steps over index tensors, a one-cycle schedule, History.

Batches are cut from index tensors held in memory (no per-sample Dataset). The step itself
(row-sparse AdamW, exact gradient accumulation) is `latentrec.optim`.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from latentrec import checkpoints, distributed, fused, kernels
from latentrec.data import LARGEST_SEED, Ratings, Split, item_features
from latentrec.errors import ConfigError, DataError, TrainingError, listed
from latentrec.memory import Plan, available_bytes, format_bytes, parse_size, plan, sample_rows
from latentrec.metrics import mae, rmse
from latentrec.models import (
    DEFAULT_MODEL,
    MODELS,
    LatentModel,
    ModelConfig,
    build_model,
    model_class,
    y_range_for,
)
from latentrec.optim import (
    BETAS,
    EPS,
    OPTIMIZERS,
    AutogradEngine,
    FusedEngine,
    RowSparseAdamW,
    RowWiseAdagrad,
    StepRunner,
    make_optimizer,
    training_forward,
)
from latentrec.storage import Checkpoint

PREDICT_CHUNK = 1 << 16
# what a chunk's gathered rows may take: fewer pairs per chunk for wide rows (bayes keeps a
# vector per kept sample)
PREDICT_BYTES = 64 << 20
# training options that only models trained by steps take, though solved models may have a
# field of the same name (the ridge penalty l2 of ease and als)
STEP_PENALTIES = ("l2",)
# training options that only training by steps reads: a solved model refuses them
STEP_ONLY = (
    "epochs",
    "lr",
    "wd",
    "batch_size",
    "accumulate",
    "effective_batch_size",
    "negatives",
    "optimizer",
    "order",
)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
ENGINES = ("auto", "fused", "autograd", "solve")
ORDERS = ("shuffled", "blocked")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_number(name: str, value: Any) -> None:
    """A training option that must be a number (a config file may hold anything)."""
    if not _is_number(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are tuned on the bundled MovieLens sample.

    Args:
        epochs: passes over the training ratings.
        lr: peak learning rate of the one-cycle schedule.
        wd: decoupled weight decay, applied to a row each time it is updated.
        l2: an L2 penalty per rating: each rating adds l2 times the squared norm of every
            table row it reads (user and item factors and biases) to its squared error, so a
            row is pulled to zero in proportion to how many ratings it has (cornac's and
            Surprise's regularisation). Enters the gradient, so the optimiser's step scales it.
            None: from the training data (`l2_for`), the dot model's default with Adagrad.
        batch_size: ratings per micro-batch.
        accumulate: micro-batches per optimiser step.
        effective_batch_size: ratings per optimiser step; sets `accumulate` to
            ceil(effective_batch_size / batch_size) when given.
        seed: seeds initialisation and shuffling.
        memory_budget: bytes ("2GiB", "512MB" or an int) one training step may use; fit then
            measures steps and picks the largest micro-batch that fits, with the accumulation
            that reaches `effective_batch_size` (see `latentrec.memory.plan`).
        dtype: "float32" or "float64" for the model and the arithmetic.
        negatives: per rating, this many (user, random item) pairs whose target is the bottom
            of the model's prediction range (`y_range`, below the lowest rating). 0 trains for
            rating prediction; a few (8 with 20 epochs, lr 0.01, wd 0.1, AdamW) train for top-N
            ranking, where what a user chooses to rate matters.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        optimizer: "adamw" (lazy AdamW: two moments per weight) or "adagrad" (row-wise
            Adagrad: one accumulator per table row, a third of AdamW's memory traffic per
            step; see `latentrec.optim`). Both run in both engines.
        engine: "fused" runs the dot model's steps on the CPU in one compiled kernel (same
            mathematics, several times faster); "autograd" runs every model through PyTorch's
            autograd; "auto" picks fused where it applies (dot model, CPU, no negatives).
        progress: draw a progress bar on stderr; None means only on a terminal.
        order: the order of an epoch's ratings: "shuffled" (uniformly at random) or "blocked"
            (users and items cut into blocks of 8,192, the block pairs visited in a random
            order and each one's ratings shuffled, `fused.blocked_order`): a stretch of
            steps reads rows that stay in cache, so an epoch at scale moves fewer bytes from
            memory, for a little accuracy per epoch (benchmarks/README.md).
        checkpoint_every: write a checkpoint (model, optimiser, schedule, random states and
            position in the epoch) every this many optimiser steps; fit's `checkpoint_dir`
            says where.
    """

    epochs: int = 5
    lr: float = 0.0075
    wd: float = 0.5
    batch_size: int = 1024
    accumulate: int = 1
    effective_batch_size: int | None = None
    seed: int = 42
    device: str = "auto"
    progress: bool | None = None
    betas: tuple[float, float] = BETAS
    eps: float = EPS
    pct_start: float = 0.25
    evaluate_every_epoch: bool = True
    dtype: str = "float32"
    memory_budget: int | str | None = None
    negatives: int = 0
    engine: str = "auto"
    checkpoint_every: int | None = None
    optimizer: str = "adamw"
    l2: float | None = 0.0
    order: str = "shuffled"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.effective_batch_size is not None:
            if self.effective_batch_size < 1:
                raise ConfigError(
                    f"effective_batch_size must be >= 1, got {self.effective_batch_size}"
                )
            # with a memory budget the planner picks batch_size; until then it is a placeholder
            if self.effective_batch_size < self.batch_size and self.memory_budget is None:
                raise ConfigError(
                    f"effective_batch_size ({self.effective_batch_size}) must be at least "
                    f"batch_size ({self.batch_size})"
                )
            object.__setattr__(
                self, "accumulate", math.ceil(self.effective_batch_size / self.batch_size)
            )
        for name in ("lr", "wd", "eps", "pct_start", *(("l2",) if self.l2 is not None else ())):
            _check_number(name, getattr(self, name))
        for name in ("evaluate_every_epoch", *(("progress",) if self.progress is not None else ())):
            if not isinstance(getattr(self, name), bool):  # "no" would read as true
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        betas = self.betas
        if (
            not isinstance(betas, (tuple, list))
            or len(betas) != 2
            or not all(_is_number(b) and 0 <= b < 1 for b in betas)
        ):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not (self.eps > 0 and math.isfinite(self.eps)):
            raise ConfigError(f"eps must be a positive number, got {self.eps!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not (self.wd >= 0 and math.isfinite(self.wd)):
            raise ConfigError(f"wd must be zero or positive, got {self.wd!r}")
        if self.l2 is not None and not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise ConfigError(f"l2 must be zero or positive, got {self.l2!r}")
        if not isinstance(self.device, str) or (
            self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:")
        ):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not (0 <= self.seed <= LARGEST_SEED)
        ):
            raise ConfigError(
                f"seed must be a whole number from 0 to {LARGEST_SEED}, got {self.seed!r}"
            )
        if not isinstance(self.negatives, int) or self.negatives < 0:
            raise ConfigError(f"negatives must be a whole number >= 0, got {self.negatives!r}")
        if self.memory_budget is not None:
            parse_size(self.memory_budget)  # fails early on "2 gigs"
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.checkpoint_every is not None and (
            not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 1
        ):
            raise ConfigError(
                f"checkpoint_every must be a whole number of steps >= 1, got "
                f"{self.checkpoint_every!r}"
            )
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if not 0.0 < self.pct_start < 1.0:
            raise ConfigError(f"pct_start must be between 0 and 1, got {self.pct_start}")
        # Adam's first step scales lr by 1 / (1 - beta1): beyond the dtype it cannot even start
        largest = torch.finfo(DTYPES[self.dtype]).max * (1 - self.betas[0])
        if self.lr > largest:
            raise ConfigError(
                f"lr must be at most {largest:.3g} for {self.dtype} arithmetic, got {self.lr:g}; "
                "learning rates that work are far smaller (0.001 to 0.1)"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def samples_per_step(self) -> int:
        """Ratings per optimiser step in one process (times the world size under torchrun)."""
        return self.batch_size * self.accumulate

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def for_model(cls, model: str = DEFAULT_MODEL, **changes: Any) -> TrainConfig:
        """The training defaults for a model (the general ones, with those the model declares
        in its `train_defaults` and, for the optimiser it trains with, in its
        `optimizer_defaults`), with `changes` on top."""
        model_cls = model_class(model)
        defaults = dict(model_cls.train_defaults)
        optimizer = changes.get("optimizer", defaults.get("optimizer", cls.optimizer))
        defaults |= model_cls.optimizer_defaults.get(optimizer, {})
        return cls(**{**defaults, **changes})


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    test_rmse: float | None
    test_mae: float | None
    seconds: float


@dataclass
class History:
    """What happened in `fit`: one `EpochStats` per epoch and the totals."""

    model_config: ModelConfig
    train_config: TrainConfig
    n_train: int
    n_test: int
    device: str
    epochs: list[EpochStats] = field(default_factory=list)
    train_seconds: float = 0.0
    cold_users: int = 0
    cold_items: int = 0
    plan: Plan | None = None
    engine: str = "autograd"
    world_size: int = 1
    resumed_from: int | None = None
    # seconds fit spent before the first epoch (configs, model, engine, optimiser state)
    setup_seconds: float = 0.0

    @property
    def ratings_per_second(self) -> float:
        seen = self.n_train * len(self.epochs)
        return seen / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def rmse(self) -> float | None:
        return self.epochs[-1].test_rmse if self.epochs else None

    def so_far(self) -> dict[str, Any]:
        """The epochs and seconds so far, as JSON (kept in checkpoints)."""
        return {"epochs": [asdict(e) for e in self.epochs], "train_seconds": self.train_seconds}

    @property
    def mae(self) -> float | None:
        return self.epochs[-1].test_mae if self.epochs else None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but CUDA is not available here")
    return torch.device(device)


def make_configs(
    train: Ratings,
    model: str | ModelConfig = DEFAULT_MODEL,
    options: dict[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    fallback: dict[str, Any] | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """The model's and the training's configs for `train`.

    Args:
        model: a registered model's name (its config's defaults) or a config.
        options: fields of the model's config and of `TrainConfig`, on top of those.
        train_config: the training config; None: `TrainConfig.for_model`.
        fallback: model fields (y_range, rating_range) to take where neither the config nor
            the options set them, before they come from the data.

    n_users, n_items and global_mean come from `train`; rating_range and y_range too unless
    set (`fit` documents how).
    """
    # numpy's numbers as Python's: the configs check them, and JSON keeps them
    options = {k: v.item() if isinstance(v, np.generic) else v for k, v in (options or {}).items()}
    if train_config is not None and not isinstance(train_config, TrainConfig):
        raise ConfigError(
            f"the third argument is a TrainConfig, not {type(train_config).__name__}; give "
            "training options as keywords, e.g. fit(data, 'dot', epochs=5)"
        )
    cls = model_class(model.kind if isinstance(model, ModelConfig) else model)
    model_fields = cls.Config.field_names() - {"n_users", "n_items"}
    train_fields = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - model_fields - train_fields
    if "solve" in cls.engines:  # the per-rating penalty of steps: a solved model takes none
        unknown |= {k for k in STEP_PENALTIES if k in options and k not in model_fields}
    if unknown:
        raise ConfigError(_unknown_options(unknown, cls, model_fields, train_fields))
    stepped = [k for k in STEP_ONLY if options.get(k) is not None and k not in model_fields]
    if "solve" in cls.engines and stepped:
        raise ConfigError(
            f"{', '.join(stepped)} train by steps; the {cls.Config.kind} model is solved: "
            "leave them out"
        )
    model_options = {k: v for k, v in options.items() if k in model_fields}
    # a name both configs have (l2) is the model's: a solved model's penalty is its own
    train_options = {
        k: v for k, v in options.items() if k in train_fields and k not in model_fields
    }
    if isinstance(model, ModelConfig):
        base = replace(model, **model_options)
    else:
        base = cls.Config(**model_options)
    for name, value in (fallback or {}).items():
        if getattr(base, name) is None and value is not None:
            base = replace(base, **{name: value})
    if train_config is None:
        train_config = TrainConfig.for_model(cls.Config.kind, **train_options)
    elif train_options:
        train_config = replace(train_config, **train_options)
    if train_config.l2 is None:
        train_config = replace(train_config, l2=l2_for(train))
    scale = _rating_range(train, base.rating_range)
    model_config = replace(
        base,
        n_users=max(train.n_users, 1),
        n_items=max(train.n_items, 1),
        global_mean=(
            base.global_mean
            if base.global_mean is not None
            else _mean(train.rating)
            if len(train)
            else 0.0
        ),
        rating_range=scale,
        y_range=_y_range(scale, base.y_range),
    )
    return model_config, train_config


def _check_same_data(train: Ratings, context: distributed.Context) -> None:
    """DataError on every rank unless all read the same training ratings (under torchrun each
    reads the source itself: one that changes meanwhile, such as a database taking visitors'
    ratings, gives each rank other rows)."""
    data = checkpoints.fingerprint(train)
    mine = torch.tensor([data["n"], data["users"], data["items"], data["crc32"]])
    if distributed.differs_anywhere(mine):
        raise DataError(
            f"the {context.world_size} processes read different training ratings from "
            f"{train.source} (this one {len(train):,}): it changed while they read it; train "
            "from a source that holds still, such as a copy of it"
        )


def _mean(values: np.ndarray) -> float:
    """The mean as numpy takes it of float32 ratings; in float64 where that overflows (ratings
    near float32's largest)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.mean(values))
    return mean if math.isfinite(mean) else float(np.mean(values, dtype=np.float64))


# the largest rating (in size) that float32 training takes: a batch's summed squared errors
# stay below float32's largest, about 3.4e38
LARGEST_FLOAT32_RATING = 1e15


def l2_for(ratings: Ratings) -> float:
    """The per-rating L2 penalty for training data with this many ratings per table row:
    0.11 x (ratings / (users + items)) ** -0.38, four significant digits.

    The best penalty falls as the ratings per row grow. On validation rows carved from the
    training rows (`benchmarks/validate_optimizer.py`), the dot model's Adagrad did best with
    0.05 on the bundled sample (8.5 ratings per row), 0.03 at 5M synthetic ratings (34) and 0.02
    at 25M (92); this rule gives 0.049, 0.029 and 0.020, and its validation RMSE there is that
    of each one's best (0.8380, 0.5611, 0.5328)."""
    rows = max(ratings.n_users + ratings.n_items, 1)
    density = max(len(ratings) / rows, 1.0)
    return float(f"{0.11 * density**-0.38:.4g}")


def _resumed_training(checkpoint: Checkpoint, kind: str) -> dict[str, Any]:
    """The training options a checkpointed run trained with, for its resumption: today's
    defaults may differ (the dot model's Adagrad trained 3 epochs with wd 0.01 before the L2
    penalty came), and options added since (`checkpoints.EARLIER_TRAINING`) take what the run
    trained without. Options given to the resumed run go on top (and are checked)."""
    written = {**checkpoints.EARLIER_TRAINING, **checkpoint.meta.get("train", {})}
    train_fields = {f.name for f in fields(TrainConfig)}
    model_fields = model_class(kind).Config.field_names()
    return {
        k: v
        for k, v in written.items()
        if k in train_fields and k not in model_fields and k not in checkpoints.NOT_RESUMED
    }


def _ranking_models() -> list[str]:
    return [name for name, cls in MODELS.items() if not cls.predicts_ratings]


def option_owners(name: str) -> list[str]:
    """The models that take the option `name`: in their config, or (the per-rating penalty)
    as a training option of a model trained by steps."""
    return [
        kind
        for kind, cls in MODELS.items()
        if name in cls.Config.field_names()
        or (name in STEP_PENALTIES and "solve" not in cls.engines)
    ]


def _unknown_options(
    unknown: set[str], cls: type[LatentModel], model_fields: set[str], train_fields: set[str]
) -> str:
    """Which options do not apply, and to which other models they would."""
    kind = cls.Config.kind
    parts = []
    for name in sorted(unknown):
        owners = option_owners(name)
        noun = "model" if len(owners) == 1 else "models"
        where = f" (an option of the {listed(owners)} {noun})" if owners else ""
        parts.append(f"{name}{where}")
    known = any(" (an option of" in part for part in parts)
    what = (
        f"option(s) {', '.join(parts)} do not apply to"
        if known
        else (f"unknown option(s) {', '.join(parts)} for")
    )
    return (
        f"{what} the {kind} model; its options are "
        f"{', '.join(sorted(model_fields))}; training options are "
        f"{', '.join(sorted(train_fields))}"
    )


def _pair(given: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in given)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two numbers (low, high), got {given!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ConfigError(f"{name} must be two finite numbers with low <= high, got {given!r}")
    return low, high


def _rating_range(train: Ratings, given: Any) -> tuple[float, float]:
    """The scale ratings are given on: `given` when set (it must cover the training ratings),
    else the lowest and highest training rating."""
    if len(train) == 0:
        return _pair(given, "rating_range") if given is not None else (0.0, 5.0)
    low, high = train.rating_range
    if given is None:
        return (low, high)
    bottom, top = _pair(given, "rating_range")
    if bottom > low or top < high:
        raise ConfigError(
            f"the rating range {bottom:g}..{top:g} does not cover the training ratings, which "
            f"run from {low:g} to {high:g}; widen it, or leave it out to take it from the data"
        )
    return (bottom, top)


def _y_range(scale: tuple[float, float], given: Any) -> tuple[float, float]:
    """The range predictions are squashed into: `given` when set (it must hold the rating
    scale and be wider than a point), else the scale widened (`y_range_for`)."""
    if given is None:
        return y_range_for(*scale)
    bottom, top = _pair(given, "y_range")
    if not bottom < top:
        raise ConfigError(f"y_range must be two finite numbers with low < high, got {given!r}")
    if bottom > scale[0] or top < scale[1]:
        raise ConfigError(
            f"y_range {bottom:g}..{top:g} does not cover the rating scale "
            f"{scale[0]:g}..{scale[1]:g}"
        )
    return (bottom, top)


def fit(
    data: Ratings | Split | tuple[Ratings, Ratings],
    model: str | ModelConfig = DEFAULT_MODEL,
    train_config: TrainConfig | None = None,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    run: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[LatentModel, History]:
    """Train a model on ratings; evaluate on the test set after each epoch when one is given.

    Under torchrun, every rank calls fit on the same data: each takes its share of every
    step, DistributedDataParallel averages the gradients, and metrics are summed over ranks.

    Args:
        data: training `Ratings`, or a `Split` / `(train, test)` pair.
        model: a registered model's name (a key of `latentrec.MODELS`) with its config's
            defaults, or a config (`DotConfig(n_factors=100)`, `NNConfig(layers=(200, 100))`).
            n_users, n_items and global_mean come from the data; so do rating_range (the
            training ratings' lowest and highest) and y_range (the scale widened a ninth of
            its span each side) unless set.
        train_config: how to train; None: `TrainConfig.for_model(model)`, the general defaults
            with the model's own (`train_defaults`).
        on_epoch: called with each epoch's `EpochStats` as it ends.
        checkpoint_dir: where `checkpoint_every` writes checkpoints, and `resume` reads them.
        resume: continue from the newest checkpoint in `checkpoint_dir`; the data and the
            options must be those the checkpointed run was started with.
        run: JSON-able notes kept in each checkpoint (the CLI keeps its arguments there).
        **options: fields of the model's config and of `TrainConfig` (epochs, lr, wd,
            batch_size, accumulate, seed, device, ...), set on top of the configs.

    Returns:
        The trained model (in eval mode) and its `History`.
    """
    called = time.perf_counter()
    train, test, cold = _unpack(data)
    if len(train) == 0:
        raise DataError("there are no training ratings to fit")
    train.require_known("training")
    kind = model.kind if isinstance(model, ModelConfig) else model
    if train.implicit and model_class(kind).predicts_ratings:
        raise DataError(
            f"the {kind} model predicts ratings, and {train.source} holds interactions (no "
            f"ratings); use a ranking model ({', '.join(_ranking_models())}) or data with ratings"
        )
    checkpoint = None
    if resume:
        if checkpoint_dir is None:
            raise ConfigError("checkpoint_every and resume need a checkpoint_dir")
        checkpoint = checkpoints.latest(checkpoint_dir)
        checkpoints.check_data(checkpoint, train)  # first: other data explains any difference
    # the ranges the run started with, which a run checkpointed before the rating scale came
    # from the data does not find in its options
    saved = checkpoint.meta.get("model", {}) if checkpoint is not None else {}
    fallback = {k: saved.get(k) for k in ("y_range", "rating_range")}
    if checkpoint is not None:
        options = {**_resumed_training(checkpoint, kind), **options}
    model_config, config = make_configs(train, model, options, train_config, fallback)
    if config.checkpoint_every and checkpoint_dir is None:
        raise ConfigError("checkpoint_every and resume need a checkpoint_dir")
    context = distributed.setup(resolve_device(config.device))
    if context.world_size > 1:
        _check_same_data(train, context)
    device = distributed.device_for(resolve_device(config.device), context)
    solved = "solve" in model_class(model_config.kind).engines
    low, high = train.rating_range
    if not solved and config.dtype == "float32" and max(-low, high) > LARGEST_FLOAT32_RATING:
        raise DataError(
            f"{train.source}: ratings reach {max(-low, high):g}; the {model_config.kind} model "
            f"trains in float32, whose squared errors overflow past ratings of about "
            f"{LARGEST_FLOAT32_RATING:g}: divide the ratings by a power of ten, train in "
            "float64 (dtype), or use the bayes model, which takes any scale"
        )
    memory_plan = None
    if config.memory_budget is not None and not solved:
        if checkpoint is None:
            memory_plan = _plan_batches(train, model_config, config, device)
            planned = (memory_plan.batch_size, memory_plan.accumulate)
        else:  # the plan the checkpoint was trained with: measuring again could pick another
            planned = (
                checkpoint.meta["train"]["batch_size"],
                checkpoint.meta["train"]["accumulate"],
            )
        # every rank measures; all take rank 0's plan (near a boundary theirs could differ)
        planned = tuple(distributed.from_rank_zero(torch.tensor(planned)).tolist())
        config = replace(
            config, batch_size=planned[0], accumulate=planned[1], effective_batch_size=None
        )
    notes = {
        "model": model_config.to_json(),
        "train": config.to_json(),
        # a checksum of every rating: only a run that checkpoints or resumes needs it
        "data": (
            checkpoints.fingerprint(train)
            if config.checkpoint_every or checkpoint is not None
            else None
        ),
        "world_size": context.world_size,
        # a blocked order's cells (users x items): a release with other cells orders otherwise
        "cells": [fused.BLOCK_USERS, fused.BLOCK_ITEMS] if config.order == "blocked" else None,
        "run": run or {},
    }
    if checkpoint is not None:
        checkpoints.check_resumable(checkpoint, notes)
    _check_memory(model_config, config, device)
    torch.manual_seed(config.seed)
    net = build_model(model_config).to(device=device, dtype=config.torch_dtype)
    history = History(
        model_config,
        config,
        len(train),
        len(test) if test else 0,
        str(device),
        cold_users=cold[0],
        cold_items=cold[1],
        plan=memory_plan,
        engine=_choose_engine(net, config, device, context),
        world_size=context.world_size,
    )
    if history.engine == "solve":
        if config.checkpoint_every:
            raise ConfigError(
                f"the {net.kind} model is solved, not trained by steps: it has no checkpoints"
            )
        # under torchrun every rank solves alike; only rank 0 draws progress
        show = config.progress if context.is_main else False
        evaluator = _Evaluator(test, device, config.torch_dtype, context)
        return _solve(net, train, evaluator, history, config, show, on_epoch)
    writer = None
    if config.checkpoint_every:
        writer = checkpoints.Checkpoints(
            checkpoint_dir,
            config.checkpoint_every,
            notes,
            history.so_far,
            fresh=checkpoint is None and context.is_main,
        )
    trainer = _Trainer(net, train, config, device, history.engine, context, writer)
    start_epoch, start_step, loss_so_far = 0, 0, 0.0
    if checkpoint is not None:
        start_epoch, start_step, loss_so_far = trainer.restore(checkpoint)
        history.epochs = [EpochStats(**e) for e in checkpoint.meta["epochs"]]
        history.train_seconds = float(checkpoint.meta["train_seconds"])
        history.resumed_from = checkpoint.step
    evaluator = _Evaluator(test, device, config.torch_dtype, context)
    show = config.progress if context.is_main else False
    with (
        _flushing_denormals(),
        _Progress(replace(config, progress=show), config.epochs * trainer.steps_per_epoch) as bar,
    ):
        bar.update(trainer.schedule.steps_done, float("nan"))
        history.setup_seconds = time.perf_counter() - called
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            train_loss = trainer.run_epoch(epoch, bar, start_step, loss_so_far)
            start_step, loss_so_far = 0, 0.0
            seconds = time.perf_counter() - started + trainer.seconds_before_resume
            trainer.seconds_before_resume = 0.0
            history.train_seconds += seconds
            test_rmse = test_mae = None
            if (
                evaluator.active
                and net.predicts_ratings
                and (config.evaluate_every_epoch or epoch == config.epochs - 1)
            ):
                test_rmse, test_mae = evaluator(net)
                net.train()
            stats = EpochStats(epoch + 1, train_loss, test_rmse, test_mae, seconds)
            history.epochs.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
    net.eval()
    return net, history


def _check_memory(model_config: ModelConfig, config: TrainConfig, device: torch.device) -> None:
    """Refuse, before allocating, a model whose training does not fit in the memory available
    (CPU; CUDA reports its own out-of-memory errors) or, for a solved model, in the memory
    budget: weights and the optimiser's state with a step's activations and their gradients, or
    the matrices a solve keeps."""
    itemsize = config.torch_dtype.itemsize
    solve = model_config.solve_bytes(itemsize)
    available = available_bytes() if device.type == "cpu" else None
    if solve is not None:
        if config.memory_budget is not None:
            available = parse_size(config.memory_budget)
        needed, what = solve, "to solve"
    else:
        widths = model_config.step_width()
        per_step = 4 * config.batch_size * (1 + config.negatives) * widths  # values, grads, copies
        # AdamW keeps two numbers per weight; row-wise Adagrad at most one
        copies = 2 if config.optimizer == "adagrad" else 3
        needed = (copies * model_config.parameter_count() + per_step) * itemsize
        what = "for its weights, optimiser state and a training step"
    if available is None or needed <= available:
        return
    if solve is None:
        raise ConfigError(
            f"the {model_config.kind} model needs {format_bytes(needed)} {what}, but only "
            f"{format_bytes(available)} of memory is available; use {model_config.size_advice} "
            "or a smaller --batch-size"
        )
    given = "the memory budget gives" if config.memory_budget is not None else "there is"
    raise ConfigError(
        f"the {model_config.kind} model needs {format_bytes(needed)} {what} "
        f"({model_config.n_items:,} items), but {given} only {format_bytes(available)}; use "
        f"{model_config.size_advice}"
    )


def _choose_engine(
    net: LatentModel,
    config: TrainConfig,
    device: torch.device,
    context: distributed.Context,
) -> str:
    """The engine `config.engine` asks for, or the reason it cannot run."""
    if "solve" in net.engines:
        if config.engine not in ("auto", "solve"):
            raise ConfigError(
                f"the {net.kind} model is solved, not trained by steps: use engine 'auto', not "
                f"{config.engine!r}"
            )
        return "solve"
    if config.engine == "solve":
        raise ConfigError(
            f"the {net.kind} model trains with {' and '.join(net.engines)}, not by a solve"
        )
    reasons = []
    if "fused" not in net.engines:
        reasons.append(
            f"the {net.kind} model trains with {' and '.join(net.engines)} (it has no fused kernel)"
        )
    if context.active:
        reasons.append("it runs in one process (torchrun trains through DDP and autograd)")
    if device.type != "cpu":
        reasons.append(f"it runs on the CPU, not {device}")
    if config.negatives:
        reasons.append("it does not draw negatives")
    if not kernels.AVAILABLE:
        reasons.append("numba is not installed")
    if config.engine == "fused" and reasons:
        raise ConfigError(
            f"engine 'fused' cannot run here: {'; '.join(reasons)}; use engine 'auto' or 'autograd'"
        )
    if config.engine == "autograd" or reasons:
        return "autograd"
    return "fused"


def _solve(
    net: LatentModel,
    train: Ratings,
    evaluator: _Evaluator,
    history: History,
    config: TrainConfig,
    show: bool | None,
    on_epoch: Callable[[EpochStats], None] | None,
) -> tuple[LatentModel, History]:
    """Fit a solved model: one History entry per iteration of its solve (one for a closed
    form); the last holds the test RMSE and MAE of a model that predicts ratings."""
    iterations = net.config.solve_iterations()
    started = time.perf_counter()

    def iteration_done(iteration: int, loss: float) -> None:
        nonlocal started
        seconds = time.perf_counter() - started
        history.train_seconds += seconds
        stats = EpochStats(iteration + 1, loss, None, None, seconds)
        history.epochs.append(stats)
        bar.update(iteration + 1, loss)
        if on_epoch is not None:
            on_epoch(stats)
        started = time.perf_counter()

    with _Progress(replace(config, progress=show), iterations) as bar, kernels.collector_paused():
        loss = net.solve(_Interactions(train), iteration_done)
        if not history.epochs:  # a closed form: one go
            iteration_done(0, loss)
    net.eval()
    if evaluator.active and net.predicts_ratings:
        last = history.epochs[-1]
        last.test_rmse, last.test_mae = evaluator(net)
    return net, history


class _Interactions:
    """The training ratings as a solved model sees them: a user x item matrix of weights,
    repeated pairs added. Each call builds its structure afresh and keeps nothing: the
    model holds what it needs for as long as it needs it."""

    def __init__(self, train: Ratings) -> None:
        self.train = train
        self.n_users, self.n_items = train.n_users, train.n_items

    def gram(self) -> np.ndarray:
        train = self.train
        return kernels.gram(
            train.user_index, train.item_index, train.rating, self.n_users, self.n_items, True
        )

    def by_user(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._compressed("users")

    def by_item(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._compressed("items")

    def ratings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        train = self.train
        return train.user_index, train.item_index, train.rating

    def item_features(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        found = item_features(self.train)
        return None if found is None else (found[0], found[1], len(found[2]))

    def sessions(self, gap: float) -> tuple[np.ndarray, np.ndarray, int] | None:
        train = self.train
        if train.timestamp is None or len(train) == 0:
            return None
        order = np.lexsort((train.timestamp, train.user_index))
        users, times = train.user_index[order], train.timestamp[order]
        starts = np.ones(len(order), dtype=bool)
        # in float64: an int64 difference overflows for times at both ends of its range
        starts[1:] = (users[1:] != users[:-1]) | (np.diff(times.astype(np.float64)) > gap)
        sessions = np.cumsum(starts) - 1
        return sessions, train.item_index[order], int(sessions[-1]) + 1

    def _compressed(self, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        train = self.train
        if side == "users":
            return kernels.compress(train.user_index, train.item_index, train.rating, self.n_users)
        return kernels.compress(train.item_index, train.user_index, train.rating, self.n_items)


@contextlib.contextmanager
def _flushing_denormals() -> Iterator[None]:
    """Flush denormal floats to zero while training, and restore the default after.

    Rarely seen rows' optimiser state decays into denormals, which the CPU handles dozens of
    times slower; flushing them changes no result that matters. The setting is global to the
    process, so it must not outlive fit (other code, Hypothesis among it, relies on IEEE)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _plan_batches(
    train: Ratings, model_config: ModelConfig, config: TrainConfig, device: torch.device
) -> Plan:
    """Measure steps and pick the micro-batch and accumulation for the memory budget."""
    effective = config.effective_batch_size or config.samples_per_step
    rows = sample_rows(train, effective, seed=config.seed)
    return plan(
        model_config,
        rows,
        config.memory_budget,
        effective,
        str(device),
        config.dtype,
        optimizer=config.optimizer,
        l2=config.l2,
    )


def _unpack(data) -> tuple[Ratings, Ratings | None, tuple[int, int]]:
    if isinstance(data, Split):
        return data.train, data.test, (data.cold_users, data.cold_items)
    if isinstance(data, Ratings):
        return data, None, (0, 0)
    if isinstance(data, tuple) and len(data) == 2:
        split = Split.from_parts(*data) if data[0].users is not data[1].users else None
        if split is not None:
            return split.train, split.test, (split.cold_users, split.cold_items)
        return data[0], data[1], (0, 0)
    raise DataError(f"fit needs Ratings or a (train, test) split, got {type(data).__name__}")


def _tensors(
    ratings: Ratings, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    # the indexes as they are (int32): on the CPU the tensors share the arrays' memory (a
    # blocked order trains on copies of them, grouped by cell)
    return (
        torch.as_tensor(ratings.user_index).to(device),
        torch.as_tensor(ratings.item_index).to(device),
        torch.as_tensor(ratings.rating).to(device=device, dtype=dtype),
    )


class OneCycle:
    """The one-cycle schedule: the learning rate rises from lr/25 to lr over the first
    `pct_start` of the steps and falls to lr/1e5 by the last, both along half cosines; Adam's
    beta1 moves the other way, from 0.95 down to 0.85 and back. Robust to a handful of steps."""

    def __init__(
        self,
        optimizer: RowSparseAdamW | RowWiseAdagrad,
        lr: float,
        total_steps: int,
        pct_start: float,
    ) -> None:
        self.optimizer, self.lr, self.pct_start = optimizer, lr, pct_start
        self.total_steps = max(total_steps, 1)
        self.steps_done = 0
        self._apply()

    def step(self) -> None:
        """Advance by one optimiser step."""
        self.steps_done += 1
        self._apply()

    def restore(self, steps_done: int) -> None:
        """Continue as after `steps_done` steps (resuming from a checkpoint)."""
        self.steps_done = steps_done
        self._apply()

    def _apply(self) -> None:
        position = min(self.steps_done, self.total_steps - 1) / max(self.total_steps - 1, 1)
        if position < self.pct_start:
            fraction = position / self.pct_start
            lr, beta1 = _cosine(self.lr / 25, self.lr, fraction), _cosine(0.95, 0.85, fraction)
        else:
            fraction = (position - self.pct_start) / (1 - self.pct_start)
            lr, beta1 = _cosine(self.lr, self.lr / 1e5, fraction), _cosine(0.85, 0.95, fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["betas"] = (beta1, group["betas"][1])


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * fraction))


class _Trainer:
    """Holds the training tensors, optimiser, schedule and engine; runs epochs of steps.

    Under torchrun, every rank shuffles the same order; a step covers samples_per_step x
    world_size ratings of it and each rank takes its contiguous share.
    """

    def __init__(
        self,
        net: LatentModel,
        train: Ratings,
        config: TrainConfig,
        device: torch.device,
        engine: str,
        context: distributed.Context,
        checkpoints: checkpoints.Checkpoints | None,
    ) -> None:
        self.net, self.config, self.device = net, config, device
        self.context, self.checkpoints = context, checkpoints
        self.n = len(train)
        self.step_size = config.samples_per_step * context.world_size
        self.steps_per_epoch = math.ceil(self.n / self.step_size)
        self.optimizer = make_optimizer(
            net, config.lr, config.betas, config.eps, config.wd, config.optimizer
        )
        self.schedule = OneCycle(
            self.optimizer, config.lr, config.epochs * self.steps_per_epoch, config.pct_start
        )
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.epoch_generator_state = self.generator.get_state()
        self.negatives = torch.Generator(device="cpu").manual_seed(config.seed + 1)
        # torchrun workers run one thread each and keep numba's thread pool out of the process:
        # it shares the OpenMP runtime with torch, and a worker whose pool had started ran two
        # spinning threads on its core. The order is the same.
        self.parallel_shuffle = not context.active
        if self.parallel_shuffle:
            kernels.set_threads(torch.get_num_threads())
        # compile or load the shuffle now, not in the first epoch's time
        with kernels.collector_paused():
            if config.order == "blocked":
                fused.blocked_order(np.zeros(2, dtype=np.int64), 0, self.parallel_shuffle)
            else:
                fused.permutation(0, 0, parallel=self.parallel_shuffle)
        self.seconds_before_resume = 0.0
        self.epoch_started = time.perf_counter()
        tensors = _tensors(train, device, config.torch_dtype)
        self.cell_starts = None
        if config.order == "blocked":
            # the ratings grouped cell by cell once: an epoch then reads each cell's ratings
            # from one stretch of memory, and shuffles cells, not all the ratings
            grouped, self.cell_starts = fused.cell_layout(
                train.user_index,
                train.item_index,
                train.n_users,
                train.n_items,
                parallel=self.parallel_shuffle,
            )
            index = torch.from_numpy(grouped).to(device)
            del grouped
            tensors = tuple(tensor[index] for tensor in tensors)
            del index
        self.engine = self._engine(engine, tensors)

    def _engine(self, name: str, tensors: tuple[Tensor, Tensor, Tensor]) -> Any:
        if name == "fused":
            return FusedEngine(
                self.net.fused_tables(),
                self.net.y_range,
                *tensors,
                self.step_size,
                self.optimizer,
                self.schedule.step,
                l2=self.config.l2,
            )
        runner = StepRunner(
            self.net,
            *tensors,
            self.config.batch_size,
            self.optimizer,
            self.config.negatives,
            self.negatives,
            ddp=training_forward(self.net, self.device) if self.context.active else None,
            world_size=self.context.world_size,
            l2=self.config.l2,
        )
        return AutogradEngine(runner, self.step_size, self.schedule.step, self.context)

    def run_epoch(
        self, epoch: int, progress: _Progress, start_step: int = 0, loss_so_far: float = 0.0
    ) -> float:
        """One pass in a fresh order (`TrainConfig.order`), from step `start_step` on (when
        resuming); returns the mean training loss over all ranks."""
        self.net.train()
        self.epoch_generator_state = self.generator.get_state()
        # one draw from the generator seeds the epoch's order: a checkpoint of the generator
        # replays it, and the shuffle itself runs on all threads
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        if self.cell_starts is not None:
            order = fused.blocked_order(self.cell_starts, seed, parallel=self.parallel_shuffle)
        else:
            order = fused.permutation(self.n, seed, parallel=self.parallel_shuffle)
        order = torch.from_numpy(order).to(self.device)
        self.epoch_started = time.perf_counter()
        loss_sum, first = loss_so_far, start_step
        while first < self.steps_per_epoch:
            last = min(first + self.engine.steps_per_call, self.steps_per_epoch)
            if self.checkpoints is not None:  # a call never runs past a checkpoint
                due = self.checkpoints.next_due(self.schedule.steps_done)
                last = min(last, due - epoch * self.steps_per_epoch)
            loss_sum += self.engine.run(order, first, last)
            if not self.context.active:  # under torchrun the epoch's summed loss says it
                self.check_finite(loss_sum, epoch, last)
            progress.update(
                epoch * self.steps_per_epoch + last, loss_sum / min(last * self.step_size, self.n)
            )
            if self.checkpoints is not None and self.checkpoints.due(self.schedule.steps_done):
                self._save(epoch, last, loss_sum)
            first = last
        loss = distributed.all_reduce_sum(self._total(loss_sum)).item()
        self.check_finite(loss, epoch, self.steps_per_epoch)
        return loss / self.n

    def _total(self, loss_sum: float) -> Tensor:
        # on the training device: NCCL reduces only CUDA tensors
        return torch.tensor(loss_sum, dtype=torch.float64, device=self.device)

    def check_finite(self, loss: float, epoch: int, step_in_epoch: int) -> None:
        """Stop with `TrainingError` once the loss is NaN or infinite: the weights are too, and
        every later step, checkpoint or saved model would carry them."""
        if math.isfinite(loss):
            return
        raise TrainingError(
            f"training diverged: the loss became {loss} in epoch {epoch + 1}, by step "
            f"{step_in_epoch} of {self.steps_per_epoch}; lower the learning rate (lr "
            f"{self.config.lr:g}) or the weight decay (wd {self.config.wd:g}); the model was not "
            "kept"
        )

    def _save(self, epoch: int, step_in_epoch: int, loss_sum: float) -> None:
        """Checkpoint after `step_in_epoch` steps of `epoch` (rank 0 writes; all ranks wait)."""
        # every rank joins the sum; rank 0 keeps it in the checkpoint
        total = distributed.all_reduce_sum(self._total(loss_sum)).item()
        # keep the last good checkpoint: the loss so far, and the weights the step just made
        finite = all(bool(torch.isfinite(p).all()) for p in self.net.parameters())
        self.check_finite(total if finite else math.nan, epoch, step_in_epoch)
        if self.context.is_main:
            tensors, state = self.state()
            seconds = time.perf_counter() - self.epoch_started + self.seconds_before_resume
            self.checkpoints.write(
                self.schedule.steps_done,
                tensors,
                {
                    **state,
                    "epoch": epoch,
                    "step_in_epoch": step_in_epoch,
                    "steps_per_epoch": self.steps_per_epoch,
                    "loss_so_far": total,
                    "epoch_seconds": seconds,
                },
            )
        distributed.barrier()

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Model, optimiser and random states as tensors, and the counters beside them."""
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        optimizer_steps = {}
        for name, p in self.net.named_parameters():
            if self.optimizer.state.get(p):
                tensors[f"moments.{name}"] = self.optimizer.state[p]["moments"]
                optimizer_steps[name] = self.optimizer.state[p]["step"]
        tensors["rng.order"] = self.epoch_generator_state
        tensors["rng.negatives"] = self.negatives.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return tensors, {
            "optimizer_steps": optimizer_steps,
            "schedule_steps": self.schedule.steps_done,
        }

    def restore(self, checkpoint: Checkpoint) -> tuple[int, int, float]:
        """Load a checkpoint's state; returns (epoch, step in it, loss summed so far)."""
        tensors, meta = checkpoint.tensors, checkpoint.meta
        prefix = "model."
        self.net.load_state_dict(
            {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        )
        for name, p in self.net.named_parameters():
            if name in meta["optimizer_steps"]:
                state = self.optimizer.state_for(p)
                state["moments"].copy_(tensors[f"moments.{name}"])  # in place: the kernel's view
                state["step"] = int(meta["optimizer_steps"][name])
        self.generator.set_state(tensors["rng.order"])
        self.negatives.set_state(tensors["rng.negatives"])
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.schedule.restore(int(meta["schedule_steps"]))
        self.seconds_before_resume = float(meta["epoch_seconds"])
        # rank 0 carries the loss summed over all ranks so far; the others start from zero
        loss = float(meta["loss_so_far"]) if self.context.is_main else 0.0
        return int(meta["epoch"]), int(meta["step_in_epoch"]), loss


class _Evaluator:
    """Test RMSE and MAE after an epoch; under torchrun each rank predicts its share."""

    def __init__(
        self,
        test: Ratings | None,
        device: torch.device,
        dtype: torch.dtype,
        context: distributed.Context,
    ) -> None:
        self.context = context
        self.tensors = _tensors(test, device, dtype) if test is not None and len(test) else None

    @property
    def active(self) -> bool:
        return self.tensors is not None

    def __call__(self, net: LatentModel) -> tuple[float, float]:
        return _evaluate_tensors(net, *self.tensors, context=self.context)


def predict_chunk(net: LatentModel) -> int:
    """Pairs `predict_index` takes at a time: PREDICT_CHUNK, fewer where a pair's user and
    item rows together exceed PREDICT_BYTES / PREDICT_CHUNK bytes (never below 1,024)."""
    tables = [getattr(net, name).weight for name in (*net.user_tables, *net.item_tables)]
    row_bytes = sum(table.shape[1] * table.element_size() for table in tables)
    return max(1024, min(PREDICT_CHUNK, PREDICT_BYTES // max(row_bytes, 1)))


@torch.no_grad()
def predict_index(net: LatentModel, users: Tensor, items: Tensor) -> Tensor:
    """Predictions for index tensors, computed in chunks to bound memory."""
    net.eval()
    chunk = predict_chunk(net)
    out = [
        net(users[start : start + chunk], items[start : start + chunk])
        for start in range(0, len(users), chunk)
    ]
    return torch.cat(out) if out else torch.zeros(0, device=users.device)


def _evaluate_tensors(
    net: LatentModel,
    users: Tensor,
    items: Tensor,
    target: Tensor,
    context: distributed.Context | None = None,
):
    if context is None or not context.active:
        prediction = predict_index(net, users, items).cpu().numpy()
        truth = target.cpu().numpy()
        return rmse(prediction, truth), mae(prediction, truth)
    # each rank predicts its share of the test set; the sums meet by all-reduce
    share = slice(context.rank, None, context.world_size)
    error = predict_index(net, users[share], items[share]).double() - target[share].double()
    sums = torch.stack([error.square().sum(), error.abs().sum()])
    sums = distributed.all_reduce_sum(sums).tolist()
    return math.sqrt(sums[0] / len(users)), sums[1] / len(users)


def evaluate(net: LatentModel, ratings: Ratings) -> dict[str, float]:
    """Test RMSE and MAE of a model on ratings expressed in the model's id maps."""
    if not net.predicts_ratings:
        raise ConfigError(
            f"the {net.kind} model ranks items and predicts no ratings: it has no RMSE; "
            "evaluate it with ranking metrics (ndcg@10, precision@10)"
        )
    if ratings.n_users != net.n_users or ratings.n_items != net.n_items:
        raise DataError(
            f"{ratings.source} is in id maps of {ratings.n_users} users and {ratings.n_items} "
            f"items, the model's of {net.n_users} and {net.n_items}: express the ratings in "
            "the model's maps, ratings.reindexed(train.users, train.items)"
        )
    device = net.device
    users, items, target = _tensors(ratings, device)
    value_rmse, value_mae = _evaluate_tensors(net, users, items, target)
    return {"rmse": value_rmse, "mae": value_mae, "n": len(ratings)}


class _Progress:
    """A rich progress bar over optimiser steps with the running loss, on stderr."""

    def __init__(self, config: TrainConfig, total_steps: int) -> None:
        show = config.progress if config.progress is not None else sys.stderr.isatty()
        self._bar: Progress | None = None
        if show:
            self._bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._task = self._bar.add_task("train", total=total_steps, loss=float("nan"))

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def update(self, steps_done: int, loss: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=steps_done, loss=loss)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
