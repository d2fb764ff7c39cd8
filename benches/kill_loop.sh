#!/usr/bin/env bash
# The kill loop, long: SIGKILLs mtad 200 times at random moments under load
# and checks that every acknowledged message is delivered at least once.
# It runs the integration test tests/integration/kill_loop.rs (20 rounds in
# CI) with more rounds; see benches/README.md.
#
#   benches/kill_loop.sh                      # 200 rounds, a new seed
#   KILL_LOOP_ROUNDS=50 benches/kill_loop.sh
#   KILL_LOOP_SEED=123456 benches/kill_loop.sh   # replay a failed run's choices
#
# Needs no root and no peer: the sink is the test kit's, on 127.0.0.1.
# The last line of output is the summary (messages acknowledged, delivered,
# duplicates, time); the exit status is the test's.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${KILL_LOOP_ROUNDS:-200}
export MTA_KILL_LOOP_ROUNDS=$rounds
if [[ -n ${KILL_LOOP_SEED:-} ]]; then
    export MTA_KILL_LOOP_SEED=$KILL_LOOP_SEED
fi

# The test starts target/debug/mtad itself.
cargo build --workspace --bins

log=$(mktemp -t kill-loop.XXXXXX)
trap 'rm -f "$log"' EXIT
began=$(date +%s)
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p mta-tests --no-capture \
        -E 'test(=kill_loop::kill_loop_loses_no_acknowledged_message)' 2>&1 | tee "$log" || status=$?
else
    cargo test -p mta-tests --test integration -- --exact \
        kill_loop::kill_loop_loses_no_acknowledged_message --nocapture 2>&1 | tee "$log" || status=$?
fi
echo
echo "kill_loop.sh: $rounds rounds, $(($(date +%s) - began)) s with the build, exit $status"
grep -E '^kill loop: [0-9]+ kills' "$log" || echo "kill_loop.sh: no summary: the test failed, see above"
exit "$status"
