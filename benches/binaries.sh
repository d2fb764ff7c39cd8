# The release binaries every benchmark script runs; sourced (by
# benches/compare.sh and benches/mtad-bench.sh), not run. `die` and `log`
# are the caller's.

# Builds mtad, mta-init and the load tools (mta-loadgen, mta-seed) in
# release mode unless $1 is set (the script's *_NO_BUILD), and sets MTAD,
# MTA_INIT, LOADGEN and SEED to them; dies when one is missing. Run from
# the checkout's top.
release_binaries() { # no-build
    local target b
    if [ -z "$1" ]; then
        log "building release binaries"
        cargo build --release -p mtad -p mta-init -p mta-bench >&2
    fi
    target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    target=${target:-$PWD/target}
    MTAD=$target/release/mtad
    MTA_INIT=$target/release/mta-init
    LOADGEN=$target/release/mta-loadgen
    SEED=$target/release/mta-seed
    for b in "$MTAD" "$MTA_INIT" "$LOADGEN" "$SEED"; do
        [ -x "$b" ] || die "$b missing"
    done
}
