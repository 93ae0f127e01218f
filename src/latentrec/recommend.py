"""Recommender: top-k items for a user and similar items, raw ids in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from latentrec.data import Ratings
from latentrec.errors import ConfigError, UnknownIdError
from latentrec.models import LatentModel
from latentrec.storage import load
from latentrec.training import predict_index


class Recommendation(NamedTuple):
    """One recommended or similar item: raw id, title (None when unknown) and score."""

    item_id: Any
    title: str | None
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"item_id": _plain(self.item_id), "title": self.title, "score": self.score}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class Recommender:
    """Recommendations from a trained model and the ratings it was trained on.

    Args:
        model: a trained `DotProductBias` or `EmbeddingNN`.
        ratings: its training ratings (their id maps are the model's), used to leave out
            what each user has already rated and to give titles.
    """

    def __init__(self, model: LatentModel, ratings: Ratings) -> None:
        if ratings.n_users != model.n_users or ratings.n_items != model.n_items:
            raise ConfigError(
                f"the ratings have {ratings.n_users} users and {ratings.n_items} items; the "
                f"model has {model.n_users} and {model.n_items}: pass its training ratings"
            )
        self.model = model.eval()
        self.ratings = ratings
        order = np.argsort(ratings.user_index, kind="stable")
        counts = np.bincount(ratings.user_index, minlength=ratings.n_users)
        self._seen_indptr = np.r_[0, np.cumsum(counts)]
        self._seen_items = ratings.item_index[order]
        self._device = next(model.parameters()).device
        self._all_items = torch.arange(ratings.n_items, device=self._device)

    @classmethod
    def from_dir(cls, directory: str | Path) -> Recommender:
        """A Recommender for a model directory written by `save` (no original data needed)."""
        saved = load(directory)
        return cls(saved.model, saved.ratings)

    @property
    def users(self):
        return self.ratings.users

    @property
    def items(self):
        return self.ratings.items

    def user_index(self, user_id: Any) -> int:
        index = self.users.index_of(user_id)
        if index < 0:
            known = self.users.describe("user")
            raise UnknownIdError(
                f"unknown user id {self.users.coerce(user_id)!r}: the model knows {known}"
            )
        return index

    def item_index(self, item_id: Any) -> int:
        index = self.items.index_of(item_id)
        if index < 0:
            known = self.items.describe("item")
            raise UnknownIdError(
                f"unknown item id {self.items.coerce(item_id)!r}: the model knows {known}"
            )
        return index

    def seen(self, user_id: Any) -> np.ndarray:
        """Indexes of the items this user rated in training."""
        index = self.user_index(user_id)
        return self._seen_items[self._seen_indptr[index] : self._seen_indptr[index + 1]]

    def title(self, item_index: int) -> str | None:
        return self.ratings.title(self.items.ids[item_index])

    def recommend(
        self, user_id: Any, k: int = 10, exclude_seen: bool = True
    ) -> list[Recommendation]:
        """The k items with the highest predicted rating for a known user.

        Items the user rated in training are left out unless `exclude_seen=False`.
        """
        _check_k(k)
        index = self.user_index(user_id)
        users = torch.full_like(self._all_items, index)
        scores = predict_index(self.model, users, self._all_items).cpu().numpy().astype(np.float64)
        if exclude_seen:
            scores[self.seen(user_id)] = -np.inf
        return self._top(scores, k)

    def similar_items(self, item_id: Any, k: int = 10) -> list[Recommendation]:
        """The k items whose factors (or embeddings) are closest in cosine to this item's."""
        _check_k(k)
        index = self.item_index(item_id)
        with torch.no_grad():
            vectors = torch.nn.functional.normalize(self.model.item_vectors().float(), dim=1)
            scores = (vectors @ vectors[index]).cpu().numpy().astype(np.float64)
        scores[index] = -np.inf
        return self._top(scores, k)

    def _top(self, scores: np.ndarray, k: int) -> list[Recommendation]:
        k = min(k, int(np.isfinite(scores).sum()))
        if k == 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.lexsort((best, -scores[best]))]  # by score, ties by index: deterministic
        return [
            Recommendation(_plain(self.items.ids[i]), self.title(int(i)), float(scores[i]))
            for i in best
        ]


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive whole number, got {k!r}")
