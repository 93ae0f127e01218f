"""Ranking quality on the bundled data: precision, recall and NDCG at 10.

Per-user 20% holdout (seed 42); relevant items are each user's held-out items; candidates are
all training items minus the user's training items. Systems: the dot and nn models with their
defaults (trained for rating prediction), the dot model trained for ranking (sampled unrated
items as negatives), and the most-popular baseline, all scored by the same code.

    .venv/bin/python benchmarks/ranking.py
"""

from __future__ import annotations

import time

import latentrec
from latentrec.recommend import evaluate_ranking

SYSTEMS = {
    "dot (defaults)": ("dot", {}),
    "nn (defaults)": ("nn", {}),
    "dot, ranking (--negatives 8 --epochs 20 --lr 0.01 --wd 0.1)": (
        "dot",
        {"negatives": 8, "epochs": 20, "lr": 0.01, "wd": 0.1},
    ),
}


def main() -> None:
    ratings = latentrec.load_ratings("movielens-small")
    train, test = ratings.split(0.2, seed=42, by="user")
    print("| system | precision@10 | recall@10 | NDCG@10 | coverage@10 | test RMSE | train s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    recommender = None
    for name, (model, options) in SYSTEMS.items():
        started = time.perf_counter()
        net, history = latentrec.fit((train, test), model, progress=False, **options)
        seconds = time.perf_counter() - started
        recommender = latentrec.Recommender(net, train)
        row = evaluate_ranking(recommender, test, 10)
        print(
            f"| {name} | {row['precision@10']:.4f} | {row['recall@10']:.4f} | "
            f"{row['ndcg@10']:.4f} | {row['coverage@10']:.4f} | {history.rmse:.4f} | "
            f"{seconds:.1f} |"
        )
    row = evaluate_ranking(recommender, test, 10, method="popular")
    print(
        f"| most popular | {row['precision@10']:.4f} | {row['recall@10']:.4f} | "
        f"{row['ndcg@10']:.4f} | {row['coverage@10']:.4f} | | |"
    )


if __name__ == "__main__":
    main()
