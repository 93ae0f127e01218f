"""Recommendations and similar items, raw ids in and out."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentrec import ConfigError, Recommender, UnknownIdError, fit, save


@pytest.fixture(scope="module")
def recommender(board):
    net, _ = fit(
        board, "dot", epochs=30, batch_size=64, lr=0.05, wd=0.01, n_factors=4, progress=False
    )
    return Recommender(net, board[0])


def test_recommendations_are_the_users_unseen_favourites(recommender, board):
    train, _test = board
    for user in (100, 101):
        recs = recommender.recommend(user, k=3)
        assert len(recs) == 3
        assert all(((user - 100) + (r.item_id - 500)) % 2 == 0 for r in recs)  # same parity
        seen = set(train.items.ids[recommender.seen(user)].tolist())
        assert not seen & {r.item_id for r in recs}
        assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
        assert recs[0].title == f"Item {recs[0].item_id - 500}"


def test_exclude_seen_false_may_return_rated_items(recommender):
    everything = recommender.recommend(100, k=24, exclude_seen=False)
    assert len(everything) == 24


def test_k_larger_than_unseen_items_returns_what_there_is(recommender):
    assert len(recommender.recommend(100, k=1000)) == 6  # 3 of each parity held out


def test_similar_items_share_the_pattern(recommender):
    similar = recommender.similar_items(500, k=5)
    assert 500 not in {r.item_id for r in similar}
    assert all((r.item_id - 500) % 2 == 0 for r in similar)
    assert all(-1.0 <= r.score <= 1.0 for r in similar)


def test_unknown_ids_say_what_the_model_knows(recommender):
    with pytest.raises(UnknownIdError, match=r"unknown user id 99999: the model knows 24 users"):
        recommender.recommend(99999)
    with pytest.raises(UnknownIdError, match="unknown item id 'x'"):
        recommender.similar_items("x")


def test_bad_k(recommender):
    with pytest.raises(ConfigError, match="k must be"):
        recommender.recommend(100, k=0)


def test_from_dir_needs_no_original_data(recommender, board, tmp_path: Path):
    folder = save(recommender.model, tmp_path / "m", board[0])
    again = Recommender.from_dir(folder)
    assert again.recommend("100", k=5) == recommender.recommend(100, k=5)
    assert again.similar_items(501, k=3) == recommender.similar_items(501, k=3)
