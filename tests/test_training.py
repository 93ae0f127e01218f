"""fit(): it learns, it is reproducible, and a step touches only the rows of its batch."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

import latentrec
from latentrec import (
    ConfigError,
    DataError,
    DotConfig,
    DotProductBias,
    EmbeddingNN,
    NNConfig,
    TrainConfig,
    TrainingError,
    evaluate,
    fit,
    fused,
    training,
)
from latentrec.checkpoints import Checkpoints
from latentrec.models.bayes import BayesConfig

BOARD_OPTIONS = {"epochs": 30, "batch_size": 64, "lr": 0.05, "wd": 0.01, "progress": False}


@pytest.mark.parametrize("model", ["dot", "nn"])
def test_both_models_learn_the_checkerboard(board, model):
    train, test = board
    # the nn defaults (embedding dropout 0.6) are tuned for real catalogues, not 24 items
    extra = {"n_factors": 4} if model == "dot" else {"lr": 0.01, "emb_dropout": 0.0}
    options = BOARD_OPTIONS | extra
    net, history = fit((train, test), model, **options)
    scores = evaluate(net, test)
    # a model that learned nothing predicts ~3 everywhere: RMSE ~2 on this 1-or-5 board
    assert scores["rmse"] < 0.6, scores
    assert history.rmse == pytest.approx(scores["rmse"], rel=1e-5)


def test_history_records_every_epoch(board):
    net, history = fit(board, "dot", epochs=3, batch_size=32, progress=False)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    assert all(e.seconds > 0 and e.test_rmse is not None for e in history.epochs)
    assert history.n_train == len(board[0]) and history.n_test == len(board[1])
    assert history.ratings_per_second > 0
    assert not net.training


def test_same_seed_same_model_other_seed_other_model(board):
    first, _ = fit(board[0], "dot", epochs=2, seed=7, progress=False)
    second, _ = fit(board[0], "dot", epochs=2, seed=7, progress=False)
    third, _ = fit(board[0], "dot", epochs=2, seed=8, progress=False)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name])
    assert not torch.equal(first.user_factors.weight, third.user_factors.weight)


def test_a_step_changes_only_rows_in_its_batch(board):
    """The optimiser's cost follows the batch: rows of unseen users stay bit-identical."""
    train, _ = board
    rows = np.flatnonzero(train.user_index < 3)  # only users 0, 1, 2 are rated
    subset = train.take(rows)
    torch.manual_seed(0)
    net, _ = fit(subset, "dot", epochs=1, batch_size=len(subset), progress=False)
    fresh = _initial_weights(subset)
    changed = (net.user_factors.weight != fresh.user_factors.weight).any(dim=1)
    assert changed[:3].all()
    assert not changed[3:].any()


def _initial_weights(ratings):
    from latentrec.models import build_model
    from latentrec.training import make_configs

    config, train_config = make_configs(ratings, "dot", {})
    torch.manual_seed(train_config.seed)
    return build_model(config)


def test_accumulation_sets_steps_from_effective_batch(board):
    config = TrainConfig(batch_size=32, effective_batch_size=100)
    assert config.accumulate == 4
    _net, history = fit(board, "dot", batch_size=32, accumulate=4, epochs=2, progress=False)
    assert history.train_config.samples_per_step == 128
    assert np.isfinite(history.rmse)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -5}, "batch_size"),
        ({"lr": -1.0}, "lr"),
        ({"device": "tpu"}, "device"),
        ({"n_factor": 3}, "unknown option"),
        ({"effective_batch_size": 10, "batch_size": 64}, "effective_batch_size"),
        # what a config file may hold (review: a traceback, or a comparison's TypeError)
        ({"eps": "x"}, "eps must be a number, got 'x'"),
        ({"eps": 0.0}, "eps must be a positive number"),
        ({"lr": "0.1"}, "lr must be a number, got '0.1'"),
        ({"wd": None}, "wd must be a number, got None"),
        ({"l2": "x"}, "l2 must be a number"),
        ({"betas": [0.9]}, r"betas must be two numbers in \[0, 1\), got \[0.9\]"),
        ({"betas": (0.9, 1.0)}, "betas must be two numbers"),
    ],
)
def test_bad_options_fail_early_naming_the_field(board, options, needle):
    with pytest.raises(ConfigError, match=needle):
        fit(board, "dot", progress=False, **options)


def test_unknown_model_kind(board):
    with pytest.raises(ConfigError, match="model must be one of"):
        fit(board, "svd")


def test_fit_rejects_things_that_are_not_ratings():
    with pytest.raises(DataError, match="fit needs Ratings"):
        fit([1, 2, 3])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda(board):
    net, history = fit(board, "dot", device="cuda", epochs=2, progress=False)
    assert history.device.startswith("cuda")
    assert next(net.parameters()).is_cuda


def test_asking_for_cuda_without_it_is_a_clear_error(board):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        fit(board, "dot", device="cuda", progress=False)


def test_negatives_are_reproducible_and_push_unrated_items_down(board):
    first, _ = fit(board[0], "dot", epochs=3, negatives=2, seed=3, progress=False)
    second, _ = fit(board[0], "dot", epochs=3, negatives=2, seed=3, progress=False)
    plain, _ = fit(board[0], "dot", epochs=3, seed=3, progress=False)
    assert torch.equal(first.item_bias.weight, second.item_bias.weight)
    assert first.item_bias.weight.mean() < plain.item_bias.weight.mean()
    with pytest.raises(ConfigError, match="negatives"):
        fit(board[0], "dot", negatives=-1, progress=False)
    # each rating draws its step's negatives for its place in the step: micro-batches (and
    # ranks) see what one batch sees (regression, review: each micro-batch drew its own)
    exact = {"epochs": 2, "negatives": 2, "dtype": "float64", "progress": False}
    whole, _ = fit(board[0], "dot", batch_size=64, **exact)
    parts, _ = fit(board[0], "dot", batch_size=16, accumulate=4, **exact)
    assert torch.allclose(whole.user_factors.weight, parts.user_factors.weight, atol=1e-12)


def test_fit_leaves_denormal_floats_as_it_found_them(board):
    """Regression: flushing denormals while training must not outlive fit (it broke
    Hypothesis's float generation in the same process)."""
    fit(board[0], "dot", epochs=1, progress=False)
    assert (torch.tensor([1e-40], dtype=torch.float32) * 1.0).item() != 0.0


class _Killed(Exception):
    """Stands for the process dying right after a checkpoint."""


def _interrupted_after(monkeypatch, writes: int) -> None:
    original = Checkpoints.write
    calls = []

    def write(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == writes:
            raise _Killed

    monkeypatch.setattr(Checkpoints, "write", write)


def _small_blocks(monkeypatch) -> None:
    """Blocked orders in cells of 100 users x 1,000 items: 7 x 10 cells of the bundled data."""
    monkeypatch.setattr(fused, "BLOCK_USERS", 100)
    monkeypatch.setattr(fused, "BLOCK_ITEMS", 1000)


def test_a_blocked_order_trains_on_every_rating_cell_by_cell(small_split, monkeypatch):
    """Each epoch of `order="blocked"` takes every training rating once, a cell at a time;
    the model differs from the shuffled order's, and not by much."""
    _small_blocks(monkeypatch)
    seen = []
    blocked = fused.blocked_order

    def recorded(*args, **kwargs):
        seen.append(blocked(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(fused, "blocked_order", recorded)
    options = {"epochs": 2, "progress": False, "seed": 3}
    net, history = fit(small_split, "dot", order="blocked", **options)
    plain, plain_history = fit(small_split, "dot", **options)
    train = small_split.train
    epochs = [order for order in seen if len(order) == len(train)]
    assert len(epochs) == 2 and not np.array_equal(epochs[0], epochs[1])
    # the epochs' positions are into the ratings grouped by cell
    users, items = train.user_index, train.item_index
    grouped, _ = fused.cell_layout(users, items, train.n_users, train.n_items, 100, 1000)
    for order in epochs:
        assert np.array_equal(np.sort(order), np.arange(len(train)))
        rows = grouped[order]
        cells = (users[rows] // 100) * -(-train.n_items // 1000) + items[rows] // 1000
        assert 1 + np.count_nonzero(np.diff(cells)) == len(np.unique(cells))
    assert history.train_config.order == "blocked"
    assert not torch.equal(net.user_factors.weight, plain.user_factors.weight)
    assert history.rmse == pytest.approx(plain_history.rmse, abs=0.03)


@pytest.mark.parametrize(
    ("engine", "optimizer", "order"),
    [("autograd", "adagrad", "shuffled"), ("autograd", "adamw", "shuffled"),
     ("fused", "adagrad", "shuffled"), ("fused", "adamw", "shuffled"),
     ("fused", "adagrad", "blocked")],
)  # fmt: skip
def test_a_run_resumed_from_a_checkpoint_ends_where_the_whole_run_does(
    small_split, tmp_path, monkeypatch, engine, optimizer, order
):
    """Killed mid-epoch after its second checkpoint, the resumed run ends with the weights of
    the uninterrupted one, bit for bit: model, optimiser, schedule, random states and position
    restored."""
    _small_blocks(monkeypatch)
    options = {
        "order": order,
        "epochs": 3,
        "batch_size": 512,
        "dtype": "float64",
        "progress": False,
        "engine": engine,
        "optimizer": optimizer,
    }
    whole, whole_history = fit(small_split, "dot", **options)
    steps_per_epoch = -(-whole_history.n_train // 512)
    every = max(1, steps_per_epoch * 2 // 3)  # mid-epoch
    _interrupted_after(monkeypatch, writes=2)
    with pytest.raises(_Killed):
        fit(small_split, "dot", checkpoint_every=every, checkpoint_dir=tmp_path, **options)
    monkeypatch.undo()
    _small_blocks(monkeypatch)
    resumed, history = fit(
        small_split, "dot", checkpoint_every=every, checkpoint_dir=tmp_path, resume=True, **options
    )
    assert history.resumed_from == 2 * every
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    assert history.rmse == whole_history.rmse


def test_a_blocked_run_resumes_only_in_the_cells_it_was_ordered_by(board, tmp_path, monkeypatch):
    options = {"epochs": 1, "order": "blocked", "progress": False}
    _small_blocks(monkeypatch)
    fit(board, "dot", checkpoint_every=1, checkpoint_dir=tmp_path, **options)
    monkeypatch.setattr(fused, "BLOCK_ITEMS", 500)
    with pytest.raises(ConfigError, match=re.escape("cells of [100, 1000] users x items, this")):
        fit(board, "dot", checkpoint_dir=tmp_path, resume=True, **options)
    with pytest.raises(ConfigError, match=re.escape("order 'blocked' -> 'shuffled'")):
        fit(board, "dot", checkpoint_dir=tmp_path, resume=True, epochs=1, order="shuffled")


def test_resuming_with_other_options_or_data_says_what_differs(small_split, board, tmp_path):
    fit(small_split, "dot", epochs=1, checkpoint_every=1, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=re.escape("lr 0.1 -> 0.01")):
        fit(small_split, "dot", epochs=1, lr=0.01, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match=re.escape("optimizer 'adagrad' -> 'adamw'")):
        fit(small_split, "dot", epochs=1, optimizer="adamw", checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="trained on other ratings"):
        fit(board, "dot", epochs=1, checkpoint_dir=tmp_path, resume=True)
    # regression (review): one rating changed read "(80,670 of them, not 80,670)", and one
    # past the scale blamed a rating range nobody gave
    train = small_split.train
    for changed in (4.5, 9.0):
        rating = train.rating.copy()
        rating[0] = changed if rating[0] != changed else 1.0
        other = latentrec.Split(dataclasses.replace(train, rating=rating), small_split.test)
        with pytest.raises(ConfigError, match=r"as many, [\d,]+, but other ones\): the data"):
            fit(other, "dot", epochs=1, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ConfigError, match="no checkpoint in"):
        fit(small_split, "dot", checkpoint_dir=tmp_path / "none", resume=True)
    with pytest.raises(ConfigError, match="need a checkpoint_dir"):
        fit(small_split, "dot", checkpoint_every=5)


def test_a_run_planned_for_a_memory_budget_resumes_with_its_plan(
    small_split, tmp_path, monkeypatch
):
    # regression (review): resuming measured the steps again, and a plan that came out one
    # micro-batch different refused the checkpoint ("accumulate 5 -> 6, batch_size ...")
    options = {"epochs": 1, "memory_budget": "1GiB", "effective_batch_size": 4096}
    _, planned = fit(small_split, "dot", checkpoint_every=5, checkpoint_dir=tmp_path,
                     progress=False, **options)  # fmt: skip

    def measured(*_args):
        raise AssertionError("a resumed run planned again")

    monkeypatch.setattr("latentrec.training._plan_batches", measured)
    _, resumed = fit(small_split, "dot", checkpoint_dir=tmp_path, resume=True, progress=False,
                     **options)  # fmt: skip
    assert (resumed.train_config.batch_size, resumed.train_config.accumulate) == (
        planned.train_config.batch_size,
        planned.train_config.accumulate,
    )


def _rescaled(scale):
    """A synthetic 0.5..5 rating set mapped linearly onto another scale, split 90/10."""
    from latentrec import synthetic_ratings

    ratings = synthetic_ratings(ratings=20_000, users=300, items=200, seed=1)
    low, high = scale
    mapped = low + (ratings.rating - 0.5) / 4.5 * (high - low)
    return dataclasses.replace(ratings, rating=mapped.astype(np.float32)).split(0.1, seed=42)


@pytest.mark.parametrize("scale", [(1.0, 10.0), (-2.0, 2.0)])
@pytest.mark.parametrize("engine", ["fused", "autograd"])
def test_any_rating_scale_trains_better_than_the_mean(scale, engine):
    # regression (issue 14): the range was fixed at 0..5.5 and a 1..10 scale lost to the mean
    train, test = _rescaled(scale)
    net, history = fit((train, test), "dot", engine=engine, progress=False)
    low, high = scale
    margin = (high - low) / 9
    assert net.config.y_range == pytest.approx((low - margin, high + margin))
    mean_rmse = float(np.sqrt(np.mean((test.rating - train.rating.mean()) ** 2)))
    assert history.rmse < 0.8 * mean_rmse, (history.rmse, mean_rmse)


def test_movielens_scale_keeps_fastais_range(board):
    net, _ = fit(board, "dot", epochs=1, progress=False)  # ratings 1 and 5
    assert net.config.y_range == pytest.approx((1 - 4 / 9, 5 + 4 / 9))
    ratings = board[0]
    half_stars = dataclasses.replace(ratings, rating=np.where(ratings.rating > 3, 5.0, 0.5))
    net, _ = fit(half_stars, "dot", epochs=1, progress=False)
    assert net.config.y_range == pytest.approx((0.0, 5.5))


def test_a_given_rating_range_is_kept_and_must_cover_the_ratings(board):
    net, _ = fit(board, "dot", epochs=1, rating_range=(1, 10), progress=False)
    assert net.config.rating_range == (1.0, 10.0) and net.config.y_range == (0.0, 11.0)
    with pytest.raises(ConfigError, match=r"1\.5\.\.6 does not cover .* from 1 to 5"):
        fit(board, "dot", epochs=1, rating_range=(1.5, 6), progress=False)
    net, _ = fit(board, "dot", epochs=1, y_range=(0, 6), progress=False)  # the squashing alone
    assert net.config.y_range == (0.0, 6.0) and net.config.rating_range == (1.0, 5.0)
    with pytest.raises(ConfigError, match=r"y_range 1\.5\.\.6 does not cover the rating scale"):
        fit(board, "dot", epochs=1, y_range=(1.5, 6), progress=False)
    with pytest.raises(ConfigError, match=r"y_range must be .* low < high, got \(6, 0\)"):
        fit(board, "dot", epochs=1, y_range=(6, 0), progress=False)


def test_a_run_checkpointed_before_models_kept_their_scale_resumes(board, tmp_path):
    # regression (review): the derived range differed from the old checkpoint's 0..5.5
    import json as json_module

    options = {"epochs": 2, "batch_size": 32, "progress": False}
    fit(board, "dot", checkpoint_every=3, checkpoint_dir=tmp_path, **options)
    for meta_path in tmp_path.glob("step-*.json"):  # as the previous release wrote it
        meta = json_module.loads(meta_path.read_text())
        del meta["model"]["rating_range"]
        meta["model"]["y_range"] = [0.0, 5.5]
        meta_path.write_text(json_module.dumps(meta))
    net, history = fit(board, "dot", checkpoint_dir=tmp_path, resume=True, **options)
    assert history.resumed_from is not None and net.config.y_range == (0.0, 5.5)


@pytest.mark.parametrize(
    ("trained", "unwritten"),
    [
        # before there was a choice of optimiser: AdamW, no L2 penalty, a shuffled order
        ({"optimizer": "adamw", "l2": 0.0}, ("optimizer", "l2", "order")),
        # the first Adagrad defaults, before the L2 penalty: wd 0.01 (3 epochs then)
        ({"optimizer": "adagrad", "wd": 0.01, "l2": 0.0}, ("l2", "order")),
    ],
)
def test_a_run_checkpointed_by_an_earlier_release_resumes_as_it_trained(
    board, tmp_path, trained, unwritten
):
    """Resuming takes the options the run was checkpointed with, not today's defaults, and
    options added since (the optimiser, the L2 penalty, the order) as the run trained without
    them;
    `train --resume` gives only the options of its command line."""
    import json as json_module

    options = {"epochs": 2, "batch_size": 32, "progress": False}
    whole, _ = fit(board, "dot", **trained, **options)
    fit(board, "dot", **trained, checkpoint_every=3, checkpoint_dir=tmp_path, **options)
    for meta_path in tmp_path.glob("step-*.json"):  # as the earlier release wrote it
        meta = json_module.loads(meta_path.read_text())
        for name in unwritten:
            del meta["train"][name]
        meta_path.write_text(json_module.dumps(meta))
    resumed, history = fit(board, "dot", checkpoint_dir=tmp_path, resume=True, progress=False)
    assert history.resumed_from is not None
    config = history.train_config
    assert (config.optimizer, config.wd, config.l2, config.epochs, config.order) == (
        trained["optimizer"],
        trained.get("wd", _default_wd(trained)),
        0.0,
        2,
        "shuffled",
    )
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def _default_wd(trained: dict) -> float:
    return DotProductBias.optimizer_defaults[trained["optimizer"]]["wd"]


def test_l2_is_the_ridge_of_a_solved_model_and_refused_where_it_has_none(board):
    """ease's l2 is its own ridge penalty, not the steps' per-rating penalty; bayes has
    neither, and an l2 given to it is one error, not an option silently ignored."""
    from latentrec.training import make_configs

    model, config = make_configs(board[0], "ease", {"l2": 123.0})
    assert (model.l2, config.l2) == (123.0, 0.0)
    with pytest.raises(ConfigError, match=r"l2 \(an option of the dot, nn, ease and als models\)"):
        make_configs(board[0], "bayes", {"l2": 5.0})


@pytest.mark.parametrize("engine", ["fused", "autograd"])
def test_diverged_training_stops_with_one_error(board, engine, tmp_path):
    # regression (issue 14): lr 1e30 ended with a NaN model and exit 0
    with pytest.raises(TrainingError, match=r"training diverged: the loss became nan.*lower"):
        fit(board, "dot", epochs=3, lr=1e30, engine=engine, progress=False)
    with pytest.raises(TrainingError):  # and no checkpoint of a NaN model is written
        fit(
            board,
            "dot",
            epochs=3,
            lr=1e30,
            batch_size=16,
            engine=engine,
            checkpoint_every=1,
            checkpoint_dir=tmp_path,
            progress=False,
        )
    from latentrec.storage import load_checkpoint

    kept = load_checkpoint(tmp_path)
    assert kept is None or all(torch.isfinite(t).all() for t in kept.tensors.values())


def test_a_model_too_large_for_memory_is_refused_before_allocating(board):
    with pytest.raises(ConfigError, match=r"needs .* GiB .* available; use smaller --factors"):
        fit(board, "dot", n_factors=2**40, epochs=1, progress=False)


def test_typed_configs_train_the_model_keyword_options_do(board):
    """fit(data, DotConfig(...), TrainConfig(...)) is fit(data, "dot", **the same options)."""
    typed, typed_history = fit(
        board, DotConfig(n_factors=8), TrainConfig.for_model("dot", epochs=2, progress=False)
    )
    keywords, _ = fit(board, "dot", n_factors=8, epochs=2, progress=False)
    assert typed.config == keywords.config and typed.config.n_factors == 8
    for mine, theirs in zip(typed.parameters(), keywords.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    adagrad = DotProductBias.optimizer_defaults["adagrad"]
    assert typed_history.train_config.optimizer == "adagrad"
    assert typed_history.train_config.lr == adagrad["lr"] != TrainConfig.lr


def test_another_optimizer_brings_its_own_defaults_unless_told(board):
    """--optimizer adamw trains with AdamW's lr, wd and epochs, not Adagrad's; options given
    win over both."""
    adamw = DotProductBias.optimizer_defaults["adamw"]
    _, history = fit(board, "dot", optimizer="adamw", progress=False)
    config = history.train_config
    assert (config.optimizer, config.lr, config.wd) == ("adamw", adamw["lr"], adamw["wd"])
    assert len(history.epochs) == adamw["epochs"]
    _, history = fit(board, "dot", optimizer="adamw", lr=0.02, epochs=1, progress=False)
    assert (history.train_config.lr, history.train_config.wd) == (0.02, adamw["wd"])
    with pytest.raises(ConfigError, match="optimizer must be one of adamw, adagrad, got 'sgd'"):
        fit(board, "dot", optimizer="sgd", progress=False)


def test_each_model_trains_with_its_own_defaults_unless_told(board):
    _, history = fit(board, NNConfig(layers=(8,)), epochs=1, progress=False)
    assert history.train_config == TrainConfig.for_model("nn", epochs=1, progress=False)
    assert history.train_config.lr == EmbeddingNN.train_defaults["lr"] != TrainConfig.lr
    _, history = fit(board, "nn", TrainConfig(epochs=1, progress=False), layers=(8,))
    assert history.train_config.lr == TrainConfig.lr  # a TrainConfig given is used as it is


def test_an_option_of_another_model_says_whose_it_is(board):
    with pytest.raises(
        ConfigError, match=r"n_factors \(an option of the dot(, \w+)* and bayes models\)"
    ):
        fit(board, "nn", n_factors=3, progress=False)
    with pytest.raises(ConfigError, match=r"unknown option.* n_factorz for the dot model"):
        fit(board, DotConfig(), n_factorz=3, progress=False)


def test_predictions_are_the_same_in_chunks_of_any_size(monkeypatch):
    """`predict_index` takes fewer pairs a chunk for wide rows (bayes keeps a vector per
    sample); every chunking gives the same predictions."""
    split = latentrec.synthetic_ratings(ratings=6000, users=150, items=120, seed=3).split(0.5)
    net, _ = latentrec.fit(split, "bayes", progress=False, samples=6, burn_in=1)
    users = torch.from_numpy(split.test.user_index.astype(np.int64))
    items = torch.from_numpy(split.test.item_index.astype(np.int64))
    whole = training.predict_index(net, users, items)
    # a bayes model's rows hold a vector per kept sample: 1,176 numbers at the defaults
    wide = latentrec.build_model(BayesConfig(n_users=1000, n_items=500))
    assert training.predict_chunk(wide) == training.PREDICT_BYTES // (2 * 1176 * 4)
    assert training.predict_chunk(DotProductBias(1000, 500)) == training.PREDICT_CHUNK
    monkeypatch.setattr(training, "PREDICT_BYTES", 1)  # the least: 1,024 pairs a chunk
    assert len(users) > 2 * 1024
    assert torch.equal(training.predict_index(net, users, items), whole)
    assert float(training.evaluate(net, split.test)["rmse"]) == pytest.approx(
        float(torch.sqrt(((whole - torch.from_numpy(split.test.rating)) ** 2).mean()))
    )


def test_a_checkpoint_names_its_data_as_releases_with_int64_indexes_did(board, monkeypatch):
    """The data's fingerprint is taken over the indexes as int64 values (they are held as
    int32 now, and were int64): a checkpoint written before resumes with the same data."""
    import zlib

    from latentrec import checkpoints

    train = board[0]
    assert train.user_index.dtype == np.int32
    expected = 0
    for array in (train.user_index.astype(np.int64), train.item_index.astype(np.int64)):
        expected = zlib.crc32(array.tobytes(), expected)
    expected = zlib.crc32(train.rating.tobytes(), expected)
    monkeypatch.setattr(checkpoints, "_PIECE", 7)  # several pieces
    assert checkpoints.fingerprint(train)["crc32"] == expected
