//! A time budget for the fuzz targets: property tests (proptest) that run
//! for a given time rather than a given number of cases.
//!
//! The same targets serve CI, where all of them together should take
//! about 30 seconds, and a long search from `tests/fuzz.sh`, which gives
//! each one minutes or hours. proptest counts cases; on a loaded machine a
//! case count takes a time nobody can predict, so [`check`] runs batches
//! of cases until the target's budget is spent (`MTA_FUZZ_SECS`, 3 s by
//! default). A failure is shrunk to a minimal input, reported with it, and
//! its seed is saved in the target's regressions file, which the next run
//! replays first (commit the file; keep the minimal input as an explicit
//! test too, since a seed only replays while the strategy is unchanged).

use std::fmt::Debug;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{
    Config, FileFailurePersistence, TestCaseResult, TestError, TestRunner,
};

/// Seconds each target runs when `MTA_FUZZ_SECS` is not set.
pub const DEFAULT_SECS: f64 = 3.0;

/// Cases between two looks at the clock.
const BATCH: u32 = 32;

/// The time each target may take: `MTA_FUZZ_SECS` (fractions allowed).
pub fn budget() -> Duration {
    match std::env::var("MTA_FUZZ_SECS") {
        Ok(value) => {
            let secs: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("MTA_FUZZ_SECS={value:?} is not a number of seconds"));
            Duration::from_secs_f64(secs.max(0.0))
        }
        Err(_) => Duration::from_secs_f64(DEFAULT_SECS),
    }
}

/// The regressions file of a target: `proptest-regressions/<name>.txt`
/// in the calling crate.
#[macro_export]
macro_rules! regressions {
    ($name:literal) => {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/",
            $name,
            ".txt"
        )
    };
}

/// Runs `test` on values drawn from `strategy` until the budget is spent
/// (at least one batch of cases), after replaying the seeds saved in
/// `regressions`. Panics with the minimal failing input when a case fails
/// or panics.
pub fn check<S>(regressions: &'static str, strategy: S, test: impl Fn(S::Value) -> TestCaseResult)
where
    S: Strategy,
    S::Value: Debug,
{
    let budget = budget();
    let began = Instant::now();
    let config = Config {
        cases: BATCH,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // A failure must be reported in reasonable time, even when its
        // input is big.
        max_shrink_time: 60_000,
        ..Config::default()
    };
    // A runner counts its successes for good, so each batch gets a new
    // one, with a generator derived from the first (PROPTEST_RNG_SEED
    // fixes the whole sequence).
    let mut seeds = TestRunner::new(config.clone());
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new_with_rng(config.clone(), seeds.new_rng());
        match runner.run(&strategy, &test) {
            Ok(()) => cases += u64::from(BATCH),
            Err(TestError::Fail(why, input)) => {
                panic!("{why}\nminimal failing input: {input:#?}\n(seed saved in {regressions})")
            }
            Err(TestError::Abort(why)) => panic!("aborted: {why}"),
        }
        if began.elapsed() >= budget {
            break;
        }
    }
    eprintln!(
        "fuzz: {cases} cases in {:.1} s ({})",
        began.elapsed().as_secs_f64(),
        regressions.rsplit('/').next().unwrap_or(regressions)
    );
}
