#!/usr/bin/env bash
# Load on loopback: a 2-worker server and Debian's wrk, 60 s per endpoint.
#   bash benchmarks/load.sh [SECONDS]
# Needs wrk (apt-get install -y wrk). Trains models/bench first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
port=8765
command -v wrk >/dev/null || { echo "needs wrk: apt-get install -y wrk" >&2; exit 2; }
test -d models/bench || .venv/bin/latentrec train --out models/bench >/dev/null
.venv/bin/latentrec serve models/bench --port "$port" --workers 2 >/tmp/latentrec-load.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
echo "== GET /users/{id}/recommendations, ${seconds}s"
wrk -t2 -c8 -d"${seconds}s" --latency -s benchmarks/load/users.lua "http://127.0.0.1:$port"
echo "== POST /recommendations with 20 ratings, ${seconds}s"
wrk -t2 -c8 -d"${seconds}s" --latency -s benchmarks/load/foldin.lua "http://127.0.0.1:$port"
