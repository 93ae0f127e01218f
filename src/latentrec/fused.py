"""The dot model's training step as one compiled CPU kernel (numba), for speed at scale.

The autograd path (`latentrec.optim`) materialises every (batch x factors) tensor and runs a
dozen framework operations per table per step; on the CPU that overhead, not arithmetic, sets
its speed. This kernel does the same mathematics in place, row by row:

1. each thread ("lane") owns the users and items whose index is congruent to its number: it
   gives each of its distinct rows in the step a gradient slot (no sort: a slot array per table
   marks rows already seen), and computes, for its share of the ratings, the logit
   `p_u . q_i + b_u + b_i`, the prediction `low + (high - low) * sigmoid(logit)` and the
   derivative of the step's mean squared error with respect to the logit;
2. each lane adds the ratings' gradients into the slots of its own rows, in rating order, so no
   two threads write the same row and the sums are the same on every run;
3. each lane applies lazy AdamW to its touched rows (the rule `RowSparseAdamW` applies), then
   clears their slots for the next step.

One call runs many steps, whose learning rate and beta1 come from the schedule as arrays, so the
Python overhead is paid per call, not per step. Arrays are numpy views of the model's tensors:
the kernel updates the model and the optimiser state in place.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # numba is a dependency, but a broken install should only cost speed
    numba = None

AVAILABLE = numba is not None
# reassociation lets the compiler vectorise the dot products and row updates; no fast-math
# for sqrt/exp and no assumptions about NaN or infinity
_FAST = {"reassoc", "contract", "nsz"}


def set_threads(n: int) -> int:
    """Use n threads (at most numba's pool size) in the kernels; returns how many."""
    if not AVAILABLE:
        return 1
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def _kernel(func):
    if not AVAILABLE:
        return func
    return njit(parallel=True, cache=True, fastmath=_FAST, nogil=True)(func)


def _inline(func):
    if not AVAILABLE:
        return func
    return njit(inline="always", fastmath=_FAST)(func)


@_kernel
def gather(order, users, items, targets, out_users, out_items, out_targets):  # pragma: no cover
    """out_*[k] = *[order[k]] for the first len(order) entries, on all threads."""
    for k in prange(len(order)):
        row = order[k]
        out_users[k] = users[row]
        out_items[k] = items[row]
        out_targets[k] = targets[row]


@_inline
def _adam_row(weight, moments, grad, row, slot, rule, constants):  # pragma: no cover
    """Lazy AdamW on one row of weight from its slot's gradient, which it clears (the
    arithmetic of `RowSparseAdamW`)."""
    decay, step_size, beta1, one_minus_beta1, inv_correction2 = (
        rule[0],
        rule[1],
        rule[2],
        rule[3],
        rule[4],
    )
    beta2, one_minus_beta2, eps = constants[0], constants[1], constants[2]
    for f in range(weight.shape[1]):
        g = grad[slot, f]
        grad[slot, f] = 0
        m = beta1 * moments[0, row, f] + one_minus_beta1 * g
        v = beta2 * moments[1, row, f] + one_minus_beta2 * g * g
        moments[0, row, f] = m
        moments[1, row, f] = v
        weight[row, f] = weight[row, f] * decay - step_size * m / (
            np.sqrt(v * inv_correction2) + eps
        )


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
    owners,
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
            2 * (high - low) / ratings in the step), t the optimiser's step count.
        constants: (beta2, 1 - beta2, eps, low, high - low, 1).
        moments: per table (user factors, user bias, item factors, item bias) a (2, rows, width)
            array of Adam's first and second moments.
        owners: per side (users, items) an int32 array over the table's rows: the lane that
            owns the row.
        slots: per side (users, items) an int64 array over the table's rows: the row's slot in
            this step, -1 when it has none (all -1 between steps).
        touched: per side, (lanes, largest step) rows in order of their slots.
        counts: (lanes, 2) distinct users and items of each lane in the step.
        grads: (per-rating logit gradient, user factor, user bias, item factor and item bias
            gradients by slot: zero between steps, as many rows as the largest step).

    Returns:
        The sum of squared errors over all steps' ratings (before each step's update).
    """
    low, span, one = constants[3], constants[4], constants[5]
    user_slot, item_slot = slots
    user_lane, item_lane = owners
    touched_users, touched_items = touched
    d_logit, grad_uf, grad_ub, grad_if, grad_ib = grads
    m_uf, m_ub, m_if, m_ib = moments
    n_factors = user_factors.shape[1]
    lanes = counts.shape[0]
    total = 0.0
    for step in range(len(bounds) - 1):
        start, stop = bounds[step], bounds[step + 1]
        size = stop - start
        rule = hyper[step]
        scale = rule[5]
        share = (size + lanes - 1) // lanes
        # 1. each lane: local slots for its own rows, and the forward pass of its share
        loss = 0.0
        for lane in prange(lanes):
            n_u = 0
            n_i = 0
            for r in range(start, stop):
                u = users[r]
                if user_lane[u] == lane and user_slot[u] < 0:
                    user_slot[u] = n_u
                    touched_users[lane, n_u] = u
                    n_u += 1
                i = items[r]
                if item_lane[i] == lane and item_slot[i] < 0:
                    item_slot[i] = n_i
                    touched_items[lane, n_i] = i
                    n_i += 1
            counts[lane, 0] = n_u
            counts[lane, 1] = n_i
            lane_loss = 0.0
            for r in range(start + lane * share, min(start + (lane + 1) * share, stop)):
                u = users[r]
                i = items[r]
                logit = user_bias[u, 0] + item_bias[i, 0]
                for f in range(n_factors):
                    logit += user_factors[u, f] * item_factors[i, f]
                s = one / (one + np.exp(-logit))
                error = low + span * s - targets[r]
                d_logit[r - start] = scale * error * s * (one - s)
                lane_loss += np.float64(error * error)
            loss += lane_loss
        total += loss
        # lane k's slots follow those of lanes before it
        base_u = np.zeros(lanes + 1, dtype=np.int64)
        base_i = np.zeros(lanes + 1, dtype=np.int64)
        for lane in range(lanes):
            base_u[lane + 1] = base_u[lane] + counts[lane, 0]
            base_i[lane + 1] = base_i[lane] + counts[lane, 1]
        # 2. each lane adds the gradients of its own rows, in rating order
        for lane in prange(lanes):
            for r in range(start, stop):
                g = d_logit[r - start]
                u = users[r]
                i = items[r]
                if user_lane[u] == lane:
                    slot = base_u[lane] + user_slot[u]
                    for f in range(n_factors):
                        grad_uf[slot, f] += g * item_factors[i, f]
                    grad_ub[slot, 0] += g
                if item_lane[i] == lane:
                    slot = base_i[lane] + item_slot[i]
                    for f in range(n_factors):
                        grad_if[slot, f] += g * user_factors[u, f]
                    grad_ib[slot, 0] += g
        # 3. each lane: lazy AdamW on its rows (after every gradient has read the old values)
        for lane in prange(lanes):
            for k in range(counts[lane, 0]):
                u = touched_users[lane, k]
                slot = base_u[lane] + k
                _adam_row(user_factors, m_uf, grad_uf, u, slot, rule, constants)
                _adam_row(user_bias, m_ub, grad_ub, u, slot, rule, constants)
                user_slot[u] = -1
            for k in range(counts[lane, 1]):
                i = touched_items[lane, k]
                slot = base_i[lane] + k
                _adam_row(item_factors, m_if, grad_if, i, slot, rule, constants)
                _adam_row(item_bias, m_ib, grad_ib, i, slot, rule, constants)
                item_slot[i] = -1
    return total
