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

from latentrec import distributed, fit
from latentrec.data import IdMap, Ratings

# name -> (model, options); the per-rank batch is half the single process's
CASES = {
    "dot": ("dot", {"n_factors": 6, "batch_size": 64}),
    "dot-accumulate": ("dot", {"n_factors": 6, "batch_size": 16, "accumulate": 4}),
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
    steps whose gradients differ in size by rank and step (the last one empty), in two dtypes
    and with one and two sparse dimensions."""
    rank, world = dist.get_rank(), dist.get_world_size()
    state = distributed._SparseExchange()
    worst = 0.0
    for step, n in enumerate([5, 40, 3, 0]):
        generator = torch.Generator().manual_seed(10 * step + rank)
        nnz = n * (rank + 1)
        rows = torch.randint(0, 30, (1, nnz), generator=generator)
        cells = torch.stack(
            [torch.randint(0, 7, (nnz,), generator=generator), torch.randint(0, 9, (nnz,))]
        )
        tensors = [
            torch.sparse_coo_tensor(
                rows, torch.randn(nnz, 4, dtype=torch.float64, generator=generator), (30, 4)
            ),
            torch.sparse_coo_tensor(cells, torch.randn(nnz, generator=generator), (7, 9)),
        ]
        means = distributed._gather_sparse(state, tensors, world)
        for tensor, mean in zip(tensors, means, strict=True):
            dense = tensor.to_dense()
            dist.all_reduce(dense)
            worst = max(worst, (mean.to_dense() - dense / world).abs().max().item())
    return worst


def main(out: Path) -> None:
    data = ratings()
    for name, (model, options) in CASES.items():
        net, history = fit(data, model, engine="autograd", **options, **EXACT)
        if distributed.from_environment().is_main:
            weights = {k: v.contiguous() for k, v in net.state_dict().items()}
            save_file(weights, str(out / f"{name}.safetensors"))
            (out / f"{name}.world").write_text(str(history.world_size))
    report = {
        "exchange_error": exchange_error(),
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
