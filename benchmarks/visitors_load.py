"""Visitors' ratings under load: nothing acknowledged is lost across kill -9, and how fast.

Set-up: a small dot model on the bundled data (or --model DIR), a fresh database for each
backend (a SQLite file in a temporary folder; PostgreSQL on a temporary server started through
pytest-postgresql's PostgreSQLExecutor with tests/pg_ctl.sh, or the empty database at
--postgres URL), each made by `latentrec db upgrade`, and `latentrec serve MODEL --db URL
--workers 2` as a child process in a process group of its own.

Durability: --durability-clients threads, each a visitor of its own (its cookie), POST
/ratings without pause, never rating one (visitor, item) pair twice, and keep every rating
that got a 2xx answer. Meanwhile the server's whole process group (supervisor and workers) is
killed with SIGKILL --kills times at random moments, restarted, and awaited on /health; after
each restart every rating acknowledged before the kill is looked up in the database, and after
the run all of them are. Reported: acknowledged ratings, lost ones (no row, or another value:
must be 0), requests that failed (refused while the server was down, cut off by a kill, non-2xx)
and unacknowledged ratings that landed anyway.

Load: POST /ratings (one rating a request, each from one of --visitors pre-made visitors) on
each backend, and GET /users/{id}/recommendations (random users, as benchmarks/load/users.lua)
on a server without a database and on one with SQLite: requests/s and latency p50/p90/p99 over
--seconds with --clients connections, after --warmup seconds not counted. The load comes from
Debian's wrk (2 threads) when it is installed, else from Python threads with httpx.

    .venv/bin/python benchmarks/visitors_load.py                       # both phases, both DBs
    .venv/bin/python benchmarks/visitors_load.py --phases durability --kills 10
    .venv/bin/python benchmarks/visitors_load.py --phases load --seconds 60 --clients 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _report

REPO = Path(__file__).resolve().parent.parent
PG_CTL = REPO / "tests" / "pg_ctl.sh"
USERS_LUA = Path(__file__).parent / "load" / "users.lua"
COOKIE = "latentrec_visitor"
PER_VISITOR = 4000  # items a durability client rates as one visitor (the service keeps 5,000)
BACKENDS = ("sqlite", "postgresql")
PHASES = ("durability", "load")

# wrk: one JSON line at the end, picked out of wrk's own output by its prefix
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "non_2xx": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# a Lua helper of the wrk scripts: the non-empty lines of a file
LUA_LINES = """
local function lines(path)
  local out = {}
  for line in io.lines(path) do
    if #line > 0 then out[#out + 1] = line end
  end
  return out
end
"""

# wrk: POST /ratings, one rating a request; args: visitors file, items file, threads, ratings
RATINGS_LUA = (
    """
local next_thread = 0
setup = function(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

"""
    + LUA_LINES
    + """
local mine, items, ratings, counter = {}, {}, {}, 0
init = function(args)
  local visitors = lines(args[1])
  items = lines(args[2])
  local threads = tonumber(args[3])
  for value in string.gmatch(args[4], "[^,]+") do ratings[#ratings + 1] = value end
  for i = 1, #visitors do
    if (i - 1) % threads == thread_index then mine[#mine + 1] = visitors[i] end
  end
end

-- visitors in turn; each visitor's items in the file's order, again from the start after the
-- last (a repeat replaces the rating: latest wins, and the stored count stays under the cap)
request = function()
  local visitor = mine[counter % #mine + 1]
  local item = items[math.floor(counter / #mine) % #items + 1]
  local rating = ratings[counter % #ratings + 1]
  counter = counter + 1
  local body = '{"ratings": [{"item_id": ' .. item .. ', "rating": ' .. rating .. '}]}'
  local headers = {["Content-Type"] = "application/json", ["Cookie"] = "latentrec_visitor=" ..
    visitor}
  return wrk.format("POST", "/ratings", headers, body)
end
"""
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a dot model directory (else one is trained)")
    p.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    p.add_argument("--phases", default="durability,load", help="durability, load or both")
    p.add_argument("--postgres", help="an empty PostgreSQL database's URL (else a new server)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--port", type=int, default=0, help="the service's port (0: a free one)")
    p.add_argument("--kills", type=int, default=5, help="kill -9's of the server (durability)")
    p.add_argument(
        "--kill-after",
        default="1,5",
        help="MIN,MAX seconds of load before each kill, drawn uniformly (durability)",
    )
    p.add_argument("--durability-clients", type=int, default=8)
    p.add_argument("--batch", type=int, default=1, help="ratings per POST (durability)")
    p.add_argument("--seconds", type=float, default=20.0, help="each load run's length")
    p.add_argument("--warmup", type=float, default=2.0, help="load before each run, not counted")
    p.add_argument("--clients", type=int, default=8, help="connections of each load run")
    p.add_argument("--visitors", type=int, default=64, help="visitors sharing the POST load")
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    args.backends = _choices(args.backends, BACKENDS, "--backends")
    args.phases = _choices(args.phases, PHASES, "--phases")
    low, _, high = args.kill_after.partition(",")
    args.kill_after = (float(low), float(high or low))
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "python"
    elif args.tool == "wrk" and not shutil.which("wrk"):
        p.error("--tool wrk: wrk is not installed (apt-get install -y wrk)")
    return args


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{flag}: choose from {', '.join(allowed)}, got {text!r}")
    return chosen


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- set-up


def latentrec(*arguments: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`latentrec ARGUMENTS` in a child process; a failure ends the benchmark with its stderr."""
    command = [sys.executable, "-m", "latentrec", *arguments]
    done = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_server(folder: Path) -> Iterator[tuple[str, str]]:
    """A throwaway PostgreSQL server, started as the tests start theirs (pytest-postgresql's
    executor running tests/pg_ctl.sh); yields its admin URL and the URL prefix of a database."""
    from pytest_postgresql.executors import PostgreSQLExecutor

    where = folder / "pg"
    where.mkdir()
    port = free_port()
    executor = PostgreSQLExecutor(
        executable=str(PG_CTL),
        host="127.0.0.1",
        port=port,
        datadir=str(where / "data"),
        unixsocketdir=str(where),
        logfile=str(where / "server.log"),
        startparams="-w",
        dbname="latentrec",
        user="postgres",
    )
    executor.start()
    try:
        base = f"postgres@127.0.0.1:{port}"
        yield f"postgresql://{base}/postgres", f"postgresql+psycopg://{base}/"
    finally:
        executor.stop()


class Databases:
    """A fresh, upgraded database per request: SQLite files in `folder`, PostgreSQL databases
    on the temporary server (or the one database at --postgres, reused)."""

    def __init__(self, folder: Path, postgres: str | None, stack: contextlib.ExitStack) -> None:
        self.folder, self.postgres, self.stack = folder, postgres, stack
        self.server: tuple[str, str] | None = None
        self.count = 0

    def fresh(self, backend: str) -> str:
        self.count += 1
        if backend == "sqlite":
            url = f"sqlite:///{self.folder / f'visitors-{self.count}.db'}"
        elif self.postgres:
            url = self.postgres
        else:
            if self.server is None:
                self.server = self.stack.enter_context(postgres_server(self.folder))
            import psycopg

            admin, prefix = self.server
            name = f"visitors_{self.count}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = prefix + name
        latentrec("db", "upgrade", "--db", url)
        return url


def postgres_available(args: argparse.Namespace) -> bool:
    if args.postgres:
        return True
    import glob

    return bool(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl") or shutil.which("pg_ctl"))


class Server:
    """`latentrec serve` in a process group of its own, so that one signal reaches the
    supervisor and every worker."""

    def __init__(
        self, model: Path, db: str | None, port: int, workers: int, log_path: Path
    ) -> None:
        self.command = [sys.executable, "-m", "latentrec", "serve", str(model)]
        self.command += ["--port", str(port), "--workers", str(workers)]
        if db is not None:
            self.command += ["--db", db]
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []  # seconds from start to a healthy answer

    def start(self, timeout: float = 180.0) -> None:
        started = time.perf_counter()
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise SystemExit(f"the server exited ({self.proc.returncode}):\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    self.starts.append(time.perf_counter() - started)
                    return
            time.sleep(0.1)
        self.kill()
        raise SystemExit(f"the server did not answer /health within {timeout:.0f} s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group; wait until none of it runs."""
        if self.proc is None:
            return
        group = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.proc.wait()
        deadline = time.perf_counter() + 20
        while _group_running(group) and time.perf_counter() < deadline:
            time.sleep(0.02)
        if _group_running(group):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def _group_running(group: int) -> bool:
    """Whether a live (not zombie) process of process group `group` remains."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def model_facts(model: Path) -> tuple[list[Any], list[float], list[Any]]:
    """The model's item ids (as JSON values), the half-stars inside its rating range, and
    its user ids."""
    from latentrec import Recommender
    from latentrec.serving import wire_id

    rec = Recommender.from_dir(model)
    low, high = rec.rating_range
    stars = [x / 2 for x in range(1, 11) if low <= x / 2 <= high]
    return [wire_id(i) for i in rec.items.ids], stars, [wire_id(u) for u in rec.users.ids]


# ----------------------------------------------------------------------------- durability


class Ledger:
    """What the durability clients sent and what came of it, shared by their threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acked: list[tuple[str, str, float]] = []  # (visitor, item, rating) with a 2xx
        self.unacked: list[tuple[str, str, float]] = []  # failed, the visitor known
        self.refused = 0  # connection refused: the server was down
        self.cut = 0  # sent, no answer: cut off by a kill (or a timeout)
        self.statuses: dict[int, int] = {}  # non-2xx answers by status
        self.replaced = 0  # a known visitor's cookie answered with a new visitor


def durability_client(
    index: int,
    base: str,
    items: list[Any],
    stars: list[float],
    args: argparse.Namespace,
    ledger: Ledger,
    stop: threading.Event,
) -> None:
    """POST /ratings until `stop`: one visitor (its own cookie) at a time, each (visitor, item)
    pair sent once, so an acknowledged rating is the only value its pair can hold."""
    rng = random.Random(args.seed * 1000 + index)
    visitor: str | None = None
    order: list[Any] = []
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.is_set():
            if visitor is None or len(order) < args.batch:
                visitor = None  # a new visitor: the next answer sets its cookie
                order = rng.sample(items, min(len(items), PER_VISITOR))
            chunk = [(order.pop(), rng.choice(stars)) for _ in range(args.batch)]
            body = {"ratings": [{"item_id": item, "rating": rating} for item, rating in chunk]}
            headers = {"Cookie": f"{COOKIE}={visitor}"} if visitor else {}
            sent = [(visitor, str(item), rating) for item, rating in chunk]
            try:
                response = client.post("/ratings", json=body, headers=headers)
            except httpx.TransportError as err:  # refused while down, or cut off by a kill
                with ledger.lock:
                    if isinstance(err, httpx.ConnectError):
                        ledger.refused += 1
                    else:
                        ledger.cut += 1
                    if visitor:
                        ledger.unacked.extend(sent)
                time.sleep(0.05)
                continue
            finally:
                client.cookies.clear()  # the cookie travels only as set above
            new = response.cookies.get(COOKIE)
            with ledger.lock:
                if not response.is_success:
                    ledger.statuses[response.status_code] = (
                        ledger.statuses.get(response.status_code, 0) + 1
                    )
                    if visitor:
                        ledger.unacked.extend(sent)
                    continue
                if new and visitor and new != visitor:
                    ledger.replaced += 1  # the service no longer knew the visitor
                if new:
                    visitor = new
                ledger.acked.extend((visitor, item, rating) for _, item, rating in sent)


def stored_rows(url: str) -> dict[tuple[str, str], float]:
    """Every (visitor, item) -> rating in the database, read directly."""
    from latentrec.database import Store

    with Store(url) as store:
        visitors, items, ratings = store.read_interactions()
    return {(v, i): float(r) for v, i, r in zip(visitors, items, ratings, strict=True)}


def missing(acked: list[tuple[str, str, float]], rows: dict[tuple[str, str], float]) -> dict:
    """Acknowledged ratings with no row, and with a row holding another value."""
    absent = wrong = 0
    for visitor, item, rating in acked:
        stored = rows.get((visitor, item))
        if stored is None:
            absent += 1
        elif not math.isclose(stored, rating, abs_tol=1e-6):
            wrong += 1
    return {"absent": absent, "wrong_value": wrong, "lost": absent + wrong}


def durability(
    backend: str,
    url: str,
    model: Path,
    items: list[Any],
    stars: list[float],
    args: argparse.Namespace,
    folder: Path,
) -> dict[str, Any]:
    rng = random.Random(args.seed)
    port = args.port or free_port()
    server = Server(model, url, port, args.workers, folder / f"serve-durability-{backend}.log")
    log(f"[durability {backend}] starting the server on port {port}")
    server.start()
    ledger, stop = Ledger(), threading.Event()
    clients = [
        threading.Thread(
            target=durability_client,
            args=(i, server.base, items, stars, args, ledger, stop),
            daemon=True,
        )
        for i in range(args.durability_clients)
    ]
    started = time.perf_counter()
    for client in clients:
        client.start()
    after_restart: list[dict[str, Any]] = []
    try:
        for kill in range(args.kills):
            time.sleep(rng.uniform(*args.kill_after))
            server.kill()
            with ledger.lock:
                before = list(ledger.acked)
            log(f"[durability {backend}] kill {kill + 1}/{args.kills}: {len(before):,} acked")
            server.start()
            check = missing(before, stored_rows(url))
            after_restart.append({"acknowledged": len(before), **check})
            log(
                f"[durability {backend}] restarted in {server.starts[-1]:.1f} s; "
                f"lost {check['lost']} of {len(before):,}"
            )
        time.sleep(rng.uniform(*args.kill_after))
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)
        server.stop()
    seconds = time.perf_counter() - started
    rows = stored_rows(url)
    final = missing(ledger.acked, rows)
    landed = sum(1 for v, i, _ in ledger.unacked if (v, i) in rows)
    result = {
        "backend": backend,
        "kills": args.kills,
        "clients": args.durability_clients,
        "batch": args.batch,
        "seconds": seconds,
        "acknowledged": len(ledger.acked),
        **final,
        "refused_requests": ledger.refused,
        "cut_off_requests": ledger.cut,
        "non_2xx": ledger.statuses,
        "unacknowledged_known_visitor": len(ledger.unacked),
        "unacknowledged_landed": landed,
        "visitors_replaced": ledger.replaced,
        "rows_in_database": len(rows),
        "restart_seconds": server.starts[1:],
        "after_each_restart": after_restart,
    }
    log(
        f"[durability {backend}] acknowledged {result['acknowledged']:,}, lost "
        f"{result['lost']}, refused {ledger.refused:,}, cut off {ledger.cut}, non-2xx "
        f"{ledger.statuses or 0}, unacknowledged that landed {landed}"
    )
    return result


# ----------------------------------------------------------------------------- load


def make_visitors(base: str, items: list[Any], stars: list[float], n: int) -> list[str]:
    """`n` new visitors, each made by a first POST /ratings (its answer's cookie)."""
    visitors = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for k in range(n):
            body = {"ratings": [{"item_id": items[k % len(items)], "rating": stars[-1]}]}
            response = client.post("/ratings", json=body)
            response.raise_for_status()
            visitors.append(response.cookies[COOKIE])
            client.cookies.clear()
    return visitors


def run_wrk(base: str, lua: Path, seconds: float, clients: int, extra: list[str]) -> dict:
    threads = min(2, clients)
    command = ["wrk", f"-t{threads}", f"-c{clients}", f"-d{max(1, round(seconds))}s"]
    command += ["--latency", "-s", str(lua), base]
    if extra:
        command += ["--", *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRKJSON "))
    raw = json.loads(line.removeprefix("WRKJSON "))
    duration = raw["duration_us"] / 1e6
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": duration,
        "requests_per_second": raw["requests"] / duration,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "non_2xx": raw["non_2xx"],
        "errors": sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors")),
        "timeouts": raw["timeouts"],
    }


def run_python(base: str, seconds: float, clients: int, make_request) -> dict:
    """`clients` threads, each with its own keep-alive connection, sending
    `make_request(client_index, counter)` -> (method, path, headers, json body) for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    bad = [0] * clients
    errors = [0] * clients
    stop = threading.Event()

    def worker(index: int) -> None:
        counter = 0
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop.is_set():
                method, path, headers, body = make_request(index, counter)
                counter += 1
                began = time.perf_counter()
                try:
                    response = client.request(method, path, headers=headers, json=body)
                except httpx.TransportError:
                    errors[index] += 1
                    continue
                finally:
                    client.cookies.clear()
                latencies[index].append(time.perf_counter() - began)
                if not response.is_success:
                    bad[index] += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    duration = time.perf_counter() - started
    every = sorted(x for part in latencies for x in part)

    def quantile(q: float) -> float:
        return every[min(len(every) - 1, int(q * len(every)))] * 1000 if every else math.nan

    return {
        "tool": "python",
        "requests": len(every),
        "seconds": duration,
        "requests_per_second": len(every) / duration,
        "p50_ms": quantile(0.50),
        "p90_ms": quantile(0.90),
        "p99_ms": quantile(0.99),
        "max_ms": every[-1] * 1000 if every else math.nan,
        "non_2xx": sum(bad),
        "errors": sum(errors),
        "timeouts": 0,
    }


def load_run(
    kind: str,
    base: str,
    args: argparse.Namespace,
    folder: Path,
    items: list[Any],
    stars: list[float],
    users: list[Any],
    visitors: list[str] | None = None,
) -> dict[str, Any]:
    """A warm-up then one measured run of `kind` ('users' or 'ratings')."""
    if args.tool == "wrk":
        if kind == "users":
            lua = folder / "users.lua"
            lua.write_text(USERS_LUA.read_text() + WRK_DONE)
            extra: list[str] = []
        else:
            lua = folder / "ratings.lua"
            lua.write_text(RATINGS_LUA + WRK_DONE)
            (folder / "visitors.txt").write_text("\n".join(visitors or []) + "\n")
            cycle = items[: min(len(items), PER_VISITOR)]
            (folder / "items.txt").write_text("\n".join(json.dumps(i) for i in cycle) + "\n")
            threads = min(2, args.clients)
            rated = ",".join(f"{s:g}" for s in stars)
            extra = [str(folder / "visitors.txt"), str(folder / "items.txt"), str(threads), rated]
        if args.warmup > 0:
            run_wrk(base, lua, args.warmup, args.clients, extra)
        return run_wrk(base, lua, args.seconds, args.clients, extra)

    rng = random.Random(args.seed)
    if kind == "users":

        def make_request(index: int, counter: int):
            user = rng.choice(users)
            return "GET", f"/users/{user}/recommendations?k=10", {}, None
    else:
        cycle = items[: min(len(items), PER_VISITOR)]
        assert visitors
        mine = [visitors[k :: args.clients] or visitors for k in range(args.clients)]

        def make_request(index: int, counter: int):
            own = mine[index]
            visitor = own[counter % len(own)]
            item = cycle[counter // len(own) % len(cycle)]
            body = {"ratings": [{"item_id": item, "rating": stars[counter % len(stars)]}]}
            return "POST", "/ratings", {"Cookie": f"{COOKIE}={visitor}"}, body

    if args.warmup > 0:
        run_python(base, args.warmup, args.clients, make_request)
    return run_python(base, args.seconds, args.clients, make_request)


def load(
    databases: Databases,
    backends: list[str],
    model: Path,
    items: list[Any],
    stars: list[float],
    users: list[Any],
    args: argparse.Namespace,
    folder: Path,
) -> list[dict[str, Any]]:
    """Each server configuration in turn: no database (GET recommendations), then each
    backend (GET recommendations on SQLite only, POST /ratings on every backend)."""
    runs = []
    for db in [None, *backends]:
        url = None if db is None else databases.fresh(db)
        name = db or "none"
        port = args.port or free_port()
        server = Server(model, url, port, args.workers, folder / f"serve-load-{name}.log")
        server.start()
        try:
            kinds = ["users"] if db is None else ["ratings"]
            if db == "sqlite":
                kinds = ["users", "ratings"]
            for kind in kinds:
                visitors = None
                if kind == "ratings":
                    visitors = make_visitors(server.base, items, stars, args.visitors)
                result = load_run(kind, server.base, args, folder, items, stars, users, visitors)
                endpoint = "GET /users/{id}/recommendations" if kind == "users" else "POST /ratings"
                run = {"endpoint": endpoint, "database": name, "workers": args.workers}
                run |= {"clients": args.clients} | result
                runs.append(run)
                log(
                    f"[load] {endpoint}, database {name}: {result['requests_per_second']:,.0f} "
                    f"requests/s, p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
                    f"non-2xx {result['non_2xx']}, errors {result['errors']}"
                )
        finally:
            server.stop()
    return runs


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    backends = list(args.backends)
    skipped = []
    if "postgresql" in backends and not postgres_available(args):
        backends.remove("postgresql")
        skipped.append("postgresql (not installed: apt-get install postgresql, or --postgres)")
        log("PostgreSQL is not installed and no --postgres URL given: SQLite only")
    with tempfile.TemporaryDirectory(prefix="latentrec-visitors-load-") as name:
        folder = Path(name)
        os.chmod(folder, 0o755)
        model = args.model
        if model is None:
            model = folder / "model"
            log("training a dot model on the bundled data")
            latentrec("train", "--model", "dot", "--out", str(model))
        items, stars, users = model_facts(model)
        report = _report.machine() | {
            "context": (
                f"`latentrec serve` with {args.workers} workers on loopback; load from "
                f"{args.tool}. Durability: {args.durability_clients} clients, "
                f"{args.kills} kill -9's of the server's process group."
            ),
            "tool": args.tool,
            "backends": backends,
            "skipped": skipped,
            "durability": [],
            "load": [],
        }
        with contextlib.ExitStack() as stack:
            databases = Databases(folder, args.postgres, stack)
            if "durability" in args.phases:
                for backend in backends:
                    url = databases.fresh(backend)
                    report["durability"].append(
                        durability(backend, url, model, items, stars, args, folder)
                    )
            if "load" in args.phases:
                report["load"] = load(databases, backends, model, items, stars, users, args, folder)
    _report.write(args.out, "visitors_load", report, "Visitors' ratings under load", table(report))


def table(report: dict[str, Any]) -> str:
    parts = []
    if report["durability"]:
        parts.append(
            "| database | kills | acknowledged | lost | refused | cut off | non-2xx | "
            "unacknowledged, landed |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        for run in report["durability"]:
            parts.append(
                f"| {run['backend']} | {run['kills']} | {run['acknowledged']:,} | {run['lost']} "
                f"| {run['refused_requests']:,} | {run['cut_off_requests']} | "
                f"{sum(run['non_2xx'].values())} | {run['unacknowledged_landed']} |"
            )
    if report["load"]:
        if parts:
            parts.append("")
        parts.append(
            "| endpoint | database | requests/s | p50 ms | p90 ms | p99 ms | non-2xx | errors |"
            "\n|---|---|---:|---:|---:|---:|---:|---:|"
        )
        for run in report["load"]:
            parts.append(
                f"| `{run['endpoint']}` | {run['database']} | "
                f"{run['requests_per_second']:,.0f} | {run['p50_ms']:.2f} | {run['p90_ms']:.2f} "
                f"| {run['p99_ms']:.2f} | {run['non_2xx']} | {run['errors']} |"
            )
        plain = [r for r in report["load"] if r["endpoint"].startswith("GET")]
        if len(plain) == 2:
            ratio = plain[1]["requests_per_second"] / plain[0]["requests_per_second"]
            parts.append(
                f"\nGET recommendations with a database over without: {ratio:.3f}x requests/s"
            )
    return "\n".join(parts)


if __name__ == "__main__":
    main()
