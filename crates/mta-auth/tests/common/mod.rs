//! What the peer tests share: finding the real tools, and running them.

use std::path::Path;
use std::process::{Command, Output};

/// True, with a note on stderr, when `program` is missing and the test
/// should return at once. In CI (`CI` set) a missing tool fails the test
/// instead: `tests/run` installs it (`tests/install-peers.sh`).
pub fn skip_without(test: &str, program: &str, package: &str) -> bool {
    let found = if program.contains('/') {
        Path::new(program).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).exists()))
    };
    if found {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is missing in CI: tests/install-peers.sh installs it (Debian package {package})"
    );
    eprintln!(
        "skipped {test}: {program} is not installed (Debian package {package}; tests/install-peers.sh installs it)"
    );
    true
}

/// Runs a tool and returns its output, failing the test if it cannot run.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// The first line a tool printed, after checking it succeeded.
pub fn first_line(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .next()
        .expect("a line of output")
        .to_owned()
}
