//! A queued message whose spool file cannot be read back.
//!
//! The disk runner reads a message's file when it is due. If that fails,
//! the attempt still happens, without a connection, so that the message
//! moves on like any other (issue 10: it used to stay due and be read and
//! logged once a second for ever, never expiring):
//!
//! - a corrupt file ([`SpoolError::Corrupt`]: it does not parse) will not
//!   get better: every pending recipient fails with 5.3.0, the sender
//!   gets the usual DSN, built from what the index knows (sender and
//!   recipients; the content is lost), and the file is set aside in
//!   `corrupt/` instead of being removed;
//! - any other error (EIO, EMFILE, ENOSPC...) may pass: every pending
//!   recipient is deferred with 4.3.0, and the schedule sets the next
//!   attempt, the lifetime and the delay notice as for a remote 4xx.
//!
//! Both go through `settle.rs` and `commit.rs`, so the DSN is durable
//! before the message is set aside, and a DSN that cannot be queued
//! leaves it queued.

use mta_deliver::Outcome;
use mta_envelope::{BodyType, Envelope, Mailbox, Recipient, ReversePath};
use mta_spool::{IndexEntry, SpoolError};

use crate::origin::local_origin;
use crate::outcome::RecipientResult;

/// Why a due message's spool file could not be read.
#[derive(Debug, Clone)]
pub(crate) enum Unreadable {
    /// It does not parse: the content is lost.
    Corrupt(String),
    /// Reading it failed; a later attempt may succeed.
    Failed(String),
}

/// RFC 3463: X.3.0, other or undefined mail system status. The queued
/// copy is gone, so no later attempt can do better: permanent.
pub(crate) const CORRUPT_STATUS: &str = "5.3.0";

/// A local, passing failure of the mail system.
const FAILED_STATUS: &str = "4.3.0";

impl Unreadable {
    /// Sorts a read error: corrupt, or a failure that may pass. The
    /// words kept may reach the sender in a DSN, so they name no path
    /// (the disk runner logged the whole error).
    pub fn of(e: &SpoolError) -> Unreadable {
        match e {
            SpoolError::Corrupt { reason, .. } => Unreadable::Corrupt(reason.clone()),
            SpoolError::Io { op, source, .. } => Unreadable::Failed(format!("{op}: {source}")),
            SpoolError::Locked { .. } => Unreadable::Failed("the queue is locked".to_owned()),
            e => Unreadable::Failed(e.to_string()),
        }
    }

    /// The outcome of the attempt for each of `pending`.
    pub fn results(&self, pending: impl Iterator<Item = usize>) -> Vec<RecipientResult> {
        let outcome = match self {
            Unreadable::Corrupt(reason) => Outcome::failed(
                CORRUPT_STATUS,
                format!(
                    "the queued copy of the message is unreadable (corrupt spool file: \
                     {reason}); it was set aside and cannot be delivered"
                ),
            ),
            Unreadable::Failed(error) => Outcome::deferred(
                FAILED_STATUS,
                format!("cannot read the queued copy of the message: {error}"),
            ),
        };
        pending
            .map(|index| RecipientResult {
                index,
                outcome: outcome.clone(),
                remote: None,
                tls: None,
            })
            .collect()
    }
}

/// The envelope as far as the index knows it: sender and recipients, in
/// order, without NOTIFY, ORCPT, ENVID or RET (only the file had them),
/// so a DSN reports failures as if NOTIFY was not given. An entry
/// without addresses (written by an old version) gives the null sender,
/// whose DSNs go to the postmaster, and recipients named
/// `unknown-recipient-N@unknown.invalid` (RFC 2606: a name that cannot
/// exist).
pub(crate) fn envelope_from_index(entry: &IndexEntry, hostname: &str) -> Envelope {
    let known = entry.has_addresses();
    let sender = match entry.sender.as_str() {
        s if known && !s.is_empty() => ReversePath::Mailbox(mailbox(s)),
        _ => ReversePath::Null,
    };
    let recipients: Vec<Recipient> = (0..entry.recipients.len())
        .map(|i| Recipient {
            address: entry
                .rcpts
                .get(i)
                .map(|a| mailbox(a))
                .unwrap_or_else(|| Mailbox {
                    local: format!("unknown-recipient-{}", i + 1),
                    domain: "unknown.invalid".into(),
                }),
            notify: None,
            orcpt: None,
        })
        .collect();
    let smtputf8 = matches!(&sender, ReversePath::Mailbox(m) if m.is_utf8())
        || recipients.iter().any(|r| r.address.is_utf8());
    Envelope {
        sender,
        recipients,
        body: BodyType::SevenBit,
        smtputf8,
        ret: None,
        envid: None,
        origin: local_origin(hostname),
        arrival: entry.arrival,
    }
}

/// An address as the index writes it (`Mailbox`'s display): the domain
/// after the last `@`, none for a bare `postmaster`.
fn mailbox(address: &str) -> Mailbox {
    match address.rsplit_once('@') {
        Some((local, domain)) => Mailbox {
            local: local.to_owned(),
            domain: domain.to_owned(),
        },
        None => Mailbox {
            local: address.to_owned(),
            domain: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::envelope;
    use mta_spool::RecipientState;

    fn entry(sender: &str, rcpts: &[&str]) -> IndexEntry {
        let envelope = envelope(ReversePath::Null, Vec::new(), 1_700_000_000);
        let mut entry = IndexEntry::arrived(&envelope, 10);
        entry.sender = sender.to_owned();
        entry.rcpts = rcpts.iter().map(|r| (*r).to_owned()).collect();
        entry.recipients = vec![RecipientState::Pending; rcpts.len().max(2)];
        entry
    }

    #[test]
    fn the_envelope_comes_from_the_index_addresses() {
        let e = envelope_from_index(&entry("alice@a.test", &["x@b.test", "y@c.test"]), "mx");
        assert_eq!(e.sender.to_string(), "alice@a.test");
        let rcpts: Vec<String> = e.recipients.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(rcpts, ["x@b.test", "y@c.test"]);
        assert_eq!(e.arrival, 1_700_000_000);
        assert!(!e.smtputf8);
        let null = envelope_from_index(&entry("", &["postmaster", "z@d.test"]), "mx");
        assert_eq!(null.sender, ReversePath::Null);
        assert_eq!(null.recipients[0].address.domain, "");
        assert!(envelope_from_index(&entry("", &["ü@d.test"]), "mx").smtputf8);
    }

    #[test]
    fn without_addresses_the_sender_is_unknown_and_goes_to_the_postmaster() {
        let e = envelope_from_index(&entry("alice@a.test", &[]), "mx");
        assert_eq!(e.sender, ReversePath::Null, "unknown, not alice");
        let rcpts: Vec<String> = e.recipients.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(
            rcpts,
            [
                "unknown-recipient-1@unknown.invalid",
                "unknown-recipient-2@unknown.invalid"
            ]
        );
    }

    #[test]
    fn corrupt_fails_and_a_read_error_defers() {
        let corrupt = Unreadable::of(&SpoolError::Corrupt {
            path: "x".into(),
            reason: "bad".into(),
        });
        let r = corrupt.results([0, 2].into_iter());
        assert_eq!(r.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 2]);
        assert!(
            matches!(&r[0].outcome, Outcome::Failed { status, reason, reply: None } if status == "5.3.0" && reason.contains("unreadable"))
        );
        let io = Unreadable::of(&SpoolError::Io {
            op: "open",
            path: "/var/spool/mta/queue/msg/00/0001".into(),
            source: std::io::Error::from_raw_os_error(5),
        });
        match &io.results([0].into_iter())[0].outcome {
            Outcome::Deferred { reason, .. } => {
                assert!(reason.contains("open: "), "{reason}");
                assert!(
                    !reason.contains("/var/spool"),
                    "a path for the sender: {reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let io = Unreadable::of(&SpoolError::Closed);
        assert!(matches!(
            &io.results([1].into_iter())[0].outcome,
            Outcome::Deferred { status, .. } if status == "4.3.0"
        ));
    }
}
