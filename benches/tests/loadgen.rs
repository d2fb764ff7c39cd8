//! Runs the load generator against a tiny SMTP sink on 127.0.0.1:0.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mta_bench::{run, Login, Options, Report};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How the sink behaves.
#[derive(Clone, Default)]
struct SinkConfig {
    /// Hold the MAIL and RCPT replies until DATA/BDAT arrives (RFC 2920
    /// allows it): a client that waits for each reply deadlocks.
    batch_replies: bool,
    /// Refuse RCPT TO for this local part with 550.
    reject_rcpt: Option<&'static str>,
    /// Accept connections and never say anything.
    silent: bool,
    /// Advertise neither PIPELINING nor CHUNKING.
    no_extensions: bool,
    /// After this many messages on a connection, answer the next MAIL
    /// with 421 and close.
    close_after: Option<usize>,
    /// Advertise `AUTH PLAIN LOGIN` and take this user and password
    /// (235; anything else 535), and refuse MAIL before AUTH (530).
    auth: Option<(&'static str, &'static str)>,
    /// Wait this long before the greeting.
    greeting_delay: Option<Duration>,
}

/// What the sink saw.
#[derive(Default, Debug)]
struct SinkStats {
    connections: usize,
    quits: usize,
    rsets: usize,
    data_messages: usize,
    bdat_messages: usize,
    /// Accepted recipients of the messages taken.
    delivered_rcpts: usize,
    /// The messages taken (dot-stuffing undone).
    messages: Vec<Vec<u8>>,
    /// MAIL/RCPT commands read while more input was already buffered, i.e.
    /// sent without waiting for the reply.
    pipelined: usize,
    /// AUTH commands, and those with the right user and password.
    auths: usize,
    auths_ok: usize,
    /// The client address of each connection.
    peers: Vec<IpAddr>,
}

struct Sink {
    addr: SocketAddr,
    stats: Arc<Mutex<SinkStats>>,
}

impl Sink {
    async fn start(cfg: SinkConfig) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Mutex::new(SinkStats::default()));
        let st = stats.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                {
                    let mut s = st.lock().unwrap();
                    s.connections += 1;
                    s.peers.push(peer.ip());
                }
                let (cfg, st) = (cfg.clone(), st.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, cfg, st).await;
                });
            }
        });
        Sink { addr, stats }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, SinkStats> {
        self.stats.lock().unwrap()
    }
}

async fn serve(
    stream: TcpStream,
    cfg: SinkConfig,
    st: Arc<Mutex<SinkStats>>,
) -> std::io::Result<()> {
    if cfg.silent {
        let mut stream = stream;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await? > 0 {}
        return Ok(());
    }
    stream.set_nodelay(true)?;
    if let Some(delay) = cfg.greeting_delay {
        tokio::time::sleep(delay).await;
    }
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP\r\n").await?;
    let mut pending = String::new();
    let (mut mail, mut rcpts, mut taken) = (false, 0usize, 0usize);
    let mut authenticated = false;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let more_buffered = !r.buffer().is_empty();
        let upper = line.trim_end().to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("").to_string();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                if cfg.no_extensions {
                    "250-sink.test\r\n250 SIZE 100000000\r\n".into()
                } else if cfg.auth.is_some() {
                    "250-sink.test\r\n250-PIPELINING\r\n250-AUTH LOGIN PLAIN\r\n250 CHUNKING\r\n"
                        .into()
                } else {
                    "250-sink.test\r\n250-PIPELINING\r\n250-SIZE 100000000\r\n250 CHUNKING\r\n"
                        .into()
                }
            }
            "AUTH" => {
                // AUTH PLAIN <base64 of "\0user\0password"> (RFC 4616).
                let given = line.trim_end().split(' ').nth(2).unwrap_or("");
                let right = cfg.auth.map(|(user, password)| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("\0{user}\0{password}"))
                });
                let mut s = st.lock().unwrap();
                s.auths += 1;
                if upper.starts_with("AUTH PLAIN ") && right.as_deref() == Some(given) {
                    s.auths_ok += 1;
                    authenticated = true;
                    "235 2.7.0 ok\r\n".into()
                } else {
                    "535 5.7.8 no\r\n".into()
                }
            }
            "MAIL" | "RCPT" => {
                if more_buffered {
                    st.lock().unwrap().pipelined += 1;
                }
                let reply = if verb == "MAIL" && cfg.auth.is_some() && !authenticated {
                    "530 5.7.0 authentication required\r\n"
                } else if verb == "MAIL" {
                    if cfg.close_after == Some(taken) {
                        pending.push_str("421 4.3.2 closing\r\n");
                        w.write_all(pending.as_bytes()).await?;
                        return Ok(());
                    }
                    mail = true;
                    rcpts = 0;
                    "250 2.1.0 ok\r\n"
                } else if !mail {
                    "503 5.5.1 MAIL first\r\n"
                } else if cfg
                    .reject_rcpt
                    .is_some_and(|l| upper.contains(&format!("<{}@", l.to_ascii_uppercase())))
                {
                    "550 5.1.1 no such user\r\n"
                } else {
                    rcpts += 1;
                    "250 2.1.5 ok\r\n"
                };
                if cfg.batch_replies {
                    pending.push_str(reply);
                    continue;
                }
                reply.into()
            }
            "DATA" => {
                if !mail || rcpts == 0 {
                    "554 5.5.1 no valid recipients\r\n".into()
                } else {
                    pending.push_str("354 go ahead\r\n");
                    w.write_all(pending.as_bytes()).await?;
                    pending.clear();
                    let mut msg = Vec::new();
                    loop {
                        let mut l = Vec::new();
                        if r.read_until(b'\n', &mut l).await? == 0 {
                            return Ok(());
                        }
                        if l == b".\r\n" {
                            break;
                        }
                        let start = usize::from(l.first() == Some(&b'.'));
                        msg.extend_from_slice(&l[start..]);
                    }
                    let mut s = st.lock().unwrap();
                    s.data_messages += 1;
                    s.delivered_rcpts += rcpts;
                    s.messages.push(msg);
                    taken += 1;
                    mail = false;
                    "250 2.0.0 queued\r\n".into()
                }
            }
            "BDAT" => {
                let mut words = upper.split_ascii_whitespace().skip(1);
                let n: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                assert_eq!(
                    words.next(),
                    Some("LAST"),
                    "the generator sends one LAST chunk"
                );
                let mut chunk = vec![0u8; n];
                r.read_exact(&mut chunk).await?;
                if !mail || rcpts == 0 {
                    "554 5.5.1 no valid recipients\r\n".into()
                } else {
                    let mut s = st.lock().unwrap();
                    s.bdat_messages += 1;
                    s.delivered_rcpts += rcpts;
                    s.messages.push(chunk);
                    taken += 1;
                    mail = false;
                    "250 2.0.0 queued\r\n".into()
                }
            }
            "RSET" => {
                st.lock().unwrap().rsets += 1;
                mail = false;
                "250 2.0.0 ok\r\n".into()
            }
            "QUIT" => {
                st.lock().unwrap().quits += 1;
                pending.push_str("221 2.0.0 bye\r\n");
                w.write_all(pending.as_bytes()).await?;
                return Ok(());
            }
            "NOOP" => "250 2.0.0 ok\r\n".into(),
            _ => "500 5.5.2 what?\r\n".into(),
        };
        pending.push_str(&reply);
        w.write_all(pending.as_bytes()).await?;
        pending.clear();
    }
}

fn options(sink: &Sink) -> Options {
    Options {
        server: sink.addr,
        sessions: 4,
        messages: 40,
        size: 4096,
        rcpts: 1,
        timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

/// Every message has the requested size, its lines are short and none
/// starts with '.', and the sequence numbers are 1..=messages.
fn check_messages(messages: &[Vec<u8>], o: &Options) {
    assert_eq!(messages.len() as u64, o.messages);
    let mut seqs = BTreeSet::new();
    for m in messages {
        assert_eq!(m.len(), o.size);
        assert!(m.ends_with(b"\r\n"));
        let text = std::str::from_utf8(m).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("From: {}\r\nTo: rcpt1@{}", o.from, o.to_domain)));
        assert!(head.contains("\r\nMessage-ID: <") && head.contains("\r\nDate: "));
        for l in body.split_terminator("\r\n") {
            assert!(l.len() <= 78 && !l.starts_with('.'));
        }
        let subject = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Subject: mta-loadgen message "))
            .unwrap();
        assert!(seqs.insert(subject.trim_start_matches('#').parse::<u64>().unwrap()));
    }
    assert_eq!(seqs, (1..=o.messages).collect());
}

fn assert_clean(r: &Report, o: &Options) {
    assert_eq!(r.accepted, o.messages, "{}", r.text());
    assert_eq!((r.failed, r.unsent), (0, 0), "{}", r.text());
    assert_eq!(r.failures.events(), 0, "{}", r.text());
    assert!(!r.timed_out);
    assert_eq!(r.latencies.len() as u64, o.messages);
    assert!(r.wall > Duration::ZERO && r.rate() > 0.0);
    assert_eq!(r.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_one_command_at_a_time() {
    let sink = Sink::start(SinkConfig::default()).await;
    let o = Options {
        rcpts: 3,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    let s = sink.stats();
    assert_eq!(s.data_messages, 40);
    assert_eq!(s.delivered_rcpts, 120);
    assert_eq!((s.connections, s.quits), (4, 4));
    assert_eq!(r.connections, 4);
    assert_eq!(s.pipelined, 0, "lockstep mode must wait for every reply");
    check_messages(&s.messages, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_pipelined() {
    // The sink holds MAIL/RCPT replies until DATA: only a pipelining client
    // gets through (a lockstep one would hang until the timeout).
    let sink = Sink::start(SinkConfig {
        batch_replies: true,
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        pipelining: true,
        rcpts: 2,
        size: 10 * 1024,
        sessions: 3,
        timeout: Duration::from_secs(20),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    let s = sink.stats();
    assert_eq!(s.data_messages, 40);
    assert_eq!(s.delivered_rcpts, 80);
    assert_eq!((s.connections, s.quits), (3, 3));
    check_messages(&s.messages, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lockstep_client_does_not_pipeline() {
    // Against the batching sink a lockstep client deadlocks and the overall
    // timeout stops it: proof that it never sends ahead of a reply.
    let sink = Sink::start(SinkConfig {
        batch_replies: true,
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 1,
        messages: 3,
        timeout: Duration::from_millis(500),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert!(r.timed_out);
    assert_eq!((r.accepted, r.failed, r.unsent), (0, 0, 3));
    assert_eq!(sink.stats().pipelined, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bdat_one_command_at_a_time() {
    let sink = Sink::start(SinkConfig::default()).await;
    let o = Options {
        bdat: true,
        size: 100 * 1024,
        rcpts: 2,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    let s = sink.stats();
    assert_eq!((s.bdat_messages, s.data_messages), (40, 0));
    assert_eq!(s.delivered_rcpts, 80);
    assert_eq!(s.pipelined, 0);
    check_messages(&s.messages, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bdat_pipelined() {
    let sink = Sink::start(SinkConfig {
        batch_replies: true,
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        bdat: true,
        pipelining: true,
        size: 1000,
        messages: 33,
        sessions: 5,
        timeout: Duration::from_secs(20),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    let s = sink.stats();
    assert_eq!((s.bdat_messages, s.data_messages), (33, 0));
    assert_eq!(s.delivered_rcpts, 33);
    assert_eq!((s.connections, s.quits), (5, 5));
    check_messages(&s.messages, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_connection_reconnects() {
    let sink = Sink::start(SinkConfig::default()).await;
    // 2 sessions x 10 messages, 3 per connection: 4 connections each.
    let o = Options {
        sessions: 2,
        messages: 20,
        per_connection: 3,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    assert_eq!(r.connections, 8);
    {
        let s = sink.stats();
        assert_eq!((s.connections, s.quits, s.data_messages), (8, 8, 20));
        check_messages(&s.messages, &o);
    }

    // Same with pipelining and BDAT, and more sessions than messages.
    let sink = Sink::start(SinkConfig::default()).await;
    let o = Options {
        sessions: 8,
        messages: 5,
        per_connection: 1,
        pipelining: true,
        bdat: true,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    assert_eq!(r.connections, 5);
    let s = sink.stats();
    assert_eq!((s.connections, s.quits, s.bdat_messages), (5, 5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_recipient_counts_as_failure() {
    let sink = Sink::start(SinkConfig {
        reject_rcpt: Some("rcpt2"),
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 2,
        messages: 6,
        rcpts: 2,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_eq!((r.accepted, r.failed, r.unsent), (0, 6, 0));
    assert_eq!(r.exit_code(), 1);
    assert_eq!(
        r.failures.distinct(),
        &[("RCPT: 550 5.1.1 no such user".to_string(), 6)]
    );
    assert!(r.text().contains("6x RCPT: 550 5.1.1 no such user"));
    {
        let s = sink.stats();
        // Lockstep: no DATA after a refused RCPT, RSET instead; the
        // connection stays in use.
        assert_eq!((s.data_messages, s.rsets, s.connections), (0, 6, 2));
    }

    // Pipelined: the DATA went out with the RCPTs, so the message is sent
    // to rcpt1 but still counts as failed.
    let sink = Sink::start(SinkConfig {
        reject_rcpt: Some("rcpt2"),
        batch_replies: true,
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        server: sink.addr,
        pipelining: true,
        ..o
    };
    let r = run(&o).await.unwrap();
    assert_eq!((r.accepted, r.failed), (0, 6));
    assert_eq!(r.latencies.len(), 6);
    let s = sink.stats();
    assert_eq!(
        (s.data_messages, s.delivered_rcpts, s.connections),
        (6, 6, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_connection_fails_the_message_and_reconnects() {
    let sink = Sink::start(SinkConfig {
        close_after: Some(4),
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 1,
        messages: 10,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    // Messages 1-4 accepted, 5 gets 421, reconnect, 6-9 accepted, 10 gets 421.
    assert_eq!((r.accepted, r.failed, r.unsent), (8, 2, 0));
    assert_eq!(r.connections, 2);
    assert_eq!(
        r.failures.distinct(),
        &[("MAIL: 421 4.3.2 closing".to_string(), 2)]
    );
    assert_eq!(r.exit_code(), 1);
    assert_eq!(sink.stats().connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_connections_are_bounded() {
    // Nothing listens on this port of 127.0.0.2 (also loopback).
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let o = Options {
        server: SocketAddr::from(([127, 0, 0, 2], port)),
        sessions: 2,
        messages: 100,
        timeout: Duration::from_secs(30),
        ..Options::default()
    };
    let t = Instant::now();
    let r = run(&o).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!((r.accepted, r.failed, r.unsent), (0, 100, 0));
    assert_eq!(r.connections, 0);
    // Each session tries 5 times in a row, then gives up.
    assert_eq!(r.connect_failures, 10);
    assert_eq!(r.failures.events(), 12);
    assert!(r.failures.distinct()[0].0.starts_with("connect: "));
    assert!(r.text().contains("gave up"));
    assert_eq!(r.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_extension_gives_up() {
    let sink = Sink::start(SinkConfig {
        no_extensions: true,
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 2,
        messages: 10,
        pipelining: true,
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_eq!((r.accepted, r.failed), (0, 10));
    assert_eq!(r.failures.events(), 2);
    assert!(r.failures.distinct()[0].0.contains("PIPELINING"));
    assert_eq!(sink.stats().connections, 2);

    let o = Options {
        pipelining: false,
        bdat: true,
        ..o
    };
    let r = run(&o).await.unwrap();
    assert_eq!((r.accepted, r.failed), (0, 10));
    assert!(r.failures.distinct()[0].0.contains("CHUNKING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_stops_and_reports() {
    let sink = Sink::start(SinkConfig {
        silent: true,
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 3,
        messages: 30,
        timeout: Duration::from_secs(1),
        ..options(&sink)
    };
    let t = Instant::now();
    let r = run(&o).await.unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10));
    assert!(r.timed_out);
    assert_eq!((r.accepted, r.failed, r.unsent), (0, 0, 30));
    assert_eq!(r.connections, 3);
    assert_eq!(r.exit_code(), 1);
    assert!(r.text().contains("30 messages unsent"));
}

#[tokio::test]
async fn run_refuses_non_loopback() {
    for server in ["192.0.2.1:25", "[2001:db8::1]:25", "0.0.0.0:2525"] {
        let o = Options {
            server: server.parse().unwrap(),
            ..Options::default()
        };
        let err = run(&o).await.unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_mta-loadgen");

#[tokio::test]
async fn binary_refuses_non_loopback_with_status_2() {
    for server in ["192.0.2.1:25", "[2001:db8::1]:25", "example.com:25"] {
        let out = tokio::process::Command::new(BIN)
            .args(["--server", server, "--messages", "1", "--timeout", "2"])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{server}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--server"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = tokio::process::Command::new(BIN)
        .args(["--server", "192.0.2.1:25"])
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[tokio::test]
async fn binary_bad_usage_is_status_2() {
    for args in [
        &["--size", "4XB"][..],
        &["--sessions", "0"],
        &["--rcpts", "0"],
        &["--timeout", "0"],
        &["--from", "bad address"],
        &["--no-such-option"],
    ] {
        let out = tokio::process::Command::new(BIN)
            .args(args)
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_text_and_json_output() {
    let sink = Sink::start(SinkConfig::default()).await;
    let server = sink.addr.to_string();
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &server, "--sessions", "2", "--messages", "20"])
        .args([
            "--size",
            "2KiB",
            "--rcpts",
            "2",
            "--pipelining",
            "--timeout",
            "30",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "mta-loadgen: 20 messages of 2048 bytes, 2 rcpts, 2 sessions, pipelining on -> {server}"
        )
    );
    assert!(
        lines[1].starts_with("accepted 20  failed 0  wall "),
        "{stdout}"
    );
    assert!(lines[1].ends_with(" msg/s"));
    assert!(lines[2].starts_with("end-of-data reply latency: p50 "));
    assert!(lines[2].contains(" ms  p99 ") && lines[2].contains(" ms  max "));
    assert_eq!(sink.stats().data_messages, 20);

    let out = tokio::process::Command::new(BIN)
        .args(["--server", &server, "--sessions", "3", "--messages", "9"])
        .args(["--bdat", "--json", "--per-connection", "2"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["accepted"], 9);
    assert_eq!(j["failed"], 0);
    assert_eq!(j["connections"], 6);
    assert_eq!(j["latency_ms"]["samples"], 9);
    assert!(j["rate_msg_s"].as_f64().unwrap() > 0.0);
    assert!(j["latency_ms"]["p99"].as_f64().is_some());
    assert_eq!(j["bdat"], true);
    assert_eq!(sink.stats().bdat_messages, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_exit_1_on_failures() {
    let sink = Sink::start(SinkConfig {
        reject_rcpt: Some("rcpt1"),
        ..SinkConfig::default()
    })
    .await;
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &sink.addr.to_string(), "--messages", "4"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("accepted 0  failed 4"), "{stdout}");
    assert!(
        stdout.contains("4x RCPT: 550 5.1.1 no such user"),
        "{stdout}"
    );
}

fn login(user: &str, password: &str) -> Option<Login> {
    Some(Login {
        user: user.into(),
        password: password.into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_plain_before_the_first_mail() {
    let sink = Sink::start(SinkConfig {
        auth: Some(("bench@example.test", "right-pw-1")),
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        per_connection: 5,
        auth: login("bench@example.test", "right-pw-1"),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    // 40 messages, 5 per connection: 8 connections, one AUTH each.
    assert_eq!(r.connections, 8);
    assert_eq!(r.auth_replies.get(&235), Some(&8), "{}", r.text());
    assert_eq!(r.auth_replies.len(), 1);
    assert_eq!(r.auth_latencies.len(), 8);
    assert_eq!(r.setup_latencies.len(), 8);
    assert!(r.setup_latencies[0] >= r.auth_latencies[0]);
    let st = sink.stats();
    assert_eq!((st.auths, st.auths_ok), (8, 8));
    check_messages(&st.messages, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_auth_fails_the_message_and_the_next_one_reconnects() {
    let sink = Sink::start(SinkConfig {
        auth: Some(("bench@example.test", "right-pw-1")),
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 2,
        messages: 10,
        auth: login("bench@example.test", "wrong-pw-1"),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    // Each message's connection is refused at AUTH: an answer, not a
    // broken connection, so no back-off and no giving up.
    assert_eq!((r.accepted, r.failed, r.unsent), (0, 10, 0), "{}", r.text());
    assert_eq!((r.connections, r.connect_failures), (10, 0));
    assert_eq!(r.auth_replies.get(&535), Some(&10));
    assert!(r.setup_latencies.is_empty() && r.latencies.is_empty());
    assert_eq!(
        r.failures.distinct(),
        [("AUTH: 535 5.7.8 no".to_string(), 10)]
    );
    assert_eq!(r.exit_code(), 1);
    let st = sink.stats();
    assert_eq!((st.auths, st.auths_ok, st.quits), (10, 0, 10));
    assert!(st.messages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_needs_the_server_to_offer_it() {
    let sink = Sink::start(SinkConfig::default()).await;
    let o = Options {
        auth: login("bench@example.test", "right-pw-1"),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_eq!(r.accepted, 0);
    assert_eq!(r.failed, o.messages);
    assert!(
        r.failures.distinct()[0]
            .0
            .contains("does not advertise AUTH PLAIN"),
        "{}",
        r.text()
    );
    assert_eq!(sink.stats().auths, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_loop_starts_keep_to_the_clock() {
    let sink = Sink::start(SinkConfig::default()).await;
    let o = Options {
        sessions: 20,
        messages: 20,
        rate: Some(50.0),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    // One connection per message, the last due 19/50 s after the first.
    assert_eq!(r.connections, 20);
    assert!(r.wall >= Duration::from_millis(380), "{:?}", r.wall);
    assert!(r.wall < Duration::from_secs(20), "{:?}", r.wall);
    assert_eq!(r.late_starts, 0, "{}", r.text());
    let st = sink.stats();
    assert_eq!((st.connections, st.quits), (20, 20));
    check_messages(&st.messages, &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_loop_counts_the_starts_the_cap_held_back() {
    // Each session takes at least 100 ms (the greeting's delay); one may
    // be open at a time; they are due 1 ms apart. So every start after
    // the first waits for the one before to end.
    let sink = Sink::start(SinkConfig {
        greeting_delay: Some(Duration::from_millis(100)),
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        sessions: 1,
        messages: 4,
        rate: Some(1000.0),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    assert_eq!(r.late_starts, 3, "{}", r.text());
    assert!(
        r.max_start_delay >= Duration::from_millis(290),
        "{:?}",
        r.max_start_delay
    );
    assert!(r
        .text()
        .contains("3 starts waited for a free session (at most 1 open)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sources_are_taken_in_turn() {
    let sink = Sink::start(SinkConfig::default()).await;
    let a: IpAddr = "127.0.0.2".parse().unwrap();
    let b: IpAddr = "127.0.0.3".parse().unwrap();
    let o = Options {
        sessions: 2,
        messages: 6,
        per_connection: 1,
        sources: vec![a, b],
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_clean(&r, &o);
    let peers = sink.stats().peers.clone();
    assert_eq!(peers.len(), 6);
    assert_eq!(peers.iter().filter(|p| **p == a).count(), 3, "{peers:?}");
    assert_eq!(peers.iter().filter(|p| **p == b).count(), 3, "{peers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_auth_from_the_environment_and_open_loop_json() {
    let sink = Sink::start(SinkConfig {
        auth: Some(("bench@example.test", "env-pw-123")),
        ..SinkConfig::default()
    })
    .await;
    let server = sink.addr.to_string();
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &server, "--messages", "6", "--rate", "100"])
        .args(["--auth-user", "bench@example.test", "--json"])
        .env("MTA_LOADGEN_AUTH_PASSWORD", "env-pw-123")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let j: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(j["accepted"], 6);
    assert_eq!(j["connections"], 6);
    assert_eq!(j["rate_s"], 100.0);
    assert_eq!(j["auth_user"], "bench@example.test");
    assert_eq!(j["auth"]["replies"]["235"], 6);
    assert_eq!(j["setup_ms"]["samples"], 6);
    assert_eq!(j["tls"], "none");
    assert!(!stdout.contains("env-pw-123"));
    assert_eq!(sink.stats().auths_ok, 6);

    // The text form names the mode on its first line.
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &server, "--messages", "2", "--rate", "40"])
        .args([
            "--auth-user",
            "bench@example.test",
            "--auth-password",
            "bad-pw-123",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with(&format!(
            "mta-loadgen: 2 messages of 4096 bytes, 1 rcpt, 10 sessions, pipelining off, \
             AUTH PLAIN as bench@example.test, open loop at 40 sessions/s -> {server}\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("AUTH replies: 2x 535; latency p50 "),
        "{stdout}"
    );
    assert!(stdout.contains("2x AUTH: 535 5.7.8 no"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_only_sessions_send_no_mail() {
    let sink = Sink::start(SinkConfig {
        auth: Some(("bench@example.test", "right-pw-1")),
        ..SinkConfig::default()
    })
    .await;
    let o = Options {
        messages: 7,
        sessions: 3,
        setup_only: true,
        auth: login("bench@example.test", "right-pw-1"),
        ..options(&sink)
    };
    let r = run(&o).await.unwrap();
    assert_eq!((r.accepted, r.failed, r.unsent), (7, 0, 0), "{}", r.text());
    assert_eq!(r.exit_code(), 0, "{}", r.text());
    assert_eq!(r.connections, 7);
    assert_eq!(r.setup_latencies.len(), 7);
    assert!(r.latencies.is_empty());
    let st = sink.stats();
    assert_eq!((st.auths_ok, st.quits), (7, 7));
    assert!(st.messages.is_empty());
}
