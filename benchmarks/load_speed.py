"""How long reading a large ratings CSV takes (pyarrow's multi-threaded reader).

Writes N synthetic ratings as a MovieLens-25M-style `ratings.csv` into a temporary directory,
then times `latentrec.load_ratings` on it, median of --repeats runs. `--table` writes a plain
table (`table.csv`: user,item,rating,timestamp) instead, which goes through the generic table
reader (the one that checks for ids spelt two ways, "1" and "01").

    .venv/bin/python benchmarks/load_speed.py --ratings 5000000 --repeats 3 [--table]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import latentrec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--table", action="store_true", help="a plain table, not ratings.csv")
    args = parser.parse_args()
    spec = f"synthetic:ratings={args.ratings},users=100000,items=20000,seed=1"
    frame = latentrec.load_ratings(spec).to_frame()
    if not args.table:
        frame = frame.rename(columns={"user": "userId", "item": "movieId"})
    frame["timestamp"] = 1_500_000_000
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("table.csv" if args.table else "ratings.csv")
        frame.to_csv(path, index=False)
        size_mb = path.stat().st_size / 1e6
        seconds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            ratings = latentrec.load_ratings(path)
            seconds.append(time.perf_counter() - started)
        assert len(ratings) == args.ratings
    median = statistics.median(seconds)
    print(
        f"read {args.ratings:,} ratings ({size_mb:.0f} MB CSV): median {median:.2f} s of "
        f"{args.repeats} ({args.ratings / median / 1e6:.1f}M rows/s); runs "
        + ", ".join(f"{s:.2f}" for s in seconds)
    )


if __name__ == "__main__":
    main()
