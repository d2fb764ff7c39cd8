#!/usr/bin/env bash
# Lifecycle benchmark: how mtad starts and stops with a large queue.
#
# For each queue size N, a fresh queue directory is filled with N deferred
# messages by mta-seed (straight through mta-spool: DUE of them due now,
# the rest 1 to 25 hours ahead), then the real binaries are started and
# stopped with mta-init, three times:
#
#   clean    the seeded spool was closed cleanly: the index is trusted
#   again    the same start once more, right after that one's clean stop
#            (nothing new is due)
#   unclean  mta-seed adds DUE more due messages and drops the spool
#            without closing it (a crash): the start rescans every file
#
# Before the unclean start, the time to just read every spool file
# (`find msg -type f -print0 | xargs -0 -P2 cat >/dev/null`, the same
# files in the same cache state) is taken, and a second table gives the
# rescan's time against it, and the first clean start's time to ready
# against the second's.
#
# Measured from the moment `mta-init start` is run: time to ready (the
# `mtad: ready` line in mtad.log, and `mta-init start` returning; also
# mtad's own startup_ms from its `ready` log line; after a `sync` and a
# read of the two programs, so every start finds the same state), to the
# first delivery (the first file in the Maildir's new/), to all DUE due
# messages delivered, and to the end of the rescan (`mta-init status
# --json`, polled every 100 ms; also mtad's own elapsed_ms); mtad's resident
# memory (VmRSS, /proc) once idle, its peak (VmHWM), and the RSS per queued
# message against an empty queue; and the wall time of `mta-init stop`.
# Every message goes to a local Maildir (the recipient's domain is in
# smtp.local_domains), so no peer is needed. Not root-only.
#
# Usage:
#   benches/lifecycle.sh                       # N = 10000 100000 1000000
#   COUNTS="10000 100000" benches/lifecycle.sh
#
# Environment:
#   COUNTS="N..."              queue sizes (default "10000 100000 1000000")
#   LIFECYCLE_SIZE=BYTES       message size (default 2048)
#   LIFECYCLE_DUE=N            messages due now in each start (default 100)
#   LIFECYCLE_RESCAN_RATE=N    [spool] rescan_rate, files/s (default 0:
#                              unlimited)
#   LIFECYCLE_INDEX_CACHE=SIZE `[spool] index_cache` (default: mtad's)
#   LIFECYCLE_TIMEOUT=S        longest wait for any one step (default 900;
#                              seeding gets a second more per 500 messages)
#   LIFECYCLE_SETTLE=S         idle time before each start and before RSS
#                              is read (default 2)
#   LIFECYCLE_DROP_CACHES=1    (root only) drop the page cache before each
#                              start, so the start reads the disk
#   LIFECYCLE_NO_BUILD=1       skip `cargo build --release`
#   LIFECYCLE_KEEP=1           keep the temporary directory
#
# Writes only under a new /tmp/mta-lifecycle.XXXXXX (removed at the end;
# 1,000,000 messages of 2 KiB take about 5 GB there while they exist). The
# Markdown table goes to standard output, progress to standard error. mtad
# listens on 127.0.0.1:0, has no HTTP server and a resolver pointed at a
# closed loopback port: nothing leaves loopback. An EXIT trap stops
# whatever this script started. Every wait is bounded. Exit status 0 when
# every start delivered the due messages, finished its rescan and left the
# expected number of messages queued.
set -euo pipefail

COUNTS=${COUNTS:-"10000 100000 1000000"}
SIZE=${LIFECYCLE_SIZE:-2048}
DUE=${LIFECYCLE_DUE:-100}
RESCAN_RATE=${LIFECYCLE_RESCAN_RATE:-0}
INDEX_CACHE=${LIFECYCLE_INDEX_CACHE:-}
WAIT=${LIFECYCLE_TIMEOUT:-900}
SETTLE=${LIFECYCLE_SETTLE:-2}

BENCH_NAME=lifecycle
# shellcheck source=benches/mtad-bench.sh
source "$(dirname "$0")/mtad-bench.sh"

for tool in cargo jq timeout awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
for n in $COUNTS; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge "$DUE" ] || die "COUNTS: $n is not a number >= LIFECYCLE_DUE ($DUE)"
done
if [ -n "${LIFECYCLE_DROP_CACHES:-}" ] && [ "$(id -u)" != 0 ]; then
    die "LIFECYCLE_DROP_CACHES needs root"
fi

release_binaries "${LIFECYCLE_NO_BUILD:-}"

WORK=$(mktemp -d /tmp/mta-lifecycle.XXXXXX)
DIR=       # the current run's directory (config, queue, maildir)
WATCH_PID= # the Maildir / log watcher

install_cleanup "${LIFECYCLE_KEEP:-}" WATCH_PID

# --- a run directory --------------------------------------------------------------

new_dir() { # name
    DIR=$WORK/$1
    mkdir -p "$DIR/queue" "$DIR/maildir"
    cat >"$DIR/mta.toml" <<EOF
# benches/lifecycle.sh: everything in this directory, loopback only, mail
# for localhost delivered to the Maildir, deferred mail left alone.
hostname = "mx.test"
queue_dir = "$DIR/queue"

[smtp]
listen = ["127.0.0.1:0"]
local_domains = ["localhost"]

[spool]
min_free_space = 0
rescan_rate = $RESCAN_RATE
$([ -z "$INDEX_CACHE" ] || printf 'index_cache = "%s"' "$INDEX_CACHE")

[maildir]
root = "$DIR/maildir"

[delivery]
name_servers = ["127.0.0.1:9"]
dns_timeout = "1s"

[http]
listen = []

[queue]
retry_base = "6h"
EOF
    init configtest >/dev/null || die "configtest failed for $DIR/mta.toml"
}

# Free space for N messages: a 4 KiB block per file at least, plus the index.
check_space() { # messages
    local need avail
    need=$(($1 * (SIZE + 4096 + 1024) / 1024 + 512 * 1024)) # KiB
    avail=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
    [ "$avail" -gt "$need" ] || die "$1 messages need about $((need / 1024)) MiB in /tmp; $((avail / 1024)) MiB free"
}

seed() { # messages due [--unclean]
    local out
    out=$DIR/seed.$(date +%s%N).log
    # LIFECYCLE_TIMEOUT plus a second per 500 messages (seeding is bound by
    # the disk's flushes: 2,000 to 4,000 msg/s on a small machine).
    bg timeout "$((WAIT + $1 / 500))" "$SEED" --queue-dir "$DIR/queue" --messages "$1" --due "$2" \
        --size "$SIZE" --recipient seed@localhost "${@:3}" >"$out" 2>&1 \
        || { cat "$out" >&2; die "mta-seed failed"; }
    cat "$out" >&2
    SEED_RATE=$(sed -n 's/.*s: \([0-9]*\) msg\/s.*/\1/p' "$out")
}

# --- measuring one start ------------------------------------------------------------

# Background: records when the `ready` line appears in mtad.log (after byte
# $2), and when the Maildir has its first and its DUE-th message.
watch() { # outdir log-offset
    local out=$1 off=$2 new=$DIR/maildir/localhost/seed/Maildir/new
    local ready='' first='' all='' n deadline=$((SECONDS + WAIT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if [ -z "$ready" ] && tail -c +"$((off + 1))" "$DIR/queue/mtad.log" 2>/dev/null | grep -q '^mtad: ready'; then
            ready=$EPOCHREALTIME
            echo "$ready" >"$out/ready.t"
        fi
        n=$({ find "$new" -maxdepth 1 -type f 2>/dev/null || true; } | wc -l)
        if [ -z "$first" ] && [ "$n" -gt 0 ]; then
            first=$EPOCHREALTIME
            echo "$first" >"$out/first.t"
        fi
        if [ -z "$all" ] && [ "$n" -ge "$DUE" ]; then
            all=$EPOCHREALTIME
            echo "$all" >"$out/all.t"
        fi
        [ -n "$ready" ] && [ -n "$all" ] && return 0
        sleep 0.01
    done
}

since() { # t0 file -> seconds with 3 decimals, or -
    if [ -s "$2" ]; then
        awk -v a="$1" -v b="$(cat "$2")" 'BEGIN { printf "%.3f", b - a }'
    else
        echo -
    fi
}

proc_kib() { # pid field (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}

EMPTY_RSS=
FAILED=0
ROWS=()
RATIOS=()
LAST_READY= LAST_RESCAN=

# Seconds to read every spool file of the current queue, whole, two
# readers at once: what the rescan is compared with.
read_all() {
    local t0
    if [ -n "${LIFECYCLE_DROP_CACHES:-}" ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    t0=$EPOCHREALTIME
    (cd "$DIR/queue/msg" && find . -type f -print0 | xargs -0 -P2 cat >/dev/null)
    secs "$t0" "$EPOCHREALTIME"
}

ratio() { # a b -> a / b with 2 decimals, or -
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# Starts mtad on the current directory, waits until it is settled (ready,
# the due messages delivered, no rescan running), reads its memory, stops
# it. Appends a table row. label: empty | clean | unclean.
measure() { # label messages-on-disk expected-queued-after
    local label=$1 messages=$2 expect=$3
    local out=$DIR/run-$label off t0 t_start pid json running rescan_t='' mtad_rescan='-'
    local queued='' rescan_seen=no deadline rss hwm per stop_s ready_s first_s all_s t1 mtad_rescan_s=-
    local own_ms open_ms
    mkdir -p "$out"
    rm -rf "$DIR/maildir/localhost"
    # Every start finds the machine settled, the disk written and the
    # programs in the page cache: none pays for what ran just before it
    # (mta-seed's million files, the previous stop), nor for reading mtad
    # and mta-init back after the seeding's gigabytes pushed them out.
    sleep "$SETTLE"
    sync
    cat "$MTAD" "$MTA_INIT" >/dev/null
    if [ -n "${LIFECYCLE_DROP_CACHES:-}" ]; then
        echo 3 >/proc/sys/vm/drop_caches
    fi
    off=$(stat -c %s "$DIR/queue/mtad.log" 2>/dev/null || echo 0)
    t0=$EPOCHREALTIME
    watch "$out" "$off" &
    WATCH_PID=$!
    bg timeout "$((WAIT + 10))" "$MTA_INIT" --config "$DIR/mta.toml" start --wait "$WAIT" \
        >"$out/start.log" 2>&1 || { cat "$out/start.log" >&2; die "$label: mta-init start failed"; }
    t_start=$EPOCHREALTIME
    pid=$(mtad_pid) || die "$label: no mtad after start"

    # Until the rescan is over and the due messages are in the Maildir.
    deadline=$((SECONDS + WAIT))
    while :; do
        json=$(status_json)
        running=$(printf '%s' "$json" | jq -r 'if .daemon == null then "?"
            elif .daemon.spool_open.rescan == null then "none"
            else .daemon.spool_open.rescan.running | tostring end' 2>/dev/null || echo '?')
        [ "$running" = true ] && rescan_seen=yes
        if [ -z "$rescan_t" ] && { [ "$running" = false ] || [ "$running" = none ]; }; then
            rescan_t=$EPOCHREALTIME
        fi
        if [ -n "$rescan_t" ] && { [ "$label" = empty ] || [ "$label" = again ] || [ -s "$out/all.t" ]; }; then
            break
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$label: not settled after ${WAIT} s (rescan running: $running; $({ find "$DIR/maildir" -path '*/new/*' -type f || true; } | wc -l) delivered)"
            FAILED=1
            break
        fi
        sleep 0.1
    done
    sleep "$SETTLE"
    json=$(status_json)
    queued=$(printf '%s' "$json" | jq -r '.daemon.queued // empty')
    if printf '%s' "$json" | jq -e '.daemon.spool_open.rescan' >/dev/null 2>&1; then
        mtad_rescan=$(printf '%s' "$json" | jq -r '.daemon.spool_open.rescan | "\(.elapsed_ms / 1000) s, \(.files_done)/\(.files_total) files, \(.messages_added) added, running \(.running)"')
        mtad_rescan_s=$(printf '%s' "$json" | jq -r '.daemon.spool_open.rescan.elapsed_ms / 1000')
    fi
    rss=$(proc_kib "$pid" VmRSS)
    hwm=$(proc_kib "$pid" VmHWM)
    printf '%s\n' "$json" >"$out/status.json"
    stop_helper WATCH_PID

    t1=$EPOCHREALTIME
    bg timeout "$((WAIT + 10))" "$MTA_INIT" --config "$DIR/mta.toml" stop --wait "$WAIT" \
        >"$out/stop.log" 2>&1 || { cat "$out/stop.log" >&2; die "$label: mta-init stop failed"; }
    stop_s=$(secs "$t1" "$EPOCHREALTIME")
    ! alive "$pid" || die "$label: mtad (pid $pid) still there after the stop"

    ready_s=$(since "$t0" "$out/ready.t")
    # mtad's own clock, from its first step to ready (and the spool's open
    # within it): the same start without the exec, mta-init and this
    # script's polling.
    own_ms=$(tail -c +"$((off + 1))" "$DIR/queue/mtad.log" | sed -n 's/.* ready .*startup_ms=\([0-9]*\).*/\1/p' | head -n1)
    open_ms=$(tail -c +"$((off + 1))" "$DIR/queue/mtad.log" | sed -n 's/.* ready .*spool_open_ms=\([0-9]*\).*/\1/p' | head -n1)
    own_ms=${own_ms:--} open_ms=${open_ms:--}
    first_s=$(since "$t0" "$out/first.t")
    all_s=$(since "$t0" "$out/all.t")
    local start_s rescan_s
    start_s=$(secs "$t0" "$t_start")
    if [ "$rescan_seen" = yes ] || [ "$mtad_rescan" != - ]; then
        rescan_s=$(secs "$t0" "$rescan_t")
    else
        rescan_s="none"
    fi
    if [ "$label" = empty ]; then
        EMPTY_RSS=$rss
        per=-
        first_s=- all_s=-
    else
        [ "$label" != again ] || first_s=- all_s=-
        per=$(awk -v r="$rss" -v e="$EMPTY_RSS" -v n="$messages" 'BEGIN { printf "%.0f", (r - e) * 1024 / n }')
    fi
    log "$label, $messages on disk: ready ${ready_s} s (mta-init start returned at ${start_s} s; mtad's own ${own_ms} ms, spool open ${open_ms} ms), first delivery ${first_s} s, $DUE due delivered ${all_s} s, rescan done ${rescan_s} s (mtad: ${mtad_rescan}), queued ${queued:-?} (expected $expect), RSS $(mib "$rss") MiB (peak $(mib "$hwm") MiB), stop ${stop_s} s"
    if [ "${queued:-}" != "$expect" ]; then
        log "$label: FAILED: ${queued:-?} queued, expected $expect"
        FAILED=1
    fi
    if [ "$label" != empty ] && [ "$label" != again ] && [ "$all_s" = - ]; then
        log "$label: FAILED: the $DUE due messages were not all delivered"
        FAILED=1
    fi
    LAST_READY=$ready_s LAST_RESCAN=$mtad_rescan_s LAST_OWN=$own_ms
    ROWS+=("| $messages | $label | ${SEED_RATE:--} | $ready_s | $start_s | $own_ms | $open_ms | $first_s | $all_s | $rescan_s | $mtad_rescan_s | ${queued:-?} | $(mib "$rss") | $(mib "$hwm") | $per | $stop_s |")
}

# --- runs ------------------------------------------------------------------------------

log "work dir $WORK; queue sizes: $COUNTS; $SIZE-byte messages, $DUE due per start"

new_dir empty
SEED_RATE=
measure empty 0 0
rm -rf "$DIR"

for n in $COUNTS; do
    check_space "$n"
    new_dir "n$n"
    log "seeding $n messages ($DUE due now)"
    seed "$n" "$DUE"
    measure clean "$n" $((n - DUE))
    first_ready=$LAST_READY first_own=$LAST_OWN
    SEED_RATE=-
    measure again "$n" $((n - DUE))
    second_ready=$LAST_READY second_own=$LAST_OWN
    # DUE more due messages, and the spool left as after a crash.
    seed "$DUE" "$DUE" --unclean
    SEED_RATE=-
    read_s=$(read_all)
    log "reading the $((n + DUE)) spool files took $read_s s"
    measure unclean "$n" $((n - DUE))
    RATIOS+=("| $n | $read_s | $LAST_RESCAN | $(ratio "$LAST_RESCAN" "$read_s") | $first_ready | $second_ready | $(ratio "$first_ready" "$second_ready") | $first_own | $second_own | $(ratio "$first_own" "$second_own") |")
    log "removing $DIR"
    rm -rf "$DIR"
done

# --- report ----------------------------------------------------------------------------

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
fstype=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n1)" ]; then rev="$rev+dirty"; fi
cat <<EOF
## Lifecycle run $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs ($cpu), $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB RAM, " }')temp dir on $fstype; kernel $(uname -r)
- mtad: release build of $rev; \`[spool] rescan_rate = $RESCAN_RATE\`, \`index_cache\` ${INDEX_CACHE:-default}, \`[queue] retry_base = "6h"\`, no HTTP server, mail for localhost to a Maildir
- queue: $SIZE-byte messages, one recipient each, seeded with mta-seed; $DUE due at each start, the rest due in 1 to 25 hours$([ -z "${LIFECYCLE_DROP_CACHES:-}" ] || echo "; page cache dropped before each start")

| messages | start | seed msg/s | ready s | start returned s | mtad's own ms | spool open ms | first delivery s | $DUE due delivered s | rescan done s | rescan (mtad) s | queued | RSS MiB | peak RSS MiB | RSS/msg bytes | stop s |
| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF

| messages | read all files s | rescan (mtad) s | rescan / read | clean start ready s | again ready s | clean / again | clean, mtad's own ms | again, mtad's own ms | clean / again (mtad's own) |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${RATIOS[@]}"
cat <<EOF

Times are seconds from running \`mta-init start\`: "ready" is the \`mtad: ready\`
line in mtad.log, "start returned" is \`mta-init start\` returning (it polls the
control socket every 50 ms), "mtad's own" the \`startup_ms\` of mtad's \`ready\`
log line (its own clock, from its first step: no exec, no mta-init, no
polling) and "spool open" the \`spool_open_ms\` within it, "first delivery" the first file in the Maildir's
new/, "$DUE due delivered" the $DUE-th, "rescan done" the first \`status --json\`
(polled every 100 ms) showing no rescan running ("none": no rescan, the index
was trusted); "rescan (mtad)" is the rescan's own elapsed_ms from the same
status. "clean": the spool was last closed cleanly (by mta-seed); "again":
the next start, after the clean run's stop. "unclean": mta-seed
added $DUE due messages and dropped the spool without closing it (no clean
marker), so the start rescans every spool file. RSS is VmRSS once settled
(rescan over, due mail delivered, then ${SETTLE} s idle); peak is VmHWM;
RSS/msg is (RSS - RSS with an empty queue) / messages. "stop" is the wall
time of \`mta-init stop\`. "seed msg/s" is mta-seed's rate storing the N
messages (concurrent stores, group commit, each made durable).
"read all files" is \`find msg -type f -print0 | xargs -0 -P2 cat >/dev/null\`
over the unclean start's files, run just before it. Every start follows
${SETTLE} s idle, a \`sync\` and a read of the mtad and mta-init programs,
so none pays for what ran just before it or for reading the programs back.
EOF
if [ "$FAILED" != 0 ]; then
    echo
    echo "**Some starts failed their checks; see the log on standard error.**"
    exit 1
fi
