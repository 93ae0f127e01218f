"""Recommendation speed: one user, a batch of 100,000 users, and a fold-in.

    .venv/bin/python benchmarks/recommend_speed.py [--repeats 200] [--users 100000 --items 20000]

- `recommend(user, k=10)` on the dot model trained on the bundled data: median of --repeats.
- `recommend_batch` for every user of a synthetic set (default 100,000 users x 20,000 items;
  the model is trained one epoch on 2,000,000 synthetic ratings): median of 3.
- `fold_in` of 20 ratings (dot model, bundled data): median of --repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import latentrec


def _median_seconds(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    args = parser.parse_args()

    ratings = latentrec.load_ratings("movielens-small")
    net, _ = latentrec.fit(ratings, "dot", progress=False)
    recommender = latentrec.Recommender(net, ratings)
    user_ids = recommender.users.ids
    picks = iter(np.random.default_rng(0).choice(user_ids, args.repeats * 2))
    single = _median_seconds(lambda: recommender.recommend(next(picks), k=10), args.repeats)
    print(f"recommend(user, k=10), bundled dot model: median {single * 1000:.3f} ms")

    rng = np.random.default_rng(1)
    items = recommender.items.ids
    samples = [
        dict(
            zip(
                rng.choice(items, 20, replace=False).tolist(),
                rng.choice([1.0, 2.5, 3.0, 4.0, 5.0], 20).tolist(),
                strict=True,
            )
        )
        for _ in range(args.repeats)
    ]
    folds = iter(samples)
    fold = _median_seconds(lambda: recommender.fold_in(next(folds)), args.repeats)
    print(f"fold_in of 20 ratings, dot model: median {fold * 1000:.3f} ms")

    spec = f"synthetic:ratings=2000000,users={args.users},items={args.items},seed=1"
    big = latentrec.load_ratings(spec)
    big_net, _ = latentrec.fit(big, "dot", epochs=1, batch_size=4096, progress=False)
    big_recommender = latentrec.Recommender(big_net, big)
    everyone = np.resize(big_recommender.users.ids, args.users)  # repeats: 100,000 asked
    batch = _median_seconds(lambda: big_recommender.recommend_batch(everyone, k=10), 3)
    print(
        f"recommend_batch for {len(everyone):,} users over {big.n_items:,} items, k=10: "
        f"median {batch:.2f} s ({len(everyone) / batch:,.0f} users/s)"
    )


if __name__ == "__main__":
    main()
