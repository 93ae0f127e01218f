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
2. each lane adds the item gradients of the items it owns into their slots, which read the
   users' rows alone (one lane, owning every row, did so in step 1, and reads no rating's rows
   twice). Each slot's sum runs in
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
`kernels.FreeCores` picks each call's thread count from the cores that other processes leave free.

One call runs many steps, whose learning rate and beta1 come from the schedule as arrays, so the
Python overhead is paid per call, not per step. Arrays are numpy views of the model's tensors:
the kernel updates the model and the optimiser state in place.
"""

from __future__ import annotations

import numpy as np
import torch

from latentrec.kernels import (
    AHEAD,
    AVAILABLE,
    free_threads,
    inlined,
    njit,
    numba,
    parallel_kernel,
    prange,
    prefetch,
    threads,
)
from latentrec.models.base import zeros_in_huge_pages

_BUCKETS = 1024  # fixed: the order depends on the seed alone, not on threads
# the most chunks of positions counted apart (about one per 4,096 positions): a bucket takes
# its positions in order, chunk after chunk, so the count of chunks never changes the order
_CHUNKS = 256
_CHUNK_LEAST = 4096


@inlined
def _mix(x):  # pragma: no cover - compiled
    """splitmix64's finaliser: a well-spread 64-bit hash of x."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@inlined
def _chunk_places(counts, starts):  # pragma: no cover - compiled
    """counts[c, b], chunk c's entries of bucket b, made each chunk's first place once the
    buckets are laid end to end (bucket by bucket, and within a bucket chunk by chunk);
    starts[b]: where bucket b begins, starts[-1] the total."""
    at = 0
    for b in range(counts.shape[1]):
        starts[b] = at
        for c in range(counts.shape[0]):
            count = counts[c, b]
            counts[c, b] = at
            at += count
    starts[counts.shape[1]] = at


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
    starts = np.zeros(_BUCKETS + 1, dtype=np.int64)
    _chunk_places(counts, starts)
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


_scatter_shuffle_parallel = parallel_kernel(_scatter_shuffle)
_scatter_shuffle_inline = inlined(_scatter_shuffle)


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


# a blocked epoch's cells: this many users by this many items (`cell_layout`)
BLOCK_USERS = 8192
BLOCK_ITEMS = 8192


@parallel_kernel
def _group_by_cell(
    users, items, block_users, block_items, per_row, out, starts
):  # pragma: no cover - compiled; tested through cell_layout
    """Counting sort of the positions 0..n-1 by the cell of (users[k], items[k]), stable:
    chunks of positions counted apart (a fixed number for n, so the result never depends on
    the threads), then each chunk's positions scattered from its own places."""
    n, cells = len(users), len(starts) - 1
    # at most as many counts as ratings: the grouping is stable, so the same for any chunks
    chunks = max(1, min(_CHUNKS, n // _CHUNK_LEAST, n // max(cells, 1)))
    chunk = (n + chunks - 1) // chunks
    counts = np.zeros((chunks, cells), dtype=np.int64)
    for c in prange(chunks):
        for k in range(c * chunk, min((c + 1) * chunk, n)):
            counts[c, (users[k] // block_users) * per_row + items[k] // block_items] += 1
    _chunk_places(counts, starts)
    for c in prange(chunks):
        for k in range(c * chunk, min((c + 1) * chunk, n)):
            b = (users[k] // block_users) * per_row + items[k] // block_items
            out[counts[c, b]] = k
            counts[c, b] += 1


def _cells_shuffled(starts, visit, seed, out):  # pragma: no cover - compiled
    """The positions of the cells (starts[b]:starts[b + 1], laid end to end) in the order
    `visit`, each cell's positions shuffled by a stream of its own."""
    key = _mix(np.uint64(seed))
    golden = np.uint64(0x9E3779B97F4A7C15)
    at = np.zeros(len(visit) + 1, dtype=np.int64)
    for v in range(len(visit)):
        at[v + 1] = at[v] + starts[visit[v] + 1] - starts[visit[v]]
    for v in prange(len(visit)):
        b = visit[v]
        first, size = at[v], starts[b + 1] - starts[b]
        for j in range(size):
            out[first + j] = starts[b] + j
        state = _mix(key ^ _mix(np.uint64(b) + golden))
        for j in range(size - 1, 0, -1):
            state += golden
            pick = np.int64((_mix(state) >> np.uint64(11)) % np.uint64(j + 1))
            out[first + j], out[first + pick] = out[first + pick], out[first + j]


_cells_shuffled_parallel = parallel_kernel(_cells_shuffled)
_cells_shuffled_inline = inlined(_cells_shuffled)


def _cells_shuffled_serial(starts, visit, seed, out):  # pragma: no cover - compiled
    """`_cells_shuffled` on the calling thread alone: the same order (a function of its own
    for the reason `_scatter_shuffle_serial` is)."""
    _cells_shuffled_inline(starts, visit, seed, out)


if AVAILABLE:
    _cells_shuffled_serial = njit(cache=True, nogil=True)(_cells_shuffled_serial)


def cell_layout(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    block_users: int | None = None,
    block_items: int | None = None,
    parallel: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The ratings (users[k], items[k]) grouped by cell, for `blocked_order`: users cut into
    blocks of `block_users` (default `BLOCK_USERS`) and items into blocks of `block_items`
    (`BLOCK_ITEMS`), a cell being a user block x an item block. Returns the positions grouped
    cell by cell, in their order within each cell (int64), and where each cell starts among
    them (one more than the cells). O(ratings), no sort; the same on any threads, and with
    `parallel=False` (a stable sort by cell, numba's thread pool unstarted)."""
    block_users = BLOCK_USERS if block_users is None else block_users
    block_items = BLOCK_ITEMS if block_items is None else block_items
    if len(users) != len(items):
        raise ValueError(f"users and items differ in length: {len(users)} and {len(items)}")
    for name, value in (("block_users", block_users), ("block_items", block_items)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    per_row = -(-max(n_items, 1) // block_items)
    cells = -(-max(n_users, 1) // block_users) * per_row
    grouped = np.empty(len(users), dtype=np.int64)
    starts = np.empty(cells + 1, dtype=np.int64)
    if not (AVAILABLE and parallel):
        cell = (users.astype(np.int64) // block_users) * per_row + items // block_items
        grouped[:] = np.argsort(cell, kind="stable")
        starts[0] = 0
        np.cumsum(np.bincount(cell, minlength=cells), out=starts[1:])
        return grouped, starts
    with threads(free_threads(numba.get_num_threads())):
        _group_by_cell(users, items, block_users, block_items, per_row, grouped, starts)
    return grouped, starts


def blocked_order(starts: np.ndarray, seed: int, parallel: bool = True) -> np.ndarray:
    """An epoch's order of ratings grouped by cell (`cell_layout`; `starts` says where each
    cell starts): the cells in a random order and each one's positions shuffled (LIBMF's
    order). A stretch of steps then reads the rows of one cell, which stay in cache. The same
    order for a seed on any number of threads; `parallel=False` keeps numba's thread pool
    unstarted, as `permutation`'s does."""
    cells = len(starts) - 1
    rng = np.random.default_rng(seed % 2**64)
    visit = rng.permutation(cells)
    out = np.empty(int(starts[-1]), dtype=np.int64)
    if not AVAILABLE:  # the cells' shuffles from the stream that ordered them
        parts = [rng.permutation(np.arange(starts[b], starts[b + 1])) for b in visit]
        return np.concatenate(parts) if parts else out
    if not parallel:
        _cells_shuffled_serial(starts, visit, np.uint64(seed % 2**64), out)
        return out
    with threads(free_threads(numba.get_num_threads())):
        _cells_shuffled_parallel(starts, visit, np.uint64(seed % 2**64), out)
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


@parallel_kernel
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


@inlined
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


@inlined
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


@inlined
def _update_row(weight, state, grad, hits, row, slot, rule, constants):  # pragma: no cover
    """The step's optimiser on one row: constants[6] says which (0 AdamW, 1 Adagrad). The
    row's L2 gradient is rule[6] times the row for each of the hits[slot] ratings that read it."""
    penalty = rule[6] * hits[slot]
    if constants[6] == 0:
        _adam_row(weight, state, grad, row, slot, rule, constants, penalty)
    else:
        _adagrad_row(weight, state, grad, row, slot, rule, constants[2], penalty)


@inlined
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


@inlined
def _owner(row, lanes):  # pragma: no cover - compiled
    """The lane (0..lanes-1) that owns a table row: a multiplicative hash of the row scaled to
    the lanes by a multiply and a shift. A lookup table misses the cache at scale, and `%` is an
    integer division: both cost more than the hash."""
    mixed = np.uint64(np.uint32(np.uint32(row) * np.uint32(0x9E3779B9)))
    return np.int64((mixed * np.uint64(lanes)) >> np.uint64(32))


@inlined
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


@inlined
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
    lane,
    lanes,
):  # pragma: no cover - compiled
    """Step 1 of `dot_steps` on one lane: the forward pass of the ratings of the users the lane
    owns, and their users' gradients while the items' rows are still in cache, in rating order.
    A lane that owns every row (lanes 1) adds the items' gradients there too (step 2), so no
    rating's rows are read twice: the same sums in the same order as several lanes make.
    `tables`: (user factors, user bias, item factors, item bias)."""
    user_factors, user_bias, item_factors, item_bias = tables
    user_slot, item_slot = slots
    touched_users, touched_items = touched
    d_logit, grad_uf, grad_ub, grad_if, grad_ib, hits_u, hits_i, squares = grads
    largest = touched_users.shape[1]
    alone = lanes == 1
    n_u = 0
    n_i = 0
    for r in range(start, stop):
        if r + AHEAD < stop:
            u_ahead = users[r + AHEAD]
            if alone or _owner(u_ahead, lanes) == lane:
                i_ahead = items[r + AHEAD]
                prefetch(user_factors, u_ahead)
                prefetch(item_factors, i_ahead)
                prefetch(user_bias, u_ahead)
                prefetch(item_bias, i_ahead)
                prefetch(user_slot, u_ahead)
                if alone:
                    prefetch(item_slot, i_ahead)
        u = users[r]
        if not alone and _owner(u, lanes) != lane:
            continue
        i = items[r]
        g, squares[r - start] = _rating_error(
            user_factors, user_bias, u, item_factors, item_bias, i, targets[r], scale, constants
        )
        n_u = _add_gradient(
            user_slot, touched_users, lane, n_u, largest, u, item_factors, i, g, grad_uf,
            grad_ub, hits_u,
        )  # fmt: skip
        if alone:
            n_i = _add_gradient(
                item_slot, touched_items, 0, n_i, largest, i, user_factors, u, g, grad_if,
                grad_ib, hits_i,
            )  # fmt: skip
        else:
            d_logit[r - start] = g  # for the item pass
    counts[lane, 0] = n_u
    if alone:
        counts[0, 1] = n_i


@parallel_kernel
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
        tables = (user_factors, user_bias, item_factors, item_bias)
        if lanes == 1:
            _forward_and_gradients(
                users, items, targets, start, stop, scale, constants, tables, slots, touched,
                counts, grads, 0, 1,
            )  # fmt: skip
        else:
            # 1. each lane: the forward pass of its own users' ratings, and their gradients
            for lane in prange(lanes):
                _forward_and_gradients(
                    users, items, targets, start, stop, scale, constants, tables, slots,
                    touched, counts, grads, lane, lanes,
                )  # fmt: skip
            # 2. each lane: the gradients of the items it owns (their users' rows alone)
            for lane in prange(lanes):
                n_i = 0
                for r in range(start, stop):
                    if r + AHEAD < stop:
                        i_ahead = items[r + AHEAD]
                        if _owner(i_ahead, lanes) == lane:
                            prefetch(user_factors, users[r + AHEAD])
                            prefetch(item_slot, i_ahead)
                    i = items[r]
                    if _owner(i, lanes) != lane:
                        continue
                    n_i = _add_gradient(
                        item_slot,
                        touched_items,
                        lane,
                        n_i,
                        largest,
                        i,
                        user_factors,
                        users[r],
                        d_logit[r - start],
                        grad_if,
                        grad_ib,
                        hits_i,
                    )
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
