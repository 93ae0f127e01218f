"""Choose the bayes model's defaults on validation data carved out of the training rows.

The bundled data's random 10% holdout (seed 42) is the test set `compare.py` reports on; it is
never read here. Its training rows are split again, random 10% (seed 7), into fit and
validation rows; each configuration is fitted on the fit rows (seed 0) and scored by RMSE on
the validation rows. The best configuration is what `BayesConfig`'s defaults should say.

First the signals, at the sampling defaults and over two seeds: implicit signals and item
features each on and off, and the width of the release-year features (`RELEASE_YEARS` in
latentrec.data); then the sampling grid with the best of them.

    .venv/bin/python benchmarks/validate_bayes.py
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from _report import machine, write

import latentrec
import latentrec.data

REPO = Path(__file__).resolve().parent.parent
SIGNALS = {"implicit_signals": [True, False], "item_features": [True, False]}
RELEASE_YEARS = [1, 2, 5, 10, 20]
SEEDS = (0, 1)
GRID = {
    "n_factors": [10, 16],
    "samples": [100, 200],
    "burn_in": [2, 10, 50],
    "kept": [30, 1000],  # 1000: every sample after the burn-in
}


def main() -> None:
    ratings = latentrec.load_ratings("movielens-small")
    train, _ = ratings.split(0.1, seed=42)  # the test rows stay untouched
    fit_rows, validation = train.split(0.1, seed=7)
    signals = []
    for values in itertools.product(*SIGNALS.values()):
        options = dict(zip(SIGNALS, values, strict=True))
        for years in RELEASE_YEARS if options["item_features"] else [None]:
            latentrec.data.RELEASE_YEARS = years or latentrec.data.RELEASE_YEARS
            rmse = [
                latentrec.fit((fit_rows, validation), "bayes", progress=False, seed=seed,
                              **options)[1].epochs[-1].test_rmse
                for seed in SEEDS
            ]  # fmt: skip
            signals.append({**options, "release_years": years, "validation_rmse": rmse})
            print(f"{options}, release years {years}: validation RMSE {rmse}", flush=True)
    chosen = min(signals, key=lambda run: sum(run["validation_rmse"]))
    latentrec.data.RELEASE_YEARS = chosen["release_years"] or latentrec.data.RELEASE_YEARS
    runs = []
    for values in itertools.product(*GRID.values()):
        options = dict(zip(GRID, values, strict=True))
        if options["burn_in"] >= options["samples"]:
            continue
        started = time.perf_counter()
        picked = {k: chosen[k] for k in SIGNALS}  # the first stage's best
        net, history = latentrec.fit(
            (fit_rows, validation), "bayes", progress=False, seed=0, **options, **picked
        )
        options["kept"] = net.config.kept  # at most the samples after the burn-in
        seconds = time.perf_counter() - started
        rmse = history.epochs[-1].test_rmse
        runs.append({**options, "validation_rmse": rmse, "seconds": seconds})
        print(f"{options}: validation RMSE {rmse:.4f} ({seconds:.1f} s)", flush=True)
    best = min(runs, key=lambda run: run["validation_rmse"])
    lines = [
        "| implicit signals | item features | release years | validation RMSE (seeds 0, 1) |",
        "|---|---|---:|---:|",
        *(
            f"| {r['implicit_signals']} | {r['item_features']} | {r['release_years'] or '-'} | "
            + ", ".join(f"{v:.4f}" for v in r["validation_rmse"])
            + " |"
            for r in sorted(signals, key=lambda run: sum(run["validation_rmse"]))
        ),
        "",
        "| factors | samples | burn-in | kept | validation RMSE | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['n_factors']} | {r['samples']} | {r['burn_in']} | {r['kept']} | "
            f"{r['validation_rmse']:.4f} | {r['seconds']:.1f} |"
            for r in sorted(runs, key=lambda run: run["validation_rmse"])
        ),
        "",
        f"Best: {', '.join(f'{k} {best[k]}' for k in GRID)} "
        f"(validation RMSE {best['validation_rmse']:.4f}).",
    ]
    write(
        REPO / "benchmarks" / "results",
        "validate_bayes",
        {**machine(), "signals": signals, "runs": runs, "best": best, "signals_chosen": chosen},
        "bayes defaults on validation rows (bundled: random 10% of the training rows, seed 7)",
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
