"""`dot`: DotProductBias, the dot product of user and item factors plus a user and an item
bias, squashed into the prediction range (fastai's lesson-7 model)."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from latentrec.models.base import (
    LatentModel,
    ModelConfig,
    embedding,
    search_space,
    sigmoid_range,
    whole,
)


@dataclass(frozen=True)
class DotConfig(ModelConfig):
    """The dot model's config.

    Args:
        n_factors: width of the user and item factors.
    """

    kind: ClassVar[str] = "dot"
    # the ranges of the default optimiser (row-wise Adagrad with a per-rating L2 penalty)
    tunable = search_space(
        n_factors=("int_log", 8, 256), lr=("log", 0.01, 0.5), l2=("log", 1e-3, 0.3)
    )
    n_factors: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "n_factors", whole("n_factors", self.n_factors))

    def parameter_count(self) -> int:
        return (self.n_users + self.n_items) * (self.n_factors + 1)

    def step_width(self) -> int:
        return 2 * (self.n_factors + 1)

    def shape(self) -> str:
        return f"{self.n_factors}f"

    size_advice: ClassVar[str] = "smaller --factors"


class DotProductBias(LatentModel):
    """Dot product of user and item factors plus a user and an item bias, squashed to y_range.

    Trains on the fused CPU kernel (`latentrec.fused`) or through autograd; folds a new user in
    by a closed-form ridge regression; its item biases say what is liked regardless of taste.
    """

    Config = DotConfig
    config: DotConfig
    engines = ("fused", "autograd")
    extras = frozenset({"biases", "map"})
    # chosen on validation rows (benchmarks/validate_optimizer.py): row-wise Adagrad with an
    # L2 penalty per rating reaches a lower validation RMSE than AdamW in as many epochs, with
    # a third of AdamW's memory traffic per step; the penalty from the data (l2 None:
    # `training.l2_for`), as the best one falls with the ratings per row
    train_defaults = MappingProxyType({"optimizer": "adagrad"})
    optimizer_defaults = MappingProxyType(
        {
            "adagrad": MappingProxyType({"lr": 0.1, "wd": 0.0, "l2": None, "epochs": 5}),
            "adamw": MappingProxyType({"lr": 0.0075, "wd": 0.5, "l2": 0.0, "epochs": 5}),
        }
    )
    user_tables = ("user_factors", "user_bias")
    item_tables = ("item_factors", "item_bias")

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__(n_users, n_items, **options)
        n_factors = self.config.n_factors
        self.user_factors = embedding(n_users, n_factors)
        self.item_factors = embedding(n_items, n_factors)
        self.user_bias = embedding(n_users, 1)
        self.item_bias = embedding(n_items, 1)
        for table in (self.user_factors, self.item_factors):
            nn.init.trunc_normal_(table.weight, std=0.01)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        p_u, b_u = user_rows
        q_i, b_i = item_rows
        x = (p_u * q_i).sum(1) + b_u[:, 0] + b_i[:, 0]
        return sigmoid_range(x, *self.y_range)

    def predict(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return self.to_prediction(self.rank(user_rows, item_rows))

    def rank(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        # the sigmoid is monotone: rank on its input and squash only the chosen few
        p_u, b_u = user_rows
        q_i, b_i = item_rows
        return torch.addmm(b_i.T, p_u, q_i.T).add_(b_u)

    def to_prediction(self, scores: Tensor) -> Tensor:
        return sigmoid_range(scores, *self.y_range)

    def item_vectors(self) -> Tensor:
        return self.item_factors.weight

    def item_biases(self) -> Tensor:
        return self.item_bias.weight[:, 0]

    def fused_tables(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The weights in the order the fused kernel takes them: user factors and bias, item
        factors and bias."""
        return (
            self.user_factors.weight,
            self.user_bias.weight,
            self.item_factors.weight,
            self.item_bias.weight,
        )

    # ------------------------------------------------------------------ fold-in

    @torch.no_grad()
    def fold_in_prior(self, users: Tensor, items: Tensor, ratings: Tensor) -> _Prior:
        """Mean and variance of the trained users' [factors, bias], and the noise variance of
        the logit-scale fit on the given training ratings."""
        rows = torch.cat([self.user_factors.weight, self.user_bias.weight], 1).double().cpu()
        x = self._logit(self(users, items))
        noise = float(((self._logit(ratings.to(x)) - x) ** 2).mean())
        # one trained user has no spread (var is NaN): a wide prior, the ratings decide
        spread = rows.var(0) if len(rows) > 1 else torch.ones(rows.shape[1], dtype=rows.dtype)
        return _Prior(rows.mean(0), spread.clamp(min=1e-6), max(noise, 1e-3))

    @torch.no_grad()
    def fold_in(self, item_index: Tensor, ratings: Tensor, prior: Any, steps: int) -> list[Tensor]:
        """Ridge regression on the logit scale of the sigmoid for the user's factors and bias,
        with a Gaussian prior whose mean and variance are those of the trained users' rows
        (the shrinkage training's weight decay produced); closed form, `steps` unused."""
        device = self.user_factors.weight.device
        q = self.item_factors.weight.double()[item_index].cpu()
        b_i = self.item_bias.weight.double()[item_index, 0].cpu()
        target = self._logit(ratings.double()) - b_i
        design = torch.cat([q, torch.ones(len(ratings), 1, dtype=torch.float64)], dim=1)
        precision = torch.diag(1.0 / prior.variance)
        lhs = design.T @ design / prior.noise + precision
        rhs = design.T @ target / prior.noise + precision @ prior.mean
        solution = torch.linalg.solve(lhs, rhs)
        dtype = self.user_factors.weight.dtype
        return [solution[:-1].to(device, dtype)[None], solution[-1:].to(device, dtype)[None]]

    def _logit(self, values: Tensor) -> Tensor:
        low, high = self.y_range
        return torch.logit(((values - low) / (high - low)).clamp(1e-4, 1 - 1e-4))


class _Prior(NamedTuple):
    mean: Tensor
    variance: Tensor
    noise: float
