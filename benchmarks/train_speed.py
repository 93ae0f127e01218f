"""Training speed and memory of latentrec's dot model on synthetic ratings.

Each run is a fresh child process (`--child`) that trains one epoch on all ratings, so its
peak RSS belongs to that run alone. Batch sizes alternate within each round so load drift
hits all alike.

Run from the repository root:
    .venv/bin/python benchmarks/train_speed.py --ratings 5000000 --users 100000 \
        --items 20000 --batch-size 4096,1024 --factors 50 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import machine, write

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", type=int, default=5_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--batch-size", default="4096,1024", help="comma-separated batch sizes")
    p.add_argument("--factors", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_size.split(",") if b.strip()]
    if not args.batch_sizes or args.repeats < 1:
        p.error("need at least one batch size and --repeats >= 1")
    return args


def vm_rss_bytes() -> int:
    """Current resident set size, from /proc/self/status (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    """Train one epoch in this process and print its figures as one JSON line."""
    import torch

    import latentrec

    baseline_rss = vm_rss_bytes()
    (batch_size,) = args.batch_sizes
    started = time.perf_counter()
    ratings = latentrec.load_ratings(
        f"synthetic:ratings={args.ratings},users={args.users},items={args.items},seed=1"
    )
    load_seconds = time.perf_counter() - started
    net, history = latentrec.fit(
        ratings, "dot", epochs=1, batch_size=batch_size, n_factors=args.factors, progress=False
    )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    # Weights plus AdamW's two moments per weight.
    model_bytes = 3 * sum(p.numel() * p.element_size() for p in net.parameters())
    n = len(ratings)
    result = {
        "n": n,
        "batch_size": batch_size,
        "train_seconds": history.train_seconds,
        "ratings_per_second": history.ratings_per_second,
        "load_seconds": load_seconds,
        "baseline_rss": baseline_rss,
        "peak_rss": peak_rss,
        "model_bytes": model_bytes,
        "bytes_per_rating_beyond_model": (peak_rss - baseline_rss - model_bytes) / n,
        "device": history.device,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "latentrec_version": latentrec.__version__,
    }
    print(json.dumps(result))


def run_child(args: argparse.Namespace, batch_size: int) -> dict:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
    argv += ["--ratings", str(args.ratings), "--users", str(args.users)]
    argv += ["--items", str(args.items), "--factors", str(args.factors)]
    argv += ["--batch-size", str(batch_size)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(
            f"child failed (exit {proc.returncode}): {shlex.join(argv)}\n{proc.stderr}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown(runs: list[dict], batch_sizes: list[int]) -> str:
    mib = 2**20
    lines = [
        "| batch size | runs | train s | ratings/s | load s | baseline RSS MiB | peak RSS MiB "
        "| model+Adam MiB | bytes/rating beyond model |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in batch_sizes:
        mine = [r for r in runs if r["batch_size"] == size]

        def med(key: str, mine: list[dict] = mine) -> float:
            return statistics.median(r[key] for r in mine)

        lines.append(
            f"| {size} | {len(mine)} | {med('train_seconds'):.2f} "
            f"| {med('ratings_per_second'):,.0f} | {med('load_seconds'):.2f} "
            f"| {med('baseline_rss') / mib:.0f} | {med('peak_rss') / mib:.0f} "
            f"| {med('model_bytes') / mib:.1f} | {med('bytes_per_rating_beyond_model'):.1f} |"
        )
    lines += ["", "Medians over runs; one epoch of the dot model on all ratings, no test set."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return

    runs = []
    for round_no in range(1, args.repeats + 1):
        for size in args.batch_sizes:
            run = run_child(args, size) | {"round": round_no}
            runs.append(run)
            print(
                f"[{round_no}/{args.repeats}] batch {size}: {run['train_seconds']:.2f} s, "
                f"{run['ratings_per_second']:,.0f} ratings/s, "
                f"peak RSS {run['peak_rss'] / 2**20:.0f} MiB",
                file=sys.stderr,
            )

    table = markdown(runs, args.batch_sizes)
    print(table)
    data = f"synthetic:ratings={args.ratings},users={args.users},items={args.items},seed=1"
    report = machine() | {"data": data, "factors": args.factors}
    report["context"] = (
        f"{data}, {args.factors} factors, cpu_count {report['cpu_count']}, "
        f"Python {report['python']}"
    )
    report |= {"table": table, "runs": runs}
    write(args.out, "train_speed", report, "latentrec training speed", table)


if __name__ == "__main__":
    main()
