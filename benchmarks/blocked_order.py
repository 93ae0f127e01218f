"""An experiment, not a feature: the dot model's epoch in a blocked order against the shuffled one.

The fused kernel spends an epoch reading each rating's user and item rows from memory, in a
uniformly shuffled order. A blocked order (LIBMF's idea) cuts the users into blocks of
`--block-users` and the items into blocks of `--block-items`, visits the (user block, item
block) cells in a random order and each cell's ratings shuffled: the rows a stretch of steps
reads then stay in cache. This script swaps the order in (`fused.permutation`, computed before
the fit by an argsort, so the epoch's time holds the steps alone) and times fresh processes,
shuffled and blocked alternating, on one thread, optionally beside a process copying a 1 GiB
array in a loop (`--busy-copy`); it prints each epoch's test RMSE (a random 10% held out, seed
42). Medians of the rounds.

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
import numpy as np
import latentrec
from latentrec import fused, training
order, source, epochs, block_users, block_items = sys.argv[1:6]
ratings = latentrec.load_ratings(source)
train, test = ratings.split(0.1, seed=42)
del ratings
shuffled = fused.permutation
if order == "blocked":
    users, items = train.user_index.astype(np.int64), train.item_index.astype(np.int64)
    per_row = -(-train.n_items // int(block_items))
    cell = (users // int(block_users)) * per_row + items // int(block_items)
    n_cells = int(cell.max()) + 1
    orders = {}
    for epoch in range(int(epochs)):  # made before the fit: its epochs time the steps alone
        rng = np.random.default_rng(epoch)
        key = rng.permutation(n_cells)[cell].astype(np.float64) + rng.random(len(cell))
        orders[epoch] = np.argsort(key).astype(np.int64)
    calls = iter(range(int(epochs)))
    training.fused.permutation = (
        lambda n, seed, parallel=True: orders[next(calls)] if n == len(cell)
        else shuffled(n, seed, parallel)
    )
net, history = latentrec.fit((train, test), "dot", epochs=int(epochs), progress=False)
print(json.dumps({"seconds": [e.seconds for e in history.epochs],
                  "rmse": [e.test_rmse for e in history.epochs]}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="synthetic:ratings=25000000,users=160000,items=60000,seed=1")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--block-users", type=int, default=8192)
    p.add_argument("--block-items", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy-copy", action="store_true", help="a 1 GiB copy loop beside each run")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = os.environ | {"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    runs = []
    for round_no in range(1, args.repeats + 1):
        orders = ["shuffled", "blocked"] if round_no % 2 else ["blocked", "shuffled"]
        for order in orders:
            argv_child = [
                sys.executable, "-c", CHILD, order, args.data, str(args.epochs),
                str(args.block_users), str(args.block_items),
            ]  # fmt: skip
            with busy_copy(1 if args.busy_copy else 0):
                result = run(argv_child, env)
            runs.append({"order": order, **result})
            print(
                f"[{round_no}] {order}: epochs {', '.join(f'{s:.2f}' for s in result['seconds'])}"
                f" s, RMSE {', '.join(f'{r:.4f}' for r in result['rmse'])}",
                file=sys.stderr,
            )
    lines = [
        "| order | epoch s (median of each round's total / epochs) | test RMSE after each epoch |",
        "|---|---:|---|",
    ]
    for order in ("shuffled", "blocked"):
        mine = [r for r in runs if r["order"] == order]
        seconds = statistics.median(sum(r["seconds"]) / len(r["seconds"]) for r in mine)
        rmse = ", ".join(f"{v:.4f}" for v in mine[0]["rmse"])
        lines.append(f"| {order} | {seconds:.2f} | {rmse} |")
    table = "\n".join(lines)
    print(table)
    report = machine() | {"args": vars(args) | {"out": str(args.out)}, "runs": runs}
    report["table"] = table
    report["context"] = (
        f"{args.data}, dot defaults, {args.epochs} epoch(s), one thread, blocks of "
        f"{args.block_users} users x {args.block_items} items"
        + (", beside a 1 GiB copy loop" if args.busy_copy else "")
    )
    write(args.out, "blocked_order", report, "a blocked epoch order, an experiment", table)


if __name__ == "__main__":
    main()
