//! Tests against real files in a temporary directory.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mta_envelope::{Envelope, Mailbox, Origin, QueueId, Recipient, ReversePath};

use super::*;
use crate::commit::Tuning;
use crate::index::{IndexEntry, QueueName, RecipientState};

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.join("queue"),
        min_free_space: 0,
        max_batch: 64,
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

fn spool_bytes(envelope: &Envelope, content: &[u8]) -> Vec<u8> {
    let mut bytes = crate::file::encode_header(envelope);
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
    assert!(dir_entries(&queue.join("tmp")).is_empty());

    // The file format: magic line, one line of JSON, then the content.
    let raw = fs::read(queue.join("msg").join(&bucket).join(id.to_string())).unwrap();
    assert!(raw.starts_with(b"MTA-SPOOL 1\n"));
    let rest = &raw[12..];
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_share_commit_batches() {
    let tmp = tempfile::tempdir().unwrap();
    // The pause before draining makes batching certain here; a committer
    // that took one request per batch would still show 200 batches.
    let tuning = Tuning {
        commit_delay: Some(Duration::from_millis(20)),
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
    assert_eq!(report.rescanned, 7);
    assert_eq!(report.messages, 7);
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
    assert_eq!(spool.ids().unwrap(), ids);
    assert_eq!(spool.len(), 3);
    let kept = spool.entry(ids[1]).unwrap().unwrap();
    assert_eq!(
        kept.recipients,
        vec![RecipientState::Delivered, RecipientState::Pending]
    );
    assert_eq!(kept.queue, QueueName::Disk);
    // The schedule tree was rebuilt in step: one key per message.
    let index = spool.index().unwrap();
    assert_eq!(index.schedule_len(), 3);
    drop(index);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 4).await;
    spool.close().unwrap();
    fs::remove_dir_all(tmp.path().join("queue/index")).unwrap();

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert_eq!(report.rescanned, 4);
    assert_eq!(report.messages, 4);
    assert_eq!(spool.ids().unwrap(), ids);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_index_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 4).await;
    spool.close().unwrap();
    let index_dir = tmp.path().join("queue/index");
    for entry in fs::read_dir(&index_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::write(&path, vec![0xa5; 4096]).unwrap();
        }
    }

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert_eq!(report.rescanned, 4);
    assert_eq!(report.messages, 4);
    assert_eq!(spool.ids().unwrap(), ids);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_index_is_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 3).await;
    spool.close().unwrap();
    let queue = tmp.path().join("queue");
    fs::remove_dir_all(queue.join("index")).unwrap();
    fs::write(queue.join("index"), b"not a database").unwrap();

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.index_damaged);
    assert_eq!(report.rescanned, 3);
    assert_eq!(spool.ids().unwrap(), ids);
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
    assert_eq!(report.messages, 1);
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
    assert_eq!(report.corrupt, 2);
    assert_eq!(report.messages, 2);
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
    assert_eq!(report.messages, 1);
    assert_eq!(msg_files(&queue), vec![("3".into(), id.to_string())]);
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
    fs::remove_dir(queue.join("tmp")).unwrap();
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
    assert!(dir_entries(&spool.dir().join("tmp")).is_empty());
    spool.close().unwrap();
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

/// Times a rescan of 100,000 spool files. Run with
/// `cargo test -p mta-spool --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn rescan_of_100k_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let queue = spool.dir().to_owned();
    drop(spool);
    let body = vec![b'x'; 4096];
    let base = crate::ids::unix_micros();
    let layout = crate::layout::Layout::new(&queue);
    for i in 0..100_000u64 {
        let id = QueueId::new(base + i);
        fs::write(layout.msg_path(id), spool_bytes(&envelope(2), &body)).unwrap();
    }
    let started = std::time::Instant::now();
    let (spool, report) = Spool::open(cfg).unwrap();
    eprintln!(
        "rescan of {} files took {:?}",
        report.rescanned,
        started.elapsed()
    );
    assert_eq!(report.messages, 100_000);
    assert_eq!(spool.len(), 100_000);
    spool.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_emptied_while_stopped_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(config(tmp.path())).unwrap();
    let ids = store_n(&spool, 3).await;
    spool.close().unwrap();
    // A valid but empty index where the old one was: sled opens it fine,
    // only the clean marker's count shows it is not the index of this
    // spool.
    let layout = crate::layout::Layout::new(&tmp.path().join("queue"));
    fs::remove_dir_all(&layout.index).unwrap();
    let (index, _) = crate::index::Index::open(&layout).unwrap();
    index.flush().unwrap();
    drop(index);

    let (spool, report) = Spool::open(config(tmp.path())).unwrap();
    assert!(report.clean);
    assert!(!report.index_damaged);
    assert_eq!(report.rescanned, 3);
    assert_eq!(spool.ids().unwrap(), ids);
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
    let after = spool.entry(id).unwrap().unwrap();
    assert_eq!(after.attempts, 3);
    assert_eq!(after.recipients[1], RecipientState::Delivered);
    assert_eq!(after.queue, QueueName::Disk);
}
