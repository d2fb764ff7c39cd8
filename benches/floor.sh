#!/usr/bin/env bash
# How fast can any relay go here that makes each message durable before
# its 250? Postfix's smtp-source (a new connection per message, 20
# sessions) into Postfix's smtp-sink six ways, in turn, each round on a
# fresh sink:
#
#   direct  smtp-source straight into the sink ("no MTA" in relay.sh);
#   floor   through mta-floor (benches/src/floor.rs): the least work a
#           relay does with mtad's durability (write over a kept file,
#           fdatasync, link into msg/, a shared directory fsync, 250;
#           relayed to the sink over kept connections; no parsing, no
#           queue, no log), a thread per connection;
#   evloop  the same on a tokio runtime, one worker thread per CPU, the
#           stores on its blocking pool (mtad's shape: mta-floor
#           --event-loop);
#   mtad    through mtad, configured as in relay.sh;
#   nosync  through mta-floor --no-fsync: the same files written, linked
#           and unlinked, but neither fsynced (what no relay that says 250
#           only for durable mail can do; what durability costs here);
#   syncfs  through mta-floor --syncfs: one syncfs(2) shared by the
#           stores waiting instead of an fdatasync each.
#
# The rate is messages over the time from smtp-source's start to the
# sink's last message, after a warm-up of 200 messages on the same
# relay. Also the relay's CPU per message and how busy the machine was.
# Run as root (smtp-sink drops to nobody), from the checkout's top:
#
#   benches/floor.sh
#
#   FLOOR_SIZE=N       body bytes (default 102400, relay.sh's cases 6 and 11)
#   FLOOR_MESSAGES=N   messages per run (default 3000)
#   FLOOR_ROUNDS=N     rounds (default 3)
#   FLOOR_MTAD=path    the mtad to measure (default: a release build)
#   FLOOR_NO_BUILD=1   use the release binaries as they are
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
log() { echo "floor: $*" >&2; }
die() {
    log "$*"
    exit 1
}
[ "$(id -u)" = 0 ] || die "must run as root (smtp-sink drops to 'nobody'); try: sudo $0"
SINK_BIN=/usr/sbin/smtp-sink
SOURCE_BIN=/usr/sbin/smtp-source
[ -x "$SINK_BIN" ] && [ -x "$SOURCE_BIN" ] \
    || die "smtp-sink and smtp-source not found (Debian's postfix package; tests/install-peers.sh)"

SIZE=${FLOOR_SIZE:-102400}
MESSAGES=${FLOOR_MESSAGES:-3000}
ROUNDS=${FLOOR_ROUNDS:-3}
WARMUP=200
SESSIONS=20

# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"
release_binaries "${FLOOR_NO_BUILD:-}"
MTAD=${FLOOR_MTAD:-$MTAD}
FLOOR=$(dirname "$LOADGEN")/mta-floor
[ -x "$FLOOR" ] || die "$FLOOR missing"

WORK=$(mktemp -d /tmp/mta-floor.XXXXXX)
chmod 755 "$WORK"
RUN=0
SINK_PID=
RELAY_PID=
cleanup() {
    stop_pid "$RELAY_PID" 50
    stop_pid "$SINK_PID" 50
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

sink_count() {
    local n
    n=$(tail -c 96 "$RUNDIR/sink.out" 2>/dev/null | tr '\r' '\n' | sed -n 's/.*mesg=\([0-9]*\)$/\1/p' | tail -n1)
    echo "${n:-0}"
}

# Waits until the sink has $1 messages (120 s at most); prints the time.
wait_sink() { # count
    for _ in $(seq 12000); do
        if [ "$(sink_count)" -ge "$1" ]; then
            echo "$EPOCHREALTIME"
            return 0
        fi
        sleep 0.01
    done
    die "the sink has $(sink_count) of $1 messages after 120 s"
}

source_run() { # port messages
    "$SOURCE_BIN" -s "$SESSIONS" -m "$2" -l "$SIZE" -f sender@example.test -t rcpt@example.test \
        "127.0.0.1:$1" >"$RUNDIR/source.out" 2>&1 \
        || { cat "$RUNDIR/source.out" >&2; die "smtp-source failed"; }
}

# The machine's CPU ticks so far: "user system irq+softirq steal".
cpu_split() {
    awk '/^cpu / { print $2 + $3, $4, $7 + $8, $9; exit }' /proc/stat
}

# The machine's CPU per message between two cpu_split, in ms: "user
# system irq steal".
split_per_msg() { # split0 split1 messages
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= 4; i++) printf "%s%.3f", (i > 1 ? " / " : ""), 1000 * (y[i] - x[i]) / hz / n
    }'
}

# One run: sets RATE, CPU (relay ms per message, empty for direct), BUSY,
# SPLIT (the machine's CPU per message by kind).
one_run() { # direct|floor|mtad
    new_rundir "$1"
    local port sink t0 t1 c0 c1 m0 m1 s0 s1
    sink=$(free_port)
    "$SINK_BIN" -c -u nobody "127.0.0.1:$sink" 1024 >"$RUNDIR/sink.out" 2>"$RUNDIR/sink.err" &
    SINK_PID=$!
    wait_listening "$sink" 10 || die "smtp-sink is not listening"
    case $1 in
        direct) port=$sink ;;
        floor | nosync | syncfs | evloop)
            "$FLOOR" --sink "127.0.0.1:$sink" --dir "$RUNDIR/spool" \
                $(case $1 in nosync) echo --no-fsync ;; syncfs) echo --syncfs ;; evloop) echo --event-loop ;; esac) \
                >"$RUNDIR/stdout" 2>"$RUNDIR/floor.log" &
            RELAY_PID=$!
            for _ in $(seq 100); do
                grep -q 'listening on' "$RUNDIR/stdout" 2>/dev/null && break
                sleep 0.1
            done
            port=$(sed -n 's/^mta-floor: listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$RUNDIR/stdout")
            [ -n "$port" ] || die "mta-floor did not start: $(cat "$RUNDIR/floor.log")"
            ;;
        mtad)
            relay_mtad_config "$RUNDIR" "$sink" >"$RUNDIR/mtad.toml"
            "$MTAD" --config "$RUNDIR/mtad.toml" >"$RUNDIR/stdout" 2>"$RUNDIR/mtad.log" &
            RELAY_PID=$!
            MTAD_PID=$RELAY_PID
            wait_mtad_ready "$RUNDIR"
            port=$MTAD_PORT
            ;;
    esac
    source_run "$port" "$WARMUP"
    wait_sink "$WARMUP" >/dev/null
    c0=$([ -n "$RELAY_PID" ] && proc_ticks "$RELAY_PID" || echo 0)
    m0=$(machine_ticks)
    s0=$(cpu_split)
    t0=$EPOCHREALTIME
    source_run "$port" "$MESSAGES"
    t1=$(wait_sink $((WARMUP + MESSAGES)))
    m1=$(machine_ticks)
    s1=$(cpu_split)
    c1=$([ -n "$RELAY_PID" ] && proc_ticks "$RELAY_PID" || echo 0)
    RATE=$(awk -v n="$MESSAGES" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    CPU=
    if [ -n "$RELAY_PID" ]; then
        CPU=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$MESSAGES" \
            'BEGIN { printf "%.3f", 1000 * t / hz / n }')
    fi
    BUSY=$(busy_percent "$m0" "$m1")
    SPLIT=$(split_per_msg "$s0" "$s1" "$MESSAGES")
    stop_pid "$RELAY_PID" 100
    RELAY_PID=
    stop_pid "$SINK_PID" 50
    SINK_PID=
}

declare -A RATES CPUS BUSIES SPLITS
ORDER=(direct floor mtad nosync syncfs evloop)
log "$ROUNDS rounds of $MESSAGES messages of $SIZE bytes, $SESSIONS sessions, a new connection per message"
for r in $(seq "$ROUNDS"); do
    # Rotate which goes first, so drift in the machine's load spreads.
    for i in 0 1 2 3 4 5; do
        who=${ORDER[$(((i + r) % 6))]}
        one_run "$who"
        log "round $r: $who $RATE msg/s, relay CPU ${CPU:--} ms/msg, machine ${BUSY} % busy, machine ms/msg user / system / irq / steal $SPLIT"
        SPLITS[$who]+="$SPLIT;"
        RATES[$who]+="$RATE "
        CPUS[$who]+="${CPU:--} "
        BUSIES[$who]+="$BUSY "
    done
done

med() { tr ' ' '\n' | median; }
direct=$(echo "${RATES[direct]}" | med)
echo "smtp-source -s $SESSIONS -m $MESSAGES -l $SIZE (a new connection per message) into smtp-sink, $ROUNDS rounds, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo
echo "| path | msg/s, every round | median | of direct | relay CPU ms/msg | machine busy % | machine ms/msg: user / system / irq / steal, last round |"
echo "|---|---|---:|---:|---|---|---|"
for who in direct floor mtad nosync syncfs evloop; do
    m=$(echo "${RATES[$who]}" | med)
    echo "| $who | ${RATES[$who]% } | $m | $(awk -v a="$m" -v b="$direct" 'BEGIN { printf "%.1f %%", 100 * a / b }') | ${CPUS[$who]% } | ${BUSIES[$who]% } | $(echo "${SPLITS[$who]}" | tr ';' '\n' | sed '/^$/d' | tail -n1) |"
done
