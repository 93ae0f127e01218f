"""latentrec now against an earlier commit, side by side: the same commands, alternating.

Runs latentrec's own rows of `compare.py` (the bundled sample's 90/10 split, seed 42) and
`train_speed.py`'s one-epoch runs on synthetic ratings, once with this checkout's `src/` and
once with the `--base` commit's (a temporary git worktree, put first on PYTHONPATH), the order
swapped every round so load drift hits both alike. `--busy N` keeps N spinning processes
running beside every run. Reports medians and head / base ratios.

Run from the repository root:
    .venv/bin/python benchmarks/side_by_side.py --base HEAD~1 --repeats 3
    .venv/bin/python benchmarks/side_by_side.py --base HEAD~1 --repeats 3 --busy 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import compare
from _report import machine, write

REPO = Path(__file__).resolve().parent.parent
TRAIN_SPEED = REPO / "benchmarks" / "train_speed.py"
# compare.py's latentrec rows, by case
COMPARE_CASES = {"dot": "latentrec dot", "nn": "latentrec nn"}
# train_speed.py's defaults at 5M ratings: one epoch of the dot model per batch size
SPEED_DATA = ["--ratings", "5000000", "--users", "100000", "--items", "20000"]
SPEED_BATCHES = (4096, 1024)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the git commit to compare against")
    p.add_argument("--repeats", type=int, default=3, help="rounds; each runs both, alternating")
    p.add_argument("--cases", default="dot,nn,speed-5m", help="dot, nn (compare.py), speed-5m")
    p.add_argument("--busy", type=int, default=0, help="spinning processes beside every run")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.cases) - {*COMPARE_CASES, "speed-5m"})
    if unknown or not args.cases or args.repeats < 1 or args.busy < 0:
        p.error(f"choose --cases from dot, nn, speed-5m (unknown {unknown}), --repeats >= 1")
    return args


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[Path]:
    """A detached checkout of `ref` in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="latentrec-base-") as folder:
        path = Path(folder) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(path), ref],
            cwd=REPO,
            check=True,
        )
        try:
            yield path
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(path)], cwd=REPO, check=False
            )


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each, for as long as the block runs."""
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(count)]
    for spinner in spinners:
        spinner.start()
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def run(name: str, argv: list[str], src: Path, busy_count: int) -> dict:
    """One command with `src` first on the import path; its JSON, wall time and peak RSS."""
    env = os.environ | {"PYTHONPATH": str(src)}
    with busy(busy_count):
        if name in compare.SYSTEMS:
            original = os.environ.copy()
            os.environ.update(env)
            try:
                return compare.run_once(name, argv)
            finally:
                os.environ.clear()
                os.environ.update(original)
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed: {shlex.join(argv)}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"system": name, "train_seconds": result["train_seconds"], "result": result}


def commands(cases: list[str], folder: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for case in cases:
        if case in COMPARE_CASES:
            name = COMPARE_CASES[case]
            found[name] = compare.command(name, *compare.write_split(folder, case))
        else:
            for size in SPEED_BATCHES:
                found[f"dot 1 epoch 5M batch {size}"] = [
                    sys.executable,
                    str(TRAIN_SPEED),
                    "--child",
                    *SPEED_DATA,
                    "--factors",
                    "50",
                    "--batch-size",
                    str(size),
                ]
    return found


def markdown(runs: list[dict], names: list[str]) -> str:
    lines = [
        "| run | base train s | head train s | head / base | base wall s | head wall s "
        "| base RMSE | head RMSE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        medians = {}
        for side in ("base", "head"):
            mine = [r for r in runs if r["system"] == name and r["side"] == side]
            rmse = [r["rmse"] for r in mine if r.get("rmse") is not None]
            wall = [r["wall_seconds"] for r in mine if "wall_seconds" in r]
            medians[side] = (
                statistics.median(r["train_seconds"] for r in mine),
                statistics.median(wall) if wall else None,
                statistics.median(rmse) if rmse else None,
            )
        (base_s, base_wall, base_rmse) = medians["base"]
        (head_s, head_wall, head_rmse) = medians["head"]

        def shown(value: float | None, digits: int = 4) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        lines.append(
            f"| {name} | {base_s:.3f} | {head_s:.3f} | {head_s / base_s:.3f} "
            f"| {shown(base_wall, 2)} | {shown(head_wall, 2)} "
            f"| {shown(base_rmse)} | {shown(head_rmse)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    base = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    runs = []
    with tempfile.TemporaryDirectory() as folder, worktree(args.base) as tree:
        todo = commands(args.cases, Path(folder))
        sources = {"base": tree / "src", "head": REPO / "src"}
        for round_no in range(1, args.repeats + 1):
            order = ("base", "head") if round_no % 2 else ("head", "base")
            for name, argv in todo.items():
                for side in order:
                    result = run(name, argv, sources[side], args.busy)
                    runs.append(result | {"side": side, "round": round_no})
                    print(
                        f"[{round_no}/{args.repeats}] {name} {side}: "
                        f"{result['train_seconds']:.3f} s",
                        file=sys.stderr,
                    )
    table = markdown(runs, list(todo))
    print(table)
    report = machine() | {"base": base, "head": head, "busy": args.busy, "runs": runs}
    report["context"] = (
        f"head {head} against base {base}, {args.repeats} alternating rounds, "
        f"{args.busy} busy processes beside, cpu_count {report['cpu_count']}"
    )
    report["table"] = table
    write(args.out, "side_by_side", report, f"latentrec {head} against {base}", table)


if __name__ == "__main__":
    main()
