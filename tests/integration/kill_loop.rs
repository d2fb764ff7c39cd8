//! The kill loop: mtad is SIGKILLed at random moments under load, again
//! and again, and every message that got 250 is delivered at least once.
//!
//! Why: "250 means on stable storage" is the promise everything else rests
//! on, and a crash can land anywhere: in the middle of a DATA transfer,
//! between the fsync and the reply, during a delivery the sink has already
//! recorded, or during the rescan that the previous crash started. One
//! kill at a chosen moment (`durability.rs`) cannot reach all of those;
//! many kills at random moments do.
//!
//! Shape: mtad relays `one.test` and `two.test` to a real SMTP sink on
//! loopback (`mta_testkit::sink::Sink`). Client threads send messages,
//! each with a unique token in its subject and one or two recipients, and
//! record which got 250 after their data. A killer waits a random time
//! (sometimes first for some messages to be acknowledged), kills mtad with
//! SIGKILL, starts it again on the same queue (it listens on port 0, so
//! the clients learn the new address) and repeats. At the end mtad runs
//! until its queue is empty, and every acknowledged message must have
//! reached the sink for each of its recipients, with its content intact.
//! Duplicates (a delivery the sink recorded just before the kill, made
//! again after it) are allowed and counted; losses are not.
//!
//! `MTA_KILL_LOOP_ROUNDS` sets the number of kills (20 by default;
//! `benches/kill_loop.sh` runs 200) and `MTA_KILL_LOOP_SEED` replays the
//! random choices of a failed run (the seed is printed; thread scheduling
//! still varies, so a replay is close, not exact).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mta_testkit::sink::{Received, Sink, SinkConfig};

use crate::util::{eventually, status_json, Client, Mtad, Workdir};

/// How long the final drain may take, and any wait for load.
const WAIT: Duration = Duration::from_secs(90);

/// Client threads sending at once.
const CLIENTS: u64 = 4;

/// The recipients a message may have; both domains are routed to the sink.
const RECIPIENTS: [&str; 2] = ["u1@one.test", "u2@two.test"];

/// splitmix64: a seeded generator, so that a run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// One message as sent: what must arrive.
#[derive(Clone)]
struct Sent {
    token: String,
    recipients: Vec<&'static str>,
    /// Length and hash of the content as sent (mtad prepends a
    /// `Received:` header, so the delivered text ends with it).
    len: usize,
    hash: u64,
}

fn hash_of(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A message of `size` bytes or so carrying `token` in its subject, in
/// lines of at most 78 characters, none starting with a dot.
fn content(token: &str, recipients: &[&str], size: usize) -> String {
    let mut text = format!(
        "From: a@b.test\r\nTo: {}\r\nSubject: kill-loop {token}\r\n\r\n",
        recipients.join(", ")
    );
    let mut line = 0;
    while text.len() < size {
        text.push_str(&format!("{token} line {line} of a message under fire\r\n"));
        line += 1;
    }
    text
}

/// What the clients share with the killer.
struct Load {
    /// Where mtad listens now; None while it is down.
    addr: Mutex<Option<SocketAddr>>,
    /// The banner that tells our mtad from any other server that might
    /// get the port of a killed one.
    banner: String,
    /// Messages that got 250 after their data.
    acked: Mutex<Vec<Sent>>,
    /// Transactions whose connection died before the final reply: they
    /// may or may not be delivered.
    in_doubt: AtomicU64,
    /// Final replies other than 250 (there should be none).
    refused: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }
}

/// One client: connects to whichever mtad runs now, sends a few messages
/// per session, and again, until told to stop.
fn client(load: &Load, n: u64, mut rng: Rng) {
    let mut seq = 0u64;
    while !load.stop.load(Ordering::Relaxed) {
        let addr = *load.addr.lock().unwrap();
        let Some(addr) = addr else {
            // mtad is being restarted: try again shortly (a retry pace,
            // not a synchronisation).
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Ok(tcp) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let Some(mut c) = Client::from_stream(tcp) else {
            continue;
        };
        if c.banner.code != 220 || !c.banner.text().contains(&load.banner) {
            // Not our mtad (the port was reused after a kill): leave it.
            continue;
        }
        if c.try_cmd("EHLO client.test").is_none_or(|r| r.code != 250) {
            continue;
        }
        for _ in 0..rng.range(1, 8) {
            if load.stop.load(Ordering::Relaxed) {
                break;
            }
            seq += 1;
            let token = format!("{n}-{seq}");
            let recipients: Vec<&'static str> = match rng.range(0, 2) {
                0 => vec![RECIPIENTS[0]],
                1 => vec![RECIPIENTS[1]],
                _ => RECIPIENTS.to_vec(),
            };
            // Mostly small, sometimes tens of KiB: a kill often lands in
            // the middle of the data.
            let size = if rng.range(0, 9) == 0 {
                rng.range(10_000, 60_000)
            } else {
                rng.range(200, 3_000)
            } as usize;
            let text = content(&token, &recipients, size);
            match c.try_send_message("a@b.test", &recipients, &text) {
                Some(r) if r.code == 250 => load.acked.lock().unwrap().push(Sent {
                    token,
                    recipients,
                    len: text.len(),
                    hash: hash_of(text.as_bytes()),
                }),
                Some(r) => {
                    load.refused.lock().unwrap().push(r.text());
                    break;
                }
                None => {
                    load.in_doubt.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        let _ = c.try_cmd("QUIT");
    }
}

/// The token in a delivered message's subject.
fn token_of(m: &Received) -> Option<String> {
    String::from_utf8_lossy(&m.data)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: kill-loop "))
        .map(str::to_owned)
}

/// Deliveries per (token, recipient), and the messages whose text did not
/// end with what was sent.
fn deliveries(
    sink: &Sink,
    sent: &BTreeMap<String, Sent>,
) -> (BTreeMap<(String, String), usize>, Vec<String>) {
    let mut counts = BTreeMap::new();
    let mut damaged = Vec::new();
    for m in sink.messages() {
        let Some(token) = token_of(&m) else {
            damaged.push(format!("no token: {:?}", String::from_utf8_lossy(&m.data)));
            continue;
        };
        if let Some(s) = sent.get(&token) {
            let whole = m.data.len() >= s.len && hash_of(&m.data[m.data.len() - s.len..]) == s.hash;
            if !whole {
                damaged.push(token.clone());
            }
        }
        for rcpt in &m.rcpt_to {
            *counts.entry((token.clone(), rcpt.clone())).or_default() += 1;
        }
    }
    (counts, damaged)
}

/// Every (token, recipient) of an acknowledged message that never arrived.
fn missing(
    acked: &BTreeMap<String, Sent>,
    counts: &BTreeMap<(String, String), usize>,
) -> Vec<(String, String)> {
    acked
        .values()
        .flat_map(|s| {
            s.recipients
                .iter()
                .map(|r| (s.token.clone(), r.to_string()))
        })
        .filter(|key| !counts.contains_key(key))
        .collect()
}

fn config(work: &Workdir, sink: &Sink, hostname: &str) {
    let path = work.write_config(
        "",
        &format!(
            "[shutdown]\ntimeout = \"5s\"\ndrain_timeout = \"5s\"\n\
             [queue]\nretry_base = \"100ms\"\nretry_jitter = 0.0\npoll_interval = \"100ms\"\n\
             [delivery]\nname_servers = [\"127.0.0.1:9\"]\ndns_timeout = \"1s\"\n\
             [delivery.routes]\n\"one.test\" = \"{0}\"\n\"two.test\" = \"{0}\"\n",
            sink.addr
        ),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "hostname = \"mx.test\"",
        &format!("hostname = \"{hostname}\""),
        1,
    );
    std::fs::write(&path, text).unwrap();
}

#[test]
fn kill_loop_loses_no_acknowledged_message() {
    let began = Instant::now();
    let rounds = env_u64("MTA_KILL_LOOP_ROUNDS").unwrap_or(20);
    let seed = env_u64("MTA_KILL_LOOP_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("kill loop: {rounds} rounds, seed {seed} (replay with MTA_KILL_LOOP_SEED={seed})");
    let mut rng = Rng(seed);

    let sink = Sink::start_in_background(SinkConfig::default()).expect("sink");
    let work = Workdir::new();
    let hostname = format!("kill-loop-{}.test", rng.next() % 1_000_000_007);
    config(&work, &sink, &hostname);

    let mut mtad = Mtad::start(&work);
    let load = Arc::new(Load {
        addr: Mutex::new(Some(mtad.addr)),
        banner: hostname.clone(),
        acked: Mutex::new(Vec::new()),
        in_doubt: AtomicU64::new(0),
        refused: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let load = load.clone();
            let rng = Rng(seed ^ (n + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
            std::thread::spawn(move || client(&load, n, rng))
        })
        .collect();

    for round in 1..=rounds {
        // Half the kills wait for fresh acknowledgements first, so that
        // they land under load; the others may land anywhere, the rescan
        // after the previous kill included.
        let at_start = load.acked();
        let want = if rng.range(0, 1) == 0 {
            rng.range(1, 40) as usize
        } else {
            0
        };
        assert!(
            eventually(WAIT, || load.acked() >= at_start + want),
            "round {round}: no message acknowledged in {WAIT:?} (seed {seed})"
        );
        let delay = Duration::from_millis(rng.range(0, 600));
        std::thread::sleep(delay);
        *load.addr.lock().unwrap() = None;
        mtad.kill9();
        eprintln!(
            "round {round}: killed {} ms after {want} new acks; {} acknowledged so far",
            delay.as_millis(),
            load.acked()
        );
        mtad = Mtad::start(&work);
        *load.addr.lock().unwrap() = Some(mtad.addr);
    }
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client thread");
    }

    let acked: BTreeMap<String, Sent> = load
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|s| (s.token.clone(), s.clone()))
        .collect();
    assert_eq!(
        acked.len(),
        load.acked(),
        "tokens are unique, each acknowledged once"
    );
    assert!(
        acked.len() as u64 >= rounds,
        "too little load to mean anything: {} acknowledged in {rounds} rounds",
        acked.len()
    );
    let refused = load.refused.lock().unwrap().clone();
    assert!(
        refused.is_empty(),
        "final replies other than 250: {refused:?}"
    );

    // The last mtad delivers what is left; the queue must empty and every
    // acknowledged message reach each of its recipients. (A message leaves
    // the queue only once the sink has answered its data, so an empty
    // queue means nothing more will arrive.)
    let drained = eventually(WAIT, || {
        let (_, v) = status_json(&work);
        let daemon = &v["daemon"];
        daemon["queued"] == 0 && daemon["spool_open"]["rescan"]["running"] != true
    });
    let (counts, damaged) = deliveries(&sink, &acked);
    let lost = missing(&acked, &counts);
    let status = status_json(&work).1;
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged deliveries lost (seed {seed}): {:?}\nstatus: {status}",
        lost.len(),
        acked.values().map(|s| s.recipients.len()).sum::<usize>(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        damaged.is_empty(),
        "delivered text differs from what was sent (seed {seed}): {damaged:?}"
    );
    assert!(
        drained,
        "the queue did not empty in {WAIT:?} (seed {seed}): {status}"
    );

    let wanted: BTreeSet<(String, String)> = acked
        .values()
        .flat_map(|s| {
            s.recipients
                .iter()
                .map(|r| (s.token.clone(), r.to_string()))
        })
        .collect();
    let delivered_acked: usize = counts
        .iter()
        .filter(|(k, _)| wanted.contains(*k))
        .map(|(_, n)| n)
        .sum();
    let duplicates = delivered_acked - wanted.len();
    let extra = counts.keys().filter(|k| !wanted.contains(*k)).count();
    eprintln!(
        "kill loop: {rounds} kills, seed {seed}: {} messages acknowledged ({} deliveries due), \
         {delivered_acked} delivered, {duplicates} duplicates, 0 lost; \
         {} cut off before their reply ({extra} of their deliveries arrived); {:.1} s",
        acked.len(),
        wanted.len(),
        load.in_doubt.load(Ordering::Relaxed),
        began.elapsed().as_secs_f64()
    );
    assert!(mtad.terminate().success());
}
