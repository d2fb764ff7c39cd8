//! What every session, the control socket and the HTTP server share: the
//! [`Context`]. It holds the parts (spool, queue runners, counters,
//! service switches) and the current [`Settings`]; it starts and stops
//! nothing itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mta_config::Role;
use mta_queue::Queue;
use mta_smtp::Admission;
use mta_spool::{OpenReport, Spool};
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::auth::Auth;
use crate::client_limits::ClientLimits;
use crate::generations::Generations;
use crate::logfile::LogFile;
use crate::logging::LogLevel;
use crate::service_table::Services;
use crate::settings::Settings;
use crate::shutdown::Order;
use crate::sockets::Sockets;
use crate::stats::Stats;

/// What every session, the control socket and the HTTP server share.
pub struct Context {
    pub admission: Arc<Admission>,
    pub spool: Spool,
    pub spool_report: OpenReport,
    pub stats: Stats,
    /// Sessions per client, per SMTP role in [`Role::ALL`] order, kept
    /// across a graceful restart.
    pub client_limits: [Arc<ClientLimits>; 3],
    /// SMTP AUTH: password checks, failure limits, message rates.
    pub auth: Arc<Auth>,
    /// The SMTP listening addresses, per role in [`Role::ALL`] order.
    pub listen: [Vec<SocketAddr>; 3],
    pub http_listen: Vec<SocketAddr>,
    pub control_path: PathBuf,
    pub config_path: Option<PathBuf>,
    pub log_file: Option<LogFile>,
    pub log_level: LogLevel,
    /// Names this process image (a restart keeps the pid).
    pub instance: String,
    pub sockets: Sockets,
    pub services: Services,
    /// The current queue runners and the ones still draining after a
    /// graceful restart.
    pub generations: Arc<Generations>,
    pub reloads: AtomicU64,
    /// Stops and restarts asked for by the control socket.
    pub orders: mpsc::UnboundedSender<Order>,
    /// Read with [`Context::settings`], swapped by
    /// [`Context::replace_settings`].
    pub settings: RwLock<Arc<Settings>>,
}

impl Context {
    /// A role's listening addresses (none: the role is off).
    pub fn listen(&self, role: Role) -> &[SocketAddr] {
        &self.listen[role.index()]
    }

    /// A role's per-client counts.
    pub fn client_limits(&self, role: Role) -> &Arc<ClientLimits> {
        &self.client_limits[role.index()]
    }

    /// The settings new work uses.
    pub fn settings(&self) -> Arc<Settings> {
        self.settings.read().clone()
    }

    /// Installs the settings of a graceful restart.
    pub fn replace_settings(&self, settings: Settings) {
        *self.settings.write() = Arc::new(settings);
    }

    /// The queue runners new work goes to.
    pub fn queue(&self) -> Queue {
        self.generations.current()
    }

    /// Counts a graceful restart, for status.
    pub fn count_reload(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
    }

    /// Why the spool is degraded, if it is: its index is out of service
    /// (a write to it failed; it is reopened once space is back), or free
    /// space is below `spool.min_free_space`. Either way new mail gets
    /// `452 4.3.1`.
    pub fn spool_trouble(&self) -> Option<String> {
        if let Some(failed) = self.spool.index_health().failed {
            let secs = mta_envelope::unix_now().saturating_sub(failed.since_unix_ms / 1000);
            return Some(format!(
                "queue index out of service for {secs} s ({}): new mail gets 452 4.3.1 and the disk queue waits; it is reopened {}",
                failed.cause,
                if failed.no_space {
                    "once space is back"
                } else {
                    "at the next free-space check"
                }
            ));
        }
        if !self.admission.storage_ok() {
            return Some("free space below spool.min_free_space: new mail gets 452 4.3.1".into());
        }
        None
    }
}
