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
    .venv/bin/python benchmarks/compare.py --repeats 3 --cases curve,curve-5m --busy-copy 1

`--systems` keeps only the named systems of the chosen cases. A latentrec system whose model
is not registered in `latentrec.models.MODELS` is skipped with a message. Each case's systems
are also plotted, test RMSE against training seconds, in `compare-<stamp>-<case>.png`.
`--busy-copy N` runs N processes beside every measured command, each copying a 1 GiB array
into another in a loop, so the command meets a saturated memory bus.

The time-to-accuracy cases `curve` (bundled sample: latentrec dot at its defaults), `curve-5m`
and `curve-25m` (the data of scale-5m and scale-25m; latentrec dot at batch 4096) record every
system's test RMSE after each epoch against its training seconds so far, at 100 factors:
latentrec dot (its default epochs), cornac MF (20 epochs, one warm-started epoch per fit),
Surprise SVD (separate fits of 1, 2, 5, 10 and 20 epochs; not at 25M) and fastai dot at batch
4096 (5 epochs; 5M only). The report adds, per case, the target (the best final RMSE among the
peers), each system's seconds to reach it and those over latentrec's; the case's PNG plots the
curves, the target dashed.

The `als-25m` case is the ranking model's: latentrec's `als` against implicit's ALS on the 25M
synthetic interactions, one iteration and a full fit of 15 at 64 factors (run by
benchmarks/als_scale.py, which writes its own result file).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from _report import machine, write

import latentrec
from latentrec.data import item_features

REPO = Path(__file__).resolve().parent.parent
PEERS_PYTHON = REPO / "benchmarks" / ".peers" / "bin" / "python"
FASTAI_SCRIPT = REPO / "benchmarks" / "peers" / "fastai_collab.py"
MF_SCRIPT = REPO / "benchmarks" / "peers" / "matrix_factorization.py"
MYFM_SCRIPT = REPO / "benchmarks" / "peers" / "myfm_regression.py"
SCALE_FACTORS = "100"  # cornac's speed anchor is at 100 factors: compare at the same width
SCALE_DOT = ["--batch-size", "4096", "--factors", SCALE_FACTORS]
ONE_EPOCH_DOT = ["--epochs", "1", *SCALE_DOT]
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
    # the same number of samples as myFM's 200 (with the item features where the data have
    # them, as "myFM item features"), and with neither implicit signals nor item features
    "latentrec bayes 200": ("latentrec", "bayes", ["--model", "bayes", "--samples", "200"]),
    "latentrec bayes plain": (
        "latentrec",
        "bayes",
        ["--model", "bayes", "--no-implicit-signals", "--no-item-features"],
    ),
    "latentrec bayes no item features": (
        "latentrec",
        "bayes",
        ["--model", "bayes", "--no-item-features"],
    ),
    # Bayesian FM, rank 10, 200 Gibbs samples all kept: user, item and SVD++-style implicit
    # features (the user's items, the item's users), or user and item alone
    "myFM": ("myfm", "bayes", []),
    "myFM plain": ("myfm", "bayes", ["--plain"]),
    "myFM 100": ("myfm", "bayes", ["--n-iter", "100"]),  # latentrec bayes's samples
    # with the items' features latentrec's bayes takes (genres, release decade), where the
    # data have them (the bundled sample)
    "myFM item features": ("myfm", "bayes", ["--item-features"]),
    "myFM item features 100": ("myfm", "bayes", ["--item-features", "--n-iter", "100"]),
    # one epoch at scale, 100 factors each
    "latentrec dot 1 epoch": ("latentrec", "dot", ONE_EPOCH_DOT),
    # the same epoch with AdamW, the optimiser before row-wise Adagrad became the default
    "latentrec dot adamw 1 epoch": ("latentrec", "dot", [*ONE_EPOCH_DOT, "--optimizer", "adamw"]),
    # the same epoch in a blocked order (cells of 8,192 users x 8,192 items)
    "latentrec dot blocked 1 epoch": (
        "latentrec",
        "dot",
        [*ONE_EPOCH_DOT, "--order", "blocked"],
    ),
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
    # time to accuracy, 100 factors each: test RMSE after every epoch (see CURVE_CASES)
    "latentrec dot curve": ("latentrec", "dot", SCALE_DOT),
    "latentrec dot blocked curve": ("latentrec", "dot", [*SCALE_DOT, "--order", "blocked"]),
    "latentrec dot defaults curve": ("latentrec", "dot", ["--factors", SCALE_FACTORS]),
    "cornac mf 20 epochs": (
        "mf",
        "dot",
        ["--system", "cornac-mf", "--epochs", "20", "--factors", SCALE_FACTORS, "--curve"],
    ),
    "surprise svd 20 epochs": (
        "mf",
        "dot",
        ["--system", "surprise-svd", "--epochs", "20", "--factors", SCALE_FACTORS, "--curve"],
    ),
    "fastai dot bs4096 5 epochs": (
        "fastai",
        "dot",
        ["--model", "dot", "--batch-size", "4096", "--factors", SCALE_FACTORS, "--curve"],
    ),
}
SCALE = ["latentrec dot 1 epoch", "surprise svd 1 epoch", "cornac mf 1 epoch"]
# data of each case: the bundled sample, or synthetic (ratings, users, items, distinct): with
# distinct 1 no (user, item) pair repeats, so cornac (which keeps one rating per pair) trains
# on every row the others do; with 0 it drops the repeats (about half the rows at 5M)
DATA = {
    "scale-1m": (1_000_000, 20_000, 5_000, 0),
    "scale-5m": (5_000_000, 100_000, 20_000, 0),
    "scale-25m": (25_000_000, 160_000, 60_000, 0),
    "distinct-5m": (5_000_000, 100_000, 20_000, 1),
    "distinct-25m": (25_000_000, 160_000, 60_000, 1),
}
DATA |= {"fm-1m": DATA["scale-1m"], "fm-5m": DATA["scale-5m"]}
DATA |= {"curve-5m": DATA["distinct-5m"], "curve-25m": DATA["distinct-25m"]}
BAYES = [
    "latentrec dot",
    "latentrec bayes",
    "latentrec bayes 200",
    "latentrec bayes plain",
    "myFM",
    "myFM 100",
    "myFM plain",
]
# where the data name the items' features (the bundled sample): with and without them
BAYES_FEATURES = [
    "latentrec bayes no item features",
    "myFM item features",
    "myFM item features 100",
]
CASES = {
    "dot": ["latentrec dot", "fastai dot bs64", "fastai dot bs1024"],
    # The quick dot comparison: leaves out fastai bs 64, the slowest run.
    "dot1024": ["latentrec dot", "fastai dot bs1024"],
    "nn": ["latentrec nn", "fastai nn bs64"],
    "mf": ["latentrec dot", "surprise svd", "surprise svd++", "cornac mf"],
    "scale-1m": [*SCALE, "fastai dot bs4096 1 epoch"],
    "scale-5m": [
        *SCALE,
        "latentrec dot blocked 1 epoch",
        "latentrec dot adamw 1 epoch",
        "latentrec dot autograd 1 epoch",
    ],
    "scale-25m": [*SCALE, "latentrec dot blocked 1 epoch", "latentrec dot adamw 1 epoch"],
    # one epoch on data without repeated pairs: every system trains on the same rows
    "distinct-5m": [*SCALE, "latentrec dot adamw 1 epoch"],
    "distinct-25m": [*SCALE, "latentrec dot adamw 1 epoch"],
    # Bayesian models at their defaults, on the bundled sample and on synthetic 1M and 5M
    "fm": [*BAYES, *BAYES_FEATURES],
    "fm-1m": BAYES,
    "fm-5m": BAYES,
    # Time to accuracy: each case's latentrec system comes first. No Surprise at 25M (one of
    # its epochs takes 76 s there) and fastai at 5M only.
    "curve": ["latentrec dot defaults curve", "cornac mf 20 epochs", "surprise svd 20 epochs"],
    "curve-5m": [
        "latentrec dot curve",
        "latentrec dot blocked curve",
        "cornac mf 20 epochs",
        "surprise svd 20 epochs",
        "fastai dot bs4096 5 epochs",
    ],
    "curve-25m": ["latentrec dot curve", "latentrec dot blocked curve", "cornac mf 20 epochs"],
    "als-25m": [],  # benchmarks/als_scale.py, with its defaults
}
CURVE_CASES = ("curve", "curve-5m", "curve-25m")
CURVE_SYSTEMS = {name for case in CURVE_CASES for name in CASES[case]}
# a memory-bound process: copy one 1 GiB float64 array into another, again and again
BUSY_COPY = """
import numpy as np
source = np.ones(2**27)
target = np.empty_like(source)
np.copyto(target, source)
print("copying", flush=True)
while True:
    np.copyto(target, source)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="rounds per case")
    p.add_argument("--cases", default="dot,nn,mf", help=f"comma-separated: {', '.join(CASES)}")
    p.add_argument(
        "--systems", default="", help="comma-separated: run only these systems of the cases"
    )
    p.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    p.add_argument(
        "--busy-copy",
        type=int,
        default=0,
        help="processes copying 1 GiB arrays (saturating memory bandwidth) beside every run",
    )
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
    if args.busy_copy < 0:
        p.error("--busy-copy must be >= 0")
    if args.busy_copy and "als-25m" in args.cases:
        p.error("--busy-copy: als-25m runs in benchmarks/als_scale.py, which has no busy copies")
    return args


def write_split(folder: Path, case: str = "dot") -> tuple[Path, Path]:
    """Write a 90/10 random split (seed 42) of the case's data as raw-id CSVs.

    The split is redone on the raw frame because the test set of `Ratings.split` holds index
    -1 for ids unseen in training, which loses their raw ids.
    """
    source = "movielens-small"
    if case in DATA:
        n, users, items, distinct = DATA[case]
        source = f"synthetic:ratings={n},users={users},items={items},seed=1"
        source += ",distinct=1" if distinct else ""
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
    if source == "movielens-small":
        # a ratings.csv with the bundled movies.csv beside it: latentrec reads the items'
        # titles and genres from it, and myFM gets the features latentrec derives from them
        (folder / f"{case}-train").mkdir(exist_ok=True)
        train_csv = folder / f"{case}-train" / "ratings.csv"
        movies = resources.files("latentrec") / "datasets" / "ml-latest-small" / "movies.csv.gz"
        (train_csv.parent / "movies.csv.gz").write_bytes(movies.read_bytes())
    train_df.to_csv(train_csv, index=False)
    test_df.to_csv(test_csv, index=False)
    found = None
    if source == "movielens-small":
        trained = latentrec.load_ratings(train_csv)
        found = item_features(trained)
    if found is not None:
        indptr, columns, names = found
        items = trained.items.ids
        rows = pd.DataFrame(
            {
                "item": np.repeat(items, np.diff(indptr)),
                "feature": np.asarray(names, dtype=object)[columns],
            }
        )
        rows.to_csv(item_features_csv(train_csv), index=False)
    return train_csv, test_csv


def item_features_csv(train_csv: Path) -> Path:
    return train_csv.parent / f"{train_csv.stem}-item-features.csv"


def command(name: str, train_csv: Path, test_csv: Path, peers_python: Path) -> list[str]:
    program, _, extra = SYSTEMS[name]
    files = ["--data" if program == "latentrec" else "--train", str(train_csv), "--test"]
    files.append(str(test_csv))
    if program == "latentrec":
        return [str(Path(sys.executable).with_name("latentrec")), "train", *files, "--json", *extra]
    if program in ("mf", "myfm"):
        script = MF_SCRIPT if program == "mf" else MYFM_SCRIPT
        if "--item-features" in extra:
            if not item_features_csv(train_csv).exists():
                raise SystemExit(f"{name}: these data name no item features")
            at = extra.index("--item-features") + 1
            extra = [*extra[:at], str(item_features_csv(train_csv)), *extra[at:]]
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


@contextlib.contextmanager
def busy_copy(count: int) -> Iterator[None]:
    """`count` processes copying 1 GiB arrays in a loop for as long as the block runs, each
    past its first copy (its memory allocated and touched) before the block begins."""
    copiers = [
        subprocess.Popen([sys.executable, "-c", BUSY_COPY], stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        for copier in copiers:
            if not copier.stdout.readline():
                raise SystemExit(f"--busy-copy: a copying process ended (exit {copier.wait()})")
        yield
    finally:
        for copier in copiers:
            copier.terminate()
        for copier in copiers:
            copier.wait()
            copier.stdout.close()


def run_once(name: str, argv: list[str]) -> dict:
    """Run one command; return its JSON plus whole-command wall time and peak RSS, and for a
    system of CURVE_SYSTEMS its `curve`."""
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
    run = {
        "system": name,
        "rmse": result["rmse"],
        "train_seconds": train_s,
        "wall_seconds": wall,
        "ratings_per_second": result["ratings_per_second"],
        "peak_rss_bytes": peak,
        "n_train": result["n_train"],
        "result": result,
    }
    if name in CURVE_SYSTEMS:
        run["curve"] = _curve(name, result)
    return run


def _curve(name: str, result: dict) -> list[list[float]]:
    """[training seconds so far, test RMSE] after each epoch of one run. A peer prints its
    own; latentrec's sums `per_epoch` seconds on top of `setup_seconds`, what fit() spends
    before its first epoch (0 for a latentrec that does not report it)."""
    if SYSTEMS[name][0] != "latentrec":
        return result["curve"]
    seconds = result.get("setup_seconds") or 0.0
    curve = []
    for epoch in result["per_epoch"]:
        if epoch["rmse"] is None:
            raise SystemExit(f"{name}: epoch {epoch['epoch']} has no test RMSE, so no curve")
        seconds += epoch["seconds"]
        curve.append([seconds, epoch["rmse"]])
    return curve


def _data_label(case: str) -> str:
    if case not in DATA:
        return "movielens-small"
    n, _, _, distinct = DATA[case]
    return f"synthetic {n / 1e6:g}M" + (" distinct" if distinct else "")


def _system(label: str) -> str:
    return label.split(" @ ")[0]


def summarise(runs: list[dict], names: list[str], baselines: dict[str, str]) -> list[dict]:
    """Medians by system; `baselines` names the latentrec system a curve system's training
    time is set against (for the others, the latentrec system of their model on the data)."""
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
        default = f"latentrec {SYSTEMS[name][1]}{suffix} @ {data}"
        baseline = by_name.get(baselines.get(row["system"], default))
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


def time_to_target(runs: list[dict], labels: list[str], baseline: str) -> dict:
    """A curve case's systems against the target: the best final test RMSE of its peers.

    Each system's curve is the per-point median, over its runs, of seconds and of RMSE; its
    seconds to the target are those of its first point at or below it (None: never)."""
    rows = []
    for label in labels:
        curves = [r["curve"] for r in runs if r["system"] == label]
        if len({len(curve) for curve in curves}) != 1:
            raise SystemExit(f"{label}: runs with different numbers of curve points")
        curve = [
            [statistics.median(point[k] for point in points) for k in (0, 1)]
            for points in zip(*curves, strict=True)
        ]
        rows.append({"system": label, "runs": len(curves), "curve": curve})
    peers = [row for row in rows if SYSTEMS[_system(row["system"])][0] != "latentrec"]
    best = min(peers, key=lambda row: row["curve"][-1][1], default=None)
    target = None if best is None else best["curve"][-1][1]
    for row in rows:
        reached = [s for s, rmse in row["curve"] if target is not None and rmse <= target]
        row["seconds_to_target"] = reached[0] if reached else None
    latentrec_s = next((r["seconds_to_target"] for r in rows if r["system"] == baseline), None)
    for row in rows:
        row["vs_latentrec"] = None
        if row in peers and latentrec_s and row["seconds_to_target"] is not None:
            row["vs_latentrec"] = row["seconds_to_target"] / latentrec_s
    return {
        "target": target,
        "target_system": None if best is None else best["system"],
        "latentrec": baseline,
        "rows": rows,
    }


def curve_markdown(case: str, curve: dict) -> str:
    lines = [f"### {case}: time to accuracy", ""]
    if curve["target"] is None:
        return "\n".join([*lines, "No peer ran, so no target."])
    lines += [
        f"Target: test RMSE {curve['target']:.4f}, the best final RMSE among the peers "
        f"({_system(curve['target_system'])}).",
        "",
        "| system | runs | points | final RMSE | train s | s to target | s to target / latentrec |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in curve["rows"]:
        reached = row["seconds_to_target"]
        ratio = row["vs_latentrec"]
        ratio = "" if ratio is None else f"{ratio:.{1 if ratio >= 1 else 2}f}x"
        lines.append(
            f"| {row['system']} | {row['runs']} | {len(row['curve'])} "
            f"| {row['curve'][-1][1]:.4f} | {row['curve'][-1][0]:.2f} "
            f"| {'never' if reached is None else f'{reached:.2f}'} | {ratio} |"
        )
    lines += [
        "",
        "Test RMSE after each epoch against training seconds so far (evaluation left out; "
        "per-point medians over runs). latentrec: its epochs' seconds plus `setup_seconds` "
        "where reported, one one-cycle schedule over all its epochs; cornac MF: one epoch per "
        "fit, warm-started; Surprise SVD: separate fits of 1, 2, 5, 10 and 20 epochs; fastai: "
        "each epoch of one fit_one_cycle, validation excluded. s to target: the first point "
        "at or below the target.",
    ]
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
    baselines: dict[str, str] = {}  # a curve system's row -> its case's latentrec row
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            data = _data_label(case)
            # a system already run on the same data by an earlier case is not run again
            todo = [name for name in todo_by_case[case] if f"{name} @ {data}" not in names]
            if not todo:
                continue
            train_csv, test_csv = write_split(Path(tmp), case)
            names += [f"{name} @ {data}" for name in todo]
            if case in CURVE_CASES:
                baselines |= {f"{name} @ {data}": f"{CASES[case][0]} @ {data}" for name in todo}
            for round_no in range(1, args.repeats + 1):
                for name in todo:
                    argv_ = command(name, train_csv, test_csv, args.peers_python)
                    with busy_copy(args.busy_copy):
                        run = run_once(name, argv_)
                    run |= {"case": case, "round": round_no}
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
    rows = summarise(runs, names, baselines)
    table = markdown(rows)
    curves = {}
    for case in args.cases:
        if case in CURVE_CASES and todo_by_case[case]:
            data = _data_label(case)
            labels = [f"{name} @ {data}" for name in todo_by_case[case]]
            curves[case] = time_to_target(runs, labels, f"{CASES[case][0]} @ {data}")
            table += "\n\n" + curve_markdown(case, curves[case])
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
    copiers = f"{args.busy_copy} busy-copy process" + ("es" if args.busy_copy > 1 else "")
    if args.busy_copy:
        report["context"] += f"; {copiers} beside every run"
    report |= {
        "busy_copy": args.busy_copy,
        "summary": rows,
        "curves": curves,
        "table": table,
        "runs": runs,
    }
    header = "latentrec vs fastai, Surprise, cornac and myFM"
    if args.busy_copy:
        header += f", beside {copiers}"
    stamp = write(args.out, "compare", report, header, table)
    by_system = {row["system"]: row for row in rows}
    for case, todo in todo_by_case.items():
        data = _data_label(case)
        mine = [by_system[f"{name} @ {data}"] for name in todo]
        path = args.out / f"compare-{stamp}-{case}.png"
        if case in curves:
            path = plot_curves(curves[case], data, path)
            print(f"plot written to {path}", file=sys.stderr)
        elif mine:
            path = plot(mine, data, path)
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


def plot_curves(curve: dict, data: str, path: Path) -> Path:
    """Test RMSE against training seconds (log scale), a line per system, the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    peer_colours = iter(["tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown"])
    for row in curve["rows"]:
        name = _system(row["system"])
        colour = "tab:red" if name.startswith("latentrec") else next(peer_colours, None)
        seconds, rmse = zip(*row["curve"], strict=True)
        axes.plot(seconds, rmse, marker="o", markersize=4, color=colour, label=name)
    if curve["target"] is not None:
        axes.axhline(
            curve["target"],
            color="grey",
            linestyle="--",
            linewidth=1,
            label=f"target {curve['target']:.4f} (best peer's final RMSE)",
        )
    axes.set_xscale("log")
    axes.set_xlabel("training seconds so far (median, log scale)")
    axes.set_ylabel("test RMSE after the epoch (median)")
    source = "bundled MovieLens sample" if data == "movielens-small" else f"{data} ratings"
    axes.set_title(f"{source}, 90/10 split, seed 42: time to accuracy")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main()
