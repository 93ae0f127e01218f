"""The two models: DotProductBias and EmbeddingNN, and how to build one from its config.

Both split into embedding tables (looked up by user or item index) and an `interact` step on
the looked-up rows. Training uses that split to touch only the rows a batch needs; inference
simply calls the model on index tensors.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import reprlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentrec.errors import ConfigError

MODEL_KINDS = ("dot", "nn")
HUGE_PAGE = 2 * 2**20  # a transparent huge page on x86-64 and most arm64 Linux kernels


def zeros_in_huge_pages(
    shape: tuple[int, ...],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """`torch.zeros(shape, dtype=dtype, device=device)`; on the CPU, in memory the kernel is
    asked to back with huge pages when it is 2 MiB or more and the system has them (Linux).

    Training reads and updates table rows at random. With 4 KiB pages nearly every row of a
    large table is a TLB miss and a page walk: at 25M ratings (160,000 x 60,000 tables of 100
    factors and their Adam moments, 264 MB) huge pages took 4% off an epoch. The memory is an
    anonymous mapping of its own, freed with the tensor.
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


def _embedding(rows: int, width: int) -> nn.Embedding:
    """`nn.Embedding(rows, width)` with its weight in `zeros_in_huge_pages` memory."""
    weight = zeros_in_huge_pages((rows, width))
    # nn.Embedding's own initialisation: callers re-initialise, but drawing it keeps the
    # random stream, and so a seed's models, as they were
    nn.init.normal_(weight)
    return nn.Embedding.from_pretrained(weight, freeze=False)


def embedding_size(n: int) -> int:
    """The usual rule of thumb for an embedding width: `min(600, round(1.6 * n ** 0.56))`."""
    return min(600, round(1.6 * n**0.56))


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's architecture (saved beside its weights).

    Args:
        kind: `"dot"` (DotProductBias) or `"nn"` (EmbeddingNN).
        n_factors: width of the dot model's factors.
        user_size, item_size: the nn model's embedding widths; 0 means the rule of thumb.
        layers: hidden widths of the nn model.
        dropout: dropout after each hidden layer of the nn model.
        emb_dropout: dropout on the nn model's concatenated embeddings (its main regulariser).
        y_range: predictions are `low + (high - low) * sigmoid(x)`.
        global_mean: the prediction when neither user nor item is known.
        rating_range: the scale ratings are given on (lowest, highest): what a new user's
            ratings may be. `fit` takes it from the training ratings unless told; None in
            models saved before it was kept (the training ratings' range then stands in).
    """

    kind: str = "dot"
    n_users: int = 1
    n_items: int = 1
    n_factors: int = 50
    user_size: int = 0
    item_size: int = 0
    layers: tuple[int, ...] = (100, 50)
    dropout: float = 0.0
    emb_dropout: float = 0.0
    y_range: tuple[float, float] = (0.0, 5.5)
    global_mean: float = 0.0
    rating_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        # a config also comes from a model file someone may have edited: check every type,
        # so a bad value is one ConfigError here and not a TypeError deep inside torch
        def whole(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def finite(value: Any) -> bool:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                return False
            try:
                return math.isfinite(float(value))
            except (OverflowError, TypeError):  # an int beyond float, a complex number
                return False

        def shown(value: Any) -> str:
            return reprlib.repr(value)  # bounded, however large the value in the file

        if not isinstance(self.kind, str) or self.kind not in MODEL_KINDS:
            raise ConfigError(
                f"model must be one of {', '.join(MODEL_KINDS)}, got {shown(self.kind)}"
            )
        for name in ("n_users", "n_items", "n_factors", "user_size", "item_size"):
            value, least = getattr(self, name), 0 if name.endswith("_size") else 1
            if not whole(value) or value < least:
                allowed = "0 (rule of thumb) or " if least == 0 else ""
                raise ConfigError(
                    f"{name} must be {allowed}a positive whole number, got {shown(value)}"
                )
            object.__setattr__(self, name, int(value))
        layers = self.layers
        if not isinstance(layers, (list, tuple)) or not all(whole(w) and w >= 1 for w in layers):
            raise ConfigError(f"layers must be a list of positive widths, got {shown(layers)}")
        object.__setattr__(self, "layers", tuple(int(w) for w in layers))
        for name in ("dropout", "emb_dropout"):
            value = getattr(self, name)
            if not finite(value) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be a number in [0, 1), got {shown(value)}")
            object.__setattr__(self, name, float(value))
        y_range = self.y_range
        if (
            not isinstance(y_range, (list, tuple))
            or len(y_range) != 2
            or not all(finite(v) for v in y_range)
            or not float(y_range[0]) < float(y_range[1])
        ):
            raise ConfigError(
                f"y_range must be (low, high), two finite numbers with low < high, got "
                f"{shown(y_range)}"
            )
        object.__setattr__(self, "y_range", (float(y_range[0]), float(y_range[1])))
        scale = self.rating_range
        if scale is not None:
            if (
                not isinstance(scale, (list, tuple))
                or len(scale) != 2
                or not all(finite(v) for v in scale)
                or not float(scale[0]) <= float(scale[1])
            ):
                raise ConfigError(
                    f"rating_range must be (lowest, highest), two finite numbers in order, got "
                    f"{shown(scale)}"
                )
            object.__setattr__(self, "rating_range", (float(scale[0]), float(scale[1])))
        if not finite(self.global_mean):
            raise ConfigError(f"global_mean must be a finite number, got {shown(self.global_mean)}")
        object.__setattr__(self, "global_mean", float(self.global_mean))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        data["y_range"] = list(self.y_range)
        if self.rating_range is not None:
            data["rating_range"] = list(self.rating_range)
        return data

    @classmethod
    def from_json(cls, data: Any) -> ModelConfig:
        """The config `to_json` wrote; `ConfigError` names the first field that is wrong."""
        if not isinstance(data, dict):
            raise ConfigError(f"a model config is a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config fields {reprlib.repr(sorted(unknown))}")
        values = dict(data)
        for name in ("layers", "y_range", "rating_range"):
            if name in values and not isinstance(values[name], list):
                if name == "rating_range" and values[name] is None:
                    continue
                raise ConfigError(f"{name} must be a JSON list, got {reprlib.repr(values[name])}")
        values["layers"] = tuple(values.get("layers", ()))
        values["y_range"] = tuple(values.get("y_range", (0.0, 5.5)))
        if values.get("rating_range") is not None:
            values["rating_range"] = tuple(values["rating_range"])
        return cls(**values)


def parameter_count(config: ModelConfig) -> int:
    """How many numbers the model of `config` holds (its tables and layers), computed from the
    config alone, before anything is allocated."""
    if config.kind == "dot":
        return (config.n_users + config.n_items) * (config.n_factors + 1)
    user_size = config.user_size or embedding_size(config.n_users)
    item_size = config.item_size or embedding_size(config.n_items)
    count = config.n_users * user_size + config.n_items * item_size
    width = user_size + item_size
    for hidden in (*config.layers, 1):
        count += (width + 1) * hidden
        width = hidden
    return count


def y_range_for(low: float, high: float) -> tuple[float, float]:
    """The prediction range for ratings from `low` to `high`: widened by a ninth of their span
    on each side, so MovieLens's 0.5..5 gets fastai's 0..5.5 and the sigmoid can reach the
    highest and lowest ratings. A single rating value gets a margin of 0.5."""
    margin = (high - low) / 9 if high > low else 0.5
    return (float(low - margin), float(high + margin))


def sigmoid_range(x: Tensor, low: float, high: float) -> Tensor:
    return torch.sigmoid(x) * (high - low) + low


class LatentModel(nn.Module):
    """Embedding tables looked up by user or item index, then an interaction of the rows.

    Subclasses name their tables in `user_tables` / `item_tables` (attributes that are
    `nn.Embedding`) and define `interact`. An index of -1 means an id the model has never seen:
    its rows are the mean of the table (an average user or item), and when both sides are
    unknown the prediction is the training mean.
    """

    user_tables: tuple[str, ...] = ()
    item_tables: tuple[str, ...] = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("global_mean", torch.tensor(float(config.global_mean)))

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def score_matrix(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Predictions for every (user, item) pair of C user rows and I item rows: (C, I).

        Pairs are formed a chunk of users at a time, so besides the (C, I) result this holds
        about `SCORE_CHUNK_BYTES` of repeated rows at once, whatever C is."""
        n_users, n_items = user_rows[0].shape[0], item_rows[0].shape[0]
        width = sum(rows.shape[1] for rows in (*user_rows, *item_rows))
        chunk = _users_per_chunk(n_items * width * user_rows[0].element_size())
        parts = []
        for start in range(0, n_users, chunk):
            some = [rows[start : start + chunk] for rows in user_rows]
            size = some[0].shape[0]
            users = [rows.repeat_interleave(n_items, dim=0) for rows in some]
            items = [rows.repeat(size, 1) for rows in item_rows]
            parts.append(self.interact(users, items).reshape(size, n_items))
        return torch.cat(parts) if len(parts) != 1 else parts[0]

    def rank_matrix(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Scores that order items as the predictions do, cheaper where a model can skip its
        squashing; `to_prediction` turns selected scores into predicted ratings."""
        return self.score_matrix(user_rows, item_rows)

    def to_prediction(self, scores: Tensor) -> Tensor:
        return scores

    def user_rows(self, user_index: Tensor) -> list[Tensor]:
        return [getattr(self, name).weight.index_select(0, user_index) for name in self.user_tables]

    def item_rows(self) -> list[Tensor]:
        return [getattr(self, name).weight for name in self.item_tables]

    def tables(self) -> dict[str, nn.Embedding]:
        return {name: getattr(self, name) for name in (*self.user_tables, *self.item_tables)}

    def forward(self, user_index: Tensor, item_index: Tensor) -> Tensor:
        user_rows = [_lookup(getattr(self, n).weight, user_index) for n in self.user_tables]
        item_rows = [_lookup(getattr(self, n).weight, item_index) for n in self.item_tables]
        prediction = self.interact(user_rows, item_rows)
        both_unknown = (user_index < 0) & (item_index < 0)
        if both_unknown.any():
            prediction = torch.where(both_unknown, self.global_mean.to(prediction), prediction)
        return prediction

    @property
    def n_users(self) -> int:
        return self.config.n_users

    @property
    def n_items(self) -> int:
        return self.config.n_items


SCORE_CHUNK_BYTES = 64 * 2**20


def _users_per_chunk(bytes_per_user: int) -> int:
    """Users whose (items x width) work fits in `SCORE_CHUNK_BYTES` (at least one)."""
    return max(1, SCORE_CHUNK_BYTES // max(bytes_per_user, 1))


def _lookup(weight: Tensor, index: Tensor) -> Tensor:
    rows = weight.index_select(0, index.clamp(min=0))
    unknown = index < 0
    if unknown.any():
        rows = torch.where(unknown[:, None], weight.mean(0, keepdim=True), rows)
    return rows


class DotProductBias(LatentModel):
    """Dot product of user and item factors plus a user and an item bias, squashed to y_range."""

    user_tables = ("user_factors", "user_bias")
    item_tables = ("item_factors", "item_bias")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        n_factors: int = 50,
        y_range: tuple[float, float] = (0.0, 5.5),
        global_mean: float = 0.0,
    ) -> None:
        config = ModelConfig(
            kind="dot",
            n_users=n_users,
            n_items=n_items,
            n_factors=n_factors,
            y_range=y_range,
            global_mean=global_mean,
        )
        super().__init__(config)
        self.user_factors = _embedding(n_users, n_factors)
        self.item_factors = _embedding(n_items, n_factors)
        self.user_bias = _embedding(n_users, 1)
        self.item_bias = _embedding(n_items, 1)
        for table in (self.user_factors, self.item_factors):
            nn.init.trunc_normal_(table.weight, std=0.01)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        p_u, b_u = user_rows
        q_i, b_i = item_rows
        x = (p_u * q_i).sum(1) + b_u[:, 0] + b_i[:, 0]
        return sigmoid_range(x, *self.config.y_range)

    def score_matrix(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return self.to_prediction(self.rank_matrix(user_rows, item_rows))

    def rank_matrix(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        # the sigmoid is monotone: rank on its input and squash only the chosen few
        p_u, b_u = user_rows
        q_i, b_i = item_rows
        return torch.addmm(b_i.T, p_u, q_i.T).add_(b_u)

    def to_prediction(self, scores: Tensor) -> Tensor:
        return sigmoid_range(scores, *self.config.y_range)

    def item_vectors(self) -> Tensor:
        return self.item_factors.weight


class EmbeddingNN(LatentModel):
    """User and item embeddings concatenated, then Linear -> ReLU blocks, squashed to y_range."""

    user_tables = ("user_embedding",)
    item_tables = ("item_embedding",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        emb_sizes: tuple[int, int] | None = None,
        layers: tuple[int, ...] | list[int] = (100, 50),
        dropout: float = 0.0,
        y_range: tuple[float, float] = (0.0, 5.5),
        global_mean: float = 0.0,
        emb_dropout: float = 0.0,
    ) -> None:
        user_size, item_size = emb_sizes or (0, 0)
        config = ModelConfig(
            kind="nn",
            n_users=n_users,
            n_items=n_items,
            user_size=user_size or embedding_size(n_users),
            item_size=item_size or embedding_size(n_items),
            layers=tuple(layers),
            dropout=dropout,
            emb_dropout=emb_dropout,
            y_range=y_range,
            global_mean=global_mean,
        )
        super().__init__(config)
        self.emb_dropout = nn.Dropout(emb_dropout)
        self.user_embedding = _embedding(n_users, config.user_size)
        self.item_embedding = _embedding(n_items, config.item_size)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.trunc_normal_(table.weight, std=0.01)
        blocks: list[nn.Module] = []
        width = config.user_size + config.item_size
        for hidden in config.layers:
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout:
                blocks.append(nn.Dropout(config.dropout))
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*blocks)

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        x = self.emb_dropout(torch.cat([user_rows[0], item_rows[0]], dim=1))
        return sigmoid_range(self.layers(x)[:, 0], *self.config.y_range)

    def score_matrix(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Predictions for C users x I items without forming the (C x I) concatenated pairs.

        The first layer is linear in the concatenation, so it splits into a user part (C x H)
        and an item part (I x H) that are added per pair. Beyond the (C, I) result, memory is
        bounded by `SCORE_CHUNK_BYTES` for the (users x I x hidden widths) activations of a
        chunk of users. In training mode with embedding dropout (which acts on the
        concatenation) the pairs are formed, a chunk at a time."""
        if self.training and self.emb_dropout.p > 0:
            return super().score_matrix(user_rows, item_rows)
        first, rest = self.layers[0], self.layers[1:]
        user_width = user_rows[0].shape[1]
        user_part = user_rows[0] @ first.weight[:, :user_width].T
        item_part = torch.addmm(first.bias, item_rows[0], first.weight[:, user_width:].T)
        n_items = item_part.shape[0]
        per_user = n_items * 2 * sum(self.config.layers) * item_part.element_size()
        chunk = _users_per_chunk(per_user)
        if user_part.requires_grad or item_part.requires_grad:  # fold-in: one user, autograd
            scores = [
                sigmoid_range(
                    rest(user_part[s : s + chunk, None, :] + item_part[None])[..., 0],
                    *self.config.y_range,
                )
                for s in range(0, user_part.shape[0], chunk)
            ]
            return torch.cat(scores)
        # written in place: a list of chunks to concatenate left the heap fragmented
        scores = item_part.new_empty((user_part.shape[0], n_items))
        for start in range(0, user_part.shape[0], chunk):
            hidden = user_part[start : start + chunk, None, :] + item_part[None]
            scores[start : start + chunk] = rest(hidden)[..., 0]
        return sigmoid_range(scores, *self.config.y_range)

    def item_vectors(self) -> Tensor:
        return self.item_embedding.weight


def build_model(config: ModelConfig) -> LatentModel:
    """A freshly initialised model of the configured architecture."""
    net = _build_network(config)
    net.config = config  # the whole config, the rating scale included
    return net


def _build_network(config: ModelConfig) -> LatentModel:
    if config.kind == "dot":
        return DotProductBias(
            config.n_users, config.n_items, config.n_factors, config.y_range, config.global_mean
        )
    return EmbeddingNN(
        config.n_users,
        config.n_items,
        (config.user_size, config.item_size),
        config.layers,
        config.dropout,
        config.y_range,
        config.global_mean,
        config.emb_dropout,
    )
