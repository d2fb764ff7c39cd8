//! Carrying out a [`Settlement`]: the delivery log, the counters, the
//! DSNs, then the message's new state in the spool.
//!
//! Invariant: a DSN is durable in the bounce queue before the message it
//! reports on is updated or removed, so a crash in between sends a DSN
//! twice, never zero times. When a DSN cannot be queued, the settlement's
//! `if_dsn_fails` is what is stored instead.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mta_spool::QueueName;
use tracing::{debug, error, info, warn};

use crate::dsn::{self, DoubleBounce, Source};
use crate::inner::Inner;
use crate::job::Job;
use crate::log::Record;
use crate::settle::{Fate, Settlement};
use crate::store::StoreError;

/// Records what `settlement` decided about the attempt of `job` by the
/// `queue` runner.
pub(crate) async fn commit(
    inner: &Arc<Inner>,
    queue: QueueName,
    job: &Job,
    settlement: Settlement,
) {
    let qname = queue.as_str();
    let attempt = settlement.attempt;
    let dkim = crate::log::dkim_of(&job.content);
    for line in &settlement.log {
        let mut record = Record::new(line.event, job.id, qname);
        record.recipient = Some(line.recipient.clone());
        record.attempt = Some(attempt);
        record.status = Some(&line.status);
        record.remote = line.remote.as_deref();
        record.reply = Some(&line.reply);
        if let Some(tls) = &line.tls {
            record.tls = Some(&tls.version);
            record.cipher = Some(&tls.cipher);
            record.verified = Some(tls.verified.as_str());
        }
        // The file's envelope; the index's when the file is unreadable.
        record.auth = job
            .envelope
            .origin
            .auth
            .as_deref()
            .or(job.entry.auth.as_deref());
        record.dkim = dkim.as_deref();
        inner.log.write(&record);
    }
    let c = settlement.counts;
    inner
        .runner(queue)
        .stats()
        .count(c.delivered, c.deferred, c.failed);

    // The DSNs are durable before the message's new state is recorded.
    let mut dsn_queued = true;
    for request in settlement.dsns {
        dsn_queued &= dsn::send(inner, &Source::of(job), request.reports, request.to).await;
    }
    if let Some(nobody) = &settlement.dropped {
        inner.dsns_dropped.fetch_add(1, Ordering::Relaxed);
        let postmaster = &inner.settings.postmaster;
        match nobody {
            DoubleBounce::BadPostmaster => {
                error!(queue_id = %job.id, postmaster, "undeliverable DSN dropped: bad postmaster address")
            }
            _ => {
                error!(queue_id = %job.id, postmaster, "undeliverable DSN to the postmaster dropped")
            }
        }
    }
    let fate = match (dsn_queued, settlement.if_dsn_fails) {
        (false, Some(instead)) => instead,
        _ => settlement.fate,
    };

    let (saved, kept) = match fate {
        // Its recipients are reported: the file goes aside, unread.
        Fate::SetAside(reason) => {
            if let Err(e) = inner.store.set_aside_corrupt(job.id, reason).await {
                error!(queue_id = %job.id, error = %e, "cannot set a corrupt spool file aside in corrupt/; the next rescan does");
                return;
            }
            (Ok(()), None)
        }
        Fate::Remove if job.on_disk => (inner.store.remove(job.id).map_err(StoreError::from), None),
        Fate::Remove => (Ok(()), None),
        Fate::Keep(entry) if job.on_disk => (
            inner.store.update(job.id, &entry).map_err(StoreError::from),
            Some(entry),
        ),
        Fate::Keep(entry) => (
            inner
                .store_on_disk(job, &entry)
                .await
                .map_err(StoreError::from),
            Some(entry),
        ),
    };
    match (saved, kept) {
        // Debug, not info: the delivery log has a line for every
        // recipient of it already, and at thousands of messages a second
        // the daemon log's line cost about 1 % of the CPU per message.
        (Ok(()), None) => debug!(queue_id = %job.id, attempt, "message done"),
        (Ok(()), Some(entry)) => {
            if let Err(e) = inner.store.append_history(job.id, &settlement.history) {
                warn!(queue_id = %job.id, error = %e, "cannot record the attempt in the history");
            }
            info!(queue_id = %job.id, attempt, next_attempt = entry.next_attempt, pending = settlement.pending, "message deferred");
            inner.disk_wake.notify_one();
        }
        (Err(e), _) if job.on_disk => {
            // The old state stays: recipients may be tried again, never lost.
            warn!(queue_id = %job.id, error = %e, "cannot record the delivery state");
        }
        (Err(e), _) => {
            error!(queue_id = %job.id, error = %e, "LOST: could not move a volatile message to the disk queue")
        }
    }
}
