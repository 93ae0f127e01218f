"""Choose the ranking models' defaults on validation data carved out of the training rows.

The bundled data's per-user 20% holdout (seed 42) is the test set `ranking.py` reports on; it is
never read here. Its training rows are split again, per user 20% (seed 7), into fit and
validation rows; each configuration is fitted on the fit rows and scored by NDCG@10 on the
validation rows (relevant = each user's validation items; candidates = fit items the user has
not rated). The best configuration per model is what its config's defaults should say.

    .venv/bin/python benchmarks/validate_defaults.py
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from _report import machine, write

import latentrec
from latentrec.recommend import evaluate_ranking

REPO = Path(__file__).resolve().parent.parent
GRIDS = {
    "ease": {
        "l2": [400.0, 600.0, 1000.0],
        "feature_weight": [0.0, 2.0, 3.0],
        "session_weight": [0.0, 1.0, 1.5],
        "session_run": [0, 5, 10, 20],
    },
    "als": {
        "n_factors": [32, 64, 128],
        "l2": [0.01, 0.1, 1.0, 10.0],
        "alpha": [1.0, 5.0, 20.0],
    },
}


def main() -> None:
    ratings = latentrec.load_ratings("movielens-small")
    train, _ = ratings.split(0.2, seed=42, by="user")  # the test rows stay untouched
    fit_rows, validation = train.split(0.2, seed=7, by="user")
    runs = []
    for model, grid in GRIDS.items():
        names = list(grid)
        for values in itertools.product(*grid.values()):
            options = dict(zip(names, values, strict=True))
            started = time.perf_counter()
            net, _ = latentrec.fit(fit_rows, model, progress=False, **options)
            seconds = time.perf_counter() - started
            scores = evaluate_ranking(latentrec.Recommender(net, fit_rows), validation, 10)
            runs.append({"model": model, **options, "seconds": seconds, **scores})
            print(model, options, f"ndcg@10 {scores['ndcg@10']:.4f}", flush=True)
    lines = [
        "| model | configuration | validation NDCG@10 | P@10 | fit s |",
        "|---|---|---:|---:|---:|",
    ]
    best = {}
    for run in sorted(runs, key=lambda r: (r["model"], -r["ndcg@10"])):
        best.setdefault(run["model"], run)
    for model, run in best.items():
        chosen = ", ".join(f"{k} {run[k]:g}" for k in GRIDS[model])
        lines.append(
            f"| {model} | {chosen} | {run['ndcg@10']:.4f} | {run['precision@10']:.4f} "
            f"| {run['seconds']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    report = machine() | {"runs": runs, "best": best, "table": table}
    report["context"] = "movielens-small, training rows of the per-user 20% split (seed 42)"
    write(REPO / "benchmarks" / "results", "validate_defaults", report, "ranking defaults", table)


if __name__ == "__main__":
    main()
