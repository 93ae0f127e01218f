"""Models swapped under load: publishes into a running service drop no request and keep p99.

Set-up: --variants small dot models trained on the bundled data (`latentrec train --epochs
--seed --factors --out`, so saved by latentrec.save), the first published with
latentrec.publish into a temporary folder of versions, and `latentrec serve FOLDER/current
--workers 2` as a child process in a process group of its own.

Two load runs of --seconds each (after --warmup seconds not counted), alternating GET
/users/{id}/recommendations (random users) and GET /items/{id}/similar (random items), from
Debian's wrk when it is installed, else from Python threads with httpx:

- "none": no publishes;
- "swaps": --publishes publishes (latentrec.publish, in this process) spread evenly over the
  run, cycling the variants, plus one broken publish mid-run: a version directory with an empty
  config.json, `current` pointed at it as publish does (a temporary symbolic link renamed over
  it), followed later by the next valid publish. The old model must keep serving meanwhile.

Reported for each run: requests, requests/s, p50/p90/p99, non-2xx, socket errors (connect,
read, write) and timeouts, the distinct versions /health reported when polled every 0.5 s, and
whether the broken version was ever served; then p99(swaps) / p99(none).

    .venv/bin/python benchmarks/swap_load.py                        # 2 x 60 s, 10 publishes
    .venv/bin/python benchmarks/swap_load.py --seconds 8 --publishes 3
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _report
from visitors_load import (
    LUA_LINES,
    WRK_DONE,
    Server,
    free_port,
    latentrec,
    log,
    model_facts,
    run_python,
    run_wrk,
)

# wrk: alternately a user's recommendations and an item's similar items; args: users file,
# items file (one JSON id a line; text ids are sent as they are)
GET_LUA = (
    """
math.randomseed(42)
"""
    + LUA_LINES
    + """
local users, items, counter = {}, {}, 0
init = function(args)
  users = lines(args[1])
  items = lines(args[2])
end

request = function()
  counter = counter + 1
  if counter % 2 == 0 then
    return wrk.format("GET", "/users/" .. users[math.random(1, #users)] .. "/recommendations?k=10")
  end
  return wrk.format("GET", "/items/" .. items[math.random(1, #items)] .. "/similar?k=10")
end
"""
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="each load run's length")
    p.add_argument("--warmup", type=float, default=2.0, help="load before each run, not counted")
    p.add_argument("--publishes", type=int, default=10, help="valid publishes in the swap run")
    p.add_argument("--variants", type=int, default=3, help="models trained (2 or more)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, default=8, help="connections of each load run")
    p.add_argument("--port", type=int, default=0, help="the service's port (0: a free one)")
    p.add_argument("--poll", type=float, default=0.5, help="seconds between /health polls")
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    if args.variants < 2:
        p.error("--variants: 2 or more")
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "python"
    elif args.tool == "wrk" and not shutil.which("wrk"):
        p.error("--tool wrk: wrk is not installed (apt-get install -y wrk)")
    return args


def train_variants(args: argparse.Namespace, folder: Path) -> list[Path]:
    """`--variants` dot models: other seeds, and every second one other factors."""
    models = []
    for k in range(args.variants):
        out = folder / f"variant-{k}"
        options = ["--model", "dot", "--epochs", str(args.epochs), "--seed", str(args.seed + k)]
        if k % 2:
            options += ["--factors", "32"]
        log(f"training variant {k + 1}/{args.variants}: {' '.join(options)}")
        latentrec("train", *options, "--out", str(out))
        models.append(out)
    return models


def broken_publish(root: Path) -> Path:
    """A version directory that is no model (an empty config.json), `current` pointed at it
    the way publish does it: a temporary symbolic link renamed over the old one."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    # a proper version name: publish refuses to move a `current` that points elsewhere
    version = root / f"v-{stamp}-{secrets.token_hex(3)}"
    version.mkdir()
    (version / "config.json").write_text("")
    temporary = root / f".current.broken-{secrets.token_hex(4)}"
    os.symlink(version.name, temporary)
    os.replace(temporary, root / "current")
    return version


class HealthPoller(threading.Thread):
    """GET /health every `every` seconds: each answer's version (or the failure) and time."""

    def __init__(self, base: str, every: float) -> None:
        super().__init__(daemon=True)
        self.base, self.every = base, every
        self.stop = threading.Event()
        self.seen: list[tuple[float, str]] = []
        self.started = time.perf_counter()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while not self.stop.wait(self.every):
                when = time.perf_counter() - self.started
                try:
                    response = client.get("/health")
                    if response.is_success:
                        version = str(response.json().get("version"))
                    else:
                        version = f"HTTP {response.status_code}"
                except httpx.HTTPError as err:
                    version = f"error: {type(err).__name__}"
                self.seen.append((when, version))

    def versions(self) -> list[str]:
        """Distinct versions in the order first seen."""
        return list(dict.fromkeys(v for _, v in self.seen))


class Publisher(threading.Thread):
    """Publish the variants in turn at evenly spread moments, and the broken version between
    the middle two publishes; log what was published when."""

    def __init__(self, root: Path, saved: list[Any], seconds: float, publishes: int) -> None:
        super().__init__(daemon=True)
        self.root, self.saved = root, saved
        gap = seconds / (publishes + 1)
        self.plan = [(gap * (k + 1), "valid", k) for k in range(publishes)]
        self.plan.append((gap * (publishes // 2 + 0.5), "broken", -1))
        self.plan.sort()
        self.events: list[dict[str, Any]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from latentrec import publish

        started = time.perf_counter()
        try:
            for at, kind, k in self.plan:
                time.sleep(max(0.0, at - (time.perf_counter() - started)))
                began = time.perf_counter()
                if kind == "broken":
                    version = broken_publish(self.root)
                else:
                    model, ratings, info = self.saved[(k + 1) % len(self.saved)]
                    version = publish(model, self.root, ratings, info)
                self.events.append(
                    {
                        "at_s": round(began - started, 3),
                        "kind": kind,
                        "version": version.name,
                        "publish_s": round(time.perf_counter() - began, 3),
                    }
                )
                log(f"  [{began - started:5.1f} s] published {kind} {version.name}")
        except BaseException as err:  # reported by the main thread
            self.error = err


def load_once(
    base: str, args: argparse.Namespace, folder: Path, users: list[Any], items: list[Any]
) -> dict[str, Any]:
    """One measured run of --seconds (the warm-up is the caller's)."""
    if args.tool == "wrk":
        lua = folder / "get.lua"
        lua.write_text(GET_LUA + WRK_DONE)
        extra = [str(folder / "users.txt"), str(folder / "items.txt")]
        return run_wrk(base, lua, args.seconds, args.clients, extra)
    rng = random.Random(args.seed)

    def make_request(index: int, counter: int):
        if counter % 2:
            return "GET", f"/users/{rng.choice(users)}/recommendations?k=10", {}, None
        return "GET", f"/items/{rng.choice(items)}/similar?k=10", {}, None

    return run_python(base, args.seconds, args.clients, make_request)


def warm_up(base: str, args: argparse.Namespace, folder: Path, users, items) -> None:
    if args.warmup <= 0:
        return
    seconds, args.seconds = args.seconds, args.warmup
    try:
        load_once(base, args, folder, users, items)
    finally:
        args.seconds = seconds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import latentrec as lr

    with tempfile.TemporaryDirectory(prefix="latentrec-swap-load-") as name:
        folder = Path(name)
        os.chmod(folder, 0o755)
        variants = train_variants(args, folder)
        saved = [tuple(lr.load(path)) for path in variants]
        # ids every variant knows: each seed splits train/test differently, and an id absent
        # from one variant's training ratings would answer 404 while that variant serves
        facts = [model_facts(path) for path in variants]
        items = [i for i in facts[0][0] if all(i in set(f[0]) for f in facts[1:])]
        users = [u for u in facts[0][2] if all(u in set(f[2]) for f in facts[1:])]
        log(f"{len(users)} users and {len(items)} items known to every variant")
        (folder / "users.txt").write_text("\n".join(str(u) for u in users) + "\n")
        (folder / "items.txt").write_text("\n".join(str(i) for i in items) + "\n")
        root = folder / "models"
        model, ratings, info = saved[0]
        first = lr.publish(model, root, ratings, info)
        log(f"published {first.name}")
        port = args.port or free_port()
        server = Server(root / "current", None, port, args.workers, folder / "serve.log")
        log(f"starting `latentrec serve {root}/current --workers {args.workers}` on port {port}")
        server.start()
        runs: list[dict[str, Any]] = []
        try:
            for kind in ("none", "swaps"):
                warm_up(server.base, args, folder, users, items)
                log(f"[{kind}] {args.seconds:g} s of load")
                log_start = server.log_path.stat().st_size
                poller = HealthPoller(server.base, args.poll)
                publisher = None
                poller.start()
                if kind == "swaps":
                    publisher = Publisher(root, saved, args.seconds, args.publishes)
                    publisher.start()
                result = load_once(server.base, args, folder, users, items)
                if publisher is not None:
                    publisher.join()
                    if publisher.error is not None:
                        raise publisher.error
                # a publish at the very end: let the workers notice before the last polls stop
                time.sleep(args.poll * 2 if kind == "swaps" else 0)
                poller.stop.set()
                poller.join()
                versions = poller.versions()
                statuses, log_lines = served_statuses(server.log_path, log_start)
                events = publisher.events if publisher else []
                broken = [e["version"] for e in events if e["kind"] == "broken"]
                valid = [e["version"] for e in events if e["kind"] == "valid"]
                run = {
                    "run": kind,
                    "workers": args.workers,
                    "clients": args.clients,
                    **result,
                    "publishes": len(valid),
                    "broken_publishes": len(broken),
                    "versions_seen": versions,
                    "published_versions_seen": sum(v in versions for v in valid),
                    "broken_served": any(v in versions for v in broken),
                    "health_polls": len(poller.seen),
                    "health_failures": sum(
                        1 for _, v in poller.seen if v.startswith(("error", "HTTP"))
                    ),
                    "non_2xx_by_status": statuses,
                    "server_log_notes": log_lines[-20:],
                    "events": events,
                }
                runs.append(run)
                log(summary(run))
        finally:
            server.stop()
        serve_log = (folder / "serve.log").read_text(errors="replace")
    report = _report.machine() | {
        "context": (
            f"`latentrec serve MODELS/current` with {args.workers} workers on loopback; load "
            f"from {args.tool} ({args.clients} connections), GET /users/{{id}}/recommendations "
            f"and GET /items/{{id}}/similar alternately; {args.publishes} publishes and one "
            f"broken one during the swap run; {args.variants} dot variants, {args.epochs} epochs."
        ),
        "tool": args.tool,
        "runs": runs,
        "p99_ratio": runs[1]["p99_ms"] / runs[0]["p99_ms"] if runs[0]["p99_ms"] else None,
        "serve_log_tail": serve_log[-4000:],
    }
    text = table(report)
    print(text)
    _report.write(args.out, "swap_load", report, "Models swapped under load", text)


def served_statuses(path: Path, start: int) -> tuple[dict[str, int], list[str]]:
    """From the server's log since byte `start`: the count of each non-2xx status in its
    access lines, and its other lines that are not plain INFO (warnings, failed loads)."""
    with path.open("rb") as handle:
        handle.seek(start)
        text = handle.read().decode(errors="replace")
    statuses: dict[str, int] = {}
    notes = []
    for line in text.splitlines():
        match = re.search(r'" (\d{3}) ', line)
        if match and '"GET ' in line:
            if not match.group(1).startswith("2"):
                statuses[match.group(1)] = statuses.get(match.group(1), 0) + 1
        elif line.strip() and not line.startswith("INFO:"):
            notes.append(line.strip()[:300])
    return statuses, notes


def summary(run: dict[str, Any]) -> str:
    return (
        f"[{run['run']}] {run['requests']:,} requests, {run['requests_per_second']:,.0f}/s, "
        f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, non-2xx {run['non_2xx']}"
        f"{' ' + str(run['non_2xx_by_status']) if run['non_2xx_by_status'] else ''}, "
        f"errors {run['errors']}, "
        f"timeouts {run['timeouts']}; versions seen "
        f"{len(run['versions_seen'])} ({run['published_versions_seen']} of {run['publishes']} "
        f"published), broken served: {run['broken_served']}"
    )


def table(report: dict[str, Any]) -> str:
    rows = [
        "| run | publishes | requests | requests/s | p50 ms | p90 ms | p99 ms | non-2xx | "
        "socket errors | timeouts | versions seen | broken served |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in report["runs"]:
        rows.append(
            f"| {run['run']} | {run['publishes']} + {run['broken_publishes']} broken | "
            f"{run['requests']:,} | {run['requests_per_second']:,.0f} | {run['p50_ms']:.2f} | "
            f"{run['p90_ms']:.2f} | {run['p99_ms']:.2f} | {run['non_2xx']} | {run['errors']} | "
            f"{run['timeouts']} | {len(run['versions_seen'])} | {run['broken_served']} |"
        )
    ratio = report["p99_ratio"]
    rows.append(f"\np99 with swaps / without: {ratio:.2f}x" if ratio else "\np99 ratio: n/a")
    for run in report["runs"]:
        rows.append(f"\n{run['run']}: versions seen on /health: {', '.join(run['versions_seen'])}")
        if run["non_2xx_by_status"]:
            rows.append(f"non-2xx by status (server log): {run['non_2xx_by_status']}")
        for note in run["server_log_notes"]:
            rows.append(f"    server: {note}")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
