"""Recommendations and similar items, raw ids in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_exclude_seen_false_may_return_rated_items(recommender, board):
    everything = recommender.recommend(100, k=24, exclude_seen=False)
    ids = [r.item_id for r in everything]
    seen = set(board[0].items.ids[recommender.seen(100)].tolist())
    assert sorted(ids) == list(range(500, 524)) and seen < set(ids)
    # user 100 likes even items: all twelve, rated or not, come before the odd ones
    assert {i % 2 for i in ids[:12]} == {0} and {i % 2 for i in ids[12:]} == {1}


def test_k_larger_than_the_candidates_says_how_many_there_are(recommender):
    assert len(recommender.recommend(100, k=6)) == 6  # 3 of each parity held out
    with pytest.raises(ConfigError, match="only 6 candidate items remain"):
        recommender.recommend(100, k=7)


def test_similar_items_share_the_pattern(recommender):
    similar = recommender.similar_items(500, k=5)
    assert 500 not in {r.item_id for r in similar}
    assert all((r.item_id - 500) % 2 == 0 for r in similar)
    assert all(-1.0 <= r.score <= 1.0 for r in similar)


def test_unknown_ids_say_what_the_model_knows(recommender):
    with pytest.raises(
        UnknownIdError, match=r"unknown user id 99999: the model knows 24 users.*fold_in"
    ):
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


def test_the_withheld_item_is_recommended_first(board):
    """One user has rated every item but one they would love: it must come first."""
    import numpy as np

    from latentrec.data import Ratings

    train, _ = board
    keep = ~((train.user_index == 0) & (train.item_index == 4))
    full = np.array([(0, i, 5.0 if i % 2 == 0 else 1.0) for i in range(24) if i != 4])
    rows = Ratings(
        np.r_[train.user_index[keep & (train.user_index != 0)], full[:, 0].astype(np.int64)],
        np.r_[train.item_index[keep & (train.user_index != 0)], full[:, 1].astype(np.int64)],
        np.r_[train.rating[keep & (train.user_index != 0)], full[:, 2].astype(np.float32)],
        train.users,
        train.items,
        titles=train.titles,
    )
    net, _ = fit(
        rows, "dot", epochs=30, batch_size=64, lr=0.05, wd=0.01, n_factors=4, progress=False
    )
    first = Recommender(net, rows).recommend(100, k=1)[0]
    assert first.item_id == 504


def test_batch_equals_one_by_one(recommender):
    users = [100, 105, 117, 123, 101]
    batch = recommender.recommend_batch(users, k=5)
    for user, recs in zip(users, batch, strict=True):
        single = recommender.recommend(user, k=5)
        assert [r.item_id for r in recs] == [r.item_id for r in single]
        assert [r.score for r in recs] == pytest.approx([r.score for r in single], abs=1e-6)


def test_seen_items_never_come_back(recommender, board):
    train, _ = board
    for user, recs in zip(
        range(100, 124), recommender.recommend_batch(list(range(100, 124)), k=6), strict=True
    ):
        seen = set(train.items.ids[recommender.seen(user)].tolist())
        assert not seen & {r.item_id for r in recs}


def test_candidates_restrict_the_choice(recommender):
    recs = recommender.recommend(100, k=2, exclude_seen=False, candidates=[500, 502, 501, 503, 505])
    assert {r.item_id for r in recs} <= {500, 502, 501, 503, 505}


def test_predict_for_known_and_new_users(recommender):
    predictions = recommender.predict(100, [500, 501])
    assert predictions[0] > 4 and predictions[1] < 2
    new = recommender.fold_in({500: 5.0, 502: 5.0, 501: 1.0, 503: 1.0})
    again = recommender.predict(new, [504, 505])
    assert again[0] > again[1]


def test_fold_in_of_a_training_users_ratings_matches_their_trained_predictions(recommender, board):
    train, _ = board
    user = 103
    items, values = recommender.rated(user)
    mine = {int(train.items.ids[i]): float(r) for i, r in zip(items, values, strict=True)}
    new = recommender.fold_in(mine)
    items = list(range(500, 524))
    assert np.abs(recommender.predict(new, items) - recommender.predict(user, items)).max() < 0.5
    recs = recommender.recommend(new, k=3)
    assert all((3 + r.item_id - 500) % 2 == 0 for r in recs)


def test_fold_in_bad_input(recommender):
    with pytest.warns(UserWarning, match="ignoring 1 item id"):
        new = recommender.fold_in({500: 5.0, 99999: 4.0})
    assert new.ignored == (99999,)
    with (
        pytest.raises(UnknownIdError, match="none of the 1 rated item ids"),
        pytest.warns(UserWarning),
    ):
        recommender.fold_in({99999: 4.0})
    with pytest.raises(ConfigError, match=r"outside the model's range 1..5"):
        recommender.fold_in({500: 7.0})
    with pytest.raises(ConfigError, match="at least one rating"):
        recommender.fold_in({})


def test_title_search_and_suggestions(recommender):
    found = recommender.find_items("item 1", limit=3)
    hits = [i for i in range(500, 524) if "item 1" in f"item {i - 500}"]
    counts = recommender.item_counts
    expected = sorted(hits, key=lambda i: -counts[recommender.item_index(i)])[:3]
    assert [m.item_id for m in found] == expected and all(m.exact for m in found)
    close = recommender.find_items("itme 7")
    assert close and not close[0].exact


def test_item_biases_and_factor_map(recommender):
    top, bottom = recommender.item_biases(3)
    assert len(top) == len(bottom) == 3
    assert top[0].score >= top[-1].score >= bottom[-1].score >= bottom[0].score
    points = recommender.factor_map(10)
    assert len(points) == 10 and all(np.isfinite([p.x, p.y]).all() for p in points)


def test_explain_names_liked_similar_items(recommender):
    reasons = recommender.explain(100, 504)
    assert reasons
    assert all((r.item_id - 500) % 2 == 0 and r.rating == 5.0 for r in reasons)


def test_seen_items_are_left_out_where_users_times_items_passes_int32():
    """Indexes are held as int32 (4 bytes each); 70,000 users x 40,000 items is past int32's
    range, and a user's seen items are still the ones left out of their list."""
    from latentrec.data import IdMap, Ratings

    users = np.array([0, 1, 69_999, 69_999, 5])
    items = np.array([0, 1, 39_999, 7, 39_998])
    ratings = Ratings(
        users,
        items,
        np.ones(len(users), dtype=np.float32),
        IdMap(np.arange(70_000, dtype=np.int64)),
        IdMap(np.arange(40_000, dtype=np.int64)),
        source="wide",
        implicit=True,
    )
    assert ratings.user_index.dtype == ratings.item_index.dtype == np.int32
    model, _ = fit(ratings, "als", n_factors=2, iterations=1, progress=False)
    shown = {r.item_id for r in Recommender(model, ratings).recommend(69_999, k=39_998)}
    assert len(shown) == 39_998
    assert not shown & {39_999, 7}
