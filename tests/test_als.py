"""The als model: its loss, its row solves against a dense reference, and its fold-in."""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pytest
import torch

from latentrec import Recommender, fit
from latentrec.data import IdMap, Ratings
from latentrec.errors import DataError
from latentrec.models import Als, AlsConfig


def interactions(n_users: int = 30, n_items: int = 12, seed: int = 0) -> Ratings:
    """Random interactions with counts (some pairs repeated: their weights add up)."""
    rng = np.random.default_rng(seed)
    users = np.r_[np.arange(n_users), rng.integers(0, n_users, 150)]
    items = np.r_[np.arange(n_users) % n_items, rng.integers(0, n_items, 150)]
    return Ratings(
        users,
        items,
        rng.integers(1, 4, len(users)).astype(np.float32),
        IdMap(np.arange(n_users, dtype=np.int64)),
        IdMap(np.arange(n_items, dtype=np.int64) + 100),
        source="random counts",
        implicit=True,
    )


def weights_matrix(data: Ratings) -> np.ndarray:
    dense = np.zeros((data.n_users, data.n_items))
    np.add.at(dense, (data.user_index, data.item_index), data.rating)
    return dense


def dense_half(fixed: np.ndarray, weights: np.ndarray, l2: float, alpha: float) -> np.ndarray:
    """Each row's exact least-squares solution (float64): (Y'C_uY + λI) x = Y'C_u p_u."""
    k = fixed.shape[1]
    rows = []
    for w in weights:
        confidence = 1.0 + alpha * w
        preference = (w > 0).astype(np.float64)
        lhs = fixed.T @ (confidence[:, None] * fixed) + l2 * np.eye(k)
        rows.append(np.linalg.solve(lhs, fixed.T @ (confidence * preference)))
    return np.array(rows)


def test_the_loss_falls_every_iteration():
    losses = []
    fit(
        interactions(),
        "als",
        n_factors=4,
        iterations=12,
        l2=0.1,
        progress=False,
        on_epoch=lambda stats: losses.append(stats.train_loss),
    )
    assert len(losses) == 12
    assert all(later < earlier for earlier, later in itertools.pairwise(losses))


def test_an_iteration_is_the_dense_alternating_solve():
    """With enough conjugate-gradient steps (in exact arithmetic, as many as factors) a half
    is the exact row solve."""
    data = interactions()
    options = {"n_factors": 5, "l2": 0.3, "alpha": 2.0, "cg_steps": 25}
    torch.manual_seed(0)
    start = Als(data.n_users, data.n_items, **options)
    users0 = start.user_factors.weight.detach().double().numpy()
    net, _ = fit(data, AlsConfig(iterations=1, **options), seed=0, progress=False)
    weights = weights_matrix(data)
    # the items' half first, from the users fit starts with (it seeds torch as this test did)
    items = dense_half(users0, weights.T, 0.3, 2.0)
    fitted_items = net.item_factors.weight.detach().double().numpy()
    assert np.allclose(fitted_items, items, atol=1e-4)
    users = dense_half(fitted_items, weights, 0.3, 2.0)  # then the users', from those items
    assert np.allclose(net.user_factors.weight.detach().numpy(), users, atol=1e-4)
    assert not np.allclose(users, users0, atol=1e-2)  # the solve moved them


def test_fold_in_of_a_training_user_gives_their_scores():
    data = interactions()
    net, _ = fit(data, "als", n_factors=4, iterations=5, cg_steps=4, l2=0.1, progress=False)
    rec = Recommender(net, data)
    dense = weights_matrix(data)
    for user in (0, 7, 29):
        own = {int(data.items.ids[i]): float(dense[user, i]) for i in np.flatnonzero(dense[user])}
        folded = rec.recommend(rec.fold_in(own), k=data.n_items, exclude_seen=False)
        trained = rec.recommend(user, k=data.n_items, exclude_seen=False)
        mine = {r.item_id: r.score for r in folded}
        assert [mine[r.item_id] for r in trained] == pytest.approx(
            [r.score for r in trained], abs=1e-4
        )


def test_the_batched_solve_is_the_kernels(monkeypatch):
    """The tensor path (what CUDA runs) gives the compiled kernel's factors and losses, on the
    CPU here; ENTRY_CHUNK shrunk so that the interactions span several chunks."""
    from latentrec.models import als
    from latentrec.training import _Interactions

    monkeypatch.setattr(als, "ENTRY_CHUNK", 64)
    data = interactions(n_users=60, n_items=20, seed=3)
    options = {"n_factors": 6, "l2": 0.2, "alpha": 1.5, "iterations": 4, "cg_steps": 3}
    torch.manual_seed(0)
    kernel = Als(data.n_users, data.n_items, **options)
    batched = Als(data.n_users, data.n_items, **options)
    batched.load_state_dict(kernel.state_dict())
    start = kernel.user_factors.weight.detach().clone()
    losses: tuple[list[float], list[float]] = ([], [])
    solved = _Interactions(data)
    kernel.solve(solved, lambda i, loss: losses[0].append(loss))
    batched.solve_batched(
        solved.by_user(), solved.by_item(), lambda i, loss: losses[1].append(loss)
    )
    for name in ("user_factors", "item_factors"):
        mine = getattr(batched, name).weight.detach()
        theirs = getattr(kernel, name).weight.detach()
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-4), name
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert not torch.allclose(kernel.user_factors.weight, start, atol=1e-2)  # the solve moved


def test_a_fit_gives_the_garbage_collector_back_as_it_found_it():
    """The solve runs with Python's cyclic collector paused (loading the compiled kernels
    otherwise triggers collections that walk every object of the process), and the user's
    setting is back afterwards: on, off, and after a fit that fails."""
    paused = []
    fit(interactions(), "als", iterations=2, progress=False,
        on_epoch=lambda stats: paused.append(not gc.isenabled()))  # fmt: skip
    assert paused == [True, True]
    assert gc.isenabled()
    gc.disable()
    try:
        fit(interactions(), "als", iterations=1, progress=False)
        assert not gc.isenabled()
    finally:
        gc.enable()
    data = interactions()
    data.rating[:] = 0.0
    with pytest.raises(DataError, match="these data hold 0"):
        fit(data, "als", iterations=1, progress=False)
    assert gc.isenabled()
