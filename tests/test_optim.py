"""Row-sparse AdamW, row-wise Adagrad and exact gradient accumulation."""

from __future__ import annotations

import mmap

import numpy as np
import pytest
import torch

from latentrec import DotProductBias, fit
from latentrec.data import IdMap, Ratings
from latentrec.errors import ConfigError
from latentrec.models import HUGE_PAGE
from latentrec.optim import (
    RowSparseAdamW,
    RowWiseAdagrad,
    StepRunner,
    TrainingForward,
    make_optimizer,
)


def test_row_sparse_adamw_matches_dense_adamw_on_touched_rows():
    torch.manual_seed(0)
    weight = torch.randn(6, 3)
    sparse_param = torch.nn.Parameter(weight.clone())
    dense_param = torch.nn.Parameter(weight.clone())
    rows = torch.tensor([1, 4])
    grad_rows = torch.randn(2, 3)
    sparse_param.grad = torch.sparse_coo_tensor(
        rows[None], grad_rows, (6, 3), check_invariants=True
    )
    dense_grad = torch.zeros(6, 3)
    dense_grad[rows] = grad_rows
    dense_param.grad = dense_grad
    options = {"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-5, "weight_decay": 0.3}
    RowSparseAdamW([sparse_param], **options).step()
    torch.optim.AdamW([dense_param], **options).step()
    assert torch.allclose(sparse_param[rows], dense_param[rows], atol=1e-6)
    untouched = torch.tensor([0, 2, 3, 5])
    assert torch.equal(sparse_param[untouched], weight[untouched])


def test_row_wise_adagrad_keeps_one_number_per_row_and_moves_only_touched_rows():
    """acc[r] += mean(g[r] ** 2); w[r] = w[r] * (1 - lr * wd) - lr * g[r] / (sqrt(acc[r]) + eps),
    computed here by hand over two steps; untouched rows keep weights and accumulator."""
    torch.manual_seed(0)
    weight = torch.randn(6, 3, dtype=torch.float64)
    param = torch.nn.Parameter(weight.clone())
    optimizer = RowWiseAdagrad([{"params": [param], "rows": True}], lr=0.1, weight_decay=0.3)
    expected, total = weight.clone(), torch.zeros(6, dtype=torch.float64)
    for rows in (torch.tensor([1, 4]), torch.tensor([4, 5])):
        grad_rows = torch.randn(2, 3, dtype=torch.float64)
        param.grad = torch.sparse_coo_tensor(
            rows[None], grad_rows, (6, 3), is_coalesced=True, check_invariants=True
        )
        optimizer.step()
        for row, g in zip(rows.tolist(), grad_rows, strict=True):
            total[row] += (g * g).mean()
            step = 0.1 / (total[row].sqrt() + optimizer.defaults["eps"])
            expected[row] = expected[row] * (1 - 0.1 * 0.3) - step * g
    state = optimizer.state_for(param)["moments"]
    assert state.shape == (1, 6, 1)  # one accumulator per row, not per weight
    assert torch.allclose(state.flatten(), total, rtol=0, atol=1e-15)
    assert torch.allclose(param.detach(), expected, rtol=0, atol=1e-15)
    assert torch.equal(param.detach()[[0, 2, 3]], weight[[0, 2, 3]])


def _ratings(n: int, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Ratings:
    rng = np.random.default_rng(seed)
    return Ratings(
        rng.integers(0, n_users, n),
        rng.integers(0, n_items, n),
        rng.uniform(0.5, 5.0, n).astype(np.float32),
        IdMap(np.arange(n_users)),
        IdMap(np.arange(n_items)),
    )


EXACT = {"dtype": "float64", "progress": False, "evaluate_every_epoch": False}
MODELS = (
    [
        ("dot", {"n_factors": 6, "engine": engine, "optimizer": optimizer})
        for optimizer in ("adamw", "adagrad")
        for engine in ("autograd", "fused")
    ]
    + [
        ("nn", {"layers": (16, 8), "emb_dropout": 0.0, "optimizer": optimizer})
        for optimizer in ("adamw", "adagrad")
    ]
    + [("dot", {"n_factors": 6, "engine": engine, "l2": 0.2}) for engine in ("autograd", "fused")]
)


def _max_difference(first, second) -> float:
    state = second.state_dict()
    return max(
        (value - state[name]).abs().max().item() for name, value in first.state_dict().items()
    )


@pytest.mark.parametrize(("model", "options"), MODELS)
def test_one_step_of_micro_batches_equals_one_large_batch(model, options):
    """(B, N) and (B*N, 1) take the same AdamW step: gradients summed over the group."""
    ratings = _ratings(96)  # one group of 96 = 4 micro-batches of 24
    accumulated, _ = fit(ratings, model, epochs=1, batch_size=24, accumulate=4, **options, **EXACT)
    large, _ = fit(ratings, model, epochs=1, batch_size=96, accumulate=1, **options, **EXACT)
    assert _max_difference(accumulated, large) < 1e-9


@pytest.mark.parametrize(("model", "options"), MODELS)
def test_an_epoch_with_a_short_last_group_matches(model, options):
    """With 250 rows and groups of 64, the last group has 58 rows: 3 micro-batches of
    16 and one of 10. Weighting by samples (not by micro-batch count) keeps it exact."""
    ratings = _ratings(250)
    accumulated, _ = fit(ratings, model, epochs=2, batch_size=16, accumulate=4, **options, **EXACT)
    large, _ = fit(ratings, model, epochs=2, batch_size=64, accumulate=1, **options, **EXACT)
    assert _max_difference(accumulated, large) < 1e-7


@pytest.mark.parametrize(
    ("optimizer", "l2", "order"),
    [("adamw", 0.0, "shuffled"), ("adamw", 0.3, "shuffled"), ("adagrad", 0.0, "shuffled"),
     ("adagrad", 0.3, "shuffled"), ("adamw", 0.3, "blocked"), ("adagrad", 0.3, "blocked")],
)  # fmt: skip
def test_fused_engine_takes_the_same_steps_as_autograd(optimizer, l2, order, monkeypatch):
    """The compiled kernel is the same mathematics as autograd + the optimiser: after two
    epochs of accumulated steps (with a short last group) the parameters agree, with and
    without the per-rating L2 penalty, in either epoch order (blocks small enough for many
    cells here)."""
    monkeypatch.setattr("latentrec.fused.BLOCK_USERS", 7)
    monkeypatch.setattr("latentrec.fused.BLOCK_ITEMS", 5)
    ratings = _ratings(250)
    options = {
        "order": order,
        "n_factors": 6,
        "epochs": 2,
        "batch_size": 16,
        "accumulate": 4,
        "optimizer": optimizer,
        "l2": l2,
        "wd": 0.01,
        **EXACT,
    }
    autograd, first = fit(ratings, "dot", engine="autograd", **options)
    fused, second = fit(ratings, "dot", engine="fused", **options)
    assert (first.engine, second.engine) == ("autograd", "fused")
    assert _max_difference(autograd, fused) < 1e-10
    assert second.epochs[-1].train_loss == pytest.approx(first.epochs[-1].train_loss, rel=1e-9)


@pytest.mark.parametrize("optimizer", ["adamw", "adagrad"])
def test_fused_engine_gives_the_same_model_on_any_number_of_threads(optimizer):
    """Threads own disjoint rows and add gradients in rating order: no run-to-run noise."""
    ratings = _ratings(3000, n_users=300, n_items=50)
    options = {
        "n_factors": 8,
        "epochs": 2,
        "batch_size": 256,
        "engine": "fused",
        "optimizer": optimizer,
    }
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = fit(ratings, "dot", progress=False, **options)
        torch.set_num_threads(2)
        two, _ = fit(ratings, "dot", progress=False, **options)
    finally:
        torch.set_num_threads(threads)
    assert _max_difference(one, two) == 0.0


def test_auto_engine_falls_back_to_autograd_where_the_kernel_does_not_apply():
    ratings = _ratings(200)
    _, history = fit(ratings, "dot", epochs=1, negatives=2, progress=False)
    assert history.engine == "autograd"
    _, history = fit(ratings, "dot", epochs=1, progress=False)
    assert history.engine == "fused"


def test_asking_the_fused_engine_for_the_nn_model_says_why_not():
    with pytest.raises(ConfigError, match="the nn model trains with autograd"):
        fit(_ratings(50), "nn", engine="fused", epochs=1, progress=False)
    with pytest.raises(ConfigError, match="engine must be one of auto, fused, autograd"):
        fit(_ratings(50), "dot", engine="numba", epochs=1, progress=False)


class _RecordingOptimizer:
    """Stands in for the optimiser: keeps the accumulated gradients instead of stepping."""

    def __init__(self, net):
        self.net, self.grads = net, {}

    def step(self):
        for name, p in self.net.named_parameters():
            self.grads[name] = p.grad.to_dense().clone()


def test_accumulated_gradient_is_the_gradient_of_the_group_mean():
    """Regression guard for the usual accumulation bug (dividing by the number of micro-batches):
    with micro-batches of 16, 16 and 8 rows, the short one must weigh half as much."""
    torch.manual_seed(0)
    net = DotProductBias(40, 30, n_factors=5).double()
    with torch.no_grad():
        for table in net.tables().values():
            table.weight.normal_(0, 0.5)
    ratings = _ratings(40)
    users = torch.as_tensor(ratings.user_index)
    items = torch.as_tensor(ratings.item_index)
    target = torch.as_tensor(ratings.rating, dtype=torch.float64)
    recorder = _RecordingOptimizer(net)
    StepRunner(net, users, items, target, 16, recorder).step(torch.arange(40))
    loss = torch.nn.functional.mse_loss(net(users, items), target)
    expected = torch.autograd.grad(loss, list(net.parameters()))
    for (name, _), grad in zip(net.named_parameters(), expected, strict=True):
        assert torch.allclose(recorder.grads[name], grad, atol=1e-12), name
    buggy = (
        sum(
            torch.autograd.grad(
                torch.nn.functional.mse_loss(net(users[s], items[s]), target[s]),
                net.user_factors.weight,
            )[0]
            for s in (slice(0, 16), slice(16, 32), slice(32, 40))
        )
        / 3
    )
    assert not torch.allclose(buggy, recorder.grads["user_factors.weight"], atol=1e-6)


@pytest.mark.parametrize("engine", ["autograd", "fused"])
def test_progress_counts_optimiser_steps(board, monkeypatch, engine):
    from latentrec import training

    seen: list[tuple[int, int]] = []
    original = training._Progress.__init__

    def record(self, config, total_steps):
        original(self, config, total_steps)
        self.update = lambda steps_done, loss: seen.append((steps_done, total_steps))

    monkeypatch.setattr(training._Progress, "__init__", record)
    fit(board, "dot", epochs=2, batch_size=32, accumulate=4, engine=engine, progress=False)
    per_epoch = -(-len(board[0]) // 128)  # optimiser steps of 32 x 4 ratings, not micro-batches
    assert seen[-1] == (2 * per_epoch, 2 * per_epoch)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def test_l2_penalises_each_row_once_per_rating_that_reads_it():
    """With l2, a step's gradient is that of mean over its ratings of (error^2 + l2 * the
    squared norms of the rows the rating read): a row read by three ratings is pulled three
    times as hard as one read once (cornac's and Surprise's regularisation), and a row no
    rating read gets none. Through the torchrun forward too."""
    torch.manual_seed(0)
    net = DotProductBias(40, 30, n_factors=5).double()
    with torch.no_grad():
        for table in net.tables().values():
            table.weight.normal_(0, 0.5)
    users = torch.tensor([3, 3, 3, 7, 9])
    items = torch.tensor([1, 2, 4, 1, 5])
    target = torch.tensor([4.0, 3.0, 5.0, 2.5, 1.0], dtype=torch.float64)
    l2 = 0.7
    squared = net.user_factors(users).square().sum(1) + net.item_factors(items).square().sum(1)
    squared = squared + net.user_bias(users)[:, 0] ** 2 + net.item_bias(items)[:, 0] ** 2
    loss = torch.nn.functional.mse_loss(net(users, items), target) + l2 * squared.mean()
    expected = dict(
        zip(
            (name for name, _ in net.named_parameters()),
            torch.autograd.grad(loss, list(net.parameters())),
            strict=True,
        )
    )
    penalty_only = 2 * l2 / 5 * net.user_factors.weight[3].detach()
    # micro-batches of 2 (accumulated), and one through the torchrun forward
    for batch, forward in ((2, None), (5, TrainingForward(net, sparse=True))):
        recorder = _RecordingOptimizer(net)
        StepRunner(net, users, items, target, batch, recorder, ddp=forward, l2=l2).step(
            torch.arange(5)
        )
        for name, grad in expected.items():
            assert torch.allclose(recorder.grads[name], grad, atol=1e-12), name
        unpenalised = StepRunner(net, users, items, target, 5, _RecordingOptimizer(net))
        unpenalised.step(torch.arange(5))
        difference = (
            recorder.grads["user_factors.weight"]
            - unpenalised.optimizer.grads["user_factors.weight"]
        )
        assert torch.allclose(difference[3], 3 * penalty_only, atol=1e-12)  # three ratings
        assert torch.equal(difference[0], torch.zeros(5, dtype=torch.float64))  # none


def test_a_bad_l2_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"l2 must be zero or positive, got -0\.1"):
        fit(_ratings(50), "dot", l2=-0.1, epochs=1, progress=False)


def test_dense_table_gradients_take_the_same_lazy_step_as_sparse_ones():
    """Under NCCL the tables get dense gradients; the optimiser must still move only the rows
    the step touched, exactly as with the row-sparse gradients gloo all-reduces."""
    ratings = _ratings(64)
    users = torch.as_tensor(ratings.user_index)
    items = torch.as_tensor(ratings.item_index)
    target = torch.as_tensor(ratings.rating, dtype=torch.float64)
    nets = []
    for sparse in (True, False):
        torch.manual_seed(0)
        net = DotProductBias(40, 30, n_factors=5).double()
        before = net.user_factors.weight.detach().clone()
        optimizer = make_optimizer(net, 0.01, (0.9, 0.99), 1e-5, 0.5)
        forward = TrainingForward(net, sparse=sparse)
        StepRunner(net, users, items, target, 64, optimizer, ddp=forward).step(torch.arange(64))
        untouched = torch.ones(40, dtype=torch.bool)
        untouched[users] = False
        assert torch.equal(net.user_factors.weight[untouched], before[untouched])
        nets.append(net)
    assert _max_difference(*nets) < 1e-12


def test_moments_of_a_large_table_share_its_huge_page_memory():
    """Training reads a row's moments with the row: they get the table's huge-page memory."""
    net = DotProductBias(20_000, 10, n_factors=50)  # 4 MB of user factors
    optimizer = make_optimizer(net, lr=0.01, betas=(0.9, 0.99), eps=1e-5, weight_decay=0.0)
    for table, huge in ((net.user_factors, True), (net.item_factors, False)):
        moments = optimizer.state_for(table.weight)["moments"]
        assert moments.shape == (2, *table.weight.shape) and not moments.any()
        if hasattr(mmap, "MADV_HUGEPAGE"):
            assert (table.weight.data_ptr() % HUGE_PAGE == 0) == huge
            assert (moments.data_ptr() % HUGE_PAGE == 0) == huge
