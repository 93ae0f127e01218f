"""How long each epoch's shuffle takes: latentrec's parallel permutation vs torch.randperm.

Alternates the two, --repeats times each, after one untimed call of each (compiling or loading
the kernel), and prints the medians.

    .venv/bin/python benchmarks/shuffle_speed.py --n 5000000 --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from latentrec import fused, kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    kernels.set_threads(torch.get_num_threads())
    generator = torch.Generator().manual_seed(0)
    shuffles = {
        "latentrec fused.permutation": lambda seed: fused.permutation(args.n, seed),
        "torch.randperm": lambda seed: torch.randperm(args.n, generator=generator),
    }
    seconds: dict[str, list[float]] = {name: [] for name in shuffles}
    for round_ in range(args.repeats + 1):
        for name, shuffle in shuffles.items():
            started = time.perf_counter()
            shuffle(round_)
            if round_:  # the first round compiles or loads the kernel
                seconds[name].append(time.perf_counter() - started)
    print(f"n = {args.n:,}, {torch.get_num_threads()} threads, medians of {args.repeats}:")
    for name, runs in seconds.items():
        listed = ", ".join(f"{s:.4f}" for s in runs)
        print(f"  {name}: {statistics.median(runs):.4f} s (runs {listed})")


if __name__ == "__main__":
    main()
