"""`bayes`: Bayesian matrix factorization with implicit signals, fitted by Gibbs sampling.

A rating is predicted as mu + b_u + b_i + d_u . c_i, where the user's vector and bias take the
normalised sum of implicit weights of the items they rated, and the item's those of its raters:

    (d_u, b_u) = (p_u, a_u) + |N(u)|^-1/2 sum_{j in N(u)} (y_j, w_j)
    (c_i, b_i) = (q_i, a_i) + |R(i)|^-1/2 sum_{v in R(i)} (z_v, x_v)

(N(u): the items u rated in training, R(i): i's raters; SVD++ on both sides, Koren 2008, with
the linear terms of a factorization machine over the same features). A user's row is kept as
one vector [d_u, b_u, 1] and an item's as [c_i, 1, b_i], so that their dot product is the
prediction less mu and one sampler draws factors and bias together. Every group of weights
(p, q, y, z with their linear terms) has a Gaussian prior with a mean and a precision per
dimension, themselves drawn from Gaussian-Gamma hyperpriors, and the noise precision has a
Gamma prior (BPMF, Salakhutdinov and Mnih 2008, with the diagonal hyperpriors of Rendle's
Bayesian factorization machines). Gibbs sampling draws each row given the rest; predictions
average the samples kept after the burn-in, which removes the learning rate and the weight
decay that a point estimate must be tuned for.

Rows of one side are drawn in parallel by numba kernels (on CUDA: all at once in tensor
operations, `_own_batched`, with the same random numbers, so the same samples to rounding; a
GPU's sums are not in a fixed order, so there a seed repeats its samples only to rounding too);
the implicit and feature rows one after another on the CPU (each moves many rows' sums). Where
the data name the items' features
(MovieLens genres and release decades, `data.item_features`), each feature adds a weight vector
to its items' vectors, as the raters' implicit rows do. Every random number comes from one
seeded numpy generator in the calling thread, so a seed gives the same samples on any number
of threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

import numba
import numpy as np
import torch
from torch import Tensor

from latentrec import kernels
from latentrec.errors import ConfigError
from latentrec.models.base import (
    Interactions,
    LatentModel,
    ModelConfig,
    embedding,
    is_finite,
    search_space,
    whole,
)

# hyperpriors: Gamma(A0, B0) on every precision, N(0, 1 / (GAMMA0 x precision)) on every mean
A0, B0, GAMMA0 = 1.0, 1.0, 1.0
STAR_SPAN = 4.5  # MovieLens stars, 0.5..5: the rating span the hyperpriors suit
INIT_STD = 0.1  # the factors' first values
CHUNKS = 64  # blocks of rows the parallel kernels share out


# sums may be reassociated (vectorised): the same compiled code runs on any thread count, so
# results stay the same for a seed
FASTMATH = {"reassoc", "contract"}


def _kernel(func):
    return numba.njit(parallel=True, cache=True, nogil=True, fastmath=FASTMATH)(func)


def _serial(func):
    return numba.njit(cache=True, nogil=True, fastmath=FASTMATH)(func)


@_serial
def _draw_gaussian(a, h, z, out, w):  # pragma: no cover
    """out = A^-1 h + L^-T z, a draw from N(A^-1 h, A^-1), where A = L L' (Cholesky, in
    place of `a`'s lower triangle) is the precision and z standard normal; w is scratch."""
    k = a.shape[0]
    for j in range(k):
        total = a[j, j]
        for m in range(j):
            total -= a[j, m] * a[j, m]
        a[j, j] = math.sqrt(max(total, 1e-12))
        for i in range(j + 1, k):
            total = a[i, j]
            for m in range(j):
                total -= a[i, m] * a[j, m]
            a[i, j] = total / a[j, j]
    # forward: L w = h; then backward: L' out = w + z (mean plus the noise's share)
    for i in range(k):
        total = h[i]
        for m in range(i):
            total -= a[i, m] * w[m]
        w[i] = total / a[i, i]
    for i in range(k):
        w[i] += z[i]
    for i in range(k - 1, -1, -1):
        total = w[i]
        for m in range(i + 1, k):
            total -= a[m, i] * out[m]
        out[i] = total / a[i, i]


@_kernel
def _sample_factors(
    indptr,
    columns,
    ratings,
    offset,
    own,
    effective,
    fixed,
    free,
    mean,
    precision,
    alpha,
    draws,
    grams,
    sums,
    work,
    errors,
):  # pragma: no cover
    """Each row's own weights (its dimensions `free`; the others stay) given everything else:
    the side's rows are independent given the other side's effective vectors `fixed`.
    `effective` (own plus the implicit part) moves with `own`. Leaves, per row and over its
    ratings, the sum of c c' in `grams`, of c times the new residual in `sums` (c: the fixed
    side's vector on the free dimensions), which the implicit rows' draws need, and of the
    squared new residuals in `errors`. Residuals are computed as they are needed (`work`
    holds them, in the side's order, between the two passes over a row's ratings). Rows go
    in CHUNKS blocks, each with its own scratch memory."""
    width = len(free)
    size = own.shape[1]
    n_rows = len(indptr) - 1
    for chunk in numba.prange(CHUNKS):
        h = np.empty(width)
        a = np.empty((width, width))
        new = np.empty(width)
        delta = np.empty(width)
        c = np.empty(width)
        scratch = np.empty(width)
        for row in range(chunk * n_rows // CHUNKS, (chunk + 1) * n_rows // CHUNKS):
            gram = grams[row]
            x = own[row]
            d = effective[row]
            for f in range(width):
                h[f] = precision[f] * mean[f]
                for g in range(width):
                    gram[f, g] = 0.0
            for j in range(indptr[row], indptr[row + 1]):
                vector = fixed[columns[j]]
                prediction = offset
                for f in range(size):
                    prediction += d[f] * vector[f]
                score = 0.0
                for f in range(width):
                    c[f] = vector[free[f]]
                    score += x[free[f]] * c[f]
                e = ratings[j] - prediction
                work[j] = e
                # the rating less all but this row's free part, times the noise precision
                target = alpha * (e + score)
                for f in range(width):
                    h[f] += target * c[f]
                    for g in range(f + 1):
                        gram[f, g] += c[f] * c[g]
            for f in range(width):
                for g in range(f + 1):
                    a[f, g] = alpha * gram[f, g]
                    gram[g, f] = gram[f, g]
                a[f, f] += precision[f]
            _draw_gaussian(a, h, draws[row], new, scratch)
            for f in range(width):
                delta[f] = new[f] - x[free[f]]
                x[free[f]] = new[f]
                d[free[f]] += delta[f]
            total = sums[row]
            for f in range(width):
                total[f] = 0.0
            squares = 0.0
            for j in range(indptr[row], indptr[row + 1]):
                vector = fixed[columns[j]]
                e = work[j]
                for f in range(width):
                    c[f] = vector[free[f]]
                    e -= delta[f] * c[f]
                squares += e * e
                for f in range(width):
                    total[f] += e * c[f]
            errors[row] = squares


@_kernel
def _owner_grams(indptr, owners, scale, grams, out):  # pragma: no cover
    """out[row] = the sum over the row's owners o of scale[o]^2 grams[o]: each implicit row's
    data precision, which its draws in sequence do not change (rows in parallel)."""
    flat_grams = grams.reshape(len(grams), -1)
    flat_out = out.reshape(len(out), -1)
    size = flat_grams.shape[1]
    for row in numba.prange(len(indptr) - 1):
        a = flat_out[row]
        for t in range(size):
            a[t] = 0.0
        for j in range(indptr[row], indptr[row + 1]):
            o = owners[j]
            s2 = scale[o] * scale[o]
            gram = flat_grams[o]
            for t in range(size):
                a[t] += s2 * gram[t]


@_serial
def _sample_implicit(
    indptr,
    owners,
    scale,
    implicit,
    effective,
    free,
    data_precisions,
    grams,
    sums,
    mean,
    precision,
    alpha,
    draws,
):  # pragma: no cover
    """Each implicit row j (an item's y_j, or a user's z_v), one after another: it adds
    scale[o] times itself to the effective vector of every owner o that has it, on the free
    dimensions (o's ratings enter through grams[o] and sums[o], which follow each draw;
    data_precisions[j] is `_owner_grams`')."""
    width = len(free)
    a = np.empty((width, width))
    h = np.empty(width)
    new = np.empty(width)
    delta = np.empty(width)
    scratch = np.empty(width)
    for row in range(len(indptr) - 1):
        y = implicit[row]
        data = data_precisions[row]
        for f in range(width):
            h[f] = 0.0
        for j in range(indptr[row], indptr[row + 1]):
            o = owners[j]
            s = scale[o]
            for f in range(width):
                h[f] += s * sums[o, f]
        # the mean's numerator adds A y (the ratings as they would be without this row's
        # current value, A the data's precision) and the prior's share
        for f in range(width):
            back = 0.0
            for g in range(width):
                back += data[f, g] * y[free[g]]
                a[f, g] = alpha * data[f, g]
            h[f] = alpha * (h[f] + back) + precision[f] * mean[f]
            a[f, f] += precision[f]
        _draw_gaussian(a, h, draws[row], new, scratch)
        for f in range(width):
            delta[f] = new[f] - y[free[f]]
            y[free[f]] = new[f]
        for j in range(indptr[row], indptr[row + 1]):
            o = owners[j]
            s = scale[o]
            gram = grams[o]
            for f in range(width):
                effective[o, free[f]] += s * delta[f]
                back = 0.0
                for g in range(width):
                    back += gram[f, g] * delta[g]
                sums[o, f] -= s * back


@_kernel
def _implicit_sums(indptr, columns, scale, implicit, own, out):  # pragma: no cover
    """out[row] = own[row] + scale[row] x the sum of implicit[column] over its columns."""
    k = implicit.shape[1]
    for row in numba.prange(len(indptr) - 1):
        total = np.zeros(k)
        for j in range(indptr[row], indptr[row + 1]):
            c = columns[j]
            for f in range(k):
                total[f] += implicit[c, f]
        for f in range(k):
            out[row, f] = own[row, f] + scale[row] * total[f]


BLOCK_BYTES = 256 << 20  # what a batched draw's per-rating scratch (w^2 numbers each) may take


def _own_batched(
    side: _DeviceSide,
    offset: float,
    own: np.ndarray,
    effective: np.ndarray,
    fixed: np.ndarray,
    free: np.ndarray,
    mean: np.ndarray,
    precision: np.ndarray,
    alpha: float,
    draws: np.ndarray,
    rows: _Rows,
) -> None:
    """`_sample_factors` with every row of the side at once, in tensor operations on the
    side's device (what a GPU runs): the same conditional and the same standard normal draws,
    so the same samples up to rounding. `own` and `effective` are updated in place; the rows'
    grams, sums and squared errors land in `rows`, on the CPU, for the implicit rows' draws."""
    device = side.rows.device
    put = lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(device)  # noqa: E731
    own_t, effective_t, fixed_t, free_t = put(own), put(effective), put(fixed), put(free)
    n, width = len(own), len(free)
    h = (put(precision) * put(mean)).expand(n, width).clone()
    gram = torch.zeros(n, width, width, dtype=torch.float64, device=device)
    per_block = max(1, BLOCK_BYTES // (8 * (width * width + 2 * own.shape[1])))
    blocks = [slice(start, start + per_block) for start in range(0, len(side.rows), per_block)]
    residuals = []  # each block's, before the draw (the kernel's `work`)
    for block in blocks:
        row, vector = side.rows[block], fixed_t[side.columns[block]]
        c = vector[:, free_t]
        e = side.ratings[block] - offset - (effective_t[row] * vector).sum(1)
        residuals.append(e)
        target = alpha * (e + (own_t[row][:, free_t] * c).sum(1))
        h.index_add_(0, row, target[:, None] * c)
        gram.index_add_(0, row, c[:, :, None] * c[:, None, :])
    a = alpha * gram + torch.diag_embed(put(precision).expand(n, width))
    factor = torch.linalg.cholesky(a)
    noise = torch.linalg.solve_triangular(factor.mT, put(draws)[:, :, None], upper=True)
    new = torch.cholesky_solve(h[:, :, None], factor)[:, :, 0] + noise[:, :, 0]
    delta = new - own_t[:, free_t]
    own_t[:, free_t] = new
    effective_t[:, free_t] += delta
    sums = torch.zeros(n, width, dtype=torch.float64, device=device)
    errors = torch.zeros(n, dtype=torch.float64, device=device)
    for block, before in zip(blocks, residuals, strict=True):  # as the kernel's second pass
        row, c = side.rows[block], fixed_t[side.columns[block]][:, free_t]
        e = before - (delta[row] * c).sum(1)  # the residuals after the draw
        sums.index_add_(0, row, e[:, None] * c)
        errors.index_add_(0, row, e * e)
    own[:] = own_t.cpu().numpy()
    effective[:] = effective_t.cpu().numpy()
    rows.grams[:] = gram.cpu().numpy()
    rows.sums[:] = sums.cpu().numpy()
    rows.errors[:] = errors.cpu().numpy()


class _DeviceSide(NamedTuple):
    """One side's ratings on a device, a row index per rating (for `_own_batched`)."""

    rows: Tensor
    columns: Tensor
    ratings: Tensor

    @classmethod
    def of(cls, side: _Side, device: torch.device) -> _DeviceSide:
        rows = np.repeat(np.arange(len(side.indptr) - 1), np.diff(side.indptr))
        return cls(
            *(torch.from_numpy(a).to(device) for a in (rows, side.columns.astype(np.int64))),
            torch.from_numpy(side.ratings).to(device),
        )


class _Side(NamedTuple):
    """One side's ratings as compressed rows: for each row its ratings' columns (the other
    side's rows) and values."""

    indptr: np.ndarray
    columns: np.ndarray
    ratings: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray, columns: np.ndarray, ratings: np.ndarray, n_rows: int) -> _Side:
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return cls(indptr, columns[order].astype(np.int32), ratings[order].astype(np.float64))

    def distinct(self) -> _Side:
        """Each row's distinct columns (a pair rated twice counts once), without values."""
        rows = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        n_columns = int(self.columns.max()) + 1 if len(self.columns) else 1
        keys = kernels.distinct(rows * n_columns + self.columns)
        indptr = np.zeros_like(self.indptr)
        np.cumsum(np.bincount(keys // n_columns, minlength=len(indptr) - 1), out=indptr[1:])
        return _Side(indptr, (keys % n_columns).astype(np.int32), np.empty(0))

    @property
    def scale(self) -> np.ndarray:
        """|row's ratings|^-1/2 (0 for a row without any): the implicit sums' normaliser."""
        counts = np.diff(self.indptr).astype(np.float64)
        return np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0)


class _Rows(NamedTuple):
    """One side's draws: the places of its vectors it draws (`free`), its implicit sums'
    scale, and per row what a draw of its own weights leaves: the gram and the sum over its
    ratings (for the implicit rows' draws) and the squared error."""

    free: np.ndarray
    scale: np.ndarray
    grams: np.ndarray
    sums: np.ndarray
    errors: np.ndarray

    @classmethod
    def of(cls, n_rows: int, free: list[int], scale: np.ndarray) -> _Rows:
        width = len(free)
        return cls(
            np.array(free, dtype=np.int64),
            scale,
            np.empty((n_rows, width, width)),
            np.empty((n_rows, width)),
            np.empty(n_rows),
        )


@dataclass
class _Group:
    """A group of weights' prior: a mean and a precision per dimension."""

    mean: np.ndarray
    precision: np.ndarray

    @classmethod
    def first(cls, width: int) -> _Group:
        return cls(np.zeros(width), np.ones(width))

    def resample(self, weights: np.ndarray, rng: np.random.Generator) -> None:
        """Draw the mean and precision given the group's weights (rows x width)."""
        n = len(weights)
        spread = ((weights - self.mean) ** 2).sum(0) + GAMMA0 * self.mean**2
        self.precision = rng.gamma(A0 + (n + 1) / 2, 1.0 / (B0 + spread / 2))
        centre = weights.sum(0) / (n + GAMMA0)
        self.mean = centre + rng.standard_normal(len(centre)) / np.sqrt(
            (n + GAMMA0) * self.precision
        )


@dataclass(frozen=True)
class BayesConfig(ModelConfig):
    """The bayes model's config.

    Args:
        n_factors: width of the user and item vectors.
        samples: Gibbs sweeps in all, the burn-in included.
        burn_in: first sweeps left out of the predictions.
        kept: samples the model keeps and averages, evenly spaced after the burn-in (memory
            and prediction time grow with it); at most the samples after the burn-in, which
            the defaults keep all of.
        implicit_signals: add the implicit signals (the items each user rated, the users who rated
            each item); False gives plain Bayesian matrix factorization.
        item_features: add what the data say of each item beside its ratings (for MovieLens
            data: its genres and the decade its title dates it to), each feature a
            weight vector added to the item's, so an item with few ratings borrows from those
            that share its features; data without any train as if False.
    """

    kind: ClassVar[str] = "bayes"
    earlier = MappingProxyType({"unit": 1.0})
    tunable = search_space(n_factors=("int_log", 4, 64), burn_in=("int", 0, 50))
    # chosen on validation rows of the bundled data (benchmarks/validate_bayes.py)
    n_factors: int = 10
    samples: int = 100
    burn_in: int = 2
    kept: int = 100
    implicit_signals: bool = True
    item_features: bool = True
    # set by fitting: the rating span over 4.5 (MovieLens stars' 0.5..5, the scale the priors
    # suit); the sampler works on ratings divided by it, and the item vectors are kept times
    # it, so any scale samples alike (1 in models saved before it came)
    unit: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (is_finite(self.unit) and self.unit > 0):
            raise ConfigError(f"unit must be a positive number, got {self.unit!r}")
        object.__setattr__(self, "unit", float(self.unit))
        for name in ("n_factors", "samples", "kept"):
            object.__setattr__(self, name, whole(name, getattr(self, name)))
        object.__setattr__(self, "burn_in", whole("burn_in", self.burn_in, least=0))
        if self.burn_in >= self.samples:
            raise ConfigError(
                f"burn_in ({self.burn_in}) must be below samples ({self.samples}): no sample "
                "would be kept; give more --samples or a shorter --burn-in"
            )
        if self.kept > self.samples - self.burn_in:
            object.__setattr__(self, "kept", self.samples - self.burn_in)
        for name in ("implicit_signals", "item_features"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def vector(self) -> int:
        """Numbers in one sample's user or item vector: the factors, then two bias places."""
        return self.n_factors + 2

    @property
    def width(self) -> int:
        """Numbers in a user's or an item's row of the model: a vector per kept sample."""
        return self.vector * self.kept

    def parameter_count(self) -> int:
        implicit = self.n_items * self.width if self.implicit_signals else 0
        priors = self.kept * (2 * (self.vector - 1) + 1)  # fold-in's prior and noise
        return (self.n_users + self.n_items) * self.width + implicit + priors

    def step_width(self) -> int:
        return 0

    def shape(self) -> str:
        return f"{self.n_factors}f x {self.kept}"

    def solve_iterations(self) -> int:
        return self.samples

    def solve_bytes(self, itemsize: int = 4) -> int:
        k, rows = self.vector, self.n_users + self.n_items
        # per row: own, effective and implicit vectors, sums and a gram, in float64, and the
        # model's tables; the ratings' own copies (about 40 bytes each) come on top, as the
        # config does not know how many there are
        return rows * (4 * k + k * k) * 8 + self.parameter_count() * max(itemsize, 4)

    size_advice: ClassVar[str] = "fewer --factors or --kept"


class Bayes(LatentModel):
    """User vector . item vector, averaged over kept Gibbs samples: each row of
    `user_factors` and `item_factors` holds one vector per kept sample (the item's divided by
    the number kept), biases included, so their dot product is the samples' mean. Predictions
    are clipped to the rating scale. A new user is folded in by each kept sample's posterior
    mean."""

    Config = BayesConfig
    config: BayesConfig
    engines = ("solve",)
    extras = frozenset({"biases", "map"})
    user_tables = ("user_factors",)
    item_tables = ("item_factors",)

    def __init__(self, n_users: int = 1, n_items: int = 1, **options: Any) -> None:
        super().__init__(n_users, n_items, **options)
        config = self.config
        self.user_factors = embedding(n_users, config.width)
        self.item_factors = embedding(n_items, config.width)
        for table in self.tables().values():
            table.weight.requires_grad_(False)
            table.weight.zero_()
        # what fold-in needs of each kept sample: the items' implicit rows, and the user
        # side's prior (means and precisions of its free places) and noise precision
        implicit_width = config.width if config.implicit_signals else 0
        free = config.vector - 1
        self.register_buffer("implicit_factors", torch.zeros(n_items, implicit_width))
        self.register_buffer("user_prior_mean", torch.zeros(config.kept, free))
        self.register_buffer("user_prior_precision", torch.ones(config.kept, free))
        self.register_buffer("noise_precision", torch.ones(config.kept))

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def solve(
        self, data: Interactions, on_iteration: Callable[[int, float], None] | None = None
    ) -> float:
        """`samples` Gibbs sweeps; `on_iteration(i, rmse)` after each with the training RMSE
        of that sample. Returns the last sample's training RMSE."""
        users, items, ratings = data.ratings()
        features = data.item_features() if self.config.item_features else None
        seed = int(torch.randint(0, 2**62, ()))  # from fit's seeded torch generator
        rng = np.random.default_rng(seed)
        span = float(np.ptp(ratings)) if len(ratings) else 0.0
        unit = span / STAR_SPAN if span > 0 and math.isfinite(span) else 1.0
        self.config = replace(self.config, unit=unit)
        offset = float(self.global_mean) / unit
        device = self.user_factors.weight.device
        sampler = _Sampler(
            self.config, users, items, np.asarray(ratings, dtype=np.float64) / unit, offset,
            rng, features, device if device.type == "cuda" else None,  # elsewhere the CPU's
        )  # fmt: skip
        rmse = math.nan
        for sample in range(self.config.samples):
            rmse = sampler.sweep()
            slot = self._slot(sample)
            if slot is not None:
                self._keep(sampler, slot)
            if on_iteration is not None:
                on_iteration(sample, rmse)
        return rmse

    def _slot(self, sample: int) -> int | None:
        """Where sample `sample` is kept (None: it is not): `kept` evenly spaced samples after
        the burn-in, the last one among them, in slots in the order they were drawn."""
        config = self.config
        span = config.samples - config.burn_in
        from_end = config.samples - 1 - sample
        for slot in range(config.kept):
            if from_end == (slot * span) // config.kept:
                return config.kept - 1 - slot
        return None

    def _keep(self, sampler: _Sampler, slot: int) -> None:
        config = self.config
        place = slice(slot * config.vector, (slot + 1) * config.vector)
        like = self.user_factors.weight  # the tables' dtype and device
        self.user_factors.weight[:, place] = torch.from_numpy(sampler.user_vectors).to(like)
        items = sampler.item_vectors * (config.unit / config.kept)  # in the ratings' units
        self.item_factors.weight[:, place] = torch.from_numpy(items).to(like)
        if config.implicit_signals:
            self.implicit_factors[:, place] = torch.from_numpy(sampler.item_implicit).to(like)
        prior = sampler.groups["p"]
        self.user_prior_mean[slot] = torch.from_numpy(prior.mean).to(self.user_prior_mean)
        self.user_prior_precision[slot] = torch.from_numpy(prior.precision).to(like.device)
        self.noise_precision[slot] = sampler.alpha

    # ------------------------------------------------------------------ scoring

    def interact(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return self.to_prediction((user_rows[0] * item_rows[0]).sum(1))

    def rank(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return user_rows[0] @ item_rows[0].T

    def predict(self, user_rows: list[Tensor], item_rows: list[Tensor]) -> Tensor:
        return self.to_prediction(self.rank(user_rows, item_rows))

    def to_prediction(self, scores: Tensor) -> Tensor:
        low, high = self.config.rating_range or self.y_range
        return (scores + self.global_mean.to(scores)).clamp(low, high)

    def item_vectors(self) -> Tensor:
        return self.item_factors.weight

    def item_biases(self) -> Tensor:
        """Each item's bias averaged over the kept samples."""
        config = self.config
        rows = self.item_factors.weight.reshape(-1, config.kept, config.vector)
        return rows[:, :, config.n_factors + 1].sum(1)  # kept vectors are divided by kept

    # ------------------------------------------------------------------ fold-in

    @torch.no_grad()
    def fold_in(self, item_index: Tensor, ratings: Tensor, prior: Any, steps: int) -> list[Tensor]:
        """Each kept sample's posterior mean of the new user's factors and bias given their
        ratings, that sample's item vectors and its prior, whose mean takes the implicit sum
        of the rated items; closed form, `steps` unused."""
        config = self.config
        kept, k = config.kept, config.vector
        index = item_index.cpu()
        items = self.item_factors.weight.detach().double().cpu()[index] / config.unit
        items = items.reshape(-1, kept, k).transpose(0, 1) * kept  # kept x ratings x vector
        design = items[:, :, : k - 1]  # the user's free places: factors and bias
        # in the sampler's units (the ratings over `unit`), as the priors and the noise are
        target = (ratings.double().cpu() - float(self.global_mean)) / config.unit
        target = target - items[:, :, k - 1]
        mean = self.user_prior_mean.double().cpu().clone()
        if config.implicit_signals and len(index):
            implicit = self.implicit_factors.double().cpu()[index].reshape(-1, kept, k)
            mean += implicit[:, :, : k - 1].sum(0) / math.sqrt(len(index))
        noise = self.noise_precision.double().cpu()
        precision = self.user_prior_precision.double().cpu()
        lhs = noise[:, None, None] * design.transpose(1, 2) @ design + torch.diag_embed(precision)
        rhs = noise[:, None] * (design.transpose(1, 2) @ target[:, :, None])[:, :, 0]
        solution = torch.linalg.solve(lhs, rhs + precision * mean)  # kept x (vector - 1)
        row = torch.cat([solution, torch.ones(kept, 1, dtype=torch.float64)], 1).reshape(1, -1)
        return [row.to(self.user_factors.weight)]


class _Sampler:
    """The Gibbs sampler's state: every weight of one sample, the priors, and the random
    generator.

    A user's vectors are [factors, bias, 1] (place k + 1 fixed at 1, 0 in the implicit rows
    y), an item's [factors, 1, bias] (place k fixed alike, 0 in z): each side draws the other
    places, `free`. A sweep draws, in turn, the priors, the users' rows, the items' implicit
    rows y, the items' rows, the noise precision, the users' implicit rows z and the item
    features' rows g (each added, like z, to the vectors of the items that have it, scaled by
    |features of the item|^-1/2)."""

    def __init__(
        self,
        config: BayesConfig,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        offset: float,
        rng: np.random.Generator,
        features: tuple[np.ndarray, np.ndarray, int] | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.config, self.rng, self.offset = config, rng, offset
        n_users, n_items, k = config.n_users, config.n_items, config.n_factors
        width = k + 1
        users, items = np.asarray(users), np.asarray(items)
        self.by_user = _Side.of(users, items, np.asarray(ratings), n_users)
        self.by_item = _Side.of(items, users, np.asarray(ratings), n_items)
        # on a device (a GPU): the own rows' draws there, each side's ratings held on it, by
        # the name of the side's own weights
        self.on_device = None
        if device is not None:
            sides = {"p": self.by_user, "q": self.by_item}
            self.on_device = {name: _DeviceSide.of(side, device) for name, side in sides.items()}
        # the implicit signals: each user's distinct items and each item's distinct raters
        self.user_sets, self.item_sets = self.by_user.distinct(), self.by_item.distinct()
        # per side: the places it draws, its implicit scale, and what its draws leave
        self.users = _Rows.of(n_users, [*range(k), k], self.user_sets.scale)
        self.items = _Rows.of(n_items, [*range(k), k + 1], self.item_sets.scale)
        self.p = np.zeros((n_users, k + 2))
        self.q = np.zeros((n_items, k + 2))
        self.p[:, :k] = rng.normal(0.0, INIT_STD, (n_users, k))
        self.q[:, :k] = rng.normal(0.0, INIT_STD, (n_items, k))
        self.p[:, k + 1] = self.q[:, k] = 1.0
        self.item_implicit = np.zeros((n_items, k + 2))  # y, added to its raters' vectors
        self.user_implicit = np.zeros((n_users, k + 2))  # z, added to the rated items'
        if config.implicit_signals:
            self.item_implicit[:, :k] = rng.normal(0.0, INIT_STD, (n_items, k))
            self.user_implicit[:, :k] = rng.normal(0.0, INIT_STD, (n_users, k))
        # the item features: per item its features (`of_items`), per feature its items
        self.of_items = self.feature_sets = None
        self.features = np.zeros((0, k + 2))  # g, added to its items' vectors
        if features is not None and len(features[1]):
            indptr, columns, n_features = features
            self.of_items = _Side(np.asarray(indptr), np.asarray(columns, np.int32), np.empty(0))
            owners = np.repeat(np.arange(n_items), np.diff(self.of_items.indptr))
            no_values = np.zeros(len(owners))
            self.feature_sets = _Side.of(self.of_items.columns, owners, no_values, n_features)
            self.features = np.zeros((n_features, k + 2))
            self.features[:, :k] = rng.normal(0.0, INIT_STD, (n_features, k))
        self.user_vectors, self.item_vectors = self.p.copy(), self.q.copy()
        self.recompute_vectors()
        self.work = np.empty(len(self.by_user.ratings))  # residuals, a side's rows at a time
        names = ("p", "q", "y", "z") if config.implicit_signals else ("p", "q")
        names += ("g",) if self.of_items is not None else ()
        self.groups = {name: _Group.first(width) for name in names}
        self.alpha = 1.0

    def sweep(self) -> float:
        """One Gibbs sweep over every weight; returns the training RMSE after the items' rows
        are drawn."""
        rng, groups = self.rng, self.groups
        for name, weights, free in (
            ("p", self.p, self.users.free),
            ("q", self.q, self.items.free),
            ("y", self.item_implicit, self.users.free),
            ("z", self.user_implicit, self.items.free),
            ("g", self.features, self.items.free),
        ):
            if name in groups:
                groups[name].resample(weights[:, free], rng)
        self._own(self.by_user, self.p, self.user_vectors, self.item_vectors, self.users, "p")
        if self.config.implicit_signals:
            self._implicit(self.item_sets, self.item_implicit, self.user_vectors, self.users, "y")
        self._own(self.by_item, self.q, self.item_vectors, self.user_vectors, self.items, "q")
        n = len(self.work)
        errors = float(self.items.errors.sum())
        self.alpha = float(rng.gamma(A0 + n / 2, 1.0 / (B0 + errors / 2)))
        if self.config.implicit_signals:
            self._implicit(self.user_sets, self.user_implicit, self.item_vectors, self.items, "z")
        if self.of_items is not None:
            self._implicit(
                self.feature_sets,
                self.features,
                self.item_vectors,
                self.items,
                "g",
                self.of_items.scale,
            )
        return math.sqrt(errors / max(n, 1))

    def recompute_vectors(self) -> None:
        """The effective vectors from the weights: own plus the scaled implicit sums (the
        draws keep them up to date as they go)."""
        if self.config.implicit_signals:
            for sets, scale, implicit, own, out in (
                (self.user_sets, self.users.scale, self.item_implicit, self.p, self.user_vectors),
                (self.item_sets, self.items.scale, self.user_implicit, self.q, self.item_vectors),
            ):
                _implicit_sums(*sets[:2], scale, implicit, own, out)
        else:
            self.user_vectors[:], self.item_vectors[:] = self.p, self.q
        if self.of_items is not None:  # added to the items' vectors as they now are
            items = self.item_vectors
            _implicit_sums(*self.of_items[:2], self.of_items.scale, self.features, items, items)

    def residuals(self) -> np.ndarray:
        """Every training rating less its prediction, in the users' order."""
        indptr, columns, ratings = self.by_user
        rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        vectors = self.user_vectors[rows] * self.item_vectors[columns]
        return ratings - self.offset - vectors.sum(1)

    def _own(self, side: _Side, own, effective, fixed, rows: _Rows, name: str) -> None:
        """Draw one side's own rows; its grams and sums are left for the implicit rows."""
        group = self.groups[name]
        given = (own, effective, fixed, rows.free, group.mean, group.precision, self.alpha)
        draws = self.rng.standard_normal((len(own), len(rows.free)))
        if self.on_device is not None:
            _own_batched(self.on_device[name], self.offset, *given, draws, rows)
            return
        _sample_factors(
            *side, self.offset, *given, draws, rows.grams, rows.sums, self.work, rows.errors
        )

    def _implicit(
        self, sets: _Side, implicit, effective, owners: _Rows, name: str, scale=None
    ) -> None:
        """Draw the implicit rows y (each added to its raters' vectors), z (to the items
        rated) or g (to the items that have the feature, each item's sum scaled by `scale`
        instead of the owners' implicit scale); the owners' vectors follow."""
        group = self.groups[name]
        width = len(owners.free)
        scale = owners.scale if scale is None else scale
        data_precisions = np.empty((len(implicit), width, width))
        _owner_grams(*sets[:2], scale, owners.grams, data_precisions)
        _sample_implicit(
            *sets[:2],
            scale,
            implicit,
            effective,
            owners.free,
            data_precisions,
            owners.grams,
            owners.sums,
            group.mean,
            group.precision,
            self.alpha,
            self.rng.standard_normal((len(implicit), width)),
        )
