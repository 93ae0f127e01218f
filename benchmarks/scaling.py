"""How an epoch's time grows with the data: the dot model at 1M, 5M and 25M synthetic ratings.

Two series. "growing": compare.py's scale cases, whose users and items grow with the ratings
(20,000 x 5,000 at 1M, 160,000 x 60,000 at 25M). "fixed": 1M and 5M ratings over the 25M case's
160,000 users and 60,000 items, so only the number of ratings changes. Each run is a fresh
`latentrec train` process (one epoch, 100 factors, batch 4096, 90% train); the cases alternate
within each round, and the report gives the median and the fastest run of each, the time per
rating, how far each case is from linear growth (time per rating over its series' smallest
case's), and the distinct users and items in a step of 4096 ratings (the rows the optimiser
updates: its work per step grows with them, not with the ratings).

Run from the repository root:
    .venv/bin/python benchmarks/scaling.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from _report import machine, train_runs, write
from compare import DATA, ONE_EPOCH_DOT

REPO = Path(__file__).resolve().parent.parent
STEP = 4096
# case -> (ratings, users, items)
CASES = {
    "1M": DATA["scale-1m"][:3],
    "5M": DATA["scale-5m"][:3],
    "25M": DATA["scale-25m"][:3],
    "1M, 25M's catalogue": (1_000_000, *DATA["scale-25m"][1:3]),
    "5M, 25M's catalogue": (5_000_000, *DATA["scale-25m"][1:3]),
}
# each series' cases, its first the linear baseline; the 25M case is in both
SERIES = {
    "growing": ["1M", "5M", "25M"],
    "fixed": ["1M, 25M's catalogue", "5M, 25M's catalogue", "25M"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def source(case: str) -> str:
    n, users, items = CASES[case]
    return f"synthetic:ratings={n},users={users},items={items},seed=1"


def distinct_rows(case: str, steps: int = 50) -> float:
    """Mean distinct users plus distinct items in a random step of STEP ratings."""
    from latentrec import load_ratings

    data = load_ratings(source(case))
    users, items = np.asarray(data.user_index), np.asarray(data.item_index)
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(steps):
        step = rng.choice(len(users), STEP, replace=False)
        counts.append(len(np.unique(users[step])) + len(np.unique(items[step])))
    return float(np.mean(counts))


def main() -> None:
    args = parse_args()
    latentrec = str(Path(sys.executable).with_name("latentrec"))
    commands = {
        case: [latentrec, "train", "--data", source(case), "--json", *ONE_EPOCH_DOT]
        for case in CASES
    }
    results = train_runs(commands, args.repeats)
    seconds = {case: [r["train_seconds"] for r in results[case]] for case in CASES}
    n_train = {case: results[case][0]["n_train"] for case in CASES}
    rows = [
        "| series | data | users x items | train ratings | distinct rows a step | median s "
        "| fastest s | median ns/rating | x linear (median) | x linear (fastest) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    per_rating = {c: statistics.median(seconds[c]) / n_train[c] for c in CASES}
    fastest = {c: min(seconds[c]) / n_train[c] for c in CASES}
    rows_a_step = {case: distinct_rows(case) for case in CASES}
    summary: dict[str, dict] = {}
    for series, cases in SERIES.items():
        base = cases[0]
        summary[series] = {}
        for case in cases:
            _, users, items = CASES[case]
            summary[series][case] = {
                "users": users,
                "items": items,
                "n_train": n_train[case],
                "distinct_rows_a_step": rows_a_step[case],
                "train_seconds": seconds[case],
                "median_seconds": statistics.median(seconds[case]),
                "times_linear_median": per_rating[case] / per_rating[base],
                "times_linear_fastest": fastest[case] / fastest[base],
            }
            rows.append(
                f"| {series} | {case} | {users:,} x {items:,} | {n_train[case]:,} | "
                f"{rows_a_step[case]:,.0f} | {statistics.median(seconds[case]):.3f} | "
                f"{min(seconds[case]):.3f} | {per_rating[case] * 1e9:.1f} | "
                f"{per_rating[case] / per_rating[base]:.2f} | "
                f"{fastest[case] / fastest[base]:.2f} |"
            )
    report = {
        **machine(),
        "results": summary,
        "context": f"One epoch of the dot model, 100 factors, batch {STEP}; {args.repeats} "
        "rounds, cases alternating. x linear: time per rating over the first case of the "
        "same series.",
    }
    write(args.out, "scaling", report, "Epoch time against data size", "\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
