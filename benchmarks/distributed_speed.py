"""One epoch of the dot model in 1 process and under torchrun with N processes, side by side.

Every configuration takes the same optimiser steps (steps of `--step` ratings: N processes run
`--batch-size step / N` each), so the test RMSE should agree and the times show the cost of
distribution. Configurations alternate within each round; medians over rounds.

Run from the repository root:
    .venv/bin/python benchmarks/distributed_speed.py --ratings 5000000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _report import machine, train_runs, write

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", type=int, default=5_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--step", type=int, default=4096, help="ratings per optimiser step")
    p.add_argument("--processes", default="2", help="comma-separated process counts (> 1)")
    p.add_argument("--factors", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def configurations(args: argparse.Namespace) -> dict[str, list[str]]:
    data = f"synthetic:ratings={args.ratings},users={args.users},items={args.items},seed=1"
    train = ["train", "--data", data, "--epochs", "1", "--factors", str(args.factors), "--json"]
    latentrec = [sys.executable, "-m", "latentrec"]
    runs = {
        "1 process, fused engine": [*latentrec, *train, "--batch-size", str(args.step)],
        "1 process, autograd engine": [
            *latentrec,
            *train,
            "--batch-size",
            str(args.step),
            "--engine",
            "autograd",
        ],
    }
    for n in (int(p) for p in args.processes.split(",") if p.strip()):
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        runs[f"{n} processes (torchrun, gloo)"] = [
            *torchrun,
            "--nproc-per-node",
            str(n),
            "-m",
            "latentrec",
            *train,
            "--batch-size",
            str(args.step // n),
        ]
    return runs


def main() -> None:
    args = parse_args()
    results = train_runs(configurations(args), args.repeats)
    rows = ["| configuration | engine | test RMSE | train s | ratings/s | whole command s |"]
    rows.append("|---|---|---:|---:|---:|---:|")
    summary = {}
    for name, runs_of in results.items():
        median = {
            key: statistics.median(r[key] for r in runs_of)
            for key in ("rmse", "train_seconds", "ratings_per_second", "wall_seconds")
        }
        summary[name] = {"median": median, "runs": runs_of}
        rows.append(
            f"| {name} | {runs_of[0]['engine']} | {median['rmse']:.4f} | "
            f"{median['train_seconds']:.2f} | {median['ratings_per_second']:,.0f} | "
            f"{median['wall_seconds']:.2f} |"
        )
    report = {
        **machine(),
        "ratings": args.ratings,
        "step": args.step,
        "factors": args.factors,
        "results": summary,
        "context": f"One epoch, {args.ratings:,} synthetic ratings (90% train), steps of "
        f"{args.step} ratings, {args.factors} factors; medians of {args.repeats}.",
    }
    write(args.out, "distributed_speed", report, "1 process vs torchrun", "\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
