//! How mta-init ends: its exit codes (LSB's for the init verbs, see
//! docs/operations.md) and the one way a failure is printed.

use std::process::ExitCode;

use crate::process;

/// Exit code for a bad configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// Prints the error; exits 4 when this user may not see or control the
/// daemon, else 1.
pub fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("mta-init: {e:#}");
    let not_permitted = e.chain().any(|cause| {
        cause.is::<process::NotPermitted>()
            || matches!(
                cause.downcast_ref::<process::Call>(),
                Some(process::Call::NotPermitted(_))
            )
    });
    if not_permitted {
        ExitCode::from(process::EXIT_NOT_PERMITTED)
    } else {
        ExitCode::FAILURE
    }
}
