# Shared by the benchmark scripts that drive a release mtad with mta-init
# (lifecycle.sh, queue_list.sh); sourced, not run. Set BENCH_NAME (the log
# prefix) first. It defines:
#
#   log, die            progress and errors on standard error
#   ROOT                the checkout (and the working directory)
#   release_binaries    build (unless its argument is set) and find mtad,
#                       mta-init and the load tools: sets MTAD, MTA_INIT,
#                       LOADGEN, SEED (benches/binaries.sh)
#   alive, mtad_pid     is a process there (not a zombie); mtad's pid from
#                       $DIR/queue/mtad.pid
#   stop_helper VAR     kill and reap the background pid held in VAR
#   bg CMD...           run CMD in the background and wait, so that a
#                       signal's trap runs at once
#   init, status_json   mta-init on $DIR/mta.toml
#   secs, mib           arithmetic for the tables
#   install_cleanup KEEP VAR...
#                       an EXIT trap that stops the helpers in VAR..., the
#                       BG_PID child and mtad, then removes $WORK (unless
#                       KEEP is non-empty)

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The checkout's top, where the scripts run from.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=benches/binaries.sh
. "$ROOT/benches/binaries.sh"

# Is the process there and not a zombie? (mtad is detached by mta-init, so
# it is reaped by whatever PID 1 is, maybe a moment after it exits.)
alive() { # pid
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

mtad_pid() { # the pid in the current queue's PID file, if that process lives
    local pid
    [ -n "${DIR:-}" ] && [ -r "$DIR/queue/mtad.pid" ] || return 1
    pid=$(tr -d ' \n' <"$DIR/queue/mtad.pid")
    [ -n "$pid" ] && alive "$pid" || return 1
    echo "$pid"
}

stop_helper() { # name of the variable holding a background pid
    local pid=${!1:-}
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        printf -v "$1" '%s' ''
    fi
}

BG_PID= # a long child we wait for (seed, start, stop)

# Runs a command in the background and waits for it, so a signal's trap
# runs at once (bash defers traps until a foreground child exits).
bg() {
    local rc=0
    "$@" &
    BG_PID=$!
    wait "$BG_PID" || rc=$?
    BG_PID=
    return "$rc"
}

init() { "$MTA_INIT" --config "$DIR/mta.toml" "$@"; }

status_json() { timeout 10 "$MTA_INIT" --config "$DIR/mta.toml" status --json 2>/dev/null || true; }

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

install_cleanup() { # keep helper-variable...
    CLEANUP_KEEP=$1
    shift
    CLEANUP_HELPERS=("$@")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local rc=$? pid helper
    trap - EXIT INT TERM
    for helper in "${CLEANUP_HELPERS[@]}"; do
        stop_helper "$helper"
    done
    stop_helper BG_PID
    if pid=$(mtad_pid); then
        log "stopping mtad (pid $pid)"
        timeout 120 "$MTA_INIT" --config "$DIR/mta.toml" stop --wait 100 >&2 \
            || kill -KILL "$pid" 2>/dev/null || true
    fi
    if [ -n "$CLEANUP_KEEP" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
