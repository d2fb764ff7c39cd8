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
//! ([`StoredV1`]), never changed: a new field means a new format byte and
//! a new struct, and new variants of [`QueueName`] or [`RecipientState`]
//! go at the end.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::index::{IndexEntry, QueueName, RecipientError, RecipientState};

/// The first byte of a postcard entry (JSON starts with `{`).
const FORMAT_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct StoredV1 {
    queue: QueueName,
    arrival: u64,
    next_attempt: u64,
    size: u64,
    recipients: Vec<RecipientState>,
    attempts: u32,
    last_errors: Vec<(u64, ErrorV1)>,
    delay_notified: bool,
    sender: String,
    rcpts: Vec<String>,
    held_since: Option<u64>,
    held_secs: u64,
}

#[derive(Serialize, Deserialize)]
struct ErrorV1 {
    status: String,
    reason: String,
    remote: Option<String>,
}

/// The stored form of an entry.
pub(crate) fn encode(entry: &IndexEntry) -> Vec<u8> {
    let stored = StoredV1 {
        queue: entry.queue,
        arrival: entry.arrival,
        next_attempt: entry.next_attempt,
        size: entry.size,
        recipients: entry.recipients.clone(),
        attempts: entry.attempts,
        last_errors: entry
            .last_errors
            .iter()
            .map(|(&i, e)| {
                (
                    i as u64,
                    ErrorV1 {
                        status: e.status.clone(),
                        reason: e.reason.clone(),
                        remote: e.remote.clone(),
                    },
                )
            })
            .collect(),
        delay_notified: entry.delay_notified,
        sender: entry.sender.clone(),
        rcpts: entry.rcpts.clone(),
        held_since: entry.held_since,
        held_secs: entry.held_secs,
    };
    let mut out = vec![FORMAT_V1];
    postcard::to_io(&stored, &mut out).expect("an index entry always serializes");
    out
}

/// An entry read back; `None` when the bytes are neither format.
pub(crate) fn decode(bytes: &[u8]) -> Option<IndexEntry> {
    match bytes.first()? {
        b'{' => serde_json::from_slice(bytes).ok(),
        &FORMAT_V1 => {
            let s: StoredV1 = postcard::from_bytes(&bytes[1..]).ok()?;
            Some(IndexEntry {
                queue: s.queue,
                arrival: s.arrival,
                next_attempt: s.next_attempt,
                size: s.size,
                recipients: s.recipients,
                attempts: s.attempts,
                last_errors: s
                    .last_errors
                    .into_iter()
                    .map(|(i, e)| {
                        (
                            i as usize,
                            RecipientError {
                                status: e.status,
                                reason: e.reason,
                                remote: e.remote,
                            },
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
                delay_notified: s.delay_notified,
                sender: s.sender,
                rcpts: s.rcpts,
                held_since: s.held_since,
                held_secs: s.held_secs,
            })
        }
        _ => None,
    }
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
    fn garbage_is_none() {
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"\x07nonsense"), None);
        assert_eq!(decode(&[FORMAT_V1, 0xff, 0xff]), None);
    }
}
