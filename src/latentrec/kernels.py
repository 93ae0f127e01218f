"""Compiled building blocks that the models and the training kernel share (numba): how many
threads a kernel runs and how busy other processes keep the cores (`FreeCores`), the prefetch
hint, and interactions as compressed rows (`compress`, `transpose`) and their Gram matrix
(`gram`).

Upstream of the models (`models/als.py` solves on compressed rows with prefetching) and of
`fused.py` (the dot model's training step), so that imports flow one way.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections.abc import Iterator

import numpy as np
import torch

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # numba is a dependency, but a broken install should only cost speed
    numba = njit = None
    prange = range

AVAILABLE = numba is not None
# reassociation lets the compiler vectorise the dot products and row updates; no fast-math
# for sqrt/exp and no assumptions about NaN or infinity
_FAST = {"reassoc", "contract", "nsz"}


def set_threads(n: int) -> int:
    """Use n threads (at most numba's pool size) in the kernels; returns how many.

    numba's OpenMP pool shares the OpenMP runtime with torch, and starting it sets the
    runtime's thread count to the pool's size, which torch then uses too: under torchrun, whose
    workers get one thread each, every worker would run torch on all cores and the workers
    would contend for them. So torch's thread count is put back after the pool starts.
    """
    if not AVAILABLE:
        return 1
    torch_threads = torch.get_num_threads()
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    torch.set_num_threads(torch_threads)
    return n


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the kernels on n threads (at most the count `set_threads` gave) inside the block."""
    if not AVAILABLE:
        yield
        return
    before = numba.get_num_threads()
    chosen = max(1, min(n, before))
    if chosen == before:  # the usual case, at no cost: setting the count takes time
        yield
        return
    numba.set_num_threads(chosen)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off inside the block, as it was after it.

    For compiled work: the first kernel call of a process loads numba's machinery, tens of
    thousands of small objects, and each collection that this triggers walks every object the
    process holds (torch's and pandas's: some 300,000). The kernels themselves make no Python
    objects; what the block leaves unreachable is collected after it.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# a core that other processes use more than this fraction of is not free for the kernels
BUSY_CORE = 0.2
# the shortest window, in seconds, FreeCores measures over: /proc/stat counts idle time in
# clock ticks (10 ms), whose rounding would swamp a shorter window
_MIN_WINDOW = 0.03


def threads_for(wanted: int, n_cpus: int, others: float) -> int:
    """How many threads (1..wanted) to run on n_cpus CPUs of which other processes use
    `others` (in cores): one fewer for each core they use more than BUSY_CORE of."""
    return max(1, min(wanted, n_cpus - math.ceil(others - BUSY_CORE)))


def _idle_seconds(cpus: frozenset[int], tick: float) -> float | None:
    """The seconds the given CPUs have been idle since boot (idle or waiting for I/O), from
    /proc/stat; None where it cannot be read."""
    idle = 0
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    idle += int(fields[3]) + int(fields[4])  # after user, nice, system
    except (OSError, ValueError, IndexError):
        return None
    return idle * tick


class FreeCores:
    """How many threads the kernels should run, from how busy other processes keep this
    process's CPUs (from Linux's /proc/stat; elsewhere always the threads asked for).

    A thread that waits for a core stalls every barrier of a step, and a team's waiting
    threads spin meanwhile, taking the core from the thread they wait for: beside a busy
    process, two threads on two cores are slower than one. `threads` measures, over the time
    since its last measurement, the CPU time that neither idled nor ran this process (other
    processes, the kernel, a hypervisor's steal), and runs one thread fewer for each core that
    took more than `BUSY_CORE` of. Every thread count trains the same model, so the choice
    changes only speed.
    """

    def __init__(self) -> None:
        affinity = getattr(os, "sched_getaffinity", None)
        self.cpus = frozenset(affinity(0)) if affinity else frozenset()
        self.tick = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self.others = 0.0  # cores that other processes used in the last window
        self.last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        idle = _idle_seconds(self.cpus, self.tick) if self.cpus else None
        return None if idle is None else (time.perf_counter(), idle, time.process_time())

    def threads(self, wanted: int) -> int:
        """Threads (1..wanted) for the next call of a kernel."""
        if self.last is None:
            return wanted
        if time.perf_counter() - self.last[0] >= _MIN_WINDOW:  # else /proc/stat is not read
            now = self._sample()
            if now is None:
                return wanted
            wall, idle, own = (a - b for a, b in zip(now, self.last, strict=True))
            self.others = max(0.0, len(self.cpus) - (idle + own) / wall)
            self.last = now
        return threads_for(wanted, len(self.cpus), self.others)


# one for the process, whose CPUs they are: measuring from the import on, a fit's first call
# already knows how busy the machine was while the data loaded
_FREE_CORES = FreeCores()


def free_threads(wanted: int) -> int:
    """Threads (1..wanted) for the next call of a kernel: fewer where other processes keep
    cores busy (`FreeCores`)."""
    return _FREE_CORES.threads(wanted)


def parallel_kernel(func):
    """A parallel compiled kernel, cached on disk (the plain function without numba)."""
    if not AVAILABLE:
        return func
    return njit(parallel=True, cache=True, fastmath=_FAST, nogil=True)(func)


def inlined(func):
    """A compiled helper inlined into the kernels that call it."""
    if not AVAILABLE:
        return func
    return njit(inline="always", fastmath=_FAST)(func)


# how many rows ahead the kernel asks for the rows it will read: a random row of a large table
# is a trip to memory, and asking early lets those trips overlap
AHEAD = 16


def _prefetch_codegen(context, builder, signature, args):  # pragma: no cover - compiled
    array_type, row_type = signature.args
    array = context.make_array(array_type)(context, builder, args[0])
    row = context.cast(builder, args[1], row_type, types.intp)
    zero = context.get_constant(types.intp, 0)
    index = [row] + [zero] * (array_type.ndim - 1)
    first = cgutils.get_item_pointer(context, builder, array_type, array, index, wraparound=False)
    byte = ir.IntType(8).as_pointer()
    start = builder.bitcast(first, byte)
    itemsize = context.get_abi_sizeof(context.get_data_type(array_type.dtype))
    length = context.get_constant(types.intp, itemsize)
    if array_type.ndim == 2:
        length = builder.mul(builder.extract_value(array.shape, 1), length)
    int32 = ir.IntType(32)
    hint = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(ir.VoidType(), [byte, int32, int32, int32]),
        "llvm.prefetch.p0",
    )
    line = context.get_constant(types.intp, 64)
    with cgutils.for_range_slice(builder, zero, length, line) as (offset, _):
        # read, keep in all cache levels, data
        builder.call(hint, [builder.gep(start, [offset]), int32(0), int32(3), int32(1)])
    return context.get_dummy_value()


if AVAILABLE:

    @intrinsic
    def prefetch(typingctx, array, row):  # pragma: no cover - compiled
        """Ask the CPU to start loading the cache lines of array[row] (a C-ordered 1-D or 2-D
        array); a hint: nothing waits for it and nothing changes."""
        if not (
            isinstance(array, types.Array)
            and array.ndim in (1, 2)
            and array.layout == "C"
            and isinstance(row, types.Integer)
        ):
            return None
        return types.void(array, row), _prefetch_codegen

else:

    def prefetch(array, row):
        """A no-op without numba."""


@parallel_kernel
def _gram_rows(
    item_indptr, item_users, item_weights, user_indptr, user_items, user_weights, out
):  # pragma: no cover - compiled; tested through gram
    """out[a, b] += w_ua * w_ub over every user u with both items: row a of X'X is the sum of
    the rows of X of a's users. Rows of `out` are split over the threads: no two write one."""
    for a in prange(len(item_indptr) - 1):
        row = out[a]
        for k in range(item_indptr[a], item_indptr[a + 1]):
            u, w = item_users[k], item_weights[k]
            for j in range(user_indptr[u], user_indptr[u + 1]):
                row[user_items[j]] += w * user_weights[j]


def gram(
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    n_users: int,
    n_items: int,
    binary: bool = False,
) -> np.ndarray:
    """X'X (n_items x n_items, float32) of the sparse interaction matrix X[users, items] =
    weights (repeated pairs added first; with `binary`, 1 wherever a pair is), in
    O(sum over users of their items squared)."""
    order = np.lexsort((items, users))
    users, items, weights = users[order], items[order], weights[order].astype(np.float32)
    if len(users):  # repeated pairs: one entry, their weights added
        first = np.r_[True, (users[1:] != users[:-1]) | (items[1:] != items[:-1])]
        starts = np.flatnonzero(first)
        users, items = users[starts], items[starts]
        weights = np.add.reduceat(weights, starts).astype(np.float32)
    if binary:
        weights = np.ones(len(users), dtype=np.float32)
    user_indptr = np.r_[0, np.cumsum(np.bincount(users, minlength=n_users))].astype(np.int64)
    by_item = np.argsort(items, kind="stable")
    item_indptr = np.r_[0, np.cumsum(np.bincount(items, minlength=n_items))].astype(np.int64)
    out = np.zeros((n_items, n_items), dtype=np.float32)
    with threads(free_threads(numba.get_num_threads() if AVAILABLE else 1)):
        _gram_rows(
            item_indptr,
            users[by_item].astype(np.int64),
            weights[by_item],
            user_indptr,
            items.astype(np.int64),
            weights,
            out,
        )
    return out


@parallel_kernel
def _lane_counts(rows, counts):  # pragma: no cover
    """counts[lane, r]: the entries of row r in the lane's share of the entries (the shares
    are contiguous, in order)."""
    lanes, n = len(counts), len(rows)
    for lane in prange(lanes):
        for k in range(lane * n // lanes, (lane + 1) * n // lanes):
            counts[lane, rows[k]] += 1


@parallel_kernel
def _bucket(rows, cols, weights, fill, out_cols, out_weights):  # pragma: no cover
    """Counting sort of the entries by row, stable, each lane scattering its share of the
    entries from its own starting places `fill[lane, r]` (advanced as it goes). With one
    weight for all entries, the weights are left to `_merge_rows`."""
    lanes, n = len(fill), len(rows)
    each = len(weights) > 1
    for lane in prange(lanes):
        for k in range(lane * n // lanes, (lane + 1) * n // lanes):
            r = rows[k]
            out_cols[fill[lane, r]] = cols[k]
            if each:
                out_weights[fill[lane, r]] = weights[k]
            fill[lane, r] += 1


@parallel_kernel
def _merge_rows(indptr, cols, weights, single, counts, stamps, places):  # pragma: no cover
    """Add up each row's repeated columns, in place and in first-seen order; counts[r] is how
    many distinct columns row r keeps (at the start of its range). The rows are split into as
    many runs as `stamps` has lanes, each lane marking the columns its current row has seen
    (stamps[lane, c] = row + 1, places[lane, c] = where c sits in the row): no sort. Where
    `single` holds one weight, it is every entry's (`weights` is then only written)."""
    n_rows, lanes = len(indptr) - 1, len(stamps)
    one = len(single) == 1
    for lane in prange(lanes):
        for r in range(lane * n_rows // lanes, (lane + 1) * n_rows // lanes):
            start, kept = indptr[r], 0
            for j in range(indptr[r], indptr[r + 1]):
                c = cols[j]
                w = single[0] if one else weights[j]
                if stamps[lane, c] == r + 1:
                    weights[start + places[lane, c]] += w
                else:
                    stamps[lane, c] = r + 1
                    places[lane, c] = kept
                    cols[start + kept] = c
                    weights[start + kept] = w
                    kept += 1
            counts[r] = kept


@njit(cache=True, nogil=True) if AVAILABLE else (lambda f: f)
def _pack(indptr, cols, weights, counts, out_cols, out_weights):  # pragma: no cover
    """Each row's kept entries moved together (rows in order); `out_*` may be `cols` and
    `weights` themselves."""
    at = 0
    for r in range(len(indptr) - 1):
        for j in range(counts[r]):
            out_cols[at + j] = cols[indptr[r] + j]
            out_weights[at + j] = weights[indptr[r] + j]
        at += counts[r]


def _places(per_lane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From each lane's count of entries per row: the rows' indptr, and each lane's first
    place in each row (the row's start, after the earlier lanes' share)."""
    indptr = np.zeros(per_lane.shape[1] + 1, dtype=np.int64)
    np.cumsum(per_lane.sum(0), out=indptr[1:])
    fill = np.empty_like(per_lane)
    fill[0] = indptr[:-1]
    fill[1:] = indptr[:-1] + np.cumsum(per_lane, axis=0)[:-1]
    return indptr, fill


def distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for integer keys (NaNs would each stay): the distinct values in
    increasing order, by a sort. numpy 2.4's
    np.unique hashes integers when asked for nothing else, about 16x slower than sorting
    for 10M int64 keys of (user, item) pairs, most of them distinct (11.3 s against 0.7 s)."""
    ordered = np.sort(values, axis=None)
    if len(ordered) < 2:
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def compress(
    rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries (rows[k], cols[k], weights[k]) as compressed rows: (indptr over n_rows,
    int32 columns in the order first seen within each row, float32 weights), repeated entries
    added into one. O(entries), no sort."""
    lanes = free_threads(numba.get_num_threads()) if AVAILABLE else 1
    per_lane = np.zeros((lanes, n_rows), dtype=np.int64)
    with threads(lanes):
        _lane_counts(rows, per_lane)
    indptr, fill = _places(per_lane)
    del per_lane
    out_cols = np.empty(len(rows), dtype=np.int32)
    out_weights = np.empty(len(rows), dtype=np.float32)
    weights = weights.astype(np.float32, copy=False)
    # interactions mostly weigh alike: then no weight is carried through the sort
    single = weights[:1] if len(weights) and weights.min() == weights.max() else weights[:0]
    with threads(lanes):
        _bucket(rows, cols, single if len(single) else weights, fill, out_cols, out_weights)
    del fill
    counts = np.empty(n_rows, dtype=np.int64)
    n_cols = int(cols.max()) + 1 if len(cols) else 1
    stamps = np.zeros((lanes, n_cols), dtype=np.int64)
    places = np.empty((lanes, n_cols), dtype=np.int64)
    with threads(lanes):
        _merge_rows(indptr, out_cols, out_weights, single, counts, stamps, places)
    if counts.sum() == len(rows):
        return indptr, out_cols, out_weights
    # in place: row by row, each entry moves to a place at or before its own, and every
    # place it overwrites belongs to a row already moved
    _pack(indptr, out_cols, out_weights, counts, out_cols, out_weights)
    packed = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=packed[1:])
    kept = int(packed[-1])
    # the kept entries lie at the front: shrink the arrays where they are (the allocator
    # gives the tail back without copying), so no second copy of them is ever held
    out_cols.resize(kept, refcheck=False)  # no view of either array exists yet
    out_weights.resize(kept, refcheck=False)
    return packed, out_cols, out_weights


@parallel_kernel
def _column_counts(indptr, cols, counts):  # pragma: no cover
    """counts[lane, c]: the entries of column c in the lane's share of the rows (the shares
    are contiguous, in order)."""
    lanes, n_rows = len(counts), len(indptr) - 1
    for lane in prange(lanes):
        for r in range(lane * n_rows // lanes, (lane + 1) * n_rows // lanes):
            for j in range(indptr[r], indptr[r + 1]):
                counts[lane, cols[j]] += 1


@parallel_kernel
def _scatter_columns(indptr, cols, weights, fill, out_rows, out_weights):  # pragma: no cover
    """Each entry of the compressed rows to its column's next place (`fill[lane, c]`,
    advanced as it goes), its row as the column's entry: rows in increasing order within each
    column. With one weight for all, `out_weights` has one place too, already written."""
    lanes, n_rows = len(fill), len(indptr) - 1
    each = len(weights) > 1
    for lane in prange(lanes):
        for r in range(lane * n_rows // lanes, (lane + 1) * n_rows // lanes):
            for j in range(indptr[r], indptr[r + 1]):
                c = cols[j]
                place = fill[lane, c]
                out_rows[place] = r
                if each:
                    out_weights[place] = weights[j]
                fill[lane, c] = place + 1


def transpose(
    indptr: np.ndarray, cols: np.ndarray, weights: np.ndarray, n_cols: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compressed rows (`compress`'s) as compressed columns: (indptr over n_cols, int32 rows
    in increasing order within each column, their weights; one weight where the rows have one
    for all). O(entries), no sort, the same on any number of threads; no repeated entries to
    add, so cheaper than compressing the entries again."""
    lanes = free_threads(numba.get_num_threads()) if AVAILABLE else 1
    per_lane = np.zeros((lanes, n_cols), dtype=np.int64)
    with threads(lanes):
        _column_counts(indptr, cols, per_lane)
    out_indptr, fill = _places(per_lane)
    del per_lane
    out_rows = np.empty(len(cols), dtype=np.int32)
    out_weights = weights.copy() if len(weights) == 1 else np.empty(len(cols), weights.dtype)
    with threads(lanes):
        _scatter_columns(indptr, cols, weights, fill, out_rows, out_weights)
    return out_indptr, out_rows, out_weights
