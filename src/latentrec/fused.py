"""The dot model's training step as one compiled CPU kernel (numba), for speed at scale.

The autograd path (`latentrec.optim`) materialises every (batch x factors) tensor and runs a
dozen framework operations per table per step; on the CPU that overhead, not arithmetic, sets
its speed. This kernel does the same mathematics in place, row by row:

1. each thread ("lane") owns the users and items that a hash of their index gives it, and
   takes the step's ratings of the users it owns: the logit `p_u . q_i + b_u + b_i`, the
   prediction `low + (high - low) * sigmoid(logit)`, the derivative of the step's mean squared
   error with respect to the logit, and the user's gradient, added while the item's row is
   still in cache into a gradient slot the lane gives each of its distinct rows in the step (no
   sort: a slot array per table marks rows already seen);
2. each lane adds the item gradients of the items it owns into their slots (one lane, owning
   every row, did so in step 1, and reads no rating's rows twice). Each slot's sum runs in
   rating order, so no two threads write the same row and the sums are the same on every run
   and thread count;
3. each lane applies the optimiser to its touched rows (lazy AdamW as `RowSparseAdamW`, or
   row-wise Adagrad as `RowWiseAdagrad`), adding the L2 penalty's gradient (`TrainConfig.l2`
   times the row for each rating that read it: step 2 counts them), then clears their slots
   for the next step.

The rows of large tables (and their entries in the slot arrays) are scattered over memory, so
the passes that read them ask for them a few ratings ahead (`prefetch`), and the trips to memory
overlap.

The three passes end in barriers, three a step, which every thread must reach: a thread that
another process keeps off its core stalls the others, and OpenMP's waiting threads spin. So
`FreeCores` picks each call's thread count from the cores that other processes leave free.

One call runs many steps, whose learning rate and beta1 come from the schedule as arrays, so the
Python overhead is paid per call, not per step. Arrays are numpy views of the model's tensors:
the kernel updates the model and the optimiser state in place.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator

import numpy as np
import torch

from latentrec.models.base import zeros_in_huge_pages

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # numba is a dependency, but a broken install should only cost speed
    numba = None

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


def _kernel(func):
    if not AVAILABLE:
        return func
    return njit(parallel=True, cache=True, fastmath=_FAST, nogil=True)(func)


def _inline(func):
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


_BUCKETS = 1024  # fixed: the order depends on the seed alone, not on threads
# the most chunks of positions counted apart (about one per 4,096 positions): a bucket takes
# its positions in order, chunk after chunk, so the count of chunks never changes the order
_CHUNKS = 256
_CHUNK_LEAST = 4096


@_inline
def _mix(x):  # pragma: no cover - compiled
    """splitmix64's finaliser: a well-spread 64-bit hash of x."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _scatter_shuffle(n, seed, out):  # pragma: no cover - compiled; tested through permutation
    key = _mix(np.uint64(seed))
    golden = np.uint64(0x9E3779B97F4A7C15)
    shift = np.uint64(54)  # the top 10 bits: one of 1024 buckets
    chunks = min(_CHUNKS, max(1, n // _CHUNK_LEAST))
    chunk = (n + chunks - 1) // chunks
    counts = np.zeros((chunks, _BUCKETS), dtype=np.int64)
    for c in prange(chunks):
        for k in range(c * chunk, min((c + 1) * chunk, n)):
            counts[c, _mix(key + np.uint64(k) * golden) >> shift] += 1
    # positions: bucket by bucket, and within a bucket chunk by chunk
    starts = np.zeros(_BUCKETS + 1, dtype=np.int64)
    at = 0
    for b in range(_BUCKETS):
        starts[b] = at
        for c in range(chunks):
            count = counts[c, b]
            counts[c, b] = at
            at += count
    starts[_BUCKETS] = at
    for c in prange(chunks):
        for k in range(c * chunk, min((c + 1) * chunk, n)):
            b = _mix(key + np.uint64(k) * golden) >> shift
            out[counts[c, b]] = k
            counts[c, b] += 1
    # Fisher-Yates within each bucket, from a stream of its own
    for b in prange(_BUCKETS):
        state = _mix(key ^ _mix(np.uint64(b) + golden))
        first = starts[b]
        for j in range(starts[b + 1] - first - 1, 0, -1):
            state += golden
            # 53 random bits scaled to 0..j: the bias of a 64-bit remainder is below 1e-12
            pick = np.int64((_mix(state) >> np.uint64(11)) % np.uint64(j + 1))
            out[first + j], out[first + pick] = out[first + pick], out[first + j]


_scatter_shuffle_parallel = _kernel(_scatter_shuffle)
_scatter_shuffle_inline = _inline(_scatter_shuffle)


def _scatter_shuffle_serial(n, seed, out):  # pragma: no cover - compiled
    """The same shuffle on the calling thread alone (prange runs as range): the same order.

    A function of its own, not `njit(_scatter_shuffle)`: numba's cache files are named after
    the function, and a second compilation of `_scatter_shuffle` loaded the parallel one's
    code from the cache, which started the thread pool this version exists to keep out of
    torchrun workers."""
    _scatter_shuffle_inline(n, seed, out)


if AVAILABLE:
    _scatter_shuffle_serial = njit(cache=True, nogil=True)(_scatter_shuffle_serial)


def permutation(n: int, seed: int, parallel: bool = True) -> np.ndarray:
    """A uniformly random permutation of 0..n-1 (int64), the same for a seed on any number of
    threads.

    Each position draws one of 1024 buckets from a hash of (seed, position); the buckets are
    laid end to end and each is shuffled by its own random stream. With independent uniform
    buckets and uniform shuffles within them, every order is equally likely; unlike a
    Fisher-Yates pass over all n, the work runs on every thread. `parallel=False` gives the
    same order on one thread, without starting numba's thread pool (torchrun workers, which run
    one thread each).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not AVAILABLE:
        return np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    if not parallel:
        _scatter_shuffle_serial(n, np.uint64(seed % 2**64), out)
        return out
    with threads(free_threads(numba.get_num_threads())):
        _scatter_shuffle_parallel(n, np.uint64(seed % 2**64), out)
    return out


def packed_ratings(users: np.ndarray, items: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The ratings as one array of (user, item, rating) records: reading a rating at random
    is then one trip to memory, not three."""
    record = np.dtype([("user", np.int32), ("item", np.int32), ("rating", targets.dtype)])
    # read at random, as the tables are: huge pages spare a page walk per rating
    memory = zeros_in_huge_pages((len(users) * record.itemsize,), torch.uint8).numpy()
    packed = memory.view(record)
    packed["user"], packed["item"], packed["rating"] = users, items, targets
    return packed


@_kernel
def gather(order, packed, out_users, out_items, out_targets):  # pragma: no cover
    """out_*[k] = the user, item and rating of packed[order[k]] for the first len(order)
    entries (`packed_ratings`), on all threads."""
    for k in prange(len(order)):
        if k + AHEAD < len(order):
            prefetch(packed, order[k + AHEAD])
        record = packed[order[k]]
        out_users[k] = record.user
        out_items[k] = record.item
        out_targets[k] = record.rating


@_inline
def _adam_row(weight, moments, grad, row, slot, rule, constants, penalty):  # pragma: no cover
    """Lazy AdamW on one row of weight from its slot's gradient (the arithmetic of
    `RowSparseAdamW`)."""
    decay, step_size, beta1, one_minus_beta1, inv_correction2 = (
        rule[0],
        rule[1],
        rule[2],
        rule[3],
        rule[4],
    )
    beta2, one_minus_beta2, eps = constants[0], constants[1], constants[2]
    for f in range(weight.shape[1]):
        g = grad[slot, f] + penalty * weight[row, f]
        m = beta1 * moments[0, row, f] + one_minus_beta1 * g
        v = beta2 * moments[1, row, f] + one_minus_beta2 * g * g
        moments[0, row, f] = m
        moments[1, row, f] = v
        weight[row, f] = weight[row, f] * decay - step_size * m / (
            np.sqrt(v * inv_correction2) + eps
        )


@_inline
def _adagrad_row(weight, total, grad, row, slot, rule, eps, penalty):  # pragma: no cover
    """Row-wise Adagrad on one row of weight from its slot's gradient (the arithmetic of
    `RowWiseAdagrad`): one accumulator, total[0, row, 0], for the whole row. The slot's
    gradient is its ratings' errors' alone: the L2 penalty's part, `penalty` times the row,
    is added here (the row has not moved since the ratings read it)."""
    decay, lr = rule[0], rule[1]
    width = weight.shape[1]
    squares = 0.0 * eps
    for f in range(width):
        g = grad[slot, f] + penalty * weight[row, f]
        squares += g * g
    accumulated = total[0, row, 0] + squares / width
    total[0, row, 0] = accumulated
    step_size = lr / (np.sqrt(accumulated) + eps)
    for f in range(width):
        g = grad[slot, f] + penalty * weight[row, f]
        weight[row, f] = weight[row, f] * decay - step_size * g


@_inline
def _update_row(weight, state, grad, hits, row, slot, rule, constants):  # pragma: no cover
    """The step's optimiser on one row: constants[6] says which (0 AdamW, 1 Adagrad). The
    row's L2 gradient is rule[6] times the row for each of the hits[slot] ratings that read it."""
    penalty = rule[6] * hits[slot]
    if constants[6] == 0:
        _adam_row(weight, state, grad, row, slot, rule, constants, penalty)
    else:
        _adagrad_row(weight, state, grad, row, slot, rule, constants[2], penalty)


@_inline
def _add_gradient(
    slots, touched, lane, n, largest, row, other_factors, other, g, grad_factors, grad_bias, hits
):  # pragma: no cover - compiled
    """Add one rating's gradient (g times the other side's factors; g for the bias) to the
    lane's slot of `row`, and count the rating in hits, giving the row its slot (the lane's
    n-th) when it has none: its first rating writes the slot, later ones add to it, so slots
    are never cleared. Returns the lane's count of rows with slots."""
    if slots[row] < 0:
        slots[row] = n
        touched[lane, n] = row
        slot = lane * largest + n
        for f in range(grad_factors.shape[1]):
            grad_factors[slot, f] = g * other_factors[other, f]
        grad_bias[slot, 0] = g
        hits[slot] = 1
        return n + 1
    slot = lane * largest + slots[row]
    for f in range(grad_factors.shape[1]):
        grad_factors[slot, f] += g * other_factors[other, f]
    grad_bias[slot, 0] += g
    hits[slot] += 1
    return n


@_inline
def _owner(row, lanes):  # pragma: no cover - compiled
    """The lane (0..lanes-1) that owns a table row: a multiplicative hash of the row scaled to
    the lanes by a multiply and a shift. A lookup table misses the cache at scale, and `%` is an
    integer division: both cost more than the hash."""
    mixed = np.uint64(np.uint32(np.uint32(row) * np.uint32(0x9E3779B9)))
    return np.int64((mixed * np.uint64(lanes)) >> np.uint64(32))


@_inline
def _rating_error(
    user_factors, user_bias, u, item_factors, item_bias, i, target, scale, constants
):  # pragma: no cover - compiled
    """One rating's forward pass: the derivative of the step's loss with respect to its
    logit, and its squared error (in float64), in the model's dtype."""
    low, span, one = constants[3], constants[4], constants[5]
    logit = user_bias[u, 0] + item_bias[i, 0]
    for f in range(user_factors.shape[1]):
        logit += user_factors[u, f] * item_factors[i, f]
    s = one / (one + np.exp(-logit))
    error = low + span * s - target
    return scale * error * s * (one - s), np.float64(error * error)


@_inline
def _forward_and_gradients(
    users,
    items,
    targets,
    start,
    stop,
    scale,
    constants,
    tables,
    slots,
    touched,
    counts,
    grads,
):  # pragma: no cover - compiled
    """Steps 1 and 2 of `dot_steps` on one lane, which owns every row: each rating's forward
    pass, then its user's and item's gradients while both rows are still in cache, so no
    rating's rows are read twice (the passes of several lanes read them once each). The same
    sums in the same order as several lanes make. `tables`: (user factors, user bias, item
    factors, item bias)."""
    user_factors, user_bias, item_factors, item_bias = tables
    user_slot, item_slot = slots
    touched_users, touched_items = touched
    _, grad_uf, grad_ub, grad_if, grad_ib, hits_u, hits_i, squares = grads
    largest = touched_users.shape[1]
    n_u = 0
    n_i = 0
    for r in range(start, stop):
        if r + AHEAD < stop:
            u_ahead, i_ahead = users[r + AHEAD], items[r + AHEAD]
            prefetch(user_factors, u_ahead)
            prefetch(item_factors, i_ahead)
            prefetch(user_bias, u_ahead)
            prefetch(item_bias, i_ahead)
            prefetch(user_slot, u_ahead)
            prefetch(item_slot, i_ahead)
        u = users[r]
        i = items[r]
        g, squares[r - start] = _rating_error(
            user_factors, user_bias, u, item_factors, item_bias, i, targets[r], scale, constants
        )
        n_u = _add_gradient(
            user_slot,
            touched_users,
            0,
            n_u,
            largest,
            u,
            item_factors,
            i,
            g,
            grad_uf,
            grad_ub,
            hits_u,
        )
        n_i = _add_gradient(
            item_slot,
            touched_items,
            0,
            n_i,
            largest,
            i,
            user_factors,
            u,
            g,
            grad_if,
            grad_ib,
            hits_i,
        )
    counts[0, 0] = n_u
    counts[0, 1] = n_i


@_kernel
def dot_steps(
    users,
    items,
    targets,
    bounds,
    hyper,
    constants,
    user_factors,
    user_bias,
    item_factors,
    item_bias,
    moments,
    slots,
    touched,
    counts,
    grads,
):  # pragma: no cover - compiled; tested through fit() against the autograd path
    """Run len(bounds) - 1 optimiser steps; step s trains on ratings bounds[s]:bounds[s + 1].

    All floating-point arrays share the model's dtype, so float32 models compute in float32.

    Args:
        users, items, targets: the ratings in training order (int32 indexes, ratings).
        bounds: step boundaries in those arrays.
        hyper: per step (1 - lr * wd, lr / (1 - beta1^t), beta1, 1 - beta1, 1 / (1 - beta2^t),
            2 * (high - low) / ratings in the step, 2 * l2 / ratings in the step), t the
            optimiser's step count; for Adagrad the second is lr itself and the next three are
            unused.
        constants: (beta2, 1 - beta2, eps, low, high - low, 1, optimiser: 0 AdamW, 1 Adagrad).
        moments: per table (user factors, user bias, item factors, item bias) the optimiser's
            state: AdamW's first and second moments, (2, rows, width); Adagrad's accumulator
            per row, (1, rows, 1).
        slots: per side (users, items) an int64 array over the table's rows: the row's slot in
            this step, -1 when it has none (all -1 between steps).
        touched: per side, (lanes, largest step) rows in order of their slots; lanes is the
            call's thread count, which may change from call to call (the results do not).
        counts: (lanes, 2) distinct users and items of each lane in the step.
        grads: (per-rating logit gradient, user factor, user bias, item factor and item bias
            gradients by slot, the user and item slots' counts of ratings, per-rating squared
            error in float64: any values between steps, each step writes before it adds;
            lane k's slots are rows k * largest step onwards). `_owner` says which lane owns
            a row.

    Returns:
        The sum of squared errors over all steps' ratings (before each step's update).
    """
    user_slot, item_slot = slots
    touched_users, touched_items = touched
    d_logit, grad_uf, grad_ub, grad_if, grad_ib, hits_u, hits_i, squares = grads
    m_uf, m_ub, m_if, m_ib = moments
    lanes = counts.shape[0]
    largest = touched_users.shape[1]
    total = 0.0
    for step in range(len(bounds) - 1):
        start, stop = bounds[step], bounds[step + 1]
        rule = hyper[step]
        scale = rule[5]
        if lanes == 1:
            tables = (user_factors, user_bias, item_factors, item_bias)
            _forward_and_gradients(
                users, items, targets, start, stop, scale, constants, tables, slots, touched,
                counts, grads,
            )  # fmt: skip
        else:
            # 1. the forward pass, spread evenly over the lanes
            for block in prange(lanes):
                first = start + block * (stop - start) // lanes
                end = start + (block + 1) * (stop - start) // lanes
                for r in range(first, end):
                    if r + AHEAD < stop:  # past the block's end too: a neighbour may wait
                        prefetch(user_factors, users[r + AHEAD])
                        prefetch(item_factors, items[r + AHEAD])
                        prefetch(user_bias, users[r + AHEAD])
                        prefetch(item_bias, items[r + AHEAD])
                    u = users[r]
                    i = items[r]
                    d_logit[r - start], squares[r - start] = _rating_error(
                        user_factors,
                        user_bias,
                        u,
                        item_factors,
                        item_bias,
                        i,
                        targets[r],
                        scale,
                        constants,
                    )
            # 2. each lane gives each of its own rows a slot the first time it meets it, and
            # adds the ratings' gradients into them in rating order
            for lane in prange(lanes):
                n_u = 0
                n_i = 0
                for r in range(start, stop):
                    # the slot arrays span the catalogue: at scale a lookup is a trip to
                    # memory, and asking ahead lets those trips overlap
                    if r + AHEAD < stop:
                        prefetch(user_slot, users[r + AHEAD])
                        prefetch(item_slot, items[r + AHEAD])
                    g = d_logit[r - start]
                    u = users[r]
                    i = items[r]
                    if _owner(u, lanes) == lane:
                        n_u = _add_gradient(
                            user_slot,
                            touched_users,
                            lane,
                            n_u,
                            largest,
                            u,
                            item_factors,
                            i,
                            g,
                            grad_uf,
                            grad_ub,
                            hits_u,
                        )
                    if _owner(i, lanes) == lane:
                        n_i = _add_gradient(
                            item_slot,
                            touched_items,
                            lane,
                            n_i,
                            largest,
                            i,
                            user_factors,
                            u,
                            g,
                            grad_if,
                            grad_ib,
                            hits_i,
                        )
                counts[lane, 0] = n_u
                counts[lane, 1] = n_i
        # the loss in rating order, on one thread: the same whatever the lanes
        for r in range(stop - start):
            total += squares[r]
        # 3. each lane: lazy AdamW on its rows (after every gradient has read the old values)
        for lane in prange(lanes):
            n_u = counts[lane, 0]
            for k in range(n_u):
                if k + AHEAD < n_u:
                    ahead = touched_users[lane, k + AHEAD]
                    prefetch(user_factors, ahead)
                    prefetch(user_bias, ahead)
                    for m in range(len(m_uf)):
                        prefetch(m_uf[m], ahead)
                        prefetch(m_ub[m], ahead)
                u = touched_users[lane, k]
                slot = lane * largest + k
                _update_row(user_factors, m_uf, grad_uf, hits_u, u, slot, rule, constants)
                _update_row(user_bias, m_ub, grad_ub, hits_u, u, slot, rule, constants)
                user_slot[u] = -1
            n_i = counts[lane, 1]
            for k in range(n_i):
                if k + AHEAD < n_i:
                    ahead = touched_items[lane, k + AHEAD]
                    prefetch(item_factors, ahead)
                    prefetch(item_bias, ahead)
                    for m in range(len(m_if)):
                        prefetch(m_if[m], ahead)
                        prefetch(m_ib[m], ahead)
                i = touched_items[lane, k]
                slot = lane * largest + k
                _update_row(item_factors, m_if, grad_if, hits_i, i, slot, rule, constants)
                _update_row(item_bias, m_ib, grad_ib, hits_i, i, slot, rule, constants)
                item_slot[i] = -1
    return total


@_kernel
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


@_kernel
def _lane_counts(rows, counts):  # pragma: no cover
    """counts[lane, r]: the entries of row r in the lane's share of the entries (the shares
    are contiguous, in order)."""
    lanes, n = len(counts), len(rows)
    for lane in prange(lanes):
        for k in range(lane * n // lanes, (lane + 1) * n // lanes):
            counts[lane, rows[k]] += 1


@_kernel
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


@_kernel
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
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(per_lane.sum(0), out=indptr[1:])
    # each lane's first place in each row: the row's start, after the earlier lanes' share
    fill = np.empty_like(per_lane)
    fill[0] = indptr[:-1]
    fill[1:] = indptr[:-1] + np.cumsum(per_lane, axis=0)[:-1]
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


@_kernel
def _column_counts(indptr, cols, counts):  # pragma: no cover
    """counts[lane, c]: the entries of column c in the lane's share of the rows (the shares
    are contiguous, in order)."""
    lanes, n_rows = len(counts), len(indptr) - 1
    for lane in prange(lanes):
        for r in range(lane * n_rows // lanes, (lane + 1) * n_rows // lanes):
            for j in range(indptr[r], indptr[r + 1]):
                counts[lane, cols[j]] += 1


@_kernel
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
    out_indptr = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(per_lane.sum(0), out=out_indptr[1:])
    fill = np.empty_like(per_lane)
    fill[0] = out_indptr[:-1]
    fill[1:] = out_indptr[:-1] + np.cumsum(per_lane, axis=0)[:-1]
    del per_lane
    out_rows = np.empty(len(cols), dtype=np.int32)
    out_weights = weights.copy() if len(weights) == 1 else np.empty(len(cols), weights.dtype)
    with threads(lanes):
        _scatter_columns(indptr, cols, weights, fill, out_rows, out_weights)
    return out_indptr, out_rows, out_weights
