//! `mta-seed`: fills a queue directory with deferred messages, straight
//! through mta-spool (no SMTP, no daemon), for the lifecycle benchmark
//! (`benches/lifecycle.sh`) and tests. See `benches/README.md`.
//!
//! Every message goes into the disk queue as if an earlier attempt had
//! deferred it: all but `--due` of them are next due an hour or more from
//! now (spread over a day), the `--due` ones (spread evenly over the ids)
//! are due at once. Many stores run at once, so the spool's group commit
//! shares the directory fsyncs. Then the spool is closed cleanly, or with
//! `--unclean` dropped without a close: the marker of a clean stop is
//! missing, as after a crash, and the next open rescans.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use mta_bench::cli::parse_size;
use mta_bench::message::rfc5322_date;
use mta_bench::options::parse_mailbox;
use mta_envelope::{BodyType, Envelope, Mailbox, Origin, Recipient, ReversePath};
use mta_spool::{QueueName, Spool, SpoolConfig};

/// Stores N deferred messages into a queue directory.
#[derive(Parser, Debug)]
#[command(name = "mta-seed", version)]
struct Cli {
    /// The queue directory (mtad's `queue_dir`); created if missing. mtad
    /// must not be running on it (the spool's lock refuses).
    #[arg(long, value_name = "DIR")]
    queue_dir: PathBuf,
    /// How many messages to store.
    #[arg(long, value_name = "N")]
    messages: u64,
    /// Size of each message in bytes, headers included (4096, 2KiB, ...).
    #[arg(long, value_name = "BYTES", default_value = "2048", value_parser = parse_size)]
    size: usize,
    /// How many of them are due now; the rest are due in 1 to 25 hours.
    #[arg(long, value_name = "N_DUE", default_value_t = 0)]
    due: u64,
    /// The envelope recipient of every message.
    #[arg(long, value_name = "ADDR", default_value = "seed@localhost", value_parser = parse_mailbox)]
    recipient: String,
    /// Drop the spool without closing it (a crash): the next open rescans.
    #[arg(long)]
    unclean: bool,
    /// Stores in flight at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    concurrency: u64,
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Is message `i` (0-based) of `n` one of the `due` ones? Spread evenly.
fn is_due(i: u64, n: u64, due: u64) -> bool {
    // i is due when the count of due messages up to and including i
    // steps up: floor((i+1)*due/n) > floor(i*due/n).
    due > 0 && (i + 1) * due / n > i * due / n
}

/// Message `seq`: a few headers, then lines of text up to `size` bytes.
fn content(seq: u64, rcpt: &str, date: &str, size: usize) -> Vec<u8> {
    let mut out = format!(
        "From: seed@seed.test\r\nTo: {rcpt}\r\nSubject: mta-seed message {seq}\r\n\
         Message-ID: <{seq}.{}@mta-seed.test>\r\nDate: {date}\r\n\r\n",
        std::process::id()
    )
    .into_bytes();
    // Lines of at most 78 characters; never leave a single byte over.
    while size.saturating_sub(out.len()) >= 2 {
        let rest = size - out.len();
        let mut line = rest.min(80);
        if rest - line == 1 {
            line -= 1;
        }
        out.extend(std::iter::repeat_n(b'x', line - 2));
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn seed(cli: &Cli, spool: &Spool) -> Result<(), String> {
    let (local, domain) = cli.recipient.rsplit_once('@').expect("checked by clap");
    let start = now();
    let envelope = Arc::new(Envelope {
        sender: ReversePath::Mailbox(Mailbox {
            local: "seed".into(),
            domain: "seed.test".into(),
        }),
        recipients: vec![Recipient {
            address: Mailbox {
                local: local.into(),
                domain: domain.into(),
            },
            notify: None,
            orcpt: None,
        }],
        body: BodyType::SevenBit,
        smtputf8: false,
        ret: None,
        envid: None,
        origin: Origin {
            client_ip: [127, 0, 0, 1].into(),
            helo: "mta-seed.test".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: None,
        },
        arrival: start,
    });
    let date = Arc::new(rfc5322_date(SystemTime::now()));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cli.concurrency.clamp(1, cli.messages.max(1)) {
        let (spool, envelope, date, next) = (
            spool.clone(),
            Arc::clone(&envelope),
            Arc::clone(&date),
            Arc::clone(&next),
        );
        let (n, due, size, rcpt) = (cli.messages, cli.due, cli.size, cli.recipient.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), String>(());
                }
                let id = spool.next_id();
                let body = Arc::new(content(i + 1, &rcpt, &date, size));
                spool
                    .store_in(QueueName::Disk, id, &envelope, body)
                    .await
                    .map_err(|e| format!("store {id}: {e}"))?;
                let mut entry = spool
                    .entry(id)
                    .map_err(|e| format!("index {id}: {e}"))?
                    .ok_or_else(|| format!("{id} is not in the index after its store"))?;
                entry.next_attempt = if is_due(i, n, due) {
                    start
                } else {
                    // 1 h to 25 h ahead, scattered (7919 is prime).
                    start + 3600 + (i * 7919) % 86_400
                };
                entry.attempts = 1;
                spool
                    .update(id, &entry)
                    .map_err(|e| format!("update {id}: {e}"))?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| format!("worker: {e}"))??;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.due > cli.messages {
        eprintln!(
            "mta-seed: --due {} is more than --messages {}",
            cli.due, cli.messages
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cli.concurrency.clamp(16, 1024) as usize)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mta-seed: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let began = Instant::now();
    let opened = Spool::open(SpoolConfig {
        dir: cli.queue_dir.clone(),
        min_free_space: 0,
        max_batch: 256,
        rescan_rate: 0,
        writers: 8,
        index_cache: 0,
    });
    let (spool, _report) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("mta-seed: cannot open {}: {e}", cli.queue_dir.display());
            return ExitCode::from(1);
        }
    };
    // A directory left unclean by an earlier run: finish its rescan first.
    spool.wait_rescan();
    let before = spool.len() as u64;
    let stored_from = Instant::now();
    let result = runtime.block_on(seed(&cli, &spool));
    let secs = stored_from.elapsed().as_secs_f64();
    let stored = spool.len() as u64 - before;
    let how = if cli.unclean {
        drop(spool);
        "dropped without a close (unclean: the next open rescans)"
    } else {
        match spool.close() {
            Ok(()) => "closed cleanly",
            Err(e) => {
                eprintln!("mta-seed: close: {e}");
                return ExitCode::from(1);
            }
        }
    };
    println!(
        "mta-seed: stored {stored} messages of {} bytes ({} due now) in {:.3} s: {:.0} msg/s; \
         {} in the queue; spool {how}; {:.3} s in all",
        cli.size,
        cli.due.min(stored),
        secs,
        stored as f64 / secs.max(1e-9),
        before + stored,
        began.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mta-seed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_ones_are_exactly_due_and_spread() {
        for (n, due) in [(10, 0), (10, 10), (1000, 100), (100_000, 100), (7, 3)] {
            let picked: Vec<u64> = (0..n).filter(|&i| is_due(i, n, due)).collect();
            assert_eq!(picked.len() as u64, due, "n={n} due={due}");
            if due > 1 {
                let gap = n / due;
                assert!(picked.windows(2).all(|w| w[1] - w[0] >= gap.max(1) - 1));
            }
        }
    }

    #[test]
    fn content_has_the_size_asked_for() {
        for size in [300, 301, 2048, 4096, 10_000] {
            let c = content(42, "a@b.test", "Thu, 1 Jan 1970 00:00:00 +0000", size);
            assert_eq!(c.len(), size, "size {size}");
            assert!(c.ends_with(b"\r\n"));
        }
        // Smaller than the headers: just the headers.
        let c = content(1, "a@b.test", "x", 10);
        assert!(c.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
