"""Bytes each optimiser's fused training step moves per rating, against this machine's copy
bandwidth measured in the same run.

The bytes are counted by construction from the kernel's loops (src/latentrec/fused.py,
`dot_steps`), for a step of B ratings that touches U distinct users and I distinct items
(counted on the epoch's shuffled order), F factors, 4-byte floats and indexes:

- forward: per rating its user, item and target gathered from the shuffled order, the
  user's and item's factor rows and biases read, the logit's gradient and the squared error
  written (the loss then sums them in order);
- gradients: every lane reads each rating's user, item, logit gradient and both slot-array
  entries; the lane owning a row reads the other side's factor row and writes (first rating
  of the row in the step) or adds to (later ones) the row's gradient slot and its count of
  ratings (for the L2 penalty). On one lane (a busy machine) the gradients follow each
  rating's forward pass in the same loop: its rows are still in cache, and neither the
  rating nor its logit gradient is read again;
- update, per touched row: the slot and its count read, the weights and biases read and
  written, and the
  optimiser's state read and written: AdamW two moments per weight, row-wise Adagrad one
  accumulator per row; the slot array entry reset.

"tables" counts what lies in the model's tables, the optimiser state, the slot arrays and the
ratings read in shuffled order (scattered over memory: the traffic that meets the memory bus
at scale); "step buffers" counts the step's ratings side by side, logit gradients and gradient
slots (written and read again within the step: about
1.7 MB at B 4096, F 100, so they stay in cache). "AdamW before" is AdamW as the kernel ran
before slots were written on first use: every slot zeroed after its update, every gradient
added to it.

The epoch is timed in this process for each optimiser, alternating, medians over rounds; the
copy bandwidth is a 256 MiB numpy copy (read and write counted), best of 5, measured before
each round. The table says how many bytes per second each optimiser's epoch moves and what
fraction of the copy bandwidth that is.

    .venv/bin/python benchmarks/bytes_per_rating.py [--data scale-5m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from _report import machine, write
from compare import DATA

import latentrec
from latentrec import fused, kernels

REPO = Path(__file__).resolve().parent.parent
FLOAT = INDEX = 4
STEP = 4096
FACTORS = 100


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes per second a numpy copy of `mib` MiB moves (read and write), best of repeats."""
    source = np.ones(mib * 2**20 // 8)
    target = np.empty_like(source)
    np.copyto(target, source)  # pages in
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best


def distinct_per_step(users: np.ndarray, items: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Mean distinct users and items in a step of STEP ratings of a shuffled order."""
    order = fused.permutation(len(users), seed)
    steps = len(order) // STEP
    u = [len(np.unique(users[order[s * STEP : (s + 1) * STEP]])) for s in range(steps)]
    i = [len(np.unique(items[order[s * STEP : (s + 1) * STEP]])) for s in range(steps)]
    return float(np.mean(u)), float(np.mean(i))


def step_bytes(optimizer: str, b: float, u: float, i: float, f: int, lanes: int) -> dict:
    """Bytes one step moves, by pass and by kind (tables or step buffers)."""
    row = f * FLOAT  # one factor row
    rows = u + i  # touched rows, each side
    # the step's ratings gathered in shuffled order (its position, then its (user, item,
    # target) record read at random, written side by side), then the rows and biases they name
    forward_tables = b * (8 + 2 * INDEX + FLOAT) + b * (2 * row + 2 * FLOAT)
    # the gathered ratings written and read; the logit gradient written (several lanes) and
    # the squared error written and read back by the loss's sum
    forward_buffers = b * (2 * INDEX + FLOAT) + b * (2 * INDEX + FLOAT) + b * 2 * 8
    if lanes > 1:
        forward_buffers += b * FLOAT
    # every lane reads every rating and both slot entries; the owner reads the other row (on
    # one lane still in cache from the forward pass)
    gradient_tables = lanes * b * 2 * 8 + rows * 8  # slot entries set once
    if lanes > 1:
        gradient_tables += b * 2 * row
    if optimizer == "adamw before":  # each rating read-modify-writes its slot
        slot_traffic = 2 * b * 2 * (row + FLOAT)
    else:  # the first rating of a row writes its slot and count, later ones add to them
        slot_traffic = rows * (row + 2 * FLOAT) + (2 * b - rows) * 2 * (row + 2 * FLOAT)
    gradient_buffers = slot_traffic + rows * 8
    if lanes > 1:
        gradient_buffers += lanes * b * (2 * INDEX + FLOAT)
    weights = rows * (2 * row + 2 * FLOAT)  # factors and bias, read and written
    # read and written: one accumulator per row of each table, or two moments per weight
    state = rows * 2 * (2 * FLOAT) if optimizer == "adagrad" else rows * (4 * row + 4 * FLOAT)
    if optimizer == "adamw before":  # read, then zeroed
        slot_read = rows * (row + FLOAT) * 2
    else:  # the slot and its count of ratings
        slot_read = rows * (row + 2 * FLOAT)
    update_tables = weights + state + rows * 8  # slot-array entries reset
    update_buffers = slot_read + rows * 8  # touched-row lists read
    return {
        "forward": forward_tables + forward_buffers,
        "gradients": gradient_tables + gradient_buffers,
        "update": update_tables + update_buffers,
        "tables": forward_tables + gradient_tables + update_tables,
        "buffers": forward_buffers + gradient_buffers + update_buffers,
    }


def epoch_seconds(train, optimizer: str) -> tuple[float, float]:
    """Seconds of one epoch (the fit's epoch alone) and the test-free training loss."""
    _, history = latentrec.fit(
        train,
        "dot",
        optimizer=optimizer,
        epochs=1,
        n_factors=FACTORS,
        batch_size=STEP,
        engine="fused",
        progress=False,
    )
    return history.epochs[0].seconds, history.epochs[0].train_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="scale-5m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    n, users, items, distinct = DATA[args.data]
    source = f"synthetic:ratings={n},users={users},items={items},seed=1,distinct={distinct}"
    train, _ = latentrec.load_ratings(source).split(0.1, seed=42)
    lanes = kernels.set_threads(2)
    u, i = distinct_per_step(train.user_index, train.item_index)
    optimizers = ["adamw", "adagrad"]
    seconds: dict[str, list[float]] = {name: [] for name in optimizers}
    bandwidths = []
    for round_ in range(args.repeats):
        bandwidths.append(copy_bandwidth())
        for name in optimizers if round_ % 2 == 0 else optimizers[::-1]:
            seconds[name].append(epoch_seconds(train, name)[0])
            print(f"round {round_ + 1}: {name} {seconds[name][-1]:.3f} s", flush=True)
    bandwidth = statistics.median(bandwidths)
    rows = []
    for name in ["adamw before", *optimizers]:
        parts = {k: v / STEP for k, v in step_bytes(name, STEP, u, i, FACTORS, lanes).items()}
        total = parts["tables"] + parts["buffers"]
        row = {"optimizer": name, **parts, "total": total}
        if name in seconds:
            epoch = statistics.median(seconds[name])
            moved = total * len(train) / epoch
            row |= {"epoch_seconds": epoch, "bytes_per_second": moved}
            row["fraction_of_copy"] = moved / bandwidth
            row["tables_fraction_of_copy"] = parts["tables"] * len(train) / epoch / bandwidth
        rows.append(row)
    base = rows[0]["total"]
    lines = [
        "| optimiser | forward | gradients | update | tables | step buffers | total B/rating | "
        "vs AdamW before | update vs AdamW before | epoch s | GB/s moved | of copy bandwidth "
        "(tables only) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        timed = (
            f"{row['epoch_seconds']:.3f} | {row['bytes_per_second'] / 1e9:.1f} | "
            f"{row['fraction_of_copy']:.0%} ({row['tables_fraction_of_copy']:.0%})"
            if "epoch_seconds" in row
            else "| |"
        )
        lines.append(
            f"| {row['optimizer']} | {row['forward']:,.0f} | {row['gradients']:,.0f} | "
            f"{row['update']:,.0f} | {row['tables']:,.0f} | {row['buffers']:,.0f} | "
            f"{row['total']:,.0f} | {row['total'] / base:.2f} | "
            f"{row['update'] / rows[0]['update']:.2f} | {timed} |"
        )
    context = (
        f"{args.data} ({len(train):,} training ratings), one epoch of the dot model, fused "
        f"engine, {lanes} threads, batch {STEP}, {FACTORS} factors, float32; a step touches "
        f"{u:,.0f} users and {i:,.0f} items on average. Copy bandwidth (256 MiB numpy copy, "
        f"read + write): {bandwidth / 1e9:.1f} GB/s (median of {len(bandwidths)} rounds, each "
        f"the best of 5). {args.repeats} rounds, alternating; medians."
    )
    report = {
        **machine(),
        "context": context,
        "copy_bandwidth": bandwidths,
        "distinct_per_step": [u, i],
        "seconds": seconds,
        "rows": rows,
    }
    write(args.out, "bytes_per_rating", report, "bytes per rating", "\n".join(lines))
    print(context + "\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
