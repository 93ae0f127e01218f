"""`als`: implicit-feedback alternating least squares, a ranking model. User and item factors
fitted to "did the user interact with the item" over every pair, each observed pair weighted by
a confidence 1 + alpha x weight; the user and the item halves are solved in turn, each row by a few
conjugate-gradient steps on its normal equations (the Gram-matrix trick keeps a row's cost to
its own interactions).

Y. Hu, Y. Koren and C. Volinsky, "Collaborative Filtering for Implicit Feedback Datasets",
ICDM 2008; the conjugate-gradient row solve follows G. Takács, I. Pilászy and D. Tikk,
"Applications of the Conjugate Gradient Method for Implicit Feedback Collaborative
Filtering", RecSys 2011.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numba
import numpy as np
import torch
from torch import Tensor, nn

from latentrec.errors import ConfigError, DataError
from latentrec.kernels import AHEAD, prefetch, transpose
from latentrec.models.base import (
    Interactions,
    LatentModel,
    ModelConfig,
    embedding,
    is_finite,
    search_space,
    shown,
    whole,
)


def _inline(func):
    return numba.njit(inline="always", fastmath={"reassoc", "contract"})(func)


def _kernel(func):
    return numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})(func)


@_kernel
def _solve_rows(
    indptr, indices, weights, alpha, rows, fixed, gram, steps, losses, chunks, longest
):  # pragma: no cover
    """For each row u: a few conjugate-gradient steps, from its current value, towards the
    solution x of (G + sum_i (c_ui - 1) y_i y_i') x = sum_i c_ui y_i, where G = Y'Y + λI,
    c_ui = 1 + alpha w_ui and the sums run over u's interactions. Rows are independent. Loops
    rather than BLAS calls: a row's vectors are a few dozen numbers. `weights` holds one weight
    per interaction, or one that they all have.

    When `losses` has a place per row, the solved row's sum over its interactions of
    c (1 - x.y)^2 - (x.y)^2 goes there (the observed pairs' part of the loss): each x.y kept
    from the passes (the residual's y.x0, plus each step's size times its y.p), so no pass of
    its own reads the items' vectors again. `longest`: the most interactions a row has.

    The threads take runs of rows, chunks[c]:chunks[c + 1], of about equal interactions
    (`_row_chunks`): rows' lengths differ by orders of magnitude."""
    k = rows.shape[1]
    for chunk in numba.prange(len(chunks) - 1):
        r = np.empty(k, dtype=rows.dtype)
        ap = np.empty(k, dtype=rows.dtype)
        p = np.empty(k, dtype=rows.dtype)
        kept = longest if len(losses) else 0
        scores = np.empty(kept, dtype=rows.dtype)  # each interaction's y.x
        along = np.empty(kept, dtype=rows.dtype)  # and its y.p in a step
        for u in range(chunks[chunk], chunks[chunk + 1]):
            _solve_row(
                indptr, indices, weights, alpha, rows, fixed, gram, steps, losses, u, r, ap, p,
                scores, along,
            )  # fmt: skip


@_inline
def _solve_row(
    indptr, indices, weights, alpha, rows, fixed, gram, steps, losses, u, r, ap, p, scores, along
):  # pragma: no cover
    """`_solve_rows` for row u, with r, ap and p as scratch, and scores and along (empty where
    no loss is wanted) for the interactions' y.x and y.p."""
    k = rows.shape[1]
    x = rows[u]
    _gram_times(gram, x, r)
    for f in range(k):
        r[f] = -r[f]
    end = indptr[u + 1]
    _add_weighted(indices, weights, alpha, fixed, indptr[u], end, x, r, True, scores)
    for f in range(k):
        p[f] = r[f]
    old = 0.0
    for f in range(k):
        old += r[f] * r[f]
    for _ in range(steps):
        if old < 1e-20:
            break
        _gram_times(gram, p, ap)
        _add_weighted(indices, weights, alpha, fixed, indptr[u], end, p, ap, False, along)
        curvature = 0.0
        for f in range(k):
            curvature += p[f] * ap[f]
        step = old / curvature
        new = 0.0
        for f in range(k):
            x[f] += step * p[f]
            r[f] -= step * ap[f]
            new += r[f] * r[f]
        for f in range(k):
            p[f] = r[f] + (new / old) * p[f]
        old = new
        if len(scores):  # x moved by step p
            for j in range(end - indptr[u]):
                scores[j] += step * along[j]
    if len(losses):
        total = 0.0
        for j in range(indptr[u], end):
            score = scores[j - indptr[u]]
            c = 1.0 + alpha * weights[j if len(weights) > 1 else 0]
            total += c * (1.0 - score) ** 2 - score * score
        losses[u] = total


@_inline
def _gram_times(gram, v, out):  # pragma: no cover
    """out = G v, G symmetric: a sum of G's rows (vector multiply-adds, no horizontal sums)."""
    k = len(v)
    for f in range(k):
        out[f] = 0.0
    for g in range(k):
        value = v[g]
        for f in range(k):
            out[f] += gram[g, f] * value


@_inline
def _add_weighted(
    indices, weights, alpha, fixed, start, end, v, out, residual, kept
):  # pragma: no cover
    """out += sum over the interactions start:end of w_j y_j, y_j = fixed[indices[j]] and
    s_j = y_j . v: w_j = c_j - (c_j - 1) s_j for the residual (v the row's value), else
    (c_j - 1) s_j (v a conjugate direction); each s_j goes to kept[j - start] unless kept is
    empty. Two interactions a turn: their dot products are independent, so one waits less on
    the other's sum; a last odd one pairs with itself, weighted 0."""
    k = len(v)
    for j in range(start, end, 2):
        if j + AHEAD + 1 < end:  # the fixed side's rows lie scattered: ask for them early
            prefetch(fixed, indices[j + AHEAD])
            prefetch(fixed, indices[j + AHEAD + 1])
        pair = j + 1 < end
        i = j + 1 if pair else j
        y, z = fixed[indices[j]], fixed[indices[i]]
        a = alpha * weights[j if len(weights) > 1 else 0]  # c_j - 1
        b = alpha * weights[i if len(weights) > 1 else 0] if pair else 0.0
        score = 0.0
        other = 0.0
        for f in range(k):
            score += y[f] * v[f]
            other += z[f] * v[f]
        if len(kept):
            kept[j - start] = score
            kept[i - start] = other
        first = a * score
        second = b * other
        if residual:
            first = 1.0 + a - first
            second = 1.0 + b - second if pair else 0.0
        for f in range(k):
            out[f] += first * y[f] + second * z[f]


ROW_CHUNKS = 256  # runs of rows the threads share out: fixed, so no result depends on threads


def _row_chunks(indptr: np.ndarray) -> np.ndarray:
    """Boundaries of ROW_CHUNKS runs of consecutive rows with about equal interactions each
    (a row longer than a run's share makes a run of its own)."""
    n_rows = len(indptr) - 1
    wanted = np.linspace(0, indptr[-1], ROW_CHUNKS + 1)
    bounds = np.searchsorted(indptr, wanted, side="left")
    bounds[0], bounds[-1] = 0, n_rows
    return np.unique(np.clip(bounds, 0, n_rows)).astype(np.int64)


ENTRY_CHUNK = 1 << 22  # interactions gathered at once by the batched solve: chunk x factors


class Side(NamedTuple):
    """One half's interactions as tensors on the solve's device: for each interaction its
    row (the side being solved), its column (the fixed side) and its confidence minus 1."""

    owners: Tensor
    columns: Tensor
    extra: Tensor  # alpha x weight: c - 1
    n_rows: int

    @classmethod
    def of(cls, compressed: tuple[np.ndarray, ...], alpha: float, device: torch.device) -> Side:
        indptr, indices, weights = compressed
        n_rows = len(indptr) - 1
        owners = torch.repeat_interleave(
            torch.arange(n_rows, device=device), torch.from_numpy(np.diff(indptr)).to(device)
        )
        columns = torch.from_numpy(indices).to(device=device, dtype=torch.int64)
        extra = torch.from_numpy(weights).to(device) * alpha
        return cls(owners, columns, extra.expand(len(columns)), n_rows)

    def gather(self, rows: Tensor, fixed: Tensor, start: bool) -> Tensor:
        """For each row x, the sum over its interactions j of f_j y_j: f_j = (c_j - 1)(x . y_j)
        (the interactions' part of A x), or with `start`, c_j - (c_j - 1)(x . y_j) (the
        right-hand side less that part, the residual's start). Chunk by chunk: memory stays
        ENTRY_CHUNK x factors."""
        out = torch.zeros_like(rows)
        for first in range(0, len(self.owners), ENTRY_CHUNK):
            part = slice(first, first + ENTRY_CHUNK)
            owners, y = self.owners[part], fixed[self.columns[part]]
            score = (rows[owners] * y).sum(1)
            extra = self.extra[part]
            factor = 1.0 + extra - extra * score if start else extra * score
            out.index_add_(0, owners, factor[:, None] * y)
        return out


def solve_rows_batched(side: Side, rows: Tensor, fixed: Tensor, gram: Tensor, steps: int) -> None:
    """`_solve_rows` for every row at once with tensor operations, on any device (the CUDA
    path): the same conjugate-gradient steps, each row stopping when its residual vanishes."""
    r = side.gather(rows, fixed, True) - rows @ gram
    p = r.clone()
    old = (r * r).sum(1)
    for _ in range(steps):
        active = old >= 1e-20
        if not bool(active.any()):
            break
        ap = p @ gram + side.gather(p, fixed, False)
        curvature = (p * ap).sum(1)
        step = torch.where(active, old / torch.where(active, curvature, 1.0), 0.0)
        rows.add_(step[:, None] * p)
        r.sub_(step[:, None] * ap)
        new = (r * r).sum(1)
        p = r + torch.where(active, new / torch.where(active, old, 1.0), 0.0)[:, None] * p
        old = new


def observed_loss_batched(side: Side, rows: Tensor, fixed: Tensor) -> float:
    """The observed pairs' part of the loss (`_solve_rows`' `losses`, summed) with tensor
    operations."""
    total = 0.0
    for start in range(0, len(side.owners), ENTRY_CHUNK):
        part = slice(start, start + ENTRY_CHUNK)
        score = (rows[side.owners[part]] * fixed[side.columns[part]]).sum(1).double()
        total += float(((1.0 + side.extra[part].double()) * (1.0 - score) ** 2 - score**2).sum())
    return total


def _one_weight(compressed: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Compressed rows whose weights are all alike keep one of them (the kernels read a
    single weight as every interaction's): a quarter less memory for plain interactions."""
    indptr, indices, weights = compressed
    if len(weights) > 1 and weights.min() == weights.max():
        return indptr, indices, weights[:1].copy()
    return compressed


def _float32_view(weight: Tensor) -> np.ndarray:
    """The table as a float32 array the kernel writes into: the table's own memory where it
    is float32 on the CPU, else a copy."""
    table = weight.detach()
    if table.dtype == torch.float32 and table.device.type == "cpu" and table.is_contiguous():
        return table.numpy()
    return table.float().cpu().numpy().copy()


@dataclass(frozen=True)
class AlsConfig(ModelConfig):
    """The als model's config.

    Args:
        n_factors: width of the user and item factors.
        l2: ridge penalty λ on every factor.
        alpha: confidence of an observed pair: 1 + alpha x its weight (a count, or 1).
        iterations: alternations (a user half and an item half each).
        cg_steps: conjugate-gradient steps per row and half.
    """

    kind: ClassVar[str] = "als"
    tunable = search_space(
        n_factors=("int_log", 16, 256), l2=("log", 0.01, 100), alpha=("log", 0.1, 50)
    )
    # chosen on validation rows of the bundled data (benchmarks/validate_defaults.py)
    n_factors: int = 32
    l2: float = 10.0
    alpha: float = 1.0
    iterations: int = 15
    cg_steps: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_factors", "iterations", "cg_steps"):
            object.__setattr__(self, name, whole(name, getattr(self, name)))
        for name in ("l2", "alpha"):
            value = getattr(self, name)
            if not is_finite(value) or value < 0 or (name == "l2" and value == 0):
                raise ConfigError(f"{name} must be a positive number, got {shown(value)}")
            object.__setattr__(self, name, float(value))

    def parameter_count(self) -> int:
        return (self.n_users + self.n_items) * self.n_factors

    def step_width(self) -> int:
        return 0

    def shape(self) -> str:
        return f"{self.n_factors}f"

    def solve_bytes(self, itemsize: int = 4) -> int:
        # the factors in float32 for the kernel and their copies in the model
        return 2 * self.parameter_count() * max(itemsize, 4)

    def solve_iterations(self) -> int:
        return self.iterations

    size_advice: ClassVar[str] = "fewer --factors"


class Als(LatentModel):
    """Scores = user factors . item factors; solved by alternating least squares. Ranks items
    and predicts no ratings; folds a new user in by the same closed-form row solve."""

    Config = AlsConfig
    config: AlsConfig
    engines = ("solve",)
    predicts_ratings = False
    user_tables = ("user_factors",)
    item_tables = ("item_factors",)

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__(n_users, n_items, **options)
        k = self.config.n_factors
        self.user_factors = embedding(n_users, k)
        self.item_factors = embedding(n_items, k)
        for table in (self.user_factors, self.item_factors):
            nn.init.normal_(table.weight, std=0.01)

    # ------------------------------------------------------------------ solving

    @torch.no_grad()
    def solve(
        self, data: Interactions, on_iteration: Callable[[int, float], None] | None = None
    ) -> float:
        """`iterations` alternations of the two halves (items, then users), in float32: on
        the CPU by the compiled row kernel, elsewhere (CUDA) by `solve_rows_batched`. Returns
        the final weighted loss (per interaction); `on_iteration(i, loss)` after each."""
        by_user = _one_weight(data.by_user())  # one side's weights go before the other's come
        if float(by_user[2].min(initial=1.0)) <= 0:
            raise DataError(
                f"als weighs each interaction by its count or rating (confidence 1 + alpha x "
                f"weight), and these data hold {float(by_user[2].min()):g}; give interactions "
                "(--implicit) or the liked ratings (--positive-min)"
            )
        # the other side from this one's: no repeats left to add up, so no second compression
        by_item = transpose(*by_user, self.config.n_items)
        if self.user_factors.weight.device.type != "cpu":
            return self.solve_batched(by_user, by_item, on_iteration)
        config = self.config
        users, items = (_float32_view(table.weight) for table in self.tables())
        user_side = (*by_user, np.float32(config.alpha))
        item_side = (*by_item, np.float32(config.alpha))
        user_chunks, item_chunks = _row_chunks(by_user[0]), _row_chunks(by_item[0])
        longest = int(np.diff(by_user[0]).max(initial=0))  # the user half keeps its rows' scores
        loss = math.nan
        none = np.empty(0)
        observed = np.empty(len(users))  # per user: the loss over their observed pairs
        for iteration in range(config.iterations):
            # the user half last: a trained user's factors are then what fold-in gives them
            _solve_rows(
                *item_side, items, users, self._gram(users), config.cg_steps, none, item_chunks, 0
            )
            item_gram = self._gram(items)  # the user half's, and the loss's
            _solve_rows(
                *user_side, users, items, item_gram, config.cg_steps, observed, user_chunks, longest
            )
            loss = self._loss(observed, users, items, item_gram) / max(len(user_side[1]), 1)
            if on_iteration is not None:
                on_iteration(iteration, loss)
        for table, solved in zip(self.tables(), (users, items), strict=True):
            if table.weight.data_ptr() != solved.ctypes.data:  # solved in a copy
                table.weight.copy_(torch.from_numpy(solved))
        return loss

    def tables(self) -> tuple[nn.Embedding, nn.Embedding]:
        return self.user_factors, self.item_factors

    @torch.no_grad()
    def solve_batched(
        self,
        by_user: tuple[np.ndarray, ...],
        by_item: tuple[np.ndarray, ...],
        on_iteration: Callable[[int, float], None] | None = None,
    ) -> float:
        """`solve` with every row of a half at once in tensor operations, on the factors'
        device (what a GPU runs; on the CPU it gives the kernel's factors to float32
        rounding)."""
        config = self.config
        device = self.user_factors.weight.device
        user_side = Side.of(by_user, config.alpha, device)
        item_side = Side.of(by_item, config.alpha, device)
        users = self.user_factors.weight.detach().float().clone()
        items = self.item_factors.weight.detach().float().clone()
        eye = config.l2 * torch.eye(config.n_factors, device=device)
        loss = math.nan
        for iteration in range(config.iterations):
            solve_rows_batched(item_side, items, users, users.T @ users + eye, config.cg_steps)
            item_gram = items.T @ items + eye
            solve_rows_batched(user_side, users, items, item_gram, config.cg_steps)
            every_pair = float((item_gram * (users.T @ users)).sum())
            observed = observed_loss_batched(user_side, users, items)
            total = every_pair + observed + config.l2 * float(items.square().sum())
            loss = total / max(len(user_side.owners), 1)
            if on_iteration is not None:
                on_iteration(iteration, loss)
        self.user_factors.weight.copy_(users)
        self.item_factors.weight.copy_(items)
        return loss

    def _gram(self, fixed: np.ndarray) -> np.ndarray:
        """Y'Y + λI of the fixed side's factors."""
        table = torch.from_numpy(fixed)
        gram = table.T @ table
        gram.diagonal().add_(self.config.l2)
        return gram.numpy()

    def _loss(
        self, observed: np.ndarray, users: np.ndarray, items: np.ndarray, item_gram: np.ndarray
    ) -> float:
        """The objective: sum over all pairs of c (p - x.y)^2 (c = 1 and p = 0 where unseen)
        plus λ times the squared norms of every factor; `item_gram` is Y'Y + λI, `observed`
        each user's correction for their observed pairs (from the user half's kernel)."""
        x, y = torch.from_numpy(users), torch.from_numpy(items)
        # the sum over users of x'(Y'Y + λI)x is every pair's (x.y)^2 and the users' penalty at
        # once; as the sum of (Y'Y + λI) times X'X, entry by entry, it needs no users x factors
        # temporary
        every_pair = float((torch.from_numpy(item_gram) * (x.T @ x)).sum())
        penalty = self.config.l2 * float(torch.dot(y.reshape(-1), y.reshape(-1)))
        return every_pair + float(observed.sum()) + penalty

    # ------------------------------------------------------------------ scoring

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return (user_rows[0] * item_rows[0]).sum(1)

    def rank(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return user_rows[0] @ item_rows[0].T

    def predict(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return self.rank(user_rows, item_rows)

    def item_vectors(self) -> Tensor:
        return self.item_factors.weight

    # ------------------------------------------------------------------ fold-in

    @torch.no_grad()
    def fold_in(self, item_index: Tensor, ratings: Tensor, prior: Any, steps: int) -> list[Tensor]:
        """The exact row solve for a new user whose interactions weigh `ratings` (counts, or
        1 each): what training's user half converges to, with the items fixed."""
        y = self.item_factors.weight.detach().double().cpu()
        chosen = y[item_index.cpu()]
        confidence = 1.0 + self.config.alpha * ratings.double().cpu()
        lhs = y.T @ y + self.config.l2 * torch.eye(y.shape[1], dtype=torch.float64)
        lhs += chosen.T @ ((confidence - 1.0)[:, None] * chosen)
        rhs = chosen.T @ confidence
        row = torch.linalg.solve(lhs, rhs)
        return [row[None].to(self.user_factors.weight)]
