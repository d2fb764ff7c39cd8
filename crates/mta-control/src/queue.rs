//! The queue commands: what `mta-init queue ...` and the HTTP API ask,
//! and what they get back. The same types travel over the control socket
//! and as the JSON of the HTTP API.

use serde::{Deserialize, Serialize};

use crate::names::Queue;

/// Which messages a listing or a summary looks at. Every field narrows
/// it; none set means the whole queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueFilter {
    /// One queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
    /// A recipient domain (any recipient), without regard to case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The sender: a whole address, `@domain` for any sender at that
    /// domain, or `<>` for the null sender; without regard to case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Only messages that arrived at least this many seconds ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub older_than_secs: Option<u64>,
    /// Only messages with a recipient in this state: `pending` (not
    /// tried yet), `deferred`, `delivered` or `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Which messages a flush, hold, release or delete acts on: exactly one
/// of the three. On the wire, an object with one of `id`, `domain` or
/// `"all": true`, as the HTTP API's bodies are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SelectionFields", into = "SelectionFields")]
pub enum Selection {
    /// One message, by queue id.
    Id(String),
    /// Every message with a recipient still to be delivered at this
    /// domain.
    Domain(String),
    /// Every message.
    All,
}

/// A selection that names no message, or more than one way.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("say which messages: one queue id, --domain D, or --all")]
pub struct NoSelection;

impl Selection {
    /// The selection the three optional fields of a request make:
    /// exactly one must be given.
    pub fn from_fields(
        id: Option<String>,
        domain: Option<String>,
        all: bool,
    ) -> Result<Selection, NoSelection> {
        match (id, domain, all) {
            (Some(id), None, false) => Ok(Selection::Id(id)),
            (None, Some(domain), false) => Ok(Selection::Domain(domain)),
            (None, None, true) => Ok(Selection::All),
            _ => Err(NoSelection),
        }
    }

    /// The queue id, when one message is selected.
    pub fn id(&self) -> Option<&str> {
        match self {
            Selection::Id(id) => Some(id),
            _ => None,
        }
    }

    /// The domain, when messages are selected by domain.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Selection::Domain(d) => Some(d),
            _ => None,
        }
    }
}

/// [`Selection`] as it travels: three optional fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SelectionFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    all: bool,
}

impl TryFrom<SelectionFields> for Selection {
    type Error = NoSelection;
    fn try_from(f: SelectionFields) -> Result<Selection, NoSelection> {
        Selection::from_fields(f.id, f.domain, f.all)
    }
}

impl From<Selection> for SelectionFields {
    fn from(s: Selection) -> SelectionFields {
        match s {
            Selection::Id(id) => SelectionFields {
                id: Some(id),
                ..SelectionFields::default()
            },
            Selection::Domain(domain) => SelectionFields {
                domain: Some(domain),
                ..SelectionFields::default()
            },
            Selection::All => SelectionFields {
                all: true,
                ..SelectionFields::default()
            },
        }
    }
}

/// A queue command that changes the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueAction {
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

/// What a flush, hold, release or delete did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    /// Messages the selection matched.
    pub matched: u64,
    /// Messages acted on now.
    pub done: u64,
    /// Messages being delivered at that moment: acted on when their
    /// attempt ends (a flush has nothing to do for them). A message
    /// waiting for a paused or busy runner is not in flight: it is acted
    /// on at once.
    pub in_flight: u64,
    /// Messages left as they were (a flush or hold of a held message, a
    /// release of one that is not held).
    pub unchanged: u64,
    /// Recipients removed by a delete.
    #[serde(default)]
    pub recipients_deleted: u64,
    /// DSNs queued by a delete with bounce.
    #[serde(default)]
    pub dsns: u64,
}

/// One recipient in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRow {
    /// The address.
    pub address: String,
    /// `pending` (not tried yet), `deferred`, `delivered` or `failed`.
    pub status: String,
    /// Attempts that reached a verdict for it.
    pub attempts: u32,
    /// The last reply or local cause, with its enhanced status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reply: Option<String>,
}

/// One message in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRow {
    /// The queue id.
    pub id: String,
    /// `ram`, `bounce`, `disk` or `held`.
    pub queue: String,
    /// Bytes of content.
    pub size: u64,
    /// When it arrived (unix seconds).
    pub arrival: u64,
    /// The sender (empty for `<>`).
    pub sender: String,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it is next attempted (unix seconds); absent while held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<u64>,
    /// Every recipient, in envelope order.
    pub recipients: Vec<RecipientRow>,
    /// Held in memory only, with no spool file yet (volatile mode, until
    /// its first attempt defers or a stop spills it): a crash loses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_memory: bool,
    /// The user the client authenticated as (SMTP AUTH, RFC 4954); absent
    /// when it did not, and from a daemon before AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// One page of `queue list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePage {
    /// The messages, oldest first.
    pub messages: Vec<MessageRow>,
    /// Pass as `after` for the next page; absent at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One line of a message's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// When (unix seconds).
    pub time: u64,
    /// The attempt (0: an operator's action).
    pub attempt: u32,
    /// The recipient.
    pub recipient: String,
    /// `delivered`, `deferred`, `failed`, `expired`, `deleted`, `held`,
    /// `released`.
    pub event: String,
    /// The enhanced status code.
    pub status: String,
    /// The reply or local cause.
    pub reply: String,
    /// The remote host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// `queue show`: one message in full.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetail {
    /// What a listing shows.
    pub message: MessageRow,
    /// The envelope as stored (JSON).
    pub envelope: serde_json::Value,
    /// Every attempt's result for every recipient, oldest first.
    pub history: Vec<HistoryRow>,
    /// The header section, as received.
    pub headers: String,
    /// The body, when asked for (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `queue summary`: messages per destination domain and age, as
/// Postfix's qshape shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    /// The age buckets' upper bounds in minutes; the last bucket is
    /// everything older than the last bound. The daemon chooses them
    /// (qshape's, in mta-queue) and sends them, so a client keeps no copy.
    pub bucket_minutes: Vec<u64>,
    /// Every message counted once.
    pub total: SummaryRow,
    /// One row per domain with a recipient still to be delivered, the
    /// most messages first. A message to several domains counts in each.
    pub domains: Vec<SummaryRow>,
}

/// One row of the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The domain (`TOTAL` for the total row).
    pub domain: String,
    /// Messages.
    pub messages: u64,
    /// Messages per age bucket, as `bucket_minutes` (one more: the
    /// oldest).
    pub buckets: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing row as a daemon before SMTP AUTH wrote it.
    const OLD_ROW: &str = r#"{"id":"00000000000000aa","queue":"disk","size":10,"arrival":1,"sender":"a@b.test","attempts":1,"next_attempt":2,"recipients":[{"address":"x@y.test","status":"deferred","attempts":1,"last_reply":"4.4.1 refused"}]}"#;

    #[test]
    fn the_user_is_on_the_wire_only_when_there_is_one() {
        let row: MessageRow = serde_json::from_str(OLD_ROW).unwrap();
        assert_eq!(row.auth, None);
        // Without a user, the bytes are the old ones: old clients read them.
        assert_eq!(serde_json::to_string(&row).unwrap(), OLD_ROW);
        let authed = MessageRow {
            auth: Some("alice@example.test".into()),
            ..row
        };
        let json = serde_json::to_string(&authed).unwrap();
        assert!(
            json.ends_with(r#""last_reply":"4.4.1 refused"}],"auth":"alice@example.test"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<MessageRow>(&json).unwrap(), authed);
    }
}
