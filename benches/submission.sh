#!/usr/bin/env bash
# Authenticated submission benchmark (issue 13), all on loopback, in one
# sitting on this machine:
#
#  (a) sessions per second and end-of-data latency of authenticated
#      submission over TLS (connect, EHLO, STARTTLS, EHLO, AUTH PLAIN,
#      MAIL, RCPT, DATA, QUIT: one message per session), for mtad and for
#      a private Postfix whose SASL is a private Dovecot
#      (smtpd_sasl_type = dovecot), with the same users' hash
#      ({SHA512-CRYPT}$6$..., read by both) and the same load; plus mtad
#      with its default argon2id hash, and mtad asking the same Dovecot.
#      Neither delivers: mtad's runners are paused, Postfix puts every
#      message on HOLD (as benches/acceptance.sh does).
#  (b) the p99 end-of-data latency of plain port-25 sessions at a fixed
#      rate, with and without 100 AUTH attempts a second with wrong
#      passwords on mtad's submission port, and their ratio (the issue
#      wants at most 1.25).
#
# See docs/benchmarks.md ("Authenticated submission (issue 13)") for
# what this measures and the recorded figures.
#
# Usage (as root; the private Postfix and Dovecot need it):
#   benches/submission.sh          # builds, runs, prints Markdown
#
# Environment:
#   SUBMISSION_SCALE=N      divide every session count (and (b)'s run
#                           time) by N, for a quick check
#   SUBMISSION_REPEAT=N     rounds per row in (a) (default 3), the rows
#                           rotating; the table shows each row's best
#                           round by sessions/s
#   SUBMISSION_PAIRS=N      pairs of port-25 runs (without, with the
#                           flood) in (b) (default 3)
#   SUBMISSION_TIMEOUT=S    --timeout of each mta-loadgen run (default 240)
#   SUBMISSION_P25_RATE=R   port-25 sessions per second in (b) (default 50)
#   SUBMISSION_P25_SECS=S   length of each port-25 run in (b) (default 40)
#   SUBMISSION_FLOOD_RATE=R AUTH attempts per second in (b) (default 100)
#   SUBMISSION_ONLY=a|b     run (and report) only (a) or only (b)
#   SUBMISSION_NO_BUILD=1   skip `cargo build --release`
#   SUBMISSION_KEEP=1       keep the temporary directory (queues, logs, JSON)
#
# The Markdown report goes to standard output, progress to standard error.
# Only 127.0.0.0/8 is used (mtad and Postfix on 127.0.0.1, the flood from
# 127.0.0.2 to 127.0.0.9); /etc/postfix, /etc/dovecot and port 25 are
# never touched. An EXIT trap stops mtad, the private Postfix and Dovecot
# and every load generator this script started, whatever happens. Every
# wait is bounded. Exit status: 0 if every run did what it should (every
# message accepted and queued, every wrong password refused).
set -euo pipefail

SCALE=${SUBMISSION_SCALE:-1}
REPEAT=${SUBMISSION_REPEAT:-3}
PAIRS=${SUBMISSION_PAIRS:-3}
ONLY=${SUBMISSION_ONLY:-}
case "$ONLY" in
"" | a | b) ;;
*) echo "submission: SUBMISSION_ONLY must be a or b" >&2; exit 2 ;;
esac
TIMEOUT=${SUBMISSION_TIMEOUT:-240}
P25_RATE=${SUBMISSION_P25_RATE:-50}
P25_SECS=${SUBMISSION_P25_SECS:-40}
FLOOD_RATE=${SUBMISSION_FLOOD_RATE:-100}
WARMUP=40        # sessions before each measured run, not counted
SESSIONS=20      # concurrent sessions in (a)
SIZE=4KiB
USER_NAME=bench@example.test
# (b): the flood comes from these addresses, taken in turn.
FLOOD_SOURCES=(127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6 127.0.0.7 127.0.0.8 127.0.0.9)
FLOOD_LEAD=5     # seconds of flood before the port-25 run starts
FLOOD_TAIL=3     # and after it ends

log() { printf 'submission: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ "$(id -u)" != 0 ]; then
    echo "submission: must run as root (the private Postfix and Dovecot need root to start); try: sudo $0" >&2
    exit 1
fi
for tool in cargo postfix postconf postqueue ss script openssl jq timeout; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool not found (Postfix and Dovecot come from tests/install-peers.sh)"
done
DOVECOT_BIN=/usr/sbin/dovecot
[ -x "$DOVECOT_BIN" ] || die "$DOVECOT_BIN not found (Debian's dovecot-core; tests/install-peers.sh)"
id postfix >/dev/null 2>&1 || die "no 'postfix' user (run tests/install-peers.sh)"
getent group postdrop >/dev/null 2>&1 || die "no 'postdrop' group (run tests/install-peers.sh)"

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
# The private Postfix instance: its configuration, start and stop.
# shellcheck source=tests/postfix-instance.sh
. "$ROOT/tests/postfix-instance.sh"
# shellcheck source=benches/compare.sh
. "$ROOT/benches/compare.sh"

release_binaries "${SUBMISSION_NO_BUILD:-}"

WORK=$(mktemp -d /tmp/mta-submission.XXXXXX)
chmod 755 "$WORK" # the postfix user must reach its queue, data and the Dovecot socket
PFCONF=$WORK/postfix/etc
RUN=0
RUNDIR=
PFQUEUE=$WORK/postfix/none
MTADIR=
MTAD_PID=
MTAD_PORT=
MTAD_SUB_PORT=
LOADGEN_PID=
FLOOD_PID=
PF_PORT=
PF_SUB_PORT=
PF_STARTED=
DOVECOT_DIR=$WORK/dovecot
DOVECOT_PID=

# --- process handling -------------------------------------------------------

stop_mtad() {
    [ -n "$MTAD_PID" ] || return 0
    stop_pid "$MTAD_PID" 300
    MTAD_PID=
}

stop_postfix() {
    [ -n "$PF_STARTED" ] || return 0
    pf_stop "$PFCONF" "$PFQUEUE"
    PF_STARTED=
}

# Dovecot forks into the background: its master's pid is in run/master.pid;
# the master stops its children.
stop_dovecot() {
    [ -n "$DOVECOT_PID" ] || return 0
    if kill -0 "$DOVECOT_PID" 2>/dev/null; then
        kill -TERM "$DOVECOT_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$DOVECOT_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$DOVECOT_PID" 2>/dev/null; then
            log "Dovecot master $DOVECOT_PID ignored SIGTERM; killing it and its children"
            pkill -KILL -P "$DOVECOT_PID" 2>/dev/null || true
            kill -KILL "$DOVECOT_PID" 2>/dev/null || true
        fi
    fi
    DOVECOT_PID=
}

cleanup() {
    local rc=$?
    set +e
    local p
    for p in "$LOADGEN_PID" "$FLOOD_PID"; do
        [ -n "$p" ] || continue
        kill -TERM "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    stop_mtad
    stop_postfix
    stop_dovecot
    if [ -n "${SUBMISSION_KEEP:-}" ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- credentials ------------------------------------------------------------

# A throw-away ECDSA P-256 certificate for both servers. The key is
# root's and the postfix group's: smtpd reads it (as root, before it
# drops privileges, but group access costs nothing here).
make_certificate() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost >"$WORK/openssl.log" 2>&1 \
        || { cat "$WORK/openssl.log" >&2; die "openssl could not make a certificate"; }
    chgrp postfix "$WORK/key.pem"
    chmod 640 "$WORK/key.pem"
}

# The password, the shared SHA512-CRYPT users file (Dovecot's passwd-file
# and mtad's users_file read the same line, made by `openssl passwd -6`:
# 5000 rounds, the default of both), and mtad's default argon2id users
# file, made by `mta-init user add`.
make_users() {
    PASSWORD="bench-$(openssl rand -hex 12)"
    local hash
    hash=$(openssl passwd -6 "$PASSWORD") || die "openssl passwd -6 failed"
    USERS_SHA=$WORK/users-sha512
    printf '%s:{SHA512-CRYPT}%s\n' "$USER_NAME" "$hash" >"$USERS_SHA"
    chmod 644 "$USERS_SHA"
    USERS_ARGON=$WORK/users-argon2id
    mkdir -p "$WORK/init"
    cat >"$WORK/init/mtad.toml" <<EOF
hostname = "mx.test"
queue_dir = "$WORK/init/queue"
[auth]
users_file = "$USERS_ARGON"
EOF
    printf '%s\n' "$PASSWORD" | "$MTA_INIT" --config "$WORK/init/mtad.toml" \
        user add "$USER_NAME" --password-stdin >"$WORK/init/user-add.log" 2>&1 \
        || { cat "$WORK/init/user-add.log" >&2; die "mta-init user add failed"; }
    grep -q "^$USER_NAME:{ARGON2ID}\\\$argon2id\\\$" "$USERS_ARGON" \
        || die "mta-init wrote no argon2id hash: $(cut -c1-40 "$USERS_ARGON")"
}

# --- Dovecot ------------------------------------------------------------------

# A private Dovecot with no mail protocol, only its authentication
# service (as mta_testkit::dovecot), reading the SHA512-CRYPT file. Its
# auth-client socket is for Postfix's smtpd (the postfix user) and mtad
# (root). Passwords are checked in its one auth process, with no cache
# (auth_cache_size = 0, the default), as mtad checks each one.
start_dovecot() {
    mkdir -p "$DOVECOT_DIR/run" "$DOVECOT_DIR/state" "$DOVECOT_DIR/home"
    cat >"$DOVECOT_DIR/dovecot.conf" <<EOF
base_dir = $DOVECOT_DIR/run
state_dir = $DOVECOT_DIR/state
log_path = $DOVECOT_DIR/dovecot.log
protocols =
ssl = no
default_internal_user = root
default_login_user = root
default_internal_group = root
auth_mechanisms = plain login
auth_cache_size = 0
passdb {
  driver = passwd-file
  args = scheme=CRYPT $USERS_SHA
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$DOVECOT_DIR/home
}
service auth {
  unix_listener auth-client {
    path = $DOVECOT_DIR/auth-client
    mode = 0660
    user = postfix
  }
}
EOF
    "$DOVECOT_BIN" -c "$DOVECOT_DIR/dovecot.conf" >"$DOVECOT_DIR/start.log" 2>&1 \
        || { cat "$DOVECOT_DIR/start.log" >&2; die "dovecot did not start"; }
    for _ in $(seq 100); do
        if [ -S "$DOVECOT_DIR/auth-client" ] && [ -s "$DOVECOT_DIR/run/master.pid" ]; then
            DOVECOT_PID=$(tr -d ' \n' <"$DOVECOT_DIR/run/master.pid")
            [ -n "$DOVECOT_PID" ] && return 0
        fi
        sleep 0.1
    done
    cat "$DOVECOT_DIR/dovecot.log" >&2 2>/dev/null || true
    die "dovecot's auth-client socket did not appear in 10 s"
}

# --- mtad -------------------------------------------------------------------

# mtad on a new, empty queue. $1: the [auth] lines; $2: extra TOML.
start_mtad() { # auth-lines [extra]
    MTADIR=$RUNDIR
    cat >"$MTADIR/mtad.toml" <<EOF
hostname = "mx.test"
queue_dir = "$MTADIR/queue"
[smtp]
listen = ["127.0.0.1:0"]
max_connections = 1000
[submission]
listen = ["127.0.0.1:0"]
[tls]
certificate = "$WORK/cert.pem"
key = "$WORK/key.pem"
[auth]
$1
# One user sends everything here; the hourly cap (200 by default) is
# not what is measured.
max_messages_per_hour = 0
${2:-}
[spool]
min_free_space = 0
# No admin HTTP server, no sendmail socket, never the system resolver
# (delivery is paused anyway).
[http]
listen = []
[sendmail]
enabled = false
[delivery]
name_servers = ["127.0.0.1:9"]
EOF
    "$MTAD" --config "$MTADIR/mtad.toml" >"$MTADIR/stdout" 2>"$MTADIR/mtad.log" &
    MTAD_PID=$!
    wait_mtad_ready "$MTADIR"
    MTAD_SUB_PORT=$(sed -n 's/^mtad: submission listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$MTADIR/stdout" | head -n1)
    [ -n "$MTAD_PORT" ] && [ -n "$MTAD_SUB_PORT" ] || die "could not read mtad's ports from its stdout"
    # The counterpart of Postfix's HOLD: no delivery attempt, mail waits.
    "$MTA_INIT" --config "$MTADIR/mtad.toml" pause delivery >"$MTADIR/pause.log" 2>&1 \
        || { cat "$MTADIR/pause.log" >&2; die "mta-init pause delivery failed"; }
}

mtad_count() {
    find "$MTADIR/queue/msg" -mindepth 2 -maxdepth 2 -type f 2>/dev/null | wc -l
}

# --- Postfix ----------------------------------------------------------------

# Port 25's service as in benches/acceptance.sh, and a submission service
# on a port of its own: TLS required, AUTH through Dovecot only after
# TLS, relaying only when authenticated; every message put on hold.
write_postfix_config() {
    pf_write_config "$PFCONF" "$PF_PORT" <<EOF
# benches/submission.sh
# queue_directory and data_directory: set per run by start_postfix
myhostname = pf.test
smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit_mynetworks, reject
smtpd_delay_reject = no
disable_dns_lookups = yes
default_process_limit = 200
message_size_limit = 67108864
maillog_file_prefixes = $WORK
maillog_file = $WORK/postfix/maillog
smtpd_tls_cert_file = $WORK/cert.pem
smtpd_tls_key_file = $WORK/key.pem
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DOVECOT_DIR/auth-client
EOF
    # tlsmgr: smtpd's TLS needs it (its PRNG seed and ticket keys); the
    # shared master.cf has no TLS, so no tlsmgr.
    cat >>"$PFCONF/master.cf" <<EOF
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
127.0.0.1:$PF_SUB_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=check_recipient_access,static:HOLD,permit_sasl_authenticated,reject
EOF
}

start_postfix() { # on a new, empty queue every time
    PFQUEUE=$RUNDIR/spool
    PFDATA=$RUNDIR/data
    postconf -c "$PFCONF" -e "queue_directory = $PFQUEUE" "data_directory = $PFDATA"
    pf_prepare_dirs "$PFQUEUE" "$PFDATA" || die "cannot prepare $PFQUEUE and $PFDATA"
    PF_STARTED=1
    pf_start "$PFCONF" "$RUNDIR" || die "Postfix did not start"
    wait_listening "$PF_SUB_PORT" 15 || die "Postfix is not listening on 127.0.0.1:$PF_SUB_PORT"
}

# --- CPU time -------------------------------------------------------------------

# The Dovecot master (with what it reaped) and its live children (auth,
# config, log, anvil).
dovecot_ticks() {
    local pid total
    total=$(proc_ticks "$DOVECOT_PID" children)
    for pid in $(pgrep -P "$DOVECOT_PID" 2>/dev/null || true); do
        total=$((total + $(proc_ticks "$pid")))
    done
    echo "$total"
}

cpu_ms_per() { # ticks count
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (n + 0 == 0 || t == "") print ""; else printf "%.2f", t * 1000 / hz / n }'
}

# --- helpers ------------------------------------------------------------------

jget() { # jq-filter file
    jq -r "$1 // empty" "$2" 2>/dev/null || true
}
median() { # numbers...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

FAILED=0

# Runs mta-loadgen in the background (so that a signal's trap runs at
# once), waits, keeps its JSON in $RUNDIR/$1.json. Sets LOADGEN_RC.
loadgen() { # name args...
    local name=$1
    shift
    LOADGEN_RC=0
    "$LOADGEN" "$@" --json >"$RUNDIR/$name.json" 2>"$RUNDIR/$name.stderr" &
    LOADGEN_PID=$!
    wait "$LOADGEN_PID" || LOADGEN_RC=$?
    LOADGEN_PID=
}

# The load of (a): authenticated sessions over STARTTLS, one message each.
auth_args() { # port
    echo --server "127.0.0.1:$1" --starttls --auth-user "$USER_NAME" --from "$USER_NAME" \
        --per-connection 1 --size "$SIZE" --timeout "$TIMEOUT"
}

# --- (a) authenticated submission -------------------------------------------

# One measured run of one row. Sets RATE P50 P99 SETUP99 AUTH99 CPU.
measure_a() { # row sessions
    local row=$1 total=$2 port c0 c1 queued expect warm json
    new_rundir "$row"
    sync
    case $row in
        mtad-sha512) start_mtad "users_file = \"$USERS_SHA\""; port=$MTAD_SUB_PORT ;;
        mtad-argon2id) start_mtad "users_file = \"$USERS_ARGON\""; port=$MTAD_SUB_PORT ;;
        mtad-dovecot) start_mtad "dovecot_socket = \"$DOVECOT_DIR/auth-client\""; port=$MTAD_SUB_PORT ;;
        postfix) start_postfix; port=$PF_SUB_PORT ;;
    esac
    # Warm-up, the same for all: Postfix spawns smtpd, cleanup and
    # trivial-rewrite on demand and smtpd connects to Dovecot; mtad's
    # blocking pool starts its threads. Left in the queue, subtracted.
    # shellcheck disable=SC2046
    MTA_LOADGEN_AUTH_PASSWORD=$PASSWORD loadgen warmup $(auth_args "$port") \
        --sessions "$SESSIONS" --messages "$WARMUP"
    [ "$LOADGEN_RC" = 0 ] || { cat "$RUNDIR/warmup.json" "$RUNDIR/warmup.stderr" >&2; die "$NAME: $row warm-up failed"; }
    if [ "$row" = postfix ]; then c0=$(($(pf_ticks) + $(dovecot_ticks))); else c0=$(proc_ticks "$MTAD_PID"); fi
    [ "$row" != mtad-dovecot ] || c0=$((c0 + $(dovecot_ticks)))
    # shellcheck disable=SC2046
    MTA_LOADGEN_AUTH_PASSWORD=$PASSWORD loadgen load $(auth_args "$port") \
        --sessions "$SESSIONS" --messages "$total"
    if [ "$row" = postfix ]; then c1=$(($(pf_ticks) + $(dovecot_ticks))); else c1=$(proc_ticks "$MTAD_PID"); fi
    [ "$row" != mtad-dovecot ] || c1=$((c1 + $(dovecot_ticks)))
    json=$RUNDIR/load.json
    RATE=$(jget .rate_msg_s "$json")
    ACC=$(jget .accepted "$json")
    P50=$(jget .latency_ms.p50 "$json")
    P99=$(jget .latency_ms.p99 "$json")
    SETUP50=$(jget .setup_ms.p50 "$json")
    SETUP99=$(jget .setup_ms.p99 "$json")
    AUTH50=$(jget .auth.latency_ms.p50 "$json")
    AUTH99=$(jget .auth.latency_ms.p99 "$json")
    CPU=$(cpu_ms_per $((c1 - c0)) "$total")
    expect=$((WARMUP + total))
    if [ "$row" = postfix ]; then
        queued=$(pf_count hold)
        warm=$(($(pf_count incoming) + $(pf_count active) + $(pf_count deferred) + $(pf_count maildrop)))
        stop_postfix
    else
        queued=$(mtad_count)
        warm=0
        stop_mtad
    fi
    log "$NAME: $row ${ACC:-?}/$total accepted, ${RATE:-?} sessions/s, end of data p50 ${P50:-?} p99 ${P99:-?} ms, set-up p50 ${SETUP50:-?} p99 ${SETUP99:-?} ms, AUTH p50 ${AUTH50:-?} p99 ${AUTH99:-?} ms, CPU ${CPU:-?} ms/session; queued $queued (expected $expect)"
    if [ "$LOADGEN_RC" != 0 ] || [ "${ACC:-}" != "$total" ] || [ "$queued" != "$expect" ] || [ "$warm" != 0 ]; then
        log "$NAME: $row FAILED: mta-loadgen exit $LOADGEN_RC, $(jq -c '.failures' "$json" 2>/dev/null); queued $queued, elsewhere $warm"
        FAILED=1
        RATE=
    fi
}

A_ROWS=()
A_ALL=()
A_CMDS=()
declare -A BEST_RATE BEST_CPU

run_a() {
    local rows=(mtad-sha512 postfix mtad-dovecot mtad-argon2id)
    local -A total=(
        [mtad-sha512]=$((3000 / SCALE))
        [postfix]=$((3000 / SCALE))
        [mtad-dovecot]=$((3000 / SCALE))
        [mtad-argon2id]=$((600 / SCALE))
    )
    local -A label=(
        [mtad-sha512]="mtad, users file, SHA512-CRYPT"
        [mtad-argon2id]="mtad, users file, argon2id (mtad's default)"
        [mtad-dovecot]="mtad, Dovecot (dovecot_socket), SHA512-CRYPT"
        [postfix]="Postfix + Dovecot SASL, SHA512-CRYPT"
    )
    local -A r_rate r_p50 r_p99 r_s50 r_s99 r_a50 r_a99 r_all r_cpu
    local r row order i
    for r in $(seq "$REPEAT"); do
        # Rotate which row goes first each round, so drift on a shared
        # machine does not always favour the same one.
        order=()
        for i in 0 1 2 3; do order+=("${rows[$(((i + r - 1) % 4))]}"); done
        for row in "${order[@]}"; do
            NAME="(a) round $r"
            measure_a "$row" "${total[$row]}"
            r_all[$row]="${r_all[$row]:-}${r_all[$row]:+, }${RATE:-fail}"
            if greater "$RATE" "${r_rate[$row]:-}"; then
                r_rate[$row]=$RATE r_p50[$row]=$P50 r_p99[$row]=$P99 r_s50[$row]=$SETUP50
                r_s99[$row]=$SETUP99 r_a50[$row]=$AUTH50 r_a99[$row]=$AUTH99
            fi
            if [ -n "$RATE" ] && { [ -z "${r_cpu[$row]:-}" ] || greater "${r_cpu[$row]}" "$CPU"; }; then r_cpu[$row]=$CPU; fi
        done
    done
    local pf=${r_rate[postfix]:-} pf99=${r_p99[postfix]:-} pfcpu=${r_cpu[postfix]:-}
    for row in mtad-sha512 mtad-argon2id mtad-dovecot postfix; do
        A_ROWS+=("| ${label[$row]} | ${total[$row]} | ${r_rate[$row]:--} | $(ratio "${r_rate[$row]:-}" "$pf") | ${r_p50[$row]:--} | ${r_p99[$row]:--} | $(ratio "$pf99" "${r_p99[$row]:-}") | ${r_s50[$row]:--} | ${r_s99[$row]:--} | ${r_a50[$row]:--} | ${r_a99[$row]:--} | ${r_cpu[$row]:--} | $(ratio "$pfcpu" "${r_cpu[$row]:-}") |")
        A_ALL+=("| ${label[$row]} | ${r_all[$row]:-} |")
        A_CMDS+=("${label[$row]}: \`MTA_LOADGEN_AUTH_PASSWORD=... mta-loadgen $(auth_args PORT) --sessions $SESSIONS --messages ${total[$row]} --json\`")
    done
}

# --- (b) port 25 under an AUTH flood -----------------------------------------

# One port-25 run at a fixed rate, beside a flood of the given kind:
#   none  nothing else;
#   auth  AUTH PLAIN with a wrong password, over STARTTLS;
#   users the same with a new user name at each attempt (none of them
#         exists), so that no user is locked out but every address is;
#   tls   the same sessions without AUTH (EHLO, STARTTLS, EHLO, QUIT):
#         what the TLS handshakes alone cost, for comparison.
# Sets P25_* (and FLOOD_* for a flood) from the JSON, BUSY (the machine's
# CPU use over the port-25 run, % of all CPUs) and MTAD_PCT (mtad's, % of
# one CPU).
measure_b() { # name kind
    local name=$1 kind=$2 n secs flood_n src_args=() s json j0 j1 c0 c1 t0 t1
    secs=$((P25_SECS / SCALE))
    [ "$secs" -ge 5 ] || secs=5
    n=$((P25_RATE * secs))
    for s in "${FLOOD_SOURCES[@]}"; do src_args+=(--source "$s"); done
    FLOOD_PID=
    if [ "$kind" != none ]; then
        flood_n=$((FLOOD_RATE * (FLOOD_LEAD + secs + FLOOD_TAIL)))
        local what=(--setup-only)
        case $kind in
            auth) what+=(--auth-user "$USER_NAME") ;;
            users) what+=(--auth-user "guess{n}@${USER_NAME#*@}") ;;
        esac
        # From 8 addresses in turn, at most 2000 open (wrong passwords
        # queue up behind [auth] max_checks for up to [auth] timeout).
        MTA_LOADGEN_AUTH_PASSWORD="wrong-$PASSWORD" "$LOADGEN" --server "127.0.0.1:$MTAD_SUB_PORT" \
            --starttls "${what[@]}" "${src_args[@]}" \
            --rate "$FLOOD_RATE" --sessions 2000 --messages "$flood_n" \
            --timeout $((FLOOD_LEAD + secs + FLOOD_TAIL + 60)) --json \
            >"$RUNDIR/$name-flood.json" 2>"$RUNDIR/$name-flood.stderr" &
        FLOOD_PID=$!
        sleep "$FLOOD_LEAD"
        kill -0 "$FLOOD_PID" 2>/dev/null || die "$name: the flood ended early: $(cat "$RUNDIR/$name-flood.stderr")"
    fi
    j0=$(machine_ticks)
    c0=$(proc_ticks "$MTAD_PID")
    t0=$EPOCHREALTIME
    loadgen "$name-p25" --server "127.0.0.1:$MTAD_PORT" --rate "$P25_RATE" --sessions 500 \
        --messages "$n" --size "$SIZE" --timeout "$TIMEOUT"
    t1=$EPOCHREALTIME
    c1=$(proc_ticks "$MTAD_PID")
    j1=$(machine_ticks)
    BUSY=$(busy_percent "$j0" "$j1")
    MTAD_PCT=$(awk -v c="$((c1 - c0))" -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (b > a) printf "%.0f", 100 * c / hz / (b - a) }')
    json=$RUNDIR/$name-p25.json
    P25_ACC=$(jget .accepted "$json")
    P25_50=$(jget .latency_ms.p50 "$json")
    P25_99=$(jget .latency_ms.p99 "$json")
    P25_MAX=$(jget .latency_ms.max "$json")
    P25_S99=$(jget .setup_ms.p99 "$json")
    P25_LATE=$(jget .late_starts "$json")
    P25_N=$n
    if [ "$LOADGEN_RC" != 0 ] || [ "${P25_ACC:-}" != "$n" ]; then
        log "$name: port 25 FAILED: mta-loadgen exit $LOADGEN_RC, accepted ${P25_ACC:-?}/$n: $(jq -c '.failures' "$json" 2>/dev/null)"
        FAILED=1
    fi
    if [ "$kind" != none ]; then
        local rc=0
        # The flood's last checks may wait up to [auth] timeout (10 s).
        for _ in $(seq $(((FLOOD_TAIL + 60) * 10))); do
            kill -0 "$FLOOD_PID" 2>/dev/null || break
            sleep 0.1
        done
        wait "$FLOOD_PID" || rc=$?
        FLOOD_PID=
        json=$RUNDIR/$name-flood.json
        FLOOD_N=$flood_n
        FLOOD_ACC=$(jget .accepted "$json")
        FLOOD_ATTEMPTS=$(jget .auth.attempts "$json")
        FLOOD_REPLIES=$(jq -r '.auth.replies | to_entries | map("\(.value)x \(.key)") | join(", ")' "$json" 2>/dev/null || true)
        FLOOD_A50=$(jget .auth.latency_ms.p50 "$json")
        FLOOD_A99=$(jget .auth.latency_ms.p99 "$json")
        FLOOD_S99=$(jget .setup_ms.p99 "$json")
        FLOOD_LATE=$(jget .late_starts "$json")
        FLOOD_CONNFAIL=$(jget .connect_failures "$json")
        FLOOD_WALL=$(jget .wall_s "$json")
        FLOOD_OTHER=$(jq -r '[.failures[] | select(.text | startswith("AUTH: ") | not) | "\(.count)x \(.text)"] | join("; ")' "$json" 2>/dev/null || true)
        if [ "$kind" != tls ]; then
            # Every attempt must have been refused (exit status 1 is
            # expected: every session "fails").
            if [ "${FLOOD_ACC:-0}" != 0 ] || [ -z "$FLOOD_ATTEMPTS" ] || [ "$rc" != 1 ]; then
                log "$name: the flood did not go as expected (exit $rc, accepted ${FLOOD_ACC:-?}, attempts ${FLOOD_ATTEMPTS:-?})"
                FAILED=1
            fi
            log "$name: flood of $flood_n sessions at $FLOOD_RATE/s: AUTH replies ${FLOOD_REPLIES:-none}; AUTH latency p50 ${FLOOD_A50:-?} p99 ${FLOOD_A99:-?} ms; ${FLOOD_LATE:-?} late starts; ${FLOOD_CONNFAIL:-?} connection failures${FLOOD_OTHER:+; other failures: $FLOOD_OTHER}"
        else
            if [ "$rc" != 0 ] || [ "${FLOOD_ACC:-}" != "$flood_n" ]; then
                log "$name: the TLS-only sessions did not all succeed (exit $rc, ${FLOOD_ACC:-?}/$flood_n): $FLOOD_OTHER"
                FAILED=1
            fi
            log "$name: $flood_n TLS-only sessions at $FLOOD_RATE/s: set-up p99 ${FLOOD_S99:-?} ms; ${FLOOD_LATE:-?} late starts"
        fi
    fi
    log "$name: port 25 at $P25_RATE/s for ${secs} s: end of data p50 ${P25_50:-?} p99 ${P25_99:-?} max ${P25_MAX:-?} ms (${P25_LATE:-?} late starts); machine ${BUSY:-?} % busy, mtad ${MTAD_PCT:-?} % of a CPU"
}

B_ROWS=()
B_FLOOD=()
b_row() { # pair label ratio
    B_ROWS+=("| $1 | $2 | $P25_N | ${P25_50:--} | ${P25_99:--} | ${P25_MAX:--} | ${P25_S99:--} | ${P25_LATE:--} | ${BUSY:--} | ${MTAD_PCT:--} | $3 |")
}

# mtad for (b), with the users file holding mtad's default argon2id hash
# (what a flood of wrong passwords costs a default installation); $1:
# more [auth] lines; $2: the failure limits, "defaults" (each flooding
# address slowed after 3 failures and locked out after 10, the user after
# 30) or "off" (out of reach, so every attempt is a real hash check).
start_b_mtad() { # auth-lines defaults|off
    local limits=
    [ "$2" = defaults ] || limits=$(printf '%s\n' \
        '[auth.client_failures]' 'delay_after = 1000000000' 'lockout_after = 1000000000' \
        '[auth.user_failures]' 'delay_after = 1000000000' 'lockout_after = 1000000000')
    start_mtad "users_file = \"$USERS_ARGON\"${1:+
$1}" "$limits"
    loadgen warmup --server "127.0.0.1:$MTAD_PORT" --sessions 20 --messages "$WARMUP" \
        --per-connection 1 --timeout 60
    [ "$LOADGEN_RC" = 0 ] || die "(b) warm-up failed"
}

# $PAIRS pairs of port-25 runs on the running mtad, without and with the
# AUTH flood (of kind $3, `auth` unless given), as rows of the (b) table
# labelled $2; the p99s go to the arrays QUIET99 and FLOOD99, the
# flood's figures to B_FLOOD.
b_pairs() { # name label [kind]
    local name=$1 label=$2 kind=${3:-auth} pair quiet99 flood99 c0 c1
    QUIET99=()
    FLOOD99=()
    for pair in $(seq "$PAIRS"); do
        measure_b "$name-quiet-$pair" none
        quiet99=$P25_99
        QUIET99+=("$quiet99")
        B_EXPECT=$((B_EXPECT + P25_N))
        b_row "$pair" "without ($label)" ""
        sleep 2
        c0=$(proc_ticks "$MTAD_PID")
        measure_b "$name-flood-$pair" "$kind"
        c1=$(proc_ticks "$MTAD_PID")
        flood99=$P25_99
        FLOOD99+=("$flood99")
        B_EXPECT=$((B_EXPECT + P25_N))
        b_row "$pair" "AUTH flood ($label)" "**$(ratio "$flood99" "$quiet99")**"
        B_FLOOD+=("| $label | $pair | $FLOOD_N | ${FLOOD_WALL:--} | ${FLOOD_REPLIES:--} | ${FLOOD_A50:--} | ${FLOOD_A99:--} | ${FLOOD_LATE:--} | ${FLOOD_CONNFAIL:--} | $(cpu_ms_per $((c1 - c0)) "${FLOOD_ATTEMPTS:-0}") |")
        sleep 2
    done
}

# After b_pairs on a running mtad with the default limits: the medians
# of its p99s and what its log counted, as ${1}_QUIET, ${1}_FLOOD,
# ${1}_FAILED, ${1}_LOCKOUTS and ${1}_REFUSED.
b_summary() { # prefix
    local log=$MTADIR/mtad.log
    printf -v "${1}_QUIET" '%s' "$(median "${QUIET99[@]}")"
    printf -v "${1}_FLOOD" '%s' "$(median "${FLOOD99[@]}")"
    printf -v "${1}_FAILED" '%s' "$(grep -c 'authentication failed' "$log" || true)"
    printf -v "${1}_LOCKOUTS" '%s' "$(grep -c 'authentication locked out' "$log" || true)"
    printf -v "${1}_REFUSED" '%s' "$(grep -c 'authentication refused: locked out' "$log" || true)"
}

# Stops the (b) mtad after checking it queued what it was sent.
b_stop() { # what
    local queued
    queued=$(mtad_count)
    stop_mtad
    if [ "$queued" != "$B_EXPECT" ]; then
        log "(b): $1 queued $queued messages, expected $B_EXPECT"
        FAILED=1
    fi
}

run_b() {
    local quiet
    # 1. mtad as installed: its default failure limits.
    new_rundir "mtad-flood-defaults"
    start_b_mtad "" defaults
    B_EXPECT=$WARMUP
    b_pairs defaults "default limits"
    b_summary B_DEF
    b_stop "the first mtad"
    # 2. The worst case: the limits out of reach, every attempt a hash.
    new_rundir "mtad-flood"
    start_b_mtad "" off
    B_EXPECT=$WARMUP
    b_pairs off "limits off"
    B_OFF_QUIET=$(median "${QUIET99[@]}")
    B_OFF_FLOOD=$(median "${FLOOD99[@]}")
    # For comparison: as many TLS sessions a second, without AUTH.
    measure_b "tls-only" tls
    B_EXPECT=$((B_EXPECT + P25_N))
    b_row "-" "TLS-only sessions" "$(ratio "$P25_99" "$B_OFF_QUIET")"
    B_TLS_S99=$FLOOD_S99
    B_FAILED_AUTH=$(grep -c 'authentication failed' "$MTADIR/mtad.log" || true)
    B_UNAVAILABLE=$(grep -c 'authentication unavailable' "$MTADIR/mtad.log" || true)
    B_LOCKOUTS=$(grep -c 'locked out' "$MTADIR/mtad.log" || true)
    B_WARNINGS=$(grep -E ' (WARN|ERROR) ' "$MTADIR/mtad.log" | grep -vc 'mtad::auth' || true)
    b_stop "the second mtad"
    # 3. For comparison, one pair more with the limits off and the hashing
    # threads under SCHED_IDLE.
    new_rundir "mtad-flood-idle"
    start_b_mtad 'hash_priority = "idle"' off
    B_EXPECT=$WARMUP
    measure_b "idle-quiet" none
    quiet=$P25_99
    B_EXPECT=$((B_EXPECT + P25_N))
    b_row "-" "without (limits off, \`hash_priority = \"idle\"\`)" ""
    sleep 2
    measure_b "idle-flood" auth
    B_EXPECT=$((B_EXPECT + P25_N))
    b_row "-" "AUTH flood (limits off, \`hash_priority = \"idle\"\`)" "$(ratio "$P25_99" "$quiet")"
    B_IDLE_REPLIES=${FLOOD_REPLIES:-}
    b_stop "the third mtad"
    # 4. Default limits, a new user name at each attempt: no user is
    # locked out, so every flooding address is, after its own failures,
    # and is then turned away at connect (421, no TLS handshake).
    new_rundir "mtad-flood-names"
    start_b_mtad "" defaults
    B_EXPECT=$WARMUP
    b_pairs names "default limits, a new user name each" users
    b_summary B_NAMES
    b_stop "the fourth mtad"
}

# --- the run ------------------------------------------------------------------

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M UTC')
make_certificate
make_users
start_dovecot
PF_PORT=$(free_port)
PF_SUB_PORT=$(free_port)
[ "$PF_SUB_PORT" != "$PF_PORT" ] || PF_SUB_PORT=$(free_port)
write_postfix_config
log "work dir $WORK; Postfix on 127.0.0.1:$PF_PORT (25's role) and 127.0.0.1:$PF_SUB_PORT (submission); Dovecot at $DOVECOT_DIR/auth-client; mtad on ephemeral ports"
log "load average before: $LOAD_BEFORE"
T_A=$EPOCHREALTIME
[ "$ONLY" = b ] || run_a
T_B=$EPOCHREALTIME
[ "$ONLY" = a ] || run_b
T_END=$EPOCHREALTIME
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"
DOVECOT_VERSION=$("$DOVECOT_BIN" --version 2>/dev/null | awk '{ print $1 }')
stop_dovecot

# --- report -----------------------------------------------------------------

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -n1)" ]; then rev="$rev+dirty"; fi
pfver=$(postconf -c "$PFCONF" -h mail_version 2>/dev/null || echo unknown)
tlsver=$(openssl version 2>/dev/null | awk '{ print $1 " " $2 }')
secs=$((P25_SECS / SCALE))
[ "$secs" -ge 5 ] || secs=5

cat <<EOF
## Submission run $START

- machine: $(nproc) CPUs ($cpu), $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB RAM" }'); kernel $(uname -r); load average (1, 5, 15 min) $LOAD_BEFORE before, $LOAD_AFTER after; (a) took $(awk -v a="$T_A" -v b="$T_B" 'BEGIN { printf "%.0f", b - a }') s, (b) $(awk -v a="$T_B" -v b="$T_END" 'BEGIN { printf "%.0f", b - a }') s
- mtad: release build of $rev, \`[auth] max_checks\` default (half the cores: $(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))), \`max_wait\` and \`hash_priority\` default (1 s, \`normal\`), \`max_messages_per_hour = 0\`, delivery paused; Postfix $pfver (Debian package, $tlsver), private instance, submission service with \`smtpd_tls_security_level = encrypt\`, \`smtpd_sasl_type = dovecot\`, \`smtpd_tls_auth_only = yes\`, \`smtpd_relay_restrictions = permit_sasl_authenticated, reject\`, every message put on HOLD; Dovecot $DOVECOT_VERSION, private, passwd-file, no auth cache
- TLS: one ECDSA P-256 certificate for both; the client (rustls) makes a full handshake every session (no resumption) and does not verify the certificate
- users: \`$USER_NAME\`, one hash line \`{SHA512-CRYPT}\$6\$...\` (\`openssl passwd -6\`, 5000 rounds) read by Dovecot's passwd-file and by mtad's users file alike; mtad's argon2id line made by \`mta-init user add\` (m = 19456 KiB, t = 2, p = 1)
- every run of (a) on a fresh empty queue (a new mtad or Postfix), after $WARMUP warm-up sessions through the same path (not counted); $REPEAT rounds, the rows rotating; the table shows each row's best round by sessions/s, with that round's latencies$([ "$SCALE" = 1 ] || echo "; counts divided by $SCALE")
EOF
if [ "$ONLY" != b ]; then
cat <<EOF

### (a) Authenticated submission: STARTTLS, AUTH PLAIN, one 4 KiB message per session, $SESSIONS sessions at once

| row | sessions | sessions/s | /Postfix | end-of-data p50 ms | end-of-data p99 ms | Postfix/row p99 | set-up p50 ms | set-up p99 ms | AUTH p50 ms | AUTH p99 ms | CPU ms/session | Postfix/row CPU |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${A_ROWS[@]}"
cat <<'EOF'

"set-up" is from starting to connect to the 235 to AUTH (greeting, EHLO,
STARTTLS, the TLS handshake, EHLO, AUTH); "AUTH" from sending AUTH PLAIN
to the 235; "end-of-data" from the final "." to the 250. Latencies are
mta-loadgen's, nearest rank. CPU is user + system from /proc over the
measured run: mtad's process; for Postfix, every process of the instance
plus what its master reaped, and Dovecot (master, children, reaped); for
mtad with Dovecot, mtad and Dovecot. Lowest of the rounds.

Every round, sessions/s:

| row | rounds |
| --- | --- |
EOF
printf '%s\n' "${A_ALL[@]}"
cat <<EOF

Commands (PORT is the submission port; the password in the environment):

EOF
for c in "${A_CMDS[@]}"; do echo "- $c"; done
fi
if [ "$ONLY" != a ]; then
cat <<EOF

### (b) Port 25 under an AUTH flood (mtad)

Plain port-25 sessions, one 4 KiB message each, started at $P25_RATE a second for $secs s (open loop), without and then with $FLOOD_RATE AUTH PLAIN attempts a second with a wrong password on the submission port (over STARTTLS, from ${#FLOOD_SOURCES[@]} addresses, ${FLOOD_SOURCES[0]} to ${FLOOD_SOURCES[-1]}, in turn; the flood starts $FLOOD_LEAD s before the port-25 run and ends about $FLOOD_TAIL s after it). The user's hash is mtad's default argon2id; at most \`max_checks\` checks at once, each waiting at most \`max_wait\` (1 s) for its turn. Four mtads, one after the other, each with a new queue: **default limits**, mtad as installed (\`[auth.client_failures]\` and \`[auth.user_failures]\` at their defaults: each flooding address slowed after 3 failures and locked out after 10, the user after 30); **limits off**, the worst case (\`delay_after\` and \`lockout_after\` = 10^9 for clients and users, so every attempt is a full hash check), followed by one run beside as many TLS sessions a second that do not authenticate (EHLO, STARTTLS, EHLO, QUIT); one pair with the limits off and the hashing threads under \`SCHED_IDLE\` (\`hash_priority = "idle"\`), for comparison; and **default limits, a new user name at each attempt** (\`--auth-user 'guess{n}@...'\`, none of them a user), so that no user is locked out and every flooding address is, after its own failures, and is then turned away at connect.

| pair | beside | sessions | p50 ms | p99 ms | max ms | set-up p99 ms | late starts | machine busy % | mtad % of a CPU | p99 / without |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${B_ROWS[@]}"
cat <<EOF

Default limits: median p99 without the flood $B_DEF_QUIET ms, with it $B_DEF_FLOOD ms: **$(ratio "$B_DEF_FLOOD" "$B_DEF_QUIET")** (the issue's bound: 1.25); with a new user name at each attempt, $B_NAMES_QUIET ms and $B_NAMES_FLOOD ms: **$(ratio "$B_NAMES_FLOOD" "$B_NAMES_QUIET")**. Limits off: $B_OFF_QUIET ms and $B_OFF_FLOOD ms: **$(ratio "$B_OFF_FLOOD" "$B_OFF_QUIET")**. The TLS-only row is against the limits-off median without; the \`idle\` flood row against the run just before it. "machine busy" is the whole machine's CPU use over the port-25 run (all CPUs, from /proc/stat, the load generators included); "mtad" its process's.

The AUTH flood, per run (AUTH replies by code; "AUTH" latency from AUTH to its reply; mtad's CPU over the flood run, port-25 load included, per attempt). The TLS-only sessions' set-up p99 was ${B_TLS_S99:--} ms; the \`idle\` flood's AUTH replies: ${B_IDLE_REPLIES:--}.

| limits | pair | sessions | wall s | AUTH replies | AUTH p50 ms | AUTH p99 ms | late starts | connection failures | mtad CPU ms/attempt |
| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |
EOF
printf '%s\n' "${B_FLOOD[@]}"
cat <<EOF

mtad's log, default limits: $B_DEF_FAILED "authentication failed" (a hash checked and wrong), $B_DEF_LOCKOUTS lock-outs started, $B_DEF_REFUSED attempts refused while locked out (\`421 4.7.0\`, no hash); with a new user name at each attempt, $B_NAMES_FAILED, $B_NAMES_LOCKOUTS and $B_NAMES_REFUSED (a locked-out address's sessions are turned away at connect, before TLS and AUTH: the flood's "connection failures"). Limits off: $B_FAILED_AUTH "authentication failed", $B_UNAVAILABLE "authentication unavailable" (a check that did not get its turn within \`[auth] max_wait\`: 454 4.7.0), $B_LOCKOUTS lock-outs; $B_WARNINGS other warnings or errors. Every mtad queued every port-25 and warm-up message, once (checked).

Commands: \`mta-loadgen --server 127.0.0.1:PORT25 --rate $P25_RATE --sessions 500 --messages $((P25_RATE * secs)) --size $SIZE --json\`; the flood \`MTA_LOADGEN_AUTH_PASSWORD=wrong mta-loadgen --server 127.0.0.1:PORT587 --starttls --setup-only --auth-user $USER_NAME --source 127.0.0.2 ... --source 127.0.0.9 --rate $FLOOD_RATE --sessions 2000 --messages $((FLOOD_RATE * (FLOOD_LEAD + secs + FLOOD_TAIL))) --json\`; the TLS-only sessions the same without \`--auth-user\`.
EOF
fi
if [ "$FAILED" != 0 ]; then
    echo
    echo "**Some runs failed their checks; see the log on standard error.**"
    exit 1
fi
