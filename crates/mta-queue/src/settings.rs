//! What the queue is told: [`QueueSettings`], built by the daemon from
//! its configuration (mta-queue reads no configuration file and knows no
//! configuration types), and the part every attempt needs, [`Settings`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mta_deliver::{ClientConfig, ResolverConfig};

use crate::schedule::Schedule;

/// Everything one generation of runners is started with.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// What each attempt needs.
    pub attempts: Settings,
    /// The delivery log file.
    pub delivery_log: PathBuf,
    /// The outbound SMTP client.
    pub client: ClientConfig,
    /// The DNS resolver.
    pub resolver: ResolverConfig,
    /// Our domains: delivered to Maildir.
    pub local_domains: Vec<String>,
    /// Fixed routes: domain to `host[:port]`.
    pub routes: BTreeMap<String, String>,
    /// Attempts at once, per runner.
    pub ram_concurrency: usize,
    /// Attempts at once of DSNs.
    pub bounce_concurrency: usize,
    /// Attempts at once from the disk queue.
    pub disk_concurrency: usize,
}

/// What the attempts need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Our host name: the DSNs' Reporting-MTA and local origin.
    pub hostname: String,
    /// Where reports about failed `<>` mail go: an address, or the bare
    /// local `postmaster`.
    pub postmaster: String,
    /// The address our DSNs come from (`From:`).
    pub dsn_from: String,
    /// The SMTP port of MX hosts.
    pub port: u16,
    /// Where local mailboxes are.
    pub maildir_root: PathBuf,
    /// The retry schedule and lifetime.
    pub schedule: Schedule,
    /// When a delay notice is owed, after arrival; None: never.
    pub delay_notice_after: Option<Duration>,
    /// Volatile mode: an accepted message is attempted from memory before
    /// it is stored (it is stored only if that attempt defers).
    pub volatile: bool,
    /// How often the disk runner looks at the index at most.
    pub poll_interval: Duration,
    /// DKIM keys: our DSNs are signed when one is for `dsn_from`'s domain.
    pub dkim: Arc<mta_dkim::Signers>,
}
