"""Row-sparse optimisers and one optimiser step of a model over index tensors.

Each micro-batch looks up only the distinct embedding rows it needs, as leaf tensors; autograd
gives their gradients, which become row-sparse gradients of the tables; the optimiser updates
just those rows. A step's cost grows with the batch, not with the tables. Two optimisers:

- "adamw": lazy AdamW, two moments per weight (dense layers, such as the nn model's, get
  ordinary AdamW);
- "adagrad": row-wise Adagrad, the rule embedding tables at scale train with: one accumulator
  per table row (the mean of its squared gradients, added up over steps), so a step reads and
  writes a touched row's weights and one number beside them, about a third of AdamW's traffic
  (dense layers get element-wise Adagrad).

Accumulation is exact: each micro-batch's summed loss is divided by the size of its whole group,
so the gradients added over a group equal the gradient of the group's mean loss, also for a
short last group.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from latentrec import distributed, fused, kernels
from latentrec.models import LatentModel, zeros_in_huge_pages

# Adam's defaults for every model (TrainConfig reads them from here)
BETAS = (0.9, 0.99)
EPS = 1e-5
OPTIMIZERS = ("adamw", "adagrad")


class _RowOptimizer:
    """What these optimisers take of `torch.optim.Optimizer`: `param_groups` (each group the
    defaults with its own settings on top) and `state` (per parameter, created on first use).

    Not a subclass: building a `torch.optim.Optimizer` imports torch's compiler stack
    (torch._dynamo), over a second of a process's first fit, several times the whole training
    on the bundled sample.
    """

    def __init__(self, params, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups = [
            {**self.defaults, **group, "params": list(group["params"])} for group in groups
        ]
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)

    def state_for(self, p: Tensor) -> dict[str, Any]:
        """The state of parameter p (step count and `moments`), created on first use, in
        huge pages on the CPU: a row's state is read at random, as the row is."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["moments"] = zeros_in_huge_pages(self._state_shape(p), p.dtype, p.device)
        return state

    def _state_shape(self, p: Tensor) -> tuple[int, ...]:
        raise NotImplementedError


class RowSparseAdamW(_RowOptimizer):
    """AdamW that updates only the rows present in a sparse gradient; dense grads as usual.

    Sparse gradients (embedding tables) follow lazy Adam: the moments and the decoupled weight
    decay of a row change only on steps whose batch holds that row, so a step costs O(rows in
    the batch), not O(table).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = BETAS,
        eps: float = EPS,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def _state_shape(self, p: Tensor) -> tuple[int, ...]:
        # first and second moments in one tensor: one gather, one scatter per step
        return (2, *p.shape)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, wd = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state_for(p)
                state["step"] += 1
                correction1 = 1 - beta1 ** state["step"]
                correction2 = 1 - beta2 ** state["step"]
                args = (lr, beta1, beta2, eps, wd, correction1, correction2)
                grad = p.grad
                if group.get("rows") and not grad.is_sparse:
                    grad = _touched_rows(grad)  # dense table gradient (NCCL): the same lazy rule
                if grad.is_sparse:
                    _sparse_update(p, grad, state["moments"], *args)
                else:
                    _dense_update(p, p.grad, state["moments"], *args)


def _touched_rows(grad: Tensor) -> Tensor:
    """A dense table gradient as a row-sparse one over the rows it touches."""
    rows = grad.ne(0).any(dim=1).nonzero().squeeze(1)
    return torch.sparse_coo_tensor(
        rows[None],
        grad.index_select(0, rows),
        grad.shape,
        is_coalesced=True,
        check_invariants=False,
    )


def _dense_update(p, grad, moments, lr, beta1, beta2, eps, wd, c1, c2) -> None:
    exp_avg, exp_avg_sq = moments
    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    denominator = exp_avg_sq.div(c2).sqrt_().add_(eps)
    p.mul_(1 - lr * wd).addcdiv_(exp_avg, denominator, value=-lr / c1)


def _sparse_update(p, grad, moments, lr, beta1, beta2, eps, wd, c1, c2) -> None:
    if not grad.is_coalesced():  # several micro-batches added up: sum rows that repeat
        grad = grad.coalesce()
    rows, values = grad._indices()[0], grad._values()
    row_moments = moments.index_select(1, rows)
    m, v = row_moments
    m.mul_(beta1).add_(values, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(values, values, value=1 - beta2)
    moments.index_copy_(1, rows, row_moments)
    weights = p.index_select(0, rows).mul_(1 - lr * wd)
    weights.addcdiv_(m, v.div_(c2).sqrt_().add_(eps), value=-lr / c1)
    p.index_copy_(0, rows, weights)


class RowWiseAdagrad(_RowOptimizer):
    """Adagrad with one accumulator per row of an embedding table; dense params element-wise.

    A touched row r of width F with gradient g (its sum over the step's micro-batches):

        acc[r] += mean(g ** 2)                                  (one number per row)
        w[r] = w[r] * (1 - lr * wd) - lr * g / (sqrt(acc[r]) + eps)

    Lazy, as `RowSparseAdamW`: rows absent from a step keep their weights and accumulator.
    The state lives in `state["moments"]`, shaped (1, rows, 1) for a table and (1, *shape) for
    a dense parameter, so checkpoints and the fused kernel treat both optimisers alike.
    """

    def __init__(
        self, params, lr: float = 1e-2, eps: float = EPS, weight_decay: float = 0.0
    ) -> None:
        defaults = {"lr": lr, "eps": eps, "weight_decay": weight_decay, "betas": BETAS}
        super().__init__(params, defaults)

    def _state_shape(self, p: Tensor) -> tuple[int, ...]:
        table = any(
            group.get("rows") and any(q is p for q in group["params"])
            for group in self.param_groups
        )
        return (1, p.shape[0], 1) if table else (1, *p.shape)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        for group in self.param_groups:
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state_for(p)
                state["step"] += 1
                grad = p.grad
                if not group.get("rows"):
                    _dense_adagrad(p, grad, state["moments"][0], lr, eps, wd)
                    continue
                if not grad.is_sparse:
                    grad = _touched_rows(grad)
                _sparse_adagrad(p, grad, state["moments"][0], lr, eps, wd)


def _dense_adagrad(p, grad, total, lr, eps, wd) -> None:
    total.addcmul_(grad, grad)
    p.mul_(1 - lr * wd).addcdiv_(grad, total.sqrt().add_(eps), value=-lr)


def _sparse_adagrad(p, grad, total, lr, eps, wd) -> None:
    if not grad.is_coalesced():
        grad = grad.coalesce()
    rows, values = grad._indices()[0], grad._values()
    row_total = total.index_select(0, rows).add_(values.square().mean(1, keepdim=True))
    total.index_copy_(0, rows, row_total)
    weights = p.index_select(0, rows).mul_(1 - lr * wd)
    weights.addcdiv_(values, row_total.sqrt_().add_(eps), value=-lr)
    p.index_copy_(0, rows, weights)


def make_optimizer(
    net: LatentModel,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    kind: str = "adamw",
) -> RowSparseAdamW | RowWiseAdagrad:
    """The optimiser `kind` ("adamw" or "adagrad") over the model: embedding tables get
    row-sparse updates, the rest dense."""
    tables = [table.weight for table in net.tables().values()]
    table_ids = {id(weight) for weight in tables}
    dense = [p for p in net.parameters() if id(p) not in table_ids]
    groups: list[dict[str, Any]] = [{"params": tables, "rows": True}]
    if dense:
        groups.append({"params": dense})
    if kind == "adagrad":
        return RowWiseAdagrad(groups, lr=lr, eps=eps, weight_decay=weight_decay)
    return RowSparseAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class StepRunner:
    """Runs optimiser steps of `net` on rows of (user index, item index, rating) tensors.

    Args:
        batch_size: rows per micro-batch; a step over a group of rows runs
            ceil(len(group) / batch_size) micro-batches, then one optimiser step.
        ddp: `net` wrapped for DistributedDataParallel (see `training_forward`), under
            torchrun; the micro-batches then go through it, and gradients are all-reduced
            once per step, on the last micro-batch.
        l2: per rating, this times the squared norm of each table row the rating reads is
            added to its squared error (`TrainConfig.l2`).
    """

    def __init__(
        self,
        net: LatentModel,
        users: Tensor,
        items: Tensor,
        ratings: Tensor,
        batch_size: int,
        optimizer: RowSparseAdamW | RowWiseAdagrad,
        negatives: int = 0,
        generator: torch.Generator | None = None,
        ddp: nn.Module | None = None,
        world_size: int = 1,
        l2: float = 0.0,
    ) -> None:
        self.net, self.optimizer, self.batch_size = net, optimizer, batch_size
        self.l2 = l2
        self.users, self.items, self.ratings = users, items, ratings
        self.negatives, self.generator = negatives, generator
        self.ddp, self.world_size = ddp, world_size

    def step(self, group: Tensor, total: int | None = None, offset: int = 0) -> Tensor:
        """One optimiser step on the rows `group`; returns their summed loss (a tensor).

        Args:
            total: rows in the step over all ranks (len(group) in one process). Each rank's
                loss is scaled by world_size / total, so the average DDP takes of the ranks'
                gradients is the gradient of the mean loss over all `total` rows.
            offset: where `group` starts among the step's `total` rows (a rank's share).
        """
        total = total if total is not None else len(group)
        weight = self.world_size / total
        loss_sum = torch.zeros((), dtype=self.ratings.dtype, device=self.ratings.device)
        # the negatives of the whole step, drawn alike on every rank: each rating takes those
        # of its place in the step, whatever rank and micro-batch it falls in
        drawn = self._draw(total)
        # micro-batches are consecutive slices of the group: (B, N) sees what (B*N, 1) sees;
        # a rank with no rows in a short last step still joins the all-reduce
        micros = group.split(self.batch_size) if len(group) else (group,)
        start = offset
        for k, micro in enumerate(micros):
            mine = None if drawn is None else drawn[:, start : start + len(micro)]
            start += len(micro)
            if self.ddp is None:
                loss_sum += self._micro_step(micro, weight, mine)
                continue
            last = k == len(micros) - 1
            with contextlib.nullcontext() if last else self.ddp.no_sync():
                loss_sum += self._ddp_micro_step(micro, weight, mine)
        self.optimizer.step()
        for p in self.net.parameters():
            p.grad = None
        return loss_sum

    def _batch(self, rows: Tensor, drawn: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        users = self.users.index_select(0, rows)
        items = self.items.index_select(0, rows)
        target = self.ratings.index_select(0, rows)
        if drawn is not None:
            users, items, target = self._with_negatives(users, items, target, drawn)
        return users, items, target

    def _micro_step(self, rows: Tensor, weight: float, drawn: Tensor | None = None) -> Tensor:
        """Forward and backward of one micro-batch (`drawn`: its ratings' negative items);
        its summed loss counts `weight` times."""
        users, items, target = self._batch(rows, drawn)
        user_rows, user_leaves, user_counts = _gather(self.net, self.net.user_tables, users)
        item_rows, item_leaves, item_counts = _gather(self.net, self.net.item_tables, items)
        prediction = self.net.interact(user_rows, item_rows)
        loss = torch.nn.functional.mse_loss(prediction, target, reduction="sum")
        penalty = 0.0
        if self.l2:  # on each distinct row once, times the ratings that read it
            for leaves, counts in ((user_leaves, user_counts), (item_leaves, item_counts)):
                for _, leaf in leaves.values():
                    penalty = penalty + (leaf.square().sum(1) * counts.to(leaf.dtype)).sum()
            penalty = self.l2 * penalty
        ((loss + penalty) * weight).backward()
        for name, (index, leaf) in {**user_leaves, **item_leaves}.items():
            weight_table = getattr(self.net, name).weight
            grad = torch.sparse_coo_tensor(
                index[None],
                leaf.grad,
                weight_table.shape,
                is_coalesced=True,
                check_invariants=False,
            )
            if weight_table.grad is None:
                weight_table.grad = grad
            else:  # summing as we go keeps an accumulated gradient to the rows the group touched
                weight_table.grad = (weight_table.grad + grad).coalesce()
        return loss.detach()

    def _ddp_micro_step(self, rows: Tensor, weight: float, drawn: Tensor | None = None) -> Tensor:
        """A micro-batch through the DDP-wrapped lookups: autograd's hooks see every table."""
        users, items, target = self._batch(rows, drawn)
        prediction, rows = self.ddp(users, items)
        loss = torch.nn.functional.mse_loss(prediction, target, reduction="sum")
        ((loss + self._penalty(rows)) * weight).backward()
        return loss.detach()

    def _penalty(self, rows: list[Tensor]) -> Tensor | float:
        """l2 times the squared norms of the rows each rating read (one row per rating),
        summed over the ratings: a row read by k ratings of the batch counts k times."""
        if not self.l2:
            return 0.0
        return self.l2 * sum(row.square().sum() for row in rows)

    def _draw(self, total: int) -> Tensor | None:
        """A step's negative items, (negatives, total): column j for the step's rating j
        (drawn in the order one micro-batch of the whole step drew them)."""
        if not self.negatives:
            return None
        shape = (self.negatives, total)
        return torch.randint(0, self.net.n_items, shape, generator=self.generator, device="cpu")

    def _with_negatives(self, users: Tensor, items: Tensor, target: Tensor, drawn: Tensor):
        """Add `negatives` unrated-looking pairs per rating: the same users with items drawn
        uniformly (`drawn`, one row per negative), whose target is the bottom of the rating
        range ("would not pick this")."""
        count = drawn.numel()
        low = torch.full((count,), self.net.y_range[0], dtype=target.dtype, device=target.device)
        return (
            torch.cat([users, users.repeat(self.negatives)]),
            torch.cat([items, drawn.reshape(-1).to(items.device)]),
            torch.cat([target, low]),
        )


class TrainingForward(nn.Module):
    """The model's training forward as a module for DistributedDataParallel: embedding lookups
    through `F.embedding`, so the tables get gradients (row-sparse where the backend can
    all-reduce them, dense under NCCL) that DDP's hooks see and average across ranks."""

    def __init__(self, net: LatentModel, sparse: bool) -> None:
        super().__init__()
        self.net, self.sparse = net, sparse
        for table in net.tables().values():
            # DDP reads this flag to expect a sparse gradient (a bucket of its own)
            table.sparse = sparse

    def forward(self, users: Tensor, items: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The predictions, and the table rows each rating read (for an L2 penalty)."""
        net = self.net
        user_rows = [self._lookup(name, users) for name in net.user_tables]
        item_rows = [self._lookup(name, items) for name in net.item_tables]
        return net.interact(user_rows, item_rows), [*user_rows, *item_rows]

    def _lookup(self, name: str, index: Tensor) -> Tensor:
        weight = getattr(self.net, name).weight
        return nn.functional.embedding(index, weight, sparse=self.sparse)


def training_forward(net: LatentModel, device: torch.device) -> nn.Module | None:
    """`net`'s training forward in DistributedDataParallel under torchrun; None otherwise."""
    module = TrainingForward(net, sparse=distributed.sparse_gradients_supported())
    wrapped = distributed.wrap(module, device)
    return None if wrapped is module else wrapped


def _gather(net: LatentModel, names: tuple[str, ...], index: Tensor):
    """Each table's distinct rows for this batch as a leaf tensor, expanded to the batch; and
    how many of the batch's ratings read each distinct row."""
    distinct, inverse, counts = torch.unique(index, return_inverse=True, return_counts=True)
    rows, leaves = [], {}
    for name in names:
        leaf = getattr(net, name).weight.detach().index_select(0, distinct).requires_grad_()
        leaves[name] = (distinct, leaf)
        rows.append(leaf.index_select(0, inverse))
    return rows, leaves, counts


class AutogradEngine:
    """Optimiser steps of any model through autograd (`StepRunner`): the engine every model
    trains with, on any device and under torchrun.

    Under torchrun, every rank holds the same order; a step covers `step_size` ratings of it
    (all ranks together) and each rank takes its contiguous share.

    Args:
        on_step: called after each optimiser step (the schedule advances there).
    """

    steps_per_call = 32  # the loss is read back (a host sync) once per call

    def __init__(
        self,
        runner: StepRunner,
        step_size: int,
        on_step: Callable[[], None],
        context: distributed.Context,
    ) -> None:
        self.runner, self.step_size, self.on_step = runner, step_size, on_step
        self.rank, self.world = context.rank, context.world_size

    def run(self, order: Tensor, first: int, last: int) -> float:
        """Steps `first` to `last` (exclusive) of the epoch whose ratings come in `order`;
        the summed loss of this rank's share."""
        loss_sum = torch.zeros((), dtype=self.runner.ratings.dtype, device=order.device)
        for step in range(first, last):
            group = order[step * self.step_size : (step + 1) * self.step_size]
            shares = torch.tensor_split(group, self.world) if self.world > 1 else (group,)
            offset = sum(len(share) for share in shares[: self.rank])
            loss_sum += self.runner.step(shares[self.rank], total=len(group), offset=offset)
            self.on_step()
        return float(loss_sum)


class FusedEngine:
    """Optimiser steps of a model with a dot product and biases on the CPU in one compiled
    kernel (`fused.py`), for models that declare the "fused" engine and give their weights by
    `fused_tables()` (user factors and bias, item factors and bias).

    The same mathematics as `StepRunner` with `RowSparseAdamW` or `RowWiseAdagrad` (each step's
    mean squared error, the optimiser on the rows it touches), without materialising
    (batch x factors) tensors. A step has no micro-batches: its scratch memory is
    O(step size x factors) whatever the step.

    Args:
        step_size: ratings per optimiser step.
        on_step: called after each step's coefficients are read (the schedule advances there).
    """

    steps_per_call = 32  # a process that starts beside a call slows only that call

    def __init__(
        self,
        tables: tuple[Tensor, Tensor, Tensor, Tensor],
        y_range: tuple[float, float],
        users: Tensor,
        items: Tensor,
        ratings: Tensor,
        step_size: int,
        optimizer: RowSparseAdamW | RowWiseAdagrad,
        on_step: Callable[[], None],
        l2: float = 0.0,
    ) -> None:
        self.optimizer, self.on_step, self.l2 = optimizer, on_step, l2
        self.n = len(ratings)
        self.step_size = step_size
        max_step = min(step_size, self.n)
        self.params = list(tables)
        # numpy views share the tensors' memory: the kernel updates model and state in place
        self.tables = tuple(p.detach().numpy() for p in self.params)
        self.moments = tuple(optimizer.state_for(p)["moments"].numpy() for p in self.params)
        # int32 indexes halve the memory traffic of the kernel's passes over a step, and one
        # record per rating makes each read of a rating in shuffled order one trip to memory
        self.ratings = ratings.numpy()
        self.packed = fused.packed_ratings(
            users.numpy().astype(np.int32), items.numpy().astype(np.int32), self.ratings
        )
        self.ordered = (np.empty(0, np.int32), np.empty(0, np.int32), self.ratings[:0].copy())
        low, high = y_range
        group = optimizer.param_groups[0]
        beta2, eps = group["betas"][1], group["eps"]
        dtype = self.tables[0].dtype
        self.adagrad = isinstance(optimizer, RowWiseAdagrad)
        self.constants = np.array(
            [beta2, 1 - beta2, eps, low, high - low, 1.0, float(self.adagrad)], dtype=dtype
        )
        self.span = high - low
        # the most threads a call runs; each runs as many as other processes leave cores free
        # for (`kernels.free_threads`), and every count gives the same model and loss
        lanes = self.threads = kernels.set_threads(torch.get_num_threads())
        n_users, n_factors = self.tables[0].shape
        self.slots = (
            np.full(n_users, -1, dtype=np.int64),
            np.full(len(self.tables[2]), -1, dtype=np.int64),
        )
        self.touched = tuple(np.zeros((lanes, max_step), dtype=np.int64) for _ in range(2))
        self.counts = np.zeros((lanes, 2), dtype=np.int64)
        # each lane has max_step gradient slots of its own, and a count of the ratings in each
        self.grads = (
            np.zeros(max_step, dtype=dtype),
            np.zeros((lanes * max_step, n_factors), dtype=dtype),
            np.zeros((lanes * max_step, 1), dtype=dtype),
            np.zeros((lanes * max_step, n_factors), dtype=dtype),
            np.zeros((lanes * max_step, 1), dtype=dtype),
            np.zeros(lanes * max_step, dtype=dtype),
            np.zeros(lanes * max_step, dtype=dtype),
            np.zeros(max_step, dtype=np.float64),
        )
        # by thread count, the first lanes' rows of the touched rows and counts
        self.lane_views = {
            k: (tuple(rows[:k] for rows in self.touched), self.counts[:k])
            for k in range(1, lanes + 1)
        }
        self._steps(np.zeros(0, dtype=np.int64), [], np.zeros((0, 7)))  # compile or load it now

    def run(self, order: Tensor, first: int, last: int) -> float:
        """Steps `first` to `last` (exclusive) of the epoch whose ratings come in `order`;
        their summed squared error."""
        start, stop = first * self.step_size, min(last * self.step_size, self.n)
        sizes = [min(self.step_size, self.n - s) for s in range(start, stop, self.step_size)]
        hyper = []
        for size in sizes:
            hyper.append(self.hyper(size))
            self.on_step()
        return self._steps(order.numpy()[start:stop], sizes, np.array(hyper))

    def hyper(self, size: int) -> tuple[float, ...]:
        """Count one optimiser step of `size` ratings; the kernel's per-step coefficients
        from the learning rate and betas as the schedule now sets them."""
        group = self.optimizer.param_groups[0]
        step = 0
        for p in self.params:
            state = self.optimizer.state_for(p)
            state["step"] += 1
            step = state["step"]
        lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
        penalty = 2 * self.l2 / size  # a rating's L2 gradient per unit of a row's weight
        if self.adagrad:
            return (1 - lr * wd, lr, 0.0, 0.0, 0.0, 2 * self.span / size, penalty)
        return (
            1 - lr * wd,
            lr / (1 - beta1**step),
            beta1,
            1 - beta1,
            1 / (1 - beta2**step),
            2 * self.span / size,
            penalty,
        )

    def _steps(self, order: np.ndarray, sizes: list[int], hyper: np.ndarray) -> float:
        """Consecutive steps of `sizes` ratings, taken from `order` (positions into the
        ratings), with the coefficients hyper[s] (from `hyper`); the summed squared error."""
        # the steps' ratings side by side: every pass then reads memory in order
        n = len(order)
        if len(self.ordered[0]) < n:
            self.ordered = (
                np.empty(n, np.int32),
                np.empty(n, np.int32),
                np.empty_like(self.ratings, shape=n),
            )
        users, items, ratings = (array[:n] for array in self.ordered)
        # each call on as many threads as other processes leave cores free for: the caller
        # keeps calls to a few dozen steps, so a process that starts beside one slows only those
        lanes = kernels.free_threads(self.threads)
        touched, counts = self.lane_views[lanes]
        with kernels.threads(lanes):
            fused.gather(order, self.packed, users, items, ratings)
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        hyper = hyper.astype(self.constants.dtype)
        with torch.no_grad(), kernels.threads(lanes):
            return float(
                fused.dot_steps(
                    users,
                    items,
                    ratings,
                    bounds,
                    hyper,
                    self.constants,
                    *self.tables,
                    self.moments,
                    self.slots,
                    touched,
                    counts,
                    self.grads,
                )
            )
