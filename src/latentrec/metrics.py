"""Accuracy metrics: pure functions, arrays in, float out."""

from __future__ import annotations

from typing import Any

import numpy as np

from latentrec.errors import DataError


def _pair(prediction, truth) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if prediction.shape != truth.shape:
        raise DataError(f"{prediction.shape[0]} predictions for {truth.shape[0]} ratings")
    return prediction, truth


def rmse(prediction, truth) -> float:
    """Root mean squared error, sqrt(mean((prediction - truth)^2)); nan for no ratings."""
    prediction, truth = _pair(prediction, truth)
    if prediction.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((prediction - truth) ** 2)))


def mae(prediction, truth) -> float:
    """Mean absolute error, mean(|prediction - truth|); nan for no ratings."""
    prediction, truth = _pair(prediction, truth)
    if prediction.size == 0:
        return float("nan")
    return float(np.mean(np.abs(prediction - truth)))


# ----------------------------------------------------------------------------- ranking
#
# Per user: `recommended` is the ranked list of item indexes shown (best first), `relevant` the
# set of items the user is known to like (their held-out items). Only the first k count.
# Users without relevant items have no defined recall, NDCG or average precision (nan); the
# averages in `ranking_metrics` leave them out.


def _hits(recommended, relevant, k: int) -> np.ndarray:
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    top = np.asarray(recommended)[:k]
    return np.isin(top, np.fromiter(relevant, dtype=np.int64, count=len(relevant)))


def precision_at_k(recommended, relevant, k: int) -> float:
    """|top-k ∩ relevant| / k (the denominator is k even when fewer were recommended)."""
    return float(_hits(recommended, relevant, k).sum() / k)


def recall_at_k(recommended, relevant, k: int) -> float:
    """|top-k ∩ relevant| / |relevant|; nan without relevant items."""
    if len(relevant) == 0:
        return float("nan")
    return float(_hits(recommended, relevant, k).sum() / len(relevant))


def hit_rate_at_k(recommended, relevant, k: int) -> float:
    """1 if any of the top k is relevant, else 0; nan without relevant items."""
    if len(relevant) == 0:
        return float("nan")
    return float(_hits(recommended, relevant, k).any())


def ndcg_at_k(recommended, relevant, k: int) -> float:
    """DCG / ideal DCG with binary gains and a log2 discount.

    DCG = sum over ranks r = 1..k of rel_r / log2(r + 1); the ideal DCG places
    min(|relevant|, k) relevant items first. nan without relevant items.
    """
    if len(relevant) == 0:
        return float("nan")
    hits = _hits(recommended, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(len(relevant), k)].sum()
    return float((hits * discounts[: len(hits)]).sum() / ideal)


def average_precision_at_k(recommended, relevant, k: int) -> float:
    """AP@k = sum over hit ranks r of precision@r, divided by min(|relevant|, k); nan without
    relevant items. MAP@k is its mean over users."""
    if len(relevant) == 0:
        return float("nan")
    hits = _hits(recommended, relevant, k)
    if not hits.any():
        return 0.0
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at_rank * hits).sum() / min(len(relevant), k))


def coverage(recommended_lists, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    if n_items < 1:
        raise DataError(f"the catalogue must hold at least one item, got {n_items}")
    shown = {int(item) for items in recommended_lists for item in list(items)[:k]}
    return len(shown) / n_items


RANKING_METRICS = {
    "precision": precision_at_k,
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "hit_rate": hit_rate_at_k,
    "map": average_precision_at_k,
}


def ranking_metrics(recommended_lists, relevant_sets, k: int, n_items: int) -> dict[str, float]:
    """Each ranking metric per user, averaged over the users with at least one relevant item,
    plus catalogue coverage over all users. Keys: `precision@k`, ..., `coverage@k`, `users`.
    (`ranking_scores` with the lists as arrays.)"""
    if len(recommended_lists) != len(relevant_sets):
        raise DataError(
            f"{len(recommended_lists)} recommendation lists for {len(relevant_sets)} users"
        )
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    # any items an equality tells apart (ids, floats, negative or huge numbers) as codes
    # 0, 1, ... in the order first met; -1 fills the shorter lists
    codes: dict[Any, int] = {}
    lists = [[codes.setdefault(item, len(codes)) for item in list(items)[:k]] for items in
             recommended_lists]  # fmt: skip
    relevant = [sorted({codes.setdefault(item, len(codes)) for item in r}) for r in relevant_sets]
    top = np.full((len(lists), max(map(len, lists), default=0)), -1, dtype=np.int64)
    for row, items in zip(top, lists, strict=True):
        row[: len(items)] = items
    indptr = np.r_[0, np.cumsum([len(r) for r in relevant], dtype=np.int64)]
    items = np.fromiter((i for r in relevant for i in r), dtype=np.int64, count=int(indptr[-1]))
    return ranking_scores(top, indptr, items, k, n_items)


def ranking_scores(
    top: np.ndarray, relevant_indptr: np.ndarray, relevant_items: np.ndarray, k: int, n_items: int
) -> dict[str, float]:
    """`ranking_metrics` over arrays, for many users at once: `top` (users x at most k) holds
    each user's list of item indexes (0 and up), best first, -1 after a list's end; user u's
    relevant items are relevant_items[relevant_indptr[u]:relevant_indptr[u + 1]], distinct and
    in increasing order. The same formulas as the per-user functions above."""
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    if n_items < 1:
        raise DataError(f"the catalogue must hold at least one item, got {n_items}")
    top = np.asarray(top, dtype=np.int64)[:, :k]
    n_users, width = top.shape
    if len(relevant_indptr) != n_users + 1:
        raise DataError(f"{n_users} recommendation lists for {len(relevant_indptr) - 1} users")
    relevant_items = np.asarray(relevant_items, dtype=np.int64)
    if (top.size and top.min() < -1) or (relevant_items.size and relevant_items.min() < 0):
        raise DataError("item indexes count from 0 (and -1 ends a list); map ids to indexes first")
    n_relevant = np.diff(relevant_indptr)
    hits = _hits_of(top, relevant_indptr, relevant_items)
    listed = top[top >= 0]
    coverage = len(np.unique(listed)) / n_items
    scored = n_relevant > 0
    if not scored.any():
        result = dict.fromkeys((f"{name}@{k}" for name in RANKING_METRICS), 0.0)
        return result | {f"coverage@{k}": coverage, "users": 0}
    hits, n_relevant = hits[scored], n_relevant[scored]
    found = hits.sum(1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_relevant, k) - 1]
    rank_precision = np.cumsum(hits, axis=1) / np.arange(1, width + 1)
    per_user = {
        "precision": found / k,
        "recall": found / n_relevant,
        "ndcg": (hits * discounts[:width]).sum(1) / ideal,
        "hit_rate": hits.any(1).astype(np.float64),
        "map": (rank_precision * hits).sum(1) / np.minimum(n_relevant, k),
    }
    result = {f"{name}@{k}": float(np.mean(per_user[name])) for name in RANKING_METRICS}
    return result | {f"coverage@{k}": coverage, "users": int(scored.sum())}


def _hits_of(top: np.ndarray, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
    """hits[u, j]: whether top[u, j] is among user u's relevant items (compressed rows, each
    row's items in increasing order); -1 is none."""
    n_users, width = top.shape
    if len(items) == 0 or width == 0:
        return np.zeros(top.shape, dtype=bool)
    # one sorted key per relevant (user, item)
    span = max(int(items.max()), int(top.max())) + 1
    owners = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    keys = owners * span + items
    wanted = np.arange(n_users, dtype=np.int64)[:, None] * span + top
    return among(keys, wanted) & (top >= 0)


def among(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of `values` is one of `keys` (in increasing order): np.isin without its
    sort of the keys."""
    if len(keys) == 0:
        return np.zeros(np.shape(values), dtype=bool)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return keys[at] == values


LARGEST_K = 1_000_000  # the longest list a ranking metric scores


def cutoff_of(text: str) -> int | None:
    """K of a metric name's "@K" part: ASCII digits ("010" is 10) from 1 to LARGEST_K; None
    for anything else."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    k = int(text)
    return k if 1 <= k <= LARGEST_K else None
