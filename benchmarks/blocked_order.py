"""The dot model's epoch in a blocked order (`--order blocked`) against the shuffled one, by
cell shape.

The fused kernel spends an epoch reading each rating's user and item rows from memory. The
blocked order (`TrainConfig.order`) groups the ratings by cell, a block of users by a block of
items, and visits the cells in a random order, each cell's ratings shuffled: a stretch of steps
then reads rows that stay in cache. This script times fresh processes, shuffled and each cell
shape of `--cells` (users x items; `fused.BLOCK_USERS` and `fused.BLOCK_ITEMS` set for the
run) in turn, on one thread (the thread count latentrec takes beside a busy process),
optionally beside a process copying a 1 GiB array in a loop (`--busy-copy`); it prints each
epoch's test RMSE (a random 10% held out, seed 42). Medians of the rounds.

Before commit a3a7ce2 (the option built) this script swapped an argsort order into the
shuffled run instead (the prototype; blocked_order-20261202-161204, -161528).

    .venv/bin/python benchmarks/blocked_order.py --repeats 3 [--busy-copy] [--epochs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from _report import machine, write
from als_scale import run
from compare import busy_copy

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
import latentrec
from latentrec import fused
cells, source, epochs = sys.argv[1:4]
if cells != "shuffled":
    fused.BLOCK_USERS, fused.BLOCK_ITEMS = (int(v) for v in cells.split("x"))
ratings = latentrec.load_ratings(source)
train, test = ratings.split(0.1, seed=42)
del ratings
order = "shuffled" if cells == "shuffled" else "blocked"
net, history = latentrec.fit(
    (train, test), "dot", epochs=int(epochs), order=order, progress=False
)
print(json.dumps({"seconds": [e.seconds for e in history.epochs],
                  "rmse": [e.test_rmse for e in history.epochs]}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic:ratings=25000000,users=160000,items=60000,seed=1")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument(
        "--cells",
        default="8192x8192,8192x4096,4096x4096",
        help="comma-separated cell shapes, users x items",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy-copy", action="store_true", help="a 1 GiB copy loop beside each run")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = os.environ | {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    variants = ["shuffled", *args.cells.split(",")]
    runs = []
    for round_no in range(1, args.repeats + 1):
        for cells in variants if round_no % 2 else list(reversed(variants)):
            argv_child = [sys.executable, "-c", CHILD, cells, args.data, str(args.epochs)]
            with busy_copy(1 if args.busy_copy else 0):
                result = run(argv_child, env)
            runs.append({"cells": cells, **result})
            print(
                f"[{round_no}] {cells}: epochs {', '.join(f'{s:.2f}' for s in result['seconds'])}"
                f" s, RMSE {', '.join(f'{r:.4f}' for r in result['rmse'])}",
                file=sys.stderr,
            )
    lines = [
        "| order (cells, users x items) | epoch s (median of each round's total / epochs) "
        "| test RMSE after each epoch |",
        "|---|---:|---|",
    ]
    for cells in variants:
        mine = [r for r in runs if r["cells"] == cells]
        seconds = statistics.median(sum(r["seconds"]) / len(r["seconds"]) for r in mine)
        rmse = ", ".join(f"{v:.4f}" for v in mine[0]["rmse"])
        name = "shuffled" if cells == "shuffled" else f"blocked {cells}"
        lines.append(f"| {name} | {seconds:.2f} | {rmse} |")
    table = "\n".join(lines)
    print(table)
    report = machine() | {"args": vars(args) | {"out": str(args.out)}, "runs": runs}
    report["table"] = table
    report["context"] = f"{args.data}, dot defaults, {args.epochs} epoch(s), one thread" + (
        ", beside a 1 GiB copy loop" if args.busy_copy else ""
    )
    write(args.out, "blocked_order", report, "the blocked epoch order by cell shape", table)


if __name__ == "__main__":
    main()
