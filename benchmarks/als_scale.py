"""latentrec's als against implicit's ALS at scale: fit seconds and peak memory, side by side.

The synthetic catalogue (default: 25M interactions of 160,000 users with 60,000 items, the
synthetic source's seed 1) is written once as two .npy index arrays; each run is a fresh
process that loads them, builds its own structure and fits (one iteration, then a full fit of
15), at the same factors (64) and threads (2). Peak RSS is the child's VmHWM, data included;
"before the fit" is its resident set once the data are loaded (for latentrec: the libraries it
imports and the interactions as `Ratings`; for implicit: the two index arrays), and "added by
the fit" the peak above that: the structures and factors each method builds to fit (implicit's
sparse matrices included).

Two times: "fit" is each library's fit call, given its own input (latentrec: `Ratings`, whose
fit compresses them; implicit: the user x item CSR matrix, built before its clock starts);
"from the index arrays" starts once the two arrays are loaded, so it counts what each needs to
turn the same interactions into its input as well (latentrec's `Ratings`; implicit's CSR
matrix, repeated pairs added); "again" is a second fit of the same input in the same process
(a fresh model), where latentrec's compiled kernels are loaded already (numba loads them from
its cache at their first call, inside the first fit; implicit's compiled code loads on import).
Runs alternate within each round; medians over rounds. implicit runs in the peers' environment.

    .venv/bin/python benchmarks/als_scale.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _report import machine, write
from compare import _watch_peak_rss

import latentrec

REPO = Path(__file__).resolve().parent.parent
PEERS_PYTHON = REPO / "benchmarks" / ".peers" / "bin" / "python"

# the resident set now, in bytes: what the process holds before its fit starts
RSS = """
def rss():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024
"""

LATENTREC_CHILD = (
    RSS
    + """
import json, sys, time
import numpy as np
import torch
import latentrec
from latentrec.data import IdMap, Ratings
users, items = np.load(sys.argv[1]), np.load(sys.argv[2])
n_users, n_items, factors, iterations = (int(v) for v in sys.argv[3:7])
loaded = time.perf_counter()
ids = IdMap(np.arange(n_users, dtype=np.int64)), IdMap(np.arange(n_items, dtype=np.int64))
ratings = Ratings(users, items,
                  np.ones(len(users), dtype=np.float32), *ids, source="synthetic", implicit=True)
del users, items
before = rss()
started = time.perf_counter()
latentrec.fit(ratings, "als", n_factors=factors, iterations=iterations, progress=False)
seconds = time.perf_counter() - started
from_arrays = time.perf_counter() - loaded
started = time.perf_counter()
latentrec.fit(ratings, "als", n_factors=factors, iterations=iterations, progress=False)
again = time.perf_counter() - started
print(json.dumps({"fit_seconds": seconds, "threads": torch.get_num_threads(),
                  "from_arrays_seconds": from_arrays, "again_seconds": again,
                  "rss_before_bytes": before}))
"""
)

IMPLICIT_CHILD = (
    RSS
    + """
import json, sys, time
import numpy as np, scipy.sparse as sp, threadpoolctl
threadpoolctl.threadpool_limits(1, "blas")
from implicit.cpu.als import AlternatingLeastSquares
users, items = np.load(sys.argv[1]), np.load(sys.argv[2])
n_users, n_items, factors, iterations = (int(v) for v in sys.argv[3:7])
before = rss()
loaded = time.perf_counter()
matrix = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                       shape=(n_users, n_items))
matrix.data[:] = 1.0
del users, items
model = AlternatingLeastSquares(factors=factors, regularization=0.01, alpha=1.0,
                                iterations=iterations, num_threads=2, random_state=0)
started = time.perf_counter()
model.fit(matrix, show_progress=False)
seconds = time.perf_counter() - started
from_arrays = time.perf_counter() - loaded
del model
model = AlternatingLeastSquares(factors=factors, regularization=0.01, alpha=1.0,
                                iterations=iterations, num_threads=2, random_state=0)
started = time.perf_counter()
model.fit(matrix, show_progress=False)
print(json.dumps({"fit_seconds": seconds, "threads": 2, "from_arrays_seconds": from_arrays,
                  "again_seconds": time.perf_counter() - started, "rss_before_bytes": before}))
"""
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ratings", type=int, default=25_000_000)
    p.add_argument("--users", type=int, default=160_000)
    p.add_argument("--items", type=int, default=60_000)
    p.add_argument("--factors", type=int, default=64)
    p.add_argument("--iterations", default="1,15", help="comma-separated fits to time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def run(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """A fresh process: its last line of JSON output, with its peak RSS added."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        peak = _watch_peak_rss(proc)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {argv[:3]}\n{stderr}")
    return json.loads(stdout.strip().splitlines()[-1]) | {"peak_rss_bytes": peak}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source = f"synthetic:ratings={args.ratings},users={args.users},items={args.items},seed=1"
    ratings = latentrec.load_ratings(source)
    shape = [str(ratings.n_users), str(ratings.n_items), str(args.factors)]
    iterations = [int(v) for v in args.iterations.split(",")]
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        users, items = Path(folder) / "users.npy", Path(folder) / "items.npy"
        np.save(users, ratings.user_index.astype(np.int32))
        np.save(items, ratings.item_index.astype(np.int32))
        del ratings
        programs = {
            "latentrec als": [sys.executable, "-c", LATENTREC_CHILD],
            "implicit ALS": [str(args.peers_python), "-c", IMPLICIT_CHILD],
        }
        for round_no in range(1, args.repeats + 1):
            order = list(programs) if round_no % 2 else list(reversed(programs))
            for count in iterations:
                for name in order:
                    result = run([*programs[name], str(users), str(items), *shape, str(count)])
                    runs.append({"system": name, "iterations": count, **result})
                    print(
                        f"[{round_no}] {name}, {count} iterations: {result['fit_seconds']:.2f} s, "
                        f"peak {result['peak_rss_bytes'] / 2**20:,.0f} MiB",
                        file=sys.stderr,
                    )
    lines = [
        "| system | iterations | fit s (median) | from the index arrays s (median) "
        "| again, same process s (median) | peak RSS MiB (max) | before the fit MiB "
        "| added by the fit MiB (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in iterations:
        for name in ("latentrec als", "implicit ALS"):
            mine = [r for r in runs if r["system"] == name and r["iterations"] == count]
            added = max(r["peak_rss_bytes"] - r["rss_before_bytes"] for r in mine)
            lines.append(
                f"| {name} | {count} | {statistics.median(r['fit_seconds'] for r in mine):.2f} "
                f"| {statistics.median(r['from_arrays_seconds'] for r in mine):.2f} "
                f"| {statistics.median(r['again_seconds'] for r in mine):.2f} "
                f"| {max(r['peak_rss_bytes'] for r in mine) / 2**20:,.0f} "
                f"| {min(r['rss_before_bytes'] for r in mine) / 2**20:,.0f} "
                f"| {added / 2**20:,.0f} |"
            )
    table = "\n".join(lines)
    print(table)
    report = machine() | {"data": source, "factors": args.factors, "runs": runs, "table": table}
    report["context"] = f"{source}, {args.factors} factors, 2 threads, {args.repeats} rounds"
    write(args.out, "als_scale", report, "als at scale, side by side with implicit", table)


if __name__ == "__main__":
    main()
