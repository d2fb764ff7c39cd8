#!/usr/bin/env bash
# The fuzz targets, run longer than in CI. Each target is a property test
# (proptest) that runs for MTA_FUZZ_SECS seconds (3 in CI, set here to
# FUZZ_SECS, 600 by default); see docs/ARCHITECTURE.md, "Tests".
#
#   tests/fuzz.sh                      # every target, 10 minutes each
#   FUZZ_SECS=3600 tests/fuzz.sh       # an hour each
#   tests/fuzz.sh session              # only targets whose name contains "session"
#
# The targets: Session::poll (mta-smtp tests/fuzz.rs), the DATA and BDAT
# decoders against a model (mta-smtp src/text/fuzz.rs), the spool file
# and index entry decoders (mta-spool src/fuzz.rs), the configuration
# parser and checks (mta-config tests/fuzz.rs). Targets run two at a time
# (FUZZ_JOBS), so the whole run takes about targets x FUZZ_SECS / 2.
#
# A failure prints the minimal input found and saves its seed in the
# crate's proptest-regressions/<target>.txt, replayed first by every later
# run, CI's included: commit that file, and keep the input as an explicit
# test next to the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

export MTA_FUZZ_SECS=${FUZZ_SECS:-600}
name=${1:-}
crates=(-p mta-smtp -p mta-spool -p mta-config)

if cargo nextest --version >/dev/null 2>&1; then
    filter="(binary(fuzz) | test(/^(text::)?fuzz::/)) & test(/${name}/)"
    exec cargo nextest run "${crates[@]}" --no-fail-fast \
        --test-threads "${FUZZ_JOBS:-2}" --success-output immediate -E "$filter"
else
    # Without nextest: the same targets (a name filter needs nextest).
    jobs=(--no-fail-fast -- --nocapture --test-threads "${FUZZ_JOBS:-2}")
    cargo test -p mta-smtp -p mta-config --test fuzz "${jobs[@]}"
    cargo test -p mta-smtp -p mta-spool --lib "${jobs[@]}" fuzz::
fi
