#!/usr/bin/env bash
# Chaos soak of the release binary (not part of the test suite):
#   bash benches/soak/run.sh [DURATION_SECS (120)] [CLIENTS (200)]
# Builds the release binary, runs benches/soak/soak.py (standard library only) and writes
# the report to benches/soak/results/<UTC stamp>.md. Loopback only; exit 0 when every
# check passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DURATION="${1:-120}"
CLIENTS="${2:-200}"
cargo build --release --locked
# Many short client connections: allow enough descriptors for the clients and the mock.
ulimit -n 65536 2>/dev/null || true
STAMP="$(date -u +%Y-%m-%d-%H%M)"
python3 benches/soak/soak.py --bin target/release/llmgate --duration "$DURATION" \
    --clients "$CLIENTS" --report "benches/soak/results/$STAMP.md"
