"""The Python API given what it cannot use: a clear latentrec error, never a crash, a raw
Python error or a silently wrong answer (regressions from an adversarial review)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

import latentrec as L
from latentrec import ConfigError, DataError, IdMap, ModelFileError, Ratings
from latentrec.data import combine


def tiny(users=(0, 1, 2), items=(0, 1, 2), n_users=3, n_items=3) -> Ratings:
    return Ratings(
        np.array(users),
        np.array(items),
        np.array([5.0, 4.0, 3.0][: len(users)]),
        IdMap(np.arange(n_users) + 1),
        IdMap((np.arange(n_items) + 1) * 10),
        source="tiny",
    )


@pytest.fixture(scope="module")
def small():
    ratings = L.synthetic_ratings(ratings=400, users=20, items=10)
    model, _ = L.fit(ratings, "dot", epochs=1, progress=False)
    return ratings, model, L.Recommender(model, ratings)


def test_indexes_outside_the_maps_are_refused_before_any_kernel_reads_them():
    # index 7 of 3 users reached the compiled kernels: a segmentation fault
    with pytest.raises(DataError, match=r"user_index holds 7, outside its id map's indexes 0..2"):
        tiny(users=(0, 1, 7))
    with pytest.raises(DataError, match=r"item_index holds -2"):
        tiny(items=(0, -2, 1))


@pytest.mark.parametrize("model", ["dot", "als"])
def test_rows_of_unknown_ids_do_not_train(model):
    # a split's test rows (index -1) trained silently, writing to the tables' last row
    with pytest.raises(DataError, match=r"1 rows hold items their id map does not know"):
        L.fit(tiny(items=(0, -1, 1)), model, epochs=1, progress=False)


def test_combine_and_a_recommender_refuse_rows_of_unknown_ids(small):
    ratings, model, _ = small
    with pytest.raises(DataError, match="which combine cannot take"):
        combine(tiny(), tiny(users=(-1, 0, 1)))
    unknown = ratings.take(np.arange(len(ratings)))
    unknown.user_index[0] = -1
    with pytest.raises(DataError, match="which a Recommender"):
        L.Recommender(model, unknown)


def test_ranking_metrics_read_a_test_set_in_other_maps_by_its_ids():
    train = Ratings(
        np.array([0, 0, 1]),
        np.array([0, 1, 0]),
        np.ones(3),
        IdMap(np.array([1, 2])),
        IdMap(np.array([10, 20, 30])),
        source="train",
    )
    rec = L.Recommender(L.fit(train, "ease", progress=False)[0], train)
    assert [r.item_id for r in rec.recommend(1, k=1)] == [30]
    # user 1 liked item 30, written in maps listing the items the other way round
    test = Ratings(
        np.array([0]), np.array([0]), np.ones(1), train.users, IdMap(np.array([30, 20, 10])), "t"
    )
    assert L.evaluate_ranking(rec, test, k=1)["hit_rate@1"] == 1.0  # was 0.0, silently
    with pytest.raises(DataError, match=r"express the ratings in the model's maps"):
        L.evaluate(L.fit(train, "dot", epochs=1, progress=False)[0], tiny())


def test_what_save_writes_load_reads(small, tmp_path: Path):
    ratings, model, _ = small
    titled = ratings.__class__(
        ratings.user_index,
        ratings.item_index,
        ratings.rating,
        ratings.users,
        ratings.items,
        titles={ratings.items.ids[0]: "Heat", ratings.items.ids[1]: math.nan},  # pandas' gap
        source=None,
    )
    info = {"rmse": np.float32(0.5), "count": np.int64(3), "where": tmp_path}
    saved = L.load(L.save(model, tmp_path / "model", titled, info=info))
    assert saved.info == {"rmse": 0.5, "count": 3, "where": str(tmp_path)}
    assert saved.ratings.title(ratings.items.ids[0]) == "Heat"
    assert saved.ratings.title(ratings.items.ids[1]) is None
    for bad, needle in ((["note"], "info must be a dict"), ({"x": object()}, "JSON-able")):
        with pytest.raises(ConfigError, match=needle):
            L.save(model, tmp_path / "other", ratings, info=bad)
        assert not (tmp_path / "other").exists()
    with pytest.raises(ConfigError, match="directory must be a path, got None"):
        L.save(model, None, ratings)


def test_a_model_file_that_is_no_regular_file_is_refused(small, tmp_path: Path):
    ratings, model, _ = small
    folder = L.save(model, tmp_path / "model", ratings)
    (folder / "ids.json").unlink()
    os.symlink("/dev/zero", folder / "ids.json")  # read to the end, it never ends
    with pytest.raises(ModelFileError, match=r"ids\.json is not a regular file"):
        L.load(folder)


def test_numpy_numbers_are_numbers(small):
    ratings, _, _ = small
    model, history = L.fit(
        ratings, "dot", epochs=np.int64(2), lr=np.float32(0.01), n_factors=np.int32(4),
        progress=False,
    )  # fmt: skip
    assert len(history.epochs) == 2 and model.config.n_factors == 4


def test_new_users_in_a_batch_get_their_own_lists(small):
    ratings, _, rec = small
    new = rec.fold_in({ratings.items.ids[0]: 4.0, ratings.items.ids[1]: 2.0})
    known = ratings.users.ids[0]
    assert rec.recommend_batch([new, known], k=3) == [
        rec.recommend(new, k=3),
        rec.recommend(known, k=3),
    ]


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda r, rec: L.fit(r, "dot", {"epochs": 1}), ConfigError, "is a TrainConfig, not dict"),
        (lambda r, rec: L.fit(r, "dot", device=None), ConfigError, "device must be"),
        (lambda r, rec: L.synthetic_ratings(ratings="10"), DataError, "ratings must be a whole"),
        (lambda r, rec: L.synthetic_ratings(noise=-1), DataError, "noise must be 0 or more"),
        (lambda r, rec: L.synthetic_ratings(users=True), DataError, "users must be a whole"),
        (lambda r, rec: L.synthetic_ratings(rows=5), DataError, "unknown synthetic option"),
        (lambda r, rec: r.split(None), DataError, "test_fraction must be between 0 and 1"),
        (lambda r, rec: rec.recommend([r.users.ids[0]]), L.UnknownIdError, "unknown user id"),
        (
            lambda r, rec: rec.recommend(r.users.ids[0], candidates=r.items.ids[0]),
            ConfigError,
            "candidates is a list of item ids",
        ),
        (lambda r, rec: rec.predict(r.users.ids[0], r.items.ids[0]), ConfigError, "item_ids"),
        (
            lambda r, rec: rec.explain(r.users.ids[0], r.items.ids[0], n=2.5),
            ConfigError,
            "n must be a positive whole number",
        ),
        (lambda r, rec: L.evaluate_ranking(rec, r, k=2.0), ConfigError, "k must be a positive"),
        (
            lambda r, rec: L.evaluate_ranking(rec, r.split(0.2)),
            ConfigError,
            r"takes the test rows as Ratings, got Split \(a Split: pass its \.test\)",
        ),
        (lambda r, rec: L.evaluate_ranking(rec.model, r), ConfigError, "takes a Recommender"),
        (
            lambda r, rec: L.evaluate_ranking(rec, r, method="best"),
            ConfigError,
            "method must be 'model' or 'popular', got 'best'",
        ),
        (
            lambda r, rec: L.evaluate_ranking(rec, r, relevant_min="4"),
            ConfigError,
            "relevant_min must be a number, got '4'",
        ),
        (lambda r, rec: rec.fold_in([1, 2]), ConfigError, "as {item_id: rating, ...}, got list"),
        (lambda r, rec: L.Recommender(rec, r), ConfigError, "takes a model"),
        (lambda r, rec: L.Recommender(rec.model, r, rating_model=5), ConfigError, "rating_model"),
        (
            lambda r, rec: L.fit(r, "als", epochs=3, progress=False),
            ConfigError,
            "epochs train by steps; the als model is solved",
        ),
        (
            lambda r, rec: L.tune(r, "ease", trials=1, lr=0.1),
            ConfigError,
            "lr train by steps; the ease model is solved",
        ),
    ],
)
def test_misuse_is_a_clear_error(small, call, error, needle):
    ratings, _, rec = small
    with pytest.raises(error, match=needle):
        call(ratings, rec)


def test_a_new_user_belongs_to_the_recommender_that_folded_them_in(small):
    ratings, _, rec = small
    other = L.Recommender(L.fit(ratings, "dot", epochs=1, n_factors=6, progress=False)[0], ratings)
    new = rec.fold_in({ratings.items.ids[0]: 4.0})
    for call in (
        lambda: other.recommend(new, k=3),
        lambda: other.predict(new, [ratings.items.ids[1]]),
        lambda: other.explain(new, ratings.items.ids[1]),
    ):
        with pytest.raises(ConfigError, match="folded in by another Recommender"):
            call()
    item = int(ratings.items.ids[0])
    with pytest.raises(ConfigError, match=f"item {item} is rated twice"):
        rec.fold_in({item: 4.0, str(item): 1.0})


def test_a_user_who_rated_everything_and_a_search_for_no_text():
    ratings = Ratings(
        np.array([0, 0, 0, 1]),
        np.array([0, 1, 2, 0]),
        np.array([5.0, 4.0, 3.0, 2.0]),
        IdMap(np.array([1, 2])),
        IdMap(np.array([10, 20, 30])),
        source="all rated",
        titles={10: "A", 20: "B", 30: "C"},
    )
    rec = L.Recommender(L.fit(ratings, "dot", epochs=1, progress=False)[0], ratings)
    with pytest.raises(ConfigError, match="none is left to recommend"):  # not "at most 0"
        rec.recommend(1, k=1)
    assert len(rec.recommend(1, k=1, exclude_seen=False)) == 1
    with pytest.raises(ConfigError, match="title search takes text, got nan"):
        rec.find_items(math.nan)  # a pandas gap: was an AttributeError


def test_float_ids_are_numbers_a_user_can_look_up():
    # a map of float ids (pandas turns a column with a gap into floats) trained, and then no
    # id was found: lookups turned 1.0 into the text "1.0"
    ratings = Ratings(
        np.array([0, 1, 1]),
        np.array([0, 1, 0]),
        np.array([5.0, 4.0, 3.0]),
        IdMap(np.array([1.0, 2.0])),
        IdMap(np.array([10.0, 20.0])),
        source="floats",
    )
    assert (
        ratings.users.is_numeric and ratings.users.index_of(1) == ratings.users.index_of(1.0) == 0
    )
    rec = L.Recommender(L.fit(ratings, "dot", epochs=1, progress=False)[0], ratings)
    assert [r.item_id for r in rec.recommend(1, k=1)] == [20]
    with pytest.raises(DataError, match="ids are whole numbers or text"):
        IdMap(np.array([1.0, 1.5]))


def test_a_new_user_of_a_dot_model_trained_on_one_user_gets_finite_scores():
    # regression (review): the prior's variance over one trained user was NaN: every score NaN
    ratings = Ratings(
        np.zeros(4, dtype=np.int64),
        np.arange(4),
        np.array([5.0, 4.0, 2.0, 1.0]),
        IdMap(np.array([1])),
        IdMap(np.array([10, 20, 30, 40])),
        source="one user",
    )
    rec = L.Recommender(L.fit(ratings, "dot", epochs=2, progress=False)[0], ratings)
    listed = rec.recommend(rec.fold_in({10: 5.0, 20: 3.0}), k=2)
    assert len(listed) == 2 and np.isfinite([r.score for r in listed]).all()


def test_a_user_without_training_rows_gets_no_list():
    # regression (review): after positives() a user with no liked rating kept their id; their
    # list was the items in index order, every score 0
    ratings = tiny(users=(0, 1, 2), items=(0, 1, 2), n_items=4)
    liked = ratings.positives(4)  # user 3 (index 2) rated 3 only
    rec = L.Recommender(L.fit(liked, "ease", progress=False)[0], liked)
    for call in (lambda: rec.recommend(3, k=1), lambda: rec.recommend_batch([1, 3], k=1)):
        with pytest.raises(L.UnknownIdError, match="user 3 has no training interactions"):
            call()
    assert len(rec.recommend(1, k=1)) == 1
    test = tiny(users=(0, 2), items=(3, 3), n_items=4)  # ratings 5 and 4
    assert L.evaluate_ranking(rec, test, 1)["users"] == 1  # user 3 is not scored
    with pytest.raises(DataError, match="no test user has training rows"):
        L.evaluate_ranking(rec, tiny(users=(2,), items=(3,), n_items=4), 1)
