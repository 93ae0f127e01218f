"""`ease`: Steck's EASE, a ranking model. An item-item weight matrix B with a zero diagonal,
solved in closed form from the Gram matrix of the interactions; a user's scores are their
interaction row times B. It ranks items; it predicts no ratings.

H. Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from latentrec.errors import ConfigError
from latentrec.kernels import gram as gram_of
from latentrec.models.base import (
    Interactions,
    LatentModel,
    ModelConfig,
    is_finite,
    search_space,
    shown,
)


@dataclass(frozen=True)
class EaseConfig(ModelConfig):
    """The ease model's config.

    Args:
        l2: the ridge penalty λ added to the Gram matrix's diagonal: larger values pull the
            weights towards zero (less overfitting to rare co-occurrences).
        feature_weight: where the data name the items' features (MovieLens genres and release
            decades, `data.item_features`), each feature joins the interactions as one more
            row that holds every item having it, times this weight: items that share features
            then count as chosen together (F F' weight^2 added to the Gram matrix); 0 leaves
            them out.
        session_weight: where the interactions have timestamps, each session (a user's
            interactions with no pause longer than `session_gap` hours) joins them as one
            more row holding its items, times this weight: items chosen in one sitting count
            as chosen together once more (S'S weight^2 added to the Gram matrix); 0 leaves
            sessions out.
        session_gap: the pause, in hours, that ends a session.
        session_run: a session longer than this many interactions is also cut, in time
            order, into runs of this many consecutive ones, each one more row with the
            session's weight: items chosen one after the other count as chosen together once
            more, where a long sitting (a new user rating dozens of films at once) would
            otherwise link all its items alike; 0 cuts none.
    """

    kind: ClassVar[str] = "ease"
    tunable = search_space(
        l2=("log", 10, 5000),
        feature_weight=("float", 0, 10),
        session_weight=("float", 0, 4),
        session_run=("int", 0, 40),
    )
    # chosen together on validation rows of the bundled data (validate_defaults.py): the best
    # with sessions, with or without item features; data with neither would prefer l2 400
    l2: float = 600.0
    feature_weight: float = 2.0
    session_weight: float = 1.0
    session_gap: float = 1.0
    session_run: int = 10
    # a model file from before the items' features, the sessions or their runs was solved
    # without them
    earlier = MappingProxyType({"feature_weight": 0.0, "session_weight": 0.0, "session_run": 0})

    # the solve keeps two items x items matrices at once: the Gram matrix (factored in place)
    # and its inverse, which becomes B
    SOLVE_COPIES: ClassVar[int] = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_finite(self.l2) or self.l2 <= 0:
            raise ConfigError(f"l2 must be a positive number, got {shown(self.l2)}")
        for name in ("feature_weight", "session_weight", "session_gap"):
            value = getattr(self, name)
            if not is_finite(value) or value < 0 or (name == "session_gap" and value == 0):
                bound = "> 0" if name == "session_gap" else ">= 0"
                raise ConfigError(f"{name} must be a number {bound}, got {shown(value)}")
            object.__setattr__(self, name, float(value))
        run = self.session_run
        if isinstance(run, bool) or not isinstance(run, (int, np.integer)) or run < 0:
            raise ConfigError(f"session_run must be a whole number >= 0, got {shown(run)}")
        object.__setattr__(self, "session_run", int(run))
        object.__setattr__(self, "l2", float(self.l2))

    def parameter_count(self) -> int:
        return self.n_items * self.n_items

    def step_width(self) -> int:
        return 0

    def shape(self) -> str:
        features = f", features x {self.feature_weight:g}" if self.feature_weight else ""
        runs = f", runs of {self.session_run}" if self.session_run else ""
        sessions = (
            f", sessions x {self.session_weight:g} ({self.session_gap:g} h{runs})"
            if self.session_weight
            else ""
        )
        return f"l2 {self.l2:g}{features}{sessions}"

    def solve_bytes(self, itemsize: int = 4) -> int:
        return self.SOLVE_COPIES * self.n_items * self.n_items * itemsize

    size_advice: ClassVar[str] = (
        "the als model for a catalogue this large (EASE keeps items x items matrices), or a "
        "larger --memory-budget"
    )


def _zero_diagonal(inverse: Tensor) -> Tensor:
    """B from P = (X'X + λI)^-1: column j over -P_jj, the diagonal zero; in place."""
    inverse.div_(-inverse.diagonal().clone())
    inverse.diagonal().zero_()
    return inverse.contiguous()  # row-major, as a loaded model's


def _runs(sessions: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The runs of `length` consecutive interactions cut from each session longer than that
    (the last run of a session may be shorter): the run of each interaction of a long session,
    which interactions those are, and the number of runs. `sessions` holds each interaction's
    session, a session's interactions together and in time order."""
    if len(sessions) == 0:
        return sessions, np.zeros(0, dtype=bool), 0
    starts = np.flatnonzero(np.r_[True, sessions[1:] != sessions[:-1]])
    lengths = np.diff(np.r_[starts, len(sessions)])
    position = np.arange(len(sessions)) - np.repeat(starts, lengths)
    in_long = np.repeat(lengths > length, lengths)
    runs = np.cumsum(position[in_long] % length == 0) - 1
    return runs, in_long, int(runs[-1]) + 1 if len(runs) else 0


class Ease(LatentModel):
    """Scores = X_u B, where X_u is the user's interaction row (1 for each item they rated or
    chose) and B = I - P diag(1/diag(P)), P = (X'X + λI)^-1: each item predicted from the
    others, never from itself.

    Solved, not trained by steps; ranks items and predicts no ratings. Scoring a user needs
    their interactions, which the Recommender hands over (`attach`); a new user's are their
    fold-in ratings.
    """

    Config = EaseConfig
    config: EaseConfig
    engines = ("solve",)
    predicts_ratings = False

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__(n_users, n_items, **options)
        self.register_buffer("weights", torch.zeros(n_items, n_items))
        self._rows: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ solving

    @torch.no_grad()
    def solve(self, data: Interactions, on_iteration: Any = None) -> float:
        """B from the interactions, in the weights' dtype on their device: a Cholesky
        factorisation of X'X + λI and its inverse (no explicit inversion); with fewer users
        than items, the same P through the users' side (`_inverse_by_users`)."""
        device, dtype = self.weights.device, self.weights.dtype
        self.weights = self.weights.new_empty(0)  # the solve's two matrices are all it holds
        features = self._feature_rows(data, device, dtype)
        sessions = self._sessions(data)
        n_sessions = sessions[2] if sessions is not None else 0
        if data.n_users + n_sessions + len(features) < data.n_items // 2:
            inverse = self._inverse_by_users(data, features, sessions, device, dtype)
            self.weights = _zero_diagonal(inverse)
            return math.nan
        gram = data.gram()
        if sessions is not None:  # the sessions' rows, added before any copy of the matrix
            rows, items, n = sessions
            ones = np.ones(len(rows), dtype=np.float32)
            by_sessions = gram_of(rows, items, ones, n, data.n_items, binary=True)
            by_sessions *= np.float32(self.config.session_weight**2)
            gram += by_sessions
            del by_sessions
        gram = torch.from_numpy(gram).to(device=device, dtype=dtype)
        gram.addmm_(features.T, features)  # the features' rows, as more users' would
        gram.diagonal().add_(self.config.l2)
        factor, info = torch.linalg.cholesky_ex(gram)
        del gram  # from here on two matrices at most: the factor, then the inverse
        if int(info):
            raise ConfigError(
                f"the Gram matrix is not positive definite at row {int(info)}; raise l2 "
                f"(now {self.config.l2:g})"
            )
        inverse = torch.cholesky_inverse(factor)
        del factor
        self.weights = _zero_diagonal(inverse)
        return math.nan

    def _feature_rows(self, data: Interactions, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The items' features as rows beside the users' (features x items, each row
        `feature_weight` where an item has the feature); no rows without a weight or data."""
        found = data.item_features() if self.config.feature_weight else None
        if found is None:
            return torch.zeros(0, data.n_items, dtype=dtype, device=device)
        indptr, columns, n_features = found
        rows = torch.zeros(n_features, data.n_items, dtype=dtype)
        owners = torch.from_numpy(np.repeat(np.arange(data.n_items), np.diff(indptr)))
        rows[torch.from_numpy(np.asarray(columns, np.int64)), owners] = self.config.feature_weight
        return rows.to(device)

    def _sessions(self, data: Interactions) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The sessions' rows (`Interactions.sessions`), then the runs cut from the long ones
        (`_runs`), where they have a weight and the data timestamps."""
        if not self.config.session_weight:
            return None
        found = data.sessions(self.config.session_gap * 3600.0)
        if found is None or not self.config.session_run:
            return found
        sessions, items, n = found
        runs, in_long, n_runs = _runs(sessions, self.config.session_run)
        return (
            np.concatenate([sessions, runs + n]),
            np.concatenate([items, items[in_long]]),
            n + n_runs,
        )

    def _inverse_by_users(
        self,
        data: Interactions,
        features: Tensor,
        sessions: tuple[np.ndarray, np.ndarray, int] | None,
        device: torch.device,
        dtype: torch.dtype,
    ) -> Tensor:
        """P = (X'X + λI)^-1 = (I - X'(XX' + λI)^-1 X) / λ: a users x users factorisation
        instead of an items x items one (the same P, far less work with few users). X holds
        the feature rows, then the sessions' rows, below the users'."""
        l2 = self.config.l2
        indptr, items, _ = data.by_user()
        rows = torch.from_numpy(np.repeat(np.arange(data.n_users), np.diff(indptr)))
        n_sessions = sessions[2] if sessions is not None else 0
        height = data.n_users + len(features) + n_sessions
        x = torch.zeros(height, data.n_items, dtype=dtype, device=device)
        x[rows.to(device), torch.from_numpy(items.astype(np.int64)).to(device)] = 1.0
        x[data.n_users : data.n_users + len(features)] = features
        if sessions is not None:
            first = data.n_users + len(features)
            at = torch.from_numpy(sessions[0].astype(np.int64) + first).to(device)
            x[at, torch.from_numpy(sessions[1].astype(np.int64)).to(device)] = (
                self.config.session_weight
            )
        kernel = x @ x.T
        kernel.diagonal().add_(l2)
        factor, info = torch.linalg.cholesky_ex(kernel)
        if int(info):
            raise ConfigError(
                f"the users' Gram matrix is not positive definite at row {int(info)}; raise "
                f"l2 (now {l2:g})"
            )
        solved = torch.cholesky_solve(x, factor)  # (XX' + λI)^-1 X
        del kernel, factor  # before the items x items product: two such matrices at most
        inverse = x.T @ solved  # X'(XX' + λI)^-1 X
        del x, solved
        inverse.neg_().diagonal().add_(1.0)
        return inverse.div_(l2)

    # ------------------------------------------------------------------ scoring

    def attach(self, indptr: np.ndarray, items: np.ndarray) -> None:
        # each user's distinct items: X is binary, as it was for the solve
        self._rows = (indptr, items)

    def user_rows(self, user_index: Tensor) -> list[Tensor]:
        """The users' interaction rows, sparse (a row holds a user's few items of many)."""
        if self._rows is None:
            raise ConfigError(
                "the ease model scores a user from their interactions: use it through a "
                "Recommender (which hands them over)"
            )
        indptr, items = self._rows
        index = user_index.cpu().numpy()
        starts, ends = indptr[index], indptr[index + 1]
        rows = np.repeat(np.arange(len(index)), ends - starts)
        cols = np.concatenate([items[s:e] for s, e in zip(starts, ends, strict=True)] or [[]])
        coordinates = torch.from_numpy(np.vstack([rows, cols.astype(np.int64)]))
        ones = torch.ones(len(rows), dtype=self.weights.dtype)
        shape = (len(index), self.n_items)
        sparse = torch.sparse_coo_tensor(
            coordinates, ones, shape, is_coalesced=True, check_invariants=False
        )
        return [sparse.to(self.weights.device)]  # distinct (row, item) pairs: coalesced already

    def item_rows(self) -> list[Tensor]:
        return [self.weights]

    def rank(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        rows = user_rows[0]
        return torch.sparse.mm(rows, item_rows[0]) if rows.is_sparse else rows @ item_rows[0]

    def predict(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return self.rank(user_rows, item_rows)

    def forward(self, user_index: Tensor, item_index: Tensor) -> Tensor:
        rows = self.user_rows(user_index.clamp(min=0))[0].to_dense()
        return (rows * self.weights.T.index_select(0, item_index.clamp(min=0))).sum(1)

    def item_vectors(self) -> Tensor:
        return self.weights

    # ------------------------------------------------------------------ fold-in

    def fold_in(self, item_index: Tensor, ratings: Tensor, prior: Any, steps: int) -> list[Tensor]:
        """The new user's interaction row: 1 for each item they rated (closed form)."""
        row = torch.zeros(1, self.n_items, dtype=self.weights.dtype, device=self.weights.device)
        row[0, item_index] = 1.0
        return [row]
