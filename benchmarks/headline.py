"""README's table of headline figures, rendered from the dated result files in results/.

Each row takes its figure from the newest result file of its benchmark that holds it, so the
table changes only when a benchmark is run again, never by hand. The table lies in README.md
between the markers START and END.

Run from the repository root:
    .venv/bin/python benchmarks/headline.py           # rewrite README.md's table
    .venv/bin/python benchmarks/headline.py --check   # exit 1, with a diff, when it differs
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
START = "<!-- headline:start (benchmarks/headline.py writes this table) -->"
END = "<!-- headline:end -->"

# (system in a compare-*.json summary, how the table names it)
SAMPLE_DOT = "latentrec dot @ movielens-small"
SAMPLE_NN = "latentrec nn @ movielens-small"
SAMPLE_DOT_PEERS = (
    ("fastai dot bs64 @ movielens-small", "fastai (batch 64)"),
    ("surprise svd++ @ movielens-small", "Surprise SVD++"),
    ("cornac mf @ movielens-small", "cornac MF"),
    ("surprise svd @ movielens-small", "Surprise SVD"),
)
SAMPLE_SPEED_PEERS = (
    ("fastai dot bs1024 @ movielens-small", "fastai (batch 1024)"),
    ("surprise svd @ movielens-small", "Surprise SVD"),
    ("cornac mf @ movielens-small", "cornac MF"),
)
SAMPLE_NN_PEERS = (("fastai nn bs64 @ movielens-small", "fastai (batch 64)"),)
SAMPLE_BAYES = "latentrec bayes @ movielens-small"
SAMPLE_BAYES_PEERS = (
    ("myFM item features 100 @ movielens-small", "myFM (the same features, 100 samples)"),
    ("myFM 100 @ movielens-small", "myFM (implicit features, 100 samples)"),
    ("myFM plain @ movielens-small", "myFM plain"),
    ("latentrec bayes no item features @ movielens-small", "`bayes --no-item-features`"),
)
SAMPLE_BAYES_SPEED_PEERS = SAMPLE_BAYES_PEERS


DISTINCT_PEERS = (("cornac mf 1 epoch @ synthetic 25M distinct", "cornac MF (1 thread)"),)
# shown beside the peers where the run has it
DISTINCT_EXTRAS = (
    ("latentrec dot adamw 1 epoch @ synthetic 25M distinct", "latentrec with AdamW"),
)
# compare.py's time-to-accuracy systems (of its curve cases) and how the table names them
CURVE_PEERS = (
    ("cornac mf 20 epochs", "cornac MF"),
    ("surprise svd 20 epochs", "Surprise SVD"),
    ("fastai dot bs4096 5 epochs", "fastai (batch 4096)"),
)


@dataclass(frozen=True)
class Result:
    """One dated result file: its path and its JSON."""

    path: Path
    data: dict[str, Any]

    def systems(self) -> dict[str, dict[str, Any]]:
        """compare.py's summary by system name (empty for other benchmarks)."""
        return {entry["system"]: entry for entry in self.data.get("summary", [])}


def results(benchmark: str, folder: Path) -> list[Result]:
    """`benchmark`'s dated result files in `folder`, oldest first (the stamp sorts by date)."""
    pattern = re.compile(rf"{re.escape(benchmark)}-\d{{8}}-\d{{6}}\.json")
    paths = sorted(p for p in folder.glob("*.json") if pattern.fullmatch(p.name))
    return [Result(path, json.loads(path.read_text())) for path in paths]


def newest(benchmark: str, folder: Path, holds: Callable[[Result], bool]) -> Result:
    """The newest result file of `benchmark` for which `holds` is true."""
    for result in reversed(results(benchmark, folder)):
        if holds(result):
            return result
    raise SystemExit(f"no {benchmark}-*.json in {folder} holds what the headline table needs")


def command(result: Result) -> str:
    """The command that wrote a result file, as run from the repository root."""
    words = shlex.split(result.data["command"])
    if Path(words[0]).name.startswith("python"):
        words[0] = ".venv/bin/python"
    if "--peers-python" in words:  # a peers' environment of its own: the default is theirs
        at = words.index("--peers-python")
        del words[at : at + 2]
    return shlex.join(words)


@dataclass(frozen=True)
class Row:
    """One line of the table: what is measured, latentrec's figure, the peers' figures."""

    what: str
    figure: str
    peers: str
    source: Result


def compare_row(
    what: str,
    folder: Path,
    system: str,
    peers: tuple[tuple[str, str], ...],
    field: str,
    busy: bool = False,
    extras: tuple[tuple[str, str], ...] = (),
) -> Row:
    """A row from compare.py's summary: `field` of latentrec's `system` and of its peers (and
    of the `extras` the run has), from a run beside busy-copy processes (`busy`) or from a
    quiet one."""
    wanted = [system, *(name for name, _ in peers)]

    def holds(result: Result) -> bool:
        loaded = bool(result.data.get("busy_copy"))
        return loaded == busy and all(s in result.systems() for s in wanted)

    found = newest("compare", folder, holds)
    by_system = found.systems()
    formats = {"rmse": "{:.4f}", "train_seconds": "{:.2f} s", "peak_rss_mib": "{:,.0f} MiB"}
    shown = formats[field].format
    present = [*peers, *((name, label) for name, label in extras if name in by_system)]
    peer_text = ", ".join(f"{label} {shown(by_system[name][field])}" for name, label in present)
    return Row(what, shown(by_system[system][field]), peer_text, found)


def curve_row(what: str, folder: Path, case: str) -> Row:
    """A row from a compare.py curve case: the seconds each system needs to reach the best
    final test RMSE of the peers (quiet runs)."""

    def holds(result: Result) -> bool:
        return case in result.data.get("curves", {}) and not result.data.get("busy_copy")

    found = newest("compare", folder, holds)
    curve = found.data["curves"][case]
    by_system = {row["system"].split(" @ ")[0]: row for row in curve["rows"]}
    mine = by_system[curve["latentrec"].split(" @ ")[0]]

    def reached(row: dict) -> str:
        seconds = row["seconds_to_target"]
        if seconds is not None:
            return f"{seconds:.2f} s"
        end, rmse = row["curve"][-1]
        return f"not reached (RMSE {rmse:.4f} after {len(row['curve'])} epochs, {end:.2f} s)"

    peers = []
    for name, label in CURVE_PEERS:
        if name in by_system:
            row = by_system[name]
            ratio = f" ({row['vs_latentrec']:.1f}x)" if row["vs_latentrec"] else ""
            peers.append(f"{label} {reached(row)}{ratio}")
    target = f"{what} (test RMSE {curve['target']:.4f})"
    return Row(target, reached(mine), ", ".join(peers), found)


def rows(folder: Path) -> list[Row]:
    """The headline rows, each from the newest result file that holds it."""
    scaling = newest("scaling", folder, lambda r: "25M" in r.data["results"].get("growing", {}))
    growing = scaling.data["results"]["growing"]
    contention = newest("contention", folder, lambda r: "this tree" in r.data["results"])
    busy = contention.data["results"]["this tree"]["busy_two_over_one"]
    ranking = newest("ranking", folder, lambda r: "latentrec ease (defaults)" in r.data["scores"])
    lists = ranking.data["scores"]

    def listed(name: str) -> str:
        return f"{lists[name]['ndcg@10']:.4f} / {lists[name]['precision@10']:.4f}"

    als = newest(  # a run that timed the full fit (`--iterations 1` runs time one iteration)
        "als_scale",
        folder,
        lambda r: (
            "25000000" in r.data["data"] and any(x["iterations"] == 15 for x in r.data["runs"])
        ),
    )
    visitors = newest("visitors_load", folder, lambda r: bool(r.data.get("load")))

    def served(endpoint: str, database: str) -> str:
        run = next(
            r
            for r in visitors.data["load"]
            if (r["endpoint"], r["database"]) == (endpoint, database)
        )
        return f"{run['requests_per_second']:,.0f} requests/s, p99 {run['p99_ms']:.1f} ms"

    def fit_seconds(system: str, iterations: int) -> float:
        runs = als.data["runs"]
        mine = [
            r["fit_seconds"] for r in runs if (r["system"], r["iterations"]) == (system, iterations)
        ]
        return statistics.median(mine)

    return [
        Row(
            "Top-10 lists, bundled sample, per-user 20% holdout (seed 42): NDCG@10 / P@10 of "
            "`ease` (defaults)",
            listed("latentrec ease (defaults)"),
            f"latentrec `als` {listed('latentrec als (defaults)')}, implicit ALS "
            f"{listed('implicit ALS (32 factors, reg 0.01, alpha 1, 15 iterations)')}, most "
            f"popular {listed('most popular')}",
            ranking,
        ),
        Row(
            "ALS fit, 25M synthetic interactions, 64 factors, 15 iterations, 2 threads",
            f"{fit_seconds('latentrec als', 15):.2f} s",
            f"implicit ALS {fit_seconds('implicit ALS', 15):.2f} s",
            als,
        ),
        compare_row(
            "Test RMSE, `dot`, bundled MovieLens sample (90/10 split, seed 42)",
            folder,
            SAMPLE_DOT,
            SAMPLE_DOT_PEERS,
            "rmse",
        ),
        compare_row(
            "Test RMSE, `bayes` (100 Gibbs samples; implicit signals, genres, decades), bundled "
            "sample",
            folder,
            SAMPLE_BAYES,
            SAMPLE_BAYES_PEERS,
            "rmse",
        ),
        compare_row(
            "Training time, `bayes`, bundled sample (100 samples of rank 10)",
            folder,
            SAMPLE_BAYES,
            SAMPLE_BAYES_SPEED_PEERS,
            "train_seconds",
        ),
        compare_row(
            "Test RMSE, `nn`, bundled MovieLens sample",
            folder,
            SAMPLE_NN,
            SAMPLE_NN_PEERS,
            "rmse",
        ),
        compare_row(
            "Training time, `dot`, bundled MovieLens sample (defaults: 5 epochs)",
            folder,
            SAMPLE_DOT,
            SAMPLE_SPEED_PEERS,
            "train_seconds",
        ),
        curve_row(
            "Time to the best peer's final accuracy, 5M synthetic ratings without repeated "
            "pairs (100 factors; peers' own epochs: cornac and Surprise 20, fastai 5)",
            folder,
            "curve-5m",
        ),
        curve_row(
            "The same, 25M synthetic ratings (160,000 users x 60,000 items)",
            folder,
            "curve-25m",
        ),
        compare_row(
            "One epoch, 25M synthetic ratings without repeated pairs (100 factors, batch 4096)",
            folder,
            "latentrec dot 1 epoch @ synthetic 25M distinct",
            DISTINCT_PEERS,
            "train_seconds",
            extras=DISTINCT_EXTRAS,
        ),
        compare_row(
            "The same beside a process copying 1 GiB arrays (memory bandwidth saturated)",
            folder,
            "latentrec dot 1 epoch @ synthetic 25M distinct",
            DISTINCT_PEERS,
            "train_seconds",
            busy=True,
            extras=DISTINCT_EXTRAS,
        ),
        compare_row(
            "Peak RSS of that 25M command, data included (max of its runs)",
            folder,
            "latentrec dot 1 epoch @ synthetic 25M distinct",
            DISTINCT_PEERS,
            "peak_rss_mib",
            extras=DISTINCT_EXTRAS,
        ),
        Row(
            "Visitors' `POST /ratings`, SQLite, 2 workers, 8 connections (wrk on the same cores)",
            served("POST /ratings", "sqlite"),
            f"PostgreSQL {served('POST /ratings', 'postgresql')}",
            visitors,
        ),
        Row(
            "Time per rating of an epoch at 25M over that at 1M (medians of 7)",
            f"{growing['25M']['times_linear_median']:.2f}x",
            "",
            scaling,
        ),
        Row(
            "Epoch beside a busy process: 2 threads' time over 1 thread's",
            f"{busy:.2f}x",
            "",
            contention,
        ),
    ]


def render(folder: Path = RESULTS) -> str:
    """The table, with a line saying where it was measured."""
    table = rows(folder)
    lines = [
        "| what | latentrec | peers | command | result file |",
        "|---|---:|---|---|---|",
    ]
    for row in table:
        name = row.source.path.name
        link = f"[{name}](benchmarks/results/{name})"
        peers = row.peers or "-"
        lines.append(f"| {row.what} | {row.figure} | {peers} | `{command(row.source)}` | {link} |")
    sources = {id(row.source): row.source.data for row in table}.values()
    cores = sorted({str(data["cpu_count"]) for data in sources})
    pythons = sorted({data["python"] for data in sources})
    lines += [
        "",
        f"Measured on {' or '.join(cores)} CPU cores, Python {', '.join(pythons)}; "
        "medians of each file's runs (peak RSS: the largest).",
    ]
    return "\n".join(lines) + "\n"


def replace_table(text: str, table: str) -> str:
    """README's text with the block between the markers replaced by `table`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md lacks the markers {START!r} ... {END!r}")
    return text[: start + len(START)] + "\n" + table + text[end:]


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README differs")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    wanted = replace_table(text, render(args.results))
    if wanted == text:
        return 0
    if args.check:
        diff = difflib.unified_diff(
            text.splitlines(keepends=True),
            wanted.splitlines(keepends=True),
            f"{args.readme} (as it is)",
            f"{args.readme} (from {args.results})",
        )
        sys.stdout.writelines(diff)
        print("README's headline table differs: run .venv/bin/python benchmarks/headline.py")
        return 1
    write_atomically(args.readme, wanted)
    print(f"rewrote the headline table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
