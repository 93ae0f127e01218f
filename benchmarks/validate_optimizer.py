"""Choose the dot model's optimiser and its settings by time to accuracy on validation rows.

Each data set's random 10% holdout (seed 42) is the test set `compare.py` reports on; it is
never read here. Its training rows are split again, random 10% (seed 7), into fit and
validation rows (on the bundled sample five such splits, seeds 7 to 11, averaged). Every
configuration of the grid (optimiser, lr, wd, l2, epochs) is fitted on the
fit rows and scored on the validation rows after every epoch, with the seconds its epochs took
so far. The data sets: the bundled sample (50 factors, the dot model's defaults otherwise) and
synthetic 5M ratings (100 factors, batch 4096, as `compare.py`'s scale cases; `5m-distinct`:
each pair once, the data of its time-to-accuracy case curve-5m).

For each optimiser the table gives its best configuration (lowest final validation RMSE) and
the seconds it needs to reach the other optimiser's best; the defaults of
`DotProductBias.optimizer_defaults` come from here.

    .venv/bin/python benchmarks/validate_optimizer.py [--cases bundled,5m-distinct]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from _report import machine, write

import latentrec

REPO = Path(__file__).resolve().parent.parent
DATA = {
    "bundled": ("movielens-small", {}),
    "1m": (
        "synthetic:ratings=1000000,users=20000,items=5000,seed=1",
        {"n_factors": 100, "batch_size": 4096},
    ),
    "5m": (
        "synthetic:ratings=5000000,users=100000,items=20000,seed=1",
        {"n_factors": 100, "batch_size": 4096},
    ),
    # each (user, item) pair once: the data of compare.py's time-to-accuracy case curve-5m
    "5m-distinct": (
        "synthetic:ratings=5000000,users=100000,items=20000,seed=1,distinct=1",
        {"n_factors": 100, "batch_size": 4096},
    ),
    # the data of compare.py's curve-25m
    "25m-distinct": (
        "synthetic:ratings=25000000,users=160000,items=60000,seed=1,distinct=1",
        {"n_factors": 100, "batch_size": 4096},
    ),
}
# validation splits of the training rows: five on the small sample, whose 9,000 validation
# ratings measure RMSE to about 0.005 each
SPLIT_SEEDS = {"bundled": [7, 8, 9, 10, 11], "1m": [7], "5m": [7], "5m-distinct": [7]}
SPLIT_SEEDS["25m-distinct"] = [7]
# --rule: the dot model's defaults, the penalty from the fit rows (`training.l2_for`)
RULE = {"adagrad": {"lr": [0.1], "wd": [0.0], "l2": [None], "epochs": [5]}}
GRIDS = {
    "bundled": {
        "adamw": {
            "lr": [0.003, 0.0075, 0.015],
            "wd": [0.1, 0.5, 1.0],
            "l2": [0.0],
            "epochs": [3, 5],
        },
        "adagrad": {
            "lr": [0.05, 0.1, 0.2],
            "wd": [0.0, 0.01],
            "l2": [0.0, 0.01, 0.02, 0.03, 0.05],
            "epochs": [3, 5, 8],
        },
    },
    "5m": {
        "adamw": {"lr": [0.0075, 0.015], "wd": [0.1, 0.5], "l2": [0.0], "epochs": [1, 3]},
        "adagrad": {
            "lr": [0.1, 0.2],
            "wd": [0.0, 0.01],
            "l2": [0.0, 0.02, 0.03],
            "epochs": [1, 3, 5],
        },
    },
}
GRIDS["1m"] = GRIDS["5m-distinct"] = GRIDS["5m"]
# at 25M, Adagrad with the penalty alone (AdamW's best at 5M is 0.015 behind it)
GRIDS["25m-distinct"] = {
    "adagrad": {"lr": [0.1, 0.15], "wd": [0.0], "l2": [0.02, 0.03], "epochs": [5, 7]}
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="bundled,5m-distinct")
    parser.add_argument(
        "--rule", action="store_true", help="only the defaults: l2 from the data (l2_for)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    report = {**machine(), "cases": {}}
    tables = []
    for case in args.cases.split(","):
        source, fixed = DATA[case]
        train, _ = latentrec.load_ratings(source).split(0.1, seed=42)  # test rows untouched
        splits = [train.split(0.1, seed=seed) for seed in SPLIT_SEEDS[case]]
        runs = []
        for optimizer, grid in (RULE if args.rule else GRIDS[case]).items():
            for values in itertools.product(*grid.values()):
                options = dict(zip(grid, values, strict=True))
                curves = []
                for fit_rows, validation in splits:
                    _, history = latentrec.fit(
                        (fit_rows, validation),
                        "dot",
                        optimizer=optimizer,
                        progress=False,
                        **fixed,
                        **options,
                    )
                    seconds = np.cumsum([epoch.seconds for epoch in history.epochs])
                    curves.append(
                        [
                            (s, epoch.test_rmse)
                            for s, epoch in zip(seconds, history.epochs, strict=True)
                        ]
                    )
                # the mean over the validation splits, epoch by epoch
                curve = [
                    (round(float(np.mean(s)), 3), round(float(np.mean(r)), 5))
                    for s, r in (zip(*points, strict=True) for points in zip(*curves, strict=True))
                ]
                runs.append({"optimizer": optimizer, **options, "curve": curve})
                print(f"{case} {optimizer} {options}: {curve}", flush=True)
        report["cases"][case] = runs
        tables.append(_table(case, runs))
    write(
        args.out,
        "validate_optimizer",
        report,
        "dot optimisers on validation rows",
        "\n".join(tables),
    )


def _l2(run: dict) -> str:
    return "from the data" if run["l2"] is None else f"{run['l2']:g}"


def _final(run: dict) -> float:
    return run["curve"][-1][1]


def _time_to(run: dict, target: float) -> float | None:
    """Seconds of training until the run's validation RMSE is at or below target."""
    return next((seconds for seconds, rmse in run["curve"] if rmse <= target), None)


def _table(case: str, runs: list[dict]) -> str:
    score = _final
    best = {}
    for run in runs:
        if run["optimizer"] not in best or score(run) < score(best[run["optimizer"]]):
            best[run["optimizer"]] = run
    lines = [
        f"## {case}: the best configuration of each optimiser",
        "",
        "| optimiser | lr | wd | l2 | epochs | validation RMSE | seconds | "
        "seconds to the other's best |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in best.items():
        others = [score(r) for n, r in best.items() if n != name]
        reach = [_time_to(run, target) for target in others]
        reached = "never" if None in reach or not reach else f"{max(reach):.2f}"
        point = run["curve"][-1]
        lines.append(
            f"| {name} | {run['lr']:g} | {run['wd']:g} | {_l2(run)} | {run['epochs']} | "
            f"{score(run):.4f} | "
            f"{point[0]:.2f} | {reached} |"
        )
    lines += [
        "",
        "Every run (final validation RMSE):",
        "",
        "| optimiser | lr | wd | l2 | epochs | RMSE after each epoch | seconds |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for run in sorted(runs, key=score):
        rmses = ", ".join(f"{rmse:.4f}" for _, rmse in run["curve"])
        lines.append(
            f"| {run['optimizer']} | {run['lr']:g} | {run['wd']:g} | {_l2(run)} | "
            f"{run['epochs']} | {rmses} | "
            f"{run['curve'][-1][0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
