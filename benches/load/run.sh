#!/usr/bin/env bash
# Load-test llmgate with the shared gateway benchmark harness (bench/run-all.sh).
#
#   benches/load/run.sh                       # full matrix: direct floor + llmgate, json+stream, c=1/32/256
#   DURATION=5 RUNS=1 benches/load/run.sh     # quick look
#
# What it does:
#   1. starts the nginx mock upstream (bench/upstream/start.sh, CPU 0) unless it is already up;
#   2. starts llmgate pinned to CPU 1 with RUST_LOG=warn (no access log) on benches/load/llmgate.toml,
#      recording its PID in $BENCH_RUN/llmgate.pid and its stderr in $BENCH_RUN/llmgate.stderr;
#   3. runs bench/run-all.sh with the spec 'llmgate=http://127.0.0.1:8080/v1;pidfile=...'
#      (the harness validates every cell and samples the gateway's RSS/CPU by that PID);
#   4. sends $OVERHEAD_SAMPLES sequential non-streaming and streaming requests with curl and records the
#      gateway's x-llmgate-overhead-ms header and curl's total time ($RESULTS_DIR/<stamp>.overhead.tsv);
#   5. stops what it started, by recorded PID only.
#
# Environment (all optional):
#   BENCH (<repo>/../shared/bench)  LLMGATE_BIN (<repo>/target/release/llmgate)  CONFIG (benches/load/llmgate.toml)
#   RESULTS_DIR (/tmp/llmgate-bench-results)  BENCH_RUN (/tmp/bench-run)  OVERHEAD_SAMPLES (20)
#   LLMGATE_COMMIT (free text naming the source the binary was built from, for the report)
#   and the harness knobs, passed through: DURATION (15) RUNS (3) WARMUP (5) CONCURRENCY ("1 32 256")
#   MODES ("nonstream stream") LOADGEN_CPUS (0) GATEWAY_CPUS (1) NO_DIRECT (0)
# The report is written by the harness to $RESULTS_DIR/<stamp>.md (+ .jsonl, .env); copy the .md into
# benches/load/results/ to keep it.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH="${BENCH:-$REPO/../shared/bench}"
LLMGATE_BIN="${LLMGATE_BIN:-$REPO/target/release/llmgate}"
CONFIG="${CONFIG:-$HERE/llmgate.toml}"
OVERHEAD_SAMPLES="${OVERHEAD_SAMPLES:-20}"
export DURATION="${DURATION:-15}" RUNS="${RUNS:-3}" WARMUP="${WARMUP:-5}"
export CONCURRENCY="${CONCURRENCY:-1 32 256}" MODES="${MODES:-nonstream stream}"
export LOADGEN_CPUS="${LOADGEN_CPUS:-0}" GATEWAY_CPUS="${GATEWAY_CPUS:-1}"
export RESULTS_DIR="${RESULTS_DIR:-/tmp/llmgate-bench-results}"
export BENCH_RUN="${BENCH_RUN:-/tmp/bench-run}"
LISTEN=127.0.0.1:8080   # must match [server] listen in $CONFIG
PIDFILE="$BENCH_RUN/llmgate.pid"
GWLOG="$BENCH_RUN/llmgate.stderr"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$LLMGATE_BIN" ]] || die "no llmgate binary at $LLMGATE_BIN (cargo build --release)"
[[ -x "$BENCH/run-all.sh" ]] || die "no harness at $BENCH"
command -v oha >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || die "oha not found: cargo install oha --locked --version 1.16.0"
mkdir -p "$BENCH_RUN" "$RESULTS_DIR"

STARTED_NGINX=0
GW_PID=""
# Stop by the PID we recorded: TERM, wait up to 10 s, then KILL that PID only.
stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  if [[ -n "$GW_PID" ]]; then log "stopping llmgate (pid $GW_PID)"; stop_pid "$GW_PID"; rm -f "$PIDFILE"; fi
  if ((STARTED_NGINX)); then log "stopping the mock upstream"; "$BENCH/upstream/start.sh" stop || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. mock upstream
if ! curl -s -o /dev/null -m 1 http://127.0.0.1:9100/v1/models; then
  log "starting the mock upstream (CPU $LOADGEN_CPUS)"
  "$BENCH/upstream/start.sh" >/dev/null
  STARTED_NGINX=1
fi

# 2. llmgate on its own core
if curl -s -o /dev/null -m 1 "http://$LISTEN/healthz"; then
  die "something already listens on $LISTEN; stop it first (this script only stops what it started)"
fi
"$LLMGATE_BIN" check --config "$CONFIG" >/dev/null
log "starting llmgate: taskset -c $GATEWAY_CPUS $LLMGATE_BIN serve --config $CONFIG (RUST_LOG=warn)"
# taskset and env exec, so $! is llmgate itself.
taskset -c "$GATEWAY_CPUS" env RUST_LOG=warn "$LLMGATE_BIN" serve --config "$CONFIG" \
  </dev/null >"$GWLOG" 2>&1 &
GW_PID=$!
echo "$GW_PID" >"$PIDFILE"
for ((i = 0; i < 100; i++)); do
  curl -s -o /dev/null -m 1 "http://$LISTEN/healthz" && break
  kill -0 "$GW_PID" 2>/dev/null || die "llmgate exited; see $GWLOG: $(tail -5 "$GWLOG")"
  sleep 0.1
done
curl -s -o /dev/null -m 1 "http://$LISTEN/healthz" || die "llmgate did not come up in 10 s; see $GWLOG"
log "llmgate up (pid $GW_PID, affinity $(taskset -pc "$GW_PID" | awk '{print $NF}'), threads $(ls /proc/$GW_PID/task | wc -l))"

# 3. the harness (direct floor + llmgate)
STAMP_BEFORE="$(ls -1 "$RESULTS_DIR"/*.md 2>/dev/null | tail -1 || true)"
rc=0
"$BENCH/run-all.sh" "llmgate=http://$LISTEN/v1;pidfile=$PIDFILE" || rc=$?
MD="$(ls -1 "$RESULTS_DIR"/*.md 2>/dev/null | tail -1 || true)"
[[ -n "$MD" && "$MD" != "$STAMP_BEFORE" ]] || die "run-all.sh wrote no report (rc=$rc)"
kill -0 "$GW_PID" 2>/dev/null || log "WARNING: llmgate is no longer running; see $GWLOG"

# 4. the gateway's own overhead header, on sequential requests (c=1)
TSV="${MD%.md}.overhead.tsv"
if ((OVERHEAD_SAMPLES > 0)); then
body() {
  printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0.7%s}' "$1" "$2"
}
{
  printf 'mode\tx-llmgate-overhead-ms\tcurl_total_ms\tstatus\n'
  for mode in json stream; do
    if [[ $mode == stream ]]; then b="$(body gpt-4o-mini-stream ',"stream":true')"; else b="$(body gpt-4o-mini '')"; fi
    for ((i = 0; i < OVERHEAD_SAMPLES; i++)); do
      hdr="$(mktemp)"
      t="$(curl -s -o /dev/null -D "$hdr" -w '%{http_code} %{time_total}' -H 'Content-Type: application/json' \
             -H 'Accept-Encoding: identity' --data "$b" "http://$LISTEN/v1/chat/completions")"
      oh="$(awk -F': ' 'tolower($1)=="x-llmgate-overhead-ms"{gsub("\r","",$2); print $2}' "$hdr")"
      rm -f "$hdr"
      printf '%s\t%s\t%.3f\t%s\n' "$mode" "${oh:--}" "$(awk -v s="${t#* }" 'BEGIN{print s*1000}')" "${t%% *}"
    done
  done
} >"$TSV"
python3 - "$TSV" <<'PY' | tee -a "$MD"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("\n## llmgate's own x-llmgate-overhead-ms (sequential curl requests after the load)\n")
print("| mode | n | overhead p50 ms | overhead max ms | curl total p50 ms | non-200 |")
print("|---|--:|--:|--:|--:|--:|")
for mode in ("json", "stream"):
    rs = [r for r in rows if r["mode"] == mode]
    oh = [float(r["x-llmgate-overhead-ms"]) for r in rs if r["x-llmgate-overhead-ms"] not in ("", "-")]
    tot = [float(r["curl_total_ms"]) for r in rs]
    bad = sum(r["status"] != "200" for r in rs)
    if rs:
        print(f"| {mode} | {len(rs)} | {statistics.median(oh) if oh else float('nan'):.3f} | "
              f"{max(oh) if oh else float('nan'):.3f} | {statistics.median(tot):.3f} | {bad} |")
PY
fi

# Provenance of what was measured (the harness's report does not know llmgate).
{
  echo
  echo "## llmgate build"
  echo
  echo "- binary: \`$LLMGATE_BIN\` ($("$LLMGATE_BIN" --version)), sha256 $(sha256sum "$LLMGATE_BIN" | cut -c1-16)"
  echo "- source: ${LLMGATE_COMMIT:-repo HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree: $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock | wc -l) changed files under src/Cargo.*)}"
  echo "- config: \`${CONFIG#"$REPO"/}\`, RUST_LOG=warn, pinned to CPU $GATEWAY_CPUS; $(rustc --version 2>/dev/null)"
  echo "- gateway stderr lines during the run: $(wc -l <"$GWLOG")"
} >>"$MD"
if [[ -s "$GWLOG" ]]; then log "llmgate stderr ($GWLOG), last lines:"; tail -20 "$GWLOG" >&2; fi
log "report: $MD (raw: ${MD%.md}.jsonl, overhead samples: $TSV)"
exit "$rc"
