"""Compare latentrec with fastai, Surprise, cornac and myFM on identical data and splits.

Every system trains on the same 90/10 random split (seed 42) written to CSV: of the bundled
MovieLens sample (`latentrec train`'s default split), or of synthetic ratings for the scale
cases. Each run is its own subprocess, so wall time and peak RSS cover the whole command;
systems alternate within each round so load drift hits all alike. The peers run only in
their own environment, benchmarks/.peers (`bash benchmarks/setup_peers.sh`).

Run from the repository root:
    .venv/bin/python benchmarks/compare.py --repeats 3 --cases dot,nn,mf
    .venv/bin/python benchmarks/compare.py --repeats 3 --cases scale-1m,scale-5m
    .venv/bin/python benchmarks/compare.py --repeats 3 --cases als-25m
    .venv/bin/python benchmarks/compare.py --repeats 3 --cases fm,fm-1m
    .venv/bin/python benchmarks/compare.py --repeats 1 --cases fm --systems "myFM,myFM plain"

`--systems` keeps only the named systems of the chosen cases. A latentrec system whose model
is not registered in `latentrec.models.MODELS` is skipped with a message. Each case's systems
are also plotted, test RMSE against training seconds, in `compare-<stamp>-<case>.png`.

The `als-25m` case is the ranking model's: latentrec's `als` against implicit's ALS on the 25M
synthetic interactions, one iteration and a full fit of 15 at 64 factors (run by
benchmarks/als_scale.py, which writes its own result file).
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
MF_SCRIPT = REPO / "benchmarks" / "peers" / "matrix_factorization.py"
MYFM_SCRIPT = REPO / "benchmarks" / "peers" / "myfm_regression.py"
SCALE_FACTORS = "100"  # cornac's speed anchor is at 100 factors: compare at the same width
ONE_EPOCH_DOT = ["--epochs", "1", "--batch-size", "4096", "--factors", SCALE_FACTORS]
# fastai's usual collab settings; --flush-denormal makes it ~15x faster on CPU with bs 64,
# so we compare against the faster fastai.
FASTAI_COMMON = ["--epochs", "5", "--lr", "5e-3", "--wd", "0.1", "--flush-denormal"]

# name -> (program, model, extra arguments); a peer's model names the latentrec system its
# training time is set against
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
    "surprise svd": ("mf", "dot", ["--system", "surprise-svd"]),
    "surprise svd++": ("mf", "dot", ["--system", "surprise-svdpp"]),
    "cornac mf": ("mf", "dot", ["--system", "cornac-mf", "--factors", "50"]),
    "latentrec bayes": ("latentrec", "bayes", ["--model", "bayes"]),
    # the same number of samples as myFM's 200, and without the implicit signals
    "latentrec bayes 200": ("latentrec", "bayes", ["--model", "bayes", "--samples", "200"]),
    "latentrec bayes plain": ("latentrec", "bayes", ["--model", "bayes", "--no-implicit-signals"]),
    # Bayesian FM, rank 10, 200 Gibbs samples all kept: user, item and SVD++-style implicit
    # features (the user's items, the item's users), or user and item alone
    "myFM": ("myfm", "bayes", []),
    "myFM plain": ("myfm", "bayes", ["--plain"]),
    "myFM 100": ("myfm", "bayes", ["--n-iter", "100"]),  # latentrec bayes's samples
    # one epoch at scale, 100 factors each
    "latentrec dot 1 epoch": ("latentrec", "dot", ONE_EPOCH_DOT),
    # the same epoch through PyTorch's autograd instead of the fused kernel
    "latentrec dot autograd 1 epoch": (
        "latentrec",
        "dot",
        [*ONE_EPOCH_DOT, "--engine", "autograd"],
    ),
    "surprise svd 1 epoch": (
        "mf",
        "dot",
        ["--system", "surprise-svd", "--epochs", "1", "--factors", SCALE_FACTORS],
    ),
    "cornac mf 1 epoch": (
        "mf",
        "dot",
        ["--system", "cornac-mf", "--epochs", "1", "--factors", SCALE_FACTORS],
    ),
    "fastai dot bs4096 1 epoch": (
        "fastai",
        "dot",
        ["--model", "dot", "--batch-size", "4096", "--factors", SCALE_FACTORS],
    ),
}
SCALE = ["latentrec dot 1 epoch", "surprise svd 1 epoch", "cornac mf 1 epoch"]
# data of each case: the bundled sample, or synthetic (ratings, users, items)
DATA = {
    "scale-1m": (1_000_000, 20_000, 5_000),
    "scale-5m": (5_000_000, 100_000, 20_000),
    "scale-25m": (25_000_000, 160_000, 60_000),
}
DATA |= {"fm-1m": DATA["scale-1m"], "fm-5m": DATA["scale-5m"]}
BAYES = [
    "latentrec dot",
    "latentrec bayes",
    "latentrec bayes 200",
    "latentrec bayes plain",
    "myFM",
    "myFM 100",
    "myFM plain",
]
CASES = {
    "dot": ["latentrec dot", "fastai dot bs64", "fastai dot bs1024"],
    # The quick dot comparison: leaves out fastai bs 64, the slowest run.
    "dot1024": ["latentrec dot", "fastai dot bs1024"],
    "nn": ["latentrec nn", "fastai nn bs64"],
    "mf": ["latentrec dot", "surprise svd", "surprise svd++", "cornac mf"],
    "scale-1m": [*SCALE, "fastai dot bs4096 1 epoch"],
    "scale-5m": [*SCALE, "latentrec dot autograd 1 epoch"],
    "scale-25m": SCALE,
    # Bayesian models at their defaults, on the bundled sample and on synthetic 1M and 5M
    "fm": BAYES,
    "fm-1m": BAYES,
    "fm-5m": BAYES,
    "als-25m": [],  # benchmarks/als_scale.py, with its defaults
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="rounds per case")
    p.add_argument("--cases", default="dot,nn,mf", help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument(
        "--systems", default="", help="comma-separated: run only these systems of the cases"
    )
    p.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(args.cases) - set(CASES))
    if unknown or not args.cases:
        p.error(f"--cases: unknown {unknown}; choose from {', '.join(CASES)}")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        p.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def write_split(folder: Path, case: str = "dot") -> tuple[Path, Path]:
    """Write a 90/10 random split (seed 42) of the case's data as raw-id CSVs.

    The split is redone on the raw frame because the test set of `Ratings.split` holds index
    -1 for ids unseen in training, which loses their raw ids.
    """
    source = "movielens-small"
    if case in DATA:
        n, users, items = DATA[case]
        source = f"synthetic:ratings={n},users={users},items={items},seed=1"
    ratings = latentrec.load_ratings(source)
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
    train_csv, test_csv = folder / f"{case}-train.csv", folder / f"{case}-test.csv"
    train_df.to_csv(train_csv, index=False)
    test_df.to_csv(test_csv, index=False)
    return train_csv, test_csv


def command(name: str, train_csv: Path, test_csv: Path, peers_python: Path) -> list[str]:
    program, _, extra = SYSTEMS[name]
    files = ["--data" if program == "latentrec" else "--train", str(train_csv), "--test"]
    files.append(str(test_csv))
    if program == "latentrec":
        return [str(Path(sys.executable).with_name("latentrec")), "train", *files, "--json", *extra]
    if program in ("mf", "myfm"):
        script = MF_SCRIPT if program == "mf" else MYFM_SCRIPT
        return [str(peers_python), str(script), *files, *extra]
    epochs = ["--epochs", "1"] if "1 epoch" in name else []
    return [str(peers_python), str(FASTAI_SCRIPT), *files, *extra, *FASTAI_COMMON, *epochs]


def selected(case: str, systems: list[str]) -> list[str]:
    """The case's systems that `--systems` keeps (all when it names none), less latentrec
    systems whose model this latentrec does not register."""
    names = [name for name in CASES[case] if not systems or name in systems]
    kept = []
    for name in names:
        program, model, _ = SYSTEMS[name]
        if program == "latentrec" and model not in latentrec.models.MODELS:
            print(
                f"{name}: skipped, latentrec.models.MODELS has no {model!r} "
                f"(registered: {', '.join(latentrec.models.MODELS)})",
                file=sys.stderr,
            )
            continue
        kept.append(name)
    return kept


def _watch_peak_rss(proc: subprocess.Popen) -> int:
    """Wait for the child, polling its VmHWM (peak RSS of its own image) every 20 ms.

    getrusage/wait4's ru_maxrss would include the forked copy of this process the child ran
    in before exec; VmHWM starts afresh at exec."""
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            text = status.read_text()
        except OSError:  # gone between poll() and the read
            break
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]) * 1024)
        time.sleep(0.02)
    proc.wait()
    return peak


def run_once(name: str, argv: list[str]) -> dict:
    """Run one command; return its JSON plus whole-command wall time and peak RSS."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        peak = _watch_peak_rss(proc)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}): {shlex.join(argv)}\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    program = SYSTEMS[name][0]
    train_s = result["train_seconds"] if program == "latentrec" else result["fit_seconds"]
    return {
        "system": name,
        "rmse": result["rmse"],
        "train_seconds": train_s,
        "wall_seconds": wall,
        "ratings_per_second": result["ratings_per_second"],
        "peak_rss_bytes": peak,
        "n_train": result["n_train"],
        "result": result,
    }


def _data_label(case: str) -> str:
    if case not in DATA:
        return "movielens-small"
    return f"synthetic {DATA[case][0] / 1e6:g}M"


def _system(label: str) -> str:
    return label.split(" @ ")[0]


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
        name, data = row["system"].split(" @ ")
        suffix = " 1 epoch" if name.endswith("1 epoch") else ""
        baseline = by_name.get(f"latentrec {SYSTEMS[name][1]}{suffix} @ {data}")
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
        "fastai `fit_seconds` (whole fit_one_cycle, per-epoch validation included); "
        "myFM `fit_seconds` (the Gibbs sampler; its features are built before). "
        "wall s: the whole command, imports and data loading included."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.chdir(REPO)  # the children run from the repository root
    todo_by_case = {case: selected(case, args.systems) for case in args.cases}
    todo_all = [name for names in todo_by_case.values() for name in names]
    needs_peers = any(SYSTEMS[name][0] != "latentrec" for name in todo_all)
    if needs_peers and not args.peers_python.exists():
        print(f"peer venv missing ({args.peers_python}); run: bash benchmarks/setup_peers.sh")
        sys.exit(2)

    if "als-25m" in args.cases:
        import als_scale

        als_scale.main(["--repeats", str(args.repeats), "--out", str(args.out)])
        args.cases.remove("als-25m")
        if not args.cases:
            return
    runs: list[dict] = []
    names: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            data = _data_label(case)
            # a system already run on the same data by an earlier case is not run again
            todo = [name for name in todo_by_case[case] if f"{name} @ {data}" not in names]
            if not todo:
                continue
            train_csv, test_csv = write_split(Path(tmp), case)
            names += [f"{name} @ {data}" for name in todo]
            for round_no in range(1, args.repeats + 1):
                for name in todo:
                    argv_ = command(name, train_csv, test_csv, args.peers_python)
                    run = run_once(name, argv_) | {"case": case, "round": round_no}
                    run["system"] = f"{name} @ {data}"
                    run["command"] = shlex.join(argv_)
                    runs.append(run)
                    print(
                        f"[{case} {round_no}/{args.repeats}] {name}: RMSE {run['rmse']:.4f}, "
                        f"train {run['train_seconds']:.2f} s, wall {run['wall_seconds']:.2f} s",
                        file=sys.stderr,
                    )

    if not runs:
        raise SystemExit("nothing to run: no system of --cases is left by --systems")
    rows = summarise(runs, names)
    table = markdown(rows)
    print(table)

    fastai_info = _first_result(runs, "fastai")
    report = machine() | {
        "torch": importlib.metadata.version("torch"),
        "latentrec": latentrec.__version__,
        "fastai": fastai_info.get("fastai_version"),
        "fastai_torch": fastai_info.get("torch_version"),
        "myfm": _first_result(runs, "myfm").get("version"),
    }
    peer_versions = {"torch": "fastai_torch", "fastai": "fastai", "myfm": "myfm"}
    peer_text = ", ".join(
        f"{name} {report[key]}" for name, key in peer_versions.items() if report[key]
    )
    report["context"] = (
        f"cpu_count {report['cpu_count']}, Python {report['python']}, torch {report['torch']}"
        + (f" (peers' venv: {peer_text})" if peer_text else "")
        + f", latentrec {report['latentrec']}"
    )
    report |= {"summary": rows, "table": table, "runs": runs}
    header = "latentrec vs fastai, Surprise, cornac and myFM"
    stamp = write(args.out, "compare", report, header, table)
    by_system = {row["system"]: row for row in rows}
    for case, todo in todo_by_case.items():
        data = _data_label(case)
        mine = [by_system[f"{name} @ {data}"] for name in todo]
        if mine:
            path = plot(mine, data, args.out / f"compare-{stamp}-{case}.png")
            print(f"plot written to {path}", file=sys.stderr)


def _first_result(runs: list[dict], program: str) -> dict:
    """The JSON that the first run of one of `program`'s systems printed ({} if none ran)."""
    return next((r["result"] for r in runs if SYSTEMS[_system(r["system"])][0] == program), {})


def plot(rows: list[dict], data: str, path: Path) -> Path:
    """Training time (log scale) against test RMSE, one labelled point per system."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for row in rows:
        name = _system(row["system"])
        colour = "tab:red" if name.startswith("latentrec") else "tab:blue"
        axes.scatter(row["train_seconds"], row["rmse"], color=colour)
        axes.annotate(
            name,
            (row["train_seconds"], row["rmse"]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    axes.set_xscale("log")
    axes.margins(x=0.15, y=0.1)  # room for the labels of the outermost points
    axes.set_xlabel("training seconds (median, log scale)")
    axes.set_ylabel("test RMSE (median)")
    source = "bundled MovieLens sample" if data == "movielens-small" else f"{data} ratings"
    axes.set_title(f"{source}, 90/10 split, seed 42: lower left is better")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
