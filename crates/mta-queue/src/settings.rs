//! What the attempts need from the configuration, as the queue keeps it.

use std::path::PathBuf;
use std::time::Duration;

use mta_config::QueueMode;

use crate::schedule::Schedule;

/// The settings one generation of runners works with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub hostname: String,
    /// Where reports about failed `<>` mail go: an address, or the bare
    /// local `postmaster`.
    pub postmaster: String,
    /// The address our DSNs come from (`From:`).
    pub dsn_from: String,
    pub port: u16,
    pub maildir_root: PathBuf,
    pub schedule: Schedule,
    pub delay_notice_after: Option<Duration>,
    pub mode: QueueMode,
    pub poll_interval: Duration,
}
