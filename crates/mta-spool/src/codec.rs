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
//! nothing after `smtp;`) and written as format 2 at their next change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entry::{IndexEntry, QueueName, RecipientError, RecipientState};

/// The first byte of a format 1 postcard entry (JSON starts with `{`).
const FORMAT_V1: u8 = 1;

/// The first byte of a format 2 postcard entry: what is written now.
const FORMAT_V2: u8 = 2;

/// An entry as stored; the formats differ only in their last errors.
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

    /// The format byte, then the entry in postcard.
    fn to_bytes(&self, format: u8) -> Vec<u8> {
        let mut out = vec![format];
        postcard::to_io(self, &mut out).expect("an index entry always serializes");
        out
    }
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
        }
    }
}

/// The stored form of an entry.
pub(crate) fn encode(entry: &IndexEntry) -> Vec<u8> {
    Stored::<ErrorV2>::from_entry(entry).to_bytes(FORMAT_V2)
}

/// An entry read back; `None` when the bytes are neither format.
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
        _ => None,
    }
}

/// An entry in format 1, as versions before the server's reply wrote it
/// (tests, and the generator of the queue fixture: `fixture.rs`).
#[cfg(test)]
pub(crate) fn encode_v1(entry: &IndexEntry) -> Vec<u8> {
    Stored::<ErrorV1>::from_entry(entry).to_bytes(FORMAT_V1)
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
        assert_eq!(decode(&bytes), Some(want));
        assert_eq!(encode(&e)[0], FORMAT_V2);
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x07nonsense"), None);
        assert_eq!(decode(&[FORMAT_V1, 0xff, 0xff]), None);
        assert_eq!(decode(&[FORMAT_V2, 0xff, 0xff]), None);
    }
}
