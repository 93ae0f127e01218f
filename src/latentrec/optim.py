"""Row-sparse AdamW and one optimiser step of a model over index tensors.

Each micro-batch looks up only the distinct embedding rows it needs, as leaf tensors; autograd
gives their gradients, which become row-sparse gradients of the tables; the optimiser updates
just those rows (lazy AdamW). A step's cost grows with the batch, not with the tables. Dense
layers (the nn model's) get ordinary AdamW.

Accumulation is exact: each micro-batch's summed loss is divided by the size of its whole group,
so the gradients added over a group equal the gradient of the group's mean loss, also for a
short last group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentrec import fused
from latentrec.models import DotProductBias, LatentModel


class RowSparseAdamW(torch.optim.Optimizer):
    """AdamW that updates only the rows present in a sparse gradient; dense grads as usual.

    Sparse gradients (embedding tables) follow lazy Adam: the moments and the decoupled weight
    decay of a row change only on steps whose batch holds that row, so a step costs O(rows in
    the batch), not O(table).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.99),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def state_for(self, p: Tensor) -> dict[str, Any]:
        """The state of parameter p (step count and moments), created on first use."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            # first and second moments in one tensor: one gather, one scatter per step
            state["moments"] = torch.zeros((2, *p.shape), dtype=p.dtype, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
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
                if p.grad.is_sparse:
                    _sparse_update(p, p.grad, state["moments"], *args)
                else:
                    _dense_update(p, p.grad, state["moments"], *args)


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


def make_optimizer(
    net: LatentModel,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> RowSparseAdamW:
    """RowSparseAdamW over the model: embedding tables get sparse updates, the rest dense."""
    tables = [table.weight for table in net.tables().values()]
    table_ids = {id(weight) for weight in tables}
    dense = [p for p in net.parameters() if id(p) not in table_ids]
    groups: list[dict[str, Any]] = [{"params": tables}]
    if dense:
        groups.append({"params": dense})
    return RowSparseAdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class StepRunner:
    """Runs optimiser steps of `net` on rows of (user index, item index, rating) tensors.

    Args:
        batch_size: rows per micro-batch; a step over a group of rows runs
            ceil(len(group) / batch_size) micro-batches, then one optimiser step.
    """

    def __init__(
        self,
        net: LatentModel,
        users: Tensor,
        items: Tensor,
        ratings: Tensor,
        batch_size: int,
        optimizer: torch.optim.Optimizer,
        negatives: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.net, self.optimizer, self.batch_size = net, optimizer, batch_size
        self.users, self.items, self.ratings = users, items, ratings
        self.negatives, self.generator = negatives, generator

    def step(self, group: Tensor) -> Tensor:
        """One optimiser step on the rows `group`; returns their summed loss (a tensor)."""
        loss_sum = torch.zeros((), dtype=self.ratings.dtype, device=self.ratings.device)
        # micro-batches are consecutive slices of the group: (B, N) sees what (B*N, 1) sees
        for micro in group.split(self.batch_size):
            loss_sum += self._micro_step(micro, len(group))
        self.optimizer.step()
        for p in self.net.parameters():
            p.grad = None
        return loss_sum

    def _micro_step(self, rows: Tensor, group_size: int) -> Tensor:
        """Forward and backward of one micro-batch; its loss weighs group_size in the step."""
        users = self.users.index_select(0, rows)
        items = self.items.index_select(0, rows)
        target = self.ratings.index_select(0, rows)
        if self.negatives:
            users, items, target = self._with_negatives(users, items, target)
        user_rows, user_leaves = _gather(self.net, self.net.user_tables, users)
        item_rows, item_leaves = _gather(self.net, self.net.item_tables, items)
        prediction = self.net.interact(user_rows, item_rows)
        loss = torch.nn.functional.mse_loss(prediction, target, reduction="sum")
        (loss / group_size).backward()
        for name, (index, leaf) in {**user_leaves, **item_leaves}.items():
            weight = getattr(self.net, name).weight
            grad = torch.sparse_coo_tensor(
                index[None], leaf.grad, weight.shape, is_coalesced=True, check_invariants=False
            )
            if weight.grad is None:
                weight.grad = grad
            else:  # summing as we go keeps an accumulated gradient to the rows the group touched
                weight.grad = (weight.grad + grad).coalesce()
        return loss.detach()

    def _with_negatives(self, users: Tensor, items: Tensor, target: Tensor):
        """Add `negatives` unrated-looking pairs per rating: the same users with items drawn
        uniformly, whose target is the bottom of the rating range ("would not pick this")."""
        count = len(users) * self.negatives
        drawn = torch.randint(
            0, self.net.n_items, (count,), generator=self.generator, device="cpu"
        ).to(items.device)
        low = torch.full(
            (count,), self.net.config.y_range[0], dtype=target.dtype, device=target.device
        )
        return (
            torch.cat([users, users.repeat(self.negatives)]),
            torch.cat([items, drawn]),
            torch.cat([target, low]),
        )


def _gather(net: LatentModel, names: tuple[str, ...], index: Tensor):
    """Each table's distinct rows for this batch as a leaf tensor, expanded to the batch."""
    distinct, inverse = torch.unique(index, return_inverse=True)
    rows, leaves = [], {}
    for name in names:
        leaf = getattr(net, name).weight.detach().index_select(0, distinct).requires_grad_()
        leaves[name] = (distinct, leaf)
        rows.append(leaf.index_select(0, inverse))
    return rows, leaves


class FusedDotRunner:
    """Optimiser steps of a DotProductBias on the CPU in one compiled kernel (`fused.py`).

    The same mathematics as `StepRunner` with `RowSparseAdamW` (each step's mean squared error,
    lazy AdamW on the rows it touches), without materialising (batch x factors) tensors. A
    step has no micro-batches: its scratch memory is O(step size x factors) whatever the step.

    Args:
        max_step: the most ratings one optimiser step will hold.
    """

    def __init__(
        self,
        net: DotProductBias,
        users: Tensor,
        items: Tensor,
        ratings: Tensor,
        max_step: int,
        optimizer: RowSparseAdamW,
    ) -> None:
        self.optimizer = optimizer
        self.params = [
            net.user_factors.weight,
            net.user_bias.weight,
            net.item_factors.weight,
            net.item_bias.weight,
        ]
        # numpy views share the tensors' memory: the kernel updates model and state in place
        self.tables = tuple(p.detach().numpy() for p in self.params)
        self.moments = tuple(optimizer.state_for(p)["moments"].numpy() for p in self.params)
        # int32 indexes halve the memory traffic of the kernel's passes over a step
        self.users = users.numpy().astype(np.int32)
        self.items = items.numpy().astype(np.int32)
        self.ratings = ratings.numpy()
        low, high = net.config.y_range
        group = optimizer.param_groups[0]
        beta2, eps = group["betas"][1], group["eps"]
        dtype = self.tables[0].dtype
        self.constants = np.array([beta2, 1 - beta2, eps, low, high - low, 1.0], dtype=dtype)
        self.span = high - low
        lanes = fused.set_threads(torch.get_num_threads())
        n_factors = net.config.n_factors
        self.slots = (
            np.full(net.n_users, -1, dtype=np.int64),
            np.full(net.n_items, -1, dtype=np.int64),
        )
        self.owners = (
            (np.arange(net.n_users) % lanes).astype(np.int32),
            (np.arange(net.n_items) % lanes).astype(np.int32),
        )
        self.touched = tuple(np.zeros((lanes, max_step), dtype=np.int64) for _ in range(2))
        self.counts = np.zeros((lanes, 2), dtype=np.int64)
        self.grads = (
            np.zeros(max_step, dtype=dtype),
            np.zeros((max_step, n_factors), dtype=dtype),
            np.zeros((max_step, 1), dtype=dtype),
            np.zeros((max_step, n_factors), dtype=dtype),
            np.zeros((max_step, 1), dtype=dtype),
        )
        self.run(np.zeros(0, dtype=np.int64), [], np.zeros((0, 6)))  # compile or load it now

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
        return (
            1 - lr * wd,
            lr / (1 - beta1**step),
            beta1,
            1 - beta1,
            1 / (1 - beta2**step),
            2 * self.span / size,
        )

    def run(self, order: np.ndarray, sizes: list[int], hyper: np.ndarray) -> float:
        """Consecutive steps of `sizes` ratings, taken from `order` (positions into the
        ratings), with the coefficients hyper[s] (from `hyper`); the summed squared error."""
        # the step's ratings side by side: every pass then reads memory in order
        users, items = self.users[order], self.items[order]
        ratings = self.ratings[order]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        hyper = hyper.astype(self.constants.dtype)
        with torch.no_grad():
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
                    self.owners,
                    self.slots,
                    self.touched,
                    self.counts,
                    self.grads,
                )
            )
