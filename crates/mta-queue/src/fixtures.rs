//! Envelopes for the unit tests, built one way: a message handed over
//! locally, 7-bit, without SMTPUTF8, RET or ENVID, unless a test changes
//! a field itself.

use mta_envelope::{BodyType, Envelope, Notify, Recipient, ReversePath};

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

/// A recipient `local@domain` with its NOTIFY and no ORCPT.
pub(crate) fn recipient(address: &str, notify: Option<Notify>) -> Recipient {
    Recipient {
        address: crate::dsn::mailbox(address).expect("a test address"),
        notify,
        orcpt: None,
    }
}
