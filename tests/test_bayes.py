"""The bayes model: Gibbs-sampled factorization with implicit signals (beyond the contract
suite, which checks it as every model)."""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest
import torch

import latentrec
from latentrec import kernels
from latentrec.errors import ConfigError
from latentrec.models.bayes import BayesConfig, _Sampler
from latentrec.recommend import Recommender
from latentrec.training import evaluate
from tests.test_contract import invoke, one_error_line

FAST = {"samples": 30, "burn_in": 10, "kept": 10}


@pytest.fixture(scope="module")
def small():
    """A low-rank problem with known factors, biases and noise, split 80/20."""
    ratings = latentrec.synthetic_ratings(ratings=6000, users=150, items=120, factors=4, seed=3)
    return ratings.split(0.2, seed=1)


def test_the_posterior_mean_predicts_better_than_the_map_dot_model(small):
    bayes, history = latentrec.fit(small, "bayes", progress=False, n_factors=4)
    _, dot_history = latentrec.fit(small, "dot", progress=False, n_factors=4)
    bayes_rmse, dot_rmse = history.epochs[-1].test_rmse, dot_history.epochs[-1].test_rmse
    assert bayes_rmse == pytest.approx(evaluate(bayes, small.test)["rmse"])
    assert bayes_rmse < 0.95 * dot_rmse, (bayes_rmse, dot_rmse)
    mean_rmse = float(np.sqrt(np.mean((small.test.rating - small.train.rating.mean()) ** 2)))
    assert bayes_rmse < 0.85 * mean_rmse


def test_a_seed_gives_the_same_samples_on_one_thread_and_on_two(small):
    def fitted(seed: int, threads: int) -> dict[str, torch.Tensor]:
        with kernels.threads(threads):
            assert numba.get_num_threads() == min(threads, numba.config.NUMBA_NUM_THREADS)
            net, _ = latentrec.fit(small.train, "bayes", progress=False, seed=seed, **FAST)
        return net.state_dict()

    one, two, other = fitted(5, 1), fitted(5, 2), fitted(6, 2)
    for name, tensor in one.items():
        assert torch.equal(tensor, two[name]), name
    assert not torch.equal(one["user_factors.weight"], other["user_factors.weight"])


def test_the_implicit_signals_come_from_the_training_pairs_alone(small):
    """The same training rows with another test set give the same model: nothing of the test
    pairs (which items a test user rated) enters the implicit signals."""
    other_test = small.test.take(np.arange(0, len(small.test), 2))
    first, _ = latentrec.fit(small, "bayes", progress=False, **FAST)
    second, _ = latentrec.fit((small.train, other_test), "bayes", progress=False, **FAST)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    # and the signals matter: without them the model differs
    plain, _ = latentrec.fit(small, "bayes", progress=False, implicit_signals=False, **FAST)
    assert plain.implicit_factors.numel() == 0
    assert not torch.equal(plain.user_factors.weight, first.user_factors.weight)


def test_implicit_signals_lower_the_error_on_movielens():
    split = latentrec.load_ratings("movielens-small").split(0.1, seed=42)
    rmse = {}
    for signals in (True, False):
        _, history = latentrec.fit(
            split,
            "bayes",
            progress=False,
            implicit_signals=signals,
            item_features=False,
            samples=40,
            burn_in=10,
        )
        rmse[signals] = history.epochs[-1].test_rmse
    assert rmse[True] < rmse[False] - 0.005, rmse
    assert rmse[True] < 0.83, rmse


def test_the_items_genres_and_decades_lower_the_error_on_movielens():
    split = latentrec.load_ratings("movielens-small").split(0.1, seed=42)
    rmse = {}
    for features in (True, False):
        _, history = latentrec.fit(
            split, "bayes", progress=False, item_features=features, samples=40, burn_in=10
        )
        rmse[features] = history.epochs[-1].test_rmse
    assert rmse[True] < rmse[False] - 0.008, rmse
    assert rmse[True] < 0.815, rmse


def test_data_without_item_features_train_as_without_the_option(small):
    assert small.train.genres is None and small.train.titles is None
    on, _ = latentrec.fit(small, "bayes", progress=False, **FAST)
    off, _ = latentrec.fit(small, "bayes", progress=False, item_features=False, **FAST)
    for name, tensor in on.state_dict().items():
        assert torch.equal(tensor, off.state_dict()[name]), name


def test_the_batched_draws_a_gpu_runs_give_the_kernels_samples(small):
    """The own rows drawn in tensor operations (`_own_batched`, the CUDA path, here on the
    CPU) take the same random numbers as the compiled kernel and give the same samples up to
    rounding, implicit rows and item features included."""
    train = small.train
    config = BayesConfig(n_users=train.n_users, n_items=train.n_items, n_factors=3)
    features = (np.arange(train.n_items + 1), np.arange(train.n_items) % 5, 5)

    def sampler(device):
        return _Sampler(
            config, train.user_index, train.item_index, train.rating, 3.0,
            np.random.default_rng(4), features, device,
        )  # fmt: skip

    kernel, batched = sampler(None), sampler(torch.device("cpu"))
    assert kernel.on_device is None and batched.on_device is not None
    for _ in range(3):
        assert batched.sweep() == pytest.approx(kernel.sweep(), rel=1e-9)
    for name in ("user_vectors", "item_vectors", "item_implicit", "user_implicit", "features"):
        np.testing.assert_allclose(getattr(batched, name), getattr(kernel, name), atol=1e-8)
    np.testing.assert_allclose(batched.items.grams, kernel.items.grams, atol=1e-8)
    assert batched.alpha == pytest.approx(kernel.alpha, rel=1e-9)


class NoNoise:
    """A generator whose standard normals are all zero: each draw is its conditional mean."""

    def standard_normal(self, shape):
        return np.zeros(shape)


def assert_at_the_energys_minimum(sampler: _Sampler, name: str, weights, free, row: int):
    """The energy (the negative log posterior) rises whichever way `weights[row]` moves on
    the places its side draws: the row is at its conditional mean."""

    def energy() -> float:
        sampler.recompute_vectors()
        residuals = sampler.residuals()
        group = sampler.groups[name]
        prior = 0.5 * float((group.precision * (weights[:, free] - group.mean) ** 2).sum())
        return 0.5 * sampler.alpha * float(residuals @ residuals) + prior

    base = energy()
    for place in free:
        for step in (1e-3, -1e-3):
            weights[row, place] += step
            assert energy() > base
            weights[row, place] -= step


@pytest.mark.parametrize("signals", [True, False], ids=["with-signals", "features-alone"])
def test_the_sampler_draws_each_feature_row_from_its_conditional(small, signals):
    """As for the implicit rows: with the noise off the last feature row drawn sits at the
    energy's minimum (the energy recomputes every vector from the weights each time)."""
    train = small.train
    config = BayesConfig(
        n_users=train.n_users, n_items=train.n_items, n_factors=3, implicit_signals=signals
    )
    # three features over the items: every item has feature 0, even ones 1, every third 2
    items = np.arange(train.n_items)
    per_item = [[0, *([1] if i % 2 == 0 else []), *([2] if i % 3 == 0 else [])] for i in items]
    indptr = np.concatenate([[0], np.cumsum([len(f) for f in per_item])])
    columns = np.concatenate(per_item).astype(np.int32)
    sampler = _Sampler(
        config, train.user_index, train.item_index, train.rating, 3.0,
        np.random.default_rng(0), (indptr, columns, 3),
    )  # fmt: skip
    sampler.sweep()
    sampler.rng = NoNoise()
    sampler._own(sampler.by_item, sampler.q, sampler.item_vectors, sampler.user_vectors,
                 sampler.items, "q")  # fmt: skip
    sampler._implicit(sampler.feature_sets, sampler.features, sampler.item_vectors,
                      sampler.items, "g", sampler.of_items.scale)  # fmt: skip
    assert_at_the_energys_minimum(sampler, "g", sampler.features, sampler.items.free, 2)


def test_the_sampler_draws_each_implicit_row_from_its_conditional(small):
    """With the noise switched off a draw is the conditional mean: the energy is then at its
    minimum in the last implicit row drawn."""
    train = small.train
    config = BayesConfig(n_users=train.n_users, n_items=train.n_items, n_factors=3)
    sampler = _Sampler(
        config, train.user_index, train.item_index, train.rating, 3.0, np.random.default_rng(0)
    )
    sampler.sweep()
    sampler.rng = NoNoise()
    sampler._own(sampler.by_user, sampler.p, sampler.user_vectors, sampler.item_vectors,
                 sampler.users, "p")  # fmt: skip
    sampler._implicit(
        sampler.item_sets, sampler.item_implicit, sampler.user_vectors, sampler.users, "y"
    )
    last = int(np.flatnonzero(np.diff(sampler.item_sets.indptr))[-1])
    assert_at_the_energys_minimum(sampler, "y", sampler.item_implicit, sampler.users.free, last)


def test_fold_in_of_a_training_users_ratings_predicts_like_their_trained_row():
    ratings = latentrec.load_ratings("movielens-small")
    net, _ = latentrec.fit(ratings, "bayes", progress=False, samples=40, burn_in=10)
    recommender = Recommender(net, ratings)
    items = torch.arange(ratings.n_items)
    for user in (0, 100, 400):
        mine = ratings.user_index == user
        given = dict(
            zip(ratings.items.ids[ratings.item_index[mine]], ratings.rating[mine], strict=True)
        )
        new = recommender.fold_in(given)
        trained = net(torch.full_like(items, user), items)
        folded = net.predict(new.rows, net.item_rows())[0]
        assert float(torch.sqrt(((folded - trained) ** 2).mean())) < 0.1
        assert float(torch.corrcoef(torch.stack([folded, trained]))[0, 1]) > 0.95


@pytest.mark.parametrize("scale", [1e10, 1e-6])
def test_any_rating_scale_samples_alike(small, scale):
    """Regression (review): ratings of 1e10 made every sample NaN, and the model was saved;
    the sampler now works on the ratings over their span / 4.5, so predictions scale."""
    from dataclasses import replace

    def scaled(part):
        return replace(part, rating=(part.rating.astype(np.float64) * scale).astype(np.float32))

    base, _ = latentrec.fit(small, "bayes", progress=False, n_factors=4, seed=5, **FAST)
    other, history = latentrec.fit(
        (scaled(small.train), scaled(small.test)), "bayes", progress=False, n_factors=4,
        seed=5, **FAST,
    )  # fmt: skip
    assert base.config.unit == 1.0 and other.config.unit == pytest.approx(scale)
    assert history.epochs[-1].test_rmse == pytest.approx(
        evaluate(base, small.test)["rmse"] * scale, rel=1e-3
    )
    recommender = Recommender(other, scaled(small.train))
    rated = small.train.item_index[small.train.user_index == 0]
    given = {small.train.items.ids[i]: 3.0 * scale for i in rated[:5]}
    assert np.isfinite(recommender.predict(recommender.fold_in(given), [given.popitem()[0]])).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--factors", "0"], "n_factors must be a positive whole number, got 0"),
        (["--samples", "20", "--burn-in", "20"], "burn_in (20) must be below samples (20)"),
        (["--samples", "0"], "samples must be a positive whole number, got 0"),
        (["--kept", "0"], "kept must be a positive whole number, got 0"),
    ],
)
def test_bad_options_are_one_line(tmp_path, options, message):
    result = invoke("train", "--model", "bayes", "--out", tmp_path / "m", *options)
    assert message in one_error_line(result)
    assert not (tmp_path / "m").exists()


def test_kept_is_at_most_the_samples_after_the_burn_in():
    assert BayesConfig(samples=30, burn_in=20, kept=50).kept == 10
    with pytest.raises(ConfigError, match="implicit_signals must be true or false"):
        BayesConfig(implicit_signals="yes")
    with pytest.raises(ConfigError, match="item_features must be true or false"):
        BayesConfig(item_features="no")


def test_a_model_file_whose_config_disagrees_with_its_weights_is_one_line(tmp_path, small):
    net, _ = latentrec.fit(small, "bayes", progress=False, **FAST)
    latentrec.save(net, tmp_path / "m", small.train)
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["model"]["kept"] = 5  # as a model written by a build that kept fewer samples
    config_path.write_text(json.dumps(config))
    result = invoke("recommend", tmp_path / "m", "--user", small.train.users.ids[0])
    line = one_error_line(result)
    assert "does not fit its config" in line and "the config needs" in line
