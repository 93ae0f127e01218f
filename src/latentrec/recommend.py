"""Recommender: top-k items, similar items, fold-in of new users, and reading the factors.

Raw ids in and out. A user is a raw user id the model knows, or a `NewUser` made by `fold_in`
from a handful of ratings (no retraining).
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from latentrec.data import IdMap, Ratings, Split
from latentrec.errors import ConfigError, DataError, UnknownIdError
from latentrec.kernels import distinct
from latentrec.metrics import among, ranking_scores
from latentrec.models import LatentModel
from latentrec.storage import expressed_in, load

BATCH_CHUNK = 2048  # users scored at once by recommend_batch: a (chunk x items) matrix ...
CHUNK_SCORES = 1 << 24  # ... of at most this many scores (64 MiB in float32), if fewer
# a new user's interaction weighs at most this many times the heaviest training one
HEAVIEST_WEIGHT_FACTOR = 1e6


class Recommendation(NamedTuple):
    """One recommended or similar item: raw id, title (None when unknown) and score.

    `predicted` is the rating a paired rating model predicts for a ranking model's item
    (`Recommender(..., rating_model=...)`); None without one, or where it does not know the
    item or the user."""

    item_id: Any
    title: str | None
    score: float
    predicted: float | None = None

    def to_json(self) -> dict[str, Any]:
        data = {"item_id": _plain(self.item_id), "title": self.title, "score": self.score}
        return data if self.predicted is None else data | {"predicted": self.predicted}


class ItemMatch(NamedTuple):
    """A title search hit; `exact` is False for a close-match suggestion."""

    item_id: Any
    title: str
    exact: bool


class Reason(NamedTuple):
    """A rated item that pushed a recommendation up: its rating and its weight in the push."""

    item_id: Any
    title: str | None
    rating: float
    weight: float


class MapPoint(NamedTuple):
    item_id: Any
    title: str | None
    x: float
    y: float
    n_ratings: int


@dataclass(frozen=True, eq=False)
class NewUser:
    """A user folded in from ratings: their rows of the model's user tables, and what they
    rated. Accepted wherever a user id is."""

    rows: tuple[Tensor, ...]
    rated_index: np.ndarray
    ratings: Mapping[Any, float]
    ignored: tuple[Any, ...] = field(default=())
    # the same ratings folded into the paired rating model, when the Recommender has one
    partner: NewUser | None = None
    # the Recommender that folded them in: their rows fit its model (and its copies) alone
    owner: Any = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"NewUser({len(self.ratings)} ratings, {len(self.ignored)} ignored)"


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class Recommender:
    """Recommendations from a trained model and the ratings it was trained on.

    Args:
        model: a trained model (any of `latentrec.MODELS`).
        ratings: its training ratings (their id maps are the model's), used to leave out
            what each user has already rated, for titles, and for the fold-in prior.
        rating_model: for a ranking model, a Recommender over a rating model: the lists come
            from the ranking model, and each item on them carries the rating model's
            predicted rating (`Recommendation.predicted`); `predict` asks the rating model.
            The two are matched by raw user and item ids.
        also_rated: ratings of these users the model did not train on (those `positives()`
            left out, e.g. `Recommender(model, train.positives(4), also_rated=train)`): their
            items are left out of the users' lists too, and nothing else.
    """

    def __init__(
        self,
        model: LatentModel,
        ratings: Ratings,
        rating_model: Recommender | str | Path | None = None,
        also_rated: Ratings | None = None,
    ) -> None:
        if not isinstance(model, LatentModel):
            raise ConfigError(
                f"a Recommender takes a model (fit's or load's), got {type(model).__name__}; "
                "for a model directory use Recommender.from_dir"
            )
        if not isinstance(ratings, Ratings):
            raise ConfigError(
                f"a Recommender takes the model's training ratings as Ratings, got "
                f"{type(ratings).__name__}"
            )
        if isinstance(rating_model, str | os.PathLike):
            rating_model = Recommender.from_dir(rating_model)
        elif rating_model is not None and not isinstance(rating_model, Recommender):
            raise ConfigError(
                f"rating_model is a Recommender over a rating model or its directory, got "
                f"{type(rating_model).__name__}"
            )
        ratings.require_known("a Recommender (it takes the model's training ratings)")
        if ratings.n_users != model.n_users or ratings.n_items != model.n_items:
            raise ConfigError(
                f"the ratings have {ratings.n_users} users and {ratings.n_items} items; the "
                f"model has {model.n_users} and {model.n_items}: pass its training ratings"
            )
        self.model = model.eval()
        self.ratings = ratings
        # what each user rated, as compressed rows: every rating (for explanations) ...
        order = np.argsort(ratings.user_index, kind="stable")
        counts = np.bincount(ratings.user_index, minlength=ratings.n_users)
        self._rated_indptr = np.r_[0, np.cumsum(counts)]
        self._rated_items = ratings.item_index[order]
        self._rated_values = ratings.rating[order]
        # ... and each distinct item once (for leaving seen items out), sorted per user
        # in int64: the indexes are int32, and users x items passes int32's range
        keys = distinct(ratings.user_index.astype(np.int64) * ratings.n_items + ratings.item_index)
        per_user = np.bincount(keys // ratings.n_items, minlength=ratings.n_users)
        self._seen_indptr = np.r_[0, np.cumsum(per_user)]
        self._seen_items = keys % ratings.n_items
        model.attach(self._seen_indptr, self._seen_items)
        # ... and, for the lists, with the items they rated that the model did not train on
        self.also_rated = self._check_also_rated(also_rated)
        self._rated_out_indptr, self._rated_out_items = self._seen_indptr, self._seen_items
        if self.also_rated is not None and len(self.also_rated):
            other = self.also_rated
            both = distinct(
                np.r_[keys, other.user_index.astype(np.int64) * ratings.n_items + other.item_index]
            )
            per_user = np.bincount(both // ratings.n_items, minlength=ratings.n_users)
            self._rated_out_indptr = np.r_[0, np.cumsum(per_user)]
            self._rated_out_items = both % ratings.n_items
        self._item_counts = np.bincount(ratings.item_index, minlength=ratings.n_items)
        self._device = model.device
        self._prior: tuple[Any] | None = None  # (the model's fold-in prior,), made once
        self._unit: Tensor | None = None
        self._titled: list[tuple[Any, str, str]] | None = None  # `_titled_items`, made once
        self.rating_model = rating_model
        if rating_model is not None:
            self._check_pair(rating_model)

    @classmethod
    def from_dir(cls, directory: str | Path, rating_model: str | Path | None = None) -> Recommender:
        """A Recommender for a model directory written by `save` (no original data needed);
        `rating_model`, a rating model's directory to pair with a ranking model."""
        saved = load(directory)
        partner = None if rating_model is None else cls.from_dir(rating_model)
        return cls(saved.model, saved.ratings, rating_model=partner, also_rated=saved.also_rated)

    def _check_also_rated(self, also_rated: Ratings | None) -> Ratings | None:
        return None if also_rated is None else expressed_in(also_rated, self.ratings, "also_rated")

    def _check_pair(self, partner: Recommender) -> None:
        if self.model.predicts_ratings:
            raise ConfigError(
                f"the {self.model.kind} model predicts ratings itself; a rating model pairs "
                "with a ranking model (ease, als)"
            )
        if not partner.model.predicts_ratings or partner.rating_model is not None:
            raise ConfigError(
                f"the {partner.model.kind} model predicts no ratings; pair the ranking model "
                "with a rating model (dot, nn)"
            )
        ours = self.items.ids
        shared = np.count_nonzero(partner.items.indexes(ours) >= 0)
        if shared == 0:
            raise ConfigError(
                f"the rating model knows none of the ranking model's {len(ours):,} item ids: "
                "were they trained on the same data?"
            )

    def _unit_vectors(self) -> Tensor:
        """Item factors (or embeddings) scaled to length 1, computed once: cosine = dot."""
        if self._unit is None:
            with torch.no_grad():
                vectors = self.model.item_vectors().detach().float()
                self._unit = torch.nn.functional.normalize(vectors, dim=1)
        return self._unit

    @property
    def rating_range(self) -> tuple[float, float]:
        """The scale ratings are given on (lowest, highest): the paired rating model's, or
        the model's, or for a model saved without one, its training ratings' range. A new
        user's ratings must lie in it."""
        if self.rating_model is not None:
            return self.rating_model.rating_range
        return self.model.config.rating_range or self.ratings.rating_range

    def supports(self, extra: str) -> bool:
        """Whether the model declares an optional ability ("biases", "map")."""
        return extra in self.model.extras

    def require(self, extra: str) -> None:
        """ConfigError, in one line, unless the model declares `extra`."""
        if not self.supports(extra):
            has = ", ".join(sorted(self.model.extras)) or "none"
            raise ConfigError(
                f"the {self.model.kind} model has no {extra!r}; its extras are: {has}"
            )

    @property
    def item_counts(self) -> np.ndarray:
        """Training ratings per item index."""
        return self._item_counts

    @property
    def users(self) -> IdMap:
        return self.ratings.users

    @property
    def items(self) -> IdMap:
        return self.ratings.items

    # ------------------------------------------------------------------ ids

    def user_index(self, user_id: Any) -> int:
        index = self.users.index_of(user_id)
        if index < 0:
            known = self.users.describe("user")
            raise UnknownIdError(
                f"unknown user id {self.users.coerce(user_id)!r}: the model knows {known}; "
                "fold a new user in from their ratings (fold_in(), or --new-user in the CLI)"
            )
        return index

    def _listed_user(self, user_id: Any) -> int:
        """The index of a user whose list means something: one with training rows (a user in
        the id maps without any, as `Ratings.positives` leaves them, has only the factors
        they started with)."""
        index = self.user_index(user_id)
        if self._rated_indptr[index + 1] == self._rated_indptr[index]:
            rows = "interactions" if self.ratings.implicit else "ratings"
            raise UnknownIdError(
                f"user {_plain(self.users.ids[index])!r} has no training {rows}: the model learned "
                "nothing of their taste; fold them in from their ratings (fold_in(), or "
                "--new-user in the CLI)"
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

    def seen(self, user: Any) -> np.ndarray:
        """Indexes of the items this user rated (in training, or in their fold-in)."""
        if isinstance(user, NewUser):
            return self._own(user).rated_index
        index = self.user_index(user)
        return self._rated_out_items[
            self._rated_out_indptr[index] : self._rated_out_indptr[index + 1]
        ]

    def _own(self, user: NewUser) -> NewUser:
        """`user`, folded in by this Recommender or one of the same model (ConfigError for
        another model's: their rows and item indexes would be read as this one's)."""
        owner = user.owner
        if owner is None or owner is self:
            return user
        same = owner.model.config.to_json() == self.model.config.to_json() and owner.items.same_as(
            self.items
        )  # the same model loaded twice, say
        if not same:
            raise ConfigError(
                "this new user was folded in by another Recommender (another model); fold "
                "their ratings in again with this one"
            )
        return user

    def title(self, item_index: int) -> str | None:
        return self.ratings.title(self.items.ids[item_index])

    def _user_rows(self, user: Any) -> list[Tensor]:
        if isinstance(user, NewUser):
            return [row.to(self._device) for row in self._own(user).rows]
        index = torch.tensor([self.user_index(user)], device=self._device)
        return self.model.user_rows(index)

    # ------------------------------------------------------------------ recommending

    @torch.no_grad()
    def predict(self, user: Any, item_ids: Iterable[Any]) -> np.ndarray:
        """Predicted ratings of a user (id or NewUser) for the given items: the rating
        model's (this one, or the one paired with a ranking model)."""
        if not self.model.predicts_ratings and self.rating_model is not None:
            partner = user.partner if isinstance(user, NewUser) else user
            if partner is None:
                raise UnknownIdError(
                    "the rating model knows none of the items this new user rated, so it "
                    "predicts no ratings for them; fold in ratings of items it knows"
                )
            return self.rating_model.predict(partner, item_ids)
        if not self.model.predicts_ratings:
            raise ConfigError(
                f"the {self.model.kind} model ranks items and predicts no ratings; use a rating "
                "model (dot, nn) for predicted ratings"
            )
        item_ids = _id_list(item_ids, "item_ids")
        items = torch.tensor([self.item_index(i) for i in item_ids], dtype=torch.int64)
        if len(items) == 0:
            return np.zeros(0)
        item_rows = [
            rows.index_select(0, items.to(self._device)) for rows in self.model.item_rows()
        ]
        scores = self.model.predict(self._user_rows(user), item_rows)
        return scores[0].double().cpu().numpy()

    @torch.no_grad()
    def recommend(
        self,
        user: Any,
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Iterable[Any] | None = None,
    ) -> list[Recommendation]:
        """The k items with the highest predicted rating for a user id or a `NewUser`.

        Args:
            exclude_seen: leave out what the user rated (in training or in the fold-in).
            candidates: raw item ids to choose from; all items when None.
        """
        _check_k(k)
        if not isinstance(user, NewUser):
            self._listed_user(user)
        scores = self.model.rank(self._user_rows(user), self.model.item_rows())
        allowed = np.ones(self.items.__len__(), dtype=bool)
        if candidates is not None:
            allowed[:] = False
            allowed[[self.item_index(i) for i in _id_list(candidates, "candidates")]] = True
        if exclude_seen:
            allowed[self.seen(user)] = False
        available = int(allowed.sum())
        if k > available:
            advice = (
                f"ask for at most {available}"
                if available
                else "none is left to recommend (exclude_seen=False lists rated items too)"
            )
            raise ConfigError(
                f"k={k} but only {available} candidate items remain for this user; {advice}"
            )
        mask = torch.from_numpy(~allowed).to(self._device)[None]
        return self._with_predictions(user, self._top(scores.masked_fill(mask, -torch.inf), k)[0])

    @torch.no_grad()
    def recommend_batch(
        self, users: Sequence[Any], k: int = 10, exclude_seen: bool = True
    ) -> list[list[Recommendation]]:
        """`recommend` for many users at once (known ids: a matrix product and top-k per chunk
        of users; with NewUsers among them, one by one). Gives the same lists as one-by-one
        calls."""
        _check_k(k)
        if any(isinstance(u, NewUser) for u in users):  # folded in: each by its own rows
            return [self.recommend(u, k, exclude_seen) for u in users]
        index = np.array([self._listed_user(u) for u in users], dtype=np.int64)
        results: list[list[Recommendation]] = []
        for _, _, scores in self._scored_chunks(index, exclude_seen, k):
            results += self._top(scores, k)
        if self.rating_model is not None:
            results = [
                self._with_predictions(u, recs) for u, recs in zip(users, results, strict=True)
            ]
        return results

    def _with_predictions(self, user: Any, recs: list[Recommendation]) -> list[Recommendation]:
        """`recs` with the paired rating model's predicted ratings, where it knows the user
        and the item (unchanged without a paired model)."""
        partner = self.rating_model
        if partner is None or not recs:
            return recs
        if isinstance(user, NewUser):
            target = user.partner
        else:
            target = user if partner.users.index_of(user) >= 0 else None
        if target is None:
            return recs
        known = [r.item_id for r in recs if partner.items.index_of(r.item_id) >= 0]
        predicted = dict(zip(known, partner.predict(target, known).tolist(), strict=True))
        return [r._replace(predicted=predicted.get(r.item_id)) for r in recs]

    def _scored_chunks(
        self, index: np.ndarray, exclude_seen: bool, k: int | None = None, popular: bool = False
    ) -> Iterator[tuple[int, np.ndarray, Tensor]]:
        """The known user indexes `index`, a chunk at a time: its start in `index`, its
        indexes and their scores of every item (the model's, or with `popular` the items'
        order by training ratings), what each user rated at -inf where `exclude_seen`; with
        k, a user left with fewer than k items to list is refused."""
        if popular:  # higher for more ratings, ties to the lower index: distinct values
            order = np.argsort(-self._item_counts, kind="stable")
            rank = torch.empty(len(order), dtype=torch.float64)
            rank[torch.from_numpy(order)] = -torch.arange(len(order), dtype=torch.float64)
        size = max(1, min(BATCH_CHUNK, CHUNK_SCORES // max(len(self.items), 1)))
        for start in range(0, len(index), size):
            chunk = index[start : start + size]
            if popular:
                scores = rank.to(self._device)[None].repeat(len(chunk), 1)
            else:
                rows = self.model.user_rows(torch.from_numpy(chunk).to(self._device))
                scores = self.model.rank(rows, self.model.item_rows())
            if exclude_seen:
                self._mask_seen(scores, chunk, k)
            yield start, chunk, scores

    def _mask_seen(self, scores: Tensor, chunk: np.ndarray, k: int | None) -> None:
        starts, ends = self._rated_out_indptr[chunk], self._rated_out_indptr[chunk + 1]
        counts = ends - starts
        short = np.flatnonzero(self.items.__len__() - counts < k) if k is not None else []
        if len(short):
            user = _plain(self.users.ids[chunk[short[0]]])
            raise ConfigError(
                f"k={k} but user {user!r} has only {self.items.__len__() - counts[short[0]]} "
                "unrated items; ask for fewer"
            )
        row = np.repeat(np.arange(len(chunk)), counts)
        seen = self._rated_out_items[_places(self._rated_out_indptr, chunk)]
        scores[torch.from_numpy(row), torch.from_numpy(seen)] = -torch.inf

    def _top_indexes(
        self,
        index: np.ndarray,
        k: int,
        popular: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """For known user indexes: each one's k best items they have not rated, as item
        indexes (users x min(k, items)), -1 after the end of a list shorter than k (a user
        with fewer items left). Ranked by the model, or with `popular` by training ratings
        (the most-popular baseline). What evaluate_ranking scores: no Recommendation
        objects, no ids."""
        width = min(k, len(self.items))
        out = np.full((len(index), width), -1, dtype=np.int64)
        room = len(self.items) - np.diff(self._rated_out_indptr)[index]  # items left to list
        with torch.no_grad():
            for at, chunk, scores in self._scored_chunks(index, True, None, popular):
                best = torch.topk(scores, width, dim=1).indices.cpu().numpy()
                mine = room[at : at + len(chunk)]
                # a user with fewer items left: their list is `recommend`'s for k = what is
                # left (the same top-k call, so ties fall alike), and it ends there
                for size in np.unique(mine[mine < width]).tolist():
                    rows = np.flatnonzero(mine == size)
                    best[rows] = -1
                    if size > 0:
                        row_scores = scores[torch.from_numpy(rows).to(scores.device)]
                        best[rows, :size] = (
                            torch.topk(row_scores, size, dim=1).indices.cpu().numpy()
                        )
                out[at : at + len(chunk)] = best
                if on_progress is not None:
                    on_progress(at + len(chunk), len(index))
        return out

    def _top(self, scores: Tensor, k: int, predict: bool = True) -> list[list[Recommendation]]:
        values, best = torch.topk(scores, k, dim=1)
        if predict:
            values = self.model.to_prediction(values)
        values, best = values.double().cpu().numpy(), best.cpu().numpy()
        ids = self.items.ids
        return [
            [
                Recommendation(_plain(ids[i]), self.title(int(i)), float(v))
                for i, v in zip(row_i, row_v, strict=True)
            ]
            for row_i, row_v in zip(best, values, strict=True)
        ]

    @torch.no_grad()
    def similar_items(self, item_id: Any, k: int = 10) -> list[Recommendation]:
        """The k items whose factors (dot) or embeddings (nn) are closest in cosine."""
        _check_k(k)
        index = self.item_index(item_id)
        if k > len(self.items) - 1:
            raise ConfigError(f"k={k} but there are only {len(self.items) - 1} other items")
        vectors = self._unit_vectors()
        scores = (vectors @ vectors[index])[None]
        scores[0, index] = -torch.inf
        return self._top(scores, k, predict=False)[0]

    def find_items(self, query: str, limit: int = 20) -> list[ItemMatch]:
        """Items whose title contains `query` (case-insensitive), most-rated first; when none
        does, close matches (`exact=False`) as suggestions."""
        if not self.ratings.titles:
            raise DataError("this model has no item titles to search")
        if not isinstance(query, str):
            raise ConfigError(f"the title search takes text, got {query!r}")
        _check_k(limit, "limit")
        needle = query.strip().lower()
        if not needle:
            raise ConfigError("the title search needs some text")
        known = self._titled_items()
        hits = [(i, t) for i, t, lower in known if needle in lower]
        if hits:
            return [ItemMatch(_plain(i), t, True) for i, t in hits[:limit]]
        lowered = {lower: (i, t) for i, t, lower in reversed(known)}  # most-rated kept
        close = difflib.get_close_matches(needle, list(lowered), n=min(limit, 5), cutoff=0.5)
        return [ItemMatch(_plain(lowered[c][0]), lowered[c][1], False) for c in close]

    def _titled_items(self) -> list[tuple[Any, str, str]]:
        """(id, title, title in lower case) of the model's items that have titles, most-rated
        first (ties in the titles' order), made once: every search reads them all."""
        if self._titled is None:
            titles = self.ratings.titles or {}
            ids = list(titles)
            index = self.items.indexes(np.array(ids, dtype=object)) if ids else np.zeros(0)
            kept = np.flatnonzero(index >= 0)
            order = kept[np.argsort(-self._item_counts[index[kept]], kind="stable")]
            self._titled = [(ids[k], titles[ids[k]], titles[ids[k]].lower()) for k in order]
        return self._titled

    # ------------------------------------------------------------------ fold-in

    def fold_in(self, ratings: Mapping[Any, float], steps: int = 60) -> NewUser:
        """A user who is not in the model, learned from their ratings with every weight frozen
        (the model's `fold_in`: the dot model solves in closed form, the nn model takes `steps`
        gradient steps on a fresh user embedding that starts at the mean user).

        Unknown item ids are ignored with a warning; ratings outside the model's rating scale
        are an error.
        """
        known, ignored = self._known_ratings(ratings)
        rated_index = np.array([self.items.index_of(i) for i in known], dtype=np.int64)
        chosen = self._interactions(known)
        item_index = np.array([self.items.index_of(i) for i in chosen], dtype=np.int64)
        values = torch.tensor(list(chosen.values()), dtype=torch.float64)
        if self._prior is None:
            # a seeded sample of the training ratings: the same prior every time
            sample = np.random.default_rng(0).permutation(len(self.ratings))[:50_000]
            self._prior = (
                self.model.fold_in_prior(
                    torch.from_numpy(self.ratings.user_index[sample]).to(self._device),
                    torch.from_numpy(self.ratings.item_index[sample]).to(self._device),
                    torch.from_numpy(self.ratings.rating[sample]).to(self._device),
                ),
            )
        rows = self.model.fold_in(
            torch.from_numpy(item_index).to(self._device), values, self._prior[0], steps
        )
        partner = None
        if self.rating_model is not None:
            theirs = {i: r for i, r in known.items() if self.rating_model.items.index_of(i) >= 0}
            if theirs:
                partner = self.rating_model.fold_in(theirs, steps)
        return NewUser(
            tuple(rows), np.unique(rated_index), dict(known), tuple(ignored), partner, owner=self
        )

    def _interactions(self, known: dict[Any, float]) -> dict[Any, float]:
        """What a new user's ratings are to the model: all of them, except for a ranking model
        trained on the ratings at or above a minimum (`positives`): those, each weighing 1."""
        minimum = self.ratings.positive_min
        if self.model.predicts_ratings or minimum is None:
            return known
        liked = {item: 1.0 for item, rating in known.items() if rating >= minimum}
        if not liked:
            raise ConfigError(
                f"none of these {len(known)} ratings is at or above {minimum:g}: the "
                f"{self.model.kind} model was trained on the ratings at or above it (liked "
                "items), so give at least one"
            )
        return liked

    def takes_rating(self, rating: float) -> bool:
        """Whether `fold_in` takes this rating: a finite number, within the rating scale where
        the model (or its rating model) reads stars, above 0 where it reads interactions."""
        return bool(np.isfinite(rating)) and self._weighs(rating) and self._in_range(rating)

    @property
    def rating_rule(self) -> str:
        """What `takes_rating` accepts, in words ("between 1 and 5", or for interactions
        "above 0 and at most ...")."""
        low, high = self.rating_range
        if not self._reads_stars:
            return f"above 0 and at most {self.heaviest_weight:g} (an interaction's weight)"
        if self._reads_interactions:  # both: stars of the paired rating model, above 0
            return f"above 0, between {low:g} and {high:g}, and at most {self.heaviest_weight:g}"
        return f"between {low:g} and {high:g}"

    @property
    def _reads_stars(self) -> bool:
        return (
            self.model.predicts_ratings
            or self.rating_model is not None
            or self.ratings.positive_min is not None
        )

    @property
    def _reads_interactions(self) -> bool:
        return not self.model.predicts_ratings and self.ratings.positive_min is None

    def _weighs(self, rating: float) -> bool:
        return not self._reads_interactions or 0 < rating <= self.heaviest_weight

    @functools.cached_property
    def heaviest_weight(self) -> float:
        """The most a new user's interaction may weigh: a million times the heaviest training
        interaction (past that, a confidence-weighted solve such as als's loses its digits). Once
        per recommender: it reads every training rating, and the service asks it per rating."""
        return HEAVIEST_WEIGHT_FACTOR * max(self.ratings.rating_range[1], 1.0)

    def _in_range(self, rating: float) -> bool:
        low, high = self.rating_range
        return not self._reads_stars or low <= rating <= high

    def _known_ratings(self, ratings: Mapping[Any, float]) -> tuple[dict[Any, float], list[Any]]:
        if not isinstance(ratings, Mapping):
            raise ConfigError(
                f"fold_in takes the new user's ratings as {{item_id: rating, ...}}, got "
                f"{type(ratings).__name__}"
            )
        if not ratings:
            raise ConfigError("fold_in needs at least one rating: {item_id: rating, ...}")
        low, high = self.rating_range
        known: dict[Any, float] = {}
        ignored = []
        for item_id, value in ratings.items():
            try:
                rating = float(value)
            except (TypeError, ValueError, OverflowError):
                raise ConfigError(
                    f"rating {value!r} for item {item_id!r} is not a number"
                ) from None
            if not np.isfinite(rating):
                raise ConfigError(f"rating {value!r} for item {item_id!r} is not finite")
            if not self._weighs(rating):
                raise ConfigError(
                    f"rating {rating:g} for item {item_id!r}: the {self.model.kind} model takes "
                    "a new user's ratings as interactions, each weighing more than 0 and at "
                    f"most {self.heaviest_weight:g} (a million times its heaviest training "
                    "interaction)"
                )
            if not self._in_range(rating):
                raise ConfigError(
                    f"rating {rating:g} for item {item_id!r} is outside the model's range "
                    f"{low:g}..{high:g}"
                )
            index = self.items.index_of(item_id)
            if index < 0:
                ignored.append(item_id)
            else:
                item = _plain(self.items.ids[index])
                if item in known:
                    raise ConfigError(
                        f"item {item!r} is rated twice ({item_id!r} is another way of writing "
                        "it); give each item one rating"
                    )
                known[item] = rating
        if ignored:
            warnings.warn(
                f"ignoring {len(ignored)} item id(s) the model does not know: "
                + ", ".join(map(repr, ignored[:20])),
                stacklevel=3,
            )
        if not known:
            raise UnknownIdError(
                f"none of the {len(ignored)} rated item ids is known to the model; "
                f"it knows {self.items.describe('item')}"
            )
        return known, ignored

    # ------------------------------------------------------------------ explaining

    def item_biases(self, n: int = 10) -> tuple[list[Recommendation], list[Recommendation]]:
        """The n items with the highest and the lowest learned bias: liked or disliked
        regardless of taste (models with the "biases" extra). Score = the bias."""
        self.require("biases")
        _check_k(n)
        bias = self.model.item_biases().detach().float().cpu()
        n = min(n, len(bias))
        top = self._top(bias[None], n, predict=False)[0]
        bottom = [r._replace(score=-r.score) for r in self._top(-bias[None], n, predict=False)[0]]
        return top, bottom

    def factor_map(self, n: int = 50) -> list[MapPoint]:
        """A 2-D map of the n most-rated items: their factors (or embeddings) projected on
        the first two principal components."""
        self.require("map")
        _check_k(n)
        chosen = np.argsort(-self._item_counts, kind="stable")[: min(n, len(self.items))]
        with torch.no_grad():
            vectors = self.model.item_vectors().detach().double().cpu()[torch.from_numpy(chosen)]
        centred = vectors - vectors.mean(0)
        _, _, components = torch.linalg.svd(centred, full_matrices=False)
        coordinates = (centred @ components[:2].T).numpy()
        if coordinates.shape[1] < 2:
            coordinates = np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1])))
        return [
            MapPoint(
                _plain(self.items.ids[i]),
                self.title(int(i)),
                float(x),
                float(y),
                int(self._item_counts[i]),
            )
            for i, (x, y) in zip(chosen, coordinates[:, :2], strict=True)
        ]

    def explain(self, user: Any, item_id: Any, n: int = 5) -> list[Reason]:
        """The user's rated items that pushed `item_id` up most: those rated above the user's
        mean whose vectors are closest (cosine) to the item's. Weight = cosine x (rating - mean),
        kept where both are positive."""
        _check_k(n, "n")
        index = self.item_index(item_id)
        rated, values = self.rated(user)
        if len(rated) == 0:
            return []
        vectors = self._unit_vectors()
        cosine = (vectors[torch.from_numpy(rated)] @ vectors[index]).double().cpu().numpy()
        # interactions all weigh alike: every one of them counts as liked
        above = values - values.mean() if np.ptp(values) > 0 else np.ones_like(values)
        # only liked items that resemble it: "because you rated ..." should read as praise
        weights = np.where((above > 0) & (cosine > 0), cosine * above, 0.0)
        order = np.argsort(-weights, kind="stable")
        return [
            Reason(
                _plain(self.items.ids[rated[j]]),
                self.title(int(rated[j])),
                float(values[j]),
                float(weights[j]),
            )
            for j in order[:n]
            if weights[j] > 0 and rated[j] != index
        ]

    def rated(self, user: Any) -> tuple[np.ndarray, np.ndarray]:
        """Item indexes and ratings of everything this user rated."""
        if isinstance(user, NewUser):
            index = np.array(
                [self.items.index_of(i) for i in self._own(user).ratings], dtype=np.int64
            )
            return index, np.array(list(user.ratings.values()), dtype=np.float64)
        position = self.user_index(user)
        start, end = self._rated_indptr[position], self._rated_indptr[position + 1]
        return self._rated_items[start:end], self._rated_values[start:end].astype(np.float64)


def _check_k(k: int, name: str = "k") -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ConfigError(f"{name} must be a positive whole number, got {k!r}")


def _id_list(ids: Any, name: str) -> list[Any]:
    """`ids` as a list of ids; ConfigError for one id given where a list goes."""
    if isinstance(ids, str | bytes | np.generic | int | float) or not isinstance(ids, Iterable):
        raise ConfigError(
            f"{name} is a list of item ids, got the single id {ids!r}; pass [{ids!r}]"
        )
    return list(ids)


def _places(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The places of the given rows' entries in compressed rows (indptr), row after row."""
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    return np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts) + np.arange(counts.sum())


def popular_batch(recommender: Recommender, users: Sequence[Any], k: int = 10) -> list[list[Any]]:
    """The most-rated training items each user has not rated: the most-popular baseline,
    as item indexes. A NewUser's rated items are those of their fold-in."""
    _check_k(k)
    known = [j for j, user in enumerate(users) if not isinstance(user, NewUser)]
    index = np.array([recommender.user_index(users[j]) for j in known], dtype=np.int64)
    lists: list[list[Any]] = [[] for _ in users]
    for j, row in zip(known, recommender._top_indexes(index, k, True), strict=True):
        lists[j] = [int(i) for i in row if i >= 0]
    folded = [j for j, user in enumerate(users) if isinstance(user, NewUser)]
    order = np.argsort(-recommender._item_counts, kind="stable") if folded else None
    for j in folded:
        seen = set(recommender.seen(users[j]).tolist())
        lists[j] = [int(i) for i in order if int(i) not in seen][:k]
    return lists


def relevance_floor(test: Ratings, relevant_min: float | None) -> float | None:
    """The rating at or above which a test row counts as relevant (None: every row).

    Interactions made from ratings (`Ratings.positives`) kept no stars, only that each was
    rated `positive_min` or more: a floor at or below it counts every row, and one above it
    cannot be told apart, so it is refused rather than matching nothing."""
    if relevant_min is None:
        return None
    if not math.isfinite(relevant_min):
        raise ConfigError(f"relevant_min must be a finite number, got {relevant_min!r}")
    if test.positive_min is None:
        return relevant_min
    if relevant_min > test.positive_min:
        raise ConfigError(
            f"relevant_min {relevant_min:g} is above positive_min {test.positive_min:g}: each "
            f"rating of {test.positive_min:g} or more became one interaction without its stars; "
            f"ask for at most {test.positive_min:g}, or give no positive_min"
        )
    return None


def evaluate_ranking(
    recommender: Recommender,
    test: Ratings,
    k: int = 10,
    method: str = "model",
    relevant_min: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Ranking metrics at k over the test users the model knows (those with training rows):
    relevant items are each user's test items; candidates are all training items minus the
    user's training items. A test item the user also has among the training rows (a pair
    rated again) is no candidate, so it is not counted as relevant either; a user left with no
    relevant item is not scored.

    Args:
        test: ratings (in other id maps than the model's, they are expressed in its maps);
            users and items the model does not know are skipped.
        method: "model" (the recommender) or "popular" (the most-popular baseline).
        relevant_min: only test ratings at or above it are relevant (None: every test item;
            see `relevance_floor` for interactions made from ratings).
        on_progress: called as (users ranked, users to rank) after each chunk of users the
            lists are made for (the long part at scale: every item scored for every user).
    """
    _check_k(k)
    if method not in ("model", "popular"):
        raise ConfigError(f"method must be 'model' or 'popular', got {method!r}")
    if not isinstance(recommender, Recommender):
        raise ConfigError(
            f"evaluate_ranking takes a Recommender, got {type(recommender).__name__}: "
            "Recommender(model, training_ratings)"
        )
    if not isinstance(test, Ratings):
        raise ConfigError(
            f"evaluate_ranking takes the test rows as Ratings, got {type(test).__name__}"
            + (" (a Split: pass its .test)" if isinstance(test, Split) else "")
        )
    if relevant_min is not None and (
        not isinstance(relevant_min, numbers.Real) or isinstance(relevant_min, bool)
    ):
        raise ConfigError(f"relevant_min must be a number, got {relevant_min!r}")
    relevant_min = relevance_floor(test, relevant_min)
    if not (test.users.same_as(recommender.users) and test.items.same_as(recommender.items)):
        test = test.reindexed(recommender.users, recommender.items)  # indexes of other maps
    known = (test.user_index >= 0) & (test.item_index >= 0)
    if not known.any():
        raise DataError("no test rating belongs to a user and an item the model knows")
    if relevant_min is not None:
        weights = test.rating[known]
        known &= test.rating >= relevant_min
        if not known.any():
            raise DataError(
                f"no test rating of a user and an item the model knows is at or above "
                f"relevant_min {relevant_min:g} (they range from {float(weights.min()):g} to "
                f"{float(weights.max()):g}): nothing is relevant"
            )
    trained = np.diff(recommender._seen_indptr) > 0  # a user without training rows has no list
    known &= trained[np.maximum(test.user_index, 0)]
    if not known.any():
        raise DataError("no test user has training rows: the model has no list for any of them")
    # each test user's items, once, less those they have among the training rows
    n_items = len(recommender.items)
    pairs = distinct(test.user_index[known].astype(np.int64) * n_items + test.item_index[known])
    users = distinct(pairs // n_items)
    indptr, rated = recommender._rated_out_indptr, recommender._rated_out_items
    # the same users' rated pairs, as keys in increasing order (each user's items are)
    rated_pairs = np.repeat(users, np.diff(indptr)[users]) * n_items + rated[_places(indptr, users)]
    pairs = pairs[~among(rated_pairs, pairs)]
    if len(pairs) == 0:
        raise DataError(
            "every relevant test item is among its user's training items (pairs rated again), "
            "and a user's training items are never recommended: nothing to score; split the "
            "pairs, not the rows, or give a test set of new pairs"
        )
    owners = pairs // n_items
    users, first = np.unique(owners, return_index=True)
    relevant_indptr = np.r_[first, len(pairs)]
    # a user with fewer than k unrated items gets them all (a shorter list)
    top = recommender._top_indexes(users, k, method == "popular", on_progress)
    return ranking_scores(top, relevant_indptr, pairs % n_items, k, n_items)
