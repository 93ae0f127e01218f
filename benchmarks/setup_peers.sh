#!/usr/bin/env bash
# Create (if missing) the peer-benchmark venv benchmarks/.peers and install
# fastai (required) plus scikit-surprise, cornac, implicit and myfm (optional, best effort).
# Idempotent: re-running only (re)checks the installs. Runnable from any cwd.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV="benchmarks/.peers"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    echo "setup_peers: creating venv $VENV"
    python3 -m venv "$VENV"
fi

# Required peer: fastai on a pinned torch (wheels come from the machine's pip config).
"$PY" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" "fastai==2.8.12"

# Optional peers: keep going (with a warning) if either fails to install.
warn() { echo "setup_peers: WARNING: $*" >&2; }

if ! "$PY" -m pip install --quiet "scikit-surprise==1.1.5"; then
    warn "scikit-surprise==1.1.5 failed to install; surprise peer unavailable"
fi
if ! "$PY" -m pip install --quiet "cornac>=3,<4"; then
    warn "cornac 3.x failed to install; cornac peer unavailable"
fi
if ! "$PY" -m pip install --quiet "implicit==0.7.3" threadpoolctl; then
    warn "implicit 0.7.3 failed to install; implicit peer (ranking.py, als_scale.py) unavailable"
fi
# myfm 0.4.0 imports pkg_resources, which setuptools 81 and later no longer ship
if ! "$PY" -m pip install --quiet "myfm==0.4.0" "setuptools<81"; then
    warn "myfm 0.4.0 failed to install; myFM peers (compare.py --cases fm) unavailable"
fi

"$PY" - <<'PY'
import importlib
for name in ("torch", "fastai", "surprise", "cornac", "implicit", "myfm"):
    try:
        mod = importlib.import_module(name)
        print(f"setup_peers: {name} {getattr(mod, '__version__', '?')} OK")
    except Exception as exc:  # report, don't fail: only fastai is required
        print(f"setup_peers: {name} NOT importable ({type(exc).__name__}: {exc})")
PY
"$PY" -c "import fastai, torch" # fail the script if the required peer is broken
echo "setup_peers: done ($VENV)"
