"""Shared by the benchmark scripts: machine facts and writing dated JSON + Markdown results."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """The command line and the facts that make a timing comparable."""
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write(out: Path, name: str, report: dict[str, Any], header: str, table: str) -> str:
    """Write `out/name-YYYYMMDD-HHMMSS.json` (the report) and `.md` (header and table);
    return the stamp."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"{name}-{stamp}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    title = f"# {header} ({stamp})\n\n`{report['command']}`\n\n"
    base.with_suffix(".md").write_text(title + report.get("context", "") + "\n\n" + table + "\n")
    print(f"\nwrote {base}.json and {base}.md", file=sys.stderr)
    return stamp


def run_json(command: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, Any], float]:
    """Run a command that prints one JSON object as its last line; that object and the whole
    command's wall seconds. A failed command ends the benchmark with its stderr."""
    env = dict(os.environ if env is None else env, LOGLEVEL="WARNING")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), wall


# what train_runs keeps of each run's JSON summary
TRAIN_KEYS = (
    "rmse",
    "train_seconds",
    "ratings_per_second",
    "n_train",
    "device",
    "engine",
    "world_size",
)


def train_runs(
    runs: dict[str, list[str]], repeats: int, env: dict[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Run each `latentrec train ... --json` command `repeats` times, the commands alternating
    within each round so load drift hits all alike; by name, each run's TRAIN_KEYS and its
    whole command's `wall_seconds`. Progress goes to stderr."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for round_ in range(repeats):
        for name, command in runs.items():
            summary, wall = run_json(command, env)
            result = {key: summary[key] for key in TRAIN_KEYS} | {"wall_seconds": wall}
            results[name].append(result)
            print(
                f"[{round_ + 1}/{repeats}] {name}: RMSE {_maybe(result['rmse'])}, train "
                f"{result['train_seconds']:.3f} s on {result['device']}, wall {wall:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    return results


def _maybe(value: float | None) -> str:
    """A metric a ranking model does not have (None) as "-"."""
    return "-" if value is None else f"{value:.4f}"
