//! The exit statuses of `sysexits.h`, which callers of `sendmail` read
//! (cron logs them; PHP's `mail()` returns false on any but 0).

use std::process::ExitCode;

/// An exit status of `sysexits.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `EX_OK` (0): handed to mtad, or safe in the drop directory.
    Ok,
    /// `EX_USAGE` (64): a bad option, or no recipient at all.
    Usage,
    /// `EX_DATAERR` (65): the message or an address was refused as
    /// malformed, or the message is too big.
    DataErr,
    /// `EX_NOUSER` (67): a recipient was refused as unknown.
    NoUser,
    /// `EX_UNAVAILABLE` (69): the server refused the message for good
    /// for another reason.
    Unavailable,
    /// `EX_OSERR` (71): the system failed us (no user database entry...).
    OsErr,
    /// `EX_CANTCREAT` (73): the drop file could not be created.
    CantCreat,
    /// `EX_IOERR` (74): standard input could not be read.
    IoErr,
    /// `EX_TEMPFAIL` (75): not handed over and not dropped; try again.
    TempFail,
}

impl Exit {
    /// The number.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Usage => 64,
            Exit::DataErr => 65,
            Exit::NoUser => 67,
            Exit::Unavailable => 69,
            Exit::OsErr => 71,
            Exit::CantCreat => 73,
            Exit::IoErr => 74,
            Exit::TempFail => 75,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}
