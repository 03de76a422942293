#!/usr/bin/env bash
# Where a request's time goes at c=1: the user and kernel CPU each request costs nginx-proxy
# (the floor) and llmgate, side by side, with oha's p50.
#
#   benches/load/cpu-split.sh                 # json and stream, 3 rounds of 20,000 requests each
#   ROUNDS=1 REQUESTS=5000 benches/load/cpu-split.sh
#
# At c=1 a request's latency is mostly CPU time on the gateway's core: its kernel part
# (loopback TCP, both sides' wake-ups, epoll) is the same for any proxy that makes the same
# system calls, so the gap between two proxies is their user CPU. This script reads each
# server's user and system time (/proc/<pid>/stat, clock ticks) before and after a fixed
# number of c=1 requests and prints them per request.
#
# It starts the nginx mock upstream (CPU 0) unless it is already up, nginx-proxy (CPU 1) from
# ../shared/bench, and llmgate (CPU 1, RUST_LOG=warn) on 127.0.0.1:8080 with
# benches/load/llmgate.toml; oha runs on CPU 0. It stops what it started, by PID. Nothing else
# should run on the machine meanwhile.
# Environment: LLMGATE_BIN (target/release/llmgate), BENCH (../shared/bench), ROUNDS (3),
# REQUESTS (20000), MODES ("json stream").
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH="${BENCH:-$REPO/../shared/bench}"
LLMGATE_BIN="${LLMGATE_BIN:-$REPO/target/release/llmgate}"
ROUNDS="${ROUNDS:-3}" REQUESTS="${REQUESTS:-20000}" MODES="${MODES:-json stream}"
export BENCH_RUN="${BENCH_RUN:-/tmp/bench-run}"
# shellcheck source=/dev/null
. "$BENCH/lib/common.sh"   # log, die, wait_http
command -v oha >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || die "oha not found: cargo install oha --locked"
[[ -x "$LLMGATE_BIN" ]] || die "no llmgate binary at $LLMGATE_BIN (cargo build --release)"
for port in 8080 8090; do
  if curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/"; then
    die "something already listens on 127.0.0.1:$port; stop it first (this script only stops what it started)"
  fi
done
TICKS_PER_S="$(getconf CLK_TCK)"
WORK="$(mktemp -d)"
GW_PID="" STARTED_MOCK=0 STARTED_PROXY=0

cleanup() {
  [[ -n "$GW_PID" ]] && kill "$GW_PID" 2>/dev/null || true
  ((STARTED_PROXY)) && "$BENCH/peers/nginx-proxy.sh" stop >/dev/null 2>&1 || true
  ((STARTED_MOCK)) && "$BENCH/upstream/start.sh" stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! curl -s -o /dev/null -m 1 http://127.0.0.1:9100/v1/models; then
  "$BENCH/upstream/start.sh" >/dev/null
  STARTED_MOCK=1
fi
NGINX_MASTER="$("$BENCH/peers/nginx-proxy.sh" start | tail -1)"
STARTED_PROXY=1
taskset -c 1 env RUST_LOG=warn "$LLMGATE_BIN" serve --config "$HERE/llmgate.toml" \
  --listen 127.0.0.1:8080 >"$WORK/llmgate.log" 2>&1 &
GW_PID=$!
wait_http http://127.0.0.1:8080/healthz 10 || die "llmgate did not come up: $(cat "$WORK/llmgate.log")"
NGINX_PIDS="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"

# user and system ticks of the listed processes, summed
ticks() { for pid in "$@"; do cut -d' ' -f14,15 "/proc/$pid/stat"; done | awk '{u+=$1; s+=$2} END {print u, s}'; }

# measure NAME URL BODY [oha header args...]: one row of per-request figures
measure() {
  local name=$1 url=$2 body=$3; shift 3
  local pids; if [[ $name == nginx-proxy ]]; then pids=$NGINX_PIDS; else pids=$GW_PID; fi
  local u0 s0 u1 s1
  # shellcheck disable=SC2086
  read -r u0 s0 < <(ticks $pids)
  taskset -c 0 oha -n "$REQUESTS" -c 1 --no-tui --output-format json -m POST \
    -H "content-type: application/json" "$@" -D "$body" "$url" >"$WORK/oha.json"
  # shellcheck disable=SC2086
  read -r u1 s1 < <(ticks $pids)
  python3 - "$WORK/oha.json" "$name" "$REQUESTS" "$TICKS_PER_S" "$((u1 - u0))" "$((s1 - s0))" <<'PY'
import json, sys
path, name, n, hz, user, system = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
oha = json.load(open(path))
codes = oha.get("statusCodeDistribution", {})
assert set(codes) == {"200"}, f"{name}: not all answers were 200: {codes}"
per = lambda ticks: ticks * 1e6 / hz / n
print(f"| {name} | {oha['latencyPercentiles']['p50'] * 1e6:.0f} | {per(user):.1f} | {per(system):.1f} | {per(user + system):.1f} |")
PY
}

for mode in $MODES; do
  model=gpt-4o-mini upstream=/v1 stream=""
  if [[ $mode == stream ]]; then model=gpt-4o-mini-stream upstream=/stream/v1 stream=',"stream":true'; fi
  body="$WORK/$mode.json"
  printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":32%s}' \
    "$model" "$stream" >"$body"
  echo
  echo "$mode, c=1, $REQUESTS requests per row (µs per request)"
  echo
  echo "| server | p50 | user CPU | kernel CPU | CPU |"
  echo "|---|--:|--:|--:|--:|"
  for _ in $(seq "$ROUNDS"); do
    measure nginx-proxy http://127.0.0.1:8090/v1/chat/completions "$body" \
      -H "X-Upstream: http://127.0.0.1:9100$upstream"
    measure llmgate http://127.0.0.1:8080/v1/chat/completions "$body"
  done
done
