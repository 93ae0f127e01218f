"""The compiled kernels' helpers: the parallel shuffle behind each epoch's order, and the
choice of threads on a busy machine."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import latentrec
from latentrec import fused, kernels

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="numba is not installed")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(0, 5000), seed=st.integers(0, 2**63))
def test_permutation_holds_every_position_once(n, seed):
    order = fused.permutation(n, seed)
    assert order.dtype == np.int64
    assert np.array_equal(np.sort(order), np.arange(n))


def test_permutation_depends_on_the_seed_alone_not_on_the_threads():
    before = kernels.numba.get_num_threads()
    try:
        kernels.set_threads(1)
        one = fused.permutation(100_000, 11)
        kernels.set_threads(2)
        two = fused.permutation(100_000, 11)
    finally:
        kernels.set_threads(before)
    assert np.array_equal(one, two)
    assert np.array_equal(one, fused.permutation(100_000, 11, parallel=False))
    assert not np.array_equal(one, fused.permutation(100_000, 12))


def test_every_order_is_equally_likely():
    """All 24 orders of 4 positions over 24,000 seeds: chi-square below its 0.1% point."""
    counts = dict.fromkeys(itertools.permutations(range(4)), 0)
    for seed in range(24_000):
        counts[tuple(fused.permutation(4, seed).tolist())] += 1
    expected = 24_000 / 24
    chi_square = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi_square < 49.7  # 23 degrees of freedom


def test_a_negative_length_is_refused():
    with pytest.raises(ValueError, match="n must be >= 0, got -1"):
        fused.permutation(-1, 0)


def test_starting_the_kernels_threads_leaves_torchs_thread_count_alone():
    """Regression: numba's OpenMP pool reset torch's threads, so torchrun workers oversubscribed."""
    script = (
        "import torch; from latentrec import fused, kernels; torch.set_num_threads(1); "
        "kernels.set_threads(2); fused.permutation(10, 0); print(torch.get_num_threads())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "1"


def test_the_one_thread_shuffle_never_starts_the_thread_pool_even_from_numbas_cache(tmp_path):
    """Regression: compiled from the same function, the one-thread shuffle loaded the parallel
    one's code from numba's cache, and torchrun workers ran two OpenMP threads each."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    both = "from latentrec import fused; fused.permutation(10, 0); fused.permutation(10, 0, False)"
    one = (
        "import torch; from numba.np.ufunc import parallel; from latentrec import fused; "
        "fused.permutation(10, 0, parallel=False); "
        "print(torch.get_num_threads(), parallel._is_initialized)"
    )
    outputs = []
    for script in (both, one, one):  # compile and cache both; then load from the cache
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
            env=env,
        )
        outputs.append(done.stdout.strip())
    assert any(tmp_path.rglob("*.nbi")), "numba wrote no cache"
    assert outputs[1:] == ["1 False", "1 False"]


@pytest.mark.parametrize("lanes", [1, 2, 3, 7, 16])
def test_every_lane_owns_a_fair_share_of_the_rows(lanes):
    """The kernel splits each table's rows between its threads by a hash of the row."""
    owners = np.array([fused._owner(row, lanes) for row in range(20_000)])
    assert owners.min() == 0 and owners.max() == lanes - 1
    shares = np.bincount(owners, minlength=lanes) / (20_000 / lanes)
    assert shares.min() > 0.95 and shares.max() < 1.05


@pytest.mark.parametrize(
    ("wanted", "n_cpus", "others", "threads"),
    [(2, 2, 0.0, 2), (2, 2, 0.15, 2), (2, 2, 0.3, 1), (2, 2, 1.0, 1), (2, 2, 3.0, 1),
     (16, 16, 1.0, 15), (16, 16, 2.5, 13), (4, 16, 1.0, 4), (1, 2, 0.0, 1)],
)  # fmt: skip
def test_the_kernels_leave_each_busy_core_to_whoever_keeps_it_busy(wanted, n_cpus, others, threads):
    assert kernels.threads_for(wanted, n_cpus, others) == threads


@pytest.mark.skipif(
    not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux's /proc/stat and two CPUs",
)
def test_a_busy_process_beside_training_takes_a_thread_away():
    """Regression (issue 14): beside one busy process, two threads on two cores stalled at
    every barrier of the kernel (an epoch took twice as long as on one thread)."""
    n_cpus = len(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        meter = kernels.FreeCores()
        time.sleep(0.2)
        assert meter.threads(n_cpus) <= n_cpus - 1
        assert meter.others > 0.8
    finally:
        busy.kill()
        busy.wait()


def test_training_gives_the_same_model_and_loss_whatever_threads_each_call_gets(monkeypatch):
    """The thread count changes with the machine's load from one kernel call to the next;
    the model and the reported loss must not."""
    ratings = latentrec.load_ratings("synthetic:ratings=4000,users=300,items=60,seed=3")
    # 250 steps an epoch: 8 kernel calls, each choosing its threads
    options = {"n_factors": 8, "epochs": 2, "batch_size": 16, "dtype": "float64"}
    options |= {"engine": "fused", "progress": False}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(kernels, "free_threads", lambda wanted: 1)
        steady, steady_history = latentrec.fit(ratings, "dot", **options)
        turns = itertools.cycle([2, 1, 1, 2])
        monkeypatch.setattr(kernels, "free_threads", lambda wanted: min(next(turns), wanted))
        changing, changing_history = latentrec.fit(ratings, "dot", **options)
    finally:
        torch.set_num_threads(threads)
    for name, value in steady.state_dict().items():
        assert torch.equal(value, changing.state_dict()[name]), name
    losses = [[e.train_loss for e in h.epochs] for h in (steady_history, changing_history)]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("lanes", [1, 2])
def test_compress_adds_repeated_pairs_in_first_seen_order(monkeypatch, lanes):
    """Compressed rows against a plain reference: each row's columns in the order first seen,
    repeated ones added, whether one thread or two split the entries."""
    monkeypatch.setattr(kernels, "free_threads", lambda wanted: lanes)
    rng = np.random.default_rng(1)
    for n, n_rows, n_cols in [(5000, 30, 20), (7, 3, 3), (0, 4, 4)]:
        rows, cols = rng.integers(0, n_rows, n), rng.integers(0, n_cols, n)
        weights = rng.random(n).astype(np.float32)
        indptr, got_cols, got_weights = kernels.compress(rows, cols, weights, n_rows)
        assert indptr[0] == 0 and indptr[-1] == len(got_cols) == len(got_weights)
        for r in range(n_rows):
            expected: dict[int, float] = {}
            for k in np.flatnonzero(rows == r):
                expected[int(cols[k])] = expected.get(int(cols[k]), 0.0) + float(weights[k])
            span = slice(indptr[r], indptr[r + 1])
            assert got_cols[span].tolist() == list(expected)
            assert got_weights[span] == pytest.approx(list(expected.values()), rel=1e-5)


@pytest.mark.parametrize("lanes", [1, 2])
def test_transpose_gives_each_column_its_rows_in_order(monkeypatch, lanes):
    """The item side ALS solves from the user side's compressed rows: every entry once, under
    its column, rows increasing, weights along (one for all stays one), on one thread or two."""
    monkeypatch.setattr(kernels, "free_threads", lambda wanted: lanes)
    rng = np.random.default_rng(2)
    for n, n_rows, n_cols in [(4000, 40, 25), (5, 3, 6), (0, 2, 2)]:
        rows, cols = rng.integers(0, n_rows, n), rng.integers(0, n_cols, n)
        weights = rng.random(n).astype(np.float32) + 0.5
        by_row = kernels.compress(rows, cols, weights, n_rows)
        indptr, got_rows, got_weights = kernels.transpose(*by_row, n_cols)
        assert indptr[0] == 0 and indptr[-1] == len(by_row[1]) == len(got_rows)
        dense = np.zeros((n_rows, n_cols), dtype=np.float32)
        for r in range(n_rows):
            span = slice(by_row[0][r], by_row[0][r + 1])
            dense[r, by_row[1][span]] = by_row[2][span]
        for c in range(n_cols):
            span = slice(indptr[c], indptr[c + 1])
            assert got_rows[span].tolist() == np.flatnonzero(dense[:, c]).tolist()
            assert got_weights[span].tolist() == dense[got_rows[span], c].tolist()
        one = kernels.transpose(by_row[0], by_row[1], np.array([3.0], np.float32), n_cols)
        assert one[1].tolist() == got_rows.tolist() and one[2].tolist() == [3.0]


def _reference_permutation(n: int, seed: int) -> np.ndarray:
    """`fused.permutation`'s algorithm, written out in numpy and Python: positions into 1024
    buckets by a hash of (seed, position), each bucket in position order, then shuffled by a
    stream of its own."""

    def mix(x):
        with np.errstate(over="ignore"):
            x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))

    golden = np.uint64(0x9E3779B97F4A7C15)
    key = mix(np.uint64(seed))
    with np.errstate(over="ignore"):
        buckets = mix(key + np.arange(n, dtype=np.uint64) * golden) >> np.uint64(54)
    out = np.argsort(buckets, kind="stable")
    starts = np.searchsorted(buckets[out], np.arange(1025))
    for b in range(1024):
        with np.errstate(over="ignore"):
            state = mix(key ^ mix(np.uint64(b) + golden))
        first = int(starts[b])
        for j in range(int(starts[b + 1]) - first - 1, 0, -1):
            with np.errstate(over="ignore"):
                state = state + golden
            pick = int((mix(state) >> np.uint64(11)) % np.uint64(j + 1))
            out[first + j], out[first + pick] = out[first + pick], out[first + j]
    return out


@pytest.mark.parametrize("n", [0, 3, 4096, 50_000])
def test_the_order_is_the_algorithms_whatever_the_chunks_counted_apart(n):
    """Small n count positions in fewer chunks (one below 8,192): the order is the same."""
    for seed in (0, 99):
        expected = _reference_permutation(n, seed)
        assert np.array_equal(fused.permutation(n, seed), expected)
        assert np.array_equal(fused.permutation(n, seed, parallel=False), expected)


def _cells(users, items, positions, block_users, block_items, n_items):
    per_row = -(-n_items // block_items)
    return (users[positions] // block_users) * per_row + items[positions] // block_items


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    n=st.integers(0, 3000),
    n_users=st.integers(1, 60),
    n_items=st.integers(1, 60),
    blocks=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    seed=st.integers(0, 2**63),
)
def test_a_blocked_order_holds_every_rating_once_and_visits_each_cell_in_one_run(
    n, n_users, n_items, blocks, seed
):
    rng = np.random.default_rng(seed % 1000)
    users = rng.integers(0, n_users, n).astype(np.int32)
    items = rng.integers(0, n_items, n).astype(np.int32)
    grouped, starts = fused.cell_layout(users, items, n_users, n_items, *blocks)
    cells = _cells(users, items, grouped, *blocks, n_items)
    assert np.all(np.diff(cells) >= 0)  # grouped cell by cell, in cell order
    assert np.array_equal(starts, np.searchsorted(cells, np.arange(len(starts))))
    for b in range(len(starts) - 1):  # stable: each cell's ratings as the data hold them
        assert np.all(np.diff(grouped[starts[b] : starts[b + 1]]) > 0)
    order = fused.blocked_order(starts, seed)
    assert order.dtype == np.int64
    assert np.array_equal(np.sort(order), np.arange(n))
    visited = cells[order]
    runs = 1 + np.count_nonzero(visited[1:] != visited[:-1]) if n else 0
    assert runs == len(np.unique(cells))  # a cell, once left, never comes back


def test_a_blocked_order_depends_on_the_seed_alone_not_on_the_threads():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 500, 100_000).astype(np.int32)
    items = rng.integers(0, 300, 100_000).astype(np.int32)
    args = (users, items, 500, 300, 64, 64)
    before = kernels.numba.get_num_threads()
    try:
        kernels.set_threads(1)
        grouped, starts = fused.cell_layout(*args)
        one = fused.blocked_order(starts, 11)
        kernels.set_threads(2)
        assert all(map(np.array_equal, fused.cell_layout(*args), (grouped, starts)))
        two = fused.blocked_order(starts, 11)
    finally:
        kernels.set_threads(before)
    assert all(map(np.array_equal, fused.cell_layout(*args, parallel=False), (grouped, starts)))
    assert np.array_equal(one, two)
    assert np.array_equal(one, fused.blocked_order(starts, 11, parallel=False))
    assert not np.array_equal(one, fused.blocked_order(starts, 12))
    # the cells come in another order too, not only their ratings
    cells = _cells(users, items, grouped, 64, 64, 300)
    assert len({cells[fused.blocked_order(starts, seed)[0]] for seed in range(10)}) > 3


def test_a_blocked_layout_refuses_mismatched_ratings_and_empty_blocks():
    users = np.zeros(3, dtype=np.int32)
    with pytest.raises(ValueError, match="differ in length: 3 and 2"):
        fused.cell_layout(users, users[:2], 1, 1)
    with pytest.raises(ValueError, match="block_items must be >= 1, got 0"):
        fused.cell_layout(users, users, 1, 1, block_items=0)
