#!/usr/bin/env bash
# Acceptance benchmark: mtad against Debian's Postfix, in one run, on this
# machine. Both accept mail over SMTP on loopback and make every message
# durable before answering 250; neither delivers anything (mtad's queue
# runners are paused with `mta-init pause delivery` before the load starts,
# and Postfix puts every message on hold). See
# docs/benchmarks.md for what this measures and the last recorded figures.
#
# Usage (as root; a private Postfix instance needs it):
#   benches/acceptance.sh            # builds, runs every case, prints Markdown
#
# Environment:
#   ACCEPTANCE_SCALE=N     divide every message count by N (quick smoke run)
#   ACCEPTANCE_REPEAT=N    rounds per case and MTA (default 3); the table
#                          shows each MTA's best round (highest msg/s)
#   ACCEPTANCE_TIMEOUT=S   --timeout of each mta-loadgen run (default 240)
#   ACCEPTANCE_NO_BUILD=1  skip `cargo build --release`
#   ACCEPTANCE_KEEP=1      keep the temporary directory (logs, queues)
#
# The Markdown report goes to standard output, progress to standard error.
# Only loopback addresses are used; /etc/postfix and port 25 are never
# touched, and an EXIT trap stops mtad and the private Postfix whatever
# happens. Exit status: 0 if every run accepted and queued every message.
set -euo pipefail

SCALE=${ACCEPTANCE_SCALE:-1}
TIMEOUT=${ACCEPTANCE_TIMEOUT:-240}
REPEAT=${ACCEPTANCE_REPEAT:-3}

log() { printf 'acceptance: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
    echo "acceptance: must run as root (a private Postfix instance needs root to start its master); try: sudo $0" >&2
    exit 1
fi
for tool in cargo postfix postconf postqueue ss script; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool not found (Postfix comes from tests/install-peers.sh)"
done
id postfix >/dev/null 2>&1 || die "no 'postfix' user (run tests/install-peers.sh)"
getent group postdrop >/dev/null 2>&1 || die "no 'postdrop' group (run tests/install-peers.sh)"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The private Postfix instance: its configuration, start and stop.
# shellcheck source=tests/postfix-instance.sh
. "$ROOT/tests/postfix-instance.sh"
# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"

release_binaries "${ACCEPTANCE_NO_BUILD:-}"

WORK=$(mktemp -d /tmp/mta-acceptance.XXXXXX)
chmod 755 "$WORK" # the postfix user must reach its queue and data dirs
PFCONF=$WORK/postfix/etc
# Queue directories are per run and only removed at the end: deleting
# thousands of files between runs would slow the next runs' file creation
# on some file systems (ext4 without a journal skips recently deleted
# inodes one by one when allocating), for whichever MTA comes next.
RUN=0
PFQUEUE=$WORK/postfix/spool-0
PFDATA=$WORK/postfix/data-0
MTADIR=$WORK/mtad/run-0
MTAD_PID=
MTAD_PORT=
LOADGEN_PID=
PF_PORT=
PF_STARTED=
PF_WARMUP=40

stop_mtad() {
    [ -n "$MTAD_PID" ] || return 0
    if kill -0 "$MTAD_PID" 2>/dev/null; then
        kill -TERM "$MTAD_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$MTAD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$MTAD_PID" 2>/dev/null; then
            log "mtad $MTAD_PID ignored SIGTERM for 10 s; killing it"
            kill -KILL "$MTAD_PID" 2>/dev/null || true
        fi
    fi
    wait "$MTAD_PID" 2>/dev/null || true
    MTAD_PID=
}

stop_postfix() {
    [ -n "$PF_STARTED" ] || return 0
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
    if [ -n "${ACCEPTANCE_KEEP:-}" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- mtad -------------------------------------------------------------------

start_mtad() { # on a new, empty queue every time
    RUN=$((RUN + 1))
    MTADIR=$WORK/mtad/run-$RUN
    mkdir -p "$MTADIR"
    cat >"$MTADIR/mtad.toml" <<EOF
hostname = "mx.test"
queue_dir = "$MTADIR/queue"
[smtp]
listen = ["127.0.0.1:0"]
max_connections = 1000
[spool]
min_free_space = 0
# No admin HTTP server, and never the system resolver (delivery is paused
# anyway; this makes sure no lookup can leave loopback).
[http]
listen = []
[delivery]
name_servers = ["127.0.0.1:9"]
EOF
    "$MTAD" --config "$MTADIR/mtad.toml" >"$MTADIR/stdout" 2>"$MTADIR/mtad.log" &
    MTAD_PID=$!
    wait_mtad_ready "$MTADIR"
    [ -n "$MTAD_PORT" ] || die "could not read mtad's port from its stdout"
    # The counterpart of Postfix's HOLD: no delivery attempt, mail waits.
    "$MTA_INIT" --config "$MTADIR/mtad.toml" pause delivery >"$MTADIR/pause.log" 2>&1 \
        || { cat "$MTADIR/pause.log" >&2; die "mta-init pause delivery failed"; }
}

# Delivery attempts mtad's runners made (must stay 0: they are paused).
mtad_attempts() {
    "$MTA_INIT" --config "$MTADIR/mtad.toml" status --json 2>/dev/null \
        | sed -n 's/.*"attempts": *\([0-9]*\).*/\1/p' \
        | awk '{ n += $1 } END { if (NR == 0) print "unknown"; else print n }'
}

mtad_count() {
    find "$MTADIR/queue/msg" -mindepth 2 -maxdepth 2 -type f 2>/dev/null | wc -l
}

# --- Postfix ----------------------------------------------------------------

write_postfix_config() {
    # Accept on loopback, make durable (cleanup fsyncs the queue file
    # before smtpd answers 250), put on hold so the queue manager never
    # delivers, and skip work mtad does not do either. The rest is the
    # shared private instance (tests/postfix-instance.sh).
    pf_write_config "$PFCONF" "$PF_PORT" <<EOF
# benches/acceptance.sh
# queue_directory and data_directory: set per run by start_postfix
myhostname = pf.test
smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit_mynetworks, reject
smtpd_delay_reject = no
disable_dns_lookups = yes
default_process_limit = 200
message_size_limit = 67108864
maillog_file_prefixes = $WORK
maillog_file = $WORK/postfix/maillog
EOF
}

start_postfix() { # on a new, empty queue every time
    RUN=$((RUN + 1))
    PFQUEUE=$WORK/postfix/spool-$RUN
    PFDATA=$WORK/postfix/data-$RUN
    postconf -c "$PFCONF" -e "queue_directory = $PFQUEUE" "data_directory = $PFDATA"
    pf_prepare_dirs "$PFQUEUE" "$PFDATA" || die "cannot prepare $PFQUEUE and $PFDATA"
    # From here on there may be processes to stop.
    PF_STARTED=1
    pf_start "$PFCONF" "$WORK/postfix" || die "Postfix did not start"
    wait_listening "$PF_PORT" 15 || die "Postfix is not listening on 127.0.0.1:$PF_PORT"
    # Warm-up: Postfix spawns smtpd, cleanup and trivial-rewrite on demand;
    # let that happen outside the measurement. The warm-up's messages stay
    # on hold (deleting them would be file churn) and are subtracted.
    "$LOADGEN" --server "127.0.0.1:$PF_PORT" --sessions 20 --messages "$PF_WARMUP" \
        --timeout 60 >"$WORK/postfix/warmup.log" 2>&1 \
        || { cat "$WORK/postfix/warmup.log" >&2; die "Postfix warm-up failed"; }
    [ "$(pf_count hold)" = "$PF_WARMUP" ] || die "Postfix did not put the $PF_WARMUP warm-up messages on hold"
}

# --- runs -------------------------------------------------------------------

json_num() { # key json
    printf '%s' "$2" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -n1
}
json_p() { # p50|p99 json
    printf '%s' "$2" | sed -n "s/.*\"latency_ms\":{[^}]*\"$1\":\([0-9.]*\).*/\1/p" | head -n1
}

FAILED=0
ROWS=()
ALLRUNS=()
CMDS=()

# One loadgen run; sets RATE P50 P99 ACC and LOADGEN_RC, saves the JSON.
run_loadgen() { # name port args...
    local name=$1 port=$2
    shift 2
    local out
    sync
    LOADGEN_RC=0
    # In the background so that a signal's trap runs at once (bash defers
    # traps until a foreground child exits, but interrupts `wait`).
    "$LOADGEN" --server "127.0.0.1:$port" "$@" --timeout "$TIMEOUT" --json \
        >"$WORK/$name.json" 2>"$WORK/$name.stderr" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || LOADGEN_RC=$?
    LOADGEN_PID=
    out=$(cat "$WORK/$name.json")
    RATE=$(json_num rate_msg_s "$out")
    ACC=$(json_num accepted "$out")
    P50=$(json_p p50 "$out")
    P99=$(json_p p99 "$out")
    if [ "$LOADGEN_RC" != 0 ]; then
        log "$name: mta-loadgen exited $LOADGEN_RC: $out"
        FAILED=1
    fi
}

# One measured run of one MTA; sets RATE P50 P99 QUEUED, checks the queue.
run_mtad() { # name messages args...
    local name=$1 messages=$2 again attempts
    shift 2
    start_mtad
    log "$name: mtad on 127.0.0.1:$MTAD_PORT"
    run_loadgen "$name-mtad" "$MTAD_PORT" "$@"
    QUEUED=$(mtad_count)
    attempts=$(mtad_attempts)
    stop_mtad
    # count again after the clean shutdown: nothing lost or added
    again=$(mtad_count)
    if [ "$QUEUED" != "$messages" ] || [ "$again" != "$messages" ] || [ "$ACC" != "$messages" ] || [ "$attempts" != 0 ]; then
        log "$name: mtad accepted ${ACC:-?}, queued $QUEUED (after stop $again), delivery attempts $attempts; expected $messages queued, 0 attempts"
        FAILED=1
    fi
    log "$name: mtad ${RATE:-?} msg/s, p50 ${P50:-?} ms, p99 ${P99:-?} ms, queued $QUEUED"
}

run_postfix() { # name messages args...
    local name=$1 messages=$2 other listed
    shift 2
    start_postfix
    log "$name: Postfix on 127.0.0.1:$PF_PORT"
    run_loadgen "$name-postfix" "$PF_PORT" "$@"
    QUEUED=$(($(pf_count hold) - PF_WARMUP))
    other=$(($(pf_count incoming) + $(pf_count active) + $(pf_count deferred) + $(pf_count maildrop)))
    listed=$(postqueue -c "$PFCONF" -j 2>/dev/null | grep -c '"queue_name": *"hold"' || true)
    listed=$((listed - PF_WARMUP))
    stop_postfix
    if [ "$QUEUED" != "$messages" ] || [ "$other" != 0 ] || [ "$listed" != "$messages" ] || [ "$ACC" != "$messages" ]; then
        log "$name: Postfix accepted ${ACC:-?}, on hold $QUEUED (postqueue -j: $listed), in other queues $other, expected $messages"
        FAILED=1
    fi
    log "$name: Postfix ${RATE:-?} msg/s, p50 ${P50:-?} ms, p99 ${P99:-?} ms, on hold $QUEUED"
}

run_case() { # label sessions messages size rcpts [extra loadgen args]
    local label=$1 sessions=$2 messages=$3 size=$4 rcpts=$5
    shift 5
    messages=$((messages / SCALE))
    [ "$messages" -ge "$sessions" ] || messages=$sessions
    local args=(--sessions "$sessions" --messages "$messages" --size "$size" --rcpts "$rcpts" "$@")
    local n=$((${#ROWS[@]} + 1))
    CMDS+=("$n. mta-loadgen --server 127.0.0.1:PORT ${args[*]} --timeout $TIMEOUT --json")

    local m_rate= m_p50= m_p99= m_q= p_rate= p_p50= p_p99= p_q= m_all= p_all=
    local r mta order
    for r in $(seq "$REPEAT"); do
        # Alternate which MTA goes first (by case and by round), so drift on
        # a shared machine does not always favour the same one.
        order=(mtad postfix)
        [ $(((n + r) % 2)) = 0 ] || order=(postfix mtad)
        for mta in "${order[@]}"; do
            if [ "$mta" = mtad ]; then
                run_mtad "case $n round $r" "$messages" "${args[@]}"
                m_all="$m_all${m_all:+, }${RATE:-fail}"
                if greater "$RATE" "$m_rate"; then
                    m_rate=$RATE m_p50=$P50 m_p99=$P99 m_q=$QUEUED
                fi
            else
                run_postfix "case $n round $r" "$messages" "${args[@]}"
                p_all="$p_all${p_all:+, }${RATE:-fail}"
                if greater "$RATE" "$p_rate"; then
                    p_rate=$RATE p_p50=$P50 p_p99=$P99 p_q=$QUEUED
                fi
            fi
        done
    done
    ROWS+=("| $n. $label | $messages | ${m_rate:--} | ${p_rate:--} | **$(ratio "$m_rate" "$p_rate")** | ${m_p50:--} | ${p_p50:--} | $(ratio "$p_p50" "$m_p50") | ${m_p99:--} | ${p_p99:--} | $(ratio "$p_p99" "$m_p99") | ${m_q:--} / ${p_q:--} |")
    ALLRUNS+=("| $n. $label | $m_all | $p_all |")
}

PF_PORT=$(free_port)
write_postfix_config
log "work dir $WORK; Postfix on 127.0.0.1:$PF_PORT, mtad on an ephemeral port"

run_case "4 KiB, 1 rcpt, 20 sessions" 20 5000 4KiB 1
run_case "4 KiB, 20 rcpts, 20 sessions" 20 2000 4KiB 20
run_case "100 KiB, 1 rcpt, 20 sessions" 20 1000 100KiB 1
run_case "4 KiB, 1 rcpt, 1 session" 1 500 4KiB 1
run_case "4 KiB, 1 rcpt, 20 sessions, pipelining" 20 5000 4KiB 1 --pipelining

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

cat <<EOF
## Acceptance run $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs ($cpu), $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB RAM, " }')temp dir on $fstype; kernel $(uname -r)
- mtad: release build of $rev, delivery paused (\`mta-init pause delivery\`); Postfix $pfver (Debian package), private instance, every message put on HOLD
- load: \`mta-loadgen\` (release build), DATA, one command at a time unless noted, --timeout $TIMEOUT$([ "$SCALE" = 1 ] || echo ", message counts divided by $SCALE")
- every run on a fresh empty queue; $REPEAT rounds per case and MTA, the MTAs alternating (which goes first alternates by case and round); the table shows each MTA's best round by msg/s, with that round's latencies

| case | messages | mtad msg/s | Postfix msg/s | mtad/Postfix | mtad p50 ms | Postfix p50 ms | Postfix/mtad p50 | mtad p99 ms | Postfix p99 ms | Postfix/mtad p99 | queued mtad / Postfix |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${ROWS[@]}"
cat <<'EOF'

Latency is that of the reply to the end of the data (nearest-rank p50/p99).
Ratios above 1 favour mtad. "queued" counts the files in mtad's `msg/*/*`
and in Postfix's `hold/` after the best round (every round is checked, and
Postfix's other queues must be empty).

Every round, msg/s:

| case | mtad | Postfix |
| --- | --- | --- |
EOF
printf '%s\n' "${ALLRUNS[@]}"
echo
echo "Commands (PORT is mtad's or Postfix's):"
echo
for c in "${CMDS[@]}"; do
    printf '%s. `%s`\n' "${c%%. *}" "${c#*. }"
done
if [ "$FAILED" != 0 ]; then
    echo
    echo "**Some runs failed or queued the wrong number of messages; see the log on standard error.**"
    exit 1
fi
