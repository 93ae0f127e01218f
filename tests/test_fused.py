"""The compiled kernels' helpers: the parallel shuffle behind each epoch's order."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentrec import fused

pytestmark = pytest.mark.skipif(not fused.AVAILABLE, reason="numba is not installed")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(0, 5000), seed=st.integers(0, 2**63))
def test_permutation_holds_every_position_once(n, seed):
    order = fused.permutation(n, seed)
    assert order.dtype == np.int64
    assert np.array_equal(np.sort(order), np.arange(n))


def test_permutation_depends_on_the_seed_alone_not_on_the_threads():
    before = fused.numba.get_num_threads()
    try:
        fused.set_threads(1)
        one = fused.permutation(100_000, 11)
        fused.set_threads(2)
        two = fused.permutation(100_000, 11)
    finally:
        fused.set_threads(before)
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
        "import torch; from latentrec import fused; torch.set_num_threads(1); "
        "fused.set_threads(2); fused.permutation(10, 0); print(torch.get_num_threads())"
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
