//! A walk over the whole index (what `mta-init queue list` and `queue
//! summary` do) must not leave the index resident: sled's page cache has to
//! stay near `index_cache`. Upstream sled 0.34.7 keeps every page a walk
//! reads until 16,384 accesses have piled up in its LRU queues, whatever
//! the capacity; `crates/third-party/sled` is patched for that (see its PATCHES.md), and
//! this test fails without the patch.
//!
//! It is its own test binary, so nothing else runs in the process while it
//! reads the process's resident size.

#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mta_envelope::{Envelope, Mailbox, Origin, Recipient, ReversePath};
use mta_spool::{QueueName, Spool, SpoolConfig};

/// Enough messages that the index is a few hundred pages (upstream sled
/// keeps all of them, several MiB), few enough to store in seconds.
const MESSAGES: u64 = 20_000;
/// The page cache under test: far below the index's size.
const INDEX_CACHE: u64 = 64 * 1024;
/// The most a full walk may add to the process: a few times the cache,
/// plus allocator slack. Upstream sled adds about 5 MiB here.
const MAX_GROWTH: u64 = 2 * 1024 * 1024;

fn config(dir: &std::path::Path, index_cache: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.join("queue"),
        min_free_space: 0,
        max_batch: 256,
        rescan_rate: 0,
        writers: 8,
        index_cache,
    }
}

fn envelope() -> Envelope {
    Envelope {
        sender: ReversePath::Mailbox(Mailbox {
            local: "sender".into(),
            domain: "example.test".into(),
        }),
        recipients: vec![Recipient {
            address: Mailbox {
                local: "rcpt".into(),
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
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "client.example.test".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: None,
        },
        arrival: 1_700_000_000,
    }
}

/// VmRSS of this process, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// Every message, page by page as the daemon lists them.
fn walk(spool: &Spool) -> u64 {
    let mut after = None;
    let mut listed = 0;
    loop {
        let page = spool.list(after, 1000, 4096, |_, _| true).unwrap();
        listed += page.items.len() as u64;
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    listed
}

fn fill(dir: &std::path::Path) {
    let (spool, _) = Spool::open(config(dir, 0)).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let envelope = Arc::new(envelope());
    let next = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..64 {
            let (spool, envelope, next) = (spool.clone(), envelope.clone(), next.clone());
            workers.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < MESSAGES {
                    let id = spool.next_id();
                    let body = Arc::new(b"Subject: memory\r\n\r\nbody\r\n".to_vec());
                    spool
                        .store_in(QueueName::Disk, id, &envelope, body)
                        .await
                        .unwrap();
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done.unwrap();
        }
    });
    assert_eq!(spool.len() as u64, MESSAGES);
    spool.close().unwrap();
}

#[test]
fn a_full_walk_keeps_the_index_near_its_cache_size() {
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path());

    let (spool, report) = Spool::open(config(dir.path(), INDEX_CACHE)).unwrap();
    assert!(report.clean, "the spool was closed cleanly: no rescan");
    // Warm up what any listing allocates once, then measure.
    spool.list(None, 100, 4096, |_, _| true).unwrap();
    let before = resident();
    assert_eq!(walk(&spool), MESSAGES);
    let first = resident();
    assert_eq!(walk(&spool), MESSAGES);
    let second = resident();

    let growth = first.saturating_sub(before);
    eprintln!(
        "index_memory: {MESSAGES} messages, index_cache {INDEX_CACHE}: resident {before} B before, \
         {first} B after a full walk (+{growth}), {second} B after a second"
    );
    assert!(
        growth <= MAX_GROWTH,
        "a full walk grew the process by {growth} bytes (at most {MAX_GROWTH} expected with \
         index_cache = {INDEX_CACHE}): sled keeps the pages it read"
    );
    assert!(
        second.saturating_sub(before) <= MAX_GROWTH,
        "a second walk grew the process to {second} bytes from {before}"
    );
    spool.close().unwrap();
}
