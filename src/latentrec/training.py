"""fit(): batches cut from index tensors, row-sparse AdamW, one-cycle schedule, accumulation.

The cost of a step grows with the batch, not with the embedding tables: each micro-batch looks
up only the distinct rows it needs (as leaf tensors), autograd gives their gradients, and the
optimiser updates just those rows (lazy AdamW: moments and weight decay of a row move when the
row is in a batch). Dense layers (the nn model's) get ordinary AdamW.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from latentrec.data import Ratings, Split
from latentrec.errors import ConfigError, DataError
from latentrec.metrics import mae, rmse
from latentrec.models import MODEL_KINDS, LatentModel, ModelConfig, build_model

PREDICT_CHUNK = 1 << 16


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are tuned on the bundled MovieLens sample.

    Args:
        epochs: passes over the training ratings.
        lr: peak learning rate of the one-cycle schedule.
        wd: decoupled weight decay (AdamW), applied to a row each time it is updated.
        batch_size: ratings per micro-batch.
        accumulate: micro-batches per optimiser step.
        effective_batch_size: ratings per optimiser step; sets `accumulate` to
            ceil(effective_batch_size / batch_size) when given.
        seed: seeds initialisation and shuffling.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        progress: draw a progress bar on stderr; None means only on a terminal.
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
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-5
    pct_start: float = 0.25
    evaluate_every_epoch: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulate"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.effective_batch_size is not None:
            if self.effective_batch_size < self.batch_size:
                raise ConfigError(
                    f"effective_batch_size ({self.effective_batch_size}) must be at least "
                    f"batch_size ({self.batch_size})"
                )
            object.__setattr__(
                self, "accumulate", math.ceil(self.effective_batch_size / self.batch_size)
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        if not (self.wd >= 0 and math.isfinite(self.wd)):
            raise ConfigError(f"wd must be zero or positive, got {self.wd!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if not 0.0 < self.pct_start < 1.0:
            raise ConfigError(f"pct_start must be between 0 and 1, got {self.pct_start}")

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.accumulate


MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "dot": {"n_factors": 50},
    "nn": {"layers": (100, 50), "dropout": 0.0, "emb_dropout": 0.5},
}
# measured on the bundled data (90/10 split, seed 42); see README.md for the figures
TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "dot": {},
    "nn": {"lr": 0.003, "wd": 0.01, "batch_size": 512},
}


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

    @property
    def ratings_per_second(self) -> float:
        seen = self.n_train * len(self.epochs)
        return seen / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def rmse(self) -> float | None:
        return self.epochs[-1].test_rmse if self.epochs else None

    @property
    def mae(self) -> float | None:
        return self.epochs[-1].test_mae if self.epochs else None


class RowSparseAdamW(torch.optim.Optimizer):
    """AdamW that updates only the rows present in a sparse gradient; dense grads as usual.

    Sparse gradients (embedding tables) follow lazy Adam: the moments and the decoupled weight
    decay of a row change only on steps whose batch holds that row, so a step costs O(rows in
    the batch), not O(table).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    # first and second moments in one tensor: one gather, one scatter per step
                    state["moments"] = torch.zeros((2, *p.shape), dtype=p.dtype, device=p.device)
                state["step"] += 1
                correction1 = 1 - beta1 ** state["step"]
                correction2 = 1 - beta2 ** state["step"]
                args = (lr, beta1, beta2, eps, wd, correction1, correction2)
                if p.grad.is_sparse:
                    _sparse_update(p, p.grad, state["moments"], *args)
                else:
                    _dense_update(p, p.grad, state["moments"], *args)


def _dense_update(p, grad, moments, lr, beta1, beta2, eps, wd, c1, c2) -> None:
    exp_avg, exp_avg_sq = moments
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denominator = exp_avg_sq.div(c2).sqrt_().add_(eps)
    p.mul_(1 - lr * wd).addcdiv_(exp_avg, denominator, value=-lr / c1)


def _sparse_update(p, grad, moments, lr, beta1, beta2, eps, wd, c1, c2) -> None:
    if not grad.is_coalesced():  # several micro-batches added up: sum rows that repeat
        grad = grad.coalesce()
    rows, values = grad._indices()[0], grad._values()
    row_moments = moments.index_select(1, rows)
    m, v = row_moments
    m.mul_(beta1).add_(values, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(values, values, value=1 - beta2)
    moments.index_copy_(1, rows, row_moments)
    weights = p.index_select(0, rows).mul_(1 - lr * wd)
    weights.addcdiv_(m, v.div_(c2).sqrt_().add_(eps), value=-lr / c1)
    p.index_copy_(0, rows, weights)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for, but CUDA is not available here")
    return torch.device(device)


def make_configs(
    train: Ratings, model: str, options: dict[str, Any]
) -> tuple[ModelConfig, TrainConfig]:
    """Split fit's keyword options into the model's and the training's configs."""
    if model not in MODEL_KINDS:
        raise ConfigError(f"model must be one of {', '.join(MODEL_KINDS)}, got {model!r}")
    model_fields = {f.name for f in fields(ModelConfig)} - {"kind", "n_users", "n_items"}
    train_fields = {f.name for f in fields(TrainConfig)}
    unknown = set(options) - model_fields - train_fields
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(sorted(unknown))}; model options are "
            f"{', '.join(sorted(model_fields))}; training options are "
            f"{', '.join(sorted(train_fields))}"
        )
    model_options = {
        **MODEL_DEFAULTS[model],
        **{k: options[k] for k in model_fields & set(options)},
    }
    train_options = {
        **TRAIN_DEFAULTS[model],
        **{k: options[k] for k in train_fields & set(options)},
    }
    model_options.setdefault("global_mean", float(np.mean(train.rating)) if len(train) else 0.0)
    model_config = ModelConfig(
        kind=model, n_users=max(train.n_users, 1), n_items=max(train.n_items, 1), **model_options
    )
    return model_config, TrainConfig(**train_options)


def fit(
    data: Ratings | Split | tuple[Ratings, Ratings],
    model: str = "dot",
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    **options: Any,
) -> tuple[LatentModel, History]:
    """Train a model on ratings; evaluate on the test set after each epoch when one is given.

    Args:
        data: training `Ratings`, or a `Split` / `(train, test)` pair.
        model: `"dot"` (DotProductBias) or `"nn"` (EmbeddingNN).
        on_epoch: called with each epoch's `EpochStats` as it ends.
        **options: fields of `ModelConfig` (n_factors, layers, dropout, y_range, ...) and of
            `TrainConfig` (epochs, lr, wd, batch_size, accumulate, seed, device, ...).

    Returns:
        The trained model (in eval mode) and its `History`.
    """
    train, test, cold = _unpack(data)
    if len(train) == 0:
        raise DataError("there are no training ratings to fit")
    model_config, config = make_configs(train, model, options)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    net = build_model(model_config).to(device)
    history = History(model_config, config, len(train), len(test) if test else 0, str(device))
    history.cold_users, history.cold_items = cold
    # Rarely seen rows' optimiser state decays into denormal floats, which the CPU handles
    # dozens of times slower; flushing them to zero changes no result that matters.
    torch.set_flush_denormal(True)
    trainer = _Trainer(net, train, config, device)
    test_tensors = _tensors(test, device) if test is not None and len(test) else None
    with _Progress(config, config.epochs * trainer.steps_per_epoch) as progress:
        for epoch in range(config.epochs):
            started = time.perf_counter()
            train_loss = trainer.run_epoch(epoch, progress)
            seconds = time.perf_counter() - started
            history.train_seconds += seconds
            test_rmse = test_mae = None
            if test_tensors is not None and (
                config.evaluate_every_epoch or epoch == config.epochs - 1
            ):
                test_rmse, test_mae = _evaluate_tensors(net, *test_tensors)
                net.train()
            stats = EpochStats(epoch + 1, train_loss, test_rmse, test_mae, seconds)
            history.epochs.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
    net.eval()
    return net, history


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


def _tensors(ratings: Ratings, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    return (
        torch.as_tensor(ratings.user_index, dtype=torch.int64).to(device),
        torch.as_tensor(ratings.item_index, dtype=torch.int64).to(device),
        torch.as_tensor(ratings.rating, dtype=torch.float32).to(device),
    )


class _Trainer:
    """Holds the training tensors and optimiser state; runs epochs of grouped micro-batches."""

    def __init__(
        self, net: LatentModel, train: Ratings, config: TrainConfig, device: torch.device
    ) -> None:
        self.net, self.config, self.device = net, config, device
        self.users, self.items, self.ratings = _tensors(train, device)
        self.n = len(train)
        self.steps_per_epoch = math.ceil(self.n / config.samples_per_step)
        table_weights = {id(t.weight) for t in net.tables().values()}
        self.sparse_params = [t.weight for t in net.tables().values()]
        dense = [p for p in net.parameters() if id(p) not in table_weights]
        groups: list[dict[str, Any]] = [{"params": self.sparse_params}]
        if dense:
            groups.append({"params": dense})
        self.optimizer = RowSparseAdamW(
            groups, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.wd
        )
        self.schedule = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer,
            max_lr=config.lr,
            total_steps=config.epochs * self.steps_per_epoch,
            pct_start=config.pct_start,
            base_momentum=0.85,
            max_momentum=0.95,
            div_factor=25.0,
            final_div_factor=1e5,
        )
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)

    def run_epoch(self, epoch: int, progress: _Progress) -> float:
        """One pass in a fresh shuffled order; returns the mean training loss."""
        self.net.train()
        order = torch.randperm(self.n, generator=self.generator).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        seen = 0
        for step, group in enumerate(order.split(self.config.samples_per_step)):
            # micro-batches are consecutive slices of the group: (B, N) sees what (B*N, 1) sees
            for micro in group.split(self.config.batch_size):
                loss_sum += self._micro_step(micro, len(group))
            self.optimizer.step()
            self.schedule.step()
            for p in self.net.parameters():
                p.grad = None
            seen += len(group)
            if step % 32 == 31 or seen == self.n:  # a host sync every 32 steps, not every step
                progress.update(epoch * self.steps_per_epoch + step + 1, loss_sum.item() / seen)
        return loss_sum.item() / self.n

    def _micro_step(self, rows: Tensor, group_size: int) -> Tensor:
        """Forward and backward of one micro-batch; its loss weighs group_size in the step."""
        users = self.users.index_select(0, rows)
        items = self.items.index_select(0, rows)
        target = self.ratings.index_select(0, rows)
        user_rows, user_leaves = _gather(self.net, self.net.user_tables, users)
        item_rows, item_leaves = _gather(self.net, self.net.item_tables, items)
        prediction = self.net.interact(user_rows, item_rows)
        loss = torch.nn.functional.mse_loss(prediction, target, reduction="sum")
        (loss / group_size).backward()
        for name, (index, leaf) in {**user_leaves, **item_leaves}.items():
            weight = getattr(self.net, name).weight
            grad = torch.sparse_coo_tensor(
                index[None], leaf.grad, weight.shape, is_coalesced=True, check_invariants=False
            )
            weight.grad = grad if weight.grad is None else weight.grad + grad
        return loss.detach()


def _gather(net: LatentModel, names: tuple[str, ...], index: Tensor):
    """Each table's distinct rows for this batch as a leaf tensor, expanded to the batch."""
    distinct, inverse = torch.unique(index, return_inverse=True)
    rows, leaves = [], {}
    for name in names:
        leaf = getattr(net, name).weight.detach().index_select(0, distinct).requires_grad_()
        leaves[name] = (distinct, leaf)
        rows.append(leaf.index_select(0, inverse))
    return rows, leaves


@torch.no_grad()
def predict_index(net: LatentModel, users: Tensor, items: Tensor) -> Tensor:
    """Predictions for index tensors, computed in chunks to bound memory."""
    net.eval()
    out = [
        net(users[start : start + PREDICT_CHUNK], items[start : start + PREDICT_CHUNK])
        for start in range(0, len(users), PREDICT_CHUNK)
    ]
    return torch.cat(out) if out else torch.zeros(0, device=users.device)


def _evaluate_tensors(net: LatentModel, users: Tensor, items: Tensor, target: Tensor):
    prediction = predict_index(net, users, items).cpu().numpy()
    truth = target.cpu().numpy()
    return rmse(prediction, truth), mae(prediction, truth)


def evaluate(net: LatentModel, ratings: Ratings) -> dict[str, float]:
    """Test RMSE and MAE of a model on ratings expressed in the model's id maps."""
    device = next(net.parameters()).device
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
