//! The state one generation of runners shares: the spool, the delivery
//! machinery, the three runners, the counters, and the stop switches.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use mta_deliver::{Client, Dane, MtaSts, Resolver};
use mta_envelope::QueueId;
use mta_spool::{IndexEntry, QueueName, SpoolError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::job::{Claim, Job};
use crate::log::DeliveryLog;
use crate::route::Router;
use crate::runner::Runner;
use crate::settings::Settings;
use crate::steering::Steering;
use crate::store::Store;

pub(crate) struct Inner {
    /// The spool, blocking calls on the blocking pool.
    pub store: Store,
    pub settings: Settings,
    pub router: Router,
    pub client: Client,
    pub resolver: Resolver,
    /// MTA-STS policy lookups for MX delivery; None when disabled.
    pub sts: Option<MtaSts>,
    /// DANE's TLSA lookups for MX delivery; None when disabled.
    pub dane: Option<Dane>,
    /// The MTA-STS policies known, shared with the next generation.
    pub policies: mta_deliver::PolicyCache,
    pub log: DeliveryLog,
    /// Shared with the successor a graceful restart starts, so neither
    /// takes a message the other is attempting: claims, operator actions
    /// waiting for an attempt, paused domains.
    pub steering: Arc<Steering>,
    pub ram: Runner,
    pub bounce: Runner,
    pub disk: Runner,
    /// New work for the disk runner (a message was deferred).
    pub disk_wake: Notify,
    /// No new attempts start once cancelled.
    pub stopping: CancellationToken,
    /// Attempts still running are cut short once cancelled.
    pub abort: CancellationToken,
    /// Every attempt and runner loop.
    pub tasks: TaskTracker,
    /// DSNs queued since start.
    pub dsns: AtomicU64,
    /// DSNs dropped since start: the postmaster's own copy failed, so no
    /// one is left to tell.
    pub dsns_dropped: AtomicU64,
    /// Volatile messages written to the disk queue because they could not
    /// be attempted (a stop).
    pub spilled: AtomicU64,
}

impl Inner {
    pub fn runner(&self, queue: QueueName) -> &Runner {
        match queue {
            QueueName::Ram => &self.ram,
            QueueName::Bounce => &self.bounce,
            // Held messages have no runner; the disk runner takes them
            // once released.
            QueueName::Disk | QueueName::Held => &self.disk,
        }
    }

    /// Claims `id` for one attempt; None when another attempt has it.
    pub fn claim(self: &Arc<Self>, id: QueueId) -> Option<Claim> {
        Claim::take(self.clone(), id)
    }

    /// Queues a job for the bounce runner.
    pub fn submit_bounce(&self, job: Job) {
        if let Err(unsent) = self.bounce.lineup.push(job) {
            // The runner has stopped: the DSN is on disk and the disk
            // runner will send it after the next start.
            drop(unsent);
        }
    }

    /// Writes a volatile message to the spool with `entry` as its state (the
    /// disk or the held queue); it is then no longer only in memory.
    pub async fn store_on_disk(&self, job: &Job, entry: &IndexEntry) -> Result<(), SpoolError> {
        // Stored in the disk queue first, then moved (to the held queue, say)
        // by the update; the claim keeps the disk runner off it meanwhile.
        self.store
            .store_in(QueueName::Disk, job.id, &job.envelope, job.content.clone())
            .await?;
        self.steering.forget(job.id);
        self.store.update(job.id, entry)
    }
}
