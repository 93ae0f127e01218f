"""`nn`: EmbeddingNN, user and item embeddings concatenated, then Linear -> ReLU blocks,
squashed into the prediction range (fastai's lesson-8 model)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from latentrec.models.base import (
    LatentModel,
    ModelConfig,
    embedding,
    fraction,
    search_space,
    sigmoid_range,
    users_per_chunk,
    whole,
    widths,
)


def embedding_size(n: int) -> int:
    """The usual rule of thumb for an embedding width: `min(600, round(1.6 * n ** 0.56))`."""
    return min(600, round(1.6 * n**0.56))


@dataclass(frozen=True)
class NNConfig(ModelConfig):
    """The nn model's config.

    Args:
        user_size, item_size: embedding widths; 0 means the rule of thumb (`embedding_size`).
        layers: hidden widths.
        dropout: dropout after each hidden layer.
        emb_dropout: dropout on the concatenated embeddings (the model's main regulariser).
    """

    kind: ClassVar[str] = "nn"
    tunable = search_space(
        emb_dropout=("float", 0.0, 0.7), lr=("log", 3e-4, 0.03), wd=("log", 1e-3, 1.0)
    )
    user_size: int = 0
    item_size: int = 0
    layers: tuple[int, ...] = (100, 50)
    dropout: float = 0.0
    emb_dropout: float = 0.6

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("user_size", "item_size"):
            object.__setattr__(self, name, whole(name, getattr(self, name), least=0))
        object.__setattr__(self, "layers", widths("layers", self.layers))
        for name in ("dropout", "emb_dropout"):
            object.__setattr__(self, name, fraction(name, getattr(self, name)))

    @property
    def user_width(self) -> int:
        return self.user_size or embedding_size(self.n_users)

    @property
    def item_width(self) -> int:
        return self.item_size or embedding_size(self.n_items)

    def parameter_count(self) -> int:
        count = self.n_users * self.user_width + self.n_items * self.item_width
        width = self.user_width + self.item_width
        for hidden in (*self.layers, 1):
            count += (width + 1) * hidden
            width = hidden
        return count

    def step_width(self) -> int:
        return self.user_width + self.item_width + sum(self.layers)

    def shape(self) -> str:
        return ",".join(map(str, self.layers))

    size_advice: ClassVar[str] = "smaller --layers"


class EmbeddingNN(LatentModel):
    """User and item embeddings concatenated, then Linear -> ReLU blocks, squashed to y_range.

    Trains through autograd; folds a new user in by gradient steps on a fresh embedding."""

    Config = NNConfig
    config: NNConfig
    train_defaults = MappingProxyType({"lr": 0.003, "wd": 0.01, "batch_size": 512})
    user_tables = ("user_embedding",)
    item_tables = ("item_embedding",)

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__(n_users, n_items, **options)
        config = self.config
        self.emb_dropout = nn.Dropout(config.emb_dropout)
        self.user_embedding = embedding(n_users, config.user_width)
        self.item_embedding = embedding(n_items, config.item_width)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.trunc_normal_(table.weight, std=0.01)
        blocks: list[nn.Module] = []
        width = config.user_width + config.item_width
        for hidden in config.layers:
            blocks += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout:
                blocks.append(nn.Dropout(config.dropout))
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*blocks)

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        x = self.emb_dropout(torch.cat([user_rows[0], item_rows[0]], dim=1))
        return sigmoid_range(self.layers(x)[:, 0], *self.y_range)

    def predict(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        """Predictions for C users x I items without forming the (C x I) concatenated pairs.

        The first layer is linear in the concatenation, so it splits into a user part (C x H)
        and an item part (I x H) that are added per pair. Beyond the (C, I) result, memory is
        bounded by `SCORE_CHUNK_BYTES` for the (users x I x hidden widths) activations of a
        chunk of users. In training mode with embedding dropout (which acts on the
        concatenation) the pairs are formed, a chunk at a time."""
        if self.training and self.emb_dropout.p > 0:
            return super().predict(user_rows, item_rows)
        first, rest = self.layers[0], self.layers[1:]
        user_width = user_rows[0].shape[1]
        user_part = user_rows[0] @ first.weight[:, :user_width].T
        item_part = torch.addmm(first.bias, item_rows[0], first.weight[:, user_width:].T)
        n_items = item_part.shape[0]
        per_user = n_items * 2 * sum(self.config.layers) * item_part.element_size()
        chunk = users_per_chunk(per_user)
        if user_part.requires_grad or item_part.requires_grad:  # fold-in: one user, autograd
            scores = [
                sigmoid_range(
                    rest(user_part[s : s + chunk, None, :] + item_part[None])[..., 0],
                    *self.y_range,
                )
                for s in range(0, user_part.shape[0], chunk)
            ]
            return torch.cat(scores)
        # written in place: a list of chunks to concatenate left the heap fragmented
        scores = item_part.new_empty((user_part.shape[0], n_items))
        for start in range(0, user_part.shape[0], chunk):
            hidden = user_part[start : start + chunk, None, :] + item_part[None]
            scores[start : start + chunk] = rest(hidden)[..., 0]
        return sigmoid_range(scores, *self.y_range)

    def item_vectors(self) -> Tensor:
        return self.item_embedding.weight
