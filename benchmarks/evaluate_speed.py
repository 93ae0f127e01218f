"""Ranking evaluation at scale, this checkout against an earlier commit, side by side.

What `train` prints after fitting a ranking model, and what `evaluate` and `tune` compute:
NDCG@10 and the other list metrics over every test user. One `als` model is fitted once (64
factors, one iteration: the lists' quality does not change the work) on synthetic interactions
(default: the 25M synthetic source, repeated pairs summed into counts as `--implicit` does,
a random 10% held out, seed 42) and saved; each run is then a fresh process, with this
checkout's `src/` or the `--base` commit's first on the import path, that loads the model,
builds its `Recommender` and calls `evaluate_ranking(rec, test, 10)`. Runs alternate, the order
swapped every round; medians over rounds, peak RSS (VmHWM) the most of any round. The metrics
of both must agree (printed).

    .venv/bin/python benchmarks/evaluate_speed.py --base HEAD~1 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from _report import machine, write
from als_scale import run
from side_by_side import worktree

import latentrec

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time
import numpy as np
import latentrec
from latentrec.data import Ratings
from latentrec.recommend import Recommender, evaluate_ranking
saved = latentrec.load(sys.argv[1])
users, items = np.load(sys.argv[2]), np.load(sys.argv[3])
test = Ratings(users, items, np.ones(len(users), dtype=np.float32), saved.ratings.users,
               saved.ratings.items, implicit=True)
started = time.perf_counter()
rec = Recommender(saved.model, saved.ratings, also_rated=saved.also_rated)
built = time.perf_counter()
metrics = evaluate_ranking(rec, test, 10)
done = time.perf_counter()
print(json.dumps({"recommender_seconds": built - started, "evaluate_seconds": done - built,
                  "metrics": metrics}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the git commit to compare against")
    p.add_argument("--ratings", type=int, default=25_000_000)
    p.add_argument("--users", type=int, default=160_000)
    p.add_argument("--items", type=int, default=60_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source = f"synthetic:ratings={args.ratings},users={args.users},items={args.items},seed=1"
    ratings = latentrec.load_ratings(source, implicit=True)
    train, test = ratings.split(0.1, seed=42)
    del ratings
    model, _ = latentrec.fit(train, "als", n_factors=64, iterations=1, progress=False)
    runs = []
    with tempfile.TemporaryDirectory() as folder, worktree(args.base) as base:
        model_dir = latentrec.save(model, Path(folder) / "model", train)
        known = (test.user_index >= 0) & (test.item_index >= 0)
        users, items = Path(folder) / "users.npy", Path(folder) / "items.npy"
        np.save(users, test.user_index[known])
        np.save(items, test.item_index[known])
        del model, train, test
        trees = {"head": REPO / "src", "base": base / "src"}
        for round_no in range(1, args.repeats + 1):
            order = list(trees) if round_no % 2 else list(reversed(trees))
            for name in order:
                result = run(
                    [sys.executable, "-c", CHILD, str(model_dir), str(users), str(items)],
                    os.environ | {"PYTHONPATH": str(trees[name])},
                )
                runs.append({"code": name, **result})
                print(
                    f"[{round_no}] {name}: recommender {result['recommender_seconds']:.2f} s, "
                    f"evaluate {result['evaluate_seconds']:.2f} s, peak "
                    f"{result['peak_rss_bytes'] / 2**20:,.0f} MiB, "
                    f"ndcg@10 {result['metrics']['ndcg@10']:.6f}",
                    file=sys.stderr,
                )
    lines = [
        "| code | Recommender s (median) | evaluate_ranking s (median) | peak RSS MiB (max) "
        "| NDCG@10 | P@10 | users scored |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("head", "base"):
        mine = [r for r in runs if r["code"] == name]
        metrics = mine[0]["metrics"]
        lines.append(
            f"| {name} | {statistics.median(r['recommender_seconds'] for r in mine):.2f} "
            f"| {statistics.median(r['evaluate_seconds'] for r in mine):.2f} "
            f"| {max(r['peak_rss_bytes'] for r in mine) / 2**20:,.0f} "
            f"| {metrics['ndcg@10']:.6f} | {metrics['precision@10']:.6f} | {metrics['users']:,} |"
        )
    table = "\n".join(lines)
    print(table)
    report = machine() | {"data": source, "base": args.base, "runs": runs, "table": table}
    report["context"] = f"{source}, als 64 factors, 10% held out (seed 42), {args.repeats} rounds"
    write(args.out, "evaluate_speed", report, "ranking evaluation, side by side", table)


if __name__ == "__main__":
    main()
