//! What the index knows about a message: its [`IndexEntry`] (the
//! [`QueueName`] it waits in, a [`RecipientState`] and the last
//! [`RecipientError`] per recipient) and its [`HistoryRecord`]s.
//!
//! Plain data, kept apart from the database that stores it (`trees.rs`,
//! `index.rs`) and from its stored form (`codec.rs`), which both build on
//! it.

use std::collections::BTreeMap;

use mta_envelope::Envelope;
use serde::{Deserialize, Serialize};

/// Which queue a message waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    /// Just accepted; the first delivery attempt works from memory.
    Ram,
    /// A delivery status notification waiting to be sent.
    Bounce,
    /// Waiting for a retry, read back from the spool file when due.
    Disk,
    /// Held by the operator: never attempted, never expires, until
    /// released (it then goes to the disk queue, due at once).
    Held,
}

/// The queues, in the order status shows them.
pub(crate) const QUEUES: [QueueName; 4] = [
    QueueName::Ram,
    QueueName::Bounce,
    QueueName::Disk,
    QueueName::Held,
];

impl QueueName {
    /// Its position in [`QUEUES`].
    pub(crate) fn slot(self) -> usize {
        match self {
            QueueName::Ram => 0,
            QueueName::Bounce => 1,
            QueueName::Disk => 2,
            QueueName::Held => 3,
        }
    }

    /// Its name in status, lists and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Ram => "ram",
            QueueName::Bounce => "bounce",
            QueueName::Disk => "disk",
            QueueName::Held => "held",
        }
    }
}

/// How far delivery to one recipient has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    /// Not delivered yet; will be tried (again).
    Pending,
    /// Delivered; never tried again.
    Delivered,
    /// Failed permanently; never tried again.
    Failed,
}

/// What the index knows about one queued message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The queue it waits in.
    pub queue: QueueName,
    /// When it was accepted, in seconds since the Unix epoch.
    pub arrival: u64,
    /// When it is next due, in seconds since the Unix epoch.
    pub next_attempt: u64,
    /// Bytes of message content (the spool file without its header).
    pub size: u64,
    /// One state per recipient, in envelope order.
    pub recipients: Vec<RecipientState>,
    /// Delivery attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The last temporary error of each recipient still pending, by
    /// envelope index: what a delay notice or the final 4.4.7 DSN reports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_errors: BTreeMap<usize, RecipientError>,
    /// A delay notice has been sent; one is enough.
    #[serde(default)]
    pub delay_notified: bool,
    /// The envelope sender (empty for `<>`), so that lists and filters
    /// need not read spool files. Known only when `rcpts` is not empty
    /// (entries written before these fields existed have neither).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sender: String,
    /// The envelope recipients' addresses, in envelope order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rcpts: Vec<String>,
    /// Held since this time (unix seconds), while in the held queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_since: Option<u64>,
    /// Seconds spent held before: they do not count against the lifetime.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub held_secs: u64,
    /// The user the client authenticated as (SMTP AUTH, RFC 4954): the
    /// envelope's `origin.auth`, which stays the truth; kept here so that
    /// listings need not read spool files. `None` for a session that did
    /// not authenticate, and in entries of formats before 3 (`codec.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The last error seen for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientError {
    /// The enhanced status code, e.g. `4.4.1`.
    pub status: String,
    /// The remote reply or the local cause.
    pub reason: String,
    /// The remote host that said it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The remote server's reply itself (`451 4.2.0 busy`), when a reply
    /// was the cause: what a delay notice or the final DSN quotes after
    /// `Diagnostic-Code: smtp;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

impl IndexEntry {
    /// The entry of a message just accepted: in the RAM queue, due at once,
    /// every recipient pending.
    pub fn arrived(envelope: &Envelope, size: u64) -> Self {
        let mut entry = IndexEntry {
            queue: QueueName::Ram,
            arrival: envelope.arrival,
            next_attempt: envelope.arrival,
            size,
            recipients: vec![RecipientState::Pending; envelope.recipients.len()],
            attempts: 0,
            last_errors: BTreeMap::new(),
            delay_notified: false,
            sender: String::new(),
            rcpts: Vec::new(),
            held_since: None,
            held_secs: 0,
            auth: None,
        };
        entry.fill_addresses(envelope);
        entry
    }

    /// The arrival time the retry schedule and the lifetime count from:
    /// the real one, moved on by the time spent held.
    pub fn effective_arrival(&self) -> u64 {
        self.arrival.saturating_add(self.held_secs)
    }

    /// The sender and recipient addresses are recorded here.
    pub fn has_addresses(&self) -> bool {
        !self.rcpts.is_empty()
    }

    /// Fills the addresses, and the authenticated user, from the envelope
    /// (for an entry that lacks them: one of an earlier version).
    pub fn fill_addresses(&mut self, envelope: &Envelope) {
        (self.sender, self.rcpts) = addresses(envelope);
        self.auth = envelope.origin.auth.clone();
    }

    /// When the disk runner should take it up: its next attempt, or never
    /// while it is held.
    pub fn scheduled(&self) -> Option<u64> {
        (self.queue != QueueName::Held).then_some(self.next_attempt)
    }
}

/// The sender (empty for `<>`) and the recipients' addresses of an
/// envelope, as entries keep them.
pub(crate) fn addresses(envelope: &Envelope) -> (String, Vec<String>) {
    (
        envelope.sender.to_string(),
        envelope
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect(),
    )
}

/// One line of a message's delivery history: what one attempt (or an
/// operator's action) did to one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// When, in seconds since the Unix epoch.
    pub time: u64,
    /// The attempt number (0 for an operator's action).
    pub attempt: u32,
    /// The recipient's index in the envelope.
    pub recipient: usize,
    /// `delivered`, `deferred`, `failed`, `expired`, `deleted`, `held`,
    /// `released`...
    pub event: String,
    /// The enhanced status code.
    pub status: String,
    /// The remote reply or the local cause.
    pub reply: String,
    /// The remote host, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Most history records kept per message; the oldest go first.
pub const MAX_HISTORY: usize = 1000;
