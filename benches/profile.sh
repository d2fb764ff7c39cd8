#!/usr/bin/env bash
# A CPU profile of mtad relaying to Postfix's smtp-sink under mta-loadgen,
# as a flame graph (perf, folded by inferno): what issue 15's changes are
# chosen from and judged by. The SVG and the folded stacks go to OUT.
#
# Usage (as root: perf needs it, smtp-sink drops to nobody):
#   benches/profile.sh OUT.svg [mta-loadgen options...]
#   benches/profile.sh docs/flame/relay-new-conn.svg --per-connection 1
#   (with --starttls, mtad offers STARTTLS with a throw-away certificate)
#
# Environment:
#   PROFILE_MESSAGES=N   messages (default 20000)
#   PROFILE_SESSIONS=N   sessions (default 20)
#   PROFILE_SIZE=S       message size (default 4KiB)
#   PROFILE_FREQ=HZ      perf's sampling frequency (default 499)
#   PROFILE_NO_BUILD=1   skip `cargo build --release`
#   PROFILE_COUNT=1      instead of a profile, count mtad's system calls,
#                        context switches, the block writes its threads
#                        issue and its CPU time (perf stat) and
#                        print them per message; OUT is then a text file
#   PROFILE_MTAD=PATH    profile this mtad binary (a copy kept from before a
#                        change) instead of the checkout's release build
#   PROFILE_CLIENT=smtp-source  load with Postfix's smtp-source (-s SESSIONS
#                        -m MESSAGES -l SIZE, a new connection per message:
#                        relay.sh's cases 9-11) instead of mta-loadgen; no
#                        mta-loadgen options are then taken
#
# Needs perf (Debian's linux-perf, installed when missing) and inferno
# (inferno-collapse-perf, inferno-flamegraph; installed into
# target/tools when missing). Only 127.0.0.1 is used.
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 OUT.svg [mta-loadgen options...]" >&2; exit 2; }
OUT=$1
shift
MESSAGES=${PROFILE_MESSAGES:-20000}
SESSIONS=${PROFILE_SESSIONS:-20}
SIZE=${PROFILE_SIZE:-4KiB}
FREQ=${PROFILE_FREQ:-499}

log() { printf 'profile: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (perf, smtp-sink)"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The tools, installed when missing: perf from Debian, inferno into the
# checkout's target directory (never system-wide).
if ! command -v perf >/dev/null 2>&1; then
    log "installing linux-perf"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi
PATH=$ROOT/target/tools/bin:$PATH
if ! command -v inferno-flamegraph >/dev/null 2>&1; then
    log "installing inferno into target/tools"
    cargo install --locked --quiet inferno --root "$ROOT/target/tools" >&2
fi
for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
SINK_BIN=/usr/sbin/smtp-sink
[ -x "$SINK_BIN" ] || die "$SINK_BIN not found (tests/install-peers.sh installs postfix)"

OUT=$(realpath -m "$OUT")
cd "$ROOT"
# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"
release_binaries "${PROFILE_NO_BUILD:-}"
[ -z "${PROFILE_MTAD:-}" ] || MTAD=$PROFILE_MTAD

WORK=$(mktemp -d /tmp/mta-profile.XXXXXX)
chmod 755 "$WORK"
MTAD_PID=
SINK_PID=
PERF_PID=
cleanup() {
    local rc=$?
    set +e
    stop_pid "$PERF_PID" 100
    stop_pid "$MTAD_PID" 300
    stop_pid "$SINK_PID" 50
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SINK_PORT=$(free_port)
"$SINK_BIN" -c -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>"$WORK/sink.err" &
SINK_PID=$!
wait_listening "$SINK_PORT" 10 || die "smtp-sink is not listening"

# With --starttls among the load's options, mtad offers STARTTLS with a
# throw-away ECDSA P-256 certificate, as in relay.sh's case 7.
TLS_TABLE=
if [[ " $* " == *" --starttls "* ]]; then
    TLS_TABLE=$(throwaway_cert "$WORK")
fi
relay_mtad_config "$WORK" "$SINK_PORT" "" "$TLS_TABLE" >"$WORK/mtad.toml"
"$MTAD" --config "$WORK/mtad.toml" >"$WORK/stdout" 2>"$WORK/mtad.log" &
MTAD_PID=$!
wait_mtad_ready "$WORK"
[ -n "$MTAD_PORT" ] || die "could not read mtad's port"

"$LOADGEN" --server "127.0.0.1:$MTAD_PORT" --sessions "$SESSIONS" --messages 200 --size "$SIZE" "$@" \
    --timeout 60 >/dev/null 2>&1 || die "warm-up failed"

COUNTED=(fdatasync fsync openat rename renameat2 linkat unlink ftruncate write sendto recvfrom futex epoll_wait sched_yield)
if [ -n "${PROFILE_COUNT:-}" ]; then
    # block_rq_issue: the block device requests mtad's own threads issue
    # (the writes of its fsyncs; the cache flushes that end them are
    # issued by the kernel's workers, so they are not counted).
    events=$(printf 'syscalls:sys_enter_%s,' "${COUNTED[@]}")context-switches,block:block_rq_issue,task-clock
    perf stat -x, -e "$events" -p "$MTAD_PID" -o "$WORK/stat.csv" 2>"$WORK/perf.err" &
else
    perf record -F "$FREQ" -g --call-graph dwarf,16384 -p "$MTAD_PID" -o "$WORK/perf.data" 2>"$WORK/perf.err" &
fi
PERF_PID=$!
sleep 1
log "loading: $MESSAGES messages of $SIZE, $SESSIONS sessions $* ${PROFILE_CLIENT:-}"
if [ "${PROFILE_CLIENT:-}" = smtp-source ]; then
    [ $# -eq 0 ] || die "PROFILE_CLIENT=smtp-source takes no mta-loadgen options"
    case $SIZE in
        *KiB) bytes=$((${SIZE%KiB} * 1024)) ;;
        *) bytes=$SIZE ;;
    esac
    timeout 300 /usr/sbin/smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$bytes" -r 1 \
        -f sender@example.test -t rcpt@example.test "127.0.0.1:$MTAD_PORT" \
        >"$WORK/loadgen.json" 2>&1 || die "load failed: $(cat "$WORK/loadgen.json")"
elif [ -n "${PROFILE_CLIENT:-}" ]; then
    die "PROFILE_CLIENT is smtp-source or unset, not $PROFILE_CLIENT"
else
    "$LOADGEN" --server "127.0.0.1:$MTAD_PORT" --sessions "$SESSIONS" --messages "$MESSAGES" --size "$SIZE" "$@" \
        --timeout 300 --json >"$WORK/loadgen.json" 2>&1 || die "load failed: $(cat "$WORK/loadgen.json")"
fi
kill -INT "$PERF_PID"
wait "$PERF_PID" 2>/dev/null || true
PERF_PID=
log "load: $(cat "$WORK/loadgen.json")"
mkdir -p "$(dirname "$OUT")"
if [ -n "${PROFILE_COUNT:-}" ]; then
    # perf stat -x, lines: count,unit,event,...
    awk -F, -v n="$MESSAGES" -v bin="$MTAD" -v args="$*" '
        BEGIN { printf "mtad %s, %d messages %s\nper message:\n", bin, n, args }
        $3 ~ /^syscalls:sys_enter_/ || $3 == "context-switches" {
            name = $3; sub(/^syscalls:sys_enter_/, "", name)
            printf "  %-18s %8.2f\n", name, $1 / n
        }
        $3 == "block:block_rq_issue" { printf "  %-18s %8.2f\n", "block writes", $1 / n }
        $3 == "task-clock" { printf "  %-18s %8.3f\n", "CPU ms", $1 / n }' "$WORK/stat.csv" | tee "$OUT"
    exit 0
fi
perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf >"${OUT%.svg}.folded"
inferno-flamegraph --minwidth 1 --title "mtad: $MESSAGES x $SIZE, $SESSIONS sessions $*" <"${OUT%.svg}.folded" >"$OUT"
log "wrote $OUT and ${OUT%.svg}.folded"
