//! Envelopes for the unit tests, built one way: a message handed over
//! locally, 7-bit, without SMTPUTF8, RET or ENVID, unless a test changes
//! a field itself.

use mta_envelope::{BodyType, Envelope, Mailbox, Notify, Recipient, ReversePath};

use crate::origin::local_origin;

/// A message from `sender` to `recipients`, arrived at `arrival`.
pub(crate) fn envelope(sender: ReversePath, recipients: Vec<Recipient>, arrival: u64) -> Envelope {
    Envelope {
        sender,
        recipients,
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        origin: local_origin("mx.test"),
        arrival,
    }
}

/// A recipient `local@domain` (or the bare `postmaster`) with its NOTIFY
/// and no ORCPT.
pub(crate) fn recipient(address: &str, notify: Option<Notify>) -> Recipient {
    Recipient {
        address: match address.rsplit_once('@') {
            Some((local, domain)) => Mailbox::new(local, domain),
            // The bare `postmaster` (RFC 5321 section 4.5.1).
            None => Mailbox::new(address, ""),
        },
        notify,
        orcpt: None,
    }
}
