//! What the operator sees of the queue: a page of the listing, one
//! message in full, and the qshape summary, in the queue's own row types
//! (mapping them to a wire format is the daemon's business).
//!
//! Listings walk the index a page at a time (at most [`PAGE_SCAN`]
//! entries per step): memory stays flat however large the queue is, and
//! delivery goes on meanwhile. Volatile messages held only in memory
//! (`steering.rs`) are merged in id order. Every call here reads the
//! index: blocking, for the blocking pool.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::str::FromStr;

use mta_envelope::{unix_now, Envelope, QueueId};
use mta_spool::{HistoryRecord, IndexEntry, QueueName, RecipientState, SpoolError};

use crate::error::SteerError;
use crate::operator::Operator;

/// Entries one step of a listing or a bulk action looks at.
pub(crate) const PAGE_SCAN: usize = 4096;

/// Most messages in one page of a listing.
pub const MAX_PAGE: usize = 1000;

/// qshape's age buckets, in minutes.
pub const SUMMARY_BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// A recipient's state as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientStatus {
    /// Not tried yet.
    Pending,
    /// Tried, and to be tried again.
    Deferred,
    /// Done.
    Delivered,
    /// Failed for good.
    Failed,
}

impl RecipientStatus {
    /// Its word: `pending`, `deferred`, `delivered`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Deferred => "deferred",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        }
    }

    fn of(entry: &IndexEntry, index: usize) -> RecipientStatus {
        match entry.recipients[index] {
            RecipientState::Delivered => RecipientStatus::Delivered,
            RecipientState::Failed => RecipientStatus::Failed,
            RecipientState::Pending if entry.last_errors.contains_key(&index) => {
                RecipientStatus::Deferred
            }
            RecipientState::Pending => RecipientStatus::Pending,
        }
    }
}

impl FromStr for RecipientStatus {
    type Err = SteerError;

    fn from_str(s: &str) -> Result<Self, SteerError> {
        use RecipientStatus::*;
        [Pending, Deferred, Delivered, Failed]
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                SteerError::Invalid(format!(
                    "no status {s:?}: pending, deferred, delivered or failed"
                ))
            })
    }
}

/// A queue by its name: `ram`, `bounce`, `disk` or `held`.
pub fn queue_named(name: &str) -> Result<QueueName, SteerError> {
    [
        QueueName::Ram,
        QueueName::Bounce,
        QueueName::Disk,
        QueueName::Held,
    ]
    .into_iter()
    .find(|q| q.as_str() == name)
    .ok_or_else(|| {
        SteerError::Invalid(format!(
            "no queue {name:?}: the queues are ram, bounce, disk and held"
        ))
    })
}

/// A queue id as the operator types it.
pub fn parse_id(id: &str) -> Result<QueueId, SteerError> {
    id.trim()
        .parse()
        .map_err(|e: mta_envelope::BadQueueId| SteerError::Invalid(e.to_string()))
}

/// A destination domain as the operator types it: trimmed, without the
/// final dot, lower case.
pub fn domain(domain: &str) -> Result<String, SteerError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '@' || c.is_control()) {
        return Err(SteerError::Invalid(format!("not a domain: {domain:?}")));
    }
    Ok(d)
}

/// Which messages a listing or a summary looks at. Every field narrows
/// it; none set means the whole queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// In this queue.
    pub queue: Option<QueueName>,
    /// With a recipient at this domain, without regard to case.
    pub domain: Option<String>,
    /// From this sender: a whole address, `@domain` for any sender at that
    /// domain, or `<>` for the null sender; without regard to case.
    pub sender: Option<String>,
    /// Arrived at least this many seconds ago.
    pub older_than_secs: Option<u64>,
    /// With a recipient in this state.
    pub status: Option<RecipientStatus>,
}

/// A [`Filter`], checked and ready to match.
struct Matcher {
    queue: Option<QueueName>,
    domain: Option<String>,
    sender: Option<String>,
    arrived_before: Option<u64>,
    status: Option<RecipientStatus>,
}

impl Matcher {
    fn new(f: &Filter, now: u64) -> Result<Matcher, SteerError> {
        Ok(Matcher {
            queue: f.queue,
            domain: f.domain.as_deref().map(domain).transpose()?,
            sender: f.sender.as_ref().map(|s| s.to_ascii_lowercase()),
            arrived_before: f.older_than_secs.map(|s| now.saturating_sub(s)),
            status: f.status,
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
            if !(0..entry.recipients.len()).any(|i| RecipientStatus::of(entry, i) == status) {
                return false;
            }
        }
        true
    }
}

pub(crate) fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// The recipients still to be delivered, at `domain` when one is given
/// (what `--domain` selects for an action and counts in a summary).
pub(crate) fn pending_at(entry: &IndexEntry, domain: Option<&str>) -> Vec<usize> {
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

/// One recipient in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRow {
    /// The address.
    pub address: String,
    /// Where it stands.
    pub status: RecipientStatus,
    /// Attempts that reached a verdict for it.
    pub attempts: u32,
    /// The last reply or local cause, with its enhanced status code.
    pub last_reply: Option<String>,
}

/// One message in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// The queue id.
    pub id: QueueId,
    /// The queue it is in.
    pub queue: QueueName,
    /// Bytes of content.
    pub size: u64,
    /// When it arrived (unix seconds).
    pub arrival: u64,
    /// The sender (empty for `<>`).
    pub sender: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it is next attempted (unix seconds); None while held.
    pub next_attempt: Option<u64>,
    /// Every recipient, in envelope order.
    pub recipients: Vec<RecipientRow>,
    /// Held in memory only, with no spool file yet (volatile mode): a
    /// crash loses it.
    pub in_memory: bool,
    /// The user the client authenticated as (SMTP AUTH), if it did.
    pub auth: Option<String>,
}

/// One page of the listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The messages, oldest first.
    pub messages: Vec<MessageRow>,
    /// Where the next page starts (after this id); None at the end.
    pub next: Option<QueueId>,
}

/// One message in full.
#[derive(Debug, Clone)]
pub struct Detail {
    /// What a listing shows.
    pub message: MessageRow,
    /// The envelope as stored.
    pub envelope: Envelope,
    /// Every attempt's result for every recipient, oldest first, as the
    /// spool keeps it ([`Detail::recipient`] names its recipient).
    pub history: Vec<HistoryRecord>,
    /// The header section, as received.
    pub headers: String,
    /// The body, when asked for (lossy UTF-8).
    pub body: Option<String>,
}

impl Detail {
    /// The address of the recipient a history record is about (empty if
    /// the record names none of the envelope's).
    pub fn recipient(&self, record: &HistoryRecord) -> String {
        self.envelope
            .recipients
            .get(record.recipient)
            .map(|r| r.address.to_string())
            .unwrap_or_default()
    }
}

/// Messages per destination domain and age, as Postfix's qshape shows
/// them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The age buckets' upper bounds in minutes; the last bucket is
    /// everything older than the last bound.
    pub bucket_minutes: Vec<u64>,
    /// Every message counted once.
    pub total: SummaryRow,
    /// One row per domain with a recipient still to be delivered, the
    /// most messages first. A message to several domains counts in each.
    pub domains: Vec<SummaryRow>,
}

/// One row of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryRow {
    /// The domain (`TOTAL` for the total row).
    pub domain: String,
    /// Messages.
    pub messages: u64,
    /// Messages per age bucket (one more than the bounds: the oldest).
    pub buckets: Vec<u64>,
}

/// One listing row, with each recipient's attempts and last reply from
/// the message's history.
fn row(id: QueueId, entry: &IndexEntry, history: &[HistoryRecord], in_memory: bool) -> MessageRow {
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
                status: RecipientStatus::of(entry, i),
                attempts,
                last_reply,
            }
        })
        .collect();
    MessageRow {
        id,
        queue: entry.queue,
        size: entry.size,
        arrival: entry.arrival,
        sender: entry.sender.clone(),
        attempts: entry.attempts,
        next_attempt: entry.scheduled(),
        recipients,
        in_memory,
        auth: entry.auth.clone(),
    }
}

impl Operator {
    /// One page of the listing: at most `limit` messages after `after`.
    /// Blocking (it reads the index): call it off the async threads.
    pub fn list(
        &self,
        filter: &Filter,
        after: Option<QueueId>,
        limit: usize,
    ) -> Result<Page, SteerError> {
        let inner = &self.inner;
        let f = Matcher::new(filter, unix_now())?;
        let limit = limit.clamp(1, MAX_PAGE);
        let page = inner
            .store
            .blocking()
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
        Ok(Page {
            messages: rows
                .iter()
                .map(|(id, entry, in_memory)| {
                    let history = if *in_memory {
                        Vec::new()
                    } else {
                        inner.store.blocking().history(*id).unwrap_or_default()
                    };
                    row(*id, entry, &history, *in_memory)
                })
                .collect(),
            next,
        })
    }

    /// One message in full: envelope, history, headers, and the body when
    /// asked. Blocking.
    pub fn show(&self, id: QueueId, body: bool) -> Result<Detail, SteerError> {
        let inner = &self.inner;
        let not_found = || SteerError::NotFound(id.to_string());
        let (mut entry, envelope, content, records, in_memory) =
            match inner.store.blocking().entry(id)? {
                Some(entry) => {
                    let (envelope, content) = match inner.store.blocking().read(id) {
                        Ok(message) => message,
                        Err(SpoolError::NotFound { .. }) => return Err(not_found()),
                        Err(e @ SpoolError::Corrupt { .. }) => return Err(self.unreadable(id, &e)),
                        Err(e) => return Err(e.into()),
                    };
                    let records = inner.store.blocking().history(id)?;
                    (entry, envelope, content, records, false)
                }
                None => {
                    let m = inner.steering.remembered(id).ok_or_else(not_found)?;
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
        let mut message = row(id, &entry, &records, in_memory);
        // The envelope is the truth (an entry of an earlier format has no
        // user).
        message.auth.clone_from(&envelope.origin.auth);
        Ok(Detail {
            message,
            envelope,
            history: records,
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
    fn unreadable(&self, id: QueueId, e: &SpoolError) -> SteerError {
        let inner = &self.inner;
        let note = match inner.claim(id) {
            None => "it is being attempted, which sets it aside in corrupt/",
            Some(_claim) => match inner.store.blocking().entry(id) {
                Ok(Some(entry)) if entry.queue == QueueName::Held => {
                    "it is held; once released, it is set aside in corrupt/ and its recipients fail (5.3.0)"
                }
                Ok(Some(mut entry)) => {
                    entry.next_attempt = entry.next_attempt.min(unix_now());
                    match inner.store.blocking().update(id, &entry) {
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
        SteerError::Conflict(format!(
            "message {id}: the queued copy is unreadable ({e}); {note}"
        ))
    }

    /// Messages per domain (of recipients still to be delivered) and age
    /// bucket (qshape). Walks the whole queue a page at a time; memory
    /// grows with the number of domains, not of messages. Blocking.
    pub fn summary(&self, filter: &Filter) -> Result<Summary, SteerError> {
        let inner = &self.inner;
        let now = unix_now();
        let f = Matcher::new(filter, now)?;
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
            let page = inner
                .store
                .blocking()
                .list(after, PAGE_SCAN, PAGE_SCAN, |_, e| {
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
        Ok(Summary {
            bucket_minutes: SUMMARY_BUCKETS.to_vec(),
            total,
            domains,
        })
    }
}
