//! The queue runners: what happens to a message after 250.
//!
//! [`Queue`] owns three runners, each a qmail-send analogue with its own
//! concurrency limit, counters and pause switch:
//! - **ram**: the first attempt of every accepted message, from memory (the
//!   listener hands the content over; nothing is re-read from the spool);
//! - **bounce**: the first attempt of the DSNs this MTA makes;
//! - **disk**: everything else, read back from the spool when the index
//!   says it is due (`Spool::due`).
//!
//! The ram and bounce runners keep the jobs waiting for a slot (or for a
//! resume) in a line (`lineup.rs`) where an operator's hold or delete
//! reaches them: a waiting message is not in flight. In volatile mode
//! the messages held only in memory are registered with the state the
//! generations share (`steering.rs`) so that status, listings and
//! actions see them.
//!
//! A message's walk (`dispatch.rs`): one attempt (`attempt.rs`) routes
//! each pending recipient (`route.rs`: Maildir, a relay, or MX) and
//! delivers; `settle.rs` decides, without I/O, what the outcomes mean:
//! delivered and failed recipients are done; deferred ones wait for the
//! next attempt on the quadratic schedule (`schedule.rs`) until the
//! lifetime runs out; failures (and, when asked, delays and successes)
//! owe RFC 3464 DSNs (`dsn.rs`). `commit.rs` carries the decision out:
//! the delivery log (`log.rs`), the DSNs into the bounce runner, then the
//! message's new state in the spool.
//!
//! Invariant: a message is claimed (in the in-flight set) by at most one
//! attempt at a time; the disk runner never takes a claimed message.
//! Invariant: a DSN is durable in the spool before the message it reports
//! on is updated or removed, so a crash may duplicate a DSN, never lose one.
#![deny(missing_docs)]

mod actions;
mod attempt;
mod backoffs;
mod claims;
mod commit;
mod dispatch;
mod dsn;
mod error;
#[cfg(test)]
mod fixtures;
mod inner;
mod job;
mod lineup;
mod listing;
pub mod log;
pub mod maildir;
mod operator;
mod origin;
mod outcome;
mod paused;
pub mod route;
mod runner;
mod saved_state;
pub mod schedule;
mod settings;
mod settle;
mod steering;
mod store;
mod sts_saved;
mod unreadable;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mta_deliver::{Client, Dane, MtaSts, PolicyCache, Resolver};
use mta_envelope::{Envelope, QueueId};
use mta_spool::{IndexEntry, QueueName, Spool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::inner::Inner;
use crate::job::Job;
use crate::log::{DeliveryLog, Event, Record};
use crate::route::Router;
use crate::runner::Runner;
use crate::steering::{InMemory, Steering};

pub use crate::actions::{Action, ActionReport, Selection};
pub use crate::dsn::Bounced;
pub use crate::error::{ErrorKind, SteerError};
pub use crate::job::Claim;
pub use crate::listing::{
    domain, parse_id, queue_named, Detail, Filter, MessageRow, Page, RecipientRow, RecipientStatus,
    Summary, SummaryRow, MAX_PAGE, SUMMARY_BUCKETS,
};
pub use crate::operator::Operator;
pub use crate::runner::RunnerStatus;
pub use crate::settings::{QueueSettings, Settings};
use crate::store::Store;

/// The queue could not be started.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The delivery log cannot be opened.
    #[error("cannot open the delivery log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The SMTP client cannot be set up (e.g. an unreadable CA file).
    #[error("outbound SMTP client: {0}")]
    Client(String),
    /// The DNS resolver cannot be set up.
    #[error("DNS resolver: {0}")]
    Resolver(String),
}

/// The queue runners; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    /// Sends the sender a DSN (RFC 3464) for recipients refused before
    /// their message was queued, as NOTIFY allows: mtad's import of a drop
    /// file, whose local session refused them, has no one else to tell.
    /// `replies[i]` is the reply `envelope.recipients[i]` got; `id` names
    /// the message in the DSN (the queue id its other recipients got,
    /// else a new one).
    pub async fn bounce_refused(
        &self,
        id: Option<QueueId>,
        envelope: &Envelope,
        content: &[u8],
        replies: &[String],
    ) -> Bounced {
        let id = id.unwrap_or_else(|| self.inner.store.next_id());
        crate::dsn::bounce_refused(&self.inner, id, envelope, content, replies).await
    }

    /// Builds the delivery machinery from `settings` and starts the
    /// three runners on the current tokio runtime.
    pub fn start(settings: QueueSettings, spool: Spool) -> Result<Queue, QueueError> {
        let queue = Self::start_with(
            settings,
            spool,
            Arc::default(),
            None,
            PolicyCache::default(),
        )?;
        paused::load_paused(&queue.inner);
        backoffs::restore_and_keep(queue.inner.store.blocking(), queue.inner.client.throttles());
        sts_saved::restore_and_keep(queue.inner.store.blocking(), &queue.inner.policies);
        Ok(queue)
    }

    /// Starts the runners of a graceful restart, with a new configuration,
    /// beside this generation (whose [`shutdown`](Self::shutdown) the
    /// caller then runs): they share the set of messages in flight, so an
    /// attempt still running here is never started twice, and a paused
    /// runner stays paused. The delivery log is opened anew (after a
    /// rotation, a new file).
    pub fn successor(&self, settings: QueueSettings) -> Result<Queue, QueueError> {
        let next = Self::start_with(
            settings,
            self.inner.store.blocking().clone(),
            self.inner.steering.clone(),
            // Connection counts, hourly windows and back-offs carry over:
            // a reload never forgets a back-off.
            Some(self.inner.client.throttles().clone()),
            // So are the MTA-STS policies, saved by this generation's task.
            self.inner.policies.clone(),
        )?;
        for q in [QueueName::Ram, QueueName::Bounce, QueueName::Disk] {
            next.inner
                .runner(q)
                .set_paused(self.inner.runner(q).is_paused());
        }
        Ok(next)
    }

    fn start_with(
        settings: QueueSettings,
        spool: Spool,
        steering: Arc<Steering>,
        throttles: Option<mta_deliver::Throttles>,
        policies: PolicyCache,
    ) -> Result<Queue, QueueError> {
        let QueueSettings {
            attempts,
            delivery_log,
            client,
            resolver,
            local_domains,
            routes,
            ram_concurrency,
            bounce_concurrency,
            disk_concurrency,
        } = settings;
        let log = DeliveryLog::open(&delivery_log).map_err(|source| QueueError::Log {
            path: delivery_log.clone(),
            source,
        })?;
        let dane = Dane::new(&client.delivery.dane, &resolver, attempts.port)
            .map_err(|e| QueueError::Client(e.to_string()))?;
        let resolver = Resolver::new(&resolver).map_err(|e| QueueError::Resolver(e.to_string()))?;
        let sts = MtaSts::new(&client, resolver.clone(), policies.clone())
            .map_err(|e| QueueError::Client(e.to_string()))?;
        let client = match throttles {
            // Sets the shared rules last, only once the client is built.
            Some(throttles) => Client::with_throttles(client, throttles),
            None => Client::new(client),
        }
        .map_err(|e| QueueError::Client(e.to_string()))?;
        let inner = Arc::new(Inner {
            store: Store::new(spool),
            settings: attempts,
            router: Router::new(&local_domains, &routes),
            client,
            resolver,
            sts,
            dane,
            policies,
            log,
            steering,
            ram: Runner::new(QueueName::Ram, ram_concurrency),
            bounce: Runner::new(QueueName::Bounce, bounce_concurrency),
            disk: Runner::new(QueueName::Disk, disk_concurrency),
            disk_wake: Notify::new(),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            tasks: TaskTracker::new(),
            dsns: AtomicU64::new(0),
            dsns_dropped: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
        });
        // Started from now on, as `status` says once mtad is ready: the
        // loops clear the flag when they end, not set it when they begin
        // (a status asked before their first poll would call them down).
        for q in [QueueName::Ram, QueueName::Bounce, QueueName::Disk] {
            inner.runner(q).started.store(true, Ordering::Relaxed);
        }
        inner
            .tasks
            .spawn(dispatch::memory_loop(inner.clone(), QueueName::Ram));
        inner
            .tasks
            .spawn(dispatch::memory_loop(inner.clone(), QueueName::Bounce));
        inner.tasks.spawn(dispatch::disk_loop(inner.clone()));
        Ok(Queue { inner })
    }

    /// True in volatile mode: the listener answers 250 without storing and
    /// hands the message over with [`Queue::accepted`] and `on_disk` false.
    pub fn is_volatile(&self) -> bool {
        self.inner.settings.volatile
    }

    /// Claims a new message's id before it is stored, so the disk runner
    /// does not take it between its commit and its hand-over to the ram
    /// runner.
    pub fn claim(&self, id: QueueId) -> Claim {
        self.inner
            .claim(id)
            .expect("a new queue id is never in flight")
    }

    /// Hands an accepted message to the ram runner for its first attempt.
    /// `content` is what was (or, in volatile mode, would be) stored.
    pub fn accepted(&self, claim: Claim, envelope: Envelope, content: Arc<Vec<u8>>, on_disk: bool) {
        let size = content.len() as u64;
        let mut record = Record::new(Event::Received, claim.id(), "ram");
        record.sender = Some(envelope.sender.to_string());
        record.size = Some(size);
        record.auth = envelope.origin.auth.as_deref();
        let dkim = crate::log::dkim_of(&content);
        record.dkim = dkim.as_deref();
        self.inner.log.write(&record);
        let entry = IndexEntry::arrived(&envelope, size);
        if !on_disk {
            self.inner.steering.remember(
                claim.id(),
                InMemory {
                    entry: entry.clone(),
                    envelope: envelope.clone(),
                    content: content.clone(),
                },
            );
        }
        let job = Job {
            id: claim.id(),
            envelope,
            content,
            entry,
            on_disk,
            unreadable: None,
            claim,
        };
        if let Err(unsent) = self.inner.ram.lineup.push(job) {
            // Stopping: a durable message waits on disk for the next start;
            // a volatile one is spilled now.
            let inner = self.inner.clone();
            self.inner
                .tasks
                .spawn(async move { dispatch::spill(&inner, unsent).await });
        }
    }

    /// In-flow control, as Postfix's `in_flow_delay`: while first attempts
    /// wait in the ram runner's line for a slot (mail arrives faster than
    /// the runner starts attempts), waits until the runner takes the next
    /// one from the line, at most `longest`, so that injection slows to
    /// the pace of delivery instead of the line (and the spool) growing.
    /// Each job leaving the line lets one waiter go, in the order they
    /// came. No wait when the line is empty, `longest` is zero or the ram
    /// runner is paused (an operator's pause is not a reason to slow
    /// injection). Returns how long it waited.
    pub async fn in_flow(&self, longest: Duration) -> Option<Duration> {
        let ram = &self.inner.ram;
        if longest.is_zero() || ram.is_paused() {
            return None;
        }
        let began = std::time::Instant::now();
        match tokio::time::timeout(longest, ram.lineup.wait_for_room()).await {
            Ok(false) => None,
            Ok(true) | Err(_) => Some(began.elapsed()),
        }
    }

    /// The runners' state and counters, ram, bounce, disk.
    pub fn status(&self) -> Vec<RunnerStatus> {
        [&self.inner.ram, &self.inner.bounce, &self.inner.disk]
            .into_iter()
            .map(|r| r.status(!self.inner.stopping.is_cancelled()))
            .collect()
    }

    /// Pauses a runner: it starts no new attempt until resumed.
    pub fn pause(&self, queue: QueueName) {
        self.inner.runner(queue).set_paused(true);
    }

    /// True when both are the same generation of runners.
    pub fn same(&self, other: &Queue) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Reopens the delivery log (after rotation).
    pub fn reopen_log(&self) -> std::io::Result<()> {
        self.inner.log.reopen()
    }

    /// True while a runner is paused.
    pub fn is_paused(&self, queue: QueueName) -> bool {
        self.inner.runner(queue).is_paused()
    }

    /// Attempts one runner has under way.
    pub fn runner_in_flight(&self, queue: QueueName) -> u64 {
        self.inner.runner(queue).stats().in_flight()
    }

    /// Resumes a paused runner.
    pub fn resume(&self, queue: QueueName) {
        self.inner.runner(queue).set_paused(false);
        self.inner.disk_wake.notify_one();
    }

    /// The operator's hands on the queue: listing, show, summary, the
    /// actions, and paused domains (`listing.rs`, `actions.rs`,
    /// `paused.rs` each add their methods to [`Operator`]).
    pub fn operator(&self) -> Operator {
        Operator {
            inner: self.inner.clone(),
        }
    }

    /// Back-offs in force and hourly message counts per destination.
    pub fn throttles(&self) -> mta_deliver::ThrottleSnapshot {
        self.inner.client.throttles().snapshot()
    }

    /// Deliveries by TLS version and verification, and deliveries an
    /// MTA-STS policy held back, by this generation.
    pub fn tls_counts(&self) -> mta_deliver::TlsCounts {
        self.inner.client.tls_counts()
    }

    /// Delivery-log lines this generation could not write (a full disk).
    pub fn delivery_log_dropped(&self) -> u64 {
        self.inner.log.dropped()
    }

    /// DSNs queued since start.
    pub fn dsns_queued(&self) -> u64 {
        self.inner.dsns.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// DSNs this generation dropped: reports on failed `<>` mail that
    /// could not reach the postmaster either.
    pub fn dsns_dropped(&self) -> u64 {
        self.inner
            .dsns_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Volatile messages held in memory only, not yet on disk (waiting
    /// for their first attempt, or in it), every generation together.
    pub fn in_memory(&self) -> u64 {
        self.inner.steering.in_memory() as u64
    }

    /// Volatile messages spilled to the disk queue (at a stop).
    pub fn spilled(&self) -> u64 {
        self.inner
            .spilled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Attempts running now, all runners together.
    pub fn in_flight(&self) -> u64 {
        [&self.inner.ram, &self.inner.bounce, &self.inner.disk]
            .iter()
            .map(|r| r.stats().in_flight())
            .sum()
    }

    /// A clean stop: no new attempts; attempts in flight may finish until
    /// `deadline`, then are cut short and count as deferred; volatile
    /// messages not yet attempted are written to the disk queue. Nothing
    /// is lost.
    pub async fn shutdown(&self, deadline: Duration) {
        let inner = &self.inner;
        inner.stopping.cancel();
        inner.tasks.close();
        if tokio::time::timeout(deadline, inner.tasks.wait())
            .await
            .is_err()
        {
            // The runners' own loops are tasks too: with a deadline of
            // zero they may not have seen the stop yet, and nothing is cut
            // short when no attempt is running.
            let in_flight = self.in_flight();
            if in_flight > 0 {
                tracing::warn!(
                    in_flight,
                    "drain deadline passed: cutting the remaining attempts short (deferred)"
                );
            }
            inner.abort.cancel();
            inner.tasks.wait().await;
        }
        // Connections kept for reuse get a QUIT rather than a reset.
        inner.client.close_idle().await;
    }
}
