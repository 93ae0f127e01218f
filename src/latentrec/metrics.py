"""Accuracy metrics: pure functions, arrays in, float out."""

from __future__ import annotations

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
    plus catalogue coverage over all users. Keys: `precision@k`, ..., `coverage@k`, `users`."""
    if len(recommended_lists) != len(relevant_sets):
        raise DataError(
            f"{len(recommended_lists)} recommendation lists for {len(relevant_sets)} users"
        )
    scored = [
        (items, relevant)
        for items, relevant in zip(recommended_lists, relevant_sets, strict=True)
        if len(relevant)
    ]
    result = {
        f"{name}@{k}": float(np.mean([metric(i, r, k) for i, r in scored])) if scored else 0.0
        for name, metric in RANKING_METRICS.items()
    }
    result[f"coverage@{k}"] = coverage(recommended_lists, n_items, k)
    result["users"] = len(scored)
    return result


LARGEST_K = 1_000_000  # the longest list a ranking metric scores


def cutoff_of(text: str) -> int | None:
    """K of a metric name's "@K" part: ASCII digits ("010" is 10) from 1 to LARGEST_K; None
    for anything else."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    k = int(text)
    return k if 1 <= k <= LARGEST_K else None
