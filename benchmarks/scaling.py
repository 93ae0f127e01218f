"""How an epoch's time grows with the data: the dot model at 1M, 5M and 25M synthetic ratings.

The sizes are compare.py's scale cases (users and items grow with the ratings). Each run is a
fresh `latentrec train` process (one epoch, 100 factors, batch 4096, 90% train); the sizes
alternate within each round, and the report gives the median and the fastest run of each, the
time per rating, and how far each size is from linear growth (time per rating over the smallest
size's).

Run from the repository root:
    .venv/bin/python benchmarks/scaling.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _report import machine, run_json, write
from compare import DATA, ONE_EPOCH_DOT

REPO = Path(__file__).resolve().parent.parent
CASES = ("scale-1m", "scale-5m", "scale-25m")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def run_once(case: str) -> dict:
    n, users, items = DATA[case]
    data = f"synthetic:ratings={n},users={users},items={items},seed=1"
    latentrec = str(Path(sys.executable).with_name("latentrec"))
    command = [latentrec, "train", "--data", data, "--json", *ONE_EPOCH_DOT]
    return run_json(command)[0]


def main() -> None:
    args = parse_args()
    seconds: dict[str, list[float]] = {case: [] for case in CASES}
    n_train = {}
    for round_ in range(args.repeats):
        for case in CASES:
            result = run_once(case)
            seconds[case].append(result["train_seconds"])
            n_train[case] = result["n_train"]
            print(
                f"[{round_ + 1}/{args.repeats}] {case}: {result['train_seconds']:.3f} s",
                file=sys.stderr,
                flush=True,
            )
    rows = [
        "| data | train ratings | median s | fastest s | median ns/rating "
        "| x linear (median) | x linear (fastest) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = CASES[0]
    per_rating = {c: statistics.median(seconds[c]) / n_train[c] for c in CASES}
    fastest = {c: min(seconds[c]) / n_train[c] for c in CASES}
    summary = {}
    for case in CASES:
        summary[case] = {
            "n_train": n_train[case],
            "train_seconds": seconds[case],
            "median_seconds": statistics.median(seconds[case]),
            "times_linear_median": per_rating[case] / per_rating[base],
            "times_linear_fastest": fastest[case] / fastest[base],
        }
        rows.append(
            f"| {case.removeprefix('scale-').upper()} | {n_train[case]:,} | "
            f"{statistics.median(seconds[case]):.3f} | {min(seconds[case]):.3f} | "
            f"{per_rating[case] * 1e9:.1f} | {per_rating[case] / per_rating[base]:.2f} | "
            f"{fastest[case] / fastest[base]:.2f} |"
        )
    report = {
        **machine(),
        "results": summary,
        "context": f"One epoch of the dot model, 100 factors, batch 4096; {args.repeats} rounds, "
        "sizes alternating. x linear: time per rating over the 1M case's.",
    }
    write(args.out, "scaling", report, "Epoch time against data size", "\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
