"""Peer benchmark: myFM's Bayesian factorization machine (Gibbs sampling) on a train/test split.

Runs in the peers' environment (benchmarks/.peers). Features per rating: the one-hot user and
the one-hot item and, unless --plain, the "implicit" features of SVD++ and its flipped twin:
the items the user rated and the users who rated the item, each entry 1/sqrt(count), built
from the training pairs only; with --item-features (a CSV of item,feature rows, as compare.py
writes from latentrec's `item_features`) each item's features too, entries 1/sqrt(count).
They are given as myFM's relation blocks (one row per distinct user or item, an index per
rating), as myFM's MovieLens examples do, so a sweep costs the distinct rows rather than every
rating's copy of them; each feature group (user, user's items, item, item's users, item's
features) gets its own prior. Trains on all rows of --train and predicts --test (a user or item
unseen in training has an empty row); predictions are clipped to the
training ratings' range. The last line of stdout is a JSON object: rmse, fit_seconds (the Gibbs
sampler alone), feature_seconds, ratings_per_second, peak_rss_bytes.

    benchmarks/.peers/bin/python benchmarks/peers/myfm_regression.py \\
        --train train.csv --test test.csv [--plain] [--item-features items.csv]
        [--rank 10 --n-iter 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

os.environ.setdefault("TQDM_DISABLE", "1")  # myFM's progress bar; tqdm reads it on import


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True, help="CSV with header user,item,rating")
    p.add_argument("--test", required=True, help="CSV with header user,item,rating")
    p.add_argument("--plain", action="store_true", help="one-hot user and item only")
    p.add_argument("--item-features", help="CSV with header item,feature: an item-side group")
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--n-iter", type=int, default=200, help="Gibbs samples drawn")
    p.add_argument(
        "--n-kept", type=int, default=None, help="samples averaged (default: all of --n-iter)"
    )
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import myfm

    train = pd.read_csv(args.train, dtype={"user": np.int64, "item": np.int64})
    test = pd.read_csv(args.test, dtype={"user": np.int64, "item": np.int64})
    started = time.perf_counter()
    users = pd.Index(np.unique(train["user"]))
    items = pd.Index(np.unique(train["item"]))
    train_users, train_items = users.get_indexer(train["user"]), items.get_indexer(train["item"])
    rated = sp.csr_matrix(
        (np.ones(len(train)), (train_users, train_items)), shape=(len(users), len(items))
    )
    rated.sum_duplicates()
    rated.data[:] = 1.0
    user_side = [_one_hot(len(users))]
    item_side = [_one_hot(len(items))]
    if not args.plain:
        user_side.append(_rows_normalised(rated))
        item_side.append(_rows_normalised(rated.T.tocsr()))
    if args.item_features:
        named = pd.read_csv(args.item_features, dtype={"item": np.int64, "feature": str})
        named = named[items.get_indexer(named["item"]) >= 0]
        names = pd.Index(np.unique(named["feature"]))
        features = sp.csr_matrix(
            (
                np.ones(len(named)),
                (items.get_indexer(named["item"]), names.get_indexer(named["feature"])),
            ),
            shape=(len(items), len(names)),
        )
        item_side.append(_rows_normalised(features))
    user_rows = sp.hstack(user_side, format="csr")
    item_rows = sp.hstack(item_side, format="csr")
    groups = [block.shape[1] for block in (*user_side, *item_side)]
    train_blocks = _blocks(user_rows, item_rows, train_users, train_items)
    test_blocks = _blocks(
        user_rows,
        item_rows,
        users.get_indexer(test["user"]),
        items.get_indexer(test["item"]),
    )
    feature_seconds = time.perf_counter() - started

    ratings = train["rating"].to_numpy(np.float64)
    model = myfm.MyFMRegressor(rank=args.rank, random_seed=args.seed)
    started = time.perf_counter()
    model.fit(
        None,
        ratings,
        X_rel=train_blocks,
        n_iter=args.n_iter,
        n_kept_samples=args.n_iter if args.n_kept is None else args.n_kept,
        group_shapes=groups,
    )
    seconds = time.perf_counter() - started
    predictions = np.clip(model.predict(None, test_blocks), ratings.min(), ratings.max())
    truth = test["rating"].to_numpy(np.float64)
    result = {
        "system": "myfm-plain" if args.plain else "myfm-implicit",
        "item_features": bool(args.item_features),
        "rank": args.rank,
        "n_iter": args.n_iter,
        "n_kept_samples": args.n_iter if args.n_kept is None else args.n_kept,
        "rmse": float(np.sqrt(np.mean((predictions - truth) ** 2))),
        "fit_seconds": seconds,
        "feature_seconds": feature_seconds,
        "ratings_per_second": len(train) * args.n_iter / seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n_train": len(train),
        "n_test": len(test),
        "version": myfm.__version__,
    }
    print(json.dumps(result))


def _one_hot(n: int) -> sp.csr_matrix:
    return sp.identity(n, dtype=np.float64, format="csr")


def _rows_normalised(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Each row's entries set to 1/sqrt(its count)."""
    counts = np.diff(matrix.indptr)
    scaled = matrix.astype(np.float64)
    scaled.data = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1)), counts)
    return scaled


def _blocks(user_rows, item_rows, user_index: np.ndarray, item_index: np.ndarray) -> list:
    """The user and item relation blocks of ratings with these indices (-1: unseen in training,
    given an all-zero row appended after the known ones)."""
    import myfm

    blocks = []
    for rows, index in ((user_rows, user_index), (item_rows, item_index)):
        empty = sp.csr_matrix((1, rows.shape[1]), dtype=np.float64)
        table = sp.vstack([rows, empty], format="csr")
        blocks.append(myfm.RelationBlock(np.where(index < 0, rows.shape[0], index), table))
    return blocks


if __name__ == "__main__":
    main()
