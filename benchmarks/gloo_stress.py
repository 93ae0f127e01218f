"""Many small DistributedDataParallel steps with sparse table gradients on gloo: does it crash?

Two processes on loopback train a dot model's four tables (sparse gradients, the layout
latentrec's torchrun runs use) for `--steps` tiny steps, `--runs` times, with DDP's own
gradient averaging ("plain") and with latentrec's hook, which sends all sparse gradients of a
step as one all-gather ("latentrec").
Prints how many runs of each ended well. Before the hook, torchrun workers died now and then
with SIGSEGV or "malloc(): unaligned tcache chunk detected" inside gloo's sparse all-reduce;
this makes that happen within seconds.

Run from the repository root:
    .venv/bin/python benchmarks/gloo_stress.py --runs 10 --steps 5000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import machine, write

REPO = Path(__file__).resolve().parent.parent
MODES = ("plain", "latentrec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="runs of each mode")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(mode: str, steps: int) -> None:
    """One rank: DDP over four sparse embedding tables, `steps` steps of 256 ratings."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from latentrec import distributed

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    rank = dist.get_rank()
    torch.manual_seed(0)

    class Tables(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_factors = nn.Embedding(5000, 50, sparse=True)
            self.user_bias = nn.Embedding(5000, 1, sparse=True)
            self.item_factors = nn.Embedding(2000, 50, sparse=True)
            self.item_bias = nn.Embedding(2000, 1, sparse=True)

        def forward(self, users, items):
            dot = (self.user_factors(users) * self.item_factors(items)).sum(1)
            return dot + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0]

    if mode == "latentrec":
        model = distributed.wrap(Tables(), torch.device("cpu"))
    else:
        model = nn.parallel.DistributedDataParallel(Tables())
    generator = torch.Generator().manual_seed(rank)
    for _ in range(steps):
        users = torch.randint(0, 5000, (256,), generator=generator)
        items = torch.randint(0, 2000, (256,), generator=generator)
        (model(users, items) - 3).pow(2).mean().backward()
        for p in model.parameters():
            p.grad = None
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # leave gloo's threads behind (see latentrec.distributed.joined)


def run_once(mode: str, steps: int) -> tuple[bool, str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", __file__, "--worker", mode, "--steps", str(steps)]
    env = dict(os.environ, LOGLEVEL="WARNING")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    reason = ""
    for line in done.stderr.splitlines():
        if "malloc" in line or "Signal" in line or "SIGSEGV" in line:
            reason = line.strip()
            break
    return done.returncode == 0, reason


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args.worker, args.steps)
        return
    ended_well = dict.fromkeys(MODES, 0)
    reasons: dict[str, list[str]] = {mode: [] for mode in MODES}
    for round_ in range(args.runs):
        for mode in MODES:  # alternating, so load drift hits both alike
            started = time.perf_counter()
            ok, reason = run_once(mode, args.steps)
            ended_well[mode] += ok
            if not ok:
                reasons[mode].append(reason)
            print(
                f"[{round_ + 1}/{args.runs}] {mode}: {'ok' if ok else 'FAILED ' + reason} "
                f"({time.perf_counter() - started:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    rows = ["| gradient averaging | runs | ended well | failed |", "|---|---:|---:|---:|"]
    for mode in MODES:
        label = "DDP's own" if mode == "plain" else "latentrec (one all-gather a step)"
        failed = args.runs - ended_well[mode]
        rows.append(f"| {label} | {args.runs} | {ended_well[mode]} | {failed} |")
    report = {
        **machine(),
        "steps": args.steps,
        "runs": args.runs,
        "ended_well": ended_well,
        "failures": reasons,
        "context": f"2 processes, gloo on loopback, {args.steps} steps of 256 ratings each run.",
    }
    write(args.out, "gloo_stress", report, "Sparse all-reduce stress on gloo", "\n".join(rows))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
