"""Shared by the benchmark scripts: machine facts and writing dated JSON + Markdown results."""

from __future__ import annotations

import json
import os
import platform
import shlex
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
