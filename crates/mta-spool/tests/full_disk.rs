//! The spool on a real full disk: a tmpfs filled to the byte. sled 0.34
//! refuses every read and write of a database once one of its writes
//! failed, so the index must be taken out of service and reopened, with
//! the changes it held in memory, once space is back (`reopen.rs`).
//!
//! Mounting a tmpfs needs root (as CI runs); elsewhere each test says it
//! skipped.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use mta_envelope::{Envelope, Mailbox, Origin, QueueId, Recipient, ReversePath};
use mta_spool::{QueueName, Spool, SpoolConfig, SpoolError};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(dir).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount tmpfs"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
    }
    ok.then(|| Tmpfs(dir.to_owned()))
}

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

fn envelope() -> Envelope {
    Envelope {
        sender: ReversePath::Mailbox(Mailbox {
            local: "alice".into(),
            domain: "example.test".into(),
        }),
        recipients: vec![Recipient {
            address: Mailbox {
                local: "bob".into(),
                domain: "example.org".into(),
            },
            notify: None,
            orcpt: None,
        }],
        body: Default::default(),
        smtputf8: false,
        ret: None,
        envid: None,
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

async fn store_n(spool: &Spool, n: usize) -> Vec<QueueId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = spool.next_id();
        spool
            .store(id, &envelope(), &[&[b'x'; 4000][..]])
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

/// Moves a message to the disk queue, or holds it.
fn set_queue(spool: &Spool, id: QueueId, queue: QueueName) -> Result<(), SpoolError> {
    let mut entry = spool.entry(id)?.unwrap();
    entry.queue = queue;
    entry.next_attempt = 10;
    entry.held_since = (queue == QueueName::Held).then_some(5);
    spool.update(id, &entry)
}

fn queue_of(spool: &Spool, id: QueueId) -> QueueName {
    spool.entry(id).unwrap().expect("indexed").queue
}

/// Writes a file until the file system is full, to the last byte.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let buf = vec![0u8; chunk];
        while f.write(&buf).is_ok_and(|n| n > 0) {}
    }
}

/// One history record of about a KB.
fn record(n: u64) -> mta_spool::HistoryRecord {
    mta_spool::HistoryRecord {
        time: n,
        attempt: 1,
        recipient: 0,
        event: "deferred".into(),
        status: "4.0.0".into(),
        reply: "x".repeat(1000),
        remote: None,
    }
}

/// Rounds of index changes, each flushed, until a flush fails for want
/// of space (the disk is full: the rounds only use up what the last
/// flush left allocated). Each round adds some history to `noise`, then
/// calls `change(round)`, which reports whether it was made.
/// Returns the last round whose change was made: it was in memory only
/// when the index failed.
fn fail_the_index(
    spool: &Spool,
    noise: QueueId,
    mut change: impl FnMut(u64) -> bool,
) -> Option<u64> {
    let mut last_made = None;
    for round in 0..2000 {
        for n in 0..8 {
            if spool
                .append_history(noise, &[record(round * 8 + n)])
                .is_err()
            {
                break;
            }
        }
        // Last in the round: a write cut short by the full disk keeps
        // what came before it in the log.
        if change(round) {
            last_made = Some(round);
        }
        if let Err(e) = spool.flush() {
            assert!(e.is_no_space(), "{e}");
            let health = spool.index_health();
            let failed = health.failed.expect("the index is failed");
            assert!(failed.no_space, "{failed:?}");
            assert_eq!(health.failures, 1);
            return last_made;
        }
    }
    panic!("the index never failed on a full disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_index_is_reopened_with_the_changes_it_had_not_flushed() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_fs) = tmpfs(tmp.path(), "4m") else {
        return;
    };
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let ids = store_n(&spool, 20).await;
    for &id in &ids {
        set_queue(&spool, id, QueueName::Disk).unwrap();
    }
    set_queue(&spool, ids[0], QueueName::Held).unwrap();
    spool.save_state("paused", b"before").unwrap();
    spool.flush().unwrap();

    let filler = tmp.path().join("filler");
    fill(&filler);
    // Rounds that hold or release ids[1] in turn, until one cannot be
    // flushed: that round's change was in memory only.
    let last = fail_the_index(&spool, ids[19], |round| {
        let queue = if round % 2 == 0 {
            QueueName::Held
        } else {
            QueueName::Disk
        };
        set_queue(&spool, ids[1], queue).is_ok()
    })
    .expect("a change was made");
    let expected = if last % 2 == 0 {
        QueueName::Held
    } else {
        QueueName::Disk
    };

    // Failed: fast errors that say "no space", nothing due, nothing
    // written, the count kept.
    let files = |q: &Path| walk(&q.join("msg")).len() + walk(&q.join("tmp")).len();
    let before = files(spool.dir());
    let id = spool.next_id();
    let e = spool.store(id, &envelope(), &[b"more"]).await.unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(matches!(e, SpoolError::IndexFailed { .. }), "{e:?}");
    assert_eq!(files(spool.dir()), before, "nothing left behind");
    assert!(spool.due(u64::MAX, 100).unwrap().is_empty());
    assert_eq!(spool.first_due().unwrap(), None);
    assert_eq!(spool.len(), 20);
    let e = spool.update(ids[3], &spool_entry_guess()).unwrap_err();
    assert!(matches!(e, SpoolError::IndexFailed { .. }), "{e:?}");
    // A state saved now is refused, and must not come back later.
    assert!(spool.save_state("paused", b"refused").is_err());

    // Still full: the reopen fails, and can be tried again.
    assert!(spool.recover_index().is_err());
    assert!(spool.index_health().failed.is_some());

    // Space back: reopened, with every change made before the failure.
    std::fs::remove_file(&filler).unwrap();
    assert!(spool.recover_index().unwrap());
    let health = spool.index_health();
    assert!(health.failed.is_none(), "{health:?}");
    assert_eq!(health.recoveries, 1);
    assert!(!spool.recover_index().unwrap(), "nothing left to do");
    spool.wait_rescan();
    assert_eq!(spool.len(), 20);
    assert_eq!(queue_of(&spool, ids[0]), QueueName::Held);
    assert_eq!(
        queue_of(&spool, ids[1]),
        expected,
        "the change of round {last}"
    );
    assert_eq!(queue_of(&spool, ids[2]), QueueName::Disk);
    let held = if expected == QueueName::Held { 2 } else { 1 };
    assert_eq!(
        spool.queue_stats()[3].messages,
        held,
        "the held ones counted"
    );
    assert_eq!(spool.load_state("paused").unwrap().unwrap(), b"before");
    let due = spool.due(100, 100).unwrap();
    assert_eq!(
        due.len(),
        20 - held as usize,
        "the others are due, the held ones not"
    );
    store_n(&spool, 1).await;

    // And the next open trusts what the close saved.
    spool.close().unwrap();
    let (spool, report) = Spool::open(cfg).unwrap();
    assert!(report.clean && !report.rescan, "{report:?}");
    assert_eq!(queue_of(&spool, ids[1]), QueueName::Held);
    assert_eq!(spool.len(), 21);
    spool.close().unwrap();
}

/// An entry for an update that must be refused before it is looked at.
fn spool_entry_guess() -> mta_spool::IndexEntry {
    mta_spool::IndexEntry::arrived(&envelope(), 1)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_cannot_save_the_index_still_closes_and_the_next_open_rescans() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(_fs) = tmpfs(tmp.path(), "4m") else {
        return;
    };
    let cfg = config(tmp.path());
    let (spool, _) = Spool::open(cfg.clone()).unwrap();
    let ids = store_n(&spool, 10).await;
    set_queue(&spool, ids[0], QueueName::Held).unwrap();
    spool.flush().unwrap();
    let filler = tmp.path().join("filler");
    fill(&filler);
    fail_the_index(&spool, ids[9], |round| {
        set_queue(&spool, ids[1 + round as usize % 9], QueueName::Disk).is_ok()
    });

    // The close says the index was not saved, and lets go of everything.
    let e = spool.close().unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(!spool.dir().join("clean").exists());
    assert!(matches!(spool.flush(), Err(SpoolError::Closed)));

    // Opened on the full disk: the index cannot be opened yet, so the
    // spool opens with it failed, and refuses mail.
    let (spool, report) = Spool::open(cfg.clone()).unwrap();
    assert!(report.index_unavailable, "{report:?}");
    assert!(
        !report.index_damaged,
        "the index is not damaged, only short of space"
    );
    let e = spool
        .store(spool.next_id(), &envelope(), &[b"more"])
        .await
        .unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(spool.index_health().failed.is_some());

    // Space back: opened and rescanned; the hold flushed long before the
    // failure is kept.
    std::fs::remove_file(&filler).unwrap();
    assert!(spool.recover_index().unwrap());
    spool.wait_rescan();
    assert_eq!(spool.len(), 10);
    assert_eq!(queue_of(&spool, ids[0]), QueueName::Held);
    let new = store_n(&spool, 1).await;
    assert!(new[0] > ids[9], "ids stay above the files on disk");
    spool.close().unwrap();
}
