//! Fuzz targets for the two decoders that read what a crash or a disk may
//! have damaged: the spool file header (`file.rs`) and the index entry
//! (`codec.rs`).
//!
//! Properties: arbitrary bytes never panic; a spool file decodes to its
//! envelope or to `Corrupt` (never anything else from a reader that
//! cannot fail); an index entry decodes or is `None`; and a valid
//! envelope or entry round-trips exactly, whatever its strings hold.
//! A damaged copy of a valid file or entry (bytes flipped, cut short,
//! inserted) never panics either. Budget: `MTA_FUZZ_SECS` per target
//! (see `mta_testkit::fuzz`).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use mta_envelope::{BodyType, Envelope, Mailbox, Notify, Origin, Recipient, Ret, ReversePath};
use mta_testkit::{fuzz, regressions};
use proptest::prelude::*;

use crate::codec;
use crate::entry::{IndexEntry, QueueName, RecipientError, RecipientState};
use crate::error::SpoolError;
use crate::file::{encode_header, read_file, read_header, MAGIC};

fn mailbox() -> impl Strategy<Value = Mailbox> {
    (any::<String>(), any::<String>()).prop_map(|(local, domain)| Mailbox { local, domain })
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let notify = prop_oneof![
        Just(None),
        Just(Some(Notify::Never)),
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(success, failure, delay)| Some(
            Notify::On {
                success,
                failure,
                delay
            }
        )),
    ];
    let recipient =
        (mailbox(), notify, any::<Option<String>>()).prop_map(|(address, notify, orcpt)| {
            Recipient {
                address,
                notify,
                orcpt,
            }
        });
    let sender = prop_oneof![
        Just(ReversePath::Null),
        mailbox().prop_map(ReversePath::Mailbox)
    ];
    (
        sender,
        prop::collection::vec(recipient, 0..4),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(None), Just(Some(Ret::Full)), Just(Some(Ret::Hdrs))],
        any::<Option<String>>(),
        (
            any::<std::net::IpAddr>(),
            any::<String>(),
            any::<String>(),
            any::<Option<String>>(),
            any::<Option<String>>(),
        ),
        any::<u64>(),
    )
        .prop_map(
            |(
                sender,
                recipients,
                eight_bit,
                smtputf8,
                ret,
                envid,
                (ip, helo, protocol, tls, auth),
                arrival,
            )| {
                Envelope {
                    sender,
                    recipients,
                    body: if eight_bit {
                        BodyType::EightBitMime
                    } else {
                        BodyType::SevenBit
                    },
                    smtputf8,
                    ret,
                    envid,
                    origin: Origin {
                        client_ip: ip,
                        helo,
                        protocol,
                        tls,
                        auth,
                    },
                    arrival,
                }
            },
        )
}

fn entry() -> impl Strategy<Value = IndexEntry> {
    let queue = prop::sample::select(vec![
        QueueName::Ram,
        QueueName::Bounce,
        QueueName::Disk,
        QueueName::Held,
    ]);
    let state = prop::sample::select(vec![
        RecipientState::Pending,
        RecipientState::Delivered,
        RecipientState::Failed,
    ]);
    let error = (
        any::<String>(),
        any::<String>(),
        any::<Option<String>>(),
        any::<Option<String>>(),
    )
        .prop_map(|(status, reason, remote, reply)| RecipientError {
            status,
            reason,
            remote,
            reply,
        });
    (
        (queue, any::<u64>(), any::<u64>(), any::<u64>()),
        prop::collection::vec(state, 0..6),
        any::<u32>(),
        prop::collection::btree_map(any::<usize>(), error, 0..3),
        any::<bool>(),
        (
            any::<String>(),
            prop::collection::vec(any::<String>(), 0..4),
        ),
        (any::<Option<u64>>(), any::<u64>(), any::<Option<String>>()),
    )
        .prop_map(
            |(
                (queue, arrival, next_attempt, size),
                recipients,
                attempts,
                last_errors,
                delay_notified,
                (sender, rcpts),
                (held_since, held_secs, auth),
            )| IndexEntry {
                queue,
                arrival,
                next_attempt,
                size,
                recipients,
                attempts,
                last_errors: last_errors.into_iter().collect::<BTreeMap<_, _>>(),
                delay_notified,
                sender,
                rcpts,
                held_since,
                held_secs,
                auth,
            },
        )
}

/// A damage done to stored bytes.
#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn damages() -> impl Strategy<Value = Vec<Damage>> {
    let one = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, x)| Damage::Flip(at, x)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, b)| Damage::Insert(at, b)),
        (any::<usize>(), 1..16usize).prop_map(|(at, n)| Damage::Remove(at, n)),
    ];
    prop::collection::vec(one, 1..4)
}

fn damage(mut bytes: Vec<u8>, damages: &[Damage]) -> Vec<u8> {
    for d in damages {
        let at = |i: usize, len: usize| i % (len + 1);
        match d {
            Damage::Flip(i, x) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= x;
            }
            Damage::Flip(..) => {}
            Damage::Cut(i) => bytes.truncate(at(*i, bytes.len())),
            Damage::Insert(i, b) => {
                let i = at(*i, bytes.len());
                bytes.splice(i..i, b.iter().copied());
            }
            Damage::Remove(i, n) => {
                let i = at(*i, bytes.len());
                let end = (i + n).min(bytes.len());
                bytes.drain(i..end);
            }
        }
    }
    bytes
}

/// Reads a header from bytes: Ok, or Corrupt (an in-memory reader has no
/// I/O errors to give).
fn header_of(bytes: &[u8]) -> Result<Option<(Envelope, u64)>, TestCaseError> {
    match read_header(&mut Cursor::new(bytes), Path::new("msg/fuzz")) {
        Ok(h) => {
            prop_assert!(h.len <= bytes.len() as u64);
            Ok(Some((h.envelope, h.len)))
        }
        Err(SpoolError::Corrupt { .. }) => Ok(None),
        Err(e) => Err(TestCaseError::fail(format!("not Corrupt: {e}"))),
    }
}

#[test]
fn spool_file_header_on_arbitrary_bytes_is_ok_or_corrupt() {
    let after_magic = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "[{}\\[\\]\":,a-z0-9 \n\\\\]{0,200}".prop_map(String::into_bytes),
    ];
    fuzz::check(
        regressions!("spool_file_arbitrary"),
        (any::<bool>(), after_magic),
        |(magic, rest)| {
            let bytes = if magic { [MAGIC, &rest].concat() } else { rest };
            header_of(&bytes)?;
            Ok(())
        },
    );
}

#[test]
fn spool_file_round_trips_and_survives_damage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0000000000000001");
    fuzz::check(
        regressions!("spool_file_round_trip"),
        (
            envelope(),
            prop::collection::vec(any::<u8>(), 0..200),
            damages(),
            prop::collection::vec(any::<u8>(), 0..100),
        ),
        |(envelope, content, damages, tail)| {
            let header = encode_header(&envelope, content.len());
            prop_assert_eq!(header.iter().filter(|&&b| b == b'\n').count(), 2);
            let file = [&header[..], &content].concat();
            let (read, len) = header_of(&file)?.expect("a valid file decodes");
            prop_assert_eq!(&read, &envelope);
            prop_assert_eq!(len, header.len() as u64);
            // And from disk, content included.
            std::fs::write(&path, &file).unwrap();
            let (read, body) = read_file(&path).expect("a valid file reads back");
            prop_assert_eq!(read, envelope.clone());
            prop_assert_eq!(&body, &content);
            // What a reused file held past the content is not read.
            std::fs::write(&path, [&file[..], &tail].concat()).unwrap();
            let (_, body) = read_file(&path).expect("a file with a tail reads back");
            prop_assert_eq!(&body, &content);
            // Cut short of its length: corrupt, never a shorter message.
            if !content.is_empty() {
                std::fs::write(&path, &file[..file.len() - 1]).unwrap();
                let short = read_file(&path);
                prop_assert!(
                    matches!(short, Err(SpoolError::Corrupt { .. })),
                    "{:?}",
                    short
                );
            }
            // A version 1 file (written before): the content to the end.
            let json = &header[header.iter().position(|&b| b == b'\n').unwrap() + 1..];
            let v1 = [&b"MTA-SPOOL 1\n"[..], json, &content].concat();
            std::fs::write(&path, &v1).unwrap();
            let (read, body) = read_file(&path).expect("a version 1 file reads back");
            prop_assert_eq!(read, envelope.clone());
            prop_assert_eq!(&body, &content);
            // Damaged: decodes or is corrupt. Damage past the header
            // leaves the envelope as it was.
            let damaged = damage(file, &damages);
            if let Some((read, _)) = header_of(&damaged)? {
                if damaged.starts_with(&header) {
                    prop_assert_eq!(read, envelope);
                }
            }
            Ok(())
        },
    );
}

#[test]
fn index_entry_decoder_on_arbitrary_bytes_never_panics() {
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        (1..=3u8, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(format, b)| [
            &[format][..],
            &b
        ]
        .concat()),
        "\\{[\"a-z_:,0-9\\[\\]{} ]{0,200}".prop_map(String::into_bytes),
    ];
    fuzz::check(regressions!("index_entry_arbitrary"), bytes, |bytes| {
        let _ = codec::decode(&bytes);
        Ok(())
    });
}

#[test]
fn index_entry_round_trips_and_survives_damage() {
    fuzz::check(
        regressions!("index_entry_round_trip"),
        (entry(), damages()),
        |(entry, damages)| {
            let stored = codec::encode(&entry);
            prop_assert_eq!(codec::decode(&stored), Some(entry.clone()));
            // Entries of earlier versions, in JSON, are still read.
            let json = serde_json::to_vec(&entry).unwrap();
            prop_assert_eq!(codec::decode(&json), Some(entry));
            let _ = codec::decode(&damage(stored, &damages));
            let _ = codec::decode(&damage(json, &damages));
            Ok(())
        },
    );
}
