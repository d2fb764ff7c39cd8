//! The operator's actions on a live queue: flush, hold, release and
//! delete (with or without a DSN to the sender).
//!
//! Every change to a message goes through its claim (`claims.rs`), the
//! same in-flight set the runners use, so an operator's change and an
//! attempt never write one message at once. A hold or delete of a
//! message being attempted right now waits: it is noted beside the claim
//! and carried out when the attempt lets go of it (`Claim`'s drop hands
//! the claim to [`ClaimOwner::carry_out`], below), on the state the
//! attempt left, in the order given, so a message is never deleted
//! half-way through an attempt and a later hold never undoes an earlier
//! delete. A message waiting in a runner's line (paused, or no slot
//! free) is not being attempted: a hold or delete takes it out of the
//! line and happens at once.
//!
//! Volatile messages held only in memory (`steering.rs`) are reached too;
//! a hold writes one to the held queue on disk. Bulk actions walk the
//! index a page at a time.

use std::sync::Arc;

use mta_envelope::{unix_now, QueueId};
use mta_spool::{HistoryRecord, IndexEntry, QueueName, RecipientState, SpoolError};
use tracing::{info, warn};

use crate::claims::Waiting;
use crate::dsn::Bounced;
use crate::error::SteerError;
use crate::inner::Inner;
use crate::job::{Claim, ClaimOwner, Job};
use crate::listing::{domain as normalize_domain, pending_at, PAGE_SCAN};
use crate::log::{Event, Record};
use crate::operator::Operator;
use crate::steering::{InMemory, Steering};

/// A queue command that changes the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Due now (qmail's ALRM, `postqueue -f`); held messages stay held.
    Flush,
    /// Into the held queue: never attempted, never expires, until
    /// released (`postsuper -h`).
    Hold,
    /// Out of the held queue, due now (`postsuper -H`).
    Release,
    /// Out of the queue (`postsuper -d`).
    Delete,
}

/// Which messages an action is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One message.
    Id(QueueId),
    /// Every message with a recipient still to be delivered at this
    /// domain (only those recipients, for a delete).
    Domain(String),
    /// Every message.
    All,
}

/// What an action did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionReport {
    /// Messages the selection matched.
    pub matched: u64,
    /// Messages acted on now.
    pub done: u64,
    /// Messages being delivered at that moment: acted on when their
    /// attempt ends (a flush has nothing to do for them).
    pub in_flight: u64,
    /// Messages left as they were (a flush or hold of a held message, a
    /// release of one that is not held).
    pub unchanged: u64,
    /// Recipients removed by a delete.
    pub recipients_deleted: u64,
    /// DSNs queued by a delete with bounce.
    pub dsns: u64,
}

impl Operator {
    /// Flush, hold, release or delete (with `bounce`, a DSN to the sender
    /// for each recipient deleted). A message being attempted is held or
    /// deleted when its attempt ends.
    pub async fn act(
        &self,
        action: Action,
        selection: &Selection,
        bounce: bool,
    ) -> Result<ActionReport, SteerError> {
        act(&self.inner, action, selection, bounce).await
    }
}

/// The actions that waited for an attempt are carried out here.
impl ClaimOwner for Inner {
    fn steering(&self) -> &Steering {
        &self.steering
    }

    fn carry_out(self: Arc<Self>, claim: Claim, waiting: Vec<Waiting>) {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(perform_waiting(self, claim, waiting));
            }
            Err(_) => {
                tracing::warn!(queue_id = %claim.id(), ?waiting, "no runtime: operator action dropped");
            }
        }
    }
}

/// Flushes, holds, releases or deletes the selected messages.
async fn act(
    inner: &Arc<Inner>,
    action: Action,
    selection: &Selection,
    bounce: bool,
) -> Result<ActionReport, SteerError> {
    if bounce && action != Action::Delete {
        return Err(SteerError::Invalid("--bounce goes with delete only".into()));
    }
    let mut report = ActionReport::default();
    if let Selection::Id(id) = *selection {
        if inner.store.entry(id)?.is_none() && inner.steering.remembered(id).is_none() {
            return Err(SteerError::NotFound(id.to_string()));
        }
        act_on(inner, id, action, bounce, None, &mut report).await?;
        return Ok(report);
    }
    let domain = match selection {
        Selection::Domain(d) => Some(normalize_domain(d)?),
        _ => None,
    };
    let mut after = None;
    loop {
        let wanted = domain.clone();
        let page = inner
            .store
            .list(after, PAGE_SCAN, PAGE_SCAN, move |_, e| match &wanted {
                // A domain selects messages with a recipient still to be
                // delivered there.
                Some(d) => !pending_at(e, Some(d)).is_empty(),
                None => true,
            })
            .await?;
        for (n, (id, _)) in page.items.iter().enumerate() {
            act_on(inner, *id, action, bounce, domain.as_deref(), &mut report).await?;
            if n % 64 == 63 {
                // A bulk action over a large queue must not hold a worker
                // thread that accepts or delivers mail.
                tokio::task::yield_now().await;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    // Volatile messages in memory are in no index page.
    let in_memory = inner
        .steering
        .remembered_in(None, None, usize::MAX, |e| match &domain {
            Some(d) => !pending_at(e, Some(d)).is_empty(),
            None => true,
        });
    for (id, _) in in_memory {
        // Met in the walk already if written to disk since.
        if inner.store.entry(id)?.is_none() {
            act_on(inner, id, action, bounce, domain.as_deref(), &mut report).await?;
        }
    }
    Ok(report)
}

/// Acts on one message, now if it is not in flight, else when its
/// attempt ends.
async fn act_on(
    inner: &Arc<Inner>,
    id: QueueId,
    action: Action,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> Result<(), SteerError> {
    report.matched += 1;
    let waiting = match action {
        Action::Hold => Some(Waiting::Hold),
        Action::Delete => Some(Waiting::Delete {
            bounce,
            domain: domain.map(str::to_owned),
        }),
        Action::Flush | Action::Release => None,
    };
    if waiting.is_some() {
        // Waiting in a runner's line is not in flight: take it out.
        for queue in [QueueName::Ram, QueueName::Bounce] {
            if let Some(job) = inner.runner(queue).lineup.take(id) {
                return act_on_lined_up(inner, queue, job, action, bounce, domain, report).await;
            }
        }
    }
    let changes = waiting.is_some();
    if !inner.steering.claims.claim_or_wait(id, waiting) {
        let lined_up = [QueueName::Ram, QueueName::Bounce]
            .into_iter()
            .any(|q| inner.runner(q).lineup.contains(id));
        if !changes && lined_up {
            // A flush or release of a message waiting for its first
            // attempt: it is due as soon as its runner may go.
            report.unchanged += 1;
        } else {
            report.in_flight += 1;
        }
        return Ok(());
    }
    let claim = Claim::adopt(inner.clone(), id);
    let result = act_claimed(inner, &claim, action, bounce, domain, report).await;
    drop(claim);
    result
}

/// Holds or deletes a message taken out of a runner's line, now, under
/// the job's claim; what is left of it (a partial delete, an action that
/// failed) goes back in line.
async fn act_on_lined_up(
    inner: &Arc<Inner>,
    queue: QueueName,
    mut job: Job,
    action: Action,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> Result<(), SteerError> {
    let (keep, result) = if job.on_disk {
        let result = act_claimed(inner, &job.claim, action, bounce, domain, report).await;
        // The index says what is left: nothing (deleted), a held message
        // (the disk runner releases it), or recipients still to try.
        let keep = match inner.store.entry(job.id) {
            Ok(Some(entry)) if entry.queue != QueueName::Held => {
                job.entry = entry;
                true
            }
            Ok(_) => false,
            Err(_) => true,
        };
        (keep, result)
    } else {
        act_in_memory(inner, &mut job, action, bounce, domain, report).await
    };
    if keep {
        if let Err(job) = inner.runner(queue).lineup.push(job) {
            // The runner stopped meanwhile.
            crate::dispatch::spill(inner, job).await;
        }
    }
    result
}

/// Holds or deletes a volatile message that is in memory only. Returns
/// whether the job is still wanted (for the recipients left).
async fn act_in_memory(
    inner: &Arc<Inner>,
    job: &mut Job,
    action: Action,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> (bool, Result<(), SteerError>) {
    let id = job.id;
    let now = unix_now();
    // The same decision as for a message on disk; only the effects
    // differ. Flush and release change nothing in memory: the message is
    // due and not held.
    let (doomed, left) = match change(&job.entry, action, domain, now) {
        Change::Held(entry) => {
            // Held on disk, like any held message: it survives a stop.
            if let Err(e) = inner.store_on_disk(job, &entry).await {
                // Stored but not moved to the held queue: it is an
                // ordinary message on disk now, and waits as one.
                if let Ok(Some(stored)) = inner.store.entry(id) {
                    job.on_disk = true;
                    job.entry = stored;
                }
                return (true, Err(e.into()));
            }
            if let Err(e) = note_history(inner, id, &pending_at(&entry, None), Event::Held, now) {
                warn!(queue_id = %id, error = %e, "cannot record the hold in the history");
            }
            log_operator(inner, Event::Held, id, &entry, None);
            report.done += 1;
            return (false, Ok(()));
        }
        Change::Deleted { doomed, left } => (doomed, left),
        Change::Unchanged | Change::Flushed(_) | Change::Released(_) => {
            report.unchanged += 1;
            return (true, Ok(()));
        }
    };
    if bounce {
        match crate::dsn::bounce_deleted(inner, id, &job.envelope, &job.content, &doomed).await {
            Bounced::Queued => report.dsns += 1,
            Bounced::NotWanted => {}
            Bounced::Failed => {
                return (
                    true,
                    Err(SteerError::Unavailable(format!(
                    "{id}: the DSN could not be queued, so nothing was deleted (is the disk full?)"
                ))),
                )
            }
        }
    }
    for &i in &doomed {
        log_operator(inner, Event::Deleted, id, &job.entry, Some(i));
    }
    report.recipients_deleted += doomed.len() as u64;
    report.done += 1;
    let Some(left) = left else {
        return (false, Ok(()));
    };
    job.entry = left;
    inner.steering.remember(
        id,
        InMemory {
            entry: job.entry.clone(),
            envelope: job.envelope.clone(),
            content: job.content.clone(),
        },
    );
    (true, Ok(()))
}

/// Carries out the actions that waited for an attempt to end, in the
/// order they were asked for; `claim` is the attempt's, handed over.
async fn perform_waiting(inner: Arc<Inner>, claim: Claim, waiting: Vec<Waiting>) {
    for waiting in waiting {
        let mut report = ActionReport::default();
        let (action, bounce, domain) = match waiting {
            Waiting::Hold => (Action::Hold, false, None),
            Waiting::Delete { bounce, domain } => (Action::Delete, bounce, domain),
        };
        match act_claimed(
            &inner,
            &claim,
            action,
            bounce,
            domain.as_deref(),
            &mut report,
        )
        .await
        {
            Ok(()) => {
                info!(queue_id = %claim.id(), ?action, done = report.done, "operator action carried out after the attempt")
            }
            Err(e) => {
                warn!(queue_id = %claim.id(), ?action, error = %e, "operator action after the attempt failed")
            }
        }
    }
}

/// Records an operator's action in the history of each recipient in
/// `recipients`: `event`, and "<event> by the operator".
fn note_history(
    inner: &Inner,
    id: QueueId,
    recipients: &[usize],
    event: Event,
    now: u64,
) -> Result<(), SpoolError> {
    let records: Vec<HistoryRecord> = recipients
        .iter()
        .map(|&recipient| HistoryRecord {
            time: now,
            attempt: 0,
            recipient,
            event: event.as_str().to_owned(),
            status: String::new(),
            reply: format!("{} by the operator", event.as_str()),
            remote: None,
        })
        .collect();
    inner.store.append_history(id, &records)
}

/// What an action does to a message's index entry: decided without I/O.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing to do (a flush or hold of a held message, a release of
    /// one that is not held, a delete with no recipient left to delete).
    Unchanged,
    /// Due now; the entry to store if it was due later (None: due already).
    Flushed(Option<IndexEntry>),
    /// Into the held queue.
    Held(IndexEntry),
    /// Out of the held queue, due now, the time held added up.
    Released(IndexEntry),
    /// These recipients deleted; the entry left, None when none is.
    Deleted {
        doomed: Vec<usize>,
        left: Option<IndexEntry>,
    },
}

/// Decides what `action` does to a message whose entry is `entry` at
/// `now` (a delete only of the recipients at `domain`, when given).
pub(crate) fn change(entry: &IndexEntry, action: Action, domain: Option<&str>, now: u64) -> Change {
    let held = entry.queue == QueueName::Held;
    let mut entry = entry.clone();
    match action {
        Action::Flush if held => Change::Unchanged,
        Action::Flush => Change::Flushed((entry.next_attempt > now).then(|| {
            entry.next_attempt = now;
            entry
        })),
        Action::Hold if held => Change::Unchanged,
        Action::Hold => {
            entry.queue = QueueName::Held;
            entry.held_since = Some(now);
            Change::Held(entry)
        }
        Action::Release if !held => Change::Unchanged,
        Action::Release => {
            let since = entry.held_since.take().unwrap_or(now);
            entry.held_secs = entry.held_secs.saturating_add(now.saturating_sub(since));
            entry.queue = QueueName::Disk;
            entry.next_attempt = now;
            Change::Released(entry)
        }
        Action::Delete => {
            let doomed = pending_at(&entry, domain);
            if doomed.is_empty() {
                return Change::Unchanged;
            }
            for &i in &doomed {
                entry.recipients[i] = RecipientState::Failed;
                entry.last_errors.remove(&i);
            }
            let left = (!pending_at(&entry, None).is_empty()).then_some(entry);
            Change::Deleted { doomed, left }
        }
    }
}

async fn act_claimed(
    inner: &Arc<Inner>,
    claim: &Claim,
    action: Action,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> Result<(), SteerError> {
    let id = claim.id();
    let now = unix_now();
    let store = &inner.store;
    let Some(mut entry) = store.entry(id)? else {
        // Delivered and gone meanwhile.
        report.unchanged += 1;
        return Ok(());
    };
    if action == Action::Delete && !entry.has_addresses() {
        if let Ok(envelope) = store.envelope(id).await {
            entry.fill_addresses(&envelope);
        }
    }
    match change(&entry, action, domain, now) {
        Change::Unchanged => report.unchanged += 1,
        Change::Flushed(due_later) => {
            if let Some(entry) = due_later {
                store.update(id, &entry)?;
            }
            report.done += 1;
            inner.disk_wake.notify_one();
        }
        Change::Held(entry) => {
            store.update(id, &entry)?;
            note_history(inner, id, &pending_at(&entry, None), Event::Held, now)?;
            log_operator(inner, Event::Held, id, &entry, None);
            report.done += 1;
        }
        Change::Released(entry) => {
            store.update(id, &entry)?;
            note_history(inner, id, &pending_at(&entry, None), Event::Released, now)?;
            log_operator(inner, Event::Released, id, &entry, None);
            report.done += 1;
            inner.disk_wake.notify_one();
        }
        Change::Deleted { doomed, left } => {
            if bounce {
                // The DSN is durable before anything is deleted; if it
                // cannot be made, nothing is.
                let (envelope, content) = store.read(id).await?;
                match crate::dsn::bounce_deleted(inner, id, &envelope, &content, &doomed).await {
                    Bounced::Queued => report.dsns += 1,
                    Bounced::NotWanted => {}
                    Bounced::Failed => {
                        return Err(SteerError::Unavailable(format!(
                            "{id}: the DSN could not be queued, so nothing was deleted (is the disk full?)"
                        )))
                    }
                }
            }
            for &i in &doomed {
                log_operator(inner, Event::Deleted, id, &entry, Some(i));
            }
            report.recipients_deleted += doomed.len() as u64;
            match left {
                None => store.remove(id)?,
                Some(left) => {
                    store.update(id, &left)?;
                    note_history(inner, id, &doomed, Event::Deleted, now)?;
                }
            }
            report.done += 1;
        }
    }
    Ok(())
}

fn log_operator(
    inner: &Inner,
    event: Event,
    id: QueueId,
    entry: &IndexEntry,
    recipient: Option<usize>,
) {
    let mut record = Record::new(event, id, entry.queue.as_str());
    record.recipient = recipient.and_then(|i| entry.rcpts.get(i).cloned());
    record.reply = Some("by the operator");
    record.auth = entry.auth.as_deref();
    inner.log.write(&record);
}

#[cfg(test)]
mod tests {
    use mta_envelope::ReversePath;

    use super::*;
    use crate::claims::{ClaimSet, Waiting};
    use crate::fixtures::{envelope, recipient};

    const NOW: u64 = 1_700_000_000;

    fn entry(rcpts: &[&str]) -> IndexEntry {
        let recipients = rcpts.iter().map(|r| recipient(r, None)).collect();
        let envelope = envelope(ReversePath::Null, recipients, NOW - 600);
        let mut entry = IndexEntry::arrived(&envelope, 10);
        entry.next_attempt = NOW + 400;
        entry
    }

    /// Carries out waiting actions as the claim's owner does: in order,
    /// each on the state the previous one left (None: removed).
    fn carry_out(
        mut entry: Option<IndexEntry>,
        waiting: &[Waiting],
        now: u64,
    ) -> Option<IndexEntry> {
        for w in waiting {
            let Some(current) = &entry else {
                continue; // gone: unchanged
            };
            let (action, domain) = match w {
                Waiting::Hold => (Action::Hold, None),
                Waiting::Delete { domain, .. } => (Action::Delete, domain.as_deref()),
            };
            entry = match change(current, action, domain, now) {
                Change::Unchanged | Change::Flushed(None) => entry,
                Change::Flushed(Some(e)) | Change::Held(e) | Change::Released(e) => Some(e),
                Change::Deleted { left, .. } => left,
            };
        }
        entry
    }

    fn delete(domain: Option<&str>) -> Waiting {
        Waiting::Delete {
            bounce: false,
            domain: domain.map(str::to_owned),
        }
    }

    #[test]
    fn a_hold_after_a_waiting_delete_does_not_undo_it() {
        let set = ClaimSet::default();
        let id = mta_envelope::QueueId::new(7);
        assert!(set.claim(id), "the attempt");
        assert!(!set.claim_or_wait(id, Some(delete(None))));
        assert!(!set.claim_or_wait(id, Some(Waiting::Hold)));
        let waiting = set.release(id).expect("actions waited");
        let e = entry(&["x@b.test", "y@c.test"]);
        assert_eq!(
            carry_out(Some(e.clone()), &waiting, NOW),
            None,
            "deleted, not held"
        );
        // Deleting one domain, then holding: the rest is held, the
        // deleted recipients stay deleted.
        let left = carry_out(
            Some(e.clone()),
            &[delete(Some("b.test")), Waiting::Hold],
            NOW,
        )
        .expect("y is left");
        assert_eq!(left.queue, QueueName::Held);
        assert_eq!(
            left.recipients,
            [RecipientState::Failed, RecipientState::Pending]
        );
        // The other order comes to the same.
        assert_eq!(
            carry_out(Some(e), &[Waiting::Hold, delete(Some("b.test"))], NOW),
            Some(left)
        );
    }

    #[test]
    fn each_action_and_when_it_changes_nothing() {
        let e = entry(&["x@b.test", "y@c.test"]);
        // Flush: due now, unless due already; a held message stays held.
        assert_eq!(
            change(&e, Action::Flush, None, NOW),
            Change::Flushed(Some(IndexEntry {
                next_attempt: NOW,
                ..e.clone()
            }))
        );
        let due = IndexEntry {
            next_attempt: NOW,
            ..e.clone()
        };
        assert_eq!(
            change(&due, Action::Flush, None, NOW),
            Change::Flushed(None)
        );
        let Change::Held(held) = change(&e, Action::Hold, None, NOW) else {
            panic!("held")
        };
        assert_eq!((held.queue, held.held_since), (QueueName::Held, Some(NOW)));
        assert_eq!(change(&held, Action::Flush, None, NOW), Change::Unchanged);
        assert_eq!(change(&held, Action::Hold, None, NOW), Change::Unchanged);
        assert_eq!(change(&e, Action::Release, None, NOW), Change::Unchanged);
        // Release: the time held is added, due now, in the disk queue.
        let Change::Released(released) = change(&held, Action::Release, None, NOW + 50) else {
            panic!("released")
        };
        assert_eq!(released.queue, QueueName::Disk);
        assert_eq!(released.held_secs, 50);
        assert_eq!(released.held_since, None);
        assert_eq!(released.next_attempt, NOW + 50);
        // Delete: only pending recipients, at the domain when given.
        match change(&e, Action::Delete, Some("C.test"), NOW) {
            Change::Deleted { doomed, left } => {
                assert_eq!(doomed, [1]);
                let left = left.expect("x is left");
                assert_eq!(left.recipients[1], RecipientState::Failed);
                assert_eq!(left.recipients[0], RecipientState::Pending);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            change(&e, Action::Delete, Some("d.test"), NOW),
            Change::Unchanged
        );
        let mut done = e.clone();
        done.recipients = vec![RecipientState::Delivered, RecipientState::Failed];
        assert_eq!(change(&done, Action::Delete, None, NOW), Change::Unchanged);
        match change(&e, Action::Delete, None, NOW) {
            Change::Deleted { doomed, left } => {
                assert_eq!(doomed, [0, 1]);
                assert_eq!(left, None, "nothing left: removed");
            }
            other => panic!("{other:?}"),
        }
    }
}
