"""Peer benchmark: Surprise SVD / SVD++ and cornac MF on a given train/test split.

Runs in the peers' environment (benchmarks/.peers). Trains on all rows of --train, predicts
--test (unknown users or items fall back to each library's global mean), and prints one JSON
object as the last line of stdout: rmse, fit_seconds, ratings_per_second, peak_rss_bytes.

`--curve` adds `curve`, the test RMSE along the training as [fit seconds, rmse] points.
cornac MF trains one epoch per fit, each warm-started from the previous epoch's U, V, Bu and
Bi (its SGD has a constant learning rate and visits the ratings in the same order every
epoch, so this is the same as one fit of --epochs), the seconds summed over the fits and each
evaluation left out of them. Surprise cannot continue a fit: SVD and SVD++ fit afresh for 1,
2, 5, 10 and 20 epochs (up to --epochs, which is always last), each point that fit's own
seconds; with the same random_state a k-epoch fit is the first k epochs of a longer one.
`rmse` and `fit_seconds` stay the final point's.

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
# the epochs of Surprise's separate fits on a curve (those below --epochs, then --epochs)
SURPRISE_CURVE_EPOCHS = (1, 2, 5, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--factors", type=int, default=None, help="default: the library's")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--curve", action="store_true", help="also report test RMSE along the training"
    )
    args = parser.parse_args()
    train = pd.read_csv(args.train, dtype={"user": np.int64, "item": np.int64})
    test = pd.read_csv(args.test, dtype={"user": np.int64, "item": np.int64})
    truth = test["rating"].to_numpy(np.float64)
    fit = _surprise if args.system.startswith("surprise") else _cornac
    curve, version, trained = fit(args, train, test, truth)
    seconds, rmse = curve[-1]
    result = {
        "system": args.system,
        "epochs": args.epochs,
        "factors": args.factors,
        "rmse": rmse,
        "fit_seconds": seconds,
        "ratings_per_second": trained * args.epochs / seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        # the rows it trained on: cornac keeps one rating per (user, item) pair
        "n_train": trained,
        "n_test": len(test),
        "version": version,
    }
    if args.curve:
        result["curve"] = curve
    print(json.dumps(result))


def _rmse(predictions: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predictions - truth) ** 2)))


def _surprise(args, train: pd.DataFrame, test: pd.DataFrame, truth: np.ndarray):
    """[[seconds, rmse]] of one fit of --epochs, or with --curve of a fit per curve length;
    the library's version and the ratings it trained on."""
    import surprise

    reader = surprise.Reader(rating_scale=(0.5, 5.0))
    data = surprise.Dataset.load_from_df(train[["user", "item", "rating"]], reader)
    trainset = data.build_full_trainset()
    lengths = [args.epochs]
    if args.curve:
        lengths = [n for n in SURPRISE_CURVE_EPOCHS if n < args.epochs] + lengths
    curve = []
    for epochs in lengths:
        options = {"n_epochs": epochs, "random_state": args.seed}
        if args.factors:
            options["n_factors"] = args.factors
        algo = (surprise.SVD if args.system == "surprise-svd" else surprise.SVDpp)(**options)
        started = time.perf_counter()
        algo.fit(trainset)
        seconds = time.perf_counter() - started
        predictions = np.array(
            [algo.predict(u, i).est for u, i in zip(test["user"], test["item"], strict=True)]
        )
        curve.append([seconds, _rmse(predictions, truth)])
    return curve, surprise.__version__, trainset.n_ratings


def _cornac(args, train: pd.DataFrame, test: pd.DataFrame, truth: np.ndarray):
    """[[seconds, rmse]] of one fit of --epochs, or with --curve one point per epoch; the
    library's version and the ratings it trained on."""
    import cornac

    triples = list(zip(train["user"], train["item"], train["rating"], strict=True))
    dataset = cornac.data.Dataset.from_uir(triples, seed=args.seed)
    fits = [args.epochs] if not args.curve else [1] * args.epochs
    curve, seconds, params = [], 0.0, None
    for epochs in fits:
        # a given seed makes cornac train on one thread, as every run here does
        model = cornac.models.MF(
            k=args.factors or 50,
            max_iter=epochs,
            use_bias=True,
            early_stop=False,
            verbose=False,
            init_params=params,
            seed=args.seed,
        )
        started = time.perf_counter()
        model.fit(dataset)
        seconds += time.perf_counter() - started
        # fit_sgd updates these arrays in place; the next fit starts from them
        params = {
            "U": model.u_factors,
            "V": model.i_factors,
            "Bu": model.u_biases,
            "Bi": model.i_biases,
        }
        curve.append([seconds, _rmse(_cornac_predict(model, dataset, test), truth)])
    return curve, cornac.__version__, dataset.num_ratings


def _cornac_predict(model, dataset, test: pd.DataFrame) -> np.ndarray:
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
    return np.clip(predictions, 0.5, 5.0)


if __name__ == "__main__":
    main()
