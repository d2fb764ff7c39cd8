//! Tests against real files in a temporary directory.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mta_envelope::{Envelope, Mailbox, Origin, QueueId, Recipient, ReversePath};

use super::*;
use crate::commit::Tuning;
use crate::entry::{IndexEntry, QueueName, RecipientState};

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.join("queue"),
        min_free_space: 0,
        max_batch: 64,
        rescan_rate: 0,
        writers: 8,
        index_cache: 0,
    }
}

fn envelope(recipients: usize) -> Envelope {
    Envelope {
        sender: ReversePath::Mailbox(Mailbox {
            local: "alice".into(),
            domain: "example.test".into(),
        }),
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: Mailbox {
                    local: format!("rcpt{i}"),
                    domain: "example.org".into(),
                },
                notify: None,
                orcpt: None,
            })
            .collect(),
        body: Default::default(),
        smtputf8: false,
        ret: None,
        envid: Some("env\nid with a newline".into()),
        origin: Origin {
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "client.example.test".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: None,
        },
        arrival: 1_700_000_000,
    }
}

/// Every file under `msg/`, as (bucket, name).
fn msg_files(queue: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for bucket in crate::layout::BUCKETS {
        for entry in fs::read_dir(queue.join("msg").join(bucket)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            files.push((bucket.to_string(), name));
        }
    }
    files.sort();
    files
}

/// Files in `dir` (tmp/) with another name: slots lent to queued messages
/// (reuse.rs).
fn lent_in(dir: &Path) -> usize {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().metadata().unwrap().nlink() > 1)
        .count()
}

/// Files in `dir` (tmp/) with no other name: kept for the next message.
fn kept_in(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count() - lent_in(dir)
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Stores `n` messages, one after another; returns their ids.
async fn store_n(spool: &Spool, n: usize) -> Vec<QueueId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = spool.next_id();
        let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
        spool
            .store(id, &envelope(2), &[b"Received: test\r\n", body.as_bytes()])
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// A spool in `dir`'s queue directory holding `n` messages, closed
/// cleanly; their ids.
async fn queue_with(dir: &Path, n: usize) -> Vec<QueueId> {
    let (spool, _) = Spool::open(config(dir)).unwrap();
    let ids = store_n(&spool, n).await;
    spool.close().unwrap();
    ids
}

/// Opens a spool that must rebuild its index from the spool files, and
/// finds exactly `ids` there once the rescan is done.
fn open_rebuilt(config: SpoolConfig, ids: &[QueueId]) -> (Spool, OpenReport) {
    let (spool, report) = Spool::open(config).unwrap();
    assert!(report.rescan, "{report:?}");
    assert_eq!(report.rescanned, ids.len());
    spool.wait_rescan();
    assert_eq!(spool.len(), ids.len());
    assert_eq!(spool.ids().unwrap(), ids);
    (spool, report)
}

/// Opens a spool that a crash (or a marker it cannot trust) left to
/// rescan, waits for the rescan, and checks it found `n` messages.
fn reopen_unclean(config: &SpoolConfig, n: usize) {
    let (spool, report) = Spool::open(config.clone()).unwrap();
    assert!(!report.clean);
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(spool.len(), n);
    spool.close().unwrap();
}

fn spool_bytes(envelope: &Envelope, content: &[u8]) -> Vec<u8> {
    let mut bytes = crate::file::encode_header(envelope, content.len());
    bytes.extend_from_slice(content);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_then_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert_eq!(report.messages, 0);
    assert!(spool.is_empty());
    let queue = spool.dir().to_owned();

    let id = spool.next_id();
    let env = envelope(3);
    let parts: [&[u8]; 2] = [b"Received: from x\r\n", b"Subject: hi\r\n\r\nbody\r\n"];
    spool.store(id, &env, &parts).await.unwrap();

    let (back, content) = spool.read(id).unwrap();
    assert_eq!(back, env);
    assert_eq!(content, b"Received: from x\r\nSubject: hi\r\n\r\nbody\r\n");

    let bucket = format!("{:x}", id.value() & 0xf);
    assert_eq!(msg_files(&queue), vec![(bucket.clone(), id.to_string())]);
    // Its file's other name: the slot in tmp/ it was written in, kept
    // for the next message once this one is done (reuse.rs).
    let slots = dir_entries(&queue.join("tmp"));
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert!(crate::reuse::is_free_name(&slots[0]), "{slots:?}");
    assert_eq!(lent_in(&queue.join("tmp")), 1);

    // The file format: magic line with the content's length, one line
    // of JSON, then the content.
    let raw = fs::read(queue.join("msg").join(&bucket).join(id.to_string())).unwrap();
    let first = format!("MTA-SPOOL 2 {}\n", content.len());
    assert!(raw.starts_with(first.as_bytes()));
    let rest = &raw[first.len()..];
    let nl = rest.iter().position(|&b| b == b'\n').unwrap();
    let parsed: Envelope = serde_json::from_slice(&rest[..nl]).unwrap();
    assert_eq!(parsed, env);
    assert_eq!(&rest[nl + 1..], content.as_slice());

    assert_eq!(spool.len(), 1);
    assert_eq!(spool.ids().unwrap(), vec![id]);
    let entry = spool.entry(id).unwrap().unwrap();
    assert_eq!(
        entry,
        IndexEntry {
            queue: QueueName::Ram,
            arrival: env.arrival,
            next_attempt: env.arrival,
            size: content.len() as u64,
            recipients: vec![RecipientState::Pending; 3],
            attempts: 0,
            last_errors: Default::default(),
            delay_notified: false,
            sender: "alice@example.test".into(),
            rcpts: vec![
                "rcpt0@example.org".into(),
                "rcpt1@example.org".into(),
                "rcpt2@example.org".into()
            ],
            held_since: None,
            held_secs: 0,
            auth: None,
        }
    );
    assert!(matches!(
        spool.read(QueueId::new(1)),
        Err(SpoolError::NotFound { .. })
    ));
    spool.close().unwrap();
}

async fn concurrent_stores(spool: &Spool, n: usize) -> Vec<QueueId> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let id = spool.next_id();
            let body = format!("message {i}\r\n");
            spool
                .store(id, &envelope(1), &[body.as_bytes()])
                .await
                .map(|()| id)
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_all_succeed_with_distinct_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = concurrent_stores(&spool, 200).await;
    let distinct: HashSet<_> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 200);
    assert_eq!(spool.len(), 200);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(spool.ids().unwrap(), sorted);
    assert_eq!(msg_files(spool.dir()).len(), 200);
    assert!(spool.commit_batches() <= 200);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_alone_runs_its_own_directory_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    for n in 1..=3 {
        concurrent_stores(&spool, 1).await;
        assert_eq!(spool.commit_batches(), n);
    }
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_share_commit_batches() {
    let tmp = tempfile::tempdir().unwrap();
    // The leader's pause before it fsyncs makes batching certain here; a
    // store that fsynced on its own would still show 200 batches.
    let tuning = Tuning {
        commit_delay: Some(Duration::from_millis(20)),
        ..Tuning::default()
    };
    let (spool, _) = Spool::open_with(config(tmp.path()), tuning).unwrap();
    concurrent_stores(&spool, 200).await;
    assert_eq!(spool.len(), 200);
    let batches = spool.commit_batches();
    assert!(batches >= 1);
    assert!(
        batches < 200,
        "no batching: {batches} batches for 200 stores"
    );
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_bounds_a_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.max_batch = 1;
    let tuning = Tuning {
        commit_delay: Some(Duration::from_millis(5)),
        ..Tuning::default()
    };
    let (spool, _) = Spool::open_with(cfg, tuning).unwrap();
    concurrent_stores(&spool, 20).await;
    assert_eq!(spool.commit_batches(), 20);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_close_then_open_needs_no_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 5).await;
    spool.close().unwrap();
    assert!(tmp.path().join("queue/clean").exists());

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert_eq!(report.rescanned, 0);
    assert_eq!(report.messages, 5);
    assert_eq!(spool.len(), 5);
    assert_eq!(spool.ids().unwrap(), ids);
    // The marker is gone while open, so a crash now would be detected.
    assert!(!tmp.path().join("queue/clean").exists());
    let (_, content) = spool.read(ids[3]).unwrap();
    assert_eq!(content, b"Received: test\r\nSubject: 3\r\n\r\nbody 3\r\n");
    // Entries kept their RAM-queue state: the index was trusted.
    assert_eq!(spool.entry(ids[0]).unwrap().unwrap().queue, QueueName::Ram);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_then_open_rescans() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 7).await;
    let clone = spool.clone();
    drop(spool);
    drop(clone); // no close(): as if the process died

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(!report.clean);
    assert!(report.rescan);
    assert_eq!(report.rescanned, 7);
    spool.wait_rescan();
    assert_eq!(spool.len(), 7);
    assert_eq!(spool.ids().unwrap(), ids);
    for id in &ids {
        let entry = spool.entry(*id).unwrap().unwrap();
        assert_eq!(entry.queue, QueueName::Disk);
        assert_eq!(entry.recipients, vec![RecipientState::Pending; 2]);
        spool.read(*id).unwrap();
    }
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_drops_stale_entries_and_keeps_recipient_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 3).await;
    let index = spool.index().unwrap();
    // A recipient already delivered, and an entry whose file is gone.
    let mut entry = index.get(ids[1]).unwrap().unwrap();
    entry.recipients[0] = RecipientState::Delivered;
    index.insert(ids[1], &entry).unwrap();
    let ghost = QueueId::new(ids[2].value() + 1);
    index.insert(ghost, &entry).unwrap();
    drop(index);
    drop(spool);

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert_eq!(report.rescanned, 3);
    spool.wait_rescan();
    assert_eq!(spool.ids().unwrap(), ids);
    assert_eq!(spool.len(), 3);
    assert_eq!(spool.rescan_progress().unwrap().stale_removed, 1);
    let kept = spool.entry(ids[1]).unwrap().unwrap();
    assert_eq!(
        kept.recipients,
        vec![RecipientState::Delivered, RecipientState::Pending]
    );
    assert_eq!(kept.queue, QueueName::Disk);
    // The schedule tree was rebuilt in step: one key per message.
    let index = spool.index().unwrap();
    assert_eq!(index.schedule_len(), 3);
    index.assert_consistent();
    drop(index);
    spool.close().unwrap();
}

/// The rescan leaves an entry it keeps unwritten and unchecked; its
/// closing sweep must still put back the keys a crash lost and drop the
/// ones it left over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_sweep_restores_lost_keys_and_drops_stray_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 6).await;
    let now = envelope(1).arrival;
    let index = spool.index().unwrap();
    // Deferred entries, as a rescan keeps them (the disk queue, with
    // progress); the third one held.
    for (n, id) in ids.iter().enumerate() {
        let mut entry = index.get(*id).unwrap().unwrap();
        entry.queue = QueueName::Disk;
        entry.next_attempt = now + 100 + n as u64;
        entry.attempts = 1;
        index.update(*id, &entry).unwrap();
    }
    hold(&spool, ids[2], now);
    // What a crash may leave: entries without their keys, a schedule key
    // and a membership of an entry that has others.
    index.remove_raw_keys(ids[0]);
    index.remove_raw_keys(ids[2]);
    index.remove_raw_keys(ids[4]);
    index.insert_raw_schedule_key(now + 5000, ids[1]);
    index.insert_raw_member(QueueName::Bounce, ids[3]);
    index.insert_raw_member(QueueName::Held, ids[5]);
    drop(index);
    drop(spool); // no close(): as if the process died

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(spool.rescan_progress().unwrap().messages_added, 0);
    let index = spool.index().unwrap();
    index.assert_consistent();
    assert_eq!(index.schedule_len(), 5);
    for (n, id) in ids.iter().enumerate() {
        let entry = spool.entry(*id).unwrap().unwrap();
        assert_eq!(entry.attempts, 1, "{id} kept its progress");
        if n == 2 {
            assert_eq!(entry.queue, QueueName::Held);
        } else {
            assert_eq!(entry.queue, QueueName::Disk);
            assert_eq!(entry.next_attempt, now + 100 + n as u64);
        }
    }
    // Every deferred message is due again, the restored ones included.
    let due: Vec<QueueId> = spool
        .due(now + 200, 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(due, vec![ids[0], ids[1], ids[3], ids[4], ids[5]]);
    drop(index);
    spool.close().unwrap();
}

/// The newest sled snapshot under `index/`.
fn newest_snapshot(index: &Path) -> Option<String> {
    fs::read_dir(index)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap."))
        .max()
}

/// A clean close leaves sled's snapshot at the tip of its log, so the
/// next open has no log to read into it: sled writes a snapshot at open
/// only when it read some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_close_leaves_a_snapshot_the_next_open_need_not_advance() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    store_n(&spool, 50).await;
    spool.close().unwrap();
    let index = tmp.path().join("queue/index");
    let closed = newest_snapshot(&index);
    assert!(closed.is_some(), "a snapshot after the close");

    let db = sled::Config::new().path(&index).open().unwrap();
    drop(db);
    assert_eq!(newest_snapshot(&index), closed);

    // And the spool still opens clean on it, with every message.
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert_eq!(spool.len(), 50);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = queue_with(tmp.path(), 4).await;
    fs::remove_dir_all(tmp.path().join("queue/index")).unwrap();

    let (spool, report) = open_rebuilt(config(tmp.path()), &ids);
    assert!(report.clean);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = queue_with(tmp.path(), 4).await;
    let index_dir = tmp.path().join("queue/index");
    for entry in fs::read_dir(&index_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::write(&path, vec![0xa5; 4096]).unwrap();
        }
    }

    let (spool, _) = open_rebuilt(config(tmp.path()), &ids);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_index_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let ids = queue_with(tmp.path(), 3).await;
    let queue = tmp.path().join("queue");
    fs::remove_dir_all(queue.join("index")).unwrap();
    fs::write(queue.join("index"), b"not a database").unwrap();

    let (spool, report) = open_rebuilt(config(tmp.path()), &ids);
    assert!(report.index_damaged);
    let aside: Vec<_> = dir_entries(&queue)
        .into_iter()
        .filter(|n| n.starts_with("index.damaged-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(fs::read(queue.join(&aside[0])).unwrap(), b"not a database");
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_tmp_files_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    spool.close().unwrap();
    let queue = tmp.path().join("queue");
    // A complete, valid spool file that never reached the commit point.
    let leftover = QueueId::new(0x42);
    fs::write(
        queue.join("tmp").join(leftover.to_string()),
        spool_bytes(&envelope(1), b"never acknowledged\r\n"),
    )
    .unwrap();
    fs::write(queue.join("tmp/partial"), b"MTA-SPOOL 1\n{\"sen").unwrap();

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert_eq!(report.removed_tmp, 2);
    assert_eq!(report.messages, 0);
    assert!(spool.is_empty());
    assert!(spool.ids().unwrap().is_empty());
    assert!(dir_entries(&queue.join("tmp")).is_empty());
    assert!(msg_files(&queue).is_empty());
    assert!(matches!(
        spool.read(leftover),
        Err(SpoolError::NotFound { .. })
    ));
    spool.close().unwrap();
}

#[test]
fn second_open_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    match Spool::open(config(tmp.path())) {
        Err(SpoolError::Locked { dir }) => assert_eq!(dir, tmp.path().join("queue")),
        other => panic!("expected Locked, got {other:?}"),
    }
    // The failed open must not have disturbed the open spool.
    assert!(!tmp.path().join("queue/clean").exists());
    spool.close().unwrap();
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    spool.close().unwrap();
}

#[test]
fn dropped_spool_releases_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    drop(spool);
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(!report.clean);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_increase_and_stay_above_existing_ones_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let mut last = spool.next_id();
    for _ in 0..10_000 {
        let id = spool.next_id();
        assert!(id > last, "{id} after {last}");
        last = id;
    }
    // An id far in the future, as if the clock later stepped back.
    let future = QueueId::new(crate::ids::unix_micros() + 3_600_000_000_000);
    spool.store(future, &envelope(1), &[b"x"]).await.unwrap();
    assert!(spool.next_id() > future);
    spool.close().unwrap();

    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    assert!(spool.next_id() > future);
    drop(spool); // crash: the seed must come from the spool files too

    fs::remove_dir_all(tmp.path().join("queue/index")).unwrap();
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(spool.len(), 1);
    assert!(spool.next_id() > future);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_files_are_moved_aside_not_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let good = store_n(&spool, 2).await;
    let queue = spool.dir().to_owned();

    let bad_magic = spool.next_id();
    let bad_magic_bytes = b"From alice Mon Jan  1\nSubject: x\n\nbody\n".to_vec();
    let bad_json = spool.next_id();
    let bad_json_bytes = b"MTA-SPOOL 1\n{\"sender\": oops}\nbody\n".to_vec();
    fs::write(
        queue.join(format!("msg/{:x}/{bad_magic}", bad_magic.value() & 0xf)),
        &bad_magic_bytes,
    )
    .unwrap();
    fs::write(
        queue.join(format!("msg/{:x}/{bad_json}", bad_json.value() & 0xf)),
        &bad_json_bytes,
    )
    .unwrap();
    assert!(matches!(
        spool.read(bad_magic),
        Err(SpoolError::Corrupt { .. })
    ));
    assert!(matches!(
        spool.read(bad_json),
        Err(SpoolError::Corrupt { .. })
    ));
    drop(spool); // crash, so the next open rescans

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert_eq!(report.rescanned, 4);
    spool.wait_rescan();
    let progress = spool.rescan_progress().unwrap();
    assert_eq!(progress.corrupt, 2);
    assert_eq!(spool.corrupt_set_aside(), 2);
    assert_eq!(progress.files_done, 4);
    assert!(!progress.running);
    assert_eq!(spool.len(), 2);
    assert_eq!(spool.ids().unwrap(), good);
    assert_eq!(msg_files(&queue).len(), 2);
    assert_eq!(
        fs::read(queue.join("corrupt").join(bad_magic.to_string())).unwrap(),
        bad_magic_bytes
    );
    assert_eq!(
        fs::read(queue.join("corrupt").join(bad_json.to_string())).unwrap(),
        bad_json_bytes
    );
    // New ids stay above the corrupt files' ids too.
    assert!(spool.next_id() > bad_json);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_found_at_run_time_is_set_aside_and_unindexed() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 2).await;
    let queue = spool.dir().to_owned();
    let bad = ids[0];
    let path = queue.join(format!("msg/{:x}/{bad}", bad.value() & 0xf));
    fs::write(&path, b"MTA-SPOOL 1\n{\"sen").unwrap();
    assert!(matches!(spool.read(bad), Err(SpoolError::Corrupt { .. })));

    spool.set_aside_corrupt(bad, "test").unwrap();
    assert_eq!(spool.corrupt_set_aside(), 1);
    assert_eq!(spool.entry(bad).unwrap(), None);
    assert_eq!(spool.ids().unwrap(), vec![ids[1]]);
    assert_eq!(spool.len(), 1);
    assert!(!path.exists());
    assert_eq!(
        fs::read(queue.join("corrupt").join(bad.to_string())).unwrap(),
        b"MTA-SPOOL 1\n{\"sen"
    );
    // A second time (say, a rescan got there first): nothing to move.
    spool.set_aside_corrupt(bad, "test").unwrap();
    assert_eq!(spool.corrupt_set_aside(), 1);
    // Its slot in tmp/ (reuse.rs) went too: no later message can be
    // written over the file set aside.
    assert_eq!(
        lent_in(&queue.join("tmp")),
        1,
        "the other message's slot only"
    );
    for id in store_n(&spool, 3).await {
        spool.remove(id).unwrap();
    }
    assert_eq!(
        fs::read(queue.join("corrupt").join(bad.to_string())).unwrap(),
        b"MTA-SPOOL 1\n{\"sen"
    );
    spool.close().unwrap();

    // The clean index is trusted and no longer knows it.
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean && !report.rescan);
    assert_eq!(spool.ids().unwrap(), vec![ids[1]]);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misplaced_file_is_moved_to_its_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let queue = spool.dir().to_owned();
    let id = QueueId::new(0x1234_5678_9abc_def3);
    fs::write(
        queue.join(format!("msg/0/{id}")),
        spool_bytes(&envelope(1), b"hello"),
    )
    .unwrap();
    drop(spool);

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    // Moved at open, before the background rescan reads it.
    assert_eq!(msg_files(&queue), vec![("3".into(), id.to_string())]);
    assert_eq!(report.rescanned, 1);
    spool.wait_rescan();
    assert_eq!(spool.len(), 1);
    assert_eq!(spool.read(id).unwrap().1, b"hello");
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_create_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let queue = spool.dir().to_owned();
    let kept = store_n(&spool, 1).await;

    // tmp/ is now a regular file: creating tmp/<id> fails with ENOTDIR.
    // (The queued message loses its second name there, its slot.)
    fs::remove_dir_all(queue.join("tmp")).unwrap();
    fs::write(queue.join("tmp"), b"").unwrap();
    let id = spool.next_id();
    let err = spool
        .store(id, &envelope(1), &[b"content"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, SpoolError::Io { op: "create", .. }),
        "{err:?}"
    );
    assert!(!err.is_no_space());
    assert_eq!(msg_files(&queue).len(), 1);
    assert_eq!(spool.len(), 1);
    assert_eq!(spool.ids().unwrap(), kept);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rename_removes_the_tmp_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let queue = spool.dir().to_owned();
    let id = spool.next_id();
    // The target bucket is now a regular file: the rename fails.
    let bucket = queue.join(format!("msg/{:x}", id.value() & 0xf));
    fs::remove_dir(&bucket).unwrap();
    fs::write(&bucket, b"").unwrap();

    let err = spool
        .store(id, &envelope(1), &[b"content"])
        .await
        .unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err:?}");
    assert!(dir_entries(&queue.join("tmp")).is_empty());
    assert_eq!(fs::read(&bucket).unwrap(), b"");
    assert!(spool.is_empty());
    assert!(spool.ids().unwrap().is_empty());
    drop(spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_id_does_not_replace_a_queued_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let id = spool.next_id();
    spool.store(id, &envelope(1), &[b"first"]).await.unwrap();
    let err = spool
        .store(id, &envelope(1), &[b"second"])
        .await
        .unwrap_err();
    assert!(matches!(err, SpoolError::IdInUse { .. }), "{err:?}");
    assert_eq!(spool.read(id).unwrap().1, b"first");
    assert_eq!(spool.len(), 1);
    // Only the queued message's second name (its slot, reuse.rs) is left
    // in tmp/.
    let left = dir_entries(&spool.dir().join("tmp"));
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(
        fs::read(spool.dir().join("tmp").join(&left[0])).unwrap(),
        fs::read(spool.inner.layout.msg_path(id)).unwrap()
    );
    spool.close().unwrap();
    assert!(dir_entries(&tmp.path().join("queue/tmp")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_after_close_fails_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let other = spool.clone();
    spool.close().unwrap();
    let id = other.next_id();
    let err = other.store(id, &envelope(1), &[b"late"]).await.unwrap_err();
    assert!(matches!(err, SpoolError::Closed), "{err:?}");
    assert!(matches!(other.ids(), Err(SpoolError::Closed)));
    let queue = tmp.path().join("queue");
    assert!(dir_entries(&queue.join("tmp")).is_empty());
    assert!(msg_files(&queue).is_empty());
    // Closing twice is harmless.
    other.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_during_stores_is_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let id = spool.next_id();
            spool.store(id, &envelope(1), &[b"x"]).await
        }));
    }
    let closer = spool.clone();
    tokio::task::spawn_blocking(move || closer.close().unwrap())
        .await
        .unwrap();
    // Every store either finished before close() returned or was refused.
    let queue = tmp.path().join("queue");
    let on_disk = msg_files(&queue).len();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(SpoolError::Closed) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(on_disk, ok);
    assert_eq!(msg_files(&queue).len(), ok, "a store wrote after close");
    assert!(dir_entries(&queue.join("tmp")).is_empty());

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert_eq!(report.rescanned, 0);
    assert_eq!(report.messages, ok);
    spool.close().unwrap();
}

#[test]
fn free_space_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    assert!(spool.has_free_space().unwrap());
    spool.close().unwrap();
    cfg.min_free_space = u64::MAX;
    let (spool, _) = Spool::open(cfg).unwrap();
    assert!(!spool.has_free_space().unwrap());
    spool.close().unwrap();
}

#[test]
fn no_space_errors_are_recognised() {
    let e = SpoolError::io(
        "write",
        &PathBuf::from("x"),
        std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
    );
    assert!(e.is_no_space());
    let e = SpoolError::io(
        "write",
        &PathBuf::from("x"),
        std::io::Error::from_raw_os_error(nix::libc::EIO),
    );
    assert!(!e.is_no_space());
    assert!(!SpoolError::Closed.is_no_space());
}

/// Times open, the background rescan, a clean close and a clean open
/// with 100,000 spool files, and the close and clean open of a queue of
/// ten for comparison. Run with
/// `cargo test -p mta-spool --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn rescan_of_100k_files() {
    fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = f();
        eprintln!("{what} took {:?}", started.elapsed());
        out
    }
    let mut cost = Vec::new();
    for n in [10u64, 100_000] {
        eprintln!("-- {n} spool files");
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path());
        let (spool, _) = Spool::open(cfg.clone()).unwrap();
        let queue = spool.dir().to_owned();
        drop(spool);
        let body = vec![b'x'; 4096];
        let base = crate::ids::unix_micros();
        let layout = crate::layout::Layout::new(&queue);
        for i in 0..n {
            let id = QueueId::new(base + i);
            fs::write(layout.msg_path(id), spool_bytes(&envelope(2), &body)).unwrap();
        }
        let (spool, report) = timed("open (listing only)", || Spool::open(cfg.clone()).unwrap());
        assert_eq!(report.rescanned as u64, n);
        timed("background rescan", || spool.wait_rescan());
        assert_eq!(spool.len() as u64, n);
        timed("close after the rescan", || spool.close().unwrap());
        let (spool, report) = timed("clean open", || Spool::open(cfg.clone()).unwrap());
        assert!(!report.rescan);
        assert_eq!(report.messages as u64, n);
        // Idle for a while (the flusher has caught up), then stop.
        std::thread::sleep(Duration::from_secs(1));
        let close = std::time::Instant::now();
        spool.close().unwrap();
        let close = close.elapsed();
        eprintln!("idle close took {close:?}");
        cost.push(close);
    }
    eprintln!(
        "idle close: 10 files {:?}, 100,000 files {:?}",
        cost[0], cost[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_emptied_while_stopped_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 3).await;
    spool.close().unwrap();
    // A valid but empty index where the old one was: sled opens it fine,
    // only the missing token shows it is not the index the clean marker
    // was written for.
    let layout = crate::layout::Layout::new(&tmp.path().join("queue"));
    fs::remove_dir_all(&layout.index).unwrap();
    let (index, _) = crate::index::Index::open(&layout, 0).unwrap();
    index.flush().unwrap();
    drop(index);

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert!(!report.index_damaged);
    assert!(report.rescan);
    assert_eq!(report.rescanned, 3);
    spool.wait_rescan();
    assert_eq!(spool.ids().unwrap(), ids);
    assert_eq!(spool.len(), 3);
    spool.close().unwrap();
}

#[tokio::test]
async fn update_due_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    let env = envelope(2);
    let a = spool.next_id();
    spool
        .store(a, &env, &[b"Subject: a\r\n\r\n"])
        .await
        .unwrap();
    let b = spool.next_id();
    spool
        .store_in(
            QueueName::Bounce,
            b,
            &env,
            std::sync::Arc::new(b"Subject: b\r\n\r\n".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(spool.entry(b).unwrap().unwrap().queue, QueueName::Bounce);

    // Both are due at arrival; move `a` into the future.
    let now = env.arrival;
    assert_eq!(spool.due(now, 10).unwrap().len(), 2);
    let mut entry = spool.entry(a).unwrap().unwrap();
    entry.queue = QueueName::Disk;
    entry.next_attempt = now + 400;
    entry.attempts = 1;
    entry.recipients[0] = RecipientState::Delivered;
    entry.last_errors.insert(
        1,
        crate::RecipientError {
            status: "4.4.1".into(),
            reason: "connection refused".into(),
            remote: None,
            reply: None,
        },
    );
    spool.update(a, &entry).unwrap();
    let due: Vec<QueueId> = spool
        .due(now, 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(due, vec![b]);
    assert_eq!(spool.first_due().unwrap(), Some(now));
    assert_eq!(spool.due(now + 400, 10).unwrap().len(), 2);
    assert_eq!(
        spool.due(now + 400, 1).unwrap().len(),
        1,
        "limit is honoured"
    );
    assert_eq!(spool.entry(a).unwrap().unwrap(), entry);

    spool.remove(b).unwrap();
    assert_eq!(spool.len(), 1);
    assert!(matches!(spool.read(b), Err(SpoolError::NotFound { .. })));
    assert_eq!(spool.first_due().unwrap(), Some(now + 400));
    // An update of a removed message does not bring it back.
    assert!(spool.update(b, &entry).is_err());
    assert_eq!(spool.len(), 1);

    // The state survives a clean restart.
    spool.close().unwrap();
    let (spool, report) = Spool::open(config(dir.path())).unwrap();
    assert!(report.clean);
    assert_eq!(spool.entry(a).unwrap().unwrap(), entry);
}

#[tokio::test]
async fn rescan_keeps_attempts_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(dir.path())).unwrap();
    let env = envelope(2);
    let id = spool.next_id();
    spool
        .store(id, &env, &[b"Subject: a\r\n\r\n"])
        .await
        .unwrap();
    let mut entry = spool.entry(id).unwrap().unwrap();
    entry.attempts = 3;
    entry.recipients[1] = RecipientState::Delivered;
    spool.update(id, &entry).unwrap();
    spool.close().unwrap();
    // Lose the clean marker: the next open rescans but keeps progress.
    std::fs::remove_file(dir.path().join("queue").join("clean")).unwrap();
    let (spool, report) = Spool::open(config(dir.path())).unwrap();
    assert!(!report.clean);
    spool.wait_rescan();
    let after = spool.entry(id).unwrap().unwrap();
    assert_eq!(after.attempts, 3);
    assert_eq!(after.recipients[1], RecipientState::Delivered);
    assert_eq!(after.queue, QueueName::Disk);
}

// ---------------------------------------------------------------------
// Background rescan, clean open in O(1), per-queue figures, flushes.

/// An envelope that arrived at `arrival`.
fn envelope_at(recipients: usize, arrival: u64) -> Envelope {
    Envelope {
        arrival,
        ..envelope(recipients)
    }
}

/// Creates the queue directory, then writes `n` spool files straight into
/// `msg/` as an earlier run that crashed would have left them (ids in the
/// past, one apart, two recipients each; no clean marker); returns their
/// ids in order.
fn plant_files(cfg: &SpoolConfig, n: u64) -> Vec<QueueId> {
    if !cfg.dir.join("msg").exists() {
        let (spool, _) = Spool::open(cfg.clone()).unwrap();
        spool.close().unwrap();
    }
    let layout = crate::layout::Layout::new(&cfg.dir);
    let base = crate::ids::unix_micros() - 60_000_000;
    let ids = (0..n)
        .map(|i| {
            let id = QueueId::new(base + i);
            let body = format!("Subject: planted {i}\r\n\r\nbody\r\n");
            fs::write(
                layout.msg_path(id),
                spool_bytes(&envelope(2), body.as_bytes()),
            )
            .unwrap();
            id
        })
        .collect();
    let _ = fs::remove_file(cfg.dir.join("clean"));
    ids
}

fn rate_config(dir: &Path, rescan_rate: u64) -> SpoolConfig {
    SpoolConfig {
        rescan_rate,
        index_cache: 0,
        ..config(dir)
    }
}

/// Waits (polling) until `check` holds, at most ten seconds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rescan_runs_in_the_background_while_the_spool_is_used() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = rate_config(tmp.path(), 200);
    // An earlier run: one message whose file is gone by now (a stale
    // entry), and one with a recipient delivered.
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let old = store_n(&spool, 2).await;
    let mut progressed = spool.entry(old[1]).unwrap().unwrap();
    progressed.recipients[0] = RecipientState::Delivered;
    progressed.attempts = 2;
    spool.update(old[1], &progressed).unwrap();
    fs::remove_file(spool.inner.layout.msg_path(old[0])).unwrap();
    drop(spool); // crash
    let planted = plant_files(&cfg, 200);
    let mut files = planted.clone();
    files.push(old[1]);
    files.sort();
    let max_file = *files.last().unwrap();

    let started = std::time::Instant::now();
    let (spool, report) = Spool::open(cfg.clone()).unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "open took {:?}",
        started.elapsed()
    );
    assert!(report.rescan);
    assert!(!report.clean);
    assert_eq!(report.rescanned, 201);
    let progress = spool.rescan_progress().unwrap();
    assert!(progress.running);
    assert_eq!(progress.files_total, 201);
    assert!(progress.files_done < 201, "{progress:?}");

    // Stores succeed at once, with ids above every file, and the rescan
    // never touches them.
    let wake = spool.rescan_notify();
    let new = store_n(&spool, 5).await;
    assert!(new.iter().all(|id| *id > max_file));
    let mut moved = spool.entry(new[1]).unwrap().unwrap();
    moved.queue = QueueName::Disk;
    moved.next_attempt += 3600;
    spool.update(new[1], &moved).unwrap();
    let stored: Vec<IndexEntry> = new
        .iter()
        .map(|id| spool.entry(*id).unwrap().unwrap())
        .collect();

    // The rescan wakes the disk runner, and what it indexed is due before
    // it ends.
    tokio::time::timeout(Duration::from_secs(5), wake.notified())
        .await
        .expect("woken after a rescan batch");
    // (The old index's entry may be due too, before the rescan reaches
    // it: look at the planted files only.)
    let file_set: HashSet<QueueId> = planted.iter().copied().collect();
    let mut early = Vec::new();
    eventually("a rescanned message is due", || {
        early = spool
            .due(crate::ids::unix_seconds(), 1000)
            .unwrap()
            .into_iter()
            .filter(|(id, _)| file_set.contains(id))
            .collect();
        !early.is_empty()
    })
    .await;
    assert!(spool.rescan_progress().unwrap().running);
    // A runner works on it meanwhile: delivers one recipient...
    let (busy, mut entry) = early[0].clone();
    assert_eq!(entry.queue, QueueName::Disk);
    entry.recipients[1] = RecipientState::Delivered;
    entry.next_attempt += 600;
    spool.update(busy, &entry).unwrap();
    // ...and finishes another (if there is one yet): file and entry go.
    let done = early.get(1).map(|(id, _)| *id);
    if let Some(done) = done {
        spool.remove(done).unwrap();
    }
    assert!(spool.rescan_progress().unwrap().running);

    tokio::task::spawn_blocking({
        let spool = spool.clone();
        move || spool.wait_rescan()
    })
    .await
    .unwrap();
    let progress = spool.rescan_progress().unwrap();
    assert!(!progress.running);
    assert_eq!(progress.files_total, 201);
    assert_eq!(progress.files_done, 201);
    assert_eq!(progress.stale_removed, 1, "{progress:?}");
    assert_eq!(progress.corrupt, 0);
    assert!(
        progress.elapsed >= Duration::from_millis(500),
        "{progress:?}"
    );

    // The index equals the files.
    let mut expected: Vec<QueueId> = files
        .iter()
        .copied()
        .filter(|id| Some(*id) != done)
        .chain(new.iter().copied())
        .collect();
    expected.sort();
    assert_eq!(spool.ids().unwrap(), expected);
    assert_eq!(msg_files(spool.dir()).len(), expected.len());
    assert_eq!(spool.len(), expected.len());
    assert!(
        spool.entry(old[0]).unwrap().is_none(),
        "stale entry removed"
    );
    for (id, before) in new.iter().zip(&stored) {
        assert_eq!(&spool.entry(*id).unwrap().unwrap(), before, "{id} touched");
    }
    assert_eq!(
        spool.entry(busy).unwrap().unwrap(),
        entry,
        "runner's update kept"
    );
    let kept = spool.entry(old[1]).unwrap().unwrap();
    assert_eq!(kept.recipients[0], RecipientState::Delivered);
    assert_eq!(kept.attempts, 2);
    assert_eq!(kept.queue, QueueName::Disk, "the RAM queue did not survive");
    spool.index().unwrap().assert_consistent();
    let stats = spool.queue_stats();
    assert_eq!(stats[0].messages, 4, "new ones still in RAM: {stats:?}");
    assert_eq!(stats[2].messages as usize, expected.len() - 4);

    // Finished: the close is clean and the next open trusts the index.
    spool.close().unwrap();
    let (spool, report) = Spool::open(cfg).unwrap();
    assert!(report.clean);
    assert!(!report.rescan);
    assert!(spool.rescan_progress().is_none());
    assert_eq!(report.messages, expected.len());
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_during_rescan_writes_no_marker_and_the_next_open_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = rate_config(tmp.path(), 100);
    let files = plant_files(&cfg, 300);
    let (spool, report) = Spool::open(cfg.clone()).unwrap();
    assert!(report.rescan);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closing = spool.clone();
    let started = std::time::Instant::now();
    tokio::task::spawn_blocking(move || closing.close().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "close waited for the rescan: {:?}",
        started.elapsed()
    );
    let progress = spool.rescan_progress().unwrap();
    assert!(!progress.running);
    assert!(progress.files_done < 300, "{progress:?}");
    assert!(!tmp.path().join("queue/clean").exists());
    spool.wait_rescan(); // returns at once: ended

    let (spool, report) = Spool::open(rate_config(tmp.path(), 0)).unwrap();
    assert!(!report.clean);
    assert!(report.rescan);
    assert_eq!(report.rescanned, 300);
    spool.wait_rescan();
    let progress = spool.rescan_progress().unwrap();
    assert_eq!(progress.files_done, 300);
    assert_eq!(spool.ids().unwrap(), files);
    assert_eq!(spool.len(), 300);
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
    assert!(tmp.path().join("queue/clean").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_rescan_then_reopen_indexes_every_file_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = rate_config(tmp.path(), 100);
    let files = plant_files(&cfg, 300);
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let new = store_n(&spool, 3).await;
    assert!(spool.rescan_progress().unwrap().running);
    drop(spool); // crash mid-rescan

    let (spool, report) = Spool::open(rate_config(tmp.path(), 0)).unwrap();
    assert!(!report.clean);
    assert!(report.rescan);
    assert_eq!(report.rescanned, 303);
    spool.wait_rescan();
    let mut expected = files.clone();
    expected.extend(&new);
    assert_eq!(spool.ids().unwrap(), expected);
    assert_eq!(spool.len(), 303, "each message counted once");
    assert_eq!(msg_files(spool.dir()).len(), 303);
    spool.index().unwrap().assert_consistent();
    let stats = spool.queue_stats();
    assert_eq!(stats[0].messages, 0);
    assert_eq!(stats[2].messages, 303);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_open_trusts_the_marker_without_a_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let ids = store_n(&spool, 5).await;
    spool.close().unwrap();
    let marker_path = tmp.path().join("queue/clean");
    let marker = fs::read_to_string(&marker_path).unwrap();
    assert!(marker.starts_with("MTA-SPOOL-CLEAN 3\ntoken "), "{marker}");
    assert!(
        marker.contains("\nram 5\nbounce 0\ndisk 0\nheld 0\n"),
        "{marker}"
    );

    // The counts come from the marker, not from counting the index: a
    // marker that says more is believed.
    fs::write(&marker_path, marker.replace("\nram 5\n", "\nram 1000\n")).unwrap();
    let (spool, report) = Spool::open(cfg.clone()).unwrap();
    assert!(report.clean);
    assert!(!report.rescan);
    assert_eq!(report.rescanned, 0);
    assert_eq!(report.messages, 1000);
    assert!(spool.rescan_progress().is_none());
    spool.wait_rescan(); // none: returns at once
    assert_eq!(spool.ids().unwrap(), ids);
    drop(spool); // crash: no marker, the next open rescans and recounts

    reopen_unclean(&cfg, 5);

    // A marker of the old format counts as none.
    let marker = fs::read_to_string(&marker_path).unwrap();
    let last_id = marker.lines().last().unwrap().to_owned();
    fs::write(
        &marker_path,
        format!("MTA-SPOOL-CLEAN 1\nmessages 5\n{last_id}\n"),
    )
    .unwrap();
    reopen_unclean(&cfg, 5);

    // A marker whose token the index does not hold: clean, but rescanned.
    let marker = fs::read_to_string(&marker_path).unwrap();
    let token_line = marker.lines().nth(1).unwrap().to_owned();
    fs::write(
        &marker_path,
        marker.replace(&token_line, "token 0123456789abcdef"),
    )
    .unwrap();
    let (spool, report) = Spool::open(cfg).unwrap();
    assert!(report.clean);
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(spool.ids().unwrap(), ids);
    assert_eq!(spool.len(), 5);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_follow_every_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let stats = |spool: &Spool| -> Vec<(QueueName, u64, Option<u64>)> {
        // ram, bounce, disk (held has a test of its own)
        spool
            .queue_stats()
            .into_iter()
            .take(3)
            .map(|s| (s.queue, s.messages, s.oldest_arrival))
            .collect()
    };
    use QueueName::{Bounce, Disk, Ram};
    assert_eq!(
        stats(&spool),
        vec![(Ram, 0, None), (Bounce, 0, None), (Disk, 0, None)]
    );

    let a = spool.next_id();
    spool
        .store(a, &envelope_at(1, 1000), &[b"a"])
        .await
        .unwrap();
    let b = spool.next_id();
    spool
        .store_in(Bounce, b, &envelope_at(1, 2000), Arc::new(b"b".to_vec()))
        .await
        .unwrap();
    let c = spool.next_id();
    spool
        .store(c, &envelope_at(1, 3000), &[b"c"])
        .await
        .unwrap();
    assert_eq!(
        stats(&spool),
        vec![
            (Ram, 2, Some(1000)),
            (Bounce, 1, Some(2000)),
            (Disk, 0, None)
        ]
    );

    // An update that changes the queue moves the message.
    let mut entry = spool.entry(a).unwrap().unwrap();
    entry.queue = Disk;
    entry.next_attempt = 5000;
    spool.update(a, &entry).unwrap();
    assert_eq!(
        stats(&spool),
        vec![
            (Ram, 1, Some(3000)),
            (Bounce, 1, Some(2000)),
            (Disk, 1, Some(1000))
        ]
    );
    // One that does not, does not.
    entry.attempts = 1;
    spool.update(a, &entry).unwrap();
    spool.remove(b).unwrap();
    spool.remove(b).unwrap(); // twice: counted once
    let after_changes = vec![
        (Ram, 1, Some(3000)),
        (Bounce, 0, None),
        (Disk, 1, Some(1000)),
    ];
    assert_eq!(stats(&spool), after_changes);
    assert_eq!(spool.len(), 2);
    spool.index().unwrap().assert_consistent();

    // Across a clean restart (counts from the marker).
    spool.close().unwrap();
    assert_eq!(stats(&spool)[0].1, 1, "counts outlive close");
    assert_eq!(stats(&spool)[0].2, None, "closed");
    let (spool, report) = Spool::open(cfg.clone()).unwrap();
    assert!(!report.rescan);
    assert_eq!(stats(&spool), after_changes);
    drop(spool); // crash

    // Across a rescan: the RAM queue did not survive.
    let (spool, report) = Spool::open(cfg).unwrap();
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(
        stats(&spool),
        vec![(Ram, 0, None), (Bounce, 0, None), (Disk, 2, Some(1000))]
    );
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_saved_follows_the_flusher() {
    let tmp = tempfile::tempdir().unwrap();
    // A flusher that never comes round: only close flushes.
    let tuning = Tuning {
        flush_every: Some(Duration::from_secs(3600)),
        ..Tuning::default()
    };
    let (spool, _) = Spool::open_with(config(tmp.path()), tuning).unwrap();
    let saved = spool.schedule_saved();
    assert_eq!(saved.last_flush_unix_ms, None);
    assert_eq!(saved.changes_since_flush, 0);
    let ids = store_n(&spool, 2).await;
    let mut entry = spool.entry(ids[0]).unwrap().unwrap();
    entry.attempts = 1;
    spool.update(ids[0], &entry).unwrap();
    spool.remove(ids[1]).unwrap();
    assert_eq!(spool.schedule_saved().changes_since_flush, 4);
    let before_close = crate::ids::unix_micros() / 1000;
    spool.close().unwrap();
    let saved = spool.schedule_saved();
    assert_eq!(saved.changes_since_flush, 0);
    assert!(saved.last_flush_unix_ms.unwrap() >= before_close);

    // The flusher writes changes out by itself.
    let tuning = Tuning {
        flush_every: Some(Duration::from_millis(50)),
        ..Tuning::default()
    };
    let (spool, _) = Spool::open_with(config(tmp.path()), tuning).unwrap();
    eventually("first flush", || {
        spool.schedule_saved().last_flush_unix_ms.is_some()
    })
    .await;
    let first = spool.schedule_saved().last_flush_unix_ms.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    spool.update(ids[0], &entry).unwrap();
    eventually("changes flushed", || {
        let saved = spool.schedule_saved();
        saved.changes_since_flush == 0 && saved.last_flush_unix_ms.unwrap() > first
    })
    .await;
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_schedule_keys_are_skipped_and_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 1).await;
    let now = envelope(1).arrival;
    let index = spool.index().unwrap();
    // As a crash may leave them: a key whose entry is due later, and one
    // without an entry.
    let mut entry = spool.entry(ids[0]).unwrap().unwrap();
    entry.next_attempt = now + 100;
    spool.update(ids[0], &entry).unwrap();
    index.insert_raw_schedule_key(now - 10, ids[0]);
    index.insert_raw_schedule_key(now - 20, QueueId::new(1));
    assert_eq!(index.schedule_len(), 3);
    assert_eq!(spool.first_due().unwrap(), Some(now + 100));
    assert!(spool.due(now, 10).unwrap().is_empty());
    assert_eq!(index.schedule_len(), 1);
    index.assert_consistent();
    drop(index);
    spool.close().unwrap();
}

/// Moves a message to the held queue, as the queue runners' operator
/// commands do.
fn hold(spool: &Spool, id: QueueId, now: u64) {
    let mut entry = spool.entry(id).unwrap().unwrap();
    entry.queue = QueueName::Held;
    entry.held_since = Some(now);
    spool.update(id, &entry).unwrap();
}

#[tokio::test]
async fn a_walk_of_what_is_due_passes_over_the_messages_it_is_told_to_skip_without_counting_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 6).await;
    for (n, &id) in ids.iter().enumerate() {
        let mut entry = spool.entry(id).unwrap().unwrap();
        entry.queue = QueueName::Disk;
        entry.next_attempt = 10 + n as u64;
        spool.update(id, &entry).unwrap();
    }
    // The first, second and fourth are in flight (claimed by attempts).
    let claimed = [ids[0], ids[1], ids[3]];
    let due = |limit| -> Vec<QueueId> {
        spool
            .due_unless(100, limit, &|id| claimed.contains(&id))
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    assert_eq!(
        due(2),
        vec![ids[2], ids[4]],
        "the limit counts only what is returned"
    );
    assert_eq!(due(10), vec![ids[2], ids[4], ids[5]]);
    assert_eq!(spool.due(100, 2).unwrap().len(), 2, "nothing skipped");
    spool.index().unwrap().assert_consistent();
}

#[tokio::test]
async fn held_messages_are_never_due_are_counted_and_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let ids = store_n(&spool, 3).await;
    for &id in &ids {
        let mut entry = spool.entry(id).unwrap().unwrap();
        entry.queue = QueueName::Disk;
        entry.next_attempt = 10;
        spool.update(id, &entry).unwrap();
    }
    hold(&spool, ids[1], 5);
    let due: Vec<QueueId> = spool
        .due(100, 10)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(due, vec![ids[0], ids[2]], "a held message is never due");
    let held = |spool: &Spool| spool.queue_stats()[3].clone();
    assert_eq!(held(&spool).queue, QueueName::Held);
    assert_eq!(held(&spool).messages, 1);
    spool.index().unwrap().assert_consistent();

    // A clean restart keeps it held (and counted, from the marker).
    spool.close().unwrap();
    let (spool, report) = Spool::open(cfg.clone()).unwrap();
    assert!(!report.rescan);
    assert_eq!(held(&spool).messages, 1);
    assert_eq!(spool.due(100, 10).unwrap().len(), 2);
    drop(spool); // crash

    // A rescan keeps it held too.
    let (spool, report) = Spool::open(cfg).unwrap();
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(held(&spool).messages, 1);
    assert_eq!(spool.entry(ids[1]).unwrap().unwrap().queue, QueueName::Held);
    assert_eq!(spool.due(100, 10).unwrap().len(), 2);

    // Released: due again.
    let mut entry = spool.entry(ids[1]).unwrap().unwrap();
    entry.queue = QueueName::Disk;
    entry.held_secs += 50 - entry.held_since.take().unwrap();
    entry.next_attempt = 50;
    spool.update(ids[1], &entry).unwrap();
    assert_eq!(spool.due(100, 10).unwrap().len(), 3);
    assert_eq!(held(&spool).messages, 0);
    assert_eq!(
        spool.entry(ids[1]).unwrap().unwrap().effective_arrival(),
        1_700_000_000 + 45
    );
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
}

#[tokio::test]
async fn list_pages_through_the_queue_with_a_filter_in_bounded_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 25).await;
    // Entries carry the addresses, so a filter needs no file.
    let first = spool.entry(ids[0]).unwrap().unwrap();
    assert_eq!(first.sender, "alice@example.test");
    assert_eq!(first.rcpts, vec!["rcpt0@example.org", "rcpt1@example.org"]);

    // Pages of 10, unfiltered: every id once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = spool.list(after, 10, 1000, |_, _| true).unwrap();
        seen.extend(page.items.iter().map(|(id, _)| *id));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids);

    // A filter matching every 5th id, with at most 7 entries looked at
    // per call: each call stops after 7 and says where to go on.
    let wanted: HashSet<QueueId> = ids.iter().step_by(5).copied().collect();
    let mut seen = Vec::new();
    let mut after = None;
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 20, "the listing ends");
        let page = spool
            .list(after, 100, 7, |id, _| wanted.contains(&id))
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|(id, _)| *id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().step_by(5).copied().collect::<Vec<_>>());
    assert!(calls >= 4, "25 entries at 7 per call take 4 calls or more");
    spool.close().unwrap();
}

#[tokio::test]
async fn entries_without_addresses_get_them_from_the_spool_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 1).await;
    // As an older version wrote it.
    let mut entry = spool.entry(ids[0]).unwrap().unwrap();
    entry.sender.clear();
    entry.rcpts.clear();
    spool.update(ids[0], &entry).unwrap();
    let page = spool.list(None, 10, 10, |_, _| true).unwrap();
    assert_eq!(
        page.items[0].1.rcpts,
        vec!["rcpt0@example.org", "rcpt1@example.org"]
    );
    assert_eq!(page.items[0].1.sender, "alice@example.test");
    spool.close().unwrap();
}

/// The authenticated user is in the entry of a message stored, of one
/// the rescan finds after a crash, and of one whose entry an earlier
/// version wrote (format 2, which has no user: the file is the truth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authenticated_user_is_indexed_when_stored_and_on_rescan() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let mut authed = envelope(1);
    authed.origin.auth = Some("alice@example.test".into());
    let mut ids = Vec::new();
    for env in [&authed, &envelope(1), &authed] {
        let id = spool.next_id();
        spool
            .store(id, env, &[b"Subject: a\r\n\r\n"])
            .await
            .unwrap();
        ids.push(id);
    }
    let user = |spool: &Spool, id| spool.entry(id).unwrap().unwrap().auth;
    assert_eq!(user(&spool, ids[0]).as_deref(), Some("alice@example.test"));
    assert_eq!(user(&spool, ids[1]), None);
    // As a version before format 3 left it: no user.
    let index = spool.index().unwrap();
    let old = spool.entry(ids[2]).unwrap().unwrap();
    index.insert_raw_entry(ids[2], &crate::codec::encode_v2(&old));
    drop(index);
    assert_eq!(user(&spool, ids[2]), None);
    let page = spool.list(None, 10, 10, |_, _| true).unwrap();
    let users: Vec<_> = page.items.iter().map(|(_, e)| e.auth.as_deref()).collect();
    assert_eq!(users, [Some("alice@example.test"), None, None]);
    let clone = spool.clone();
    drop(spool);
    drop(clone); // no close(): as if the process died

    // The rescan reads every file's envelope: the old entry gets its user.
    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(user(&spool, ids[0]).as_deref(), Some("alice@example.test"));
    assert_eq!(user(&spool, ids[1]), None);
    assert_eq!(user(&spool, ids[2]).as_deref(), Some("alice@example.test"));
    spool.close().unwrap();

    // And a rebuilt index (none left) has them too.
    fs::remove_dir_all(tmp.path().join("queue/index")).unwrap();
    let (spool, _) = open_rebuilt(config(tmp.path()), &ids);
    let users: Vec<_> = ids.iter().map(|&id| user(&spool, id)).collect();
    let alice = Some("alice@example.test".to_owned());
    assert_eq!(users, [alice.clone(), None, alice]);
    spool.close().unwrap();
}

fn record(n: u32) -> HistoryRecord {
    HistoryRecord {
        time: 1000 + u64::from(n),
        attempt: n,
        recipient: 0,
        event: "deferred".into(),
        status: "4.4.1".into(),
        reply: format!("try {n}"),
        remote: Some("mx.test[127.0.0.2]:25".into()),
    }
}

#[tokio::test]
async fn history_is_kept_in_order_capped_and_removed_with_the_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let ids = store_n(&spool, 2).await;
    spool
        .append_history(ids[0], &[record(1), record(2)])
        .unwrap();
    spool.append_history(ids[0], &[record(3)]).unwrap();
    assert_eq!(
        spool.history(ids[0]).unwrap(),
        vec![record(1), record(2), record(3)]
    );
    assert!(spool.history(ids[1]).unwrap().is_empty());

    // Capped: the newest MAX_HISTORY stay.
    let many: Vec<HistoryRecord> = (10..10 + MAX_HISTORY as u32 + 5).map(record).collect();
    spool.append_history(ids[1], &many).unwrap();
    let kept = spool.history(ids[1]).unwrap();
    assert_eq!(kept.len(), MAX_HISTORY);
    assert_eq!(kept[0], record(15));

    // Across a clean restart.
    spool.close().unwrap();
    let (spool, _) = Spool::open(cfg).unwrap();
    assert_eq!(spool.history(ids[0]).unwrap().len(), 3);

    // Removed with the message; nothing written for a message not queued.
    spool.remove(ids[0]).unwrap();
    assert!(spool.history(ids[0]).unwrap().is_empty());
    spool.append_history(ids[0], &[record(9)]).unwrap();
    assert!(spool.history(ids[0]).unwrap().is_empty());
    spool.close().unwrap();
}

#[tokio::test]
async fn saved_state_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    assert_eq!(spool.load_state("paused").unwrap(), None);
    spool.save_state("paused", b"[\"example.test\"]").unwrap();
    drop(spool); // even a crash: saving flushes
    let (spool, _) = Spool::open(cfg).unwrap();
    assert_eq!(
        spool.load_state("paused").unwrap().as_deref(),
        Some(&b"[\"example.test\"]"[..])
    );
    spool.close().unwrap();
}

/// Issue 11, point 8: the report told a new queue from an unclean stop
/// (both had no marker) no more than it told a trusted index from one
/// rebuilt after it was deleted (both had a marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_tells_new_clean_unclean_and_rebuilt_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let index_dir = tmp.path().join("queue/index");
    let open = || {
        let (spool, report) = Spool::open(cfg.clone()).unwrap();
        spool.wait_rescan();
        (spool, (report.last_stop, report.index))
    };

    let (spool, found) = open();
    assert_eq!(found, (LastStop::New, IndexOrigin::Created));
    store_n(&spool, 2).await;
    drop(spool); // a crash

    let (spool, found) = open();
    assert_eq!(found, (LastStop::NotClean, IndexOrigin::Checked));
    assert_eq!(spool.len(), 2);
    spool.close().unwrap();

    let (spool, found) = open();
    assert_eq!(found, (LastStop::Clean, IndexOrigin::Trusted));
    spool.close().unwrap();

    // Deleted while stopped, after a clean stop.
    fs::remove_dir_all(&index_dir).unwrap();
    let (spool, found) = open();
    assert_eq!(found, (LastStop::Clean, IndexOrigin::Missing));
    assert_eq!(spool.len(), 2, "rebuilt from the spool files");
    drop(spool);

    // Deleted after a crash.
    fs::remove_dir_all(&index_dir).unwrap();
    let (spool, found) = open();
    assert_eq!(found, (LastStop::NotClean, IndexOrigin::Missing));
    spool.close().unwrap();

    // Replaced by the index of another clean stop.
    let other = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(other.path())).unwrap();
    spool.close().unwrap();
    fs::remove_dir_all(&index_dir).unwrap();
    fs::rename(other.path().join("queue/index"), &index_dir).unwrap();
    let (spool, found) = open();
    assert_eq!(found, (LastStop::Clean, IndexOrigin::Replaced));
    assert_eq!(spool.len(), 2);
    spool.close().unwrap();

    // Damaged: sled cannot open it.
    fs::remove_dir_all(&index_dir).unwrap();
    fs::create_dir(&index_dir).unwrap();
    fs::write(index_dir.join("conf"), b"not sled's").unwrap();
    fs::write(index_dir.join("db"), vec![0xffu8; 4096]).unwrap();
    let (spool, found) = open();
    assert_eq!(found.1, IndexOrigin::Damaged, "{found:?}");
    assert_eq!(spool.len(), 2);
    spool.close().unwrap();
}

/// The spool writes the next message over a finished one's file
/// (`reuse.rs`): same inode, read back as itself whether the file was cut
/// to size (much longer) or keeps the old tail (a little longer); the old
/// id is gone; a file of another mode is not kept; close leaves `tmp/`
/// empty and the next open, and a rescan, find the new messages whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_message_is_written_over_a_finished_ones_file() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let (spool, _) = Spool::open(config.clone()).unwrap();
    let tmp = config.dir.join("tmp");

    let long = vec![b'a'; 8000];
    let first = spool.next_id();
    spool.store(first, &envelope(1), &[&long]).await.unwrap();
    let first_path = spool.inner.layout.msg_path(first);
    let inode = fs::metadata(&first_path).unwrap().ino();
    assert_eq!(lent_in(&tmp), 1, "its slot in tmp/");
    spool.remove(first).unwrap();
    assert!(!first_path.exists());
    assert_eq!(kept_in(&tmp), 1, "kept in tmp/");
    assert_eq!(lent_in(&tmp), 0);
    assert!(matches!(
        spool.read(first),
        Err(SpoolError::NotFound { .. })
    ));

    // Much shorter: the file is cut to size.
    let second = spool.next_id();
    spool
        .store(second, &envelope(2), &[b"short"])
        .await
        .unwrap();
    let second_path = spool.inner.layout.msg_path(second);
    let meta = fs::metadata(&second_path).unwrap();
    assert_eq!(meta.ino(), inode, "the same file");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert!(meta.len() < 1000, "cut to size: {}", meta.len());
    assert_eq!(kept_in(&tmp), 0, "taken");
    assert_eq!(lent_in(&tmp), 1, "lent to the second message");
    let (read, content) = spool.read(second).unwrap();
    assert_eq!(read, envelope(2));
    assert_eq!(content, b"short", "nothing of the longer message read");
    assert!(matches!(
        spool.read(first),
        Err(SpoolError::NotFound { .. })
    ));

    // A little shorter: the old tail stays in the file, unread.
    let third = spool.next_id();
    spool.store(third, &envelope(1), &[&long]).await.unwrap();
    let third_len = fs::metadata(spool.inner.layout.msg_path(third))
        .unwrap()
        .len();
    spool.remove(third).unwrap();
    let fourth = spool.next_id();
    let shorter = vec![b'b'; 7000];
    spool
        .store(fourth, &envelope(2), &[&shorter])
        .await
        .unwrap();
    let fourth_path = spool.inner.layout.msg_path(fourth);
    assert_eq!(
        fs::metadata(&fourth_path).unwrap().len(),
        third_len,
        "not cut"
    );
    assert_eq!(spool.read(fourth).unwrap().1, shorter);
    assert_eq!(spool.entry(fourth).unwrap().unwrap().size, 7000);

    // A file of another mode (as a run with a group-readable queue
    // would have left it) is unlinked, not kept.
    let fifth = spool.next_id();
    spool.store(fifth, &envelope(1), &[b"x"]).await.unwrap();
    let fifth_path = spool.inner.layout.msg_path(fifth);
    fs::set_permissions(&fifth_path, fs::Permissions::from_mode(0o640)).unwrap();
    spool.remove(fifth).unwrap();
    assert_eq!(kept_in(&tmp), 0, "not kept");

    // Kept files do not outlive the spool.
    let sixth = spool.next_id();
    spool.store(sixth, &envelope(1), &[b"x"]).await.unwrap();
    spool.remove(sixth).unwrap();
    assert_eq!(kept_in(&tmp), 1);
    assert_eq!(lent_in(&tmp), 2, "the second and fourth messages' slots");
    spool.close().unwrap();
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "close removes them, and the slots' names"
    );

    let (spool, _) = Spool::open(config.clone()).unwrap();
    assert_eq!(spool.read(second).unwrap().1, b"short");
    assert_eq!(spool.read(fourth).unwrap().1, shorter);
    drop(spool);

    // A rescan sizes the messages by their first lines, not the files.
    let (spool, report) = Spool::open(config).unwrap();
    assert!(report.rescan);
    spool.wait_rescan();
    assert_eq!(spool.entry(fourth).unwrap().unwrap().size, 7000);
    assert_eq!(spool.read(fourth).unwrap().1, shorter);
    spool.close().unwrap();
}

/// Files kept for reuse hold disk space: a disk short of space gets it
/// back at the next free-space check, and no file is kept meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_files_go_when_space_runs_short() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(SpoolConfig {
        // Never enough: the disk always looks short of space.
        min_free_space: u64::MAX,
        ..config(dir.path())
    })
    .unwrap();
    let tmp = dir.path().join("queue/tmp");
    let id = spool.next_id();
    spool.store(id, &envelope(1), &[b"x"]).await.unwrap();
    spool.remove(id).unwrap();
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1, "kept");

    assert!(!spool.has_free_space().unwrap());
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "given back");
    let id = spool.next_id();
    spool.store(id, &envelope(1), &[b"y"]).await.unwrap();
    spool.remove(id).unwrap();
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "none kept meanwhile"
    );
    spool.close().unwrap();
}

/// The header of a spool file, as a rescan reads it: from the first 4 KiB
/// when the two lines fit there, from the start again when the envelope
/// line is longer; a file with no end to its envelope line is corrupt
/// however long it is; a version 1 file is sized by its length.
#[test]
fn headers_are_read_whether_or_not_they_fit_the_first_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("0000000000000001");
    for recipients in [1, 300] {
        let env = envelope(recipients);
        let bytes = spool_bytes(&env, b"Subject: x\r\n\r\nbody\r\n");
        assert_eq!(bytes.len() > 4096, recipients == 300);
        fs::write(&path, [&bytes[..], b"tail of an older message"].concat()).unwrap();
        let (header, content) = crate::file::read_header_only(&path).unwrap();
        assert_eq!(header.envelope, env);
        assert_eq!(content, 20);
    }
    for len in [100, 5000, 9000] {
        let mut bytes = b"MTA-SPOOL 2 3\n{".to_vec();
        bytes.resize(len, b'x');
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            crate::file::read_header_only(&path),
            Err(SpoolError::Corrupt { .. })
        ));
    }
    let env = envelope(2);
    let v1 = [
        &b"MTA-SPOOL 1\n"[..],
        &serde_json::to_vec(&env).unwrap(),
        b"\nbody\r\n",
    ]
    .concat();
    fs::write(&path, &v1).unwrap();
    let (header, content) = crate::file::read_header_only(&path).unwrap();
    assert_eq!((header.envelope, content), (env, 6));
}

/// Whether `id` has an entry in the trees themselves, without writing the
/// waiting entries first (as every reader does).
fn in_trees(spool: &Spool, id: QueueId) -> bool {
    let index = spool.index().unwrap();
    let t = index.slot.trees().unwrap();
    t.messages.contains_key(crate::trees::id_key(id)).unwrap()
}

#[tokio::test]
async fn a_message_removed_before_any_read_never_reaches_the_trees() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 3).await;
    // Stored and counted, but waiting: nothing written to sled yet.
    assert_eq!(spool.len(), 3);
    assert!(ids.iter().all(|&id| !in_trees(&spool, id)));
    spool.remove(ids[1]).unwrap();
    assert_eq!(spool.len(), 2);
    assert!(!in_trees(&spool, ids[1]));
    // A reader sees the others, which it wrote; the removed one is gone.
    assert_eq!(spool.ids().unwrap(), vec![ids[0], ids[2]]);
    assert!(in_trees(&spool, ids[0]) && in_trees(&spool, ids[2]));
    assert!(!in_trees(&spool, ids[1]));
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
}

#[tokio::test]
async fn waiting_entries_are_seen_by_every_reader_and_kept_by_a_clean_close() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 2).await;
    assert!(!in_trees(&spool, ids[0]));
    // One message's entry, and when the next is due, are read where they
    // wait: nothing is written for them.
    let entry = spool.entry(ids[0]).unwrap().unwrap();
    assert_eq!(entry.queue, QueueName::Ram);
    assert_eq!(spool.first_due().unwrap(), entry.scheduled());
    assert!(!in_trees(&spool, ids[0]) && !in_trees(&spool, ids[1]));
    // A walk of the schedule writes them first: the disk runner finds them
    // due.
    let due = spool.due(u64::MAX, 10).unwrap();
    assert_eq!(due.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert!(in_trees(&spool, ids[0]) && in_trees(&spool, ids[1]));
    assert_eq!(spool.first_due().unwrap(), entry.scheduled());
    // Stored after those reads: written by the flush (the flusher's round).
    let later = store_n(&spool, 1).await[0];
    assert!(!in_trees(&spool, later));
    spool.flush().unwrap();
    assert!(in_trees(&spool, later));
    let last = store_n(&spool, 1).await[0];
    spool.close().unwrap();

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert_eq!(report.messages, 4);
    assert_eq!(spool.ids().unwrap(), vec![ids[0], ids[1], later, last]);
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
}

#[tokio::test]
async fn a_waiting_entry_changed_or_held_is_written_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let id = store_n(&spool, 1).await[0];
    let mut entry = spool.entry(id).unwrap().unwrap();
    // Back to waiting: a new store, then an update of the first.
    let other = store_n(&spool, 1).await[0];
    entry.queue = QueueName::Disk;
    entry.next_attempt += 60;
    spool.update(id, &entry).unwrap();
    assert!(in_trees(&spool, other));
    let stats = spool.queue_stats();
    let count = |q| stats.iter().find(|s| s.queue == q).unwrap().messages;
    assert_eq!((count(QueueName::Ram), count(QueueName::Disk)), (1, 1));
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
}

/// Readers racing each other to write the waiting entries: each one that
/// finds its own message's entry written by another must still find it
/// (an entry leaves the waiting set only once it is in the trees).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_read_back_at_once_is_always_found_under_concurrency() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let id = spool.next_id();
                let body = format!("message {worker}.{i}\r\n");
                spool.store(id, &envelope(1), &[body.as_bytes()]).await?;
                let found = tokio::task::spawn_blocking({
                    let spool = spool.clone();
                    move || spool.entry(id)
                })
                .await
                .unwrap()?;
                assert!(found.is_some(), "{id} not found right after its store");
            }
            Ok::<(), SpoolError>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(spool.len(), 640);
    assert_eq!(spool.ids().unwrap().len(), 640);
    spool.index().unwrap().assert_consistent();
    spool.close().unwrap();
}
