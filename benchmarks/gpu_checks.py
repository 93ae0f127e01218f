"""The GPU checks in one short run: one epoch at 25M ratings on CUDA, and torchrun with NCCL.

1. One epoch of the dot model (100 factors) on 25M synthetic ratings (160,000 users, 60,000
   items), with ratings, indexes and the epoch's order resident on the GPU, at two batch sizes.
   Beside each: the bytes the step must move at the least (each rating reads its two rows;
   each distinct row of a step is read and written with Adam's two moments), that figure over
   the GPU's device-to-device copy bandwidth as measured here, and the share of that bound the
   run reached.
2. One epoch on 5M synthetic ratings (50 factors, steps of 4096) in one process and under
   `torchrun --nproc-per-node 1` (NCCL, dense table gradients): ratings/s and test RMSE.
3. The solved ranking models on CUDA: `als` (64 factors, 15 iterations, every row of a half
   at once in tensor operations) on the 25M interactions, and `ease` (a Cholesky solve on
   the GPU) on the 5M catalogue of 20,000 items; fit seconds.
4. `bayes` on CUDA (the own rows drawn in tensor operations, the implicit rows on the CPU),
   100 samples of rank 10, on the bundled sample: test RMSE and training seconds.

Each training run is a fresh `python -m latentrec train` child; medians of `--repeats`.

Run from the repository root on a machine with a CUDA GPU, with `src` on the path when the
package is not installed:
    PYTHONPATH=src python3 benchmarks/gpu_checks.py --out "$OUT"
A dry run of the script itself on the CPU, at 1/100 of the sizes (gloo instead of NCCL):
    .venv/bin/python benchmarks/gpu_checks.py --device cpu --shrink 100 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from _report import machine, train_runs, write

REPO = Path(__file__).resolve().parent.parent
SCALE = (25_000_000, 160_000, 60_000, 100)  # ratings, users, items, factors
DISTRIBUTED = (5_000_000, 100_000, 20_000, 50)
FLOAT_BYTES = 4  # the tables, moments and gradients are float32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run")
    p.add_argument("--batch-size", default="4096,65536", help="batch sizes of the 25M case")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shrink", type=int, default=1, help="divide every size by this")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_size.split(",") if b.strip()]
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available here; --device cpu runs the script as a dry run")
    return args


def source(sizes: tuple[int, int, int, int], shrink: int) -> tuple[str, int, int, int, int]:
    ratings, users, items, factors = sizes
    ratings, users, items = ratings // shrink, users // shrink, items // shrink
    return (
        f"synthetic:ratings={ratings},users={users},items={items},seed=1",
        ratings,
        users,
        items,
        factors,
    )


def copy_bandwidth(device: str) -> float:
    """Bytes read plus written per second by a 1 GiB device-to-device copy (median of 10)."""
    x = torch.empty(2**28, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    times = []
    for _ in range(13):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        y.copy_(x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return 2 * x.numel() * FLOAT_BYTES / statistics.median(times[3:])


def least_bytes(data: str, batch_size: int, factors: int, device: str) -> dict[str, float]:
    """The bytes one epoch must move at the least, for a random order of the training set.

    Per rating the forward pass reads a user and an item row (factors and bias); per distinct
    row of a step, lazy Adam reads and writes the row and its two moments (6 row transfers).
    Gradients are left out, as a fused step keeps them on chip."""
    import latentrec  # the package under test, from src/ or installed

    train = latentrec.load_ratings(data).split(test_fraction=0.1, seed=42).train
    users = torch.as_tensor(train.user_index, dtype=torch.int64, device=device)
    items = torch.as_tensor(train.item_index, dtype=torch.int64, device=device)
    n = len(users)
    order = torch.randperm(n, device=device)
    step = torch.arange(n, device=device) // batch_size
    distinct = 0
    for index, rows in ((users[order], int(users.max()) + 1), (items[order], int(items.max()) + 1)):
        distinct += torch.unique(step * rows + index).numel()
    row = (factors + 1) * FLOAT_BYTES
    total = n * 2 * row + distinct * 6 * row
    return {"ratings": n, "distinct_rows": distinct, "bytes": total, "bytes_per_rating": total / n}


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def train_command(data: str, factors: int, batch_size: int, device: str) -> list[str]:
    return [
        *("train", "--data", data, "--epochs", "1", "--factors", str(factors)),
        *("--batch-size", str(batch_size), "--device", device, "--json"),
    ]


def main() -> None:
    args = parse_args()
    latentrec = [sys.executable, "-m", "latentrec"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    scale, n_scale, *_, scale_factors = source(SCALE, args.shrink)
    spread, n_spread, *_, spread_factors = source(DISTRIBUTED, args.shrink)
    runs = {}
    for b in args.batch_sizes:
        runs[f"25M, batch {b}"] = [*latentrec, *train_command(scale, scale_factors, b, args.device)]
    spread_train = train_command(spread, spread_factors, 4096, args.device)
    runs["5M, 1 process"] = [*latentrec, *spread_train]
    runs["5M, torchrun 1 process"] = [*torchrun, "--nproc-per-node", "1", "-m", "latentrec"]
    runs["5M, torchrun 1 process"] += spread_train
    solved = ("--implicit", "--device", args.device, "--json")
    runs["25M, als 64 factors"] = [*latentrec, "train", "--data", scale, "--model", "als"]
    runs["25M, als 64 factors"] += ["--factors", "64", *solved]
    runs["5M, ease"] = [*latentrec, "train", "--data", spread, "--model", "ease", *solved]
    runs["bundled, bayes"] = [*latentrec, "train", "--model", "bayes", "--device", args.device]
    runs["bundled, bayes"] += ["--json"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    results = train_runs(runs, args.repeats, env)
    bandwidth = copy_bandwidth(args.device)
    bounds = {b: least_bytes(scale, b, scale_factors, args.device) for b in args.batch_sizes}
    rows = [
        "| run | device | test RMSE | train s | ratings/s | least bytes/rating "
        "| bound ratings/s | share of bound |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = {}
    for name, runs_of in results.items():
        median = {
            key: statistics.median(r[key] for r in runs_of) if runs_of[0][key] is not None else None
            for key in ("rmse", "train_seconds", "ratings_per_second", "wall_seconds")
        }
        summary[name] = {"median": median, "runs": runs_of}
        bound = ""
        if name.startswith("25M, batch"):
            least = bounds[int(name.rsplit(" ", 1)[1])]
            best = bandwidth / least["bytes_per_rating"]
            summary[name]["least_bytes"] = least
            summary[name]["bound_ratings_per_second"] = best
            share = median["ratings_per_second"] / best
            bound = f"{least['bytes_per_rating']:,.0f} | {best:,.0f} | {share:.1%}"
        else:
            bound = " | | "
        rows.append(
            f"| {name} | {runs_of[0]['device']} | {_metric(median['rmse'])} | "
            f"{median['train_seconds']:.2f} | {median['ratings_per_second']:,.0f} | {bound} |"
        )
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    report = {
        **machine(),
        "device": device_name,
        "torch": torch.__version__,
        "copy_bandwidth_bytes_per_second": bandwidth,
        "results": summary,
        "context": f"{device_name}, torch {torch.__version__}; device-to-device copy "
        f"{bandwidth / 1e9:,.0f} GB/s (read + written). One epoch each; 25M case: "
        f"{n_scale:,} ratings, {scale_factors} factors; 5M case: {n_spread:,} ratings, "
        f"{spread_factors} factors, batch 4096; medians of {args.repeats}.",
    }
    write(args.out, "gpu_checks", report, "GPU checks", "\n".join(rows))
    print(report["context"])
    print("\n".join(rows))


if __name__ == "__main__":
    main()
