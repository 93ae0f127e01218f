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
from typing import Any, ClassVar

import numba
import numpy as np
import torch
from torch import Tensor, nn

from latentrec.errors import ConfigError, DataError
from latentrec.models.base import (
    Interactions,
    LatentModel,
    ModelConfig,
    embedding,
    is_finite,
    shown,
    whole,
)


def _kernel(func):
    return numba.njit(parallel=True, cache=True, nogil=True, fastmath={"reassoc", "contract"})(func)


@_kernel
def _solve_rows(indptr, indices, weights, alpha, rows, fixed, gram, steps):  # pragma: no cover
    """For each row u: a few conjugate-gradient steps, from its current value, towards the
    solution x of (G + sum_i (c_ui - 1) y_i y_i') x = sum_i c_ui y_i, where G = Y'Y + λI,
    c_ui = 1 + alpha w_ui and the sums run over u's interactions. Rows are independent: one
    per thread at a time. Loops rather than BLAS calls: a row's vectors are a few dozen
    numbers."""
    k = rows.shape[1]
    for u in numba.prange(len(indptr) - 1):
        x = rows[u]
        r = np.empty(k, dtype=rows.dtype)
        ap = np.empty(k, dtype=rows.dtype)
        for f in range(k):
            total = 0.0
            for g in range(k):
                total += gram[f, g] * x[g]
            r[f] = -total
        for j in range(indptr[u], indptr[u + 1]):
            y = fixed[indices[j]]
            c = 1.0 + alpha * weights[j]
            score = 0.0
            for f in range(k):
                score += y[f] * x[f]
            weight = c - (c - 1.0) * score
            for f in range(k):
                r[f] += weight * y[f]
        p = r.copy()
        old = 0.0
        for f in range(k):
            old += r[f] * r[f]
        for _ in range(steps):
            if old < 1e-20:
                break
            for f in range(k):
                total = 0.0
                for g in range(k):
                    total += gram[f, g] * p[g]
                ap[f] = total
            for j in range(indptr[u], indptr[u + 1]):
                y = fixed[indices[j]]
                score = 0.0
                for f in range(k):
                    score += y[f] * p[f]
                weight = alpha * weights[j] * score
                for f in range(k):
                    ap[f] += weight * y[f]
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


@_kernel
def _observed_loss(indptr, indices, weights, alpha, rows, fixed):  # pragma: no cover
    """Sum over observed pairs of c (1 - x.y)^2 - (x.y)^2: the correction of the all-pairs
    term x' Y'Y x to the weighted loss."""
    k = rows.shape[1]
    total = np.zeros(len(indptr) - 1)
    for u in numba.prange(len(indptr) - 1):
        x = rows[u]
        for j in range(indptr[u], indptr[u + 1]):
            y = fixed[indices[j]]
            score = 0.0
            for f in range(k):
                score += y[f] * x[f]
            total[u] += (1.0 + alpha * weights[j]) * (1.0 - score) ** 2 - score * score
    return total.sum()


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
        """`iterations` alternations of the two halves (items, then users), in float32 on the
        CPU; returns the
        final weighted loss (per interaction). `on_iteration(i, loss)` after each."""
        config = self.config
        by_user, by_item = data.by_user(), data.by_item()
        if len(by_user[2]) and float(by_user[2].min()) <= 0:
            raise DataError(
                f"als weighs each interaction by its count or rating (confidence 1 + alpha x "
                f"weight), and these data hold {float(by_user[2].min()):g}; give interactions "
                "(--implicit) or the liked ratings (--positive-min)"
            )
        users = self.user_factors.weight.detach().float().cpu().numpy().copy()
        items = self.item_factors.weight.detach().float().cpu().numpy().copy()
        user_side = (*by_user, np.float32(config.alpha))
        item_side = (*by_item, np.float32(config.alpha))
        loss = math.nan
        for iteration in range(config.iterations):
            # the user half last: a trained user's factors are then what fold-in gives them
            _solve_rows(*item_side, items, users, self._gram(users), config.cg_steps)
            item_gram = self._gram(items)  # the user half's, and the loss's
            _solve_rows(*user_side, users, items, item_gram, config.cg_steps)
            loss = self._loss(user_side, users, items, item_gram) / max(len(user_side[1]), 1)
            if on_iteration is not None:
                on_iteration(iteration, loss)
        self.user_factors.weight.copy_(torch.from_numpy(users))
        self.item_factors.weight.copy_(torch.from_numpy(items))
        return loss

    def _gram(self, fixed: np.ndarray) -> np.ndarray:
        """Y'Y + λI of the fixed side's factors."""
        table = torch.from_numpy(fixed)
        gram = table.T @ table
        gram.diagonal().add_(self.config.l2)
        return gram.numpy()

    def _loss(
        self,
        user_side: tuple[np.ndarray, ...],
        users: np.ndarray,
        items: np.ndarray,
        item_gram: np.ndarray,
    ) -> float:
        """The objective: sum over all pairs of c (p - x.y)^2 (c = 1 and p = 0 where unseen)
        plus λ times the squared norms of every factor; `item_gram` is Y'Y + λI."""
        x = torch.from_numpy(users)
        # x'(Y'Y + λI)x is every pair's (x.y)^2 and the users' penalty at once
        every_pair = float(((x @ torch.from_numpy(item_gram)) * x).sum())
        observed = float(_observed_loss(*user_side, users, items))
        return every_pair + observed + self.config.l2 * float(np.square(items).sum())

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
