# bench/bench-lib.sh — what bench/run-sse-bench and bench/run-ws-bench share (sourced, not run).
#
# The caller sets, before `source`:
#   SCRIPT        its name, for messages and the recorded command line
#   ALL_SCENARIOS the scenario names, comma-separated (the default of --only)
#   TARGETS       the build targets (relay and the load generators)
#   ENV_VARS      the environment variables that change sizes (recorded with the command line)
# then calls `bench_setup "$@"`. That parses the common flags
#   --out FILE  --build-dir DIR  --no-build  --only LIST  --perf LIST  -h
# builds (or checks) Release, finds the binaries, raises RLIMIT_NOFILE, pins (server CPU 0,
# load generators CPU 1), mints the tokens, and arms the clean-up (the server we started is
# stopped by its PID; nothing else is touched). Then `run_scenario NAME MAXS LOADGEN ARGS...`
# runs one scenario on a fresh server and records its RESULT line in NAMES / RESULTS.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '[%s] %s\n' "$SCRIPT" "$*" >&2; }
die() { log "error: $*"; exit 1; }

bench_setup() {
  INVOCATION="bench/$SCRIPT${*:+ $*}"
  local v
  for v in $ENV_VARS; do
    if [[ -n "${!v+x}" ]]; then INVOCATION="$v=${!v} $INVOCATION"; fi
  done
  BUILD_DIR="$ROOT/build"
  OUT=""
  DO_BUILD=1
  ONLY="$ALL_SCENARIOS"
  PERF_ONLY=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --out) OUT="$2"; shift 2 ;;
      --out=*) OUT="${1#*=}"; shift ;;
      --build-dir) BUILD_DIR="$2"; shift 2 ;;
      --build-dir=*) BUILD_DIR="${1#*=}"; shift ;;
      --no-build) DO_BUILD=0; shift ;;
      --only) ONLY="$2"; shift 2 ;;
      --only=*) ONLY="${1#*=}"; shift ;;
      --perf) PERF_ONLY="$2"; shift 2 ;;
      --perf=*) PERF_ONLY="${1#*=}"; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "$ROOT/bench/$SCRIPT" | sed '$d'; exit 0 ;;
      *) die "unknown argument $1 (see --help)" ;;
    esac
  done
  local s
  for s in ${ONLY//,/ }; do
    [[ ",$ALL_SCENARIOS," == *",$s,"* ]] || die "unknown scenario '$s' (known: $ALL_SCENARIOS)"
  done
  [[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$PWD/$BUILD_DIR"
  if [[ -n "$OUT" && "$OUT" != /* ]]; then OUT="$PWD/$OUT"; fi

  bench_build
  RELAY="$BUILD_DIR/relay"
  [[ -x "$RELAY" ]] || die "no $RELAY"

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/relay-$SCRIPT.XXXXXX")
  SERVER_PID=""
  PERF_PID=""
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  NOFILE=$(ulimit -n)

  SRV_PIN=()
  LG_PIN=()
  PIN_NOTE="not pinned (needs taskset and at least 2 CPUs)"
  NCPU=$(nproc)
  if command -v taskset >/dev/null 2>&1 && [[ $NCPU -ge 2 ]] && taskset -c 1 true 2>/dev/null; then
    SRV_PIN=(taskset -c 0)
    LG_PIN=(taskset -c 1)
    PIN_NOTE="server pinned to CPU 0, load generator to CPU 1 (taskset)"
  fi
  # One CPU for the server: one Asio thread and one CAF scheduler thread unless SERVER_ARGS says otherwise.
  local default_args=""
  if [[ ${#SRV_PIN[@]} -gt 0 ]]; then default_args="--server.io_threads=1 --node.scheduler_threads=1"; fi
  SERVER_ARGS=${SERVER_ARGS-$default_args}
  # The load generators are one client on loopback: the per-address and per-user limits meant
  # for hostile clients would refuse them. Off unless the caller sets LIMIT_ARGS (run-hostile-bench
  # keeps them on); SERVER_ARGS comes later on the command line and wins.
  LIMIT_ARGS=${LIMIT_ARGS-"--limits.max_connections_per_ip=0 --rate.connections_per_s=0 --rate.runs_per_s=0 --rate.events_per_s=0 --rate.messages_per_s=0 --runs.max_active_per_user=0"}

  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM

  USER_TOKEN=$(mint bench-user user)
  SERVICE_TOKEN=$(mint bench-service service)

  DATE=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
  COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo uncommitted)
  if [[ "$COMMIT" != uncommitted && -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n 1)" ]]; then
    COMMIT="$COMMIT + uncommitted changes"
  fi
  CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
  KERNEL=$(uname -r)
  log "date $DATE, commit $COMMIT, $NCPU CPUs ($CPU_MODEL), kernel $KERNEL, RLIMIT_NOFILE $NOFILE"
  log "$PIN_NOTE; server args: ${SERVER_ARGS:-(none)}; limit args: ${LIMIT_ARGS:-(none)}"
  declare -g -a RESULTS=() NAMES=() PERF_NOTES=()
  FAILED=0
}

bench_build() {
  [[ $DO_BUILD -eq 1 ]] || return 0
  if [[ -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    local bt san bench
    bt=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
    san=$(sed -n 's/^RELAY_SANITIZE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
    bench=$(sed -n 's/^RELAY_BENCH:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
    [[ "$bt" == "Release" ]] || die "$BUILD_DIR is configured as '$bt', not Release; use --build-dir DIR for a Release build"
    [[ "$san" != "ON" ]] || die "$BUILD_DIR has RELAY_SANITIZE=ON; use --build-dir DIR for a plain Release build"
    [[ "$bench" == "ON" ]] || cmake -S "$ROOT" -B "$BUILD_DIR" -DRELAY_BENCH=ON >/dev/null
  else
    log "configuring Release build in $BUILD_DIR"
    cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DRELAY_BENCH=ON >/dev/null
  fi
  log "building $TARGETS"
  local t_build=$SECONDS
  # shellcheck disable=SC2086
  cmake --build "$BUILD_DIR" --target $TARGETS -j"$(nproc)" >/dev/null ||
    cmake --build "$BUILD_DIR" --target $TARGETS -j1
  log "build done in $((SECONDS - t_build)) s"
}

stop_perf() {
  [[ -n "$PERF_PID" ]] || return 0
  local pid=$PERF_PID i
  PERF_PID=""
  kill -INT "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

stop_server() {
  [[ -n "$SERVER_PID" ]] || return 0
  local pid=$SERVER_PID rc=0
  SERVER_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "server $pid did not exit 10 s after SIGTERM; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || rc=$?
  [[ $rc -eq 0 ]] || log "server $pid exited with status $rc"
  return 0
}

bench_cleanup() {
  stop_perf
  stop_server
  [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
}

PORT=""
start_server() {  # $1: name (for the log file)
  local logf="$WORK/server-$1.log"
  # shellcheck disable=SC2086
  "${SRV_PIN[@]}" "$RELAY" --port 0 --host 127.0.0.1 --log.level=warn $LIMIT_ARGS $SERVER_ARGS >"$logf" 2>&1 &
  SERVER_PID=$!
  PORT=""
  local i
  for i in $(seq 1 150); do
    PORT=$(grep -o 'relay listening.*port=[0-9]*' "$logf" 2>/dev/null | grep -o 'port=[0-9]*' | head -1 | cut -d= -f2 || true)
    [[ -n "$PORT" ]] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -n 20 "$logf" >&2 || true
      SERVER_PID=""
      die "relay exited during start-up"
    fi
    sleep 0.1
  done
  if [[ -z "$PORT" ]]; then
    tail -n 20 "$logf" >&2 || true
    die "no 'relay listening ... port=N' line from relay within 15 s"
  fi
}

mint() {  # $1 sub, $2 role
  local out
  out=$("$RELAY" token --sub "$1" --role "$2") || die "relay token --sub $1 --role $2 failed"
  out=$(grep -oE 'eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*' <<<"$out" | tail -n 1)
  [[ -n "$out" ]] || die "relay token printed no JWT"
  printf '%s' "$out"
}

# The HS256 secret the server will use (same working directory and flags as start_server), for
# load generators that sign one token per connection; empty when it cannot be found.
jwt_secret() {
  # shellcheck disable=SC2086
  "$RELAY" config $SERVER_ARGS 2>/dev/null | sed -n 's/^jwt_secret = "\(.*\)".*$/\1/p' | head -n 1
}

# Starts `perf record` on the server for scenario $1 when --perf lists it (a profile run: its
# figures are disturbed by perf itself and say so in the table).
maybe_start_perf() {
  [[ -n "$PERF_ONLY" && ",$PERF_ONLY," == *",$1,"* ]] || return 0
  command -v perf >/dev/null 2>&1 || { log "perf not found; no profile for $1"; return 0; }
  perf record -e cpu-clock -g -p "$SERVER_PID" -o "$WORK/perf-$1.data" >"$WORK/perf-$1.log" 2>&1 &
  PERF_PID=$!
  sleep 0.3
}

# After the scenario: stops perf and keeps the top 15 symbols (self time) and the DSO split.
maybe_finish_perf() {
  [[ -n "$PERF_PID" ]] || return 0
  stop_perf
  local data="$WORK/perf-$1.data" rep="$WORK/perf-$1.txt"
  [[ -s "$data" ]] || { log "perf wrote no data for $1: $(tail -n 3 "$WORK/perf-$1.log")"; return 0; }
  {
    echo "perf profile of the server during $1 (perf record -e cpu-clock -g -p PID; self time):"
    echo
    echo "by DSO:"
    # (head closes the pipe early: SIGPIPE upstream is expected)
    timeout 120 perf report -i "$data" --no-children --sort dso --stdio -g none 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+$//' | head -n 8 || true
    echo
    echo "by thread:"
    timeout 120 perf report -i "$data" --no-children --sort comm --stdio -g none 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+$//' | head -n 8 || true
    echo
    echo "top 15 symbols:"
    timeout 120 perf report -i "$data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null |
      grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+(-[[:space:]]+-)?[[:space:]]*$//; s/  +/  /g' | head -n 15 || true
  } >"$rep"
  cat "$rep" >&2
  PERF_NOTES+=("$rep")
}

# run_scenario NAME WATCHDOG_SECONDS LOADGEN ARGS...: a fresh server, the load generator (pinned,
# bounded by its --max-seconds and a KILL 10 s later), the server's warnings, the server stopped.
run_scenario() {
  local name=$1 maxs=$2 loadgen=$3
  shift 3
  [[ ",$ONLY," == *",$name,"* ]] || return 0
  log "---- $name: starting server"
  start_server "$name"
  log "relay pid $SERVER_PID on 127.0.0.1:$PORT; $(basename "$loadgen") $*"
  maybe_start_perf "$name"
  local out="$WORK/loadgen-$name.out" rc=0
  timeout --signal=KILL $((maxs + 10)) "${LG_PIN[@]}" "$loadgen" --host 127.0.0.1 --port "$PORT" \
    --server-pid "$SERVER_PID" --user-token "$USER_TOKEN" --service-token "$SERVICE_TOKEN" \
    --owner bench-user --label "$name" --max-seconds "$maxs" "$@" \
    >"$out" || rc=$?
  maybe_finish_perf "$name"
  cat "$out"
  local res
  res=$(grep '^RESULT ' "$out" | tail -n 1 || true)
  [[ -n "$res" ]] || res="RESULT label=$name error=no_result rc=$rc"
  [[ $rc -eq 0 ]] || { FAILED=1; log "$name: loadgen exited with status $rc"; res="$res rc=$rc"; }
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    FAILED=1
    log "$name: relay is no longer running; last lines of its log:"
    tail -n 20 "$WORK/server-$name.log" >&2 || true
    res="$res server_died=1"
  elif [[ -s "$WORK/server-$name.log" ]]; then
    local lines
    lines=$(grep -vc 'relay listening' "$WORK/server-$name.log" || true)
    if [[ "${lines:-0}" -gt 0 ]]; then
      log "$name: server log (warn and above, $lines lines; last 5):"
      grep -v 'relay listening' "$WORK/server-$name.log" | tail -n 5 >&2 || true
      res="$res server_log_lines=$lines"
    fi
  fi
  [[ -n "$PERF_ONLY" && ",$PERF_ONLY," == *",$name,"* ]] && res="$res perf=1"
  stop_server
  NAMES+=("$name")
  RESULTS+=("$res")
}

get() {  # $1 key, $2 RESULT line
  local v
  v=$(tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n 1)
  printf '%s' "${v:--}"
}

result_of() {  # $1 scenario name: its RESULT line, or empty
  local i
  for i in "${!NAMES[@]}"; do
    [[ "${NAMES[$i]}" == "$1" ]] && { printf '%s' "${RESULTS[$i]}"; return 0; }
  done
  return 0
}

# The fan-out table (runs: flood and rate) for the given scenario names, in that order.
fanout_table() {
  echo "| scenario | subs | events | batch | deliveries | deliveries/s | p50 µs | p99 µs | max µs | lost | dup | server CPU µs/delivery | server CPU % | loadgen CPU % | server frames/write | POST→202 p99 µs | CPUs busy % (all processes) | server RSS KiB before → after |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
  local name r ev
  for name in "$@"; do
    r=$(result_of "$name")
    [[ -n "$r" ]] || continue
    if [[ "$(get error "$r")" != "-" ]]; then
      echo "| $name | failed: $(get error "$r") (rc $(get rc "$r")) ||||||||||||||||| |"
      continue
    fi
    ev=$(get events "$r")
    if [[ "$(get mode "$r")" == rate ]]; then ev="$ev ($(get rate "$r" | sed 's/\.00$//')/s asked, $(get produced_per_s "$r")/s sent)"; fi
    [[ "$(get perf "$r")" == 1 ]] && name="$name (under perf)"
    echo "| $name | $(get established "$r")/$(get subs "$r") | $ev | $(get batch "$r") | $(get deliveries "$r")/$(get expected "$r") | $(get dps "$r") | $(get p50_us "$r") | $(get p99_us "$r") | $(get max_us "$r") | $(get lost "$r") | $(get dup "$r") | **$(get srv_us_per_delivery "$r")** | $(get srv_cpu_pct "$r") | $(get lg_cpu_pct "$r") | $(get srv_frames_per_write "$r") | $(get ack_p99_us "$r") | $(get cpus_busy_pct "$r") | $(get rss_before_kb "$r") → $(get rss_after_kb "$r") |"
  done
}

# The idle table for the given scenario names.
idle_table() {
  echo "| idle scenario | connections established | server RSS KiB before → after | **server RSS bytes per idle connection** |"
  echo "|---|---:|---|---:|"
  local name r
  for name in "$@"; do
    r=$(result_of "$name")
    [[ -n "$r" ]] || continue
    if [[ "$(get error "$r")" != "-" ]]; then
      echo "| $name | failed: $(get error "$r") (rc $(get rc "$r")) | | |"
    else
      echo "| $name | $(get established "$r")/$(get connections "$r") | $(get rss_before_kb "$r") → $(get rss_after_kb "$r") | **$(get bytes_per_conn "$r")** |"
    fi
  done
}

# Appends the perf summaries taken (if any) to stdout, as markdown.
perf_markdown() {
  local f
  for f in "${PERF_NOTES[@]}"; do
    echo
    echo '```'
    cat "$f"
    echo '```'
  done
}
