"""Reading visitors' interactions from SQLite and PostgreSQL into training arrays, beside CSV.

Writes N synthetic interactions (32-hex visitor ids as the service makes them, whole-number
item ids, ratings 0.5..5) into a SQLite file, a PostgreSQL database and a CSV file of the same
rows (bulk inserts, not timed), then times `latentrec.load_ratings` on each in a fresh child
process and reads the child's peak RSS; medians of --repeats, the sources alternating within
each round. PostgreSQL is a temporary server started with tests/pg_ctl.sh (Debian's
`postgresql` package), or the empty database at --postgres URL.

    .venv/bin/python benchmarks/db_read.py --interactions 5000000 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import _report

PG_CTL = Path(__file__).resolve().parent.parent / "tests" / "pg_ctl.sh"
COLUMNS = "visitor_id, item_id, rating, kind, position, created_at, updated_at"


def synthetic(n: int, n_visitors: int, n_items: int, seed: int) -> pd.DataFrame:
    """`n` distinct (visitor, item) pairs with popularity skewed as in real catalogues."""
    rng = np.random.default_rng(seed)
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n:  # draw, drop repeated pairs, draw the shortfall again
        need = int((n - len(keys)) * 1.2) + 1000
        visitor = np.minimum(rng.zipf(1.3, need) - 1, n_visitors - 1)
        item = np.minimum(rng.zipf(1.2, need) - 1, n_items - 1)
        keys = np.unique(np.concatenate([keys, visitor * n_items + item]))
    keys = rng.permutation(keys)[:n]
    visitor_ids = np.array([rng.bytes(16).hex() for _ in range(n_visitors)], dtype=object)
    frame = pd.DataFrame(
        {
            "visitor_id": visitor_ids[keys // n_items],
            "item_id": (keys % n_items + 1).astype(str),
            "rating": rng.integers(1, 11, n) / 2.0,
        }
    )
    frame["kind"] = "rating"
    frame["position"] = frame.groupby("visitor_id").cumcount()
    frame["created_at"] = frame["updated_at"] = "2026-01-01 00:00:00+00:00"
    return frame


def write_sqlite(frame: pd.DataFrame, path: Path) -> str:
    import sqlite3

    from latentrec.database import Store

    url = f"sqlite:///{path}"
    Store.upgrade(url)
    conn = sqlite3.connect(path)
    with conn:
        visitors = frame["visitor_id"].unique()
        conn.executemany(
            "INSERT INTO visitors (id, created_at) VALUES (?, '2026-01-01 00:00:00')",
            ((v,) for v in visitors),
        )
        for start in range(0, len(frame), 500_000):
            rows = frame.iloc[start : start + 500_000].itertuples(index=False, name=None)
            conn.executemany(f"INSERT INTO interactions ({COLUMNS}) VALUES (?,?,?,?,?,?,?)", rows)
    conn.close()
    return url


def write_postgres(frame: pd.DataFrame, url: str) -> None:
    import psycopg

    from latentrec.database import Store

    Store.upgrade(url)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        with conn.cursor() as cursor:
            with cursor.copy("COPY visitors (id, created_at) FROM STDIN WITH (FORMAT csv)") as copy:
                visitors = pd.DataFrame({"id": frame["visitor_id"].unique()})
                visitors["created_at"] = "2026-01-01 00:00:00+00"
                copy.write(visitors.to_csv(index=False, header=False))
            for start in range(0, len(frame), 500_000):
                chunk = io.StringIO()
                frame.iloc[start : start + 500_000].to_csv(chunk, index=False, header=False)
                with cursor.copy(
                    f"COPY interactions ({COLUMNS}) FROM STDIN WITH (FORMAT csv)"
                ) as copy:
                    copy.write(chunk.getvalue())
        conn.execute("ANALYZE")
        conn.commit()


@contextlib.contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """A throwaway PostgreSQL server in `folder`; the URL of an empty database on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data, log = folder / "pg" / "data", folder / "pg" / "server.log"
    run = [str(PG_CTL)]
    subprocess.run(
        [*run, "initdb", "--pgdata", str(data), "-o", "--username=postgres --auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-F -p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''"
    subprocess.run(
        [*run, "start", "-w", "-D", str(data), "-o", options, "-l", str(log)],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/bench"
    finally:
        subprocess.run([*run, "stop", "-D", str(data), "-m", "fast"], capture_output=True)


def child(source: str) -> None:
    """One timed load in this fresh process: prints seconds, rows and RSS as JSON."""
    import latentrec

    baseline = _peak_rss()
    started = time.perf_counter()
    ratings = latentrec.load_ratings(source)
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": len(ratings),
                "users": ratings.n_users,
                "items": ratings.n_items,
                "peak_rss_bytes": peak,
                "rss_before_bytes": baseline,
            }
        )
    )


def _peak_rss() -> int:
    """This process's peak RSS (VmHWM) in bytes: its own image's, unlike getrusage's
    ru_maxrss, which also counts the forked copy of the parent that ran before exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status: this benchmark needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=int, default=5_000_000)
    parser.add_argument("--visitors", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", help="an empty PostgreSQL database's URL (else a new server)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    with tempfile.TemporaryDirectory(prefix="latentrec-db-read-") as name:
        folder = Path(name)
        started = time.perf_counter()
        frame = synthetic(args.interactions, args.visitors, args.items, args.seed)
        csv = folder / "interactions.csv"
        frame[["visitor_id", "item_id", "rating"]].rename(
            columns={"visitor_id": "user", "item_id": "item"}
        ).to_csv(csv, index=False)
        sources = {"csv": str(csv), "sqlite": write_sqlite(frame, folder / "visitors.db")}
        with contextlib.ExitStack() as stack:
            url = args.postgres or stack.enter_context(postgres_server(folder))
            write_postgres(frame, url)
            sources["postgresql"] = url
            del frame
            print(f"wrote the data in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            runs = _timed(sources, args.repeats)
    report = _report.machine() | {
        "interactions": args.interactions,
        "visitors": args.visitors,
        "items": args.items,
        "repeats": args.repeats,
        "context": (
            f"`load_ratings` of {args.interactions:,} interactions, each source in a fresh "
            f"process (peak RSS: its VmHWM, the imports included; added: above the RSS "
            f"after the imports); medians of {args.repeats} runs, RSS the largest"
        ),
        "runs": runs,
    }
    table = _table(runs)
    print(table)
    _report.write(args.out, "db_read", report, "Reading interactions from databases", table)


def _timed(sources: dict[str, str], repeats: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in sources}
    for round_ in range(repeats):
        for name, source in sources.items():
            summary, _wall = _report.run_json(
                [sys.executable, __file__, "--child", source], env=dict(os.environ)
            )
            runs[name].append(summary)
            print(
                f"[{round_ + 1}/{repeats}] {name}: {summary['seconds']:.2f} s, peak RSS "
                f"{summary['peak_rss_bytes'] / 2**20:,.0f} MiB",
                file=sys.stderr,
                flush=True,
            )
    shapes = {(r["rows"], r["users"], r["items"]) for results in runs.values() for r in results}
    if len(shapes) != 1:
        raise SystemExit(f"the sources loaded different data: {shapes}")
    return runs


def _table(runs: dict[str, list[dict]]) -> str:
    lines = [
        "| source | load_ratings (median s) | rows/s | peak RSS (MiB) | added by the load (MiB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = max(r["peak_rss_bytes"] for r in results) / 2**20
        added = max(r["peak_rss_bytes"] - r["rss_before_bytes"] for r in results) / 2**20
        lines.append(
            f"| {name} | {seconds:.2f} | {results[0]['rows'] / seconds:,.0f} | {peak:,.0f} "
            f"| {added:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
