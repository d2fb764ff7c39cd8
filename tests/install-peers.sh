#!/usr/bin/env bash
# Installs the real SMTP peers the tests and benchmarks use: swaks, and
# Debian's postfix package (smtp-source, smtp-sink, and Postfix itself for
# private instances on loopback); and python3, whose email package reads
# back the DSNs mtad writes (tests/integration/parse_dsn.py); for
# mta-auth, Dovecot (dovecot-core: a private instance's auth-client socket,
# and `doveadm pw` to make and check password hashes) and mkpasswd
# (Debian's whois package: yescrypt and bcrypt crypt strings); and Cyrus
# SASL's client modules (libsasl2-modules: PLAIN and LOGIN), without which
# a private Postfix cannot authenticate to mtad's submission port as a
# client (tests/integration/submission_peers.rs); ca-certificates, the
# system trust store of verified outbound TLS; and dkimpy (python3-dkim),
# which verifies the DKIM signatures mtad makes independently of any Rust
# crate; and Unbound, a recursive resolver for DANE's tests of a real
# delegation. Idempotent and quick when all is there.
#
# No system-wide Postfix is configured or started: debconf is preseeded to
# "No configuration", and the machine's policy-rc.d refuses service starts.
set -euo pipefail

missing=()
command -v swaks >/dev/null 2>&1 || missing+=(swaks libnet-ssleay-perl libio-socket-ssl-perl)
[ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ -x /usr/sbin/dovecot ] && [ -x /usr/bin/doveadm ] || missing+=(dovecot-core)
command -v mkpasswd >/dev/null 2>&1 || missing+=(whois)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# benches/submission.sh reads the load generator's JSON with it.
command -v jq >/dev/null 2>&1 || missing+=(jq)
# The system trust store that `required` TLS verifies against (mtad reads
# /etc/ssl/certs/ca-certificates.crt); only recommended by Postfix's and
# OpenSSL's packages, so --no-install-recommends leaves it out.
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# Unbound, the recursive resolver between mtad and the test DNS servers
# where a test needs a real delegation (mta_testkit::unbound).
[ -x /usr/sbin/unbound ] || missing+=(unbound)
# dkimpy, for the system interpreter (tests/integration/dkim_verify.py).
/usr/bin/python3 -c 'import dkim' >/dev/null 2>&1 || missing+=(python3-dkim)
# Only recommended by libsasl2-2, so --no-install-recommends leaves it out.
dpkg-query -W -f='${Status}' libsasl2-modules 2>/dev/null | grep -q 'ok installed' ||
    missing+=(libsasl2-modules)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-peers: missing ${missing[*]}; install them as root with apt-get" >&2
    [ -z "${CI:-}" ] || exit 1
    exit 0
fi
echo "install-peers: installing ${missing[*]}"
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# A package's post-install must not have left a Postfix listening, nor a
# system Dovecot running (the tests start private instances only).
if ss -ltn 2>/dev/null | grep -q ':25 '; then
    echo "install-peers: something listens on port 25 after install; stop it" >&2
    exit 1
fi
if [ -e /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
    echo "install-peers: a system Dovecot runs after install; stop it" >&2
    exit 1
fi
