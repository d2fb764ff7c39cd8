#!/usr/bin/env bash
# Queue listing benchmark: `mta-init queue list`, `queue summary` and the
# HTTP queue API over a large queue, with mtad's memory watched throughout.
#
# A fresh queue directory is filled with N deferred messages by mta-seed
# (straight through mta-spool; none due: every message's next attempt is 1
# to 25 hours ahead, and retry_base is 6h, so nothing is delivered during
# the run), then mtad is started with `mta-init start` and measured:
#
#   status         `mta-init status` (a control-socket round trip and the
#                  process start: the floor under every mta-init command)
#   first page     `mta-init queue list --max 100` and `--json --max 100`;
#                  `GET /api/queue?limit=100` with curl (time to the first
#                  byte and total)
#   full listing   `mta-init queue list --json --page P` and the text form,
#                  for each P in QUEUE_LIST_PAGES: wall time, the time until
#                  the first line (JSON) or the first message row (text)
#                  arrives, messages listed (must be N, with N distinct ids)
#   summary        `mta-init queue summary --json` (must count N)
#   HTTP walk      every page of `GET /api/queue?limit=1000&after=ID`
#
# For each, mtad's VmRSS (/proc/PID/status) just before, its peak while the
# command runs (sampled every QUEUE_LIST_SAMPLE seconds) and just after, and
# VmHWM after; and mta-init's own peak RSS (GNU time's %M). The short ones
# (status, first page) are repeated QUEUE_LIST_REPEAT times: median, min
# and max. The full listings and the summary run QUEUE_LIST_ROUNDS times
# (the first round reads the index into mtad's cache, later ones show
# whether memory keeps growing).
#
# Usage:
#   benches/queue_list.sh                          # N = 100000
#   QUEUE_LIST_MESSAGES=10000 benches/queue_list.sh
#
# Environment:
#   QUEUE_LIST_MESSAGES=N       queued messages (default 100000)
#   QUEUE_LIST_SIZE=BYTES       message size (default 2048)
#   QUEUE_LIST_PAGES="P..."     page sizes of the full listings (default
#                               "200 1000"; mtad caps a page at 1000)
#   QUEUE_LIST_ROUNDS=R         rounds of full listings and summary (default 2)
#   QUEUE_LIST_REPEAT=K         repeats of the short commands (default 5)
#   QUEUE_LIST_SAMPLE=S         RSS sampling interval (default 0.1)
#   QUEUE_LIST_INDEX_CACHE=SIZE `[spool] index_cache` (default: mtad's, 1 MiB)
#   QUEUE_LIST_HTTP=0           skip the HTTP measurements
#   QUEUE_LIST_TIMEOUT=S        longest wait for any one step (default 900;
#                               seeding gets a second more per 500 messages)
#   QUEUE_LIST_SETTLE=S         idle time after the start before the first
#                               reading (default 2)
#   QUEUE_LIST_NO_BUILD=1       skip `cargo build --release`
#   QUEUE_LIST_KEEP=1           keep the temporary directory
#
# Writes only under a new /tmp/mta-queue-list.XXXXXX (removed at the end;
# 100,000 messages of 2 KiB take about 600 MB there). The Markdown table
# goes to standard output, progress to standard error. mtad listens on
# 127.0.0.1:0 for SMTP and HTTP and its resolver points at a closed
# loopback port: nothing leaves loopback. An EXIT trap stops whatever this
# script started. Every wait is bounded. Exit status 0 when every listing
# counted N messages and the queue still held N at the end.
set -euo pipefail

N=${QUEUE_LIST_MESSAGES:-100000}
SIZE=${QUEUE_LIST_SIZE:-2048}
PAGES=${QUEUE_LIST_PAGES:-"200 1000"}
ROUNDS=${QUEUE_LIST_ROUNDS:-2}
REPEAT=${QUEUE_LIST_REPEAT:-5}
SAMPLE=${QUEUE_LIST_SAMPLE:-0.1}
INDEX_CACHE=${QUEUE_LIST_INDEX_CACHE:-}
HTTP=${QUEUE_LIST_HTTP:-1}
WAIT=${QUEUE_LIST_TIMEOUT:-900}
SETTLE=${QUEUE_LIST_SETTLE:-2}

BENCH_NAME=queue_list
# shellcheck source=benches/mtad-bench.sh
source "$(dirname "$0")/mtad-bench.sh"

for tool in cargo jq timeout awk mkfifo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
[ "$HTTP" = 0 ] || command -v curl >/dev/null 2>&1 || die "curl not found (or set QUEUE_LIST_HTTP=0)"
[ -x /usr/bin/time ] || die "/usr/bin/time (GNU time) not found"
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -gt 0 ] || die "QUEUE_LIST_MESSAGES: $N is not a positive number"
for p in $PAGES; do
    [[ $p =~ ^[0-9]+$ ]] && [ "$p" -gt 0 ] || die "QUEUE_LIST_PAGES: $p is not a positive number"
done
[[ $ROUNDS =~ ^[0-9]+$ ]] && [[ $REPEAT =~ ^[0-9]+$ ]] && [ "$REPEAT" -gt 0 ] \
    || die "QUEUE_LIST_ROUNDS / QUEUE_LIST_REPEAT must be numbers (REPEAT > 0)"

release_binaries "${QUEUE_LIST_NO_BUILD:-}"

WORK=$(mktemp -d /tmp/mta-queue-list.XXXXXX)
DIR=$WORK
OUT=$WORK/out
mkdir -p "$DIR/queue" "$DIR/maildir" "$OUT"
SAMPLER_PID= # the RSS sampler
MTAD_PID=

install_cleanup "${QUEUE_LIST_KEEP:-}" SAMPLER_PID

proc_kib() { # pid field (VmRSS, VmHWM)
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
# Where the resident memory is: anonymous (heap, stacks) and file-backed,
# and the thread count (each thread may get its own malloc arena).
mem_detail() { # pid
    awk '$1 == "RssAnon:" { a = $2 } $1 == "RssFile:" { f = $2 } $1 == "Threads:" { t = $2 }
        END { printf "anonymous %.1f MiB, file %.1f MiB, %d threads", a / 1024, f / 1024, t }' \
        "/proc/$1/status" 2>/dev/null || echo "?"
}
# "median (min to max)" of numbers given one per line on standard input.
spread() {
    sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "-"; exit }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        if (NR == 1) printf "%.3f", m; else printf "%.3f (%.3f to %.3f)", m, v[1], v[NR] }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Background: the highest VmRSS of mtad seen, every SAMPLE seconds, into $1.
sampler() { # file
    local peak=0 r
    while alive "$MTAD_PID"; do
        r=$(proc_kib "$MTAD_PID" VmRSS)
        if [ "${r:-0}" -gt "$peak" ]; then
            peak=$r
            echo "$peak" >"$1.tmp" && mv "$1.tmp" "$1"
        fi
        sleep "$SAMPLE"
    done
}

RSS_BEFORE= RSS_PEAK= RSS_AFTER= HWM_AFTER=
watch_start() { # name
    RSS_BEFORE=$(proc_kib "$MTAD_PID" VmRSS)
    echo "$RSS_BEFORE" >"$OUT/$1.peak"
    sampler "$OUT/$1.peak" &
    SAMPLER_PID=$!
}
watch_end() { # name
    local r
    stop_helper SAMPLER_PID
    RSS_AFTER=$(proc_kib "$MTAD_PID" VmRSS)
    HWM_AFTER=$(proc_kib "$MTAD_PID" VmHWM)
    RSS_PEAK=$(cat "$OUT/$1.peak")
    r=$RSS_AFTER
    [ "$r" -le "$RSS_PEAK" ] || RSS_PEAK=$r
}

ROWS=()
FAILED=0
fail() { log "FAILED: $*"; FAILED=1; }

row() { # case command wall first messages rate client-kib
    ROWS+=("| $1 | \`$2\` | $3 | $4 | $5 | $6 | $(mib "$RSS_BEFORE") | $(mib "$RSS_PEAK") | $(mib "$RSS_AFTER") | $(mib "$HWM_AFTER") | $7 |")
}

# --- the queue and the daemon ------------------------------------------------------

avail=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
need=$((N * (SIZE + 4096 + 1024) / 1024 + 512 * 1024)) # KiB
[ "$avail" -gt "$need" ] || die "$N messages need about $((need / 1024)) MiB in /tmp; $((avail / 1024)) MiB free"

# The queue API wants a token (any 16 printable characters will do here).
HTTP_TOKEN=queue-list-bench-token-$$
cat >"$DIR/mta.toml" <<EOF
# benches/queue_list.sh: everything in this directory, loopback only,
# nothing due during the run.
hostname = "mx.test"
queue_dir = "$DIR/queue"

[smtp]
listen = ["127.0.0.1:0"]
local_domains = ["localhost"]

[spool]
min_free_space = 0
$([ -z "$INDEX_CACHE" ] || printf 'index_cache = "%s"' "$INDEX_CACHE")

[maildir]
root = "$DIR/maildir"

[delivery]
name_servers = ["127.0.0.1:9"]
dns_timeout = "1s"

[http]
listen = ["127.0.0.1:0"]
# The queue API is off without a token.
token = "$HTTP_TOKEN"

[queue]
retry_base = "6h"
EOF
init configtest >/dev/null || die "configtest failed for $DIR/mta.toml"

log "work dir $WORK; seeding $N messages of $SIZE bytes, none due"
bg timeout "$((WAIT + N / 500))" "$SEED" --queue-dir "$DIR/queue" --messages "$N" --due 0 \
    --size "$SIZE" --recipient seed@localhost >"$OUT/seed.log" 2>&1 \
    || { cat "$OUT/seed.log" >&2; die "mta-seed failed"; }
cat "$OUT/seed.log" >&2

log "starting mtad"
t0=$EPOCHREALTIME
bg timeout "$((WAIT + 10))" "$MTA_INIT" --config "$DIR/mta.toml" start --wait "$WAIT" \
    >"$OUT/start.log" 2>&1 || { cat "$OUT/start.log" >&2; die "mta-init start failed"; }
START_S=$(secs "$t0" "$EPOCHREALTIME")
MTAD_PID=$(mtad_pid) || die "no mtad after start"
deadline=$((SECONDS + WAIT))
while :; do
    json=$(status_json)
    queued=$(printf '%s' "$json" | jq -r '.daemon.queued // empty' 2>/dev/null || true)
    running=$(printf '%s' "$json" | jq -r '.daemon.spool_open.rescan.running // false' 2>/dev/null || echo '?')
    [ "$queued" = "$N" ] && [ "$running" = false ] && break
    [ "$SECONDS" -lt "$deadline" ] || die "mtad not settled after $WAIT s (queued ${queued:-?}, rescan running $running)"
    sleep 0.1
done
HTTP_ADDR=$(sed -n 's/^mtad: http listening on //p' "$DIR/queue/mtad.log" | tail -n1)
[ "$HTTP" = 0 ] || [ -n "$HTTP_ADDR" ] || die "no 'mtad: http listening on' line in mtad.log"
log "mtad pid $MTAD_PID ready in $START_S s, $N queued, HTTP on ${HTTP_ADDR:-(not used)}"
sleep "$SETTLE"
RSS_START=$(proc_kib "$MTAD_PID" VmRSS)
HWM_START=$(proc_kib "$MTAD_PID" VmHWM)
MEM_START=$(mem_detail "$MTAD_PID")
log "mtad settled: RSS $(mib "$RSS_START") MiB, peak $(mib "$HWM_START") MiB"

# --- measurements --------------------------------------------------------------------

# mta-init NAME ARGS...: wall time into WALL, its max RSS (KiB) into CLIENT,
# output in $OUT/NAME.out.
WALL= CLIENT=
timed_init() { # name args...
    local name=$1 t
    shift
    t=$EPOCHREALTIME
    bg timeout "$WAIT" /usr/bin/time -f %M -o "$OUT/$name.time" \
        "$MTA_INIT" --config "$DIR/mta.toml" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" \
        || { cat "$OUT/$name.err" >&2; fail "$name: mta-init $* failed"; }
    WALL=$(secs "$t" "$EPOCHREALTIME")
    CLIENT=$(tail -n1 "$OUT/$name.time")
}

# Repeats a short mta-init command REPEAT times; one row.
short() { # case name args...
    local label=$1 name=$2 i walls=() clients=() messages=-
    shift 2
    watch_start "$name"
    for i in $(seq "$REPEAT"); do
        timed_init "$name.$i" "$@"
        walls+=("$WALL")
        clients+=("$CLIENT")
    done
    watch_end "$name"
    case " $* " in
        *" --json "*) messages=$(wc -l <"$OUT/$name.1.out") ;;
        *" list "*) messages=$(sed -n 's/^-- .* in \([0-9]*\) messages\.$/\1/p' "$OUT/$name.1.out") ;;
    esac
    log "$label: $(printf '%s\n' "${walls[@]}" | spread) s, $messages messages"
    row "$label" "mta-init $*" "$(printf '%s\n' "${walls[@]}" | spread)" - "$messages" - \
        "$(mib "$(printf '%s\n' "${clients[@]}" | median)")"
}

# A full listing through a FIFO, timestamping the first message as it arrives.
full_list() { # case name args...
    local label=$1 name=$2 fifo t0 t1 first rows messages ids rate json=no
    shift 2
    case " $* " in *" --json "*) json=yes ;; esac
    fifo=$OUT/$name.fifo
    mkfifo "$fifo"
    watch_start "$name"
    t0=$EPOCHREALTIME
    timeout "$WAIT" /usr/bin/time -f %M -o "$OUT/$name.time" \
        "$MTA_INIT" --config "$DIR/mta.toml" "$@" >"$fifo" 2>"$OUT/$name.err" &
    BG_PID=$!
    {
        # The text form prints its header before asking for anything: the
        # first message is the second line.
        [ "$json" = yes ] || IFS= read -r _ || true
        IFS= read -r line || true
        echo "$EPOCHREALTIME" >"$OUT/$name.first"
        printf '%s\n' "$line"
        cat
    } <"$fifo" >"$OUT/$name.out"
    wait "$BG_PID" || { cat "$OUT/$name.err" >&2; fail "$label: mta-init $* failed"; }
    BG_PID=
    t1=$EPOCHREALTIME
    watch_end "$name"
    rm -f "$fifo"
    first=$(secs "$t0" "$(cat "$OUT/$name.first")")
    if [ "$json" = yes ]; then
        messages=$(wc -l <"$OUT/$name.out")
        ids=$(jq -r .id "$OUT/$name.out" | sort -u | wc -l)
    else
        messages=$(sed -n 's/^-- .* in \([0-9]*\) messages\.$/\1/p' "$OUT/$name.out")
        ids=$(grep -c '^[^ -]' "$OUT/$name.out" || true)
    fi
    [ "${messages:-0}" = "$N" ] && [ "$ids" = "$N" ] \
        || fail "$label: ${messages:-?} messages listed, $ids distinct rows; expected $N"
    rate=$(awk -v n="${messages:-0}" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    log "$label: $(secs "$t0" "$t1") s, first message after $first s, ${messages:-?} messages ($rate msg/s), mtad RSS $(mib "$RSS_BEFORE") -> peak $(mib "$RSS_PEAK") -> $(mib "$RSS_AFTER") MiB"
    row "$label" "mta-init $*" "$(secs "$t0" "$t1")" "$first" "${messages:-?}" "$rate" \
        "$(mib "$(tail -n1 "$OUT/$name.time")")"
    rm -f "$OUT/$name.out"
}

summary() { # case name
    local label=$1 name=$2 total
    watch_start "$name"
    timed_init "$name" queue summary --json
    watch_end "$name"
    total=$(jq -r '.total.messages' "$OUT/$name.out" 2>/dev/null || echo '?')
    [ "$total" = "$N" ] || fail "$label: summary counts $total messages, expected $N"
    log "$label: $WALL s, $total messages, mtad RSS $(mib "$RSS_BEFORE") -> peak $(mib "$RSS_PEAK") -> $(mib "$RSS_AFTER") MiB"
    row "$label" "mta-init queue summary --json" "$WALL" - "$total" \
        "$(awk -v n="$total" -v w="$WALL" 'BEGIN { printf "%.0f", n / w }')" "$(mib "$CLIENT")"
}

http_first() { # case name
    local label=$1 name=$2 i t firsts=() totals=() messages
    watch_start "$name"
    for i in $(seq "$REPEAT"); do
        t=$(timeout 60 curl -sS -o "$OUT/$name.out" -w '%{time_starttransfer} %{time_total}' \
            -H "Authorization: Bearer $HTTP_TOKEN" "http://$HTTP_ADDR/api/queue?limit=100") || fail "$label: curl failed"
        firsts+=("${t% *}")
        totals+=("${t#* }")
    done
    watch_end "$name"
    messages=$(jq '.messages | length' "$OUT/$name.out" 2>/dev/null || echo '?')
    [ "$messages" = 100 ] || [ "$N" -lt 100 ] || fail "$label: $messages messages in the first page"
    log "$label: $(printf '%s\n' "${totals[@]}" | spread) s, $messages messages"
    row "$label" "curl http://ADDR/api/queue?limit=100" "$(printf '%s\n' "${totals[@]}" | spread)" \
        "$(printf '%s\n' "${firsts[@]}" | spread)" "$messages" - -
}

http_walk() { # case name limit
    local label=$1 name=$2 limit=$3 t0 t1 first='' after='' n=0 page next='' rate url
    watch_start "$name"
    t0=$EPOCHREALTIME
    while :; do
        url="http://$HTTP_ADDR/api/queue?limit=$limit${after:+&after=$after}"
        timeout 60 curl -sS -f -H "Authorization: Bearer $HTTP_TOKEN" -o "$OUT/$name.page" "$url" || { fail "$label: curl $url failed"; break; }
        [ -n "$first" ] || first=$(secs "$t0" "$EPOCHREALTIME")
        read -r page next < <(jq -r '"\(.messages | length) \(.next // "")"' "$OUT/$name.page")
        n=$((n + page))
        [ -n "$next" ] || break
        after=$next
        [ "$n" -le "$N" ] || { fail "$label: more than $N messages"; break; }
    done
    t1=$EPOCHREALTIME
    watch_end "$name"
    [ "$n" = "$N" ] || fail "$label: $n messages listed, expected $N"
    rate=$(awk -v n="$n" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    log "$label: $(secs "$t0" "$t1") s, $n messages ($rate msg/s, curl and jq per page included)"
    row "$label" "curl .../api/queue?limit=$limit&after=ID (loop)" "$(secs "$t0" "$t1")" "$first" "$n" "$rate" -
}

short "status (reference)" status status
short "first page, text" first-text queue list --max 100
short "first page, JSON" first-json queue list --json --max 100
[ "$HTTP" = 0 ] || http_first "first page, HTTP" http-first
for round in $(seq "$ROUNDS"); do
    for p in $PAGES; do
        full_list "full, JSON, page $p (round $round)" "json-$p-$round" queue list --json --page "$p"
        full_list "full, text, page $p (round $round)" "text-$p-$round" queue list --page "$p"
    done
    summary "summary (round $round)" "summary-$round"
done
[ "$HTTP" = 0 ] || http_walk "full, HTTP, limit 1000" http-walk 1000

RSS_END=$(proc_kib "$MTAD_PID" VmRSS)
HWM_END=$(proc_kib "$MTAD_PID" VmHWM)
MEM_END=$(mem_detail "$MTAD_PID")
INDEX_KIB=$(du -sk "$DIR/queue/index" 2>/dev/null | cut -f1 || echo 0)
json=$(status_json)
queued=$(printf '%s' "$json" | jq -r '.daemon.queued // empty')
[ "$queued" = "$N" ] || fail "$queued queued at the end, expected $N"
delivered=$({ find "$DIR/maildir" -path '*/new/*' -type f 2>/dev/null || true; } | wc -l)
[ "$delivered" = 0 ] || fail "$delivered messages delivered during the run"
warnings=$(grep -ciE '\b(WARN|ERROR)\b' "$DIR/queue/mtad.log" || true)
if [ "$warnings" != 0 ]; then
    log "mtad.log has $warnings WARN/ERROR lines, the first ones:"
    grep -iE '\b(WARN|ERROR)\b' "$DIR/queue/mtad.log" | head -n 5 >&2 || true
fi

log "stopping mtad"
t0=$EPOCHREALTIME
bg timeout "$((WAIT + 10))" "$MTA_INIT" --config "$DIR/mta.toml" stop --wait "$WAIT" \
    >"$OUT/stop.log" 2>&1 || { cat "$OUT/stop.log" >&2; die "mta-init stop failed"; }
STOP_S=$(secs "$t0" "$EPOCHREALTIME")

# --- report ----------------------------------------------------------------------------

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
fstype=$(df -T "$WORK" | awk 'NR == 2 { print $2 }')
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n1)" ]; then rev="$rev+dirty"; fi
cat <<EOF
## Queue listing run $(date -u '+%Y-%m-%d %H:%M UTC')

- machine: $(nproc) CPUs ($cpu), $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB RAM, " }')temp dir on $fstype; kernel $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end
- mtad: release build of $rev; \`[spool] index_cache\` ${INDEX_CACHE:-default (1 MiB)}, \`[queue] retry_base = "6h"\`, HTTP on 127.0.0.1:0
- queue: $N messages of $SIZE bytes, one recipient each, seeded with mta-seed ($(sed -n 's/.*s: \([0-9]*\) msg\/s.*/\1/p' "$OUT/seed.log") msg/s), none due; mtad started in $START_S s and stopped in $STOP_S s
- mtad RSS once started and idle: $(mib "$RSS_START") MiB (VmHWM $(mib "$HWM_START") MiB; $MEM_START); at the end: $(mib "$RSS_END") MiB (VmHWM $(mib "$HWM_END") MiB; $MEM_END); the index (sled) takes $(mib "${INDEX_KIB:-0}") MiB on disk; $queued queued at the end, $delivered delivered during the run, $warnings WARN/ERROR lines in mtad.log

| case | command | wall s | first message s | messages | msg/s | mtad RSS before MiB | peak MiB | after MiB | VmHWM after MiB | mta-init max RSS MiB |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${ROWS[@]}"
cat <<EOF

"wall" is the command's wall time (for the status and first-page rows, the
median of $REPEAT runs, with min and max). "first message" is the time from
starting the command until the first message's line arrives on its
standard output (the JSON line, or the text form's first row), or, for
curl, its time to the first byte. "messages" is what was listed (every
full listing must show $N, with $N distinct ids). mtad's RSS is VmRSS just
before the command (or repeats), the highest VmRSS sampled every ${SAMPLE} s
while it ran, and VmRSS and VmHWM just after. "mta-init max RSS" is the
client's own peak (GNU time's %M; median for repeats). The HTTP walk
starts curl and jq once per page, so its msg/s is a floor.
EOF
if [ "$FAILED" != 0 ]; then
    echo
    echo "**Some checks failed; see the log on standard error.**"
    exit 1
fi
