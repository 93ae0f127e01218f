"""Compare latentrec with fastai's collab_learner on the bundled MovieLens sample.

Both systems train on the same 90/10 random split (the one `latentrec train` makes with its
default seed) written to CSV, each run in its own subprocess so that wall time and peak RSS
cover the whole command. Systems alternate within each round so load drift hits all alike.

Run from the repository root:
    .venv/bin/python benchmarks/compare_fastai.py --repeats 3 --cases dot,nn
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import machine, write

import latentrec

REPO = Path(__file__).resolve().parent.parent
PEERS_PYTHON = REPO / "benchmarks" / ".peers" / "bin" / "python"
FASTAI_SCRIPT = REPO / "benchmarks" / "peers" / "fastai_collab.py"
# fastai's usual collab settings; --flush-denormal makes it ~15x faster on CPU with bs 64,
# so we compare against the faster fastai.
FASTAI_COMMON = ["--epochs", "5", "--lr", "5e-3", "--wd", "0.1", "--flush-denormal"]

# name -> (program, model, extra arguments)
SYSTEMS = {
    "latentrec dot": ("latentrec", "dot", []),
    "fastai dot bs64": ("fastai", "dot", ["--model", "dot", "--batch-size", "64"]),
    "fastai dot bs1024": ("fastai", "dot", ["--model", "dot", "--batch-size", "1024"]),
    "latentrec nn": ("latentrec", "nn", ["--model", "nn"]),
    "fastai nn bs64": (
        "fastai",
        "nn",
        ["--model", "nn", "--batch-size", "64", "--layers", "100,50"],
    ),
}
CASES = {
    "dot": ["latentrec dot", "fastai dot bs64", "fastai dot bs1024"],
    # The quick dot comparison: leaves out fastai bs 64, the slowest run.
    "dot1024": ["latentrec dot", "fastai dot bs1024"],
    "nn": ["latentrec nn", "fastai nn bs64"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="rounds per case")
    p.add_argument("--cases", default="dot,nn", help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown or not args.cases:
        p.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def write_split(folder: Path) -> tuple[Path, Path]:
    """Write latentrec's default random split of the bundled data as raw-id CSVs.

    The split is redone on the raw frame because the test set of `Ratings.split` holds index
    -1 for ids unseen in training, which loses their raw ids.
    """
    ratings = latentrec.load_ratings("movielens-small")
    frame = ratings.to_frame()[["user", "item", "rating"]]
    order = np.random.default_rng(42).permutation(len(frame))
    n_test = round(0.1 * len(frame))
    test_df = frame.iloc[np.sort(order[:n_test])]
    train_df = frame.iloc[np.sort(order[n_test:])]
    # Guard against drift from latentrec's own split (src/ is edited independently).
    reference = ratings.split(test_fraction=0.1, seed=42).train
    if not (
        np.array_equal(train_df["user"].to_numpy(), reference.user_ids)
        and np.array_equal(train_df["item"].to_numpy(), reference.item_ids)
    ):
        raise SystemExit("the split no longer matches Ratings.split(0.1, seed=42)")
    train_csv, test_csv = folder / "train.csv", folder / "test.csv"
    train_df.to_csv(train_csv, index=False)
    test_df.to_csv(test_csv, index=False)
    return train_csv, test_csv


def command(name: str, train_csv: Path, test_csv: Path) -> list[str]:
    program, _, extra = SYSTEMS[name]
    files = ["--train" if program == "fastai" else "--data", str(train_csv), "--test"]
    files.append(str(test_csv))
    if program == "latentrec":
        return [str(Path(sys.executable).with_name("latentrec")), "train", *files, "--json", *extra]
    return [str(PEERS_PYTHON), str(FASTAI_SCRIPT), *files, *extra, *FASTAI_COMMON]


def run_once(name: str, argv: list[str]) -> dict:
    """Run one command; return its JSON plus whole-command wall time and peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        # wait4 gives this child's own rusage; RUSAGE_CHILDREN would only give a running max.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}): {shlex.join(argv)}\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    train_s = result["fit_seconds"] if SYSTEMS[name][0] == "fastai" else result["train_seconds"]
    return {
        "system": name,
        "rmse": result["rmse"],
        "train_seconds": train_s,
        "wall_seconds": wall,
        "ratings_per_second": result["ratings_per_second"],
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "n_train": result["n_train"],
        "result": result,
    }


def summarise(runs: list[dict], names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        mine = [r for r in runs if r["system"] == name]
        rows.append(
            {
                "system": name,
                "runs": len(mine),
                "rmse": statistics.median(r["rmse"] for r in mine),
                "train_seconds": statistics.median(r["train_seconds"] for r in mine),
                "wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
                "ratings_per_second": statistics.median(r["ratings_per_second"] for r in mine),
                "peak_rss_mib": max(r["peak_rss_bytes"] for r in mine) / 2**20,
            }
        )
    by_name = {row["system"]: row for row in rows}
    for row in rows:
        baseline = by_name.get(f"latentrec {SYSTEMS[row['system']][1]}")
        row["train_vs_latentrec"] = (
            row["train_seconds"] / baseline["train_seconds"] if baseline else None
        )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| system | runs | test RMSE | train s | wall s | ratings/s | peak RSS MiB "
        "| train s / latentrec |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = "" if r["train_vs_latentrec"] is None else f"{r['train_vs_latentrec']:.1f}x"
        lines.append(
            f"| {r['system']} | {r['runs']} | {r['rmse']:.4f} | {r['train_seconds']:.2f} "
            f"| {r['wall_seconds']:.2f} | {r['ratings_per_second']:,.0f} "
            f"| {r['peak_rss_mib']:.0f} | {ratio} |"
        )
    lines.append("")
    lines.append(
        "Medians over runs (peak RSS: max). train s: latentrec `train_seconds` (training only); "
        "fastai `fit_seconds` (whole fit_one_cycle, per-epoch validation included). "
        "wall s: the whole command, imports and data loading included."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not PEERS_PYTHON.exists():
        print(f"fastai peer venv missing ({PEERS_PYTHON}); run: bash benchmarks/setup_peers.sh")
        sys.exit(2)

    runs: list[dict] = []
    names: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_csv, test_csv = write_split(Path(tmp))
        for case in args.cases:
            # A system shared with an earlier case (latentrec dot) is not run again.
            todo = [name for name in CASES[case] if name not in names]
            names += todo
            for round_no in range(1, args.repeats + 1):
                for name in todo:
                    argv_ = command(name, train_csv, test_csv)
                    run = run_once(name, argv_) | {"case": case, "round": round_no}
                    run["command"] = shlex.join(argv_)
                    runs.append(run)
                    print(
                        f"[{case} {round_no}/{args.repeats}] {name}: RMSE {run['rmse']:.4f}, "
                        f"train {run['train_seconds']:.2f} s, wall {run['wall_seconds']:.2f} s",
                        file=sys.stderr,
                    )

    rows = summarise(runs, names)
    table = markdown(rows)
    print(table)

    fastai_info = next((r["result"] for r in runs if SYSTEMS[r["system"]][0] == "fastai"), {})
    report = machine() | {
        "torch": importlib.metadata.version("torch"),
        "latentrec": latentrec.__version__,
        "fastai": fastai_info.get("fastai_version"),
        "fastai_torch": fastai_info.get("torch_version"),
    }
    report["context"] = (
        f"cpu_count {report['cpu_count']}, Python {report['python']}, "
        f"torch {report['torch']} (fastai venv: torch {report['fastai_torch']}, "
        f"fastai {report['fastai']}), latentrec {report['latentrec']}"
    )
    report |= {"summary": rows, "table": table, "runs": runs}
    write(args.out, "compare_fastai", report, "latentrec vs fastai collab_learner", table)


if __name__ == "__main__":
    main()
