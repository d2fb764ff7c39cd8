//! Standard output that a reader going away cannot crash: this crate's
//! `println!`, `print!` and `eprintln!` are the ones defined here.
//!
//! Rust starts programs with SIGPIPE ignored, so a write to a pipe whose
//! reader is gone (`mta-init status | head -1`) fails with EPIPE, and
//! `println!` panics on that: exit 101 and a backtrace. Here, once the
//! reader is gone, the rest of the output is dropped and the command
//! carries on to its end (a stop still waits for the daemon to exit) and
//! exits with its own code, as ripgrep does. Restoring SIGPIPE's default
//! instead would kill mta-init also when the daemon closes the control
//! socket early, without a word on what happened.
//!
//! Any other write error (a full disk under `> file`) is reported once
//! on standard error and makes a successful command exit 1.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};

const OPEN: u8 = 0;
const READER_GONE: u8 = 1;
const FAILED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(OPEN);

// These shadow the standard macros in the whole crate (`#[macro_use]` on
// this module, declared first in main.rs), so no `println!` here can
// panic on a closed pipe, including ones added later.

/// `println!` that stops printing, quietly, when the reader is gone.
macro_rules! println {
    () => {
        $crate::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!`, likewise.
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::print(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics (standard error may be a closed pipe
/// too, as in `2>&1 | head`).
macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::output::eprint(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to standard output unless it has failed before.
pub fn print(args: fmt::Arguments) {
    if STATE.load(Ordering::Relaxed) != OPEN {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        failed(&e);
    }
}

/// Notes a failed write to standard output: quietly when the reader is
/// gone, else once on standard error.
pub fn failed(e: &io::Error) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        let _ = STATE.compare_exchange(OPEN, READER_GONE, Ordering::Relaxed, Ordering::Relaxed);
    } else if STATE.swap(FAILED, Ordering::Relaxed) != FAILED {
        eprint(format_args!(
            "mta-init: cannot write to standard output: {e}\n"
        ));
    }
}

/// Writes to standard error, ignoring failure: there is nowhere left to
/// report it.
pub fn eprint(args: fmt::Arguments) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// The exit code, once what is buffered is written: 1 instead of success
/// when output was lost to anything but a reader going away.
pub fn finish(code: ExitCode) -> ExitCode {
    if let Err(e) = io::stdout().lock().flush() {
        failed(&e);
    }
    if STATE.load(Ordering::Relaxed) == FAILED && code == ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    code
}
