"""implicit's ALS or BPR on an interaction file: fit, then the top-k lists of given users.

Runs in the peers' environment (benchmarks/.peers, `bash benchmarks/setup_peers.sh`). Reads
`user,item` index pairs (a header line, then one pair a line), fits, and prints one JSON line:
the fit's seconds, and for each user of --users the k items implicit recommends (items the user
interacted with left out). The caller scores the lists with latentrec's own metric code.

    python implicit_ranking.py --train train.csv --users users.txt --model als --factors 32
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.sparse as sp
import threadpoolctl


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--users", help="user indexes to recommend for, one a line")
    p.add_argument("--model", choices=("als", "bpr"), default="als")
    p.add_argument("--factors", type=int, default=32)
    p.add_argument("--regularization", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--learning-rate", type=float, default=0.01)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-k", type=int, default=10)
    args = p.parse_args()
    # implicit's own advice: one BLAS thread, its own threads over rows
    threadpoolctl.threadpool_limits(1, "blas")
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    pairs = np.loadtxt(args.train, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    n_users, n_items = int(pairs[:, 0].max()) + 1, int(pairs[:, 1].max()) + 1
    matrix = sp.csr_matrix(
        (np.ones(len(pairs), dtype=np.float32), (pairs[:, 0], pairs[:, 1])),
        shape=(n_users, n_items),
    )
    matrix.data[:] = 1.0  # repeated pairs count once
    if args.model == "als":
        model = AlternatingLeastSquares(
            factors=args.factors,
            regularization=args.regularization,
            alpha=args.alpha,
            iterations=args.iterations,
            num_threads=args.threads,
            random_state=0,
        )
    else:
        model = BayesianPersonalizedRanking(
            factors=args.factors,
            learning_rate=args.learning_rate,
            regularization=args.regularization,
            iterations=args.iterations,
            num_threads=args.threads,
            random_state=0,
        )
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    lists = {}
    if args.users:
        users = np.loadtxt(args.users, dtype=np.int64, ndmin=1)
        ids, _ = model.recommend(users, matrix[users], N=args.k, filter_already_liked_items=True)
        lists = {int(u): [int(i) for i in row] for u, row in zip(users, ids, strict=True)}
    print(json.dumps({"fit_seconds": seconds, "lists": lists}))


if __name__ == "__main__":
    main()
