"""Top-N lists on the bundled data: every latentrec model and its peers on the same rows.

Per-user 20% holdout (seed 42); relevant items are each user's held-out items; candidates are
all training items minus the user's training items. Every system's top-10 lists are scored by
the same code (`latentrec.metrics.ranking_metrics`): latentrec's ranking models (`ease`, `als`)
and rating models (`dot` with its defaults, and trained for ranking with sampled negatives),
the most-popular baseline, and implicit's ALS and BPR (run in the peers' environment,
benchmarks/.peers, when it has implicit). Fit seconds are medians over --repeats rounds, the
systems alternating within each round.

    .venv/bin/python benchmarks/ranking.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import machine, write

import latentrec
from latentrec.metrics import ranking_metrics
from latentrec.recommend import popular_batch

REPO = Path(__file__).resolve().parent.parent
PEERS_PYTHON = REPO / "benchmarks" / ".peers" / "bin" / "python"
IMPLICIT_SCRIPT = REPO / "benchmarks" / "peers" / "implicit_ranking.py"
K = 10

# name -> ("latentrec", model, options) or ("implicit", arguments)
SYSTEMS: dict[str, tuple] = {
    "latentrec ease (defaults)": ("latentrec", "ease", {}),
    # the EASE anchor's configuration (λ 200, the interactions alone), and the defaults before
    # the sessions (l2 400, item features x 3) and before the sessions' runs
    "latentrec ease (l2 200, no item features, no sessions)": (
        "latentrec",
        "ease",
        {"l2": 200.0, "feature_weight": 0.0, "session_weight": 0.0},
    ),
    "latentrec ease (sessions without runs)": ("latentrec", "ease", {"session_run": 0}),
    "latentrec ease (l2 400, feature weight 3, no sessions)": (
        "latentrec",
        "ease",
        {"l2": 400.0, "feature_weight": 3.0, "session_weight": 0.0},
    ),
    "latentrec als (defaults)": ("latentrec", "als", {}),
    "latentrec als (32 factors, l2 0.01, alpha 1)": (
        "latentrec",
        "als",
        {"n_factors": 32, "l2": 0.01, "alpha": 1.0},
    ),
    "implicit ALS (32 factors, reg 0.01, alpha 1, 15 iterations)": (
        "implicit",
        ["--model", "als", "--factors", "32", "--regularization", "0.01", "--alpha", "1"],
    ),
    "implicit BPR (128 factors, lr 0.01, 200 iterations)": (
        "implicit",
        ["--model", "bpr", "--factors", "128", "--iterations", "200"],
    ),
    "latentrec dot (--negatives 8 --epochs 20 --lr 0.01 --wd 0.1 --optimizer adamw)": (
        "latentrec",
        "dot",
        {"negatives": 8, "epochs": 20, "lr": 0.01, "wd": 0.1, "optimizer": "adamw"},
    ),
    "latentrec dot (defaults, rating prediction)": ("latentrec", "dot", {}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--systems",
        default="",
        help="comma-separated: run only the systems whose names contain one of these "
        "(e.g. 'als' for latentrec's and implicit's ALS); default: all",
    )
    p.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    return p.parse_args(argv)


def latentrec_lists(model: str, options: dict, train, users) -> tuple[list, float]:
    started = time.perf_counter()
    net, _ = latentrec.fit(train, model, progress=False, **options)
    seconds = time.perf_counter() - started
    rec = latentrec.Recommender(net, train)
    lists = [
        [rec.items.index_of(r.item_id) for r in recs]
        for recs in rec.recommend_batch([rec.users.ids[u] for u in users], K)
    ]
    return lists, seconds


def implicit_lists(python: Path, arguments: list[str], folder: Path, users) -> tuple[list, float]:
    command = [str(python), str(IMPLICIT_SCRIPT), "--train", str(folder / "train.csv")]
    command += ["--users", str(folder / "users.txt"), "-k", str(K), "--threads", "2"]
    done = subprocess.run([*command, *arguments], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"implicit failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return [result["lists"][str(u)] for u in users], result["fit_seconds"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ratings = latentrec.load_ratings("movielens-small")
    train, test = ratings.split(0.2, seed=42, by="user")
    known = (test.user_index >= 0) & (test.item_index >= 0)
    users = np.unique(test.user_index[known])
    relevant: dict[int, set[int]] = {int(u): set() for u in users}
    for user, item in zip(test.user_index[known], test.item_index[known], strict=True):
        relevant[int(user)].add(int(item))
    wanted = [word.strip() for word in args.systems.split(",") if word.strip()]
    systems = {
        k: v
        for k, v in SYSTEMS.items()
        if not wanted or any(w.lower() in k.lower() for w in wanted)
    }
    if not systems:
        raise SystemExit(f"--systems {args.systems!r} names none of: {', '.join(SYSTEMS)}")
    if not args.peers_python.exists():
        print(f"no {args.peers_python}: implicit's rows are left out", file=sys.stderr)
        systems = {k: v for k, v in systems.items() if v[0] != "implicit"}
    scores: dict[str, dict] = {}
    seconds: dict[str, list[float]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as folder:
        pairs = np.c_[train.user_index, train.item_index]
        np.savetxt(Path(folder) / "train.csv", pairs, fmt="%d", delimiter=",", header="u,i")
        np.savetxt(Path(folder) / "users.txt", users, fmt="%d")
        for round_no in range(args.repeats):
            for name, system in systems.items():
                if system[0] == "latentrec":
                    lists, took = latentrec_lists(system[1], system[2], train, users)
                else:
                    lists, took = implicit_lists(args.peers_python, system[1], Path(folder), users)
                seconds[name].append(took)
                scores[name] = ranking_metrics(
                    lists, [relevant[int(u)] for u in users], K, train.n_items
                )
                print(
                    f"[{round_no + 1}] {name}: ndcg@10 {scores[name]['ndcg@10']:.4f}, {took:.2f} s",
                    file=sys.stderr,
                )
    recommender = latentrec.Recommender(latentrec.fit(train, "ease", progress=False)[0], train)
    popular = popular_batch(recommender, [train.users.ids[u] for u in users], K)
    scores["most popular"] = ranking_metrics(
        popular, [relevant[int(u)] for u in users], K, train.n_items
    )
    lines = [
        "| system | P@10 | NDCG@10 | recall@10 | coverage@10 | fit s (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in sorted(scores.items(), key=lambda item: -item[1]["ndcg@10"]):
        took = f"{statistics.median(seconds[name]):.2f}" if name in seconds else "-"
        lines.append(
            f"| {name} | {row['precision@10']:.4f} | {row['ndcg@10']:.4f} | "
            f"{row['recall@10']:.4f} | {row['coverage@10']:.4f} | {took} |"
        )
    table = "\n".join(lines)
    print(table)
    report = machine() | {"scores": scores, "seconds": seconds, "table": table}
    report["context"] = (
        f"movielens-small, per-user 20% holdout (seed 42), {len(users)} test users, "
        f"{args.repeats} rounds, 2 threads each"
    )
    write(args.out, "ranking", report, "top-10 lists on the bundled data", table)


if __name__ == "__main__":
    main()
