"""What every model shares: its config's common fields, embedding tables looked up by index,
scoring, and the interface the rest of latentrec calls (see docs/adding-a-model.md).

A model splits into embedding tables (looked up by user or item index) and an `interact` step
on the looked-up rows. Training uses that split to touch only the rows a batch needs; inference
calls the model on index tensors, or scores every item for a few users at once.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from latentrec.errors import ConfigError

HUGE_PAGE = 2 * 2**20  # a transparent huge page on x86-64 and most arm64 Linux kernels
SCORE_CHUNK_BYTES = 64 * 2**20


def zeros_in_huge_pages(
    shape: tuple[int, ...],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """`torch.zeros(shape, dtype=dtype, device=device)`; on the CPU, in memory the kernel is
    asked to back with huge pages when it is 2 MiB or more and the system has them (Linux).

    Training reads and updates table rows at random: with 4 KiB pages nearly every row of a
    large table is a TLB miss and a page walk. The memory is an anonymous mapping of its own,
    freed with the tensor.
    """
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device) if device is not None else torch.get_default_device()
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE") or device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    # private and anonymous: zero-filled, and room to start on a 2 MiB boundary (a shared
    # mapping would be shmem, which the kernel gives no huge pages by default)
    area = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # a kernel without transparent huge pages refuses the advice: ordinary pages, as torch's
    with contextlib.suppress(OSError):
        area.madvise(mmap.MADV_HUGEPAGE)
    raw = np.frombuffer(area, dtype=np.uint8)
    start = -raw.ctypes.data % HUGE_PAGE
    table = torch.from_numpy(raw[start : start + nbytes]).view(dtype).reshape(shape)
    return table.zero_()  # backed now, as torch.zeros is, not by faults during training


def embedding(rows: int, width: int) -> nn.Embedding:
    """`nn.Embedding(rows, width)` with its weight in `zeros_in_huge_pages` memory."""
    weight = zeros_in_huge_pages((rows, width))
    # nn.Embedding's own initialisation: callers re-initialise, but drawing it keeps the
    # random stream, and so a seed's models, as they were
    nn.init.normal_(weight)
    return nn.Embedding.from_pretrained(weight, freeze=False)


def y_range_for(low: float, high: float) -> tuple[float, float]:
    """The prediction range for ratings from `low` to `high`: widened by a ninth of their span
    on each side, so MovieLens's 0.5..5 gets fastai's 0..5.5 and the sigmoid can reach the
    highest and lowest ratings. A single rating value gets a margin of 0.5."""
    margin = (high - low) / 9 if high > low else 0.5
    return (float(low - margin), float(high + margin))


def sigmoid_range(x: Tensor, low: float, high: float) -> Tensor:
    return torch.sigmoid(x) * (high - low) + low


# ----------------------------------------------------------------------------- checking values
# a config also comes from a model file someone may have edited: every type is checked, so a
# bad value is one ConfigError naming the field and not a TypeError deep inside torch


def shown(value: Any) -> str:
    return reprlib.repr(value)  # bounded, however large the value in the file


def is_whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        return False
    try:
        return math.isfinite(float(value))
    except (OverflowError, TypeError):  # an int beyond float, a complex number
        return False


def whole(name: str, value: Any, least: int = 1) -> int:
    """`value` as an int; ConfigError unless it is a whole number >= least."""
    if not is_whole(value) or value < least:
        allowed = "0 (rule of thumb) or " if least == 0 else ""
        raise ConfigError(f"{name} must be {allowed}a positive whole number, got {shown(value)}")
    return int(value)


def fraction(name: str, value: Any) -> float:
    """`value` as a float in [0, 1) (a dropout probability)."""
    if not is_finite(value) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be a number in [0, 1), got {shown(value)}")
    return float(value)


def widths(name: str, value: Any) -> tuple[int, ...]:
    """`value` as a tuple of positive widths (hidden layers)."""
    if not isinstance(value, (list, tuple)) or not all(is_whole(w) and w >= 1 for w in value):
        raise ConfigError(f"{name} must be a list of positive widths, got {shown(value)}")
    return tuple(int(w) for w in value)


def _number_pair(name: str, value: Any, strict: bool) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(is_finite(v) for v in value)
        or not (float(value[0]) < float(value[1]) if strict else value[0] <= value[1])
    ):
        order = "low < high" if strict else "low <= high"
        raise ConfigError(
            f"{name} must be (low, high), two finite numbers with {order}, got {shown(value)}"
        )
    return (float(value[0]), float(value[1]))


SEARCH_KINDS = ("float", "log", "int", "int_log")  # uniform or log-uniform; real or whole


def search_space(**ranges: tuple[str, float, float]) -> Mapping[str, tuple[str, float, float]]:
    """A model's `tunable` ranges, read-only, each checked as the class is defined.

    Each option maps to (kind, low, high): kind one of `SEARCH_KINDS`, finite bounds with
    low < high, both above zero for a log kind and whole numbers for an int kind.
    """
    for name, bounds in ranges.items():
        kind, low, high = bounds
        wrong = None
        if kind not in SEARCH_KINDS:
            wrong = f"kind must be one of {', '.join(SEARCH_KINDS)}, got {shown(kind)}"
        elif not (is_finite(low) and is_finite(high) and low < high):
            wrong = f"needs finite bounds with low < high, got {low!r}, {high!r}"
        elif kind.endswith("log") and low <= 0:
            wrong = f"is searched on a log scale, so its low bound must be above 0, got {low!r}"
        elif kind.startswith("int") and not (is_whole(low) and is_whole(high)):
            wrong = f"is a whole number, so its bounds must be too, got {low!r}, {high!r}"
        if wrong:
            raise ConfigError(f"tunable option {name} {wrong}")
    return MappingProxyType(dict(ranges))


# ----------------------------------------------------------------------------- the config


@dataclass(frozen=True)
class ModelConfig:
    """What every model's config holds: the data's shape and the rating scale. A model's own
    config (`DotConfig`, `NNConfig`, ...) adds its architecture and its defaults.

    `fit` fills these from the training ratings: n_users, n_items, global_mean, and
    rating_range and y_range unless they are given.

    Args:
        n_users, n_items: rows of the user and item tables.
        y_range: predictions are `low + (high - low) * sigmoid(x)`; None: the rating scale
            widened by a ninth of its span on each side (`y_range_for`).
        global_mean: the prediction when neither user nor item is known (None: 0 here;
            `fit` takes the training ratings' mean).
        rating_range: the scale ratings are given on (lowest, highest): what a new user's
            ratings may be. `fit` takes it from the training ratings unless told; None in
            models saved before it was kept (the training ratings' range then stands in).

    A model's config also declares `tunable`, the space `latentrec.tune` searches: an option
    `fit` takes (a field of this config, or of `TrainConfig` such as lr) -> (kind, low, high),
    built with `search_space`; kind "float" or "int" (uniform), "log" or "int_log"
    (log-uniform). Options left out keep their defaults while tuning.
    """

    kind: ClassVar[str] = ""
    tunable: ClassVar[Mapping[str, tuple[str, float, float]]] = MappingProxyType({})
    # fields added after model files were first written, with what a file without them was
    # trained with (`config_from_json` fills them in)
    earlier: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    n_users: int = 1
    n_items: int = 1
    y_range: tuple[float, float] | None = None
    global_mean: float | None = None
    rating_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items"):
            object.__setattr__(self, name, whole(name, getattr(self, name)))
        if self.rating_range is not None:
            scale = _number_pair("rating_range", self.rating_range, strict=False)
            object.__setattr__(self, "rating_range", scale)
        if self.y_range is not None:
            object.__setattr__(self, "y_range", _number_pair("y_range", self.y_range, True))
        if self.global_mean is not None:
            if not is_finite(self.global_mean):
                raise ConfigError(
                    f"global_mean must be a finite number, got {shown(self.global_mean)}"
                )
            object.__setattr__(self, "global_mean", float(self.global_mean))

    @property
    def prediction_range(self) -> tuple[float, float]:
        """The range predictions are squashed into: y_range, or the rating scale widened, or
        fastai's 0..5.5 for a config that has neither."""
        if self.y_range is not None:
            return self.y_range
        return y_range_for(*self.rating_range) if self.rating_range else (0.0, 5.5)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The config's fields (what `fit` and the model's constructor take)."""
        return frozenset(f.name for f in fields(cls))

    def options(self) -> dict[str, Any]:
        """The fields as keyword arguments (what the model's constructor takes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        for name, value in self.options().items():
            data[name] = list(value) if isinstance(value, tuple) else value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelConfig:
        """The config `to_json` wrote (without its "kind"); `ConfigError` names the first
        field that is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config fields {shown(sorted(unknown))}")
        values = dict(data)
        for f in fields(cls):
            if f.name not in values or not str(f.type).startswith("tuple"):
                continue
            value = values[f.name]
            if value is None and "None" in str(f.type):
                continue
            if not isinstance(value, list):
                raise ConfigError(f"{f.name} must be a JSON list, got {shown(value)}")
            values[f.name] = tuple(value)
        return cls(**values)

    # what a model's config says about its size, for memory checks and reports

    def parameter_count(self) -> int:
        """How many numbers the model holds (its tables and layers), computed from the config
        alone, before anything is allocated."""
        raise NotImplementedError

    def step_width(self) -> int:
        """Numbers one training sample looks up and computes with (rows and activations)."""
        raise NotImplementedError

    def shape(self) -> str:
        """The architecture in a few characters for tables and plots, e.g. `50f`."""
        raise NotImplementedError

    def solve_iterations(self) -> int:
        """Iterations a solve runs (a progress bar's length)."""
        return 1

    def solve_bytes(self, itemsize: int = 4) -> int | None:
        """Memory a solve needs at its peak (models that are solved); None for the others."""
        return None

    size_advice: ClassVar[str] = "a smaller model"


# ----------------------------------------------------------------------------- the model


class Interactions(Protocol):
    """The training data as a model that is solved (engine "solve") sees it. Each method
    builds its structure when called and keeps nothing: hold on to what you use."""

    n_users: int
    n_items: int

    def gram(self) -> np.ndarray:
        """X'X (items x items, float32) of the binary interaction matrix X."""
        ...

    def by_user(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """X as compressed rows: (indptr over users, item of each entry, its weight), repeated
        pairs added into one entry."""
        ...

    def by_item(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """X' as compressed rows: (indptr over items, user of each entry, its weight)."""
        ...

    def ratings(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training rows as they are, repeats kept: (user index, item index, rating)."""
        ...

    def item_features(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Each item's features as compressed rows (indptr over items, feature index of each
        entry, number of features), or None where the data have none (`data.item_features`)."""
        ...

    def sessions(self, gap: float) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The users' sessions: each user's interactions in time order, a new session after a
        pause longer than `gap` seconds. (session index, item index) of every interaction,
        ordered by session and in time order within one, and the number of sessions; None
        where the data have no timestamps."""
        ...


class LatentModel(nn.Module):
    """Embedding tables looked up by user or item index, then an interaction of the rows.

    A model names its tables in `user_tables` / `item_tables` (attributes that are
    `nn.Embedding`) and defines `interact`; the rest has defaults it may override. An index of
    -1 means an id the model has never seen: its rows are the mean of the table (an average
    user or item), and when both sides are unknown the prediction is the training mean.

    What a model declares:
        Config: its config class (the single home of its defaults).
        engines: the training engines it runs on, preferred first: "fused", "autograd" (steps
            of gradient descent) or "solve" (`solve`, in closed form or by its own iterations).
        predicts_ratings: whether its scores are predicted ratings; a ranking model's scores
            only order items (it has no test RMSE and `Recommender.predict` refuses it).
        extras: optional abilities beyond ranking, prediction, similarity and fold-in:
            "biases" (`item_biases`), "map" (a 2-D map of `item_vectors`).
        train_defaults: `TrainConfig` fields it trains better with than the general defaults.
        optimizer_defaults: per optimiser ("adamw", "adagrad"), the fields it trains better
            with under that optimiser (its lr, wd, epochs), over `train_defaults`: a user who
            picks another optimiser gets that optimiser's settings, not the default one's.
    """

    Config: ClassVar[type[ModelConfig]] = ModelConfig
    engines: ClassVar[tuple[str, ...]] = ("autograd",)
    predicts_ratings: ClassVar[bool] = True
    extras: ClassVar[frozenset[str]] = frozenset({"map"})
    train_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    optimizer_defaults: ClassVar[Mapping[str, Mapping[str, Any]]] = MappingProxyType({})
    user_tables: ClassVar[tuple[str, ...]] = ()
    item_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__()
        self.config = self.Config(n_users=n_users, n_items=n_items, **options)
        self.register_buffer("global_mean", torch.tensor(self.config.global_mean or 0.0))

    @classmethod
    def from_config(cls, config: ModelConfig) -> LatentModel:
        """A freshly initialised model of `config`'s architecture."""
        if not isinstance(config, cls.Config):
            raise ConfigError(
                f"{cls.__name__} is built from a {cls.Config.__name__}, got {type(config).__name__}"
            )
        return cls(**config.options())

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def device(self) -> torch.device:
        return self.global_mean.device  # a buffer every model has, parameters or not

    @property
    def n_users(self) -> int:
        return self.config.n_users

    @property
    def n_items(self) -> int:
        return self.config.n_items

    @property
    def y_range(self) -> tuple[float, float]:
        return self.config.prediction_range

    # ------------------------------------------------------------------ scoring

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Predictions for pairs: row k of every user table with row k of every item table."""
        raise NotImplementedError

    def predict(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Predicted ratings for every (user, item) pair of C user rows and I item rows: (C, I).

        Pairs are formed a chunk of users at a time, so besides the (C, I) result this holds
        about `SCORE_CHUNK_BYTES` of repeated rows at once, whatever C is."""
        n_users, n_items = user_rows[0].shape[0], item_rows[0].shape[0]
        width = sum(rows.shape[1] for rows in (*user_rows, *item_rows))
        chunk = users_per_chunk(n_items * width * user_rows[0].element_size())
        parts = []
        for start in range(0, n_users, chunk):
            some = [rows[start : start + chunk] for rows in user_rows]
            size = some[0].shape[0]
            users = [rows.repeat_interleave(n_items, dim=0) for rows in some]
            items = [rows.repeat(size, 1) for rows in item_rows]
            parts.append(self.interact(users, items).reshape(size, n_items))
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def rank(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Scores that order items as the predictions do, cheaper where a model can skip its
        squashing; `to_prediction` turns selected scores into predicted ratings."""
        return self.predict(user_rows, item_rows)

    def to_prediction(self, scores: Tensor) -> Tensor:
        return scores

    def user_rows(self, user_index: Tensor) -> list[Tensor]:
        return [getattr(self, name).weight.index_select(0, user_index) for name in self.user_tables]

    def item_rows(self) -> list[Tensor]:
        return [getattr(self, name).weight for name in self.item_tables]

    def tables(self) -> dict[str, nn.Embedding]:
        return {name: getattr(self, name) for name in (*self.user_tables, *self.item_tables)}

    def forward(self, user_index: Tensor, item_index: Tensor) -> Tensor:
        user_rows = [lookup(getattr(self, n).weight, user_index) for n in self.user_tables]
        item_rows = [lookup(getattr(self, n).weight, item_index) for n in self.item_tables]
        prediction = self.interact(user_rows, item_rows)
        both_unknown = (user_index < 0) & (item_index < 0)
        if both_unknown.any():
            prediction = torch.where(both_unknown, self.global_mean.to(prediction), prediction)
        return prediction

    def attach(self, indptr: np.ndarray, items: np.ndarray) -> None:
        """Each training user's distinct items as compressed rows (user u's are
        items[indptr[u]:indptr[u + 1]], sorted), for models that score a user from what they
        did rather than from a learned row; the Recommender calls it. Others ignore it."""

    def solve(
        self, data: Interactions, on_iteration: Callable[[int, float], None] | None = None
    ) -> float:
        """Fit the weights from the data (models whose engines include "solve"); returns the
        training loss, or NaN when the solve has none. A solve of several iterations calls
        `on_iteration(i, loss)` after each."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reading the model

    def item_vectors(self) -> Tensor:
        """One vector per item whose cosine says how alike two items are (similar items,
        explanations and the 2-D map)."""
        raise NotImplementedError

    def item_biases(self) -> Tensor:
        """Each item's learned bias (models declaring the "biases" extra)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fold-in

    def fold_in_prior(self, users: Tensor, items: Tensor, ratings: Tensor) -> Any:
        """What fold-in needs from the training ratings (a sample of them), computed once per
        Recommender and passed back to `fold_in`; None when it needs nothing."""
        return None

    def fold_in(self, item_index: Tensor, ratings: Tensor, prior: Any, steps: int) -> list[Tensor]:
        """Rows of the user tables (each 1 x width) for a new user who gave `ratings` (float64)
        to the items `item_index`, every weight of the model frozen.

        Args:
            prior: what `fold_in_prior` returned.
            steps: optimisation steps, for models that fold in by gradient descent.
        """
        mean_rows = [
            getattr(self, n).weight.detach().mean(0, keepdim=True) for n in self.user_tables
        ]
        return fold_in_by_gradient(self, item_index, ratings, mean_rows, steps)


def users_per_chunk(bytes_per_user: int) -> int:
    """Users whose (items x width) work fits in `SCORE_CHUNK_BYTES` (at least one)."""
    return max(1, SCORE_CHUNK_BYTES // max(bytes_per_user, 1))


def lookup(weight: Tensor, index: Tensor) -> Tensor:
    rows = weight.index_select(0, index.clamp(min=0))
    unknown = index < 0
    if unknown.any():
        rows = torch.where(unknown[:, None], weight.mean(0, keepdim=True), rows)
    return rows


def fold_in_by_gradient(
    net: LatentModel, item_index: Tensor, ratings: Tensor, start: list[Tensor], steps: int
) -> list[Tensor]:
    """Adam steps on fresh user rows that start at `start` (the mean user) and are pulled back
    towards it, the prior weighing like one rating; the model's weights stay frozen."""
    item_rows = [rows.detach().index_select(0, item_index) for rows in net.item_rows()]
    target = ratings.to(item_rows[0])
    rows = [row.clone().requires_grad_() for row in start]
    optimizer = torch.optim.Adam(rows, lr=0.05)
    strength = 1.0 / len(ratings)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            prediction = net.predict(rows, item_rows)[0]
            loss = nn.functional.mse_loss(prediction, target)
            loss = loss + strength * sum(
                ((r - m) ** 2).sum() for r, m in zip(rows, start, strict=True)
            )
            loss.backward()
            optimizer.step()
    return [row.detach() for row in rows]
