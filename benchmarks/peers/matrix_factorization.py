"""Peer benchmark: Surprise SVD / SVD++ and cornac MF on a given train/test split.

Runs in the peers' environment (benchmarks/.peers). Trains on all rows of --train, predicts
--test (unknown users or items fall back to each library's global mean), and prints one JSON
object as the last line of stdout: rmse, fit_seconds, ratings_per_second, peak_rss_bytes.

    benchmarks/.peers/bin/python benchmarks/peers/matrix_factorization.py \\
        --system surprise-svd --train train.csv --test test.csv [--epochs 20 --factors 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import pandas as pd

SYSTEMS = ("surprise-svd", "surprise-svdpp", "cornac-mf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--factors", type=int, default=None, help="default: the library's")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    train = pd.read_csv(args.train, dtype={"user": np.int64, "item": np.int64})
    test = pd.read_csv(args.test, dtype={"user": np.int64, "item": np.int64})
    fit = _surprise if args.system.startswith("surprise") else _cornac
    seconds, predictions, version = fit(args, train, test)
    truth = test["rating"].to_numpy(np.float64)
    result = {
        "system": args.system,
        "epochs": args.epochs,
        "factors": args.factors,
        "rmse": float(np.sqrt(np.mean((predictions - truth) ** 2))),
        "fit_seconds": seconds,
        "ratings_per_second": len(train) * args.epochs / seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "n_train": len(train),
        "n_test": len(test),
        "version": version,
    }
    print(json.dumps(result))


def _surprise(args, train: pd.DataFrame, test: pd.DataFrame):
    import surprise

    reader = surprise.Reader(rating_scale=(0.5, 5.0))
    data = surprise.Dataset.load_from_df(train[["user", "item", "rating"]], reader)
    trainset = data.build_full_trainset()
    options = {"n_epochs": args.epochs, "random_state": args.seed}
    if args.factors:
        options["n_factors"] = args.factors
    algo = (surprise.SVD if args.system == "surprise-svd" else surprise.SVDpp)(**options)
    started = time.perf_counter()
    algo.fit(trainset)
    seconds = time.perf_counter() - started
    predictions = np.array(
        [algo.predict(u, i).est for u, i in zip(test["user"], test["item"], strict=True)]
    )
    return seconds, predictions, surprise.__version__


def _cornac(args, train: pd.DataFrame, test: pd.DataFrame):
    import cornac

    triples = list(zip(train["user"], train["item"], train["rating"], strict=True))
    dataset = cornac.data.Dataset.from_uir(triples, seed=args.seed)
    model = cornac.models.MF(
        k=args.factors or 50,
        max_iter=args.epochs,
        use_bias=True,
        early_stop=False,
        verbose=False,
        seed=args.seed,
    )
    started = time.perf_counter()
    model.fit(dataset)
    seconds = time.perf_counter() - started
    users = test["user"].map(dataset.uid_map).to_numpy(np.float64)
    items = test["item"].map(dataset.iid_map).to_numpy(np.float64)
    known = ~np.isnan(users) & ~np.isnan(items)
    u, i = users[known].astype(np.int64), items[known].astype(np.int64)
    predictions = np.full(len(test), dataset.global_mean)
    predictions[known] = (
        model.global_mean
        + model.u_biases[u]
        + model.i_biases[i]
        + np.einsum("ij,ij->i", model.u_factors[u], model.i_factors[i])
    )
    return seconds, np.clip(predictions, 0.5, 5.0), cornac.__version__


if __name__ == "__main__":
    main()
