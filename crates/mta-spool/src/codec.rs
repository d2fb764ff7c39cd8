//! How an [`IndexEntry`] is stored in sled: a format byte, then the entry
//! in postcard (a compact binary serde format). An index holds one entry
//! per queued message and sled keeps the entries it has read in memory,
//! so their size is the daemon's memory per queued message: JSON took
//! about 200 bytes an entry, this about 60.
//!
//! Entries written as JSON by earlier versions (they start with `{`) are
//! still read, and rewritten in this format at their next change.
//!
//! postcard is not self-describing: fields are stored in order, enum
//! variants by position. So the stored shape is a struct of its own
//! ([`Stored`]), never changed: a new field means a new format byte and
//! a new struct, and new variants of [`QueueName`] or [`RecipientState`]
//! go at the end.
//!
//! Format 2 added the server's reply to each recipient's last error
//! ([`ErrorV2`]), which a delay notice or the final DSN quotes after
//! `smtp;`. Format 1 entries are still read (no reply: the DSN then quotes
//! nothing after `smtp;`).
//!
//! Format 3 ([`StoredV3`]) added the user the client authenticated as
//! (SMTP AUTH, RFC 4954), for listings: format 2's fields, then an
//! `Option<String>`. Entries of formats 1 and 2 were written before AUTH
//! existed, so they read with no user; each older entry is written as
//! format 3 at its next change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entry::{IndexEntry, QueueName, RecipientError, RecipientState};

/// The first byte of a format 1 postcard entry (JSON starts with `{`).
const FORMAT_V1: u8 = 1;

/// The first byte of a format 2 postcard entry.
const FORMAT_V2: u8 = 2;

/// The first byte of a format 3 postcard entry: what is written now.
const FORMAT_V3: u8 = 3;

/// An entry as formats 1 and 2 store it (they differ only in their last
/// errors), and the first part of a format 3 entry.
#[derive(Serialize, Deserialize)]
struct Stored<E> {
    queue: QueueName,
    arrival: u64,
    next_attempt: u64,
    size: u64,
    recipients: Vec<RecipientState>,
    attempts: u32,
    last_errors: Vec<(u64, E)>,
    delay_notified: bool,
    sender: String,
    rcpts: Vec<String>,
    held_since: Option<u64>,
    held_secs: u64,
}

/// A format 3 entry. postcard writes a struct's fields one after the
/// other with no framing, so this is a format 2 entry's bytes followed by
/// the user.
#[derive(Serialize, Deserialize)]
struct StoredV3 {
    entry: Stored<ErrorV2>,
    /// The authenticated user (`IndexEntry::auth`).
    auth: Option<String>,
}

/// A last error in format 1.
#[derive(Serialize, Deserialize)]
struct ErrorV1 {
    status: String,
    reason: String,
    remote: Option<String>,
}

/// A last error in format 2: format 1's and the server's reply.
#[derive(Serialize, Deserialize)]
struct ErrorV2 {
    status: String,
    reason: String,
    remote: Option<String>,
    reply: Option<String>,
}

impl From<&RecipientError> for ErrorV1 {
    fn from(e: &RecipientError) -> Self {
        ErrorV1 {
            status: e.status.clone(),
            reason: e.reason.clone(),
            remote: e.remote.clone(),
        }
    }
}

/// Format 1 kept no reply: the DSN then quotes nothing after `smtp;`.
impl From<ErrorV1> for RecipientError {
    fn from(e: ErrorV1) -> Self {
        RecipientError {
            status: e.status,
            reason: e.reason,
            remote: e.remote,
            reply: None,
        }
    }
}

impl From<&RecipientError> for ErrorV2 {
    fn from(e: &RecipientError) -> Self {
        ErrorV2 {
            status: e.status.clone(),
            reason: e.reason.clone(),
            remote: e.remote.clone(),
            reply: e.reply.clone(),
        }
    }
}

impl From<ErrorV2> for RecipientError {
    fn from(e: ErrorV2) -> Self {
        RecipientError {
            status: e.status,
            reason: e.reason,
            remote: e.remote,
            reply: e.reply,
        }
    }
}

impl<E: Serialize + for<'a> From<&'a RecipientError>> Stored<E> {
    fn from_entry(entry: &IndexEntry) -> Self {
        Stored {
            queue: entry.queue,
            arrival: entry.arrival,
            next_attempt: entry.next_attempt,
            size: entry.size,
            recipients: entry.recipients.clone(),
            attempts: entry.attempts,
            last_errors: entry
                .last_errors
                .iter()
                .map(|(&i, e)| (i as u64, E::from(e)))
                .collect(),
            delay_notified: entry.delay_notified,
            sender: entry.sender.clone(),
            rcpts: entry.rcpts.clone(),
            held_since: entry.held_since,
            held_secs: entry.held_secs,
        }
    }
}

/// The format byte, then the entry in postcard.
fn to_bytes(format: u8, stored: &impl Serialize) -> Vec<u8> {
    let mut out = vec![format];
    postcard::to_io(stored, &mut out).expect("an index entry always serializes");
    out
}

impl<E: Into<RecipientError>> Stored<E> {
    fn into_entry(self) -> IndexEntry {
        IndexEntry {
            queue: self.queue,
            arrival: self.arrival,
            next_attempt: self.next_attempt,
            size: self.size,
            recipients: self.recipients,
            attempts: self.attempts,
            last_errors: self
                .last_errors
                .into_iter()
                .map(|(i, e)| (i as usize, e.into()))
                .collect::<BTreeMap<_, _>>(),
            delay_notified: self.delay_notified,
            sender: self.sender,
            rcpts: self.rcpts,
            held_since: self.held_since,
            held_secs: self.held_secs,
            // Formats 1 and 2 predate SMTP AUTH.
            auth: None,
        }
    }
}

/// The stored form of an entry.
pub(crate) fn encode(entry: &IndexEntry) -> Vec<u8> {
    let stored = StoredV3 {
        entry: Stored::from_entry(entry),
        auth: entry.auth.clone(),
    };
    to_bytes(FORMAT_V3, &stored)
}

/// An entry read back; `None` when the bytes are none of the formats.
pub(crate) fn decode(bytes: &[u8]) -> Option<IndexEntry> {
    match bytes.first()? {
        b'{' => serde_json::from_slice(bytes).ok(),
        &FORMAT_V1 => Some(
            postcard::from_bytes::<Stored<ErrorV1>>(&bytes[1..])
                .ok()?
                .into_entry(),
        ),
        &FORMAT_V2 => Some(
            postcard::from_bytes::<Stored<ErrorV2>>(&bytes[1..])
                .ok()?
                .into_entry(),
        ),
        &FORMAT_V3 => {
            let stored = postcard::from_bytes::<StoredV3>(&bytes[1..]).ok()?;
            Some(IndexEntry {
                auth: stored.auth,
                ..stored.entry.into_entry()
            })
        }
        _ => None,
    }
}

/// An entry in format 1, as versions before the server's reply wrote it
/// (tests, and the generator of the queue fixture: `fixture.rs`).
#[cfg(test)]
pub(crate) fn encode_v1(entry: &IndexEntry) -> Vec<u8> {
    to_bytes(FORMAT_V1, &Stored::<ErrorV1>::from_entry(entry))
}

/// An entry in format 2, as versions before SMTP AUTH wrote it (tests).
#[cfg(test)]
pub(crate) fn encode_v2(entry: &IndexEntry) -> Vec<u8> {
    to_bytes(FORMAT_V2, &Stored::<ErrorV2>::from_entry(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> IndexEntry {
        IndexEntry {
            queue: QueueName::Held,
            arrival: 1_796_000_000,
            next_attempt: 1_796_000_400,
            size: 2048,
            recipients: vec![RecipientState::Pending, RecipientState::Delivered],
            attempts: 3,
            last_errors: BTreeMap::from([(
                0,
                RecipientError {
                    status: "4.2.0".into(),
                    reason: "host mx.example said: 451 busy".into(),
                    remote: Some("mx.example[127.0.0.2]:25".into()),
                    reply: Some("451 busy".into()),
                },
            )]),
            delay_notified: true,
            sender: "alice@example.test".into(),
            rcpts: vec!["a@example.org".into(), "b@example.org".into()],
            held_since: Some(1_796_000_500),
            held_secs: 60,
            auth: Some("alice@example.test".into()),
        }
    }

    #[test]
    fn round_trips_and_is_smaller_than_json() {
        let e = entry();
        let bytes = encode(&e);
        assert_eq!(decode(&bytes), Some(e.clone()));
        let json = serde_json::to_vec(&e).unwrap();
        assert!(
            bytes.len() * 2 < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        // A fresh entry of one recipient, as most are.
        let small = IndexEntry {
            last_errors: BTreeMap::new(),
            rcpts: vec!["seed@localhost".into()],
            recipients: vec![RecipientState::Pending],
            held_since: None,
            held_secs: 0,
            auth: None,
            ..e
        };
        assert!(encode(&small).len() < 64, "{}", encode(&small).len());
    }

    #[test]
    fn json_of_earlier_versions_is_read() {
        let e = entry();
        let json = serde_json::to_vec(&e).unwrap();
        assert_eq!(decode(&json), Some(e));
        let old =
            br#"{"queue":"disk","arrival":1,"next_attempt":2,"size":3,"recipients":["pending"]}"#;
        let read = decode(old).unwrap();
        assert_eq!(read.queue, QueueName::Disk);
        assert!(!read.has_addresses());
    }

    #[test]
    fn format_1_entries_are_still_read_without_a_reply() {
        let e = entry();
        let bytes = encode_v1(&e);
        assert_eq!(bytes[0], FORMAT_V1);
        let mut want = e.clone();
        want.last_errors.get_mut(&0).unwrap().reply = None;
        want.auth = None;
        assert_eq!(decode(&bytes), Some(want));
        assert_eq!(encode(&e)[0], FORMAT_V3);
    }

    #[test]
    fn format_2_entries_are_still_read_without_a_user() {
        let e = entry();
        let bytes = encode_v2(&e);
        assert_eq!(bytes[0], FORMAT_V2);
        let want = IndexEntry {
            auth: None,
            ..e.clone()
        };
        assert_eq!(decode(&bytes), Some(want));
    }

    /// Format 3 is format 2's fields and then the user, so the two share
    /// every byte up to it.
    #[test]
    fn format_3_is_format_2_then_the_user() {
        let e = entry();
        let v2 = encode_v2(&e);
        let v3 = encode(&e);
        assert_eq!(v3[0], FORMAT_V3);
        assert_eq!(v3[1..v2.len()], v2[1..]);
        // postcard: Some, the length, the bytes.
        let user = b"alice@example.test";
        assert_eq!(v3[v2.len()..], [&[1, user.len() as u8][..], user].concat());
        let anonymous = IndexEntry { auth: None, ..e };
        assert_eq!(encode(&anonymous)[v2.len()..], [0]);
        assert_eq!(decode(&encode(&anonymous)), Some(anonymous));
    }

    /// Bytes this version wrote, pinned: a later version must still read
    /// them as they were (a new field is a new format, never a change to
    /// this one).
    #[test]
    fn a_stored_format_3_entry_still_reads() {
        let stored: &[u8] = &[
            3, 2, 1, 2, 100, 1, 0, 1, 0, 0, 3, 98, 64, 97, 1, 3, 97, 64, 98, 0, 0, 1, 5, 98, 111,
            98, 64, 120,
        ];
        let want = IndexEntry {
            queue: QueueName::Disk,
            arrival: 1,
            next_attempt: 2,
            size: 100,
            recipients: vec![RecipientState::Pending],
            attempts: 1,
            last_errors: BTreeMap::new(),
            delay_notified: false,
            sender: "b@a".into(),
            rcpts: vec!["a@b".into()],
            held_since: None,
            held_secs: 0,
            auth: Some("bob@x".into()),
        };
        assert_eq!(encode(&want), stored);
        assert_eq!(decode(stored), Some(want));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x07nonsense"), None);
        assert_eq!(decode(&[FORMAT_V1, 0xff, 0xff]), None);
        assert_eq!(decode(&[FORMAT_V2, 0xff, 0xff]), None);
        assert_eq!(decode(&[FORMAT_V3, 0xff, 0xff]), None);
        assert_eq!(decode(&[4, 0, 0]), None);
    }
}
