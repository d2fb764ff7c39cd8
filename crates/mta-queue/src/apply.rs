//! Recording what an attempt achieved: per-recipient state, the next
//! attempt or expiry, DSNs, and the delivery log.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mta_deliver::{Delivery, Outcome};
use mta_dsn::{Action, Diagnostic, DsnInput, RecipientReport};
use mta_envelope::QueueId;
use mta_envelope::{Envelope, Mailbox, Recipient, ReversePath};
use mta_spool::{HistoryRecord, QueueName, RecipientError, RecipientState};
use tracing::{error, info, warn};

use crate::inner::Inner;
use crate::job::Job;
use crate::log::{Event, Record};
use crate::origin::local_origin;
use crate::outcome::{RecipientResult, LOCAL_REMOTE};
use crate::schedule::{random_unit, Next};
use crate::unreadable::Unreadable;
use mta_envelope::unix_now;

/// Applies the results of one attempt of `job`, made by the `queue` runner.
pub(crate) async fn apply(
    inner: &Arc<Inner>,
    queue: QueueName,
    job: Arc<Job>,
    results: Vec<RecipientResult>,
) {
    let qname = queue.as_str();
    let now = unix_now();
    let mut entry = job.entry.clone();
    entry.attempts += 1;
    let attempt = entry.attempts;
    // Reports for the sender (as NOTIFY asks), and every failure (for the
    // postmaster when the sender is <>).
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    let mut failed_now = Vec::new();
    let mut history = Vec::with_capacity(results.len());
    let (mut delivered, mut deferred, mut failed) = (0, 0, 0);

    for r in &results {
        let recipient = &job.envelope.recipients[r.index];
        // The server whose reply decided it (a refused greeting has no
        // transaction's remote), else the one the attempt talked to.
        let remote = r
            .outcome
            .server_reply()
            .map(|said| said.remote.clone())
            .or_else(|| r.remote.clone());
        let (event, status, reply) = match &r.outcome {
            Outcome::Delivered { reply, .. } => {
                delivered += 1;
                entry.recipients[r.index] = RecipientState::Delivered;
                entry.last_errors.remove(&r.index);
                (Event::Delivered, "2.0.0", reply.as_str())
            }
            Outcome::Failed { status, reason, .. } => {
                failed += 1;
                failed_now.push(r.index);
                entry.recipients[r.index] = RecipientState::Failed;
                entry.last_errors.remove(&r.index);
                (Event::Failed, status.as_str(), reason.as_str())
            }
            Outcome::Deferred {
                status,
                reason,
                reply,
            } => {
                deferred += 1;
                entry.last_errors.insert(
                    r.index,
                    RecipientError {
                        status: status.clone(),
                        reason: reason.clone(),
                        remote: remote.clone(),
                        reply: reply.as_ref().map(|said| said.text.clone()),
                    },
                );
                (Event::Deferred, status.as_str(), reason.as_str())
            }
        };
        let mut record = Record::new(event, job.id, qname);
        record.recipient = Some(recipient.address.to_string());
        record.attempt = Some(attempt);
        record.status = Some(status);
        record.remote = remote.as_deref();
        record.reply = Some(reply);
        record.tls = r.tls.as_deref();
        inner.log.write(&record);
        history.push(HistoryRecord {
            time: now,
            attempt,
            recipient: r.index,
            event: event.as_str().to_owned(),
            status: status.to_owned(),
            reply: reply.to_owned(),
            remote: remote.clone(),
        });

        // What a DSN says of it (RFC 3464 section 2.3). The reply of a
        // local delivery says where the file went: never shown to the
        // sender.
        let (action, diagnostic) = match &r.outcome {
            Outcome::Delivered { delivery, reply } => match delivery {
                Delivery::Mailbox => (Action::Delivered, None),
                Delivery::Relayed => (Action::Relayed, Some(Diagnostic::Smtp(reply.clone()))),
                // RFC 3461 section 5.2.1: the next hop has the NOTIFY
                // request and reports; a notice from us would be a second
                // one, and "delivered" would not be true.
                Delivery::RelayedWithDsn => continue,
            },
            Outcome::Failed { reason, reply, .. } => (
                Action::Failed,
                Some(diagnostic_of(
                    reason,
                    reply.as_ref().map(|said| said.text.as_str()),
                )),
            ),
            Outcome::Deferred { .. } => continue,
        };
        let report = report(
            recipient,
            action,
            status,
            remote.as_deref(),
            diagnostic,
            now,
        );
        if action == Action::Failed {
            failures.push(report.clone());
        }
        if mta_dsn::wants_dsn(&job.envelope, recipient, action) {
            reports.push(report);
        }
    }
    inner
        .runner(queue)
        .stats()
        .count(delivered, deferred, failed);

    let pending: Vec<usize> = (0..entry.recipients.len())
        .filter(|&i| entry.recipients[i] == RecipientState::Pending)
        .collect();
    if !pending.is_empty() {
        let s = &inner.settings;
        // Time spent held does not count against the lifetime.
        let arrival = entry.effective_arrival();
        match s.schedule.next(arrival, entry.attempts, now, random_unit()) {
            Next::Expire => {
                for &i in &pending {
                    let recipient = &job.envelope.recipients[i];
                    entry.recipients[i] = RecipientState::Failed;
                    failed_now.push(i);
                    let last = entry.last_errors.get(&i).cloned();
                    let why = last
                        .as_ref()
                        .map(|e| e.reason.as_str())
                        .unwrap_or("no attempt succeeded");
                    let reason = format!("delivery time expired; last error: {why}");
                    let remote = last.as_ref().and_then(|e| e.remote.as_deref());
                    let mut record = Record::new(Event::Expired, job.id, qname);
                    record.recipient = Some(recipient.address.to_string());
                    record.attempt = Some(attempt);
                    record.status = Some("4.4.7");
                    record.reply = Some(&reason);
                    inner.log.write(&record);
                    history.push(HistoryRecord {
                        time: now,
                        attempt,
                        recipient: i,
                        event: "expired".to_owned(),
                        status: "4.4.7".to_owned(),
                        reply: reason.clone(),
                        remote: None,
                    });
                    // RFC 3463 X.4.7: delivery time expired. The last
                    // error is the diagnostic: the server's reply, if one
                    // was the cause.
                    let report = RecipientReport {
                        note: Some("Delivery time expired.".to_owned()),
                        ..report(
                            recipient,
                            Action::Failed,
                            "4.4.7",
                            remote,
                            last.as_ref()
                                .map(|e| diagnostic_of(&e.reason, e.reply.as_deref())),
                            now,
                        )
                    };
                    failures.push(report.clone());
                    if mta_dsn::wants_dsn(&job.envelope, recipient, Action::Failed) {
                        reports.push(report);
                    }
                }
            }
            Next::RetryAt(at) => {
                entry.next_attempt = at;
                entry.queue = QueueName::Disk;
                let due_notice = s
                    .delay_notice_after
                    .is_some_and(|after| now >= arrival.saturating_add(after.as_secs()));
                if due_notice && !entry.delay_notified {
                    entry.delay_notified = true;
                    let until = arrival.saturating_add(s.schedule.lifetime.as_secs());
                    for &i in &pending {
                        let recipient = &job.envelope.recipients[i];
                        if !mta_dsn::wants_dsn(&job.envelope, recipient, Action::Delayed) {
                            continue;
                        }
                        let last = entry.last_errors.get(&i);
                        let status = last.map(|e| e.status.as_str()).unwrap_or("4.0.0");
                        let diagnostic = match last {
                            Some(e) => diagnostic_of(&e.reason, e.reply.as_deref()),
                            None => Diagnostic::Local("not yet delivered".to_owned()),
                        };
                        let remote = last.and_then(|e| e.remote.as_deref());
                        reports.push(RecipientReport {
                            will_retry_until: Some(until),
                            ..report(
                                recipient,
                                Action::Delayed,
                                status,
                                remote,
                                Some(diagnostic),
                                now,
                            )
                        });
                    }
                }
            }
        }
    }

    // The DSNs are durable before the message's new state is recorded: a
    // crash in between sends a DSN twice, never zero times.
    let mut dsn_queued = true;
    if !reports.is_empty() {
        if let ReversePath::Mailbox(sender) = &job.envelope.sender {
            dsn_queued = send_dsn(inner, &job, reports, sender.clone()).await;
        }
    }
    if job.envelope.sender == ReversePath::Null && !failures.is_empty() {
        dsn_queued &= double_bounce(inner, &job, failures).await;
    }
    if dsn_queued {
        for i in &failed_now {
            entry.last_errors.remove(i);
        }
    } else {
        // No DSN could be queued (disk full?): the failed recipients wait
        // as pending, so the next attempt fails them again and makes the
        // DSN then. A failure report is never silently lost.
        for &i in &failed_now {
            entry.recipients[i] = RecipientState::Pending;
        }
        entry.queue = QueueName::Disk;
        entry.next_attempt = now + inner.settings.schedule.base.as_secs().max(1);
    }

    let done = entry
        .recipients
        .iter()
        .all(|s| *s != RecipientState::Pending);
    let saved = if done {
        match &job.unreadable {
            // Its recipients are reported: the file goes aside, unread.
            Some(Unreadable::Corrupt(reason)) => {
                if let Err(e) = inner.spool.set_aside_corrupt(job.id, reason) {
                    error!(queue_id = %job.id, error = %e, "cannot set a corrupt spool file aside in corrupt/; the next rescan does");
                    return;
                }
                Ok(())
            }
            _ if job.on_disk => inner.spool.remove(job.id),
            _ => Ok(()),
        }
    } else if job.on_disk {
        inner.spool.update(job.id, &entry)
    } else {
        inner.store_on_disk(&job, &entry).await
    };
    match saved {
        Ok(()) if done => info!(queue_id = %job.id, attempt, "message done"),
        Ok(()) => {
            if let Err(e) = inner.spool.append_history(job.id, &history) {
                warn!(queue_id = %job.id, error = %e, "cannot record the attempt in the history");
            }
            info!(queue_id = %job.id, attempt, next_attempt = entry.next_attempt, pending = pending.len(), "message deferred");
            inner.disk_wake.notify_one();
        }
        Err(e) if job.on_disk => {
            // The old state stays: recipients may be tried again, never lost.
            warn!(queue_id = %job.id, error = %e, "cannot record the delivery state");
        }
        Err(e) => {
            error!(queue_id = %job.id, error = %e, "LOST: could not move a volatile message to the disk queue")
        }
    }
}

/// What became of the DSN for recipients the operator deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeletedBounce {
    /// Queued (durable in the bounce queue).
    Queued,
    /// None is owed: the sender is `<>`, or NOTIFY says never.
    NotWanted,
    /// It could not be queued (no space?): the delete must not go on.
    Failed,
}

/// Sends the sender a DSN for recipients the operator deleted (as
/// NOTIFY allows; a message from `<>` gets none).
pub(crate) async fn bounce_deleted(
    inner: &Arc<Inner>,
    id: QueueId,
    envelope: &Envelope,
    content: Vec<u8>,
    indexes: &[usize],
) -> DeletedBounce {
    let ReversePath::Mailbox(sender) = &envelope.sender else {
        return DeletedBounce::NotWanted;
    };
    let now = unix_now();
    let reports: Vec<RecipientReport> = indexes
        .iter()
        .filter_map(|&i| envelope.recipients.get(i))
        .filter(|r| mta_dsn::wants_dsn(envelope, r, Action::Failed))
        .map(|r| {
            report(
                r,
                Action::Failed,
                "5.0.0",
                None,
                Some(Diagnostic::Local(
                    "deleted from the queue by the operator".to_owned(),
                )),
                now,
            )
        })
        .collect();
    if reports.is_empty() {
        return DeletedBounce::NotWanted;
    }
    let source = DsnSource {
        id,
        envelope,
        content: &content,
    };
    if send_dsn_for(inner, &source, reports, sender.clone()).await {
        DeletedBounce::Queued
    } else {
        DeletedBounce::Failed
    }
}

/// What a DSN reports on.
struct DsnSource<'a> {
    id: QueueId,
    envelope: &'a Envelope,
    content: &'a [u8],
}

/// One recipient's report. `remote` is the server as outcomes name it
/// (`mx1.test[127.0.0.2]:2525`, or `maildir`).
fn report(
    recipient: &Recipient,
    action: Action,
    status: &str,
    remote: Option<&str>,
    diagnostic: Option<Diagnostic>,
    now: u64,
) -> RecipientReport {
    // "mx1.test[127.0.0.2]:2525" -> "mx1.test" for Remote-MTA (RFC 3464
    // section 2.3.5: the host's name; the address is not needed).
    let remote_mta = remote
        .filter(|r| *r != LOCAL_REMOTE)
        .map(|r| r.split('[').next().unwrap_or(r).to_owned());
    RecipientReport {
        recipient: recipient.address.clone(),
        orcpt: recipient.orcpt.clone(),
        action,
        status: status.to_owned(),
        remote_mta,
        diagnostic,
        note: None,
        last_attempt: Some(now),
        will_retry_until: None,
    }
}

/// The Diagnostic-Code of a failure or deferral: the server's reply when
/// one was the cause (`smtp;`), else our own words (`X-Local;`), which
/// outcomes keep free of file paths.
fn diagnostic_of(reason: &str, reply: Option<&str>) -> Diagnostic {
    match reply {
        Some(reply) => Diagnostic::Smtp(reply.to_owned()),
        None => Diagnostic::Local(reason.to_owned()),
    }
}

/// A DSN about a message from `<>` goes to the postmaster, unless it is
/// the postmaster's copy that failed: then it is dropped, logged and
/// counted (`Queue::dsns_dropped`), as a bounce loop would never end.
async fn double_bounce(inner: &Arc<Inner>, job: &Job, failures: Vec<RecipientReport>) -> bool {
    let postmaster = &inner.settings.postmaster;
    let to_postmaster = job
        .envelope
        .recipients
        .iter()
        .any(|r| r.address.to_string().eq_ignore_ascii_case(postmaster));
    if to_postmaster {
        inner.dsns_dropped.fetch_add(1, Ordering::Relaxed);
        error!(queue_id = %job.id, postmaster, "undeliverable DSN to the postmaster dropped");
        return true;
    }
    match mailbox(postmaster) {
        Some(pm) => send_dsn(inner, job, failures, pm).await,
        None => {
            inner.dsns_dropped.fetch_add(1, Ordering::Relaxed);
            error!(queue_id = %job.id, postmaster, "undeliverable DSN dropped: bad postmaster address");
            true
        }
    }
}

/// The postmaster address as a mailbox: `local@domain`, or the bare
/// `postmaster` (RFC 5321 section 4.5.1: every server takes it; it is
/// local, delivered under the host name like `RCPT TO:<postmaster>`).
fn mailbox(address: &str) -> Option<Mailbox> {
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Some(Mailbox {
            local: local.to_owned(),
            domain: domain.to_owned(),
        }),
        None if address.eq_ignore_ascii_case("postmaster") => Some(Mailbox {
            local: address.to_owned(),
            domain: String::new(),
        }),
        _ => None,
    }
}

/// Builds a DSN, makes it durable in the bounce queue, and hands it to the
/// bounce runner; false when it could not be queued.
async fn send_dsn(
    inner: &Arc<Inner>,
    job: &Job,
    reports: Vec<RecipientReport>,
    to: Mailbox,
) -> bool {
    let source = DsnSource {
        id: job.id,
        envelope: &job.envelope,
        content: &job.content,
    };
    send_dsn_for(inner, &source, reports, to).await
}

async fn send_dsn_for(
    inner: &Arc<Inner>,
    job: &DsnSource<'_>,
    reports: Vec<RecipientReport>,
    to: Mailbox,
) -> bool {
    let s = &inner.settings;
    let now = unix_now();
    let id = inner.spool.next_id();
    let content = Arc::new(mta_dsn::build(&DsnInput {
        reporting_mta: &s.hostname,
        original_id: job.id,
        original: job.envelope,
        original_content: job.content,
        recipients: &reports,
        now,
        postmaster: &s.dsn_from,
        boundary_seed: id.value(),
    }));
    let envelope = Envelope {
        sender: ReversePath::Null,
        recipients: vec![Recipient {
            address: to,
            notify: None,
            orcpt: None,
        }],
        body: mta_envelope::BodyType::EightBitMime,
        smtputf8: job.envelope.smtputf8,
        ret: None,
        envid: None,
        origin: local_origin(&s.hostname),
        arrival: now,
    };
    let Some(claim) = inner.claim(id) else {
        return false;
    };
    if let Err(e) = inner
        .spool
        .store_in(QueueName::Bounce, id, &envelope, content.clone())
        .await
    {
        error!(queue_id = %job.id, error = %e, "cannot queue a DSN");
        return false;
    }
    inner.dsns.fetch_add(1, Ordering::Relaxed);
    let mut record = Record::new(Event::Bounced, job.id, QueueName::Bounce.as_str());
    record.recipient = Some(envelope.recipients[0].address.to_string());
    record.dsn_id = Some(id.to_string());
    inner.log.write(&record);
    let size = content.len() as u64;
    let entry = mta_spool::IndexEntry {
        queue: QueueName::Bounce,
        ..mta_spool::IndexEntry::arrived(&envelope, size)
    };
    inner.submit_bounce(Job {
        id,
        envelope,
        content,
        entry,
        on_disk: true,
        unreadable: None,
        claim,
    });
    true
}
