"""Rating and ranking metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentrec.errors import DataError
from latentrec.metrics import (
    RANKING_METRICS,
    average_precision_at_k,
    coverage,
    hit_rate_at_k,
    mae,
    ndcg_at_k,
    precision_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
)


def test_rmse_and_mae():
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert math.isnan(rmse([], []))
    with pytest.raises(DataError):
        rmse([1, 2], [1])


# recommended [7, 3, 9, 1], relevant {3, 1, 5}: hits at ranks 2 and 4
RECOMMENDED = [7, 3, 9, 1]
RELEVANT = {3, 1, 5}


def test_precision_and_recall():
    assert precision_at_k(RECOMMENDED, RELEVANT, 4) == 0.5
    assert precision_at_k(RECOMMENDED, RELEVANT, 2) == 0.5
    assert precision_at_k(RECOMMENDED, RELEVANT, 10) == 0.2  # k is the denominator
    assert recall_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx(2 / 3)
    assert recall_at_k(RECOMMENDED, RELEVANT, 1) == 0.0


def test_ndcg_by_hand():
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx(dcg / ideal)
    assert ndcg_at_k([3, 1, 5], RELEVANT, 3) == pytest.approx(1.0)


def test_average_precision_and_hit_rate():
    # precision at the hit ranks: 1/2 and 2/4; divided by min(|relevant|, k) = 3
    assert average_precision_at_k(RECOMMENDED, RELEVANT, 4) == pytest.approx((0.5 + 0.5) / 3)
    assert hit_rate_at_k(RECOMMENDED, RELEVANT, 1) == 0.0
    assert hit_rate_at_k(RECOMMENDED, RELEVANT, 2) == 1.0


def test_empty_and_all_miss_lists():
    assert precision_at_k([], RELEVANT, 5) == 0.0
    assert recall_at_k([], RELEVANT, 5) == 0.0
    assert ndcg_at_k([], RELEVANT, 5) == 0.0
    assert average_precision_at_k([8, 9], RELEVANT, 2) == 0.0


def test_users_without_relevant_items_are_undefined_and_skipped():
    assert math.isnan(recall_at_k([1, 2], set(), 2))
    assert math.isnan(ndcg_at_k([1, 2], set(), 2))
    assert precision_at_k([1, 2], set(), 2) == 0.0
    result = ranking_metrics([[3, 9], [1, 2]], [{3}, set()], k=2, n_items=10)
    assert result["users"] == 1
    assert result["precision@2"] == 0.5 and result["recall@2"] == 1.0
    assert result["coverage@2"] == pytest.approx(4 / 10)


def test_coverage_and_bad_k():
    assert coverage([[1, 2, 3], [3, 4]], n_items=8, k=2) == pytest.approx(4 / 8)  # 1, 2, 3, 4
    with pytest.raises(DataError, match="k must be"):
        precision_at_k([1], {1}, 0)
    assert np.isclose(ranking_metrics([], [], 5, 3)["ndcg@5"], 0.0)


def _items(n_items: int):
    """Item indexes, and now and then numbers no index is (negative, or past int32)."""
    odd = st.sampled_from([-1, -(2**62), 2**40, 2**62, 2**63 - 1])
    return st.one_of(st.integers(0, n_items - 1), odd)


lists_and_sets = st.integers(1, 12).flatmap(
    lambda n_items: st.tuples(
        st.just(n_items),
        st.integers(1, 6),
        st.lists(
            st.tuples(
                st.lists(_items(n_items), max_size=8),  # repeats allowed
                st.sets(_items(n_items), max_size=6),  # empty: not scored
            ),
            max_size=8,
        ),
    )
)


@settings(max_examples=200, deadline=None)
@given(lists_and_sets)
def test_all_users_at_once_equal_the_per_user_metrics_averaged(case):
    n_items, k, users = case
    lists, sets = [items for items, _ in users], [relevant for _, relevant in users]
    result = ranking_metrics(lists, sets, k, n_items)
    scored = [(items, relevant) for items, relevant in users if relevant]
    assert result["users"] == len(scored)
    for name, metric in RANKING_METRICS.items():
        expected = np.mean([metric(i, r, k) for i, r in scored]) if scored else 0.0
        assert result[f"{name}@{k}"] == pytest.approx(expected, abs=1e-12), name
    assert result[f"coverage@{k}"] == coverage(lists, n_items, k)
