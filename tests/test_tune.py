"""tune(): the search spaces the models declare, a seeded search on validation rows carved from
the rows it is given, the file it writes and `train --config` reads, and the CLI's refusals."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import latentrec
from latentrec import ConfigError, DataError, TrainConfig, TrainingError, synthetic_ratings
from latentrec.cli import _budget
from latentrec.models import MODELS
from latentrec.models.base import search_space
from latentrec.tuning import DEFAULT_TRIALS, read_tuned, tune
from tests.test_contract import invoke, one_error_line

SMALL = {"ratings": 6000, "users": 150, "items": 60, "seed": 3}


@pytest.fixture(scope="module")
def ratings():
    return synthetic_ratings(**SMALL)


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tune") / "ratings.csv"
    synthetic_ratings(**SMALL).to_frame().to_csv(path, index=False)
    return path


def rows(part) -> Counter:
    """The rows of a Ratings as a multiset of (raw user, raw item, rating)."""
    users, items = part.users.ids[part.user_index], part.items.ids[part.item_index]
    return Counter(zip(users.tolist(), items.tolist(), part.rating.tolist(), strict=True))


# ----------------------------------------------------------------------------- search spaces


@pytest.mark.parametrize("name", list(MODELS))
def test_each_models_search_space_names_its_options_and_holds_its_defaults(name):
    cls = MODELS[name]
    config, training = cls.Config(), TrainConfig.for_model(name)
    train_fields = {f.name for f in fields(TrainConfig)}
    for option, (_kind, low, high) in cls.Config.tunable.items():
        assert option in cls.Config.field_names() | train_fields, option
        default = getattr(config if option in config.field_names() else training, option)
        if default is None:  # taken from the data: from one rating per row to 10,000
            defaults = [latentrec.training.l2_for(_dense(n)) for n in (2, 20_000)]
        else:
            defaults = [default]
        for value in defaults:
            assert low <= value <= high, (option, value)  # trial 0 tries the defaults


def _dense(n: int):
    """n ratings of one user and one item."""
    from latentrec.data import IdMap, Ratings

    zeros = np.zeros(n, dtype=np.int64)
    return Ratings(zeros, zeros, np.ones(n, np.float32), IdMap(np.arange(1)), IdMap(np.arange(1)))


@pytest.mark.parametrize(
    ("ranges", "needle"),
    [
        ({"l2": ("cubic", 1, 2)}, "kind must be one of"),
        ({"l2": ("log", 0, 10)}, "log scale"),
        ({"n_factors": ("int", 8.5, 64)}, "whole number"),
        ({"lr": ("float", 0.1, 0.01)}, "low < high"),
    ],
)
def test_a_bad_search_space_is_refused_where_it_is_declared(ranges, needle):
    with pytest.raises(ConfigError, match=needle):
        search_space(**ranges)


# ----------------------------------------------------------------------------- the search


def test_the_same_seed_gives_the_same_trials_and_best(ratings):
    first = tune(ratings, "dot", trials=3, seed=1)
    again = tune(ratings, "dot", trials=3, seed=1)
    other = tune(ratings, "dot", trials=3, seed=2)
    assert [(t.options, t.value) for t in first.trials] == [
        (t.options, t.value) for t in again.trials
    ]
    assert (first.best_options, first.best_value) == (again.best_options, again.best_value)
    assert first.trials[1].options != other.trials[1].options
    assert first.metric == "rmse" and first.best_value == min(t.value for t in first.trials)
    defaults = latentrec.DotProductBias.optimizer_defaults["adagrad"]
    fit_rows = ratings.split(0.2, seed=1, by="user").train  # tune's fit rows
    untuned = {"n_factors": 50, "lr": defaults["lr"], "l2": latentrec.training.l2_for(fit_rows)}
    assert first.trials[0].options == untuned  # trial 0: the defaults, l2 from the fit rows


def test_tune_splits_only_the_rows_it_is_given_per_user(ratings, monkeypatch):
    train = ratings.split(0.1, seed=7).train  # its test rows must play no part
    seen = []
    real_fit = latentrec.tuning.fit
    monkeypatch.setattr(
        latentrec.tuning,
        "fit",
        lambda parts, *a, **k: seen.append(parts) or real_fit(parts, *a, **k),
    )
    tune(train, "dot", trials=2, seed=1, validation_fraction=0.25)
    assert len(seen) == 2 and seen[0] is seen[1]  # one validation split for every trial
    fit_rows, validation = seen[0]
    assert (validation.item_index >= 0).all() and (validation.user_index >= 0).all()
    # every row tuned on is a training row, each used once, and the test rows never
    assert rows(fit_rows) + rows(validation) == rows(train)
    # a quarter of each user's rows scores the trials, at least one kept for fitting
    per_user = Counter(train.users.ids[train.user_index].tolist())
    held = Counter(validation.users.ids[validation.user_index].tolist())
    for user, count in per_user.items():
        assert held[user] == min(round(count * 0.25), count - 1), user
    with pytest.raises(ConfigError, match="train part"):
        tune(ratings.split(0.1), "dot", trials=1)


def test_a_seed_past_32_bits_tunes_as_train_takes_it(ratings):
    # regression (review): optuna's sampler takes 32-bit seeds, and 2^32 was a traceback
    result = tune(ratings, "ease", trials=1, seed=2**32)
    assert len(result.trials) == 1


def test_a_ranking_model_is_scored_on_lists_and_refuses_rmse(ratings):
    result = tune(ratings, "ease", trials=3, metric="precision@5")
    assert result.metric == "precision@5" and 0 < result.best_value <= 1
    assert result.best_value == max(t.value for t in result.trials)
    # the searched options, and the one the search left at its default (a later default must
    # not change what the file solves)
    assert set(result.best_options) == {
        "l2",
        "feature_weight",
        "session_weight",
        "session_gap",
        "session_run",
    }
    assert result.best_options["session_gap"] == 1.0
    with pytest.raises(ConfigError, match="predicts no ratings"):
        tune(ratings, "ease", trials=1, metric="rmse")


def test_a_failing_trial_is_recorded_and_the_search_goes_on(ratings, monkeypatch):
    real_fit, calls = latentrec.tuning.fit, []

    def diverging_second(*args, **kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise TrainingError("training diverged: the loss became nan")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(latentrec.tuning, "fit", diverging_second)
    result = tune(ratings, "dot", trials=3)
    states = [(t.state, t.reason) for t in result.trials]
    assert states[1] == ("failed", "training diverged: the loss became nan")
    assert [s for s, _ in states] == ["complete", "failed", "complete"]
    assert result.trials[1].value is None and result.best_value is not None


def test_when_the_defaults_fail_the_error_is_raised_not_searched_past(ratings):
    with pytest.raises(DataError, match="interactions"):
        tune(ratings.positives(4.0), "dot", trials=3)


def test_fixed_options_are_not_searched_and_are_kept(ratings, monkeypatch):
    monkeypatch.setattr(latentrec.tuning, "_score", lambda parts, model, metric, options: 1.0)
    result = tune(ratings, "dot", n_factors=16, epochs=2, device="cpu")
    assert len(result.trials) == DEFAULT_TRIALS  # no budget and no trials given
    assert all("n_factors" not in t.options for t in result.trials)
    assert result.best_options["n_factors"] == 16 and result.best_options["epochs"] == 2
    assert "device" not in result.best_options  # a runtime switch, not a hyperparameter


# ----------------------------------------------------------------------------- the file


def test_the_file_round_trips_into_train_config(ratings_file: Path, tmp_path: Path):
    out = tmp_path / "best.json"
    done = invoke("tune", "--data", ratings_file, "--trials", 3, "--out", out, "--json")
    assert done.exit_code == 0, done.output
    assert f"--config {out}" in done.stdout
    saved = json.loads(out.read_text())
    assert saved["model"] == "dot" and saved["trials"] == 3 and saved["metric"] == "rmse"
    assert saved["validation"]["split"] == "user" and saved["validation"]["positive_min"] is None
    assert read_tuned(out) == ("dot", saved["options"])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["value"] == saved["value"] and len(report["all_trials"]) == 3

    trained = invoke("train", "--data", ratings_file, "--config", out, "--json")
    assert trained.exit_code == 0, trained.output
    info = json.loads(trained.stdout.strip().splitlines()[-1])
    assert (info["model"], info["lr"], info["l2"]) == (
        "dot",
        saved["options"]["lr"],
        saved["options"]["l2"],
    )
    # an option on the command line wins over the file's
    trained = invoke("train", "--data", ratings_file, "--config", out, "--lr", 0.02, "--json")
    assert json.loads(trained.stdout.strip().splitlines()[-1])["lr"] == 0.02
    # tune replaces its own file
    assert invoke("tune", "--data", ratings_file, "--trials", 1, "--out", out).exit_code == 0
    assert json.loads(out.read_text())["trials"] == 1


def test_a_budget_spent_before_the_search_still_runs_the_defaults(ratings):
    # regression (noticed): a budget shorter than the set-up ran no trial: "check the data"
    spent = tune(ratings, "ease", budget_seconds=1e-300, seed=1)
    assert len(spent.trials) == 1 and math.isfinite(spent.best_value)
    assert len(tune(ratings, "ease", budget_seconds=1e-300, trials=3, seed=1).trials) == 1
    assert len(tune(ratings, "ease", trials=2, seed=1).trials) == 2


def test_budget_text():
    assert [_budget(t) for t in ("600", "600s", "10m", "1.5h", " 90 S ")] == [
        600,
        600,
        600,
        5400,
        90,
    ]


def write(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


TUNED = {"format": "latentrec-tuning", "version": 1, "model": "ease", "options": {"l2": 50.0}}


def test_a_tuning_file_trains_what_its_trials_trained(ratings, tmp_path):
    """A file names the training options its trials took from the defaults (a later
    release's defaults must not change what it trains); one written before the per-rating
    L2 penalty trained without it, and reads so; so does an ease file written before the
    items' features and the sessions."""
    result = tune(ratings, "dot", trials=1, seed=1)
    options = result.best_options
    trained = latentrec.TrainConfig.for_model(
        "dot", **{k: v for k, v in options.items() if k != "n_factors"}
    )
    for name in ("optimizer", "epochs", "lr", "wd", "l2"):
        assert options[name] == getattr(trained, name)
    old = {"format": "latentrec-tuning", "version": 1, "model": "dot"}
    path = write(tmp_path / "old.json", old | {"options": {"n_factors": 20, "lr": 0.05}})
    assert read_tuned(path) == ("dot", {"n_factors": 20, "lr": 0.05, "l2": 0.0})
    ease = read_tuned(write(tmp_path / "ease.json", TUNED))
    earlier = {"feature_weight": 0.0, "session_weight": 0.0, "session_run": 0}
    assert ease == ("ease", earlier | {"l2": 50.0})
    # a file written before the sessions' runs keeps the weights it names, without runs
    named = {"l2": 50.0, "feature_weight": 2.0, "session_weight": 1.0, "session_gap": 1.0}
    version_3 = TUNED | {"version": 3, "options": named}
    assert read_tuned(write(tmp_path / "ease3.json", version_3)) == (
        "ease",
        named | {"session_run": 0},
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["tune", "--budget", "ten"], "--budget takes a time"),
        (["tune", "--budget", "0"], "--budget takes a time"),
        (["tune", "--metric", "ndcg@ten"], "unknown metric 'ndcg@ten'"),
        (["tune", "--model", "ease", "--metric", "rmse"], "predicts no ratings"),
        (["tune", "--model", "nope"], "model must be one of"),
        (["tune", "--out", "{foreign}"], "was not written by latentrec tune"),
        (["tune", "--out", "{folder}"], "is a directory"),
        (["train", "--config", "{not_json}"], "not valid JSON"),
        (["train", "--config", "{foreign}"], "was not written by latentrec tune"),
        (["train", "--config", "{missing}"], "cannot read the tuning file"),
        (["train", "--config", "{ease}", "--model", "dot"], "tuned for the ease model, not dot"),
        (["train", "--config", "{unknown}"], "sets bogus, which the ease model does not take"),
        (["train", "--config", "{bad_value}"], "l2 must be a positive number"),
        (["train", "--config", "{other_model}"], "model must be one of"),
        (["train", "--config", "{stepped}"], "s.json sets epochs, lr, which train by steps"),
        # regression (review): tuned on the liked ratings, trained on all of them silently
        (["train", "--config", "{liked}"], "at or above 4 (--positive-min); give --positive-min 4"),
        (
            ["train", "--config", "{every}", "--positive-min", "4"],
            "e.json was tuned on all the ratings (--positive-min); leave out --positive-min",
        ),
    ],
)
def test_mistakes_are_one_line_with_exit_2(args, needle, ratings_file: Path, tmp_path: Path):
    paths = {
        "foreign": write(tmp_path / "notes.json", {"hello": 1}),
        "folder": tmp_path,
        "not_json": write(tmp_path / "broken.json", "{"),
        "missing": tmp_path / "missing.json",
        "ease": write(tmp_path / "ease.json", TUNED),
        "unknown": write(tmp_path / "u.json", TUNED | {"options": {"l2": 5.0, "bogus": 1}}),
        "bad_value": write(tmp_path / "v.json", TUNED | {"options": {"l2": -1}}),
        "other_model": write(tmp_path / "m.json", TUNED | {"model": "nope"}),
        "stepped": write(tmp_path / "s.json", TUNED | {"options": {"epochs": 3, "lr": 0.1}}),
        "liked": write(tmp_path / "l.json", TUNED | {"validation": {"positive_min": 4.0}}),
        "every": write(tmp_path / "e.json", TUNED | {"validation": {"positive_min": None}}),
    }
    args = [a.format(**paths) for a in args]
    if args[0] == "tune" and "--out" not in args:
        args += ["--out", tmp_path / "best.json"]
    line = one_error_line(invoke(*args, "--data", ratings_file))
    assert needle in line, line
    assert json.loads(paths["foreign"].read_text()) == {"hello": 1}  # never overwritten


def test_tune_needs_out(ratings_file: Path):
    assert "--out" in one_error_line(invoke("tune", "--data", ratings_file))
