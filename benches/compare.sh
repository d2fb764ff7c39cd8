# What the benchmarks that measure mtad against Postfix share
# (benches/relay.sh, benches/acceptance.sh, benches/submission.sh, and
# benches/profile.sh and benches/dkim.sh for the relay configuration):
# ports, processes, CPU ticks and the arithmetic of their reports.
# Sourced, after tests/postfix-instance.sh; `log` and `die` are the
# caller's, and so are WORK, RUN, PFCONF and PFQUEUE.

# release_binaries: the one definition, shared with mtad-bench.sh.
# shellcheck source=benches/binaries.sh
. "$(dirname "${BASH_SOURCE[0]}")/binaries.sh"

# Stop one process we started: TERM, up to $2 tenths of a second, then KILL.
stop_pid() { # pid tenths
    local pid=$1 tenths=${2:-100}
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq "$tenths"); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "process $pid ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# The configuration of an mtad that relays everything for example.test
# to a sink on 127.0.0.1:$2, its queue in $1/queue: durable (the
# default), no admin HTTP server, no sendmail socket, 20 connections at
# most to the sink, no TLS out, and a resolver on a closed loopback port
# that the route never asks. $3 goes into [spool] (e.g. index_cache), $4
# at the end (more tables).
relay_mtad_config() { # dir sink-port [spool-lines] [more-tables]
    cat <<CONF
hostname = "mx.test"
queue_dir = "$1/queue"
[smtp]
listen = ["127.0.0.1:0"]
max_connections = 1000
[spool]
min_free_space = 0
${3:-}
[http]
listen = []
[sendmail]
enabled = false
[queue]
retry_base = "1s"
[delivery]
name_servers = ["127.0.0.1:9"]
max_per_destination = 20
tls = "none"
[delivery.routes]
"example.test" = "127.0.0.1:$2"
${4:-}
CONF
}

# A throw-away ECDSA P-256 certificate for localhost, $1/cert.pem and
# $1/key.pem (both 0644: Postfix's smtpd may read them as another user),
# and mtad's [tls] table offering it, on standard output.
throwaway_cert() { # dir
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$1/key.pem" -out "$1/cert.pem" -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost >"$1/openssl.log" 2>&1 \
        || { cat "$1/openssl.log" >&2; die "openssl could not make a certificate"; }
    chmod 644 "$1/key.pem" "$1/cert.pem"
    printf '[tls]\ncertificate = "%s"\nkey = "%s"' "$1/cert.pem" "$1/key.pem"
}

# Waits (10 s at most) until the mtad of $MTAD_PID, started with its
# standard output in $1/stdout and its log in $1/mtad.log, says it is
# ready; dies otherwise. Sets MTAD_PORT to its SMTP port (empty if it
# announced none).
wait_mtad_ready() { # dir
    for _ in $(seq 100); do
        grep -q '^mtad: ready' "$1/stdout" 2>/dev/null && break
        kill -0 "$MTAD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^mtad: ready' "$1/stdout" 2>/dev/null; then
        cat "$1/stdout" "$1/mtad.log" >&2 || true
        die "mtad did not become ready"
    fi
    MTAD_PORT=$(sed -n 's/^mtad: smtp listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$1/stdout" | head -n1)
}

# A free TCP port on 127.0.0.1 (high range; checked against ss).
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! ss -Htan "sport = :$port" 2>/dev/null | grep -q .; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

wait_listening() { # port seconds
    local port=$1 tries=$(($2 * 10))
    for _ in $(seq "$tries"); do
        ss -Htln "sport = :$port" 2>/dev/null | grep -q '127.0.0.1' && return 0
        sleep 0.1
    done
    return 1
}

new_rundir() { # mta
    RUN=$((RUN + 1))
    RUNDIR=$WORK/run-$RUN-$1
    mkdir -p "$RUNDIR"
    chmod 755 "$RUNDIR"
}

# CPU time (user + system, clock ticks) a process has used, all its threads
# included; with "children", also what its reaped children used.
proc_ticks() { # pid [children]
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    rest=${stat##*) } # the command name may contain spaces
    # shellcheck disable=SC2086
    set -- $rest "${2:-}"
    # after the name: state ppid ... utime is field 12, stime 13, cutime 14, cstime 15
    if [ "${!#}" = children ]; then
        echo $((${12} + ${13} + ${14} + ${15}))
    else
        echo $((${12} + ${13}))
    fi
}

# The whole Postfix instance's CPU time so far, in ticks: every live process
# of the instance, plus what the master's reaped children used (smtpd and
# the other workers exit after max_use requests or when idle).
pf_ticks() {
    local pid master total=0
    master=$(pf_master_pid "$PFQUEUE") || master=
    for pid in $(pf_instance_pids "$PFCONF"); do
        if [ "$pid" = "$master" ]; then
            total=$((total + $(proc_ticks "$pid" children)))
        else
            total=$((total + $(proc_ticks "$pid")))
        fi
    done
    echo "$total"
}

pf_count() { # queue name
    find "$PFQUEUE/$1" -type f 2>/dev/null | wc -l
}

ratio() { # a b -> a/b with 2 decimals, or - if unknown
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# is $1 > $2 (numbers, empty counts as -1)?
greater() { awk -v a="${1:--1}" -v b="${2:--1}" 'BEGIN { exit !(a + 0 > b + 0) }'; }

# The median of the numbers on standard input, one per line (blank lines
# skipped), or - when there is none.
median() {
    sort -g | awk 'NF { v[++n] = $1 } END { if (n == 0) print "-"; else if (n % 2) print v[(n + 1) / 2]; else print (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

# "busy total" CPU ticks of the whole machine so far (all CPUs), from the
# first line of /proc/stat.
machine_ticks() {
    awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6; exit }' /proc/stat
}

# How busy the machine was between two machine_ticks, in per cent (empty
# if no time passed).
busy_percent() { # "busy0 total0" "busy1 total1"
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; if (d > 0) printf "%.0f", 100 * (y[1] - x[1]) / d }'
}
