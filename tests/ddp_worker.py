"""Run by torchrun in test_distributed.py: fit the shared cases, rank 0 saves the weights.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
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


def main(out: Path) -> None:
    data = ratings()
    for name, (model, options) in CASES.items():
        net, history = fit(data, model, engine="autograd", **options, **EXACT)
        if distributed.from_environment().is_main:
            weights = {k: v.contiguous() for k, v in net.state_dict().items()}
            save_file(weights, str(out / f"{name}.safetensors"))
            (out / f"{name}.world").write_text(str(history.world_size))
    distributed.shutdown()
    # skip the interpreter's teardown, where DDP's leftover gloo threads can abort the process
    # (see distributed.joined)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
