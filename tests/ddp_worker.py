"""Run by torchrun in test_distributed.py: fit the shared cases, rank 0 saves the weights.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from numba.np.ufunc import parallel
from safetensors.torch import save_file
from torch import nn

from latentrec import DataError, distributed, fit
from latentrec.data import IdMap, Ratings

# name -> (model, options); the per-rank batch is half the single process's
CASES = {
    "dot": ("dot", {"n_factors": 6, "batch_size": 64}),
    "dot-accumulate": ("dot", {"n_factors": 6, "batch_size": 16, "accumulate": 4}),
    # regression (review): every rank drew the same negatives for its own share
    "dot-negatives": ("dot", {"n_factors": 6, "batch_size": 16, "accumulate": 4, "negatives": 2}),
    "nn-accumulate": (
        "nn",
        {"layers": (16, 8), "emb_dropout": 0.0, "batch_size": 16, "accumulate": 4},
    ),
}
EXACT = {"dtype": "float64", "progress": False, "evaluate_every_epoch": False, "epochs": 2}


def ratings(n: int = 250, n_users: int = 40, n_items: int = 30) -> Ratings:
    """250 ratings: with 128 a step, each epoch ends on a short step of 122."""
    rng = np.random.default_rng(0)
    return Ratings(
        rng.integers(0, n_users, n),
        rng.integers(0, n_items, n),
        rng.uniform(0.5, 5.0, n).astype(np.float32),
        IdMap(np.arange(n_users)),
        IdMap(np.arange(n_items)),
    )


def exchange_error() -> float:
    """The largest difference between the gloo hook's sparse mean and a dense all-reduce's, over
    steps whose gradients differ in size by rank and step (the last one empty), in three dtypes
    and with one and two sparse dimensions."""
    rank, world = dist.get_rank(), dist.get_world_size()
    state = distributed._SparseExchange(expected=3)
    worst = 0.0
    for step, n in enumerate([5, 40, 3, 0]):
        generator = torch.Generator().manual_seed(10 * step + rank)
        nnz = n * (rank + 1)
        rows = torch.randint(0, 30, (1, nnz), generator=generator)
        cells = torch.stack(
            [
                torch.randint(0, 7, (nnz,), generator=generator),
                torch.randint(0, 9, (nnz,), generator=generator),
            ]
        )
        tensors = [
            torch.sparse_coo_tensor(
                rows, torch.randn(nnz, 4, dtype=torch.float64, generator=generator), (30, 4)
            ),
            torch.sparse_coo_tensor(cells, torch.randn(nnz, generator=generator), (7, 9)),
            torch.sparse_coo_tensor(  # 16-byte elements
                rows,
                torch.randn(nnz, 2, dtype=torch.complex128, generator=generator),
                (30, 2),
            ),
        ]
        means = distributed._gather_sparse(state, tensors, world)
        for tensor, mean in zip(tensors, means, strict=True):
            dense = tensor.to_dense()
            dist.all_reduce(dense)
            worst = max(worst, (mean.to_dense() - dense / world).abs().max().item())
    return worst


class _Pair(nn.Module):
    """Two tables with sparse gradients."""

    def __init__(self) -> None:
        super().__init__()
        self.users = nn.Embedding(20, 3, sparse=True)
        self.items = nn.Embedding(10, 3, sparse=True)

    def forward(self, users, items):
        return (self.users(users) * self.items(items)).sum()


def static_graph_error() -> float:
    """The largest difference, over three steps, between the gloo hook's averaged gradients
    under DDP's static_graph (whose first step numbers every bucket 0) and a dense all-reduce
    of each rank's own gradients. A hook that waited for the last bucket would hang here."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    pair = _Pair().double()
    model = nn.parallel.DistributedDataParallel(pair, static_graph=True)
    state = distributed._SparseExchange(distributed._sparse_parameters(pair))
    model.register_comm_hook(state, distributed._exchange_gradients)
    worst = 0.0
    for step in range(3):
        generator = torch.Generator().manual_seed(10 * step + rank)
        users = torch.randint(0, 20, (8,), generator=generator)
        items = torch.randint(0, 10, (8,), generator=generator)
        model(users, items).backward()
        alone = _Pair().double()
        alone.load_state_dict(pair.state_dict())
        alone(users, items).backward()
        for shared, own in zip(pair.parameters(), alone.parameters(), strict=True):
            dense = own.grad.to_dense()
            dist.all_reduce(dense)
            worst = max(worst, (shared.grad.to_dense() - dense / world).abs().max().item())
        pair.zero_grad(set_to_none=True)
    return worst


def main(out: Path) -> None:
    data = ratings()
    for name, (model, options) in CASES.items():
        net, history = fit(data, model, engine="autograd", **options, **EXACT)
        if distributed.from_environment().is_main:
            weights = {k: v.contiguous() for k, v in net.state_dict().items()}
            save_file(weights, str(out / f"{name}.safetensors"))
            (out / f"{name}.world").write_text(str(history.world_size))
    # regression (review): ranks that read different rows (a source changing while they read
    # it) trained on, each its own data, or crashed in a collective with a traceback
    other = ratings(251 if dist.get_rank() == 1 else 250)
    try:
        fit(other, "dot", engine="autograd", **EXACT)
        refused = None
    except DataError as err:
        refused = str(err)
    report = {
        "different_data": refused,
        "exchange_error": exchange_error(),
        "static_graph_error": static_graph_error(),
        "torch_threads": torch.get_num_threads(),
        "numba_pool_started": bool(parallel._is_initialized),
    }
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(report))
    distributed.shutdown()
    # skip the interpreter's teardown, where DDP's leftover gloo threads can abort the process
    # (see distributed.joined)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
