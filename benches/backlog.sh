#!/usr/bin/env bash
# Backlog benchmark: what mtad costs while a slow destination holds a ram
# backlog.
#
# Each round starts a fresh smtp-sink that waits BACKLOG_SINK_DELAY
# seconds before answering the end of every message's data, and a fresh
# mtad relaying everything to it (at most 20 connections, as in
# benches/relay.sh), with `[queue] poll_interval` set to
# BACKLOG_POLL. mta-loadgen then submits BACKLOG_MESSAGES messages: 20
# of them are soon in delivery, waiting on the sink, and the rest wait in
# the ram runner's line, each claimed by its attempt to be. After
# BACKLOG_SETTLE seconds, mtad's CPU time (user + system, /proc) is read
# over BACKLOG_WINDOW seconds: what the waiting costs. The disk runner's
# polls are most of it: each one walks the schedule, where every one of
# those messages is due.
#
# With BACKLOG_BASELINE set to another mtad binary, the two alternate,
# round by round (which goes first alternating too), and the report gives
# the ratio of their CPU.
#
# Usage (as root: smtp-sink drops to nobody):
#   benches/backlog.sh
#   BACKLOG_BASELINE=/path/to/old/mtad BACKLOG_NO_BUILD=1 benches/backlog.sh
#
# Environment:
#   BACKLOG_MESSAGES=N      messages submitted (default 5000)
#   BACKLOG_SINK_DELAY=S    smtp-sink's wait before its reply to the data
#                           (default 60; longer than settle + window, so
#                           nothing is delivered while measured)
#   BACKLOG_POLL=DURATION   [queue] poll_interval (default "100ms")
#   BACKLOG_SETTLE=S        wait after the load before measuring (default 2)
#   BACKLOG_WINDOW=S        the measured window (default 10)
#   BACKLOG_IN_FLOW=DURATION  [smtp] in_flow_delay (default "0s": with
#                           mtad's in-flow control on, the submission would
#                           slow to the sink's pace and no backlog form;
#                           set it empty to leave the key out, for a
#                           baseline built before the key existed)
#   BACKLOG_REPEAT=N        rounds per binary (default 3)
#   BACKLOG_MTAD=PATH       the mtad to measure (default: the release build)
#   BACKLOG_BASELINE=PATH   an mtad to compare it with
#   BACKLOG_NO_BUILD=1      skip `cargo build --release`
#   BACKLOG_KEEP=1          keep the temporary directory
#   BACKLOG_PROFILE=PREFIX  also record mtad with perf over each window and
#                           write a flame graph, PREFIX-<round>.svg (perf
#                           and inferno as benches/profile.sh installs them;
#                           the CPU figures of such a run include perf's
#                           own cost: take them from a run without it)
#
# Only 127.0.0.1 is used; everything started is stopped by an EXIT trap,
# and every wait is bounded. Writes under a new /tmp/mta-backlog.XXXXXX.
# The Markdown report goes to standard output, progress to standard
# error. Exit status 0 when every round had its backlog and delivered
# nothing during the window.
set -euo pipefail

MESSAGES=${BACKLOG_MESSAGES:-5000}
DELAY=${BACKLOG_SINK_DELAY:-60}
POLL=${BACKLOG_POLL:-100ms}
IN_FLOW=${BACKLOG_IN_FLOW-0s}
SETTLE=${BACKLOG_SETTLE:-2}
WINDOW=${BACKLOG_WINDOW:-10}
REPEAT=${BACKLOG_REPEAT:-3}

log() { printf 'backlog: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (smtp-sink drops to 'nobody')"
SINK_BIN=/usr/sbin/smtp-sink
[ -x "$SINK_BIN" ] || die "$SINK_BIN not found (Debian's postfix package; tests/install-peers.sh)"
for tool in cargo ss timeout awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
if [ -n "${BACKLOG_PROFILE:-}" ]; then
    PATH=$(cd "$(dirname "$0")/.." && pwd)/target/tools/bin:$PATH
    for tool in perf inferno-collapse-perf inferno-flamegraph; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found (benches/profile.sh installs them)"
    done
fi
[ "$((SETTLE + WINDOW + 5))" -lt "$DELAY" ] \
    || die "BACKLOG_SINK_DELAY ($DELAY) must exceed BACKLOG_SETTLE + BACKLOG_WINDOW + 5"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"

release_binaries "${BACKLOG_NO_BUILD:-}"
[ -z "${BACKLOG_MTAD:-}" ] || MTAD=$BACKLOG_MTAD
BASELINE=${BACKLOG_BASELINE:-}
[ -x "$MTAD" ] || die "$MTAD is not an executable"
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "BACKLOG_BASELINE=$BASELINE is not an executable"

WORK=$(mktemp -d /tmp/mta-backlog.XXXXXX)
chmod 755 "$WORK"
# Each run's queue in its own block group (see "File churn" in
# docs/benchmarks.md).
chattr +T "$WORK" 2>/dev/null || true
RUN=0
RUNDIR=
MTAD_PID=
SINK_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    # (mtad is killed: the sink would hold its drain for DELAY seconds,
    # and the queue is thrown away)
    [ -z "$MTAD_PID" ] || { kill -KILL "$MTAD_PID" 2>/dev/null || true; wait "$MTAD_PID" 2>/dev/null || true; }
    stop_pid "$SINK_PID" 20
    if [ -n "${BACKLOG_KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sink_count() {
    local n
    n=$(tail -c 96 "$RUNDIR/sink.out" 2>/dev/null | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\)$/\1/p' | tail -n1)
    echo "${n:-0}"
}

# One round with mtad binary $2, labelled $1; sets CPU (ms of CPU per
# second of the window) and BACKLOG (messages queued and not at the
# sink), or dies.
measure() { # label binary
    local label=$1 bin=$2 out t0 t1 ticks before after hz
    hz=$(getconf CLK_TCK)
    new_rundir "$label"
    SINK_PORT=$(free_port)
    "$SINK_BIN" -c -w "$DELAY" -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$RUNDIR/sink.out" 2>"$RUNDIR/sink.err" &
    SINK_PID=$!
    wait_listening "$SINK_PORT" 10 || { cat "$RUNDIR/sink.err" >&2; die "smtp-sink is not listening"; }
    relay_mtad_config "$RUNDIR" "$SINK_PORT" \
        | sed "s/^retry_base = \"1s\"\$/&\npoll_interval = \"$POLL\"/" >"$RUNDIR/mtad.toml"
    grep -q "^poll_interval = \"$POLL\"" "$RUNDIR/mtad.toml" || die "could not set poll_interval"
    if [ -n "$IN_FLOW" ]; then
        sed -i "s/^max_connections = 1000\$/&\nin_flow_delay = \"$IN_FLOW\"/" "$RUNDIR/mtad.toml"
        grep -q "^in_flow_delay = \"$IN_FLOW\"" "$RUNDIR/mtad.toml" || die "could not set in_flow_delay"
    fi
    "$bin" --config "$RUNDIR/mtad.toml" >"$RUNDIR/stdout" 2>"$RUNDIR/mtad.log" &
    MTAD_PID=$!
    wait_mtad_ready "$RUNDIR"
    [ -n "$MTAD_PORT" ] || die "could not read mtad's port"
    out=$(timeout 120 "$LOADGEN" --server "127.0.0.1:$MTAD_PORT" --sessions 20 --messages "$MESSAGES" \
        --size 4KiB --timeout 60 --json 2>&1) || die "load failed: $out"
    case $out in *"\"accepted\":$MESSAGES,"*) ;; *) die "not every message was accepted: $out" ;; esac
    sleep "$SETTLE"
    before=$(sink_count)
    t0=$EPOCHREALTIME
    ticks=$(proc_ticks "$MTAD_PID")
    if [ -n "${BACKLOG_PROFILE:-}" ]; then
        timeout $((WINDOW + 30)) perf record -F 499 -g --call-graph dwarf,16384 -p "$MTAD_PID" \
            -o "$RUNDIR/perf.data" -- sleep "$WINDOW" 2>"$RUNDIR/perf.err" >&2 \
            || { cat "$RUNDIR/perf.err" >&2; die "perf record failed"; }
    else
        sleep "$WINDOW"
    fi
    t1=$EPOCHREALTIME
    ticks=$(($(proc_ticks "$MTAD_PID") - ticks))
    after=$(sink_count)
    [ "$before" = 0 ] && [ "$after" = 0 ] \
        || die "$label: the sink finished messages during the round ($before, $after): raise BACKLOG_SINK_DELAY"
    CPU=$(awk -v t="$ticks" -v hz="$hz" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", t * 1000 / hz / (b - a) }')
    kill -KILL "$MTAD_PID" 2>/dev/null || true
    wait "$MTAD_PID" 2>/dev/null || true
    MTAD_PID=
    stop_pid "$SINK_PID" 20
    SINK_PID=
    if [ -n "${BACKLOG_PROFILE:-}" ]; then
        perf script -i "$RUNDIR/perf.data" 2>/dev/null | inferno-collapse-perf >"$RUNDIR/perf.folded"
        inferno-flamegraph --minwidth 1 --title "mtad ($label): $MESSAGES waiting on a slow destination, poll $POLL, ${WINDOW} s" \
            <"$RUNDIR/perf.folded" >"$BACKLOG_PROFILE-$label.svg"
        log "wrote $BACKLOG_PROFILE-$label.svg"
    fi
    log "$label: $MESSAGES queued, none delivered; CPU $CPU ms per second over ${WINDOW} s"
}

M_ALL=
B_ALL=
for r in $(seq "$REPEAT"); do
    order=(mtad baseline)
    [ $((r % 2)) = 1 ] || order=(baseline mtad)
    for who in "${order[@]}"; do
        if [ "$who" = mtad ]; then
            measure "mtad-$r" "$MTAD"
            M_ALL="$M_ALL${M_ALL:+, }$CPU"
        elif [ -n "$BASELINE" ]; then
            measure "baseline-$r" "$BASELINE"
            B_ALL="$B_ALL${B_ALL:+, }$CPU"
        fi
    done
done

lowest() { tr ',' '\n' <<<"$1" | awk 'NF { v = $1 + 0; if (m == "" || v < m) m = v } END { printf "%.1f\n", m }'; }

cat <<EOF
## Backlog run $(date -u '+%Y-%m-%d %H:%M UTC')

- $MESSAGES messages of 4 KiB submitted by mta-loadgen (20 sessions) to mtad relaying to a smtp-sink that waits ${DELAY} s before its reply to the data (\`smtp-sink -c -w $DELAY\`), at most 20 connections: 20 in delivery, the rest in the ram runner's line; \`[queue] poll_interval = "$POLL"\`${IN_FLOW:+, \`[smtp] in_flow_delay = \"$IN_FLOW\"\`}
- mtad's CPU (user + system, /proc) over ${WINDOW} s, from ${SETTLE} s after the load; nothing reached the sink meanwhile in any round
- mtad: \`$MTAD\`$([ -z "$BASELINE" ] || printf '; baseline: `%s`' "$BASELINE")

| mtad | CPU ms per second, every round | lowest |
| --- | --- | ---: |
| mtad | $M_ALL | $(lowest "$M_ALL") |
EOF
if [ -n "$BASELINE" ]; then
    echo "| baseline | $B_ALL | $(lowest "$B_ALL") |"
    echo
    echo "mtad over baseline, lowest against lowest: $(ratio "$(lowest "$M_ALL")" "$(lowest "$B_ALL")")"
fi
