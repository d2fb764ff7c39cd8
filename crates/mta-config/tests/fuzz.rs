//! Fuzz targets for the configuration parser: `Config::parse` and then
//! `Config::check_source` on arbitrary text and on damaged copies of
//! `contrib/mta.toml` (keys dropped, doubled, uncommented, given strange
//! values; tables added).
//!
//! Properties: neither panics, whatever the text; a syntax error names
//! the file; every meaning problem names the file and a key. mtad and
//! mta-init run exactly these two on the operator's file, so a panic here
//! is a daemon that dies on a typo instead of saying where it is.
//! Budget: `MTA_FUZZ_SECS` per target (see `mta_testkit::fuzz`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mta_config::{Config, ConfigError};
use mta_testkit::{fuzz, regressions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

const EXAMPLE: &str = include_str!("../../../contrib/mta.toml");

const PATH: &str = "/etc/mta/fuzz.toml";

/// Texts that parsed, and that then passed the meaning checks: the
/// damaged copies must reach the checks often, not only the parser.
static PARSED: AtomicU64 = AtomicU64::new(0);
static VALID: AtomicU64 = AtomicU64::new(0);

/// Parses and checks `text` the way `Config::load` does.
fn parse_and_check(text: &str) -> TestCaseResult {
    let path = Path::new(PATH);
    match Config::parse(text, path) {
        Ok(config) => match config.check_source(Some(path), Some(text)) {
            Ok(()) => {
                PARSED.fetch_add(1, Ordering::Relaxed);
                VALID.fetch_add(1, Ordering::Relaxed);
            }
            Err(ConfigError::Meaning { problems }) => {
                PARSED.fetch_add(1, Ordering::Relaxed);
                prop_assert!(!problems.is_empty());
                for p in &problems {
                    prop_assert!(p.starts_with(PATH), "{}", p);
                }
            }
            Err(e) => return Err(TestCaseError::fail(format!("check gave {e:?}"))),
        },
        Err(ConfigError::Syntax { path: p, message }) => {
            prop_assert_eq!(p, path);
            prop_assert!(!message.is_empty());
        }
        Err(e) => return Err(TestCaseError::fail(format!("parse gave {e:?}"))),
    }
    Ok(())
}

/// Values of every kind the file uses, and the edges of each.
fn value() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "65535",
        "65536",
        "4294967296",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "0.0",
        "-0.0",
        "1.5",
        "1e308",
        "-1e308",
        "nan",
        "inf",
        "-inf",
        "true",
        "false",
        "1979-05-27T07:32:00Z",
        "07:32:00",
        "\"\"",
        "\" \"",
        "\"x\"",
        "\"ü\"",
        "\"a\\u0000b\"",
        "\"a\\nb\"",
        "\"0s\"",
        "\"0ms\"",
        "\"1ns\"",
        "\"1s\"",
        "\"5d\"",
        "\"1h 30m\"",
        "\"18446744073709551615s\"",
        "\"584942417355y\"",
        "\"99999999999999999999h\"",
        "\"-1s\"",
        "\"1 fortnight\"",
        "\"0\"",
        "\"10MiB\"",
        "\"1GiB\"",
        "\"18446744073709551615\"",
        "\"17179869184GiB\"",
        "\"10 MB\"",
        "\"1TiB\"",
        "\"127.0.0.1:0\"",
        "\"[::1]:25\"",
        "\"0.0.0.0:25\"",
        "\"127.0.0.1\"",
        "\"localhost:25\"",
        "\"127.0.0.1:99999\"",
        "[]",
        "[\"127.0.0.1:0\"]",
        "[\"0.0.0.0:25\"]",
        "[\"bad\"]",
        "[1, 2]",
        "[\"127.0.0.0/8\"]",
        "[\"127.0.0.1/33\"]",
        "[\"::1/129\"]",
        "[\"\"]",
        "[\"local.test\", \"\"]",
        "[\"a@b\"]",
        "[[]]",
        "{}",
        "{ a = 1 }",
        "\"durable\"",
        "\"volatile\"",
        "\"none\"",
        "\"required\"",
        "\"opportunistic\"",
        "\"mx:host.test\"",
        "\"*.test\"",
        "\"/nonexistent/file.pem\"",
        "\"/\"",
        "\"0123456789abcdef0123\"",
        "\"short\"",
        "\"has space in token!!\"",
    ])
    .prop_map(str::to_owned);
    prop_oneof![
        6 => fixed,
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => "\"[ -~]{0,20}\"",
        1 => any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

/// A line that may not belong: a key of some table, a table header,
/// or noise.
fn stray_line() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "hostname",
        "time_slice",
        "queue_dir",
        "pid_file",
        "listen",
        "max_connections",
        "idle_timeout",
        "relay_networks",
        "local_domains",
        "certificate",
        "key",
        "min_free_space",
        "max_batch",
        "writers",
        "timeout",
        "level",
        "mode",
        "retry_base",
        "retry_jitter",
        "lifetime",
        "poll_interval",
        "port",
        "name_servers",
        "tls",
        "max_connections",
        "routes",
        "token",
        "root",
        "unknown",
        "\"quoted.key\"",
        "a.b.c",
    ]);
    let table = prop::sample::select(vec![
        "[smtp]",
        "[tls]",
        "[spool]",
        "[shutdown]",
        "[log]",
        "[queue]",
        "[delivery]",
        "[delivery.timeouts]",
        "[delivery.routes]",
        "[delivery.tls_policy]",
        "[delivery.throttle.\"example.com\"]",
        "[delivery.throttle.\"*.example.com\"]",
        "[delivery.throttle.\"mx:mx1.example.org\"]",
        "[delivery.throttle.\"bad pattern\"]",
        "[delivery.throttle.\"\"]",
        "[http]",
        "[maildir]",
        "[[smtp]]",
        "[nope]",
        "[smtp.listen]",
    ]);
    prop_oneof![
        4 => (key, value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => table.prop_map(str::to_owned),
        1 => "[ -~]{0,40}",
    ]
}

/// Another value for a key, of the same kind as the one it replaces (so
/// that the text still parses and the meaning checks run), or of any
/// kind.
#[derive(Debug, Clone)]
struct NewValue {
    string: String,
    number: String,
    array: String,
    any: String,
    same_kind: bool,
}

fn new_value() -> impl Strategy<Value = NewValue> {
    let string = prop_oneof![
        3 => prop::sample::select(vec![
            "", " ", "x", "0", "0s", "0ms", "1ns", "1s", "100ms", "5d", "1h 30m", "-1s",
            "18446744073709551615s", "584942417355y", "99999999999999999999h",
            "10MiB", "1GiB", "18446744073709551615", "17179869184GiB", "16383PiB", "1TiB",
            "127.0.0.1:0", "[::1]:25", "0.0.0.0:25", "localhost:25", "127.0.0.1:99999",
            "durable", "volatile", "none", "required", "opportunistic", "debug", "mtad=trace,",
            "/", "/nonexistent/file.pem", "relative/dir", "a@b", "ü", "-", ".", "..",
            "0123456789abcdef0123", "short", "has space in token!!",
        ])
        .prop_map(|s| format!("{s:?}")),
        1 => any::<String>().prop_map(|s| format!("{s:?}")),
    ];
    let number = prop_oneof![
        3 => prop::sample::select(vec![
            "0", "1", "-1", "2", "65535", "65536", "4294967295", "4294967296",
            "9223372036854775807", "-9223372036854775808", "0.0", "-0.0", "1.5", "1e308",
            "nan", "inf", "-inf", "0.000001",
        ])
        .prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
    ];
    let array = prop::sample::select(vec![
        "[]",
        "[\"127.0.0.1:0\"]",
        "[\"0.0.0.0:25\"]",
        "[\"[::]:25\", \"127.0.0.1:0\"]",
        "[\"bad\"]",
        "[1, 2]",
        "[\"127.0.0.0/8\"]",
        "[\"0.0.0.0/0\"]",
        "[\"127.0.0.1/33\"]",
        "[\"::1/129\"]",
        "[\"\"]",
        "[\"local.test\", \"\"]",
        "[\"a@b\"]",
        "[\"a b\"]",
        "[\"127.0.0.1:9\"]",
        "[\"ü.test\"]",
        "[[]]",
    ])
    .prop_map(str::to_owned);
    (string, number, array, value(), prop::bool::weighted(0.8)).prop_map(
        |(string, number, array, any, same_kind)| NewValue {
            string,
            number,
            array,
            any,
            same_kind,
        },
    )
}

/// What happens to one line of the example.
#[derive(Debug, Clone)]
enum Edit {
    Drop,
    Double,
    Uncomment,
    NewValue(NewValue),
    Insert(String),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        1 => Just(Edit::Drop),
        1 => Just(Edit::Double),
        2 => Just(Edit::Uncomment),
        12 => new_value().prop_map(Edit::NewValue),
        1 => stray_line().prop_map(Edit::Insert),
    ]
}

fn replace_value(line: &str, v: &NewValue) -> String {
    let Some((key, old)) = line.split_once(" = ") else {
        return line.to_owned();
    };
    let value = if !v.same_kind {
        &v.any
    } else if old.starts_with('"') {
        &v.string
    } else if old.starts_with('[') {
        &v.array
    } else if old.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        &v.number
    } else {
        &v.any
    };
    format!("{key} = {value}")
}

/// `key = value`, or `# key = value`.
fn is_key(line: &str) -> bool {
    line.trim_start_matches(['#', ' '])
        .split_once(" = ")
        .is_some_and(|(k, _)| !k.contains(' '))
}

/// The example with `edits` (by line number) applied.
fn apply(edits: &BTreeMap<usize, Edit>) -> String {
    let mut out = String::new();
    for (i, line) in EXAMPLE.lines().enumerate() {
        match edits.get(&i) {
            None => out.push_str(line),
            Some(Edit::Drop) => continue,
            Some(Edit::Double) => out.push_str(&format!("{line}\n{line}")),
            // Only a commented-out key is uncommented, and takes a value;
            // prose stays a comment.
            Some(Edit::Uncomment) if is_key(line) => {
                out.push_str(line.trim_start_matches(['#', ' ']))
            }
            Some(Edit::NewValue(v)) if is_key(line) => {
                out.push_str(&replace_value(line.trim_start_matches(['#', ' ']), v))
            }
            Some(Edit::Uncomment | Edit::NewValue(_)) => out.push_str(line),
            Some(Edit::Insert(extra)) => out.push_str(&format!("{extra}\n{line}")),
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_example_itself_is_valid() {
    let config = Config::parse(EXAMPLE, Path::new(PATH)).expect("contrib/mta.toml parses");
    config
        .check_source(Some(Path::new(PATH)), Some(EXAMPLE))
        .expect("contrib/mta.toml checks");
}

#[test]
fn config_on_arbitrary_text_never_panics() {
    let text = prop_oneof![
        any::<String>(),
        "[\\[\\]a-z_.=\"' 0-9#\n{},:-]{0,300}",
        prop::collection::vec(stray_line(), 0..12).prop_map(|l| l.join("\n")),
    ];
    fuzz::check(regressions!("config_arbitrary"), text, |text| {
        parse_and_check(&text)
    });
}

#[test]
fn config_on_damaged_example_never_panics() {
    let lines = EXAMPLE.lines().count();
    fuzz::check(
        regressions!("config_damaged_example"),
        (
            prop::collection::btree_map(0..lines, edit(), 1..4),
            prop_oneof![
                3 => Just(Vec::new()),
                1 => prop::collection::vec(stray_line(), 1..3),
            ],
        ),
        |(edits, tail)| {
            let mut text = apply(&edits);
            for l in tail {
                text.push_str(&l);
                text.push('\n');
            }
            parse_and_check(&text)
        },
    );
    eprintln!(
        "config: {} texts parsed, {} of them valid",
        PARSED.load(Ordering::Relaxed),
        VALID.load(Ordering::Relaxed)
    );
}
