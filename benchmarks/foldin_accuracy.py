"""Fold-in accuracy: new users folded in from 80% of their ratings versus trained users.

On the bundled data, 50 users (seed 42) are held out of training entirely; each is folded in
from a random 80% of their ratings and predicted on the other 20%. Another 50 users stay in
training with a random 20% of their ratings held out. The two RMSEs on those 20% should be
close: fold-in should cost little accuracy against full training.

    .venv/bin/python benchmarks/foldin_accuracy.py [--model dot|nn] [--seeds 42,43,44]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np

import latentrec
from latentrec.data import Split
from latentrec.metrics import rmse


def run(model: str, seed: int) -> dict[str, float]:
    ratings = latentrec.load_ratings("movielens-small")
    rng = np.random.default_rng(seed)
    users = rng.permutation(ratings.n_users)
    new_users, trained_users = users[:50], users[50:100]
    is_new = np.isin(ratings.user_index, new_users)
    held = np.zeros(len(ratings), dtype=bool)
    for group in (new_users, trained_users):
        for user in group:
            rows = np.flatnonzero(ratings.user_index == user)
            held[rng.permutation(rows)[: max(1, round(0.2 * len(rows)))]] = True
    train_rows = ~is_new & ~held
    split = Split.from_parts(
        ratings.take(np.flatnonzero(train_rows)), ratings.take(np.flatnonzero(held))
    )
    net, _ = latentrec.fit(split.train, model, progress=False)
    recommender = latentrec.Recommender(net, split.train)
    truth_new, guess_new, truth_old, guess_old, seconds = [], [], [], [], []
    for user in new_users:
        rows = np.flatnonzero(ratings.user_index == user)
        known = {
            ratings.items.ids[i]: float(r)
            for i, r in zip(
                ratings.item_index[rows][~held[rows]],
                ratings.rating[rows][~held[rows]],
                strict=True,
            )
        }
        target = rows[held[rows]]
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # items only these users rated are unknown
            folded = recommender.fold_in(known)
        seconds.append(time.perf_counter() - started)
        items = ratings.items.ids[ratings.item_index[target]]
        mask = recommender.items.indexes(items) >= 0
        guess_new += list(recommender.predict(folded, items[mask]))
        truth_new += list(ratings.rating[target][mask])
    for user in trained_users:
        rows = np.flatnonzero((ratings.user_index == user) & held)
        items = ratings.items.ids[ratings.item_index[rows]]
        mask = recommender.items.indexes(items) >= 0
        guess_old += list(recommender.predict(ratings.users.ids[user], items[mask]))
        truth_old += list(ratings.rating[rows][mask])
    return {
        "fold_in_rmse": rmse(guess_new, truth_new),
        "trained_rmse": rmse(guess_old, truth_old),
        "fold_in_ms": statistics.median(seconds) * 1000,
        "n_new": len(truth_new),
        "n_trained": len(truth_old),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dot", choices=("dot", "nn"))
    parser.add_argument("--seeds", default="42")
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        result = run(args.model, seed)
        ratio = result["fold_in_rmse"] / result["trained_rmse"]
        print(
            f"{args.model} seed {seed}: fold-in RMSE {result['fold_in_rmse']:.4f} on "
            f"{result['n_new']} ratings; trained users {result['trained_rmse']:.4f} on "
            f"{result['n_trained']}; ratio {ratio:.3f}; fold-in median "
            f"{result['fold_in_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
