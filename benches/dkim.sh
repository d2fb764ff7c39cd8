#!/usr/bin/env bash
# What DKIM signing costs mtad: acceptance alone (delivery paused) and
# relay to Postfix's smtp-sink, with no signing, with Ed25519 and with
# RSA-2048, in one sitting, the three alternating round by round. See
# docs/benchmarks.md ("DKIM signing") for the last recorded figures.
#
# Usage (as root: smtp-sink drops to 'nobody'):
#   benches/dkim.sh            # builds, runs, prints Markdown
#
# Environment:
#   DKIM_ROUNDS=N      rounds (default 3); each round runs every case
#   DKIM_MESSAGES=N    messages per run (default 4000)
#   DKIM_SIZE=S        message size (default 4KiB)
#   DKIM_SESSIONS=N    concurrent sessions (default 20)
#   DKIM_NO_BUILD=1    skip `cargo build --release`
#   DKIM_KEEP=1        keep the temporary directory
#
# Only 127.0.0.1 is used: example.test is routed to the sink, the resolver
# is a closed loopback port. The report goes to standard output, progress
# to standard error. Exit status: 0 if every run accepted (and, relaying,
# delivered) every message, and every signed run signed every message.
set -euo pipefail

ROUNDS=${DKIM_ROUNDS:-3}
MESSAGES=${DKIM_MESSAGES:-4000}
SIZE=${DKIM_SIZE:-4KiB}
SESSIONS=${DKIM_SESSIONS:-20}
TIMEOUT=240

log() { printf 'dkim: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || { echo "dkim: must run as root (smtp-sink drops to nobody); try: sudo $0" >&2; exit 1; }
SINK_BIN=/usr/sbin/smtp-sink
[ -x "$SINK_BIN" ] || die "$SINK_BIN not found (tests/install-peers.sh installs postfix)"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"
release_binaries "${DKIM_NO_BUILD:-}"

WORK=$(mktemp -d /tmp/mta-dkim.XXXXXX)
chmod 755 "$WORK"
MTAD_PID=
SINK_PID=
RUNDIR=
cleanup() {
    local rc=$?
    set +e
    stop_pid "$MTAD_PID" 300
    stop_pid "$SINK_PID" 50
    if [ -n "${DKIM_KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The keys, made as an operator would.
"$MTA_INIT" dkim keygen --domain example.test --selector ed --algorithm ed25519-sha256 \
    --out "$WORK/ed.pem" >/dev/null
"$MTA_INIT" dkim keygen --domain example.test --selector rsa --algorithm rsa-sha256 --bits 2048 \
    --out "$WORK/rsa.pem" >/dev/null

sink_count() {
    local n
    n=$(tail -c 96 "$RUNDIR/sink.out" 2>/dev/null | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\)$/\1/p' | tail -n1)
    echo "${n:-0}"
}

start_sink() {
    SINK_PORT=$(free_port)
    : >"$RUNDIR/sink.out"
    "$SINK_BIN" -c -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$RUNDIR/sink.out" 2>"$RUNDIR/sink.err" &
    SINK_PID=$!
    wait_listening "$SINK_PORT" 10 || die "smtp-sink is not listening"
}

start_mtad() { # case
    local table=
    case $1 in
    ed25519) table="[[dkim.sign]]
domain = \"example.test\"
selector = \"ed\"
key = \"$WORK/ed.pem\"" ;;
    rsa-2048) table="[[dkim.sign]]
domain = \"example.test\"
selector = \"rsa\"
key = \"$WORK/rsa.pem\"" ;;
    esac
    relay_mtad_config "$RUNDIR" "$SINK_PORT" "" "$table" >"$RUNDIR/mtad.toml"
    "$MTAD" --config "$RUNDIR/mtad.toml" >"$RUNDIR/stdout" 2>"$RUNDIR/mtad.log" &
    MTAD_PID=$!
    wait_mtad_ready "$RUNDIR"
    [ -n "$MTAD_PORT" ] || die "could not read mtad's port from its stdout"
}

json_num() { printf '%s' "$2" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -n1; }
json_p() { printf '%s' "$2" | sed -n "s/.*\"latency_ms\":{[^}]*\"$1\":\([0-9.]*\).*/\1/p" | head -n1; }
cpu_ms() { awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t * 1000 / hz / n }'; }

FAILED=0
declare -A RESULTS
CASES=(none ed25519 rsa-2048)
RUN=0

one_run() { # mode case round
    local mode=$1 case=$2 round=$3 out rate p99 t0 t1 ticks0 ticks1 signed
    RUN=$((RUN + 1))
    RUNDIR=$WORK/run-$RUN
    mkdir -p "$RUNDIR"
    start_sink
    start_mtad "$case"
    # Warm-up: connections and the first key use are not measured.
    "$LOADGEN" --server "127.0.0.1:$MTAD_PORT" --sessions "$SESSIONS" --messages 40 \
        --size "$SIZE" --timeout 60 >/dev/null 2>&1 || die "warm-up failed"
    for _ in $(seq 300); do [ "$(sink_count)" -ge 40 ] && break; sleep 0.1; done
    if [ "$mode" = accept ]; then
        "$MTA_INIT" --config "$RUNDIR/mtad.toml" pause delivery >/dev/null 2>&1 || die "pause failed"
    fi
    ticks0=$(proc_ticks "$MTAD_PID")
    t0=$EPOCHREALTIME
    out=$("$LOADGEN" --server "127.0.0.1:$MTAD_PORT" --sessions "$SESSIONS" --messages "$MESSAGES" \
        --size "$SIZE" --timeout "$TIMEOUT" --json 2>"$RUNDIR/loadgen.err") || { log "loadgen failed: $out"; FAILED=1; }
    if [ "$mode" = relay ]; then
        local target=$((MESSAGES + 40))
        for _ in $(seq 2400); do [ "$(sink_count)" -ge "$target" ] && break; sleep 0.1; done
        [ "$(sink_count)" -ge "$target" ] || { log "sink got $(sink_count) of $target"; FAILED=1; }
    fi
    t1=$EPOCHREALTIME
    ticks1=$(proc_ticks "$MTAD_PID")
    rate=$(json_num rate_msg_s "$out")
    p99=$(json_p p99 "$out")
    if [ "$mode" = relay ]; then
        rate=$(awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
    fi
    signed=$(grep -c 'dkim="\?example.test:' "$RUNDIR/mtad.log" || true)
    if [ "$case" != none ] && [ "$signed" -lt "$MESSAGES" ]; then
        log "$case: only $signed messages signed"
        FAILED=1
    fi
    RESULTS[$mode,$case,$round]="$rate $p99 $(cpu_ms $((ticks1 - ticks0)) "$MESSAGES")"
    log "$mode $case round $round: ${RESULTS[$mode,$case,$round]} (msg/s, p99 ms, CPU ms/msg)"
    stop_pid "$MTAD_PID" 300
    MTAD_PID=
    stop_pid "$SINK_PID" 50
    SINK_PID=
}

for round in $(seq "$ROUNDS"); do
    for mode in accept relay; do
        for case in "${CASES[@]}"; do
            one_run "$mode" "$case" "$round"
        done
    done
done

field() { # mode case n
    for round in $(seq "$ROUNDS"); do
        echo "${RESULTS[$1,$2,$round]}" | awk -v n="$3" '{ print $n }'
    done
}

echo "## DKIM signing: $MESSAGES messages of $SIZE, $SESSIONS sessions, $ROUNDS rounds (medians)"
echo
echo "| mode | signing | msg/s | vs none | p99 end of data (ms) | CPU ms/msg | CPU vs none |"
echo "|---|---|---|---|---|---|---|"
for mode in accept relay; do
    base_rate=$(field "$mode" none 1 | median)
    base_cpu=$(field "$mode" none 3 | median)
    for case in "${CASES[@]}"; do
        rate=$(field "$mode" "$case" 1 | median)
        p99=$(field "$mode" "$case" 2 | median)
        cpu=$(field "$mode" "$case" 3 | median)
        echo "| $mode | $case | $rate | $(ratio "$rate" "$base_rate") | $p99 | $cpu | $(ratio "$cpu" "$base_cpu") |"
    done
done
echo
echo "All rounds (msg/s, p99 ms, CPU ms/msg):"
echo
for mode in accept relay; do
    for case in "${CASES[@]}"; do
        line="- $mode $case:"
        for round in $(seq "$ROUNDS"); do line="$line ${RESULTS[$mode,$case,$round]};"; done
        echo "$line"
    done
done
exit "$FAILED"
