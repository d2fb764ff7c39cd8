#!/usr/bin/env bash
# End-to-end relay benchmark: mta-loadgen -> MTA -> Postfix's smtp-sink, all
# on loopback, for mtad and for a private instance of Debian's Postfix set up
# as the same relay, in one run, on this machine. Both make every message
# durable before answering 250 (mtad in its default durable mode; Postfix
# always) and relay everything to a fresh smtp-sink, which counts what it
# receives. See docs/benchmarks.md ("End to end: relay to smtp-sink") for
# what this measures and the last recorded figures.
#
# Usage (as root; a private Postfix instance needs it):
#   benches/relay.sh             # builds, checks the network, runs, prints Markdown
#
# Environment:
#   RELAY_SCALE=N      divide every message count by N (quick smoke run)
#   RELAY_REPEAT=N     rounds per case and MTA (default 3); the table shows
#                      each MTA's best round by end-to-end msg/s
#   RELAY_TIMEOUT=S    --timeout of each mta-loadgen run (default 240)
#   RELAY_DRAIN=S      longest wait, once the load is in, for the sink to
#                      have every message (default 240)
#   RELAY_COOLDOWN=S   pause before every measured run (default 0); see
#                      "File churn" in docs/benchmarks.md
#   RELAY_NO_BUILD=1   skip `cargo build --release`
#   RELAY_NO_NETCHECK=1  skip the strace check that nothing leaves loopback
#   RELAY_KEEP=1       keep the temporary directory (queues, logs, JSON)
#   RELAY_INDEX_CACHE=SIZE  mtad's [spool] index_cache (default: mtad's)
#   RELAY_CASES="N..." the cases to run, by number (default: all; see the
#                      run_case lines at the end)
#   RELAY_MTAD=PATH    the mtad binary to measure (default: this checkout's
#                      release build)
#   RELAY_BASELINE=PATH  compare with this other mtad binary instead of
#                      Postfix (a before/after of a change: build both,
#                      copy them aside, run with RELAY_NO_BUILD=1); no
#                      Postfix is started
#   RELAY_NO_DIRECT=1  skip the runs with no MTA in the middle
#
# Cases 1 to 3 keep 20 connections open, case 8 keeps 200; cases 4 to 7
# open a new connection for every message (mta-loadgen
# --per-connection 1), case 7 with STARTTLS on each (a full handshake every
# time; both MTAs offer the same throw-away ECDSA P-256 certificate). Every
# round also measures the load generator straight into a fresh smtp-sink
# ("no MTA"; not for case 7, as smtp-sink has no TLS): what the sink and
# the load generator can do on this machine, the ceiling of any relay.
# Cases 9 to 11 are cases 4 to 6 with Postfix's smtp-source as the client
# instead of mta-loadgen (-s 20, a new connection per message, no -d): an
# independent client, and the one issue 15's figures were taken with. It
# reports no latencies, so their p50 and p99 columns stay empty; the
# warm-up is mta-loadgen's, as for every case.
#
# The Markdown report goes to standard output, progress to standard error.
# Only 127.0.0.1 is used: mtad routes example.test to the sink with
# [delivery.routes] and its resolver points at a closed loopback port
# (127.0.0.1:9), Postfix has relayhost = [127.0.0.1]:port with DNS off.
# /etc/postfix and port 25 are never touched. An EXIT trap stops mtad, the
# private Postfix, smtp-sink and every helper this script started, whatever
# happens. Every wait is bounded. Exit status: 0 if every run delivered
# every message exactly once and left both queues empty.
set -euo pipefail

SCALE=${RELAY_SCALE:-1}
TIMEOUT=${RELAY_TIMEOUT:-240}
DRAIN=${RELAY_DRAIN:-240}
REPEAT=${RELAY_REPEAT:-3}
COOLDOWN=${RELAY_COOLDOWN:-0}
INDEX_CACHE=${RELAY_INDEX_CACHE:-}
WARMUP=40 # messages through the whole path before each measured run

log() { printf 'relay: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
    echo "relay: must run as root (a private Postfix instance needs root to start its master, and smtp-sink drops to 'nobody'); try: sudo $0" >&2
    exit 1
fi
for tool in cargo postfix postconf ss script stdbuf timeout tail pgrep openssl; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool not found (Postfix comes from tests/install-peers.sh)"
done
SINK_BIN=/usr/sbin/smtp-sink
[ -x "$SINK_BIN" ] || die "$SINK_BIN not found (Debian's postfix package; tests/install-peers.sh)"
SOURCE_BIN=/usr/sbin/smtp-source
[ -x "$SOURCE_BIN" ] || die "$SOURCE_BIN not found (Debian's postfix package; tests/install-peers.sh)"
if [ -z "${RELAY_NO_NETCHECK:-}" ]; then
    command -v strace >/dev/null 2>&1 || die "strace not found (or set RELAY_NO_NETCHECK=1)"
fi
id postfix >/dev/null 2>&1 || die "no 'postfix' user (run tests/install-peers.sh)"
id nobody >/dev/null 2>&1 || die "no 'nobody' user for smtp-sink"
getent group postdrop >/dev/null 2>&1 || die "no 'postdrop' group (run tests/install-peers.sh)"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The private Postfix instance: its configuration, start and stop.
# shellcheck source=tests/postfix-instance.sh
. "$ROOT/tests/postfix-instance.sh"
# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"

release_binaries "${RELAY_NO_BUILD:-}"
[ -z "${RELAY_MTAD:-}" ] || MTAD=$RELAY_MTAD
BASELINE=${RELAY_BASELINE:-}
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || die "RELAY_BASELINE=$BASELINE is not an executable"
    [ -x "$MTAD" ] || die "$MTAD is not an executable"
    OTHER=baseline
    OTHER_NAME="baseline mtad"
else
    OTHER=postfix
    OTHER_NAME=Postfix
fi
CASES=${RELAY_CASES:-1 2 3 4 5 6 7 8 9 10 11}

WORK=$(mktemp -d /tmp/mta-relay.XXXXXX)
chmod 755 "$WORK" # the postfix user must reach its queue and data dirs
# Spread the per-run directories over the file system's block groups (the
# ext4 Orlov allocator treats a +T directory's children as top-level
# directories), so a run's new files do not land among the inodes the
# previous runs' deliveries have just freed (see "File churn" in
# docs/benchmarks.md). Harmless where unsupported.
chattr +T "$WORK" 2>/dev/null || true
PFCONF=$WORK/postfix/etc
# Queue directories are per run and only removed at the end.
RUN=0
RUNDIR=
PFQUEUE=$WORK/postfix/none
MTAD_PID=
MTAD_PORT=
MTAD_STRACE_PID=
PF_STRACE_PID=
LOADGEN_PID=
SINK_PID=
SINK_PORT=
SINK_OUT=
WATCH_PID=
PF_PORT=
PF_STARTED=

# --- process handling ---------------------------------------------------------

stop_mtad() {
    [ -n "$MTAD_PID" ] || return 0
    stop_pid "$MTAD_PID" 300 # mtad finishes deliveries in flight first
    MTAD_PID=
    # strace (network check) exits with its tracee.
    stop_pid "$MTAD_STRACE_PID" 50
    MTAD_STRACE_PID=
}

stop_sink() {
    stop_pid "$SINK_PID" 50
    SINK_PID=
    # the watcher's tail follows the sink (--pid) and ends with it
    stop_pid "$WATCH_PID" 30
    WATCH_PID=
}

stop_postfix() {
    [ -n "$PF_STARTED" ] || return 0
    stop_pid "$PF_STRACE_PID" 50 # detaches from the instance
    PF_STRACE_PID=
    pf_stop "$PFCONF" "$PFQUEUE"
    PF_STARTED=
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$LOADGEN_PID" ]; then
        kill -TERM "$LOADGEN_PID" 2>/dev/null
        wait "$LOADGEN_PID" 2>/dev/null
    fi
    stop_mtad
    stop_postfix
    stop_sink
    if [ -n "${RELAY_KEEP:-}" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- smtp-sink ------------------------------------------------------------------

# A new sink for every run. -c prints "sess=S quit=Q mesg=M" followed by a
# carriage return each time a session ends, QUIT is received or a message's
# final "." is received: mesg is the number of transactions it got.
start_sink() {
    SINK_PORT=$(free_port)
    SINK_OUT=$RUNDIR/sink.out
    : >"$SINK_OUT"
    "$SINK_BIN" -c -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$SINK_OUT" 2>"$RUNDIR/sink.err" &
    SINK_PID=$!
    wait_listening "$SINK_PORT" 10 || { cat "$RUNDIR/sink.err" >&2; die "smtp-sink is not listening on 127.0.0.1:$SINK_PORT"; }
}

sink_count() {
    local n
    n=$(tail -c 96 "$SINK_OUT" 2>/dev/null | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\)$/\1/p' | tail -n1)
    echo "${n:-0}"
}

# Writes the time ($EPOCHREALTIME) at which the sink's counter reaches
# $1 into $RUNDIR/sink.done. Event-driven (tail -f uses inotify), so it
# costs nothing while it waits and is late by well under a millisecond.
start_watcher() { # target
    rm -f "$RUNDIR/sink.done"
    (
        timeout "$((TIMEOUT + DRAIN + 60))" tail -c +1 --pid="$SINK_PID" -f "$SINK_OUT" 2>/dev/null \
            | stdbuf -o0 tr '\r' '\n' \
            | { grep -m1 -qx ".* mesg=$1" && printf '%s\n' "$EPOCHREALTIME" >"$RUNDIR/sink.done"; }
    ) &
    WATCH_PID=$!
}

wait_sink_count() { # target seconds; returns 1 on timeout
    local target=$1 tries=$(($2 * 10))
    for _ in $(seq "$tries"); do
        [ "$(sink_count)" -ge "$target" ] && return 0
        sleep 0.1
    done
    return 1
}

# --- mtad -------------------------------------------------------------------

start_mtad() { # binary [netcheck]: run it under strace
    local bin=$1
    MTADIR=$RUNDIR
    # (STARTTLS offered with the certificate Postfix has too, for case 7)
    relay_mtad_config "$MTADIR" "$SINK_PORT" \
        "$([ -z "$INDEX_CACHE" ] || printf 'index_cache = "%s"' "$INDEX_CACHE")" \
        "$TLS_TABLE" >"$MTADIR/mtad.toml"
    if [ "${2:-}" = netcheck ]; then
        strace -f -qq -o "$MTADIR/strace.out" -e trace=connect,sendto,sendmsg,sendmmsg \
            "$bin" --config "$MTADIR/mtad.toml" >"$MTADIR/stdout" 2>"$MTADIR/mtad.log" &
        MTAD_STRACE_PID=$!
        # Until mtad says its pid, watch strace (a child of strace looked
        # up before may still be strace's own copy, on its way to exec).
        MTAD_PID=$MTAD_STRACE_PID
        wait_mtad_ready "$MTADIR"
        MTAD_PID=$(sed -n 's/^mtad: ready (pid \([0-9]*\))$/\1/p' "$MTADIR/stdout" | head -n1)
        [ -n "$MTAD_PID" ] || die "mtad did not say its pid under strace"
    else
        "$bin" --config "$MTADIR/mtad.toml" >"$MTADIR/stdout" 2>"$MTADIR/mtad.log" &
        MTAD_PID=$!
        wait_mtad_ready "$MTADIR"
    fi
    [ -n "$MTAD_PORT" ] || die "could not read mtad's port from its stdout"
}

mtad_queued() {
    # (tmp/free.N: a finished message's file kept for the next one)
    find "$MTADIR/queue/msg" "$MTADIR/queue/tmp" -type f ! -name 'free.*' 2>/dev/null | wc -l
}

mtad_events() { # event
    grep -c "\"event\":\"$1\"" "$MTADIR/queue/delivery.log" 2>/dev/null || true
}

mtad_last_delivery() {
    grep '"event":"delivered"' "$MTADIR/queue/delivery.log" 2>/dev/null \
        | sed -n 's/.*"ts":\([0-9.]*\).*/\1/p' | sort -n | tail -n1
}

# --- Postfix ----------------------------------------------------------------

write_postfix_config() {
    # Accept from loopback, make durable (cleanup fsyncs the queue file
    # before smtpd answers 250), relay everything to the smtp-sink of the
    # run, and skip work mtad does not do either. The rest is the shared
    # private instance (tests/postfix-instance.sh).
    pf_write_config "$PFCONF" "$PF_PORT" <<EOF
# benches/relay.sh
# queue_directory, data_directory, maillog_file, relayhost: set per run
myhostname = pf.test
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_delay_reject = no
# Outbound: every message to the sink, by address, no DNS, no TLS, 20
# connections at most (as mtad's max_per_destination), cached for reuse.
default_transport = smtp
disable_dns_lookups = yes
smtp_tls_security_level = none
default_destination_concurrency_limit = 20
smtp_connection_cache_on_demand = yes
default_process_limit = 200
message_size_limit = 67108864
maillog_file_prefixes = $WORK
# STARTTLS offered (case 7), with the certificate mtad has; the shared
# master.cf has tlsmgr.
smtpd_tls_security_level = may
smtpd_tls_cert_file = $WORK/cert.pem
smtpd_tls_key_file = $WORK/key.pem
EOF
}

start_postfix() { # [netcheck]: attach strace to the master before any mail
    PFQUEUE=$RUNDIR/spool
    PFDATA=$RUNDIR/data
    PFLOG=$RUNDIR/maillog
    postconf -c "$PFCONF" -e "queue_directory = $PFQUEUE" "data_directory = $PFDATA" \
        "maillog_file = $PFLOG" "relayhost = [127.0.0.1]:$SINK_PORT"
    pf_prepare_dirs "$PFQUEUE" "$PFDATA" || die "cannot prepare $PFQUEUE and $PFDATA"
    # From here on there may be processes to stop.
    PF_STARTED=1
    pf_start "$PFCONF" "$RUNDIR" || die "Postfix did not start"
    wait_listening "$PF_PORT" 15 || die "Postfix is not listening on 127.0.0.1:$PF_PORT"
    if [ "${1:-}" = netcheck ]; then
        local master
        master=$(pf_master_pid "$PFQUEUE") || die "no Postfix master pid"
        # Follows every process the master forks from now on (smtpd, cleanup,
        # trivial-rewrite, smtp...); qmgr and pickup do no networking.
        strace -f -qq -o "$RUNDIR/strace.out" -e trace=connect,sendto,sendmsg,sendmmsg -p "$master" 2>"$RUNDIR/strace.err" &
        PF_STRACE_PID=$!
        sleep 1
        kill -0 "$PF_STRACE_PID" 2>/dev/null || { cat "$RUNDIR/strace.err" >&2; die "strace could not attach to the Postfix master"; }
    fi
}

pf_queued() {
    echo $(($(pf_count incoming) + $(pf_count active) + $(pf_count deferred) + $(pf_count hold) + $(pf_count maildrop)))
}

pf_events() { # status
    grep -c " status=$1 " "$PFLOG" 2>/dev/null || true
}

# Time of the last "status=sent" in the maillog, as a Unix time. postlogd
# writes "Mon DD HH:MM:SS.uuuuuu" in local time, without the year.
pf_last_delivery() {
    local stamp
    stamp=$(grep ' status=sent ' "$PFLOG" 2>/dev/null | tail -n1 | awk '{ print $1 " " $2 " " $3 }')
    [ -n "$stamp" ] || return 0
    local whole=${stamp%.*} frac=
    [ "$whole" != "$stamp" ] && frac=${stamp##*.}
    local secs
    secs=$(date -d "$whole" +%s 2>/dev/null) || return 0
    echo "$secs${frac:+.$frac}"
}

# --- CPU time -------------------------------------------------------------------

# mtad's CPU time so far, in ticks.
mtad_ticks() { proc_ticks "$MTAD_PID"; }

# milliseconds of CPU per message
cpu_ms_per_msg() { # ticks messages
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n + 0 == 0 || t == "") print ""; else printf "%.3f", t * 1000 / hz / n }'
}

# The load generator runs under this small shell, which writes `times`
# to the file given first once the generator has ended: its second line
# is the CPU time the generator used, its share of the machine. A TERM or
# INT to the shell ends the generator too.
TIMED=(bash -c 'trap "kill \$pid 2>/dev/null" TERM INT
    "$@" & pid=$!
    wait "$pid"; rc=$?
    if [ "$rc" -gt 128 ]; then wait "$pid"; rc=$?; fi
    times >"$0"
    exit "$rc"')

# milliseconds of CPU per message from TIMED's file (the second line,
# "XmY.YYYs XmY.YYYs": user and system time of the shell's children)
timed_ms_per_msg() { # file messages
    awk -v n="$2" 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }; found = 1 }
        END { if (n + 0 == 0 || !found) print ""; else printf "%.3f", t * 1000 / n }' "$1" 2>/dev/null
}

# The median of numbers separated by spaces, or -.
median_of() { tr ' ' '\n' <<<"$1" | median; }

# --- runs -------------------------------------------------------------------

# a as a percentage of b, no decimals, or - if unknown
percent() { # a b
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.0f%%", 100 * a / b }'
}

json_num() { # key json
    printf '%s' "$2" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -n1
}
json_p() { # p50|p99 json
    printf '%s' "$2" | sed -n "s/.*\"latency_ms\":{[^}]*\"$1\":\([0-9.]*\).*/\1/p" | head -n1
}
# messages / (end - start) with 2 decimals
per_sec() { # messages start end
    awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { if (b == "" || b - a <= 0) print ""; else printf "%.2f", n / (b - a) }'
}
secs() { # start end -> seconds with 3 decimals
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "-"; else printf "%.3f", b - a }'
}

FAILED=0
ROWS=()
CPUROWS=()
SHAREROWS=()
ALLRUNS=()
CMDS=()

# Warm-up through the whole path: Postfix spawns smtpd, cleanup,
# trivial-rewrite and smtp on demand, and both MTAs open their first
# connections to the sink; none of that is measured. Both get the same.
warm_up() { # port rcpts size expected-sink-count
    "$LOADGEN" --server "127.0.0.1:$1" --sessions 20 --messages "$WARMUP" --rcpts "$2" \
        --size "$3" --timeout 60 >"$RUNDIR/warmup.log" 2>&1 \
        || { cat "$RUNDIR/warmup.log" >&2; die "warm-up failed"; }
    wait_sink_count "$4" 60 || die "the sink got $(sink_count) of the $4 warm-up messages in 60 s"
}

# One run of Postfix's smtp-source instead of mta-loadgen (cases 9-11):
# the loadgen arguments --sessions, --messages, --size and --rcpts become
# -s, -m, -l (bytes of body, headers not counted) and -r; no -d, so a new
# connection for every message. Sets what run_loadgen sets; smtp-source
# reports no latencies (P50 P99 empty), and ACC is the message count when
# it exited 0 with nothing on standard error (the sink's count and the
# MTA's log are checked after, as for every run).
# smtp-source's arguments for a case, in SOURCE_ARGS (the server's
# address not included): for the run and for the report's command list.
smtp_source_args() { # sessions messages size rcpts
    local bytes
    case $3 in
        *KiB) bytes=$((${3%KiB} * 1024)) ;;
        *) bytes=$3 ;;
    esac
    SOURCE_ARGS=(-s "$1" -m "$2" -l "$bytes" -r "$4" -f sender@example.test -t rcpt@example.test)
}

run_smtp_source() { # port args...
    local port=$1
    shift
    local sessions= messages= size= rcpts=1
    while [ $# -gt 0 ]; do
        case $1 in
            --sessions) sessions=$2; shift 2 ;;
            --messages) messages=$2; shift 2 ;;
            --size) size=$2; shift 2 ;;
            --rcpts) rcpts=$2; shift 2 ;;
            --smtp-source) shift ;;
            *) die "smtp-source cases take no $1" ;;
        esac
    done
    smtp_source_args "$sessions" "$messages" "$size" "$rcpts"
    LOADGEN_RC=0
    T0=$EPOCHREALTIME
    "${TIMED[@]}" "$RUNDIR/gen.times" timeout "$TIMEOUT" "$SOURCE_BIN" "${SOURCE_ARGS[@]}" "127.0.0.1:$port" \
        >"$RUNDIR/source.out" 2>"$RUNDIR/source.err" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || LOADGEN_RC=$?
    T1=$EPOCHREALTIME
    LOADGEN_PID=
    RATE=$(per_sec "$messages" "$T0" "$T1")
    P50=
    P99=
    ACC=
    if [ "$LOADGEN_RC" = 0 ] && [ ! -s "$RUNDIR/source.err" ]; then
        ACC=$messages
    else
        log "$NAME: smtp-source exited $LOADGEN_RC: $(head -c 500 "$RUNDIR/source.err")"
        FAILED=1
    fi
}

# One loadgen run; sets RATE P50 P99 ACC T0 T1 LOADGEN_RC, saves the JSON.
# With --smtp-source among the arguments, Postfix's smtp-source runs
# instead (run_smtp_source).
run_loadgen() { # port args...
    local port=$1
    shift
    rm -f "$RUNDIR/gen.times"
    if [[ " $* " == *" --smtp-source "* ]]; then
        run_smtp_source "$port" "$@"
        return
    fi
    local out
    LOADGEN_RC=0
    T0=$EPOCHREALTIME
    # In the background so that a signal's trap runs at once (bash defers
    # traps until a foreground child exits, but interrupts `wait`).
    "${TIMED[@]}" "$RUNDIR/gen.times" "$LOADGEN" --server "127.0.0.1:$port" "$@" --timeout "$TIMEOUT" --json \
        >"$RUNDIR/loadgen.json" 2>"$RUNDIR/loadgen.stderr" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || LOADGEN_RC=$?
    T1=$EPOCHREALTIME
    LOADGEN_PID=
    out=$(cat "$RUNDIR/loadgen.json")
    RATE=$(json_num rate_msg_s "$out")
    ACC=$(json_num accepted "$out")
    P50=$(json_p p50 "$out")
    P99=$(json_p p99 "$out")
    if [ "$LOADGEN_RC" != 0 ]; then
        log "$NAME: mta-loadgen exited $LOADGEN_RC: $out"
        FAILED=1
    fi
}

# After the load: when did the sink get the last message? Sets T2 (empty
# if it did not within RELAY_DRAIN seconds).
wait_drained() {
    T2=
    for _ in $(seq $((DRAIN * 10))); do
        if [ -s "$RUNDIR/sink.done" ]; then
            T2=$(cat "$RUNDIR/sink.done")
            return 0
        fi
        sleep 0.1
    done
    log "$NAME: the sink has $(sink_count) of $TARGET messages after ${DRAIN} s"
    FAILED=1
}

wait_empty() { # function-printing-queue-size seconds
    local n
    for _ in $(seq $(($2 * 10))); do
        n=$($1)
        [ "$n" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

# One measured run of one MTA. Sets RATE P50 P99 E2E DRAINED SINKED CPU,
# and GEN, SINKCPU and BUSY: the CPU per message of the load generator and
# of the sink, and how busy the machine was during the load (per cent).
# args: messages rcpts size loadgen-args...
measure() { # mta messages rcpts size args...
    local mta=$1 messages=$2 rcpts=$3 size=$4
    shift 4
    local port expect_dlv sent deferred failed queued last lastnote= c0 c1 s0 s1 m0 m1
    new_rundir "$mta"
    [ "$COOLDOWN" = 0 ] || sleep "$COOLDOWN"
    sync
    start_sink
    if [ "$mta" = postfix ]; then
        start_postfix
        port=$PF_PORT
    else
        start_mtad "$(mtad_binary "$mta")"
        port=$MTAD_PORT
    fi
    log "$NAME: $mta on 127.0.0.1:$port -> smtp-sink on 127.0.0.1:$SINK_PORT"
    warm_up "$port" "$rcpts" "$size" "$WARMUP"
    TARGET=$((WARMUP + messages))
    start_watcher "$TARGET"
    if [ "$mta" != postfix ]; then c0=$(mtad_ticks); else c0=$(pf_ticks); fi
    s0=$(proc_ticks "$SINK_PID")
    m0=$(machine_ticks)
    run_loadgen "$port" "$@"
    m1=$(machine_ticks)
    wait_drained
    # Then: the queue must empty, and the sink must not get anything more.
    if [ "$mta" != postfix ]; then
        wait_empty mtad_queued 60 || true
        queued=$(mtad_queued)
    else
        wait_empty pf_queued 60 || true
        queued=$(pf_queued)
    fi
    sleep 1
    if [ "$mta" != postfix ]; then c1=$(mtad_ticks); else c1=$(pf_ticks); fi
    s1=$(proc_ticks "$SINK_PID")
    CPU=$(cpu_ms_per_msg $((c1 - c0)) "$messages")
    GEN=$(timed_ms_per_msg "$RUNDIR/gen.times" "$messages")
    SINKCPU=$(cpu_ms_per_msg $((s1 - s0)) "$messages")
    BUSY=$(busy_percent "$m0" "$m1")
    SINKED=$(($(sink_count) - WARMUP))
    expect_dlv=$((TARGET * rcpts))
    if [ "$mta" != postfix ]; then
        sent=$(mtad_events delivered)
        deferred=$(mtad_events deferred)
        failed=$(($(mtad_events failed) + $(mtad_events bounced)))
        last=$(mtad_last_delivery)
        stop_mtad
    else
        sent=$(pf_events sent)
        deferred=$(pf_events deferred)
        failed=$(pf_events bounced)
        last=$(pf_last_delivery)
        lastnote=" (the maillog has whole seconds)"
        stop_postfix
    fi
    stop_sink
    E2E=$(per_sec "$messages" "$T0" "$T2")
    DRAINED=$(secs "$T1" "$T2")
    log "$NAME: $mta accepted ${ACC:-?} at ${RATE:-?} msg/s (p50 ${P50:-?} ms, p99 ${P99:-?} ms); sink got the last at +$(secs "$T0" "$T2") s, ${DRAINED} s after the load, end to end ${E2E:-?} msg/s; CPU ${CPU:-?} ms/msg (load generator ${GEN:-?}, sink ${SINKCPU:-?}; machine ${BUSY:-?} % busy during the load); sink count $SINKED (+$WARMUP warm-up); log: $sent delivered, $deferred deferred, $failed failed, last at +$(secs "$T0" "$last") s$lastnote; left in queue $queued"
    if [ "$SINKED" != "$messages" ] || [ "$queued" != 0 ] || [ "$sent" != "$expect_dlv" ] \
        || [ "$deferred" != 0 ] || [ "$failed" != 0 ] || [ "${ACC:-}" != "$messages" ] || [ -z "$T2" ]; then
        log "$NAME: $mta FAILED the checks: expected $messages at the sink (+$WARMUP), $expect_dlv recipients delivered, nothing deferred or failed, an empty queue"
        FAILED=1
        E2E=
    fi
}

# The load generator straight into a fresh sink: sets DIRECT (msg/s, empty
# when the run failed), and GEN, SINKCPU and BUSY as `measure` does.
measure_direct() { # messages rcpts size args...
    local messages=$1 rcpts=$2 size=$3 s0 s1 m0 m1
    shift 3
    new_rundir direct
    sync
    start_sink
    warm_up "$SINK_PORT" "$rcpts" "$size" "$WARMUP"
    s0=$(proc_ticks "$SINK_PID")
    m0=$(machine_ticks)
    run_loadgen "$SINK_PORT" "$@"
    m1=$(machine_ticks)
    wait_sink_count $((WARMUP + messages)) 30 || true
    s1=$(proc_ticks "$SINK_PID")
    GEN=$(timed_ms_per_msg "$RUNDIR/gen.times" "$messages")
    SINKCPU=$(cpu_ms_per_msg $((s1 - s0)) "$messages")
    BUSY=$(busy_percent "$m0" "$m1")
    DIRECT=$RATE
    if [ "${ACC:-}" != "$messages" ] || [ "$(sink_count)" != $((WARMUP + messages)) ]; then
        log "$NAME: no MTA: accepted ${ACC:-?} of $messages, the sink counted $(($(sink_count) - WARMUP))"
        DIRECT=
        FAILED=1
    fi
    log "$NAME: no MTA: ${DIRECT:-failed} msg/s (p50 ${P50:-?} ms, p99 ${P99:-?} ms); CPU ms/msg: load generator ${GEN:-?}, sink ${SINKCPU:-?}; machine ${BUSY:-?} % busy during the load"
    stop_sink
}

mtad_binary() { # mtad|baseline
    if [ "$1" = baseline ]; then echo "$BASELINE"; else echo "$MTAD"; fi
}

run_case() { # number label sessions messages size rcpts [extra loadgen args]
    local n=$1 label=$2 sessions=$3 messages=$4 size=$5 rcpts=$6
    shift 6
    case " $CASES " in
        *" $n "*) ;;
        *) return 0 ;;
    esac
    messages=$((messages / SCALE))
    [ "$messages" -ge "$sessions" ] || messages=$sessions
    local args=(--sessions "$sessions" --messages "$messages" --size "$size" --rcpts "$rcpts" "$@")
    if [[ " ${args[*]} " == *" --smtp-source "* ]]; then
        smtp_source_args "$sessions" "$messages" "$size" "$rcpts"
        CMDS+=("$n. smtp-source ${SOURCE_ARGS[*]} 127.0.0.1:PORT")
    else
        CMDS+=("$n. mta-loadgen --server 127.0.0.1:PORT ${args[*]} --timeout $TIMEOUT --json")
    fi

    local m_e2e= m_rate= m_p50= m_p99= m_sink= m_drain= p_e2e= p_rate= p_p50= p_p99= p_sink= p_drain= m_all= p_all=
    local m_mincpu= p_mincpu= d_best= d_all=
    # Where the CPU went, round by round: no MTA, then mtad.
    local d_gen= d_sinkcpu= d_busy= m_gen= m_sinkcpu= m_cpu= m_busy=
    local r mta order
    for r in $(seq "$REPEAT"); do
        # Alternate which MTA goes first (by case and by round), so drift on
        # a shared machine does not always favour the same one.
        order=(mtad "$OTHER")
        [ $(((n + r) % 2)) = 0 ] || order=("$OTHER" mtad)
        # (smtp-sink has no TLS: no direct run for the STARTTLS case)
        if [ -z "${RELAY_NO_DIRECT:-}" ] && [[ " ${args[*]} " != *" --starttls "* ]]; then
            NAME="case $n round $r"
            measure_direct "$messages" "$rcpts" "$size" "${args[@]}"
            d_all="$d_all${d_all:+, }${DIRECT:-fail}"
            if [ -n "$DIRECT" ]; then
                d_gen="$d_gen $GEN" d_sinkcpu="$d_sinkcpu $SINKCPU" d_busy="$d_busy $BUSY"
            fi
            if greater "$DIRECT" "$d_best"; then d_best=$DIRECT; fi
        fi
        for mta in "${order[@]}"; do
            NAME="case $n round $r"
            measure "$mta" "$messages" "$rcpts" "$size" "${args[@]}"
            if [ "$mta" = mtad ]; then
                m_all="$m_all${m_all:+, }${E2E:-fail} (${RATE:-fail}; ${CPU:-?})"
                if greater "$E2E" "$m_e2e"; then
                    m_e2e=$E2E m_rate=$RATE m_p50=$P50 m_p99=$P99 m_sink=$SINKED m_drain=$DRAINED
                fi
                if [ -n "$E2E" ] && { [ -z "$m_mincpu" ] || greater "$m_mincpu" "$CPU"; }; then m_mincpu=$CPU; fi
                if [ -n "$E2E" ]; then
                    m_gen="$m_gen $GEN" m_sinkcpu="$m_sinkcpu $SINKCPU" m_cpu="$m_cpu $CPU" m_busy="$m_busy $BUSY"
                fi
            else
                p_all="$p_all${p_all:+, }${E2E:-fail} (${RATE:-fail}; ${CPU:-?})"
                if greater "$E2E" "$p_e2e"; then
                    p_e2e=$E2E p_rate=$RATE p_p50=$P50 p_p99=$P99 p_sink=$SINKED p_drain=$DRAINED
                fi
                if [ -n "$E2E" ] && { [ -z "$p_mincpu" ] || greater "$p_mincpu" "$CPU"; }; then p_mincpu=$CPU; fi
            fi
        done
    done
    ROWS+=("| $n. $label | $messages | ${m_e2e:--} | ${p_e2e:--} | **$(ratio "$m_e2e" "$p_e2e")** | ${d_best:--} | $(percent "$m_e2e" "$d_best") | ${m_rate:--} | ${p_rate:--} | $(ratio "$m_rate" "$p_rate") | ${m_p50:--} | ${p_p50:--} | $(ratio "$p_p50" "$m_p50") | ${m_p99:--} | ${p_p99:--} | $(ratio "$p_p99" "$m_p99") | ${m_drain:--} / ${p_drain:--} | ${m_sink:--} / ${p_sink:--} |")
    CPUROWS+=("| $n. $label | ${m_mincpu:--} | ${p_mincpu:--} | **$(ratio "$p_mincpu" "$m_mincpu")** |")
    if [ -n "$d_busy" ]; then
        SHAREROWS+=("| $n. $label | $(median_of "$d_gen") | $(median_of "$d_sinkcpu") | $(median_of "$d_busy") | $(median_of "$m_gen") | $(median_of "$m_sinkcpu") | $(median_of "$m_cpu") | $(median_of "$m_busy") |")
    fi
    ALLRUNS+=("| $n. $label | $m_all | $p_all | ${d_all:--} |")
}

# --- network check ---------------------------------------------------------------

# Every connect/sendto/sendmsg of both MTAs in a short trial, traced: each
# must name a loopback address (or no address: Unix sockets, netlink,
# connected sockets).
check_trace() { # mta file
    local bad total
    total=$(grep -cE 'inet_addr\(|inet_pton\(' "$2" || true)
    bad=$(grep -oE 'inet_addr\("[^"]*"\)|inet_pton\(AF_INET6, *"[^"]*"' "$2" \
        | sed -E 's/.*"([^"]*)".*/\1/' \
        | grep -vE '^127\.|^::1$|^::ffff:127\.' | sort | uniq -c || true)
    if [ -n "$bad" ]; then
        log "network check: $1 used addresses off loopback:"
        printf '%s\n' "$bad" >&2
        die "network check failed for $1 (trace in $2)"
    fi
    NETCHECK+=("$1: $total traced connect/sendto/sendmsg calls with an IP address, every one to 127.0.0.1; none to any other address")
}

NETCHECK=()
netcheck() {
    local mta
    for mta in mtad "$OTHER"; do
        new_rundir "$mta-netcheck"
        NAME="network check"
        start_sink
        if [ "$mta" != postfix ]; then
            start_mtad "$(mtad_binary "$mta")" netcheck
            warm_up "$MTAD_PORT" 2 4KiB "$WARMUP"
            wait_empty mtad_queued 30 || die "$mta kept mail in the network check"
            stop_mtad
        else
            start_postfix netcheck
            warm_up "$PF_PORT" 2 4KiB "$WARMUP"
            wait_empty pf_queued 30 || die "Postfix kept mail in the network check"
            stop_postfix
        fi
        stop_sink
        check_trace "$mta" "$RUNDIR/strace.out"
        log "${NETCHECK[-1]}"
    done
}

# A throw-away certificate both MTAs offer with STARTTLS (case 7).
TLS_TABLE=$(throwaway_cert "$WORK")

if [ "$OTHER" = postfix ]; then
    PF_PORT=$(free_port)
    write_postfix_config
    log "work dir $WORK; Postfix on 127.0.0.1:$PF_PORT, mtad on an ephemeral port, a new smtp-sink per run"
else
    log "work dir $WORK; mtad $MTAD against the baseline $BASELINE, each on an ephemeral port, a new smtp-sink per run"
fi
[ -n "${RELAY_NO_NETCHECK:-}" ] || netcheck

# Connections kept open (20 sessions, each sending its share).
run_case 1 "4 KiB, 1 rcpt, 20 sessions" 20 5000 4KiB 1
run_case 2 "4 KiB, 20 rcpts, 20 sessions" 20 2000 4KiB 20
run_case 3 "100 KiB, 1 rcpt, 20 sessions" 20 1000 100KiB 1
# A new connection for every message.
run_case 4 "4 KiB, 1 rcpt, new connection per message" 20 5000 4KiB 1 --per-connection 1
run_case 5 "4 KiB, 20 rcpts, new connection per message" 20 2000 4KiB 20 --per-connection 1
run_case 6 "100 KiB, 1 rcpt, new connection per message" 20 1000 100KiB 1 --per-connection 1
run_case 7 "4 KiB, 1 rcpt, new connection and STARTTLS per message" 20 3000 4KiB 1 --per-connection 1 --starttls
# Many clients at once (the p99 of the reply to the end of the data).
run_case 8 "4 KiB, 1 rcpt, 200 sessions" 200 10000 4KiB 1
# Cases 4-6 with Postfix's smtp-source as the client (as issue 15's own
# figures were taken): a new connection for every message, no pipelining.
run_case 9 "smtp-source: 4 KiB, 1 rcpt, new connection per message" 20 5000 4KiB 1 --smtp-source
run_case 10 "smtp-source: 4 KiB, 20 rcpts, new connection per message" 20 2000 4KiB 20 --smtp-source
run_case 11 "smtp-source: 100 KiB, 1 rcpt, new connection per message" 20 1000 100KiB 1 --smtp-source

# --- report -----------------------------------------------------------------

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
fstype=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
fsdev=$(df -T "$WORK" | awk 'NR == 2 { print $1 }')
if [ "$fstype" = ext4 ] && [ -d "/sys/fs/ext4/${fsdev##*/}" ]; then
    jtask=$(cat "/sys/fs/ext4/${fsdev##*/}/journal_task" 2>/dev/null || true)
    if [ -n "$jtask" ] && [ "$jtask" != "<none>" ]; then
        fstype="ext4 (with journal)"
    else
        fstype="ext4 (no journal)"
    fi
fi
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n1)" ]; then rev="$rev+dirty"; fi
pfver=$(postconf -c "$PFCONF" -h mail_version 2>/dev/null || echo unknown)
if [ "$OTHER" = postfix ]; then
    other_line="Postfix $pfver (Debian package), private instance, \`relayhost = [127.0.0.1]:SINK\`, \`default_destination_concurrency_limit = 20\`, \`in_flow_delay = 0\` (its best here; mtad's \`smtp.in_flow_delay\` at its default), STARTTLS offered (\`smtpd_tls_security_level = may\`)"
else
    other_line="baseline: \`$BASELINE\` with the same configuration; mtad: \`$MTAD\`"
fi
O=$OTHER_NAME

cat <<EOF
## Relay run $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs ($cpu), $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB RAM, " }')temp dir on $fstype; kernel $(uname -r)
- mtad: release build of $rev, durable (default), \`index_cache\` ${INDEX_CACHE:-default}, no admin HTTP server, no sendmail socket, \`max_per_destination = 20\`, \`[delivery.routes] "example.test" = "127.0.0.1:SINK"\`, \`name_servers = ["127.0.0.1:9"]\`, \`tls = "none"\` outbound, STARTTLS offered inbound; $other_line
- sink: a new \`smtp-sink -c -u nobody 127.0.0.1:SINK 1024\` per run; $WARMUP warm-up messages through the whole path before each measured run (not counted)
- load: \`mta-loadgen\` (release build), DATA, one command at a time, --timeout $TIMEOUT; cases 9-11: Postfix's \`smtp-source\` (no latencies), the warm-up still mta-loadgen's$([ "$SCALE" = 1 ] || echo ", message counts divided by $SCALE")$([ "$COOLDOWN" = 0 ] || echo "; ${COOLDOWN} s pause before each run")
- every run on fresh empty queues; $REPEAT rounds per case and MTA, the MTAs alternating (which goes first alternates by case and round); the table shows each MTA's best round by end-to-end msg/s, with that round's other figures$([ -n "${RELAY_NO_DIRECT:-}" ] || echo "; \"no MTA\" is the best of $REPEAT runs of the same load straight into a fresh sink, one before each round")
$(for c in "${NETCHECK[@]}"; do echo "- network check (strace, short trial): $c"; done)

| case | messages | mtad e2e msg/s | $O e2e msg/s | mtad/$O e2e | no MTA msg/s | mtad/no MTA | mtad accepted msg/s | $O accepted msg/s | mtad/$O accepted | mtad p50 ms | $O p50 ms | $O/mtad p50 | mtad p99 ms | $O p99 ms | $O/mtad p99 | drain s mtad / $O | at sink mtad / $O |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${ROWS[@]}"
cat <<'EOF'

"e2e" is end to end: messages / (time from starting the load generator to
the sink's counter reaching the last message). "accepted" is mta-loadgen's
rate (accepted / its wall time); p50/p99 are its end-of-data reply latencies
(nearest rank). "drain" is how long after the load generator's last reply
the sink got the last message. "no MTA" is mta-loadgen's rate straight
into a sink, with no MTA in the middle. "at sink" is the number of transactions
smtp-sink counted (one per message, whatever the number of recipients),
warm-up excluded. Every round is checked: the sink got exactly the messages
sent, the MTA's log shows every recipient delivered once and nothing
deferred or failed, and the queue is empty. Ratios above 1 favour mtad.

CPU time per message relayed (user + system, from /proc, counted from the
start of the load to the empty queue; mtad's process, or every process of
the Postfix instance; the load generator and the sink not included),
lowest of the rounds; being CPU rather than wall time, it moves less with
the machine's other load than the rates do:

EOF
cat <<EOF
| case | mtad CPU ms/msg | $O CPU ms/msg | $O/mtad |
| --- | ---: | ---: | ---: |
EOF
printf '%s\n' "${CPUROWS[@]}"
if [ "${#SHAREROWS[@]}" -gt 0 ]; then
    cat <<'EOF'

Where the machine's CPU went, per message, the median of the rounds: the
load generator's (its user and system time, from the shell that waited
for it) and the sink's (from /proc), with no MTA and through mtad, and
how busy the machine was (all CPUs, /proc/stat) while the load ran. The
no-MTA rate is bounded by the first two; through mtad, mtad's CPU comes
on top of them on the same CPUs:

| case | no MTA: load generator ms | no MTA: sink ms | no MTA: machine busy % | mtad: load generator ms | mtad: sink ms | mtad ms | mtad: machine busy % |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
    printf '%s\n' "${SHAREROWS[@]}"
fi
cat <<'EOF'

Every round, end-to-end msg/s (accepted msg/s; CPU ms/msg):

EOF
cat <<EOF
| case | mtad | $O | no MTA |
| --- | --- | --- | --- |
EOF
printf '%s\n' "${ALLRUNS[@]}"
echo
echo "Commands (PORT is mtad's, the $O's, or the sink's for no MTA):"
echo
for c in "${CMDS[@]}"; do
    printf '%s. `%s`\n' "${c%%. *}" "${c#*. }"
done
if [ "$FAILED" != 0 ]; then
    echo
    echo "**Some runs failed their checks; see the log on standard error.**"
    exit 1
fi
