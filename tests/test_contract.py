"""The contract every registered model keeps, checked the same way for each of them.

Parametrised over `MODELS` as collected, so a newly registered model is checked without
touching this file, and over `ToyModel` below: the smallest honest model, one config class
and one model class registered only while this module runs, to show that adding a model
takes no more than that.

Known answers come from the checkerboard (tests/conftest.py): even users (raw ids 100, 102,
...) rate even items (raw ids 500, 502, ...) 5 and odd items 1; odd users the opposite.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import Tensor, nn
from typer.testing import CliRunner

from latentrec import (
    ConfigError,
    Recommender,
    TrainConfig,
    UnknownIdError,
    evaluate,
    evaluate_ranking,
    fit,
)
from latentrec import recommend as recommend_module
from latentrec.cli import app
from latentrec.data import Ratings
from latentrec.memory import StepConfig, measure_step, sample_rows
from latentrec.metrics import RANKING_METRICS
from latentrec.models import MODELS, LatentModel, ModelConfig
from latentrec.models.base import embedding, sigmoid_range, whole
from latentrec.recommend import popular_batch
from latentrec.serving import create_app
from latentrec.storage import load, save

# ----------------------------------------------------------------------------- the toy model


@dataclass(frozen=True)
class ToyConfig(ModelConfig):
    """The toy model's config: the width of its taste vectors."""

    kind: ClassVar[str] = "toy"
    rank: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "rank", whole("rank", self.rank))

    def parameter_count(self) -> int:
        return (self.n_users + self.n_items) * (self.rank + 1)

    def step_width(self) -> int:
        return 2 * (self.rank + 1)

    def shape(self) -> str:
        return f"rank {self.rank}"


class ToyModel(LatentModel):
    """A user's taste dotted with an item's traits, plus the user's leniency and the item's
    appeal, squashed to y_range. Declares no extras; folds in by the base class's gradient
    steps."""

    Config = ToyConfig
    extras = frozenset()
    user_tables = ("taste", "leniency")
    item_tables = ("traits", "appeal")

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__(n_users, n_items, **options)
        self.taste = embedding(n_users, self.config.rank)
        self.traits = embedding(n_items, self.config.rank)
        self.leniency = embedding(n_users, 1)
        self.appeal = embedding(n_items, 1)
        for table in (self.taste, self.traits):
            nn.init.normal_(table.weight, std=0.1)
        for table in (self.leniency, self.appeal):
            nn.init.zeros_(table.weight)

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        (taste, leniency), (traits, appeal) = user_rows, item_rows
        x = (taste * traits).sum(1) + leniency[:, 0] + appeal[:, 0]
        return sigmoid_range(x, *self.y_range)

    def item_vectors(self) -> Tensor:
        return self.traits.weight


# ----------------------------------------------------------------------------- fixtures

NAMES = [*sorted(MODELS), "toy"]  # the registry as collected, and the toy model
EXTRAS = ("biases", "map")
# fields filled from the training ratings (bayes: also the unit its sampler divides them by);
# every other field is architecture with a default
DATA_FIELDS = {"n_users", "n_items", "global_mean", "rating_range", "y_range", "unit"}
# training options every model takes (TrainConfig's); the models' own defaults otherwise
BOARD_TRAINING = {"epochs": 30, "batch_size": 64, "lr": 0.01, "wd": 0.01, "progress": False}
UNKNOWN = 99_999  # neither a user nor an item id of the checkerboard
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """The toy model in the registry while this module runs, and only then."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS, "toy", ToyModel)
        yield


@dataclass
class Trained:
    name: str
    net: LatentModel
    train: Ratings
    test: Ratings
    recommender: Recommender
    model_dir: Path


def ranks_only(name: str) -> bool:
    return not MODELS[name].predicts_ratings


@pytest.fixture(scope="module", params=NAMES)
def trained(request, toy_registered, board, tmp_path_factory) -> Trained:
    """Each model trained once on the checkerboard, and saved. A ranking model learns from
    what users liked (ratings of 4 and more, as interactions), as one would train it."""
    train, test = board
    if ranks_only(request.param):
        train, test = train.positives(4), test.positives(4)
    solved = "solve" in MODELS[request.param].engines  # a solved model refuses step options
    options = {"progress": False} if solved else BOARD_TRAINING
    net, _ = fit((train, test), request.param, **options)
    model_dir = save(net, tmp_path_factory.mktemp(request.param) / "model", train)
    return Trained(request.param, net, train, test, Recommender(net, train), model_dir)


@pytest.fixture(scope="module")
def board_csv(board, tmp_path_factory) -> Path:
    """The whole checkerboard as a ratings file, for the command line."""
    path = tmp_path_factory.mktemp("board") / "ratings.csv"
    lines = ["userId,movieId,rating"]
    for part in board:
        users, items = part.users.ids[part.user_index], part.items.ids[part.item_index]
        lines += [f"{u},{i},{r:g}" for u, i, r in zip(users, items, part.rating, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def liked(user_id: Any, item_id: Any) -> bool:
    """Whether the checkerboard's user rates the item 5 (same parity of raw id)."""
    return (int(user_id) + int(item_id)) % 2 == 0


def ratings_of(train: Ratings, user_id: Any) -> dict[Any, float]:
    """A training user's own training ratings, as fold_in takes them."""
    rows = train.user_index == train.users.index_of(user_id)
    items = train.items.ids[train.item_index[rows]].tolist()
    return dict(zip(items, train.rating[rows].astype(float).tolist(), strict=True))


def stars_of(train: Ratings, user_id: Any) -> dict[Any, float]:
    """A training user's own ratings as a new user gives them: for a model trained on the
    liked ratings (`positives`), each as a rating at the minimum it kept."""
    own = ratings_of(train, user_id)
    return own if train.positive_min is None else dict.fromkeys(own, train.positive_min)


def invoke(*args: Any):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The stderr of a command that failed as a user error: one line starting `error:`."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- the contract


def scores_of(rec: Recommender, user: Any) -> np.ndarray:
    """The model's score of every item for a user (id or NewUser), in item id order: its
    predicted rating, or a ranking model's score."""
    listed = rec.recommend(user, k=len(rec.items), exclude_seen=False)
    by_item = {r.item_id: r.score for r in listed}
    return np.array([by_item[i] for i in rec.items.ids.tolist()])


def test_learns_the_checkerboard(trained):
    if trained.net.predicts_ratings:
        scores = evaluate(trained.net, trained.test)
        # predicting 3 (or any one number) for these 1s and 5s gives an RMSE of 2
        assert scores["rmse"] < 0.8, scores
    else:
        with pytest.raises(ConfigError, match="predicts no ratings"):
            evaluate(trained.net, trained.test)
    for user in trained.recommender.users.ids.tolist():
        top = trained.recommender.recommend(user, k=1)[0]
        assert liked(user, top.item_id), (user, top)


def test_saves_and_loads_to_identical_predictions(trained):
    saved = load(trained.model_dir)
    assert type(saved.model) is MODELS[trained.name]
    assert saved.model.config == trained.net.config
    for name, tensor in trained.net.state_dict().items():
        assert torch.equal(saved.model.state_dict()[name], tensor), name
    again = Recommender(saved.model, saved.ratings)
    for user in trained.recommender.users.ids.tolist():
        assert np.array_equal(scores_of(again, user), scores_of(trained.recommender, user))
    assert again.recommend(100, k=5) == trained.recommender.recommend(100, k=5)


def test_recommends_unseen_items_from_the_candidates(trained):
    rec = trained.recommender
    test = trained.test
    for user in rec.users.ids.tolist():
        # each user left 6 items unrated (3 liked): a rating model gets exactly those back
        # from 6, a ranking model (trained on the liked ones) the 3 liked held-out ones from 3
        held = test.items.ids[test.item_index[test.user_index == rec.users.index_of(user)]]
        assert {r.item_id for r in rec.recommend(user, k=len(held))} == set(held.tolist())
    unseen = len(rec.items) - len(rec.seen(100))
    with pytest.raises(ConfigError, match=f"k={unseen + 1}"):
        rec.recommend(100, k=unseen + 1)
    everything = rec.recommend(100, k=len(rec.items), exclude_seen=False)
    assert {r.item_id for r in everything} == set(rec.items.ids.tolist())
    seen = [int(i) for i in rec.items.ids[rec.seen(100)][:3]]
    unseen = sorted(set(rec.items.ids.tolist()) - set(rec.items.ids[rec.seen(100)].tolist()))
    candidates = seen + unseen[:3]
    chosen = rec.recommend(100, k=3, candidates=candidates)
    assert {r.item_id for r in chosen} == set(unseen[:3])
    ranked = rec.recommend(100, k=6, candidates=candidates, exclude_seen=False)
    scored = dict(zip(rec.items.ids.tolist(), scores_of(rec, 100), strict=True))
    assert sorted(r.item_id for r in ranked) == sorted(candidates)
    assert [r.score for r in ranked] == sorted((scored[i] for i in candidates), reverse=True)
    assert [r.score for r in ranked] == pytest.approx([scored[r.item_id] for r in ranked])
    if trained.net.predicts_ratings:
        predicted = dict(zip(candidates, rec.predict(100, candidates), strict=True))
        assert [r.score for r in ranked] == pytest.approx([predicted[r.item_id] for r in ranked])


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_batch_recommendations_equal_single_ones(trained, exclude_seen):
    rec = trained.recommender
    users = rec.users.ids.tolist()
    batch = rec.recommend_batch(users, k=5, exclude_seen=exclude_seen)
    assert len(batch) == len(users)
    for user, listed in zip(users, batch, strict=True):
        single = rec.recommend(user, k=5, exclude_seen=exclude_seen)
        assert [r.score for r in listed] == pytest.approx(
            [r.score for r in single], rel=1e-5, abs=1e-6
        )
        # the same items, in the same order but for ties (one product for a chunk of users
        # and one for a user alone may round the last bit apart)
        scored = {r.item_id: r.score for r in single}
        for mine, theirs in zip(listed, single, strict=True):
            if mine.item_id != theirs.item_id:
                assert mine.score == pytest.approx(theirs.score, rel=1e-5, abs=1e-6)
                assert scored.get(mine.item_id, mine.score) == pytest.approx(mine.score, abs=1e-6)


@pytest.mark.parametrize("method", ["model", "tied", "popular"])
def test_ranking_evaluation_scores_the_lists_a_user_gets(trained, method, monkeypatch):
    """evaluate_ranking (every user at once, no ids) against each test user's own list from
    `recommend` (or the most-popular items they have not rated) and the per-user metrics; a
    list as long as the items a user has left where that is fewer than k (ties among the
    scores fall as in `recommend`), and the same figures when the users are scored a few at
    a time."""
    rec, test, k = trained.recommender, trained.test, 9  # a rating model's users have 6 left
    if method == "tied":  # every item scores the same
        rank = rec.model.rank
        monkeypatch.setattr(rec.model, "rank", lambda users, items: rank(users, items) * 0)
    by_user: dict[int, set[int]] = {}
    for u, i in zip(test.user_index.tolist(), test.item_index.tolist(), strict=True):
        if u >= 0 and i >= 0 and i not in set(rec.seen(rec.users.ids[u]).tolist()):
            by_user.setdefault(u, set()).add(i)
    users = sorted(by_user)
    counts = np.bincount(rec.ratings.item_index, minlength=len(rec.items))
    popular = np.argsort(-counts, kind="stable")
    lists = []
    for u in users:
        seen = set(rec.seen(rec.users.ids[u]).tolist())
        room = min(k, len(rec.items) - len(seen))
        if method == "popular":
            lists.append([int(i) for i in popular if int(i) not in seen][:room])
        else:
            listed = rec.recommend(rec.users.ids[u], k=room)
            lists.append([rec.items.index_of(r.item_id) for r in listed])
    kind = "popular" if method == "popular" else "model"
    result = evaluate_ranking(rec, test, k, kind)
    for name, metric in RANKING_METRICS.items():
        expected = np.mean(
            [metric(items, by_user[u], k) for items, u in zip(lists, users, strict=True)]
        )
        assert result[f"{name}@{k}"] == pytest.approx(expected, abs=1e-12), name
    assert result["users"] == len(users)
    monkeypatch.setattr(recommend_module, "CHUNK_SCORES", 3 * len(rec.items))  # 3 users a go
    calls: list[tuple[int, int]] = []
    again = evaluate_ranking(rec, test, k, kind, on_progress=lambda *at: calls.append(at))
    assert again == pytest.approx(result, abs=1e-12)
    # the progress: a chunk of 3 users at a time, up to every user scored
    assert calls == [(min(n, len(users)), len(users)) for n in range(3, len(users) + 3, 3)]
    if method == "popular":  # a folded-in user: the popular items their fold-in did not rate
        new = rec.fold_in(stars_of(trained.train, 100))
        expected = [
            [int(i) for i in popular if i not in set(rec.seen(user).tolist())][:k]
            for user in (new, 100)
        ]
        assert popular_batch(rec, [new, 100], k) == expected


def test_folding_in_a_users_own_ratings_gives_that_user_back(trained):
    rec = trained.recommender
    low, high = rec.rating_range
    for user in (100, 101, 110, 123):
        new = rec.fold_in(stars_of(trained.train, user))
        folded, learned = scores_of(rec, new), scores_of(rec, user)
        assert np.corrcoef(folded, learned)[0, 1] > 0.9, user
        # a rating model's error in stars; a ranking model's against its scores' spread
        spread = high - low if trained.net.predicts_ratings else np.ptp(learned)
        assert math.sqrt(np.mean((folded - learned) ** 2)) < 0.1 * spread, user
        assert liked(user, rec.recommend(new, k=1)[0].item_id), user
        assert not set(rec.seen(new).tolist()) & {
            rec.items.index_of(r.item_id) for r in rec.recommend(new, k=6)
        }


def test_similar_items_and_explanations(trained):
    rec = trained.recommender
    for item in rec.items.ids.tolist():
        similar = rec.similar_items(item, k=5)
        assert len(similar) == 5 and item not in {r.item_id for r in similar}
        scores = [r.score for r in similar]
        assert scores == sorted(scores, reverse=True)
        assert (similar[0].item_id - item) % 2 == 0, (item, similar)  # alike: same parity
    for user in rec.users.ids.tolist():
        rated = ratings_of(trained.train, user)
        top = rec.recommend(user, k=1)[0].item_id
        reasons = rec.explain(user, top, n=5)
        assert reasons, user
        assert all(r.item_id in rated and r.rating == rated[r.item_id] for r in reasons)
        assert all(liked(user, r.item_id) for r in reasons)  # praise: items the user loved


def test_declared_extras_answer(trained):
    rec = trained.recommender
    extras = MODELS[trained.name].extras
    assert extras <= set(EXTRAS)
    if "map" in extras:
        points = rec.factor_map(10)
        assert len(points) == 10 and len({p.item_id for p in points}) == 10
        assert all(math.isfinite(p.x) and math.isfinite(p.y) for p in points)
        assert {p.item_id for p in points} <= set(rec.items.ids.tolist())
    if "biases" in extras:
        top, bottom = rec.item_biases(3)
        assert len(top) == len(bottom) == 3
        assert [r.score for r in top] == sorted((r.score for r in top), reverse=True)
        assert top[-1].score >= bottom[0].score


def test_undeclared_extras_raise_naming_the_extra(trained):
    rec = trained.recommender
    calls = {"biases": rec.item_biases, "map": rec.factor_map}
    for extra, call in calls.items():
        declared = extra in MODELS[trained.name].extras
        assert rec.supports(extra) is declared
        if declared:
            rec.require(extra)
            continue
        with pytest.raises(ConfigError, match=f"no '{extra}'"):
            rec.require(extra)
        with pytest.raises(ConfigError, match=f"no '{extra}'"):
            call()


def test_serves_every_endpoint(trained):
    threads = torch.get_num_threads()  # create_app sets one thread per worker process
    try:
        client = TestClient(create_app(trained.recommender))
    finally:
        torch.set_num_threads(threads)
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "model": trained.name,
        "users": 24,
        "items": 24,
        "rating_range": list(trained.recommender.rating_range),
        "predicts_ratings": trained.net.predicts_ratings,
        "rating_model": None,
        "visitors": False,
        "version": None,  # a ready Recommender comes from no directory
        "saved_at": None,
        "rating_model_version": None,
    }

    similar = client.get("/items/500/similar", params={"k": 3})
    assert similar.status_code == 200, similar.text
    assert len(similar.json()) == 3 and 500 not in {r["item_id"] for r in similar.json()}

    recommended = client.get("/users/100/recommendations", params={"k": 3})
    assert recommended.status_code == 200, recommended.text
    seen = set(ratings_of(trained.train, 100))
    for row in recommended.json():
        assert liked(100, row["item_id"]) and row["item_id"] not in seen
    ratings = stars_of(trained.train, 101)
    body = {"ratings": [{"item_id": i, "rating": r} for i, r in ratings.items()], "k": 3}
    folded = client.post("/recommendations", json=body)
    assert folded.status_code == 200, folded.text
    assert len(folded.json()) == 3
    for row in folded.json():
        assert liked(101, row["item_id"]) and row["item_id"] not in ratings
        assert {b["item_id"] for b in row["because"]} <= set(ratings)
    for path in ("/users/99999/recommendations", "/items/99999/similar"):
        assert client.get(path).status_code == 404


def test_parameter_count_is_the_built_models(trained):
    config = trained.net.config
    weights = {k: v for k, v in trained.net.state_dict().items() if k != "global_mean"}
    assert config.parameter_count() == sum(t.numel() for t in weights.values())
    assert config.step_width() >= 0 and config.shape()


def test_reports_the_memory_of_a_training_step(trained):
    config = trained.net.config
    if "solve" in trained.net.engines:  # no steps: the solve's peak, computed before it runs
        assert config.solve_bytes() >= 4 * config.parameter_count()
        return
    assert config.solve_bytes() is None
    use = measure_step(StepConfig(config, 64, 1, "cpu"), sample_rows(trained.train, 64))
    assert use.model == trained.name and use.peak_bytes > 0
    assert use.parameter_bytes == 4 * config.parameter_count()  # float32


def test_unknown_ids_raise_and_predictions_stay_in_range(trained):
    rec = trained.recommender
    calls = [
        lambda: rec.recommend(UNKNOWN),
        lambda: rec.recommend_batch([100, UNKNOWN]),
        lambda: rec.recommend(UNKNOWN, candidates=[500]),
        lambda: rec.similar_items(UNKNOWN),
        lambda: rec.explain(UNKNOWN, 500),
        lambda: rec.explain(100, UNKNOWN),
        lambda: rec.recommend(100, k=1, candidates=[UNKNOWN]),
    ]
    for call in calls:
        with pytest.raises(UnknownIdError, match=str(UNKNOWN)):
            call()
    with pytest.warns(UserWarning, match=str(UNKNOWN)), pytest.raises(UnknownIdError):
        rec.fold_in({UNKNOWN: 5.0})

    items = rec.items.ids.tolist()
    if not trained.net.predicts_ratings:
        with pytest.raises(ConfigError, match="predicts no ratings"):
            rec.predict(100, items)
        return
    for call in (lambda: rec.predict(UNKNOWN, [500]), lambda: rec.predict(100, [UNKNOWN])):
        with pytest.raises(UnknownIdError, match=str(UNKNOWN)):
            call()
    low, high = trained.net.config.prediction_range
    predictions = np.concatenate([rec.predict(u, items) for u in rec.users.ids.tolist()])
    lover = rec.fold_in(dict.fromkeys(items, 5.0))  # pushed to the top of the scale
    hater = rec.fold_in(dict.fromkeys(items, 1.0))
    predictions = np.concatenate(
        [predictions, rec.predict(lover, items), rec.predict(hater, items)]
    )
    # unknown users and items (index -1) are predicted as the average one
    index = torch.tensor([-1, 0, -1, 5])
    with torch.no_grad():
        cold = trained.net(index, index.flip(0)).double().numpy()
    predictions = np.concatenate([predictions, cold])
    assert np.isfinite(predictions).all()
    assert low <= predictions.min() and predictions.max() <= high


def test_the_command_line_says_in_one_line_when_an_extra_is_missing(trained, tmp_path):
    extras = MODELS[trained.name].extras
    plot = tmp_path / "map.png"
    result = invoke("explain", trained.model_dir, "--plot", plot)
    if "map" in extras:
        assert result.exit_code == 0, result.output
        assert plot.is_file()
    else:
        assert "map" in one_error_line(result)
        assert not plot.exists()

    result = invoke("explain", trained.model_dir, "--user", 100, "--item", 502, "--json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert ("item biases" in result.stdout) == ("biases" in extras)
    because = json.loads(result.stdout.strip().splitlines()[-1])["because"]
    assert {r["item_id"] for r in because} <= set(ratings_of(trained.train, 100))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_have_one_source(name, board, board_csv, tmp_path):
    out = tmp_path / "model"
    steps = {} if "solve" in MODELS[name].engines else {"epochs": 1}  # solved: no epochs
    flags = [part for k, v in steps.items() for part in (f"--{k}", v)]
    result = invoke("train", "--data", board_csv, "--model", name, *flags, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    fitted, _ = fit(board[0], name, progress=False, **steps)

    def architecture(config: ModelConfig) -> dict[str, Any]:
        return {k: v for k, v in config.options().items() if k not in DATA_FIELDS}

    defaults = architecture(MODELS[name].Config())
    assert architecture(load(out).model.config) == defaults
    assert architecture(fitted.config) == defaults
    expected = TrainConfig.for_model(name)
    trained_with = {k: summary[k] for k in ("lr", "wd", "batch_size", "seed")}
    assert trained_with == {k: getattr(expected, k) for k in trained_with}


@pytest.mark.parametrize("name", NAMES)
def test_registered_under_the_name_its_config_saves(name):
    """The registry's key is the `kind` a model file records, so a saved model loads as the
    model that wrote it."""
    cls = MODELS[name]
    assert cls.Config.kind == name
    assert cls.Config().to_json()["kind"] == name
