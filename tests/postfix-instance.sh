#!/usr/bin/env bash
# A private instance of Debian's Postfix on loopback, for the tests and the
# benchmarks that compare with it or use it as a real upstream: the one
# place its configuration and its start and stop are written.
#
# The instance lives in directories of the caller's (config, queue, data),
# listens on 127.0.0.1:PORT only, accepts mail from loopback, asks no DNS
# (no peer name lookups, `smtp_dns_support_level = disabled`) and never
# touches /etc/postfix or port 25. Every process of it has
# MAIL_CONFIG=<its config directory> in its environment, which is how a
# stop finds the ones the master left behind. Needs root (the master runs
# as root, its workers as the `postfix` user) and the postfix package
# (tests/install-peers.sh).
#
# Sourced (benches/acceptance.sh, benches/relay.sh), it defines:
#   pf_write_config CONF PORT      main.cf and master.cf in CONF; the
#                                  caller's own main.cf lines on stdin go
#                                  last (in main.cf the last one wins)
#   pf_prepare_dirs QUEUE DATA     creates them; DATA is postfix's, 0700
#   pf_start CONF OUTDIR           postfix check, then start (its output
#                                  in OUTDIR/check.log, OUTDIR/start.log);
#                                  1 on failure
#   pf_master_pid QUEUE            the master's pid while it runs
#   pf_instance_pids CONF          every live process of the instance
#   pf_stop CONF QUEUE             postfix stop, then SIGKILL for a master
#                                  that lingers and for leftover processes;
#                                  bounded; says on stderr what it killed
# Run as a program (tests/integration/postfix.rs):
#   tests/postfix-instance.sh config CONF PORT [EXTRA_FILE]
#                                  pf_write_config, the caller's lines read
#                                  from EXTRA_FILE

# The main.cf settings every instance shares. A caller adds its own (its
# host name, its recipient restrictions, its next hop, its logs); Postfix
# keeps the last value of a parameter, but warns about each one given
# twice, so the shared ones are those no caller changes.
pf_main_cf() { # conf
    cat <<EOF
# A private Postfix instance on loopback (tests/postfix-instance.sh).
compatibility_level = 3.6
config_directory = $1
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydomain = test
myorigin = \$myhostname
mydestination =
relay_domains =
local_recipient_maps =
relay_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_data_restrictions =
# No DNS anywhere: clients are not looked up, next hops are addresses.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_tls_security_level =
# smtpd must not slow down when the queue manager is busy (it sleeps up
# to 1 s per message otherwise, and for ever for held mail).
in_flow_delay = 0
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_milters =
non_smtpd_milters =
header_checks =
body_checks =
biff = no
EOF
}

pf_master_cf() { # port
    cat <<EOF
# service type  private unpriv  chroot  wakeup  maxproc command
127.0.0.1:$1 inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
# TLS's random seed and session cache: without it an SMTP client that
# must use TLS (smtp_tls_security_level = encrypt) defers everything
# ("TLS is required, but our TLS engine is unavailable"). Started only
# when a TLS user asks.
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
EOF
}

pf_write_config() { # conf port < the caller's main.cf lines
    mkdir -p "$1" || return 1
    { pf_main_cf "$1" && cat; } >"$1/main.cf" || return 1
    pf_master_cf "$2" >"$1/master.cf"
}

pf_prepare_dirs() { # queue data
    mkdir -p "$1" "$2" && chown postfix "$2" && chmod 700 "$2"
}

pf_start() { # conf outdir
    if ! timeout 60 postfix -c "$1" check >"$2/check.log" 2>&1; then
        cat "$2/check.log" >&2
        echo "postfix -c $1 check failed" >&2
        return 1
    fi
    # postfix prints its start errors only on a terminal: give it one.
    if ! timeout 60 script -qec "postfix -c '$1' start" /dev/null >"$2/start.log" 2>&1; then
        cat "$2/start.log" >&2
        echo "postfix -c $1 start failed" >&2
        return 1
    fi
}

pf_master_pid() { # queue
    local pid
    [ -r "$1/pid/master.pid" ] || return 1
    pid=$(tr -d ' \n' <"$1/pid/master.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

pf_instance_pids() { # conf
    local f pid
    for f in /proc/[0-9]*/environ; do
        pid=${f#/proc/}
        pid=${pid%/environ}
        if { tr '\0' '\n' <"$f"; } 2>/dev/null | grep -qxF "MAIL_CONFIG=$1"; then
            printf '%s ' "$pid"
        fi
    done
}

pf_stop() { # conf queue
    local pid left=
    pid=$(pf_master_pid "$2") || pid=
    timeout 60 postfix -c "$1" stop >/dev/null 2>&1 || true
    if [ -n "$pid" ]; then
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "Postfix master $pid still running after 'postfix stop'; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    # Workers exit on their own once the master is gone; make sure of it.
    # Only processes of this instance: their environment names its config.
    for _ in $(seq 50); do
        left=$(pf_instance_pids "$1")
        [ -n "$left" ] || break
        sleep 0.1
    done
    if [ -n "$left" ]; then
        echo "killing leftover Postfix processes of this instance: $left" >&2
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
    config)
        [ $# -ge 3 ] || { echo "usage: $0 config CONF PORT [EXTRA_FILE]" >&2; exit 2; }
        pf_write_config "$2" "$3" <"${4:-/dev/null}"
        ;;
    *)
        echo "usage: $0 config CONF PORT [EXTRA_FILE]  (or source it: see its head)" >&2
        exit 2
        ;;
    esac
fi
