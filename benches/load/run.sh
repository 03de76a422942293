#!/usr/bin/env bash
# Load-test llmgate with the shared gateway benchmark harness (bench/run-all.sh).
#
#   benches/load/run.sh                       # full matrix: direct floor + llmgate, json+stream, c=1/32/256
#   DURATION=5 RUNS=1 benches/load/run.sh     # quick look
#   LIMITS=1 benches/load/run.sh              # per-key limits: none vs memory vs redis backend, json c=32
#   INTERLEAVE=1 NO_DIRECT=1 benches/load/run.sh  # nginx-proxy and llmgate side by side, cell by cell (below)
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
# LIMITS=1 measures the cost of per-key limits in one harness run. Three gateways are started
# (all on CPU $GATEWAY_CPUS, loaded one at a time by the harness), each with the same gateway key
# (requests carry `Authorization: Bearer sk-llmgate-bench`):
#   llmgate-nolimits  127.0.0.1:8080  benches/load/limits/nolimits.toml  the key without limits
#   llmgate-memory    127.0.0.1:8081  benches/load/limits/memory.toml    rpm/tpm, [state] backend = "memory"
#   llmgate-redis     127.0.0.1:8082  benches/load/limits/redis.toml     rpm/tpm, [state] backend = "redis"
# The limits are far too high to reject anything, so the difference is the cost of the checks.
# For llmgate-redis the script starts `redis-server` on a free loopback port (pinned to
# $REDIS_CPUS, no persistence) as a child of that gateway's PID, so the harness counts Redis's
# CPU and RSS in that gateway's columns (otherwise it would take Redis for an unrelated process
# disturbing the run); Redis's own share (INFO cpu) and the Redis commands per request (INFO
# commandstats) are appended to the report. Defaults in this mode: MODES=nonstream
# CONCURRENCY=32 NO_DIRECT=1. Redis is stopped by its recorded PID.
#
# Environment (all optional):
#   BENCH (<repo>/../shared/bench)  LLMGATE_BIN (<repo>/target/release/llmgate)  CONFIG (benches/load/llmgate.toml)
#   RESULTS_DIR (/tmp/llmgate-bench-results)  BENCH_RUN (/tmp/bench-run)  OVERHEAD_SAMPLES (20)
#   LLMGATE_COMMIT (free text naming the source the binary was built from, for the report)
#   and the harness knobs, passed through: DURATION (15) RUNS (3) WARMUP (5) CONCURRENCY ("1 32 256")
#   MODES ("nonstream stream") LOADGEN_CPUS (0) GATEWAY_CPUS (1) NO_DIRECT (0)
#   INTERLEAVE (0; 1 = cell by cell, see run_interleaved)  LIMITS (0; 1 = the limits comparison above)  REDIS_SERVER (redis-server)  REDIS_CPUS ($LOADGEN_CPUS)
# The report is written by the harness to $RESULTS_DIR/<stamp>.md (+ .jsonl, .env); copy the .md into
# benches/load/results/ to keep it.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH="${BENCH:-$REPO/../shared/bench}"
LLMGATE_BIN="${LLMGATE_BIN:-$REPO/target/release/llmgate}"
CONFIG="${CONFIG:-$HERE/llmgate.toml}"
OVERHEAD_SAMPLES="${OVERHEAD_SAMPLES:-20}"
LIMITS="${LIMITS:-0}"
if [[ "$LIMITS" == 1 ]]; then
  MODES="${MODES:-nonstream}" CONCURRENCY="${CONCURRENCY:-32}" NO_DIRECT="${NO_DIRECT:-1}"
fi
export DURATION="${DURATION:-15}" RUNS="${RUNS:-3}" WARMUP="${WARMUP:-5}"
export CONCURRENCY="${CONCURRENCY:-1 32 256}" MODES="${MODES:-nonstream stream}" NO_DIRECT="${NO_DIRECT:-0}"
export LOADGEN_CPUS="${LOADGEN_CPUS:-0}" GATEWAY_CPUS="${GATEWAY_CPUS:-1}"
INTERLEAVE="${INTERLEAVE:-0}"
export RESULTS_DIR="${RESULTS_DIR:-/tmp/llmgate-bench-results}"
export BENCH_RUN="${BENCH_RUN:-/tmp/bench-run}"
REDIS_SERVER="${REDIS_SERVER:-redis-server}"
REDIS_CPUS="${REDIS_CPUS:-$LOADGEN_CPUS}"
BENCH_KEY=sk-llmgate-bench   # the gateway key in benches/load/limits/*.toml (loopback only)

# The gateways to measure: name, config, listen address, request header, whether it gets a Redis.
G_NAME=() G_CONFIG=() G_LISTEN=() G_HEADER=() G_REDIS=()
add_gateway() { G_NAME+=("$1"); G_CONFIG+=("$2"); G_LISTEN+=("$3"); G_HEADER+=("$4"); G_REDIS+=("$5"); }
if [[ "$LIMITS" == 1 ]]; then
  add_gateway llmgate-nolimits "$HERE/limits/nolimits.toml" 127.0.0.1:8080 "Authorization: Bearer $BENCH_KEY" 0
  add_gateway llmgate-memory "$HERE/limits/memory.toml" 127.0.0.1:8081 "Authorization: Bearer $BENCH_KEY" 0
  add_gateway llmgate-redis "$HERE/limits/redis.toml" 127.0.0.1:8082 "Authorization: Bearer $BENCH_KEY" 1
else
  add_gateway llmgate "$CONFIG" 127.0.0.1:8080 "" 0   # the listen address is given with --listen
fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$LLMGATE_BIN" ]] || die "no llmgate binary at $LLMGATE_BIN (cargo build --release)"
[[ -x "$BENCH/run-all.sh" ]] || die "no harness at $BENCH"
command -v oha >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
command -v oha >/dev/null || die "oha not found: cargo install oha --locked --version 1.16.0"
if [[ " ${G_REDIS[*]} " == *" 1 "* ]]; then
  command -v "$REDIS_SERVER" >/dev/null || die "$REDIS_SERVER not found: apt-get install -y redis-server"
  command -v redis-cli >/dev/null || die "redis-cli not found: apt-get install -y redis-tools"
fi
mkdir -p "$BENCH_RUN" "$RESULTS_DIR"

STARTED_NGINX=0
GW_PIDS=()         # index-aligned with G_NAME; empty until started
REDIS_PID="" REDIS_PORT=""
REDIS_PIDFILE="$BENCH_RUN/llmgate-redis-server.pid"
pidfile_of() { echo "$BENCH_RUN/$1.pid"; }
stderr_of() { echo "$BENCH_RUN/$1.stderr"; }
# Stop by the PID we recorded: TERM, wait up to 10 s, then KILL that PID only. A zombie (a
# child of a process that has already exited, not yet reaped) counts as stopped.
alive() { kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
stop_pid() {
  local pid="$1" i
  [[ -n "$pid" ]] || return 0
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do alive "$pid" || return 0; sleep 0.1; done
  log "pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local i
  for i in "${!GW_PIDS[@]}"; do
    [[ -n "${GW_PIDS[$i]}" ]] || continue
    log "stopping ${G_NAME[$i]} (pid ${GW_PIDS[$i]})"; stop_pid "${GW_PIDS[$i]}"; rm -f "$(pidfile_of "${G_NAME[$i]}")"
  done
  # Redis after its gateway, so the gateway does not see (and log) Redis going away.
  if [[ -n "$REDIS_PID" ]]; then log "stopping redis-server (pid $REDIS_PID)"; stop_pid "$REDIS_PID"; rm -f "$REDIS_PIDFILE"; fi
  if ((STARTED_NGINX)); then log "stopping the mock upstream"; "$BENCH/upstream/start.sh" stop || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_gateway INDEX: llmgate pinned to $GATEWAY_CPUS with RUST_LOG=warn; with G_REDIS, first a
# redis-server of its own (a child of the gateway's PID, see above).
start_gateway() {
  local i="$1" name="${G_NAME[$1]}" cfg="${G_CONFIG[$1]}" listen="${G_LISTEN[$1]}" pid n
  local gwlog; gwlog="$(stderr_of "$name")"
  if curl -s -o /dev/null -m 1 "http://$listen/healthz"; then
    die "something already listens on $listen; stop it first (this script only stops what it started)"
  fi
  if [[ "${G_REDIS[$i]}" == 1 ]]; then
    REDIS_PORT="$(free_port)"
    export LLMGATE_BENCH_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
  fi
  "$LLMGATE_BIN" check --config "$cfg" >/dev/null
  log "starting $name: taskset -c $GATEWAY_CPUS $LLMGATE_BIN serve --config ${cfg#"$REPO"/} --listen $listen (RUST_LOG=warn)"
  if [[ "${G_REDIS[$i]}" == 1 ]]; then
    # The subshell starts redis-server, waits for it, then execs into llmgate: $! is llmgate's
    # PID and redis-server's parent.
    (
      taskset -c "$REDIS_CPUS" "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
        --appendonly no --daemonize no --logfile "$BENCH_RUN/llmgate-redis-server.log" </dev/null >/dev/null 2>&1 &
      echo $! >"$REDIS_PIDFILE"
      for ((n = 0; n < 100; n++)); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
      exec taskset -c "$GATEWAY_CPUS" env RUST_LOG=warn "$LLMGATE_BIN" serve --config "$cfg" --listen "$listen"
    ) </dev/null >"$gwlog" 2>&1 &
  else
    # taskset and env exec, so $! is llmgate itself.
    taskset -c "$GATEWAY_CPUS" env RUST_LOG=warn "$LLMGATE_BIN" serve --config "$cfg" --listen "$listen" \
      </dev/null >"$gwlog" 2>&1 &
  fi
  pid=$!
  GW_PIDS[i]="$pid"
  echo "$pid" >"$(pidfile_of "$name")"
  if [[ "${G_REDIS[$i]}" == 1 ]]; then
    for ((n = 0; n < 50; n++)); do [[ -s "$REDIS_PIDFILE" ]] && break; sleep 0.1; done
    REDIS_PID="$(cat "$REDIS_PIDFILE" 2>/dev/null || true)"
    [[ -n "$REDIS_PID" ]] || die "redis-server did not start; see $BENCH_RUN/llmgate-redis-server.log"
    log "redis-server on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID, CPU $REDIS_CPUS)"
  fi
  for ((n = 0; n < 150; n++)); do
    curl -s -o /dev/null -m 1 "http://$listen/healthz" && break
    kill -0 "$pid" 2>/dev/null || die "$name exited; see $gwlog: $(tail -5 "$gwlog")"
    sleep 0.1
  done
  curl -s -o /dev/null -m 1 "http://$listen/healthz" || die "$name did not come up in 15 s; see $gwlog"
  log "$name up (pid $pid, affinity $(taskset -pc "$pid" | awk '{print $NF}'), threads $(ls /proc/"$pid"/task | wc -l))"
}

# check_limited INDEX: the key really is limited (x-ratelimit-* on a completion) and, with
# Redis, the state backend is up; otherwise the run would measure something else.
check_limited() {
  local i="$1" name="${G_NAME[$1]}" listen="${G_LISTEN[$1]}" hdr ready
  hdr="$(curl -s -o /dev/null -D - -H "${G_HEADER[$i]}" -H 'Content-Type: application/json' \
    --data '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}' \
    "http://$listen/v1/chat/completions" | tr -d '\r')"
  [[ "$(head -1 <<<"$hdr")" == *" 200"* ]] || die "$name: a completion with the bench key failed: $(head -1 <<<"$hdr")"
  if [[ "$name" == llmgate-nolimits ]]; then
    ! grep -qi '^x-ratelimit-limit-requests:' <<<"$hdr" || die "$name: x-ratelimit-* headers on a key without limits"
    return 0
  fi
  grep -qi '^x-ratelimit-limit-requests:' <<<"$hdr" \
    || die "$name: no x-ratelimit-limit-requests header on a completion: are limits implemented in $LLMGATE_BIN?"
  if [[ "${G_REDIS[$i]}" == 1 ]]; then
    local n up=0
    for ((n = 0; n < 50; n++)); do   # the gateway may still be connecting
      ready="$(curl -s -m 2 "http://$listen/readyz" || true)"
      python3 -c 'import json, sys; s = json.loads(sys.argv[1]).get("state") or {}; sys.exit(0 if s.get("backend") == "redis" and s.get("up") is True else 1)' \
        "$ready" 2>/dev/null && { up=1; break; }
      sleep 0.1
    done
    ((up)) || die "$name: /readyz does not show the redis backend up: $ready"
  fi
  log "$name: limits active ($(grep -i '^x-ratelimit-remaining-requests:' <<<"$hdr"))"
}

# gw_requests LISTEN: requests the gateway has counted (llmgate_requests_total, all series).
gw_requests() { curl -s -m 5 "http://$1/metrics" | awk '/^llmgate_requests_total[{ ]/ {s += $NF} END {printf "%d\n", s}'; }
gw_rejections() { curl -s -m 5 "http://$1/metrics" | awk '/^llmgate_ratelimit_rejections_total[{ ]/ {s += $NF} END {printf "%d\n", s}'; }
redis_info() { redis-cli -p "$REDIS_PORT" info "$1" | tr -d '\r'; }

# 1. mock upstream
if ! curl -s -o /dev/null -m 1 http://127.0.0.1:9100/v1/models; then
  log "starting the mock upstream (CPU $LOADGEN_CPUS)"
  "$BENCH/upstream/start.sh" >/dev/null
  STARTED_NGINX=1
fi

# 2. the gateways, each on the gateway core
for i in "${!G_NAME[@]}"; do start_gateway "$i"; done
if [[ "$LIMITS" == 1 ]]; then
  for i in "${!G_NAME[@]}"; do check_limited "$i"; done
fi
REDIS_I=""
for i in "${!G_NAME[@]}"; do [[ "${G_REDIS[$i]}" == 1 ]] && REDIS_I="$i"; done
if [[ -n "$REDIS_I" ]]; then
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  REDIS_INFO0="$(redis_info cpu)"
  REDIS_REQ0="$(gw_requests "${G_LISTEN[$REDIS_I]}")"
fi

# INTERLEAVE=1: round after round ($RUNS rounds), each cell (mode, concurrency) is one harness
# run of one measured run per target, the targets' order reversed every other round. The peers
# of a cell are then measured a minute apart, not the whole matrix apart: on a VM whose speed
# drifts over minutes, the matrix order alone moved a ratio by a third. merge.py joins the
# rounds into one report (medians over the rounds) plus the ratios round by round.
run_interleaved() {
  local parts="$BENCH_RUN/llmgate-interleave" round mode c order=() stamp t0 rc=0
  rm -rf "$parts"; mkdir -p "$parts"
  t0=$(date +%s)
  for ((round = 1; round <= RUNS; round++)); do
    order=("${SPECS[@]}")
    if ((round % 2 == 0)); then
      order=(); for ((c = ${#SPECS[@]} - 1; c >= 0; c--)); do order+=("${SPECS[$c]}"); done
    fi
    for mode in $MODES; do
      for c in $CONCURRENCY; do
        log "round $round/$RUNS: $mode c=$c"
        RUNS=1 MODES="$mode" CONCURRENCY="$c" RESULTS_DIR="$parts/$round-$mode-$c" \
          "$BENCH/run-all.sh" "${order[@]}" >/dev/null || rc=$?
      done
    done
  done
  stamp="$(date +%Y-%m-%d-%H%M)"
  cp "$(find "$parts" -name '*.env' | head -1)" "$RESULTS_DIR/$stamp.env"
  # Cells in the matrix's order, rounds in order within each.
  local files=()
  for mode in $MODES; do for c in $CONCURRENCY; do
    for ((round = 1; round <= RUNS; round++)); do files+=("$(find "$parts/$round-$mode-$c" -name '*.jsonl' | head -1)"); done
  done; done
  python3 "$HERE/merge.py" "$RESULTS_DIR/$stamp.jsonl" "${files[@]}" >"$parts/side-by-side.md"
  python3 "$BENCH/lib/report.py" "$RESULTS_DIR/$stamp.jsonl" "$RESULTS_DIR/$stamp.env" \
    "interleaved: $RUNS rounds of one ${DURATION}s run per target and cell, warmup=${WARMUP}s loadgen_cpus=$LOADGEN_CPUS gateway_cpus=$GATEWAY_CPUS wall=$(($(date +%s) - t0))s" \
    >"$RESULTS_DIR/$stamp.md"
  cat "$parts/side-by-side.md" >>"$RESULTS_DIR/$stamp.md"
  cat "$RESULTS_DIR/$stamp.md"
  return "$rc"
}

# 3. the harness (direct floor unless NO_DIRECT=1, then each gateway)
SPECS=()
# Peers measured in the same run: nginx as a plain reverse proxy (the floor) unless PEERS says
# otherwise (PEERS="" for none; any built-in of the harness: nginx-proxy litellm-1w portkey ...).
if [[ "$LIMITS" != 1 ]]; then
  for peer in ${PEERS-nginx-proxy}; do SPECS+=("$peer"); done
fi
for i in "${!G_NAME[@]}"; do
  spec="${G_NAME[$i]}=http://${G_LISTEN[$i]}/v1;pidfile=$(pidfile_of "${G_NAME[$i]}")"
  [[ -n "${G_HEADER[$i]}" ]] && spec+=";H=${G_HEADER[$i]}"
  SPECS+=("$spec")
done
# The report is the .md written after this marker (its name has minutes only, so a run started
# within the minute of the previous one overwrites that one's file).
MARKER="$BENCH_RUN/llmgate-run.marker"
: >"$MARKER"; sleep 1
rc=0
if [[ "$INTERLEAVE" == 1 ]]; then
  run_interleaved || rc=$?
else
  "$BENCH/run-all.sh" "${SPECS[@]}" || rc=$?
fi
MD="$(find "$RESULTS_DIR" -maxdepth 1 -name '*.md' -newer "$MARKER" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)"
rm -f "$MARKER"
[[ -n "$MD" ]] || die "run-all.sh wrote no report (rc=$rc)"
for i in "${!G_NAME[@]}"; do
  kill -0 "${GW_PIDS[$i]}" 2>/dev/null || log "WARNING: ${G_NAME[$i]} is no longer running; see $(stderr_of "${G_NAME[$i]}")"
done

# 4. the gateway's own overhead header, on sequential requests (c=1)
TSV="${MD%.md}.overhead.tsv"
if ((OVERHEAD_SAMPLES > 0)); then
body() {
  printf '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"temperature":0.7%s}' "$1" "$2"
}
{
  printf 'gateway\tmode\tx-llmgate-overhead-ms\tcurl_total_ms\tstatus\n'
  for g in "${!G_NAME[@]}"; do
    auth=(); [[ -n "${G_HEADER[$g]}" ]] && auth=(-H "${G_HEADER[$g]}")
    for mode in json stream; do
      if [[ $mode == stream ]]; then b="$(body gpt-4o-mini-stream ',"stream":true')"; else b="$(body gpt-4o-mini '')"; fi
      for ((i = 0; i < OVERHEAD_SAMPLES; i++)); do
        hdr="$(mktemp)"
        t="$(curl -s -o /dev/null -D "$hdr" -w '%{http_code} %{time_total}' -H 'Content-Type: application/json' \
               -H 'Accept-Encoding: identity' "${auth[@]}" --data "$b" "http://${G_LISTEN[$g]}/v1/chat/completions")"
        oh="$(awk -F': ' 'tolower($1)=="x-llmgate-overhead-ms"{gsub("\r","",$2); print $2}' "$hdr")"
        rm -f "$hdr"
        printf '%s\t%s\t%s\t%.3f\t%s\n' "${G_NAME[$g]}" "$mode" "${oh:--}" "$(awk -v s="${t#* }" 'BEGIN{print s*1000}')" "${t%% *}"
      done
    done
  done
} >"$TSV"
python3 - "$TSV" <<'PY' | tee -a "$MD"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("\n## llmgate's own x-llmgate-overhead-ms (sequential curl requests after the load)\n")
print("| gateway | mode | n | overhead p50 ms | overhead max ms | curl total p50 ms | non-200 |")
print("|---|---|--:|--:|--:|--:|--:|")
for gw in dict.fromkeys(r["gateway"] for r in rows):
    for mode in ("json", "stream"):
        rs = [r for r in rows if r["gateway"] == gw and r["mode"] == mode]
        oh = [float(r["x-llmgate-overhead-ms"]) for r in rs if r["x-llmgate-overhead-ms"] not in ("", "-")]
        tot = [float(r["curl_total_ms"]) for r in rs]
        bad = sum(r["status"] != "200" for r in rs)
        if rs:
            print(f"| {gw} | {mode} | {len(rs)} | {statistics.median(oh) if oh else float('nan'):.3f} | "
                  f"{max(oh) if oh else float('nan'):.3f} | {statistics.median(tot):.3f} | {bad} |")
PY
fi

# 5. what Redis did for the redis-backed gateway: its CPU and the commands per request
if [[ -n "$REDIS_I" ]]; then
  REQ1="$(gw_requests "${G_LISTEN[$REDIS_I]}")"
  python3 - "$REDIS_INFO0" "$(redis_info cpu)" "$(redis_info commandstats)" "$REDIS_REQ0" "$REQ1" \
    "${G_NAME[$REDIS_I]}" "$REDIS_CPUS" "$("$REDIS_SERVER" --version | awk '{print $3}' | sed 's/^v=//')" <<'PY' | tee -a "$MD"
import sys
def kv(text):
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))
cpu0, cpu1, stats = kv(sys.argv[1]), kv(sys.argv[2]), kv(sys.argv[3])
requests = int(sys.argv[5]) - int(sys.argv[4])
name, cpus, version = sys.argv[6], sys.argv[7], sys.argv[8]
cpu_s = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_user", "used_cpu_sys"))
print(f"\n## Redis behind {name}\n")
print(f"redis-server {version} on CPU {cpus}, a child of the gateway's PID: the `{name}` rows' RSS and "
      "CPU µs/req include it. Over the harness and the curl samples it served this gateway's "
      f"{requests:,} requests with {cpu_s:.2f} s of CPU: **{cpu_s * 1e6 / max(requests, 1):.1f} µs per request** "
      "(INFO cpu, main process).\n")
print("Commands by name (INFO commandstats, reset once the gateway was up; commands that scripts "
      "run count too, so a round trip is one of the commands a client sends: EVALSHA, FCALL, ...):\n")
print("| command | calls | per request | µs per call |")
print("|---|--:|--:|--:|")
for key, value in sorted(stats.items()):
    if key in ("cmdstat_info", "cmdstat_config|resetstat"):   # this script's own
        continue
    f = dict(p.split("=", 1) for p in value.split(","))
    calls = int(f["calls"])
    print(f"| `{key.removeprefix('cmdstat_').replace('|', chr(92) + '|')}` | {calls:,} | {calls / max(requests, 1):.2f} | {float(f['usec_per_call']):.1f} |")
PY
fi

# Rejections would mean the limits, not the checks, were measured.
for i in "${!G_NAME[@]}"; do
  rej="$(gw_rejections "${G_LISTEN[$i]}")"
  [[ "${rej:-0}" == 0 ]] || log "WARNING: ${G_NAME[$i]} rejected $rej requests over a limit (llmgate_ratelimit_rejections_total)"
done

# Provenance of what was measured (the harness's report does not know llmgate).
{
  echo
  echo "## llmgate build"
  echo
  echo "- binary: \`$LLMGATE_BIN\` ($("$LLMGATE_BIN" --version)), sha256 $(sha256sum "$LLMGATE_BIN" | cut -c1-16)"
  echo "- source: ${LLMGATE_COMMIT:-repo HEAD $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') (working tree: $(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock | wc -l) changed files under src/Cargo.*)}"
  for i in "${!G_NAME[@]}"; do
    echo "- \`${G_NAME[$i]}\`: config \`${G_CONFIG[$i]#"$REPO"/}\` on ${G_LISTEN[$i]}${G_HEADER[$i]:+, requests with a gateway key}; stderr lines during the run: $(wc -l <"$(stderr_of "${G_NAME[$i]}")"); rejected over a limit: $(gw_rejections "${G_LISTEN[$i]}")"
  done
  echo "- RUST_LOG=warn, pinned to CPU $GATEWAY_CPUS; $(rustc --version 2>/dev/null)"
} >>"$MD"
for i in "${!G_NAME[@]}"; do
  gwlog="$(stderr_of "${G_NAME[$i]}")"
  if [[ -s "$gwlog" ]]; then log "${G_NAME[$i]} stderr ($gwlog), last lines:"; tail -20 "$gwlog" >&2; fi
done
log "report: $MD (raw: ${MD%.md}.jsonl, overhead samples: $TSV)"
exit "$rc"
