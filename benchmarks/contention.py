"""The fused engine beside a busy process: one epoch on 1 and 2 threads, quiet and busy.

A training job usually shares its machine (a running service, a second job). Each run is a
fresh `latentrec train` (one epoch of the dot model at 5M synthetic ratings, 100 factors,
batch 4096, 90% train) with OMP_NUM_THREADS set to 1 or 2; "busy" runs start one
`python -c "while True: pass"` beside it and stop it afterwards. The four configurations
alternate within each round, so load drift from elsewhere hits all alike; the report gives the
median and the fastest epoch of each, and busy 2 threads over busy 1 thread (above 1: the
second thread costs time).

`--baseline SRC` runs every configuration a second time with PYTHONPATH=SRC (another
checkout's src/, for example `git worktree add /tmp/base HEAD~1`), alternating with this tree,
to show a change before and after.

Run from the repository root, on an otherwise quiet machine:
    .venv/bin/python benchmarks/contention.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _report import machine, run_json, write
from compare import DATA, ONE_EPOCH_DOT

REPO = Path(__file__).resolve().parent.parent
THREADS = (1, 2)
LOADS = ("quiet", "busy")
BUSY = "while True: pass"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--case", choices=sorted(DATA), default="scale-5m")
    p.add_argument("--baseline", type=Path, help="another src/ to run alongside, as 'baseline'")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.baseline is not None and not (args.baseline / "latentrec").is_dir():
        p.error(f"--baseline {args.baseline} holds no latentrec package")
    return args


def epoch_seconds(code: Path, threads: int, load: str, data: str) -> float:
    """One `latentrec train` from the package in `code` on `threads` threads, beside a busy
    process when `load` is "busy"; its training seconds."""
    command = [sys.executable, "-m", "latentrec", "train", "--data", data, "--json"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(code))
    busy = None
    if load == "busy":
        busy = subprocess.Popen([sys.executable, "-c", BUSY])
        time.sleep(0.5)  # running before the job starts
    try:
        summary, _ = run_json([*command, *ONE_EPOCH_DOT], env)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return summary["train_seconds"]


def main() -> None:
    args = parse_args()
    n, users, items, distinct = DATA[args.case]
    data = f"synthetic:ratings={n},users={users},items={items},seed=1,distinct={distinct}"
    codes = {"this tree": REPO / "src"}
    if args.baseline is not None:
        codes["baseline"] = args.baseline.resolve()
    configs = [(code, load, t) for load in LOADS for t in THREADS for code in codes]
    seconds: dict[tuple[str, str, int], list[float]] = {config: [] for config in configs}
    load_averages = []
    for round_ in range(args.repeats):
        load_averages.append(os.getloadavg()[0])
        for code, load, threads in configs:
            took = epoch_seconds(codes[code], threads, load, data)
            seconds[code, load, threads].append(took)
            print(
                f"[{round_ + 1}/{args.repeats}] {code}, {load}, {threads} thread(s): {took:.3f} s",
                file=sys.stderr,
                flush=True,
            )
    rows = [
        "| code | threads | quiet median s | quiet fastest s | busy median s | busy fastest s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    results: dict[str, dict] = {}
    for code in codes:
        results[code] = {"source": str(codes[code])}
        for threads in THREADS:
            quiet, busy = (seconds[code, load, threads] for load in LOADS)
            results[code][f"{threads} threads"] = {"quiet": quiet, "busy": busy}
            rows.append(
                f"| {code} | {threads} | {statistics.median(quiet):.3f} | {min(quiet):.3f} | "
                f"{statistics.median(busy):.3f} | {min(busy):.3f} |"
            )
        one, two = (statistics.median(seconds[code, "busy", t]) for t in THREADS)
        quiet_one, quiet_two = (statistics.median(seconds[code, "quiet", t]) for t in THREADS)
        results[code]["busy_two_over_one"] = two / one
        results[code]["quiet_two_over_one"] = quiet_two / quiet_one
    summary = [
        f"{code}: busy, 2 threads take {results[code]['busy_two_over_one']:.2f}x the time of 1 "
        f"(quiet: {results[code]['quiet_two_over_one']:.2f}x)"
        for code in codes
    ]
    table = "\n".join(rows) + "\n\n" + "\n".join(f"- {line}" for line in summary)
    report = {
        **machine(),
        "results": results,
        "load_average_1min_before_each_round": load_averages,
        "context": f"One epoch of the dot model on {args.case} (fused engine, 100 factors, "
        f'batch 4096), OMP_NUM_THREADS 1 or 2, quiet or beside one `python -c "{BUSY}"`; '
        f"{args.repeats} rounds, configurations alternating. 1-minute load average before "
        f"each round: {', '.join(f'{x:.2f}' for x in load_averages)}.",
    }
    write(args.out, "contention", report, "The fused engine beside a busy process", table)
    print(table)


if __name__ == "__main__":
    main()
