//! The operator's hands on a live queue: list, show, summary, flush,
//! hold, release, delete, and paused destination domains.
//!
//! Every change to a message goes through its claim, the same in-flight
//! set the runners use, so an operator's change and an attempt never
//! write one message at once. A hold or delete of a message being
//! attempted right now waits: it is noted beside the claim and carried
//! out when the attempt lets go of it (`Claim`'s drop), on the state the
//! attempt left, so a message is never deleted half-way through an
//! attempt. A message waiting in a runner's line (paused, or no slot
//! free) is not being attempted: a hold or delete takes it out of the
//! line and happens at once.
//!
//! Volatile messages held only in memory are registered here too
//! ([`InMemory`]), so listings, counts, `show`, hold and delete reach them
//! like the others; a hold writes one to the held queue on disk.
//!
//! Listings and bulk actions walk the index a page at a time (at most
//! [`PAGE_SCAN`] entries per step): memory stays flat however large the
//! queue is, and delivery goes on meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use mta_control::{
    ActionReport, HistoryRow, MessageDetail, MessageRow, QueueAction, QueueFilter, QueuePage,
    QueueSummary, RecipientRow, Selection, SummaryRow, SUMMARY_BUCKETS,
};
use mta_envelope::QueueId;
use mta_spool::{HistoryRecord, IndexEntry, QueueName, RecipientState, SpoolError};
use tracing::{info, warn};

use crate::claims::Waiting;
use crate::dsn::DeletedBounce;
use crate::inner::Inner;
use crate::job::{Claim, ClaimOwner, Job};
use crate::log::{Event, Record};
use crate::steering::{InMemory, Steering};
use mta_envelope::unix_now;

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

/// Entries one step of a listing or a bulk action looks at.
pub(crate) const PAGE_SCAN: usize = 4096;

/// Most messages in one page of a listing.
pub(crate) const MAX_PAGE: usize = 1000;

/// The saved-state name of the paused domains.
const PAUSED_STATE: &str = "paused-domains";

/// A queue command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// No message with that id is queued.
    #[error("no message {0} in the queue")]
    NotFound(String),
    /// The request itself is wrong (a bad id, filter or selection).
    #[error("{0}")]
    Invalid(String),
    /// The queue could not be read or written.
    #[error("queue: {0}")]
    Spool(#[from] SpoolError),
}

/// Loads the paused domains saved by an earlier run.
pub(crate) fn load_paused(inner: &Inner) {
    match inner.spool.load_state(PAUSED_STATE) {
        Ok(Some(bytes)) => match serde_json::from_slice::<BTreeSet<String>>(&bytes) {
            Ok(domains) => {
                if !domains.is_empty() {
                    info!(domains = ?domains, "delivery to these domains stays paused");
                }
                inner.steering.set_paused(domains);
            }
            Err(e) => warn!(error = %e, "saved paused domains unreadable; none paused"),
        },
        Ok(None) => {}
        Err(e) => warn!(error = %e, "cannot read the saved paused domains"),
    }
}

fn normalize_domain(domain: &str) -> Result<String, SteerError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@' || c.is_control()) {
        return Err(SteerError::Invalid(format!("not a domain: {domain:?}")));
    }
    Ok(d)
}

/// Pauses delivery to `domain`, durably. True when it was not paused.
pub(crate) fn pause_domain(inner: &Inner, domain: &str) -> Result<bool, SteerError> {
    let domain = normalize_domain(domain)?;
    let mut domains: BTreeSet<String> = inner.steering.paused_domains().into_iter().collect();
    let added = domains.insert(domain.clone());
    save_paused(inner, &domains)?;
    inner.steering.set_paused(domains);
    info!(domain, "delivery paused by the operator");
    Ok(added)
}

/// Resumes delivery to `domain` and makes its messages due now. Returns
/// whether it was paused, and what the flush did.
pub(crate) async fn resume_domain(
    inner: &Arc<Inner>,
    domain: &str,
) -> Result<(bool, ActionReport), SteerError> {
    let domain = normalize_domain(domain)?;
    let mut domains: BTreeSet<String> = inner.steering.paused_domains().into_iter().collect();
    let removed = domains.remove(&domain);
    save_paused(inner, &domains)?;
    inner.steering.set_paused(domains);
    info!(domain, "delivery resumed by the operator");
    let selection = Selection {
        domain: Some(domain),
        ..Selection::default()
    };
    let report = act(inner, QueueAction::Flush, &selection, false).await?;
    Ok((removed, report))
}

fn save_paused(inner: &Inner, domains: &BTreeSet<String>) -> Result<(), SteerError> {
    let bytes = serde_json::to_vec(domains).expect("a set of strings serializes");
    Ok(inner.spool.save_state(PAUSED_STATE, &bytes)?)
}

/// A recipient's status word: pending (not tried yet), deferred,
/// delivered or failed.
fn recipient_status(entry: &IndexEntry, index: usize) -> &'static str {
    match entry.recipients[index] {
        RecipientState::Delivered => "delivered",
        RecipientState::Failed => "failed",
        RecipientState::Pending if entry.last_errors.contains_key(&index) => "deferred",
        RecipientState::Pending => "pending",
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// A [`QueueFilter`], checked and ready to match.
struct Filter {
    queue: Option<QueueName>,
    domain: Option<String>,
    sender: Option<String>,
    arrived_before: Option<u64>,
    status: Option<&'static str>,
}

fn queue_by_name(name: &str) -> Option<QueueName> {
    [
        QueueName::Ram,
        QueueName::Bounce,
        QueueName::Disk,
        QueueName::Held,
    ]
    .into_iter()
    .find(|q| q.as_str() == name)
}

impl Filter {
    fn new(f: &QueueFilter, now: u64) -> Result<Filter, SteerError> {
        let queue = match f.queue.as_deref() {
            None => None,
            Some(name) => Some(queue_by_name(name).ok_or_else(|| {
                SteerError::Invalid(format!(
                    "no queue {name:?}: the queues are ram, bounce, disk and held"
                ))
            })?),
        };
        let status = match f.status.as_deref() {
            None => None,
            Some(s) => Some(
                ["pending", "deferred", "delivered", "failed"]
                    .into_iter()
                    .find(|&w| w == s)
                    .ok_or_else(|| {
                        SteerError::Invalid(format!(
                            "no status {s:?}: pending, deferred, delivered or failed"
                        ))
                    })?,
            ),
        };
        Ok(Filter {
            queue,
            domain: f.domain.as_deref().map(normalize_domain).transpose()?,
            sender: f.sender.as_ref().map(|s| s.to_ascii_lowercase()),
            arrived_before: f.older_than_secs.map(|s| now.saturating_sub(s)),
            status,
        })
    }

    fn matches(&self, entry: &IndexEntry) -> bool {
        if self.queue.is_some_and(|q| q != entry.queue) {
            return false;
        }
        if self.arrived_before.is_some_and(|t| entry.arrival > t) {
            return false;
        }
        if let Some(domain) = &self.domain {
            if !entry
                .rcpts
                .iter()
                .any(|r| domain_of(r).eq_ignore_ascii_case(domain))
            {
                return false;
            }
        }
        if let Some(sender) = &self.sender {
            let actual = entry.sender.to_ascii_lowercase();
            let ok = match sender.as_str() {
                "<>" | "" => actual.is_empty(),
                s if s.starts_with('@') => actual.ends_with(s),
                s => actual == s,
            };
            if !ok {
                return false;
            }
        }
        if let Some(status) = self.status {
            if !(0..entry.recipients.len()).any(|i| recipient_status(entry, i) == status) {
                return false;
            }
        }
        true
    }
}

fn parse_id(id: &str) -> Result<QueueId, SteerError> {
    id.trim()
        .parse()
        .map_err(|e: mta_envelope::BadQueueId| SteerError::Invalid(e.to_string()))
}

/// One listing row, with each recipient's attempts and last reply from
/// the message's history.
fn row(id: QueueId, entry: &IndexEntry, history: &[HistoryRecord]) -> MessageRow {
    let recipients = (0..entry.recipients.len())
        .map(|i| {
            let mut mine = history.iter().filter(|h| h.recipient == i);
            let attempts = mine.clone().filter(|h| h.attempt > 0).count() as u32;
            let last_reply = mine
                .next_back()
                .map(|h| format!("{} {}", h.status, h.reply).trim_start().to_owned())
                .or_else(|| {
                    entry
                        .last_errors
                        .get(&i)
                        .map(|e| format!("{} {}", e.status, e.reason))
                });
            RecipientRow {
                address: entry.rcpts.get(i).cloned().unwrap_or_default(),
                status: recipient_status(entry, i).to_owned(),
                attempts,
                last_reply,
            }
        })
        .collect();
    MessageRow {
        id: id.to_string(),
        queue: entry.queue.as_str().to_owned(),
        size: entry.size,
        arrival: entry.arrival,
        sender: entry.sender.clone(),
        attempts: entry.attempts,
        next_attempt: entry.scheduled(),
        recipients,
        in_memory: false,
    }
}

/// One page of the listing. Blocking (index reads): run it off the
/// async threads.
pub(crate) fn list(
    inner: &Inner,
    filter: &QueueFilter,
    after: Option<&str>,
    limit: usize,
) -> Result<QueuePage, SteerError> {
    let f = Filter::new(filter, unix_now())?;
    let after = after.map(parse_id).transpose()?;
    let limit = limit.clamp(1, MAX_PAGE);
    let page = inner
        .spool
        .list(after, limit, PAGE_SCAN, |_, e| f.matches(e))?;
    // Volatile messages in memory, in the id range this page covered (up
    // to where it stopped, or to the end), merged in id order.
    let memory = inner
        .steering
        .remembered_in(after, page.next, limit, |e| f.matches(e));
    let mut rows: Vec<(QueueId, IndexEntry, bool)> = page
        .items
        .into_iter()
        .map(|(id, entry)| (id, entry, false))
        .collect();
    let on_disk: HashSet<QueueId> = rows.iter().map(|(id, ..)| *id).collect();
    rows.extend(
        memory
            .into_iter()
            .filter(|(id, _)| !on_disk.contains(id))
            .map(|(id, entry)| (id, entry, true)),
    );
    rows.sort_by_key(|(id, ..)| *id);
    let mut next = page.next;
    if rows.len() > limit {
        rows.truncate(limit);
        next = rows.last().map(|(id, ..)| *id);
    }
    Ok(QueuePage {
        messages: rows
            .iter()
            .map(|(id, entry, in_memory)| {
                let history = if *in_memory {
                    Vec::new()
                } else {
                    inner.spool.history(*id).unwrap_or_default()
                };
                MessageRow {
                    in_memory: *in_memory,
                    ..row(*id, entry, &history)
                }
            })
            .collect(),
        next: next.map(|id| id.to_string()),
    })
}

/// One message in full. Blocking.
pub(crate) fn show(inner: &Arc<Inner>, id: &str, body: bool) -> Result<MessageDetail, SteerError> {
    let qid = parse_id(id)?;
    let not_found = || SteerError::NotFound(qid.to_string());
    let (mut entry, envelope, content, records, in_memory) = match inner.spool.entry(qid)? {
        Some(entry) => {
            let (envelope, content) = match inner.spool.read(qid) {
                Ok(message) => message,
                Err(SpoolError::NotFound { .. }) => return Err(not_found()),
                Err(e @ SpoolError::Corrupt { .. }) => return Err(unreadable(inner, qid, &e)),
                Err(e) => return Err(e.into()),
            };
            let records = inner.spool.history(qid)?;
            (entry, envelope, content, records, false)
        }
        None => {
            let m = inner.steering.remembered(qid).ok_or_else(not_found)?;
            (m.entry, m.envelope, m.content.to_vec(), Vec::new(), true)
        }
    };
    if !entry.has_addresses() {
        entry.fill_addresses(&envelope);
    }
    let split = content
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(content.len(), |p| p + 2);
    let message = MessageRow {
        in_memory,
        ..row(qid, &entry, &records)
    };
    let history = records
        .into_iter()
        .map(|h| HistoryRow {
            time: h.time,
            attempt: h.attempt,
            recipient: entry.rcpts.get(h.recipient).cloned().unwrap_or_default(),
            event: h.event,
            status: h.status,
            reply: h.reply,
            remote: h.remote,
        })
        .collect();
    Ok(MessageDetail {
        message,
        envelope: serde_json::to_value(&envelope).unwrap_or_default(),
        history,
        headers: String::from_utf8_lossy(&content[..split]).into_owned(),
        body: body.then(|| {
            let start = (split + 2).min(content.len());
            String::from_utf8_lossy(&content[start..]).into_owned()
        }),
    })
}

/// `show` met a corrupt spool file: the message is made due now, so the
/// disk runner sets it aside and bounces it (as its next attempt would),
/// and the answer says so.
fn unreadable(inner: &Arc<Inner>, id: QueueId, e: &SpoolError) -> SteerError {
    let note = match inner.claim(id) {
        None => "it is being attempted, which sets it aside in corrupt/",
        Some(_claim) => match inner.spool.entry(id) {
            Ok(Some(entry)) if entry.queue == QueueName::Held => {
                "it is held; once released, it is set aside in corrupt/ and its recipients fail (5.3.0)"
            }
            Ok(Some(mut entry)) => {
                entry.next_attempt = entry.next_attempt.min(unix_now());
                match inner.spool.update(id, &entry) {
                    Ok(()) => {
                        inner.disk_wake.notify_one();
                        "it is being set aside in corrupt/ now, and its recipients fail (5.3.0) with a DSN to the sender"
                    }
                    Err(_) => "its next attempt sets it aside in corrupt/",
                }
            }
            _ => "its next attempt sets it aside in corrupt/",
        },
    };
    SteerError::Invalid(format!(
        "message {id}: the queued copy is unreadable ({e}); {note}"
    ))
}

/// Messages per domain (of recipients still to be delivered) and age.
/// Walks the whole queue a page at a time; memory grows with the number
/// of domains, not of messages. Blocking.
pub(crate) fn summary(inner: &Inner, filter: &QueueFilter) -> Result<QueueSummary, SteerError> {
    let now = unix_now();
    let f = Filter::new(filter, now)?;
    let width = SUMMARY_BUCKETS.len() + 1;
    let bucket = |arrival: u64| {
        let minutes = now.saturating_sub(arrival) / 60;
        SUMMARY_BUCKETS
            .iter()
            .position(|&b| minutes < b)
            .unwrap_or(SUMMARY_BUCKETS.len())
    };
    let mut total = SummaryRow {
        domain: "TOTAL".into(),
        messages: 0,
        buckets: vec![0; width],
    };
    let mut domains: BTreeMap<String, SummaryRow> = BTreeMap::new();
    // One message: its age bucket, and the domains it still has
    // recipients at.
    let place = |e: &IndexEntry| -> (usize, BTreeSet<String>) {
        let mine = pending_at(e, None)
            .into_iter()
            .filter_map(|i| e.rcpts.get(i))
            .map(|r| domain_of(r).to_ascii_lowercase())
            .collect();
        (bucket(e.arrival), mine)
    };
    let mut count = |(b, mine): (usize, BTreeSet<String>)| {
        total.messages += 1;
        total.buckets[b] += 1;
        for domain in mine {
            let row = domains.entry(domain.clone()).or_insert_with(|| SummaryRow {
                domain,
                messages: 0,
                buckets: vec![0; width],
            });
            row.messages += 1;
            row.buckets[b] += 1;
        }
    };
    let mut after = None;
    loop {
        let mut seen = Vec::new();
        let page = inner.spool.list(after, PAGE_SCAN, PAGE_SCAN, |_, e| {
            if f.matches(e) {
                seen.push(place(e));
            }
            false
        })?;
        seen.into_iter().for_each(&mut count);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    // Volatile messages in memory are in no index page.
    for (_, e) in inner
        .steering
        .remembered_in(None, None, usize::MAX, |e| f.matches(e))
    {
        count(place(&e));
    }
    let mut domains: Vec<SummaryRow> = domains.into_values().collect();
    domains.sort_by(|a, b| b.messages.cmp(&a.messages).then(a.domain.cmp(&b.domain)));
    Ok(QueueSummary {
        bucket_minutes: SUMMARY_BUCKETS.to_vec(),
        total,
        domains,
    })
}

/// Flushes, holds, releases or deletes the selected messages.
pub(crate) async fn act(
    inner: &Arc<Inner>,
    action: QueueAction,
    selection: &Selection,
    bounce: bool,
) -> Result<ActionReport, SteerError> {
    let chosen = usize::from(selection.id.is_some())
        + usize::from(selection.domain.is_some())
        + usize::from(selection.all);
    if chosen != 1 {
        return Err(SteerError::Invalid(
            "say which messages: one queue id, --domain D, or --all".into(),
        ));
    }
    if bounce && action != QueueAction::Delete {
        return Err(SteerError::Invalid("--bounce goes with delete only".into()));
    }
    let mut report = ActionReport::default();
    if let Some(id) = &selection.id {
        let id = parse_id(id)?;
        if inner.spool.entry(id)?.is_none() && inner.steering.remembered(id).is_none() {
            return Err(SteerError::NotFound(id.to_string()));
        }
        act_on(inner, id, action, bounce, None, &mut report).await?;
        return Ok(report);
    }
    let domain = selection
        .domain
        .as_deref()
        .map(normalize_domain)
        .transpose()?;
    let mut after = None;
    loop {
        let spool = inner.spool.clone();
        let wanted = domain.clone();
        let page = tokio::task::spawn_blocking(move || {
            spool.list(after, PAGE_SCAN, PAGE_SCAN, |_, e| match &wanted {
                // A domain selects messages with a recipient still to be
                // delivered there.
                Some(d) => !pending_at(e, Some(d)).is_empty(),
                None => true,
            })
        })
        .await
        .map_err(|e| SteerError::Invalid(format!("listing failed: {e}")))??;
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
        if inner.spool.entry(id)?.is_none() {
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
    action: QueueAction,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> Result<(), SteerError> {
    report.matched += 1;
    let waiting = match action {
        QueueAction::Hold => Some(Waiting::Hold),
        QueueAction::Delete => Some(Waiting::Delete {
            bounce,
            domain: domain.map(str::to_owned),
        }),
        QueueAction::Flush | QueueAction::Release => None,
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
    action: QueueAction,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> Result<(), SteerError> {
    let (keep, result) = if job.on_disk {
        let result = act_claimed(inner, &job.claim, action, bounce, domain, report).await;
        // The index says what is left: nothing (deleted), a held message
        // (the disk runner releases it), or recipients still to try.
        let keep = match inner.spool.entry(job.id) {
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
    action: QueueAction,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> (bool, Result<(), SteerError>) {
    let id = job.id;
    let now = unix_now();
    match action {
        QueueAction::Hold => {
            // Held on disk, like any held message: it survives a stop.
            let mut entry = job.entry.clone();
            entry.queue = QueueName::Held;
            entry.held_since = Some(now);
            if let Err(e) = inner.store_on_disk(job, &entry).await {
                // Stored but not moved to the held queue: it is an
                // ordinary message on disk now, and waits as one.
                if let Ok(Some(stored)) = inner.spool.entry(id) {
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
            (false, Ok(()))
        }
        QueueAction::Delete => {
            let doomed = pending_at(&job.entry, domain);
            if doomed.is_empty() {
                report.unchanged += 1;
                return (true, Ok(()));
            }
            if bounce {
                match crate::dsn::bounce_deleted(inner, id, &job.envelope, &job.content, &doomed)
                    .await
                {
                    DeletedBounce::Queued => report.dsns += 1,
                    DeletedBounce::NotWanted => {}
                    DeletedBounce::Failed => {
                        return (
                            true,
                            Err(SteerError::Invalid(format!(
                                "{id}: the DSN could not be queued, so nothing was deleted (is the disk full?)"
                            ))),
                        )
                    }
                }
            }
            for &i in &doomed {
                job.entry.recipients[i] = RecipientState::Failed;
                job.entry.last_errors.remove(&i);
                log_operator(inner, Event::Deleted, id, &job.entry, Some(i));
            }
            report.recipients_deleted += doomed.len() as u64;
            report.done += 1;
            let left = !pending_at(&job.entry, None).is_empty();
            if left {
                inner.steering.remember(
                    id,
                    InMemory {
                        entry: job.entry.clone(),
                        envelope: job.envelope.clone(),
                        content: job.content.clone(),
                    },
                );
            }
            (left, Ok(()))
        }
        QueueAction::Flush | QueueAction::Release => {
            report.unchanged += 1;
            (true, Ok(()))
        }
    }
}

/// Carries out the actions that waited for an attempt to end, in the
/// order they were asked for; `claim` is the attempt's, handed over.
async fn perform_waiting(inner: Arc<Inner>, claim: Claim, waiting: Vec<Waiting>) {
    for waiting in waiting {
        let mut report = ActionReport::default();
        let (action, bounce, domain) = match waiting {
            Waiting::Hold => (QueueAction::Hold, false, None),
            Waiting::Delete { bounce, domain } => (QueueAction::Delete, bounce, domain),
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
    inner.spool.append_history(id, &records)
}

/// The recipients still to be delivered, at `domain` when one is given
/// (what `--domain` selects for an action and counts in a summary).
fn pending_at(entry: &IndexEntry, domain: Option<&str>) -> Vec<usize> {
    (0..entry.recipients.len())
        .filter(|&i| entry.recipients[i] == RecipientState::Pending)
        .filter(|&i| {
            domain.is_none_or(|d| {
                entry
                    .rcpts
                    .get(i)
                    .is_some_and(|r| domain_of(r).eq_ignore_ascii_case(d))
            })
        })
        .collect()
}

async fn act_claimed(
    inner: &Arc<Inner>,
    claim: &Claim,
    action: QueueAction,
    bounce: bool,
    domain: Option<&str>,
    report: &mut ActionReport,
) -> Result<(), SteerError> {
    let id = claim.id();
    let now = unix_now();
    let Some(mut entry) = inner.spool.entry(id)? else {
        // Delivered and gone meanwhile.
        report.unchanged += 1;
        return Ok(());
    };
    let spool = &inner.spool;
    match action {
        QueueAction::Flush => {
            if entry.queue == QueueName::Held {
                report.unchanged += 1;
                return Ok(());
            }
            if entry.next_attempt > now {
                entry.next_attempt = now;
                spool.update(id, &entry)?;
            }
            report.done += 1;
            inner.disk_wake.notify_one();
        }
        QueueAction::Hold => {
            if entry.queue == QueueName::Held {
                report.unchanged += 1;
                return Ok(());
            }
            entry.queue = QueueName::Held;
            entry.held_since = Some(now);
            spool.update(id, &entry)?;
            note_history(inner, id, &pending_at(&entry, None), Event::Held, now)?;
            log_operator(inner, Event::Held, id, &entry, None);
            report.done += 1;
        }
        QueueAction::Release => {
            if entry.queue != QueueName::Held {
                report.unchanged += 1;
                return Ok(());
            }
            let since = entry.held_since.take().unwrap_or(now);
            entry.held_secs = entry.held_secs.saturating_add(now.saturating_sub(since));
            entry.queue = QueueName::Disk;
            entry.next_attempt = now;
            spool.update(id, &entry)?;
            note_history(inner, id, &pending_at(&entry, None), Event::Released, now)?;
            log_operator(inner, Event::Released, id, &entry, None);
            report.done += 1;
            inner.disk_wake.notify_one();
        }
        QueueAction::Delete => {
            if !entry.has_addresses() {
                if let Ok(envelope) = spool.envelope(id) {
                    entry.fill_addresses(&envelope);
                }
            }
            let doomed = pending_at(&entry, domain);
            if doomed.is_empty() {
                report.unchanged += 1;
                return Ok(());
            }
            if bounce {
                // The DSN is durable before anything is deleted; if it
                // cannot be made, nothing is.
                let (envelope, content) = spool.read(id)?;
                match crate::dsn::bounce_deleted(inner, id, &envelope, &content, &doomed).await {
                    DeletedBounce::Queued => report.dsns += 1,
                    DeletedBounce::NotWanted => {}
                    DeletedBounce::Failed => {
                        return Err(SteerError::Invalid(format!(
                            "{id}: the DSN could not be queued, so nothing was deleted (is the disk full?)"
                        )))
                    }
                }
            }
            for &i in &doomed {
                entry.recipients[i] = RecipientState::Failed;
                entry.last_errors.remove(&i);
                log_operator(inner, Event::Deleted, id, &entry, Some(i));
            }
            report.recipients_deleted += doomed.len() as u64;
            if pending_at(&entry, None).is_empty() {
                spool.remove(id)?;
            } else {
                spool.update(id, &entry)?;
                note_history(inner, id, &doomed, Event::Deleted, now)?;
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
    inner.log.write(&record);
}
