"""A ranking model paired with a rating model: lists from the one, predicted ratings from the
other, in the Recommender, the CLI and the service."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from latentrec import ConfigError, Recommender, fit, load_ratings, save
from latentrec.serving import create_app

from .test_contract import invoke, one_error_line


@pytest.fixture(scope="module")
def train(small_split):
    """The bundled training rows of the 1,500 most-rated movies: a quick ease solve."""
    ratings = small_split.train
    counts = np.bincount(ratings.item_index, minlength=ratings.n_items)
    popular = np.argsort(-counts, kind="stable")[:1500]
    return ratings.take(np.flatnonzero(np.isin(ratings.item_index, popular))).compacted()


@pytest.fixture(scope="module")
def dirs(train, tmp_path_factory):
    """An ease model and a dot model on the same training rows, saved."""
    folder = tmp_path_factory.mktemp("pair")
    lists, _ = fit(train, "ease", progress=False)
    stars, _ = fit(train, "dot", epochs=2, progress=False)
    return save(lists, folder / "lists", train), save(stars, folder / "stars", train)


@pytest.fixture(scope="module")
def pair(dirs):
    return Recommender.from_dir(dirs[0], rating_model=dirs[1])


def test_lists_are_the_ranking_models_and_predictions_the_rating_models(pair, dirs):
    alone = Recommender.from_dir(dirs[0])
    stars = Recommender.from_dir(dirs[1])
    for user in (1, 414):
        listed = pair.recommend(user, k=10)
        assert [(r.item_id, r.score) for r in listed] == [
            (r.item_id, r.score) for r in alone.recommend(user, k=10)
        ]
        expected = stars.predict(user, [r.item_id for r in listed])
        assert [r.predicted for r in listed] == pytest.approx(expected.tolist())
        assert [r.predicted for r in pair.recommend_batch([user], 10)[0]] == pytest.approx(
            expected.tolist()
        )
        assert pair.predict(user, [318]) == pytest.approx(stars.predict(user, [318]))
    assert alone.recommend(1, k=3)[0].predicted is None
    assert "predicted" not in alone.recommend(1, k=1)[0].to_json()


def test_a_new_user_is_folded_into_both(pair, dirs):
    ratings = {318: 5.0, 296: 4.5, 1: 1.0}
    new = pair.fold_in(ratings)
    assert new.partner is not None
    listed = pair.recommend(new, k=5)
    alone = Recommender.from_dir(dirs[0]).recommend(
        Recommender.from_dir(dirs[0]).fold_in(ratings), k=5
    )
    assert [r.item_id for r in listed] == [r.item_id for r in alone]
    stars = Recommender.from_dir(dirs[1])
    expected = stars.predict(stars.fold_in(ratings), [r.item_id for r in listed])
    assert [r.predicted for r in listed] == pytest.approx(expected.tolist(), abs=1e-6)
    # the stars are the rating model's: a rating off its scale is refused, as it would be
    assert pair.rating_range == stars.rating_range
    with pytest.raises(ConfigError, match="outside the model's range"):
        pair.fold_in({318: 9.0})


def test_pairs_that_do_not_fit_are_refused(train, dirs):
    with pytest.raises(ConfigError, match="predicts ratings itself"):
        Recommender.from_dir(dirs[1], rating_model=dirs[1])
    with pytest.raises(ConfigError, match="predicts no ratings; pair the ranking model"):
        Recommender.from_dir(dirs[0], rating_model=dirs[0])
    lists = Recommender.from_dir(dirs[0])
    other = replace(
        train,
        items=type(train.items)(np.arange(10**6, 10**6 + train.n_items)),
    )
    stars = Recommender.from_dir(dirs[1])
    strangers = Recommender(stars.model, other)
    with pytest.raises(ConfigError, match="knows none of the ranking model's"):
        Recommender(lists.model, lists.ratings, rating_model=strangers)


def test_the_cli_shows_both_and_refuses_a_bad_pair(dirs):
    result = invoke("recommend", dirs[0], "--user", 1, "-k", 3, "--rating-model", dirs[1], "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(listed) == 3 and all(0.0 < r["predicted"] < 5.5 for r in listed)
    assert "predicted" in result.stdout.split("[", 1)[0]  # the table's column
    line = one_error_line(invoke("recommend", dirs[1], "--user", 1, "--rating-model", dirs[1]))
    assert "predicts ratings itself" in line
    line = one_error_line(invoke("serve", dirs[0], "--rating-model", dirs[0], "--port", 1))
    assert "pair the ranking model with a rating model" in line


def test_the_service_serves_the_pair(pair):
    client = TestClient(create_app(pair))
    health = client.get("/health").json()
    assert health["model"] == "ease" and health["rating_model"] == "dot"
    assert health["predicts_ratings"] is False
    assert health["rating_range"] == list(pair.rating_range)
    listed = client.get("/users/1/recommendations?k=4").json()
    assert [r["predicted"] for r in listed] == pytest.approx(
        [r.predicted for r in pair.recommend(1, k=4)], abs=1e-4
    )
    body = {"ratings": [{"item_id": 318, "rating": 5}, {"item_id": 296, "rating": 4}], "k": 3}
    folded = client.post("/recommendations", json=body).json()
    assert len(folded) == 3 and all(r["predicted"] is not None for r in folded)
    body["ratings"][0]["rating"] = 7
    refused = client.post("/recommendations", json=body)
    low, high = pair.rating_range  # the rating model's stars (regression, review: the rule
    assert refused.status_code == 422  # named only an interaction's weight)
    assert f"rating must be above 0, between {low:g} and {high:g}, and at most" in refused.text


def test_a_model_trained_on_liked_ratings_folds_in_only_liked_ones(train, tmp_path):
    liked = train.positives(4)
    net, _ = fit(liked, "ease", progress=False)
    rec = Recommender.from_dir(save(net, tmp_path / "liked", liked))
    assert rec.ratings.positive_min == 4.0
    assert rec.rating_range == train.rating_range  # the stars, not the weights
    mixed = rec.fold_in({318: 5.0, 296: 4.5, 1: 2.0})
    only_liked = rec.fold_in({318: 5.0, 296: 4.5})
    listed = rec.recommend(mixed, k=10)
    assert 1 not in {r.item_id for r in listed}  # rated, so left out, but not liked:
    expected = [r for r in rec.recommend(only_liked, k=11) if r.item_id != 1][:10]
    assert [(r.item_id, r.score) for r in listed] == [(r.item_id, r.score) for r in expected]
    with pytest.raises(ConfigError, match=r"none of these 1 ratings is at or above 4"):
        rec.fold_in({1: 2.0})
    with pytest.raises(ConfigError, match="outside the model's range"):
        rec.fold_in({318: 9.0})


def test_the_service_takes_what_fold_in_takes_from_a_model_of_interactions(train, tmp_path):
    # regression (review): the service checked weights against the training weights' range
    # (1..1), so a weight the CLI and fold_in take (4.5) was a 422
    plays = replace(train, rating=np.ones(len(train), dtype=np.float32), implicit=True)
    net, _ = fit(plays, "ease", progress=False)
    rec = Recommender(net, plays)
    client = TestClient(create_app(rec))
    assert client.get("/health").json()["rating_range"] == [1.0, 1.0]
    body = {"ratings": [{"item_id": 318, "rating": 4.5}, {"item_id": 296, "rating": 1}], "k": 3}
    folded = client.post("/recommendations", json=body)
    assert folded.status_code == 200, folded.text
    expected = rec.recommend(rec.fold_in({318: 4.5, 296: 1.0}), k=3)
    assert [r["item_id"] for r in folded.json()] == [r.item_id for r in expected]
    body["ratings"][0]["rating"] = 0
    refused = client.post("/recommendations", json=body)
    assert refused.status_code == 422
    assert "rating must be above 0 and at most 1e+06 (an interaction's weight)" in refused.text


def test_a_rating_model_may_be_given_by_its_directory(pair, dirs):
    # regression (review): a path (as from_dir takes) was an AttributeError
    saved = Recommender.from_dir(dirs[0])
    by_path = Recommender(saved.model, saved.ratings, rating_model=dirs[1])
    assert by_path.recommend(1, k=3) == pair.recommend(1, k=3)


def test_lists_leave_out_what_a_user_rated_below_the_liked_minimum(train, tmp_path):
    # regression (review): a model trained on liked ratings listed items its users had rated
    # 0.5 (they were no training interaction); also_rated keeps them out of the lists only
    liked = train.positives(4)
    net, _ = fit(liked, "ease", progress=False)
    plain = Recommender(net, liked)
    rec = Recommender(net, liked, also_rated=train)
    low = train.take(np.flatnonzero(train.rating < 4))
    users = [u for u in np.unique(liked.user_index)[:40].tolist()]
    listed = {u: {r.item_id for r in plain.recommend(train.users.ids[u], k=30)} for u in users}
    rated_low = {u: set(low.item_ids[low.user_index == u].tolist()) for u in users}
    assert any(listed[u] & rated_low[u] for u in users)  # the failure this guards against
    for u in users:
        kept = rec.recommend(train.users.ids[u], k=30)
        assert not {r.item_id for r in kept} & rated_low[u]
        # the scores are the model's alone: the same order among what is left
        expected = [
            r for r in plain.recommend(train.users.ids[u], k=200) if r.item_id not in rated_low[u]
        ]
        assert [r.item_id for r in kept] == [r.item_id for r in expected[:30]]
    batch = rec.recommend_batch([train.users.ids[u] for u in users], k=30)
    assert batch == [rec.recommend(train.users.ids[u], k=30) for u in users]
    loaded = Recommender.from_dir(save(net, tmp_path / "liked", liked, also_rated=train))
    assert loaded.recommend_batch([train.users.ids[u] for u in users], k=30) == batch
    with pytest.raises(ConfigError, match="also_rated is Ratings"):
        Recommender(net, liked, also_rated=[1, 2])


def test_train_with_positive_min_saves_what_the_lists_leave_out(tmp_path):
    out = tmp_path / "liked"
    args = ["train", "--model", "ease", "--positive-min", "4", "--split", "user", "--json"]
    result = invoke(*args, "--out", out)
    assert result.exit_code == 0, result.output
    rec = Recommender.from_dir(out)
    below = rec.also_rated
    assert below is not None and len(below) and float(below.rating.max()) == 1.0
    every = load_ratings("movielens-small")
    assert len(below) < int((every.rating < 4).sum())  # the held-out part's are not kept
    plain = Recommender(rec.model, rec.ratings)
    hits = {"kept out": 0, "without": 0}
    for u in np.unique(below.user_index)[:30].tolist():
        low = set(below.item_ids[below.user_index == u].tolist())
        for name, lists in (("kept out", rec), ("without", plain)):
            hits[name] += len({r.item_id for r in lists.recommend(rec.users.ids[u], k=30)} & low)
    assert hits["kept out"] == 0 < hits["without"]


def test_also_rated_rows_of_unknown_ids_are_left_aside(train, tmp_path):
    # regression (review): a test part's -1 (an item only it has) masked item n-1 of the user
    # before, and save wrote a file load refused
    liked = train.positives(4)
    net, _ = fit(liked, "ease", progress=False)
    cold = replace(train, item_index=np.where(np.arange(len(train)) % 3 == 0, -1, train.item_index))
    rec = Recommender(net, liked, also_rated=cold)
    assert len(rec.also_rated) == int((cold.item_index >= 0).sum())
    loaded = Recommender.from_dir(save(net, tmp_path / "m", liked, also_rated=cold))
    assert len(loaded.also_rated) == len(rec.also_rated)
    user = train.users.ids[0]
    assert loaded.recommend(user, k=5) == rec.recommend(user, k=5)
