"""The ease model: its closed form, its fold-in, its memory check, and interactions end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from latentrec import (
    ConfigError,
    DataError,
    Recommender,
    evaluate_ranking,
    fit,
    load,
    load_ratings,
)
from latentrec.data import IdMap, Ratings, item_features
from latentrec.kernels import gram
from latentrec.models import Ease
from tests.test_contract import invoke, one_error_line


def interactions(n_users: int = 40, n_items: int = 15, seed: int = 0) -> Ratings:
    """Random interactions, with some pairs repeated (they count once)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, 300)
    items = rng.integers(0, n_items, 300)
    users[:n_users], items[:n_items] = np.arange(n_users), np.arange(n_items)  # nobody empty
    return Ratings(
        users,
        items,
        np.ones(len(users), dtype=np.float32),
        IdMap(np.arange(n_users, dtype=np.int64) + 1),
        IdMap(np.arange(n_items, dtype=np.int64) + 1000),
        source="random interactions",
        implicit=True,
    )


def test_gram_is_the_product_of_the_interaction_matrix_with_itself():
    data = interactions()
    weights = np.random.default_rng(1).random(len(data)).astype(np.float32) + 0.5
    dense = np.zeros((data.n_users, data.n_items))
    np.add.at(dense, (data.user_index, data.item_index), weights)
    summed = gram(data.user_index, data.item_index, weights, data.n_users, data.n_items)
    assert np.allclose(summed, dense.T @ dense, rtol=1e-5)
    binary = (dense > 0).astype(np.float64)
    ones = gram(data.user_index, data.item_index, weights, data.n_users, data.n_items, True)
    assert np.array_equal(ones, binary.T @ binary)


# many users: the items' side is factorised; few: the users' side (the same P)
@pytest.mark.parametrize("shape", [(40, 15), (6, 30)], ids=["by-items", "by-users"])
@pytest.mark.parametrize("l2", [0.5, 200.0])
def test_ease_weights_are_the_closed_form(l2, shape):
    data = interactions(*shape)
    net, history = fit(data, "ease", l2=l2, progress=False)
    x = np.zeros((data.n_users, data.n_items))
    x[data.user_index, data.item_index] = 1.0
    inverse = np.linalg.inv(x.T @ x + l2 * np.eye(data.n_items))  # float64 reference
    expected = np.eye(data.n_items) - inverse / np.diag(inverse)
    assert np.allclose(net.weights.numpy(), expected, atol=1e-5)
    assert np.all(np.diag(net.weights.numpy()) == 0)  # never an item from itself
    assert history.engine == "solve" and history.rmse is None


@pytest.mark.parametrize("shape", [(40, 15), (6, 30)], ids=["by-items", "by-users"])
def test_the_items_features_join_the_closed_form_as_rows_beside_the_users(shape):
    data = interactions(*shape)
    genres = ("Drama", "Comedy", "Crime")
    named = {
        item: tuple(g for k, g in enumerate(genres) if (item >> k) & 1)
        for item in data.items.ids.tolist()
    }
    titled = replace(data, genres=named, titles={1000: "One (1995)", 1003: "Two (2001)"})
    net, _ = fit(titled, "ease", l2=3.0, feature_weight=2.0, progress=False)
    x = np.zeros((data.n_users, data.n_items))
    x[data.user_index, data.item_index] = 1.0
    indptr, columns, names = item_features(titled)
    assert "released:1990-1999" in names and "genre:Crime" in names
    f = np.zeros((len(names), data.n_items))
    f[columns, np.repeat(np.arange(data.n_items), np.diff(indptr))] = 2.0
    inverse = np.linalg.inv(x.T @ x + f.T @ f + 3.0 * np.eye(data.n_items))
    expected = np.eye(data.n_items) - inverse / np.diag(inverse)
    assert np.allclose(net.weights.numpy(), expected, atol=1e-5)
    # a weight of 0, or data without features, give plain EASE
    plain, _ = fit(data, "ease", l2=3.0, feature_weight=2.0, progress=False)
    off, _ = fit(titled, "ease", l2=3.0, feature_weight=0.0, progress=False)
    assert torch.equal(plain.weights, off.weights)
    assert not np.allclose(plain.weights.numpy(), expected, atol=1e-3)


def _sessions_reference(data: Ratings, gap: float, run: int = 0) -> np.ndarray:
    """Sessions x items (binary), built the slow way: each user's interactions in time order,
    a new session after a pause longer than `gap` seconds; then, with `run`, the runs of `run`
    consecutive interactions cut from each session longer than that."""
    sessions = []
    for user in range(data.n_users):
        mine = np.flatnonzero(data.user_index == user)
        mine = mine[np.argsort(data.timestamp[mine], kind="stable")]
        last = None
        for k in mine:
            if last is None or data.timestamp[k] - last > gap:
                sessions.append([])
            sessions[-1].append(data.item_index[k])
            last = data.timestamp[k]
    cut = [s[a : a + run] for s in sessions if run and len(s) > run for a in range(0, len(s), run)]
    rows = np.zeros((len(sessions) + len(cut), data.n_items))
    for row, items in zip(rows, sessions + cut, strict=True):
        row[items] = 1.0
    return rows


@pytest.mark.parametrize("run", [0, 4])
@pytest.mark.parametrize(
    ("shape", "by_users"), [((40, 15), False), ((3, 300), True)], ids=["by-items", "by-users"]
)
def test_sessions_join_the_closed_form_as_rows_beside_the_users(shape, by_users, run, monkeypatch):
    """Each user's sitting (interactions with no pause over session_gap hours) is one more
    row of X holding session_weight for its items, and so is each run of session_run
    consecutive interactions cut from a longer sitting; data without timestamps, or a weight
    of 0, give plain EASE. Through the items' side and through the users' (few users and
    sessions, many items)."""
    paths = []
    through_users = Ease._inverse_by_users
    monkeypatch.setattr(
        Ease, "_inverse_by_users", lambda *a, **k: paths.append(1) or through_users(*a, **k)
    )
    data = interactions(*shape)
    # each user's interactions an hour apart, with a day's pause after every third
    stamps = np.zeros(len(data), dtype=np.int64)
    for user in range(data.n_users):
        mine = np.flatnonzero(data.user_index == user)
        stamps[mine] = 3600 * np.arange(len(mine)) + 86400 * (np.arange(len(mine)) // 10)
    timed = replace(data, timestamp=stamps)
    options = {"l2": 3.0, "session_weight": 1.5, "session_gap": 2.0, "progress": False}
    net, _ = fit(timed, "ease", **options, session_run=run)
    assert bool(paths) == by_users
    sessions = _sessions_reference(timed, 2 * 3600, run)
    plain_sessions = _sessions_reference(timed, 2 * 3600)
    assert len(plain_sessions) > data.n_users  # a user's pauses split their interactions
    assert (len(sessions) > len(plain_sessions)) == (run > 0)  # and runs the long sessions
    x = np.zeros((data.n_users, data.n_items))
    x[data.user_index, data.item_index] = 1.0
    x = np.vstack([x, 1.5 * sessions])
    inverse = np.linalg.inv(x.T @ x + 3.0 * np.eye(data.n_items))
    expected = np.eye(data.n_items) - inverse / np.diag(inverse)
    assert np.allclose(net.weights.numpy(), expected, atol=1e-5)
    plain, _ = fit(data, "ease", **options)
    off, _ = fit(timed, "ease", **(options | {"session_weight": 0.0}))
    assert torch.equal(plain.weights, off.weights)
    assert not np.allclose(plain.weights.numpy(), expected, atol=1e-3)


def test_a_model_saved_before_the_features_and_sessions_reads_as_solved_without_them(tmp_path):
    from latentrec import save

    data = interactions()
    net, _ = fit(data, "ease", progress=False)
    folder = save(net, tmp_path / "m", data)
    config = json.loads((folder / "config.json").read_text())
    for name in ("feature_weight", "session_weight", "session_gap", "session_run"):
        del config["model"][name]
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load(folder).model
    assert (loaded.config.feature_weight, loaded.config.session_weight) == (0.0, 0.0)
    assert loaded.config.session_run == 0
    assert "sessions" not in loaded.config.shape() and "features" not in loaded.config.shape()
    assert torch.equal(loaded.weights, net.weights)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--session-weight", "-1", "session_weight must be a number >= 0, got -1.0"),
        ("--session-gap", "0", "session_gap must be a number > 0, got 0.0"),
        ("--session-run", "-1", "session_run must be a whole number >= 0, got -1"),
    ],
)
def test_a_bad_session_option_is_one_line(tmp_path: Path, option, value, message):
    result = invoke("train", "--model", "ease", option, value, "--out", tmp_path / "m")
    assert message in one_error_line(result)


def test_ease_scores_are_the_interaction_row_times_b_and_fold_in_is_exact():
    data = interactions()
    net, _ = fit(data, "ease", progress=False)
    rec = Recommender(net, data)
    x = np.zeros((data.n_users, data.n_items), dtype=np.float32)
    x[data.user_index, data.item_index] = 1.0
    for user in (1, 7, 40):
        row = x[user - 1] @ net.weights.numpy()
        listed = rec.recommend(user, k=data.n_items, exclude_seen=False)
        scores = {r.item_id: r.score for r in listed}
        assert np.allclose([scores[i] for i in data.items.ids.tolist()], row, atol=1e-6)
        own = {int(data.items.ids[i]): 1.0 for i in data.item_index[data.user_index == user - 1]}
        folded = rec.recommend(rec.fold_in(own), k=data.n_items, exclude_seen=False)
        assert folded == listed  # ids and scores, exactly


def test_a_catalogue_beyond_the_memory_budget_is_refused_before_anything_is_built():
    wide = load_ratings("synthetic:ratings=200000,users=2000,items=60000,seed=1")
    refusal = r"needs [0-9.]+ GiB to solve \([0-9,]+ items\), but the memory budget gives only 1.0"
    with pytest.raises(ConfigError, match=refusal):
        fit(wide, "ease", memory_budget="1GiB", progress=False)
    result = invoke(
        "train",
        "--data",
        "synthetic:ratings=200000,users=2000,items=60000,seed=1",
        "--model",
        "ease",
        "--memory-budget",
        "1GiB",
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "GiB to solve" in result.stderr.strip().splitlines()[-1]
    assert "measuring" not in result.stderr  # no steps to measure


def test_what_a_ranking_model_cannot_do_is_one_line(tmp_path: Path):
    data = interactions()
    net, _ = fit(data, "ease", progress=False)
    with pytest.raises(ConfigError, match="predicts no ratings"):
        Recommender(net, data).predict(1, [1000])
    with pytest.raises(ConfigError, match="solved, not trained by steps"):
        fit(data, "ease", engine="fused", progress=False)
    with pytest.raises(ConfigError, match="no checkpoints"):
        fit(data, "ease", checkpoint_every=5, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="predicts ratings, and random interactions holds"):
        fit(data, "dot", progress=False)


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> Path:
    """A user,item log with no ratings: each line one click, some pairs clicked again."""
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("clicks") / "clicks.csv"
    lines = ["user,item"]
    for user in range(60):
        liked = range(user % 2, 30, 2)  # even users click even items, odd users odd ones
        lines += [f"u{user},i{item}" for item in rng.choice(list(liked), 10)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def clicks_model(clicks: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clicks-model") / "model"
    result = invoke("train", "--data", clicks, "--model", "ease", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_interactions_train_ease_from_the_command_line(clicks: Path, tmp_path: Path):
    out = tmp_path / "model"
    result = invoke(
        "train", "--data", clicks, "--model", "ease", "--split", "user", "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["model"] == "ease" and summary["ranking"]["ndcg@10"] > 0.3
    assert load(out).ratings.implicit  # the model directory says what it was trained on
    shown = invoke("recommend", out, "--user", "u4", "-k", "3", "--json")
    assert shown.exit_code == 0, shown.output
    listed = json.loads(shown.stdout.strip().splitlines()[-1])
    assert all(int(r["item_id"][1:]) % 2 == 0 for r in listed)  # what even users click
    assert "score" in shown.stdout and "predicted" not in shown.stdout
    assert "predicts ratings" in one_error_line(invoke("train", "--data", clicks, "--epochs", 1))


def test_positive_min_turns_ratings_into_interactions(tmp_path: Path):
    assert "--positive-min 6" in one_error_line(
        invoke("train", "--model", "ease", "--positive-min", "6")
    )
    result = invoke("train", "--model", "ease", "--positive-min", "4", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    positives = int((load_ratings("movielens-small").rating >= 4).sum())
    assert summary["n_train"] + summary["n_test"] == positives


def test_the_weights_go_to_the_training_device_dtype():
    data = interactions()
    net, _ = fit(data, "ease", dtype="float64", progress=False)
    assert net.weights.dtype == torch.float64


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "--model", "als", "--epochs", "3"], "--epochs train by steps"),
        (["train", "--model", "ease", "--lr", "0.1"], "the ease model is solved"),
        (["train", "--model", "ease", "--implicit", "--positive-min", "4"], "--positive-min"),
        (["memory", "--model", "ease", "--plot", "x.png"], "--plot draws training steps"),
        (["evaluate", "MODEL", "--implicit", "--metrics", "rmse"], "rmse and mae need ratings"),
        (["recommend", "MODEL", "--new-user", "1:-1,2:3"], "each weighing more than 0"),
    ],
)
def test_what_a_solved_or_ranking_model_cannot_take_is_one_line(args, needle, clicks_model):
    """Regression (review): step options, negative fold-in weights and rmse on interactions
    were ignored or answered with nonsense for ranking models."""
    args = [str(clicks_model) if a == "MODEL" else a for a in args]
    assert needle in one_error_line(invoke(*args))


def test_als_refuses_weights_that_make_no_confidence():
    data = interactions()
    negative = Ratings(
        data.user_index,
        data.item_index,
        np.where(np.arange(len(data)) % 2, 1.0, -2.5).astype(np.float32),
        data.users,
        data.items,
        source="signed ratings",
    )
    with pytest.raises(DataError, match=r"data hold -[0-9.]+; give interactions"):
        fit(negative, "als", progress=False)


def test_als_fold_in_refuses_weights_past_what_its_solve_holds():
    """Regression (review): a new user's weight of 1e308 made every score inf (1e20: scores in
    the thousands, the solve's digits lost); a million times the heaviest training weight is
    the most taken, with finite scores."""
    data = interactions()
    rec = Recommender(fit(data, "als", progress=False)[0], data)
    assert rec.heaviest_weight == 1e6
    for weight in (1e308, 1.01e6):
        with pytest.raises(ConfigError, match=r"each weighing more than 0 and at most 1e\+06"):
            rec.fold_in({1000: weight})
    scores = [r.score for r in rec.recommend(rec.fold_in({1000: 1e6, 1001: 1.0}), k=10)]
    assert np.isfinite(scores).all() and max(scores) < 10


def _liked_board(tmp_path: Path) -> Path:
    """30 users x 40 items, each rated 5 or 1 in a checkerboard, as a MovieLens-style CSV."""
    board = tmp_path / "board.csv"
    rows = [f"{u},{i},{5 if (u + i) % 2 == 0 else 1}" for u in range(30) for i in range(40)]
    board.write_text("userId,movieId,rating\n" + "\n".join(rows) + "\n")
    return board


def test_relevant_min_counts_only_the_liked_test_ratings(tmp_path: Path):
    board = _liked_board(tmp_path)
    train, test = load_ratings(str(board)).split(0.2, seed=42, by="user")
    rec = Recommender(fit(train, "ease", progress=False)[0], train)
    liked = test.take(np.flatnonzero(test.rating >= 4))
    assert evaluate_ranking(rec, test, 10, relevant_min=4) == evaluate_ranking(rec, liked, 10)
    assert evaluate_ranking(rec, test, 10, relevant_min=4) != evaluate_ranking(rec, test, 10)
    result = invoke(
        "train",
        "--data",
        board,
        "--model",
        "ease",
        "--split",
        "user",
        "--test-fraction",
        "0.2",
        "--relevant-min",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    expected = evaluate_ranking(rec, test, 10, relevant_min=4)["ndcg@10"]
    assert summary["ranking"]["ndcg@10"] == pytest.approx(expected, rel=1e-6)


def test_relevant_min_over_interactions_made_from_ratings(tmp_path: Path):
    # regression (review): with --positive-min the test rows weigh 1, and --relevant-min 4
    # matched none of them: "n/a" with exit 0
    board = _liked_board(tmp_path)
    train, test = load_ratings(str(board)).positives(4).split(0.2, seed=42, by="user")
    rec = Recommender(fit(train, "ease", progress=False)[0], train)
    every = evaluate_ranking(rec, test, 10)
    assert evaluate_ranking(rec, test, 10, relevant_min=4) == every  # each was rated 4 or more
    with pytest.raises(ConfigError, match=r"relevant_min 4\.5 is above positive_min 4"):
        evaluate_ranking(rec, test, 10, relevant_min=4.5)
    with pytest.raises(ConfigError, match="relevant_min must be a finite number"):
        evaluate_ranking(rec, test, 10, relevant_min=float("nan"))
    common = ("train", "--data", board, "--model", "ease", "--split", "user", "--positive-min")
    result = invoke(*common, "4", "--test-fraction", "0.2", "--relevant-min", "4", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ranking"]["ndcg@10"] == pytest.approx(every["ndcg@10"], rel=1e-6)
    refused = invoke(*common, "4", "--relevant-min", "4.5", "--out", tmp_path / "m")
    assert "--relevant-min 4.5 is above --positive-min 4" in one_error_line(refused)
    assert not (tmp_path / "m").exists()
    assert "finite number, got nan" in one_error_line(invoke(*common[:-1], "--relevant-min", "nan"))


def test_a_test_pair_also_in_training_is_not_relevant(tmp_path: Path):
    # regression (review): pairs rated again landed in both parts of a row split; such an item
    # is never recommended (the user has it), yet counted as relevant: NDCG fell 0.38 -> 0.05
    board = _liked_board(tmp_path)
    train, test = load_ratings(str(board)).split(0.2, seed=42, by="user")
    rec = Recommender(fit(train, "ease", progress=False)[0], train)
    again = train.take(np.flatnonzero(train.user_index % 3 == 0))  # some users' training pairs
    mixed = test.take(np.arange(len(test)))
    mixed = replace(
        mixed,
        user_index=np.r_[test.user_index, again.user_index],
        item_index=np.r_[test.item_index, again.item_index],
        rating=np.r_[test.rating, again.rating],
        timestamp=None,
    )
    assert evaluate_ranking(rec, mixed, 10) == evaluate_ranking(rec, test, 10)
    with pytest.raises(DataError, match="every relevant test item is among its user's training"):
        evaluate_ranking(rec, again, 10)
    with pytest.raises(DataError, match=r"at or above relevant_min 6 \(they range from 1 to 5\)"):
        evaluate_ranking(rec, test, 10, relevant_min=6)
    result = invoke(
        "train", "--data", board, "--model", "ease", "--split", "user", "--relevant-min", "6",
        "--out", tmp_path / "m", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no ranking metrics: no test rating" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["ranking"] is None
    assert (tmp_path / "m" / "config.json").exists()


def test_a_negative_feature_weight_is_one_line(tmp_path: Path):
    result = invoke("train", "--model", "ease", "--feature-weight", "-1", "--out", tmp_path / "m")
    assert "feature_weight must be a number >= 0, got -1.0" in one_error_line(result)
    assert result.exit_code == 2 and not (tmp_path / "m").exists()


def test_positive_min_with_a_few_ratings_below_it(tmp_path: Path):
    # regression (review): the ratings below the minimum were split on their own, and one of
    # them ("an empty test set") stopped train though the liked ones split fine
    data = tmp_path / "liked.csv"
    rows = [f"{u},{i},5" for u in range(30) for i in range(10) if (u, i) != (0, 9)] + ["0,9,1"]
    data.write_text("userId,movieId,rating\n" + "\n".join(rows) + "\n")
    for split in ("random", "user"):
        out = tmp_path / split
        result = invoke(
            "train", "--data", data, "--model", "ease", "--positive-min", "4", "--split", split,
            "--out", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        kept = load(out).also_rated  # the one low rating, where the split left it in training
        assert kept is None or kept.item_ids.tolist() == [9]
