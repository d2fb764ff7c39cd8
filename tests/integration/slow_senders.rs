//! Slow senders and greedy clients cannot take the listener from everyone
//! else (issue 10, point 1), and mtad raises its open-files limit (point
//! 10).
//!
//! The greedy client is 127.0.0.2 and the innocent one 127.0.0.3: the
//! client sockets are bound to those addresses before they connect. The
//! per-client limits exempt the relay networks, which default to
//! 127.0.0.0/8, so the tests that limit 127.0.0.2 narrow them to
//! 127.0.0.1/32.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::util::{bin, message, status_json, text, Client, Mtad, Workdir, IO_TIMEOUT};

const GREEDY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The `[smtp]` table of a daemon that limits 127.0.0.2.
fn smtp_table(extra: &str) -> String {
    format!("[smtp]\nlisten = [\"127.0.0.1:0\"]\nrelay_networks = [\"127.0.0.1/32\"]\n{extra}")
}

/// A blocking connection from `from` (bound before it connects).
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(from.into(), 0))?;
            socket.connect(to).await?.into_std()
        })
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    stream.set_nonblocking(false).expect("blocking");
    stream
}

/// `220` or `421 4.7.0`: the code and, when present, the enhanced code.
fn head_of(line: &str) -> String {
    let mut words = line.trim_end().split(' ');
    let code = words.next().unwrap_or_default().to_owned();
    match words.next() {
        Some(w)
            if w.split('.').count() == 3 && w.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            format!("{code} {w}")
        }
        _ => code,
    }
}

/// Many connections from one address: each reads its banner, and those
/// let in trickle one octet every `every` (in the greeting: no command
/// line ever ends) until dropped.
struct Crowd {
    /// The banner's head per connection, in order.
    heads: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Crowd {
    fn open(to: SocketAddr, from: Ipv4Addr, n: usize, every: Duration) -> Crowd {
        let (heads_tx, heads_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut heads = Vec::with_capacity(n);
                let mut open = Vec::new();
                for _ in 0..n {
                    let (head, stream) = greet(to, from).await;
                    heads.push(head);
                    open.extend(stream);
                }
                let _ = heads_tx.send(heads);
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        // Pacing the trickle, not waiting for anything.
                        () = tokio::time::sleep(every) => {
                            for s in &mut open {
                                let _ = s.write_all(b"x").await;
                            }
                        }
                    }
                }
            });
        });
        let heads = heads_rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the crowd connected and read its banners");
        Crowd {
            heads,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn count(&self, head: &str) -> usize {
        self.heads.iter().filter(|h| *h == head).count()
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from `from`, reads the banner line; keeps the stream when
/// the banner is 220.
async fn greet(to: SocketAddr, from: Ipv4Addr) -> (String, Option<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.into(), 0))
        .expect("bind the client address");
    let stream = tokio::time::timeout(IO_TIMEOUT, socket.connect(to))
        .await
        .expect("connected in time")
        .expect("connect");
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .expect("a banner in time")
        .expect("read the banner");
    let head = head_of(&line);
    let keep = head == "220";
    (head, keep.then(|| reader.into_inner()))
}

/// A whole transaction from 127.0.0.3, answered without waiting for any
/// trickle's deadline.
fn served_at_once(addr: SocketAddr) {
    let began = Instant::now();
    let mut c = Client::from_stream(connect_from(OTHER, addr)).expect("a banner for 127.0.0.3");
    assert_eq!(
        c.banner.head(),
        "220",
        "127.0.0.3 was turned away: {}",
        c.banner.text()
    );
    c.cmd("EHLO other.test", "250");
    let r = c.send_message(
        "a@b.test",
        &["user@localhost"],
        &message("from the other client"),
    );
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "127.0.0.3 waited {:?}",
        began.elapsed()
    );
}

/// The daemon's refusal counters, from `mta-init status --json`.
fn refused(work: &Workdir) -> serde_json::Value {
    let (_, v) = status_json(work);
    v["daemon"]["smtp_refused"].clone()
}

fn metrics(mtad: &Mtad) -> String {
    let (code, body) =
        crate::http::request(mtad.http.expect("http"), "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    body
}

/// Raises this process's soft open-files limit to at least `need` (its
/// children inherit it); false, with a visible note, when the hard limit
/// is too low to run the test.
fn raise_own_open_files(need: u64, test: &str) -> bool {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard < need {
        eprintln!("SKIPPED {test}: the hard open-files limit is {hard}, the test needs {need}");
        return false;
    }
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft open-files limit");
    }
    true
}

#[test]
fn sixty_trickles_from_one_client_do_not_lock_out_another() {
    let work = Workdir::new();
    work.write_config(
        "",
        &smtp_table("max_connections = 50\nmax_connections_per_client = 10\n"),
    );
    let mtad = Mtad::start(&work);
    let crowd = Crowd::open(mtad.addr, GREEDY, 60, Duration::from_secs(1));
    served_at_once(mtad.addr);
    assert_eq!(crowd.count("220"), 10, "{:?}", crowd.heads);
    assert_eq!(crowd.count("421 4.7.0"), 50, "{:?}", crowd.heads);
    let counts = refused(&work);
    assert_eq!(counts["client_connections"], 50, "{counts}");
    assert_eq!(counts["max_connections"], 0, "{counts}");
    let table = text(&crate::util::init(&work, &["status"]));
    assert!(
        table.contains("smtp refused:         client_connections 50"),
        "{table}"
    );
    assert!(
        metrics(&mtad).contains("mta_smtp_refused_total{cause=\"client_connections\"} 50"),
        "{}",
        metrics(&mtad)
    );
    drop(crowd);
}

/// The second case: 1,100 trickling connections from one client
/// with the default limits (max_connections 1000, 50 per client). Only the
/// relay networks are narrowed, or 127.0.0.2 would be exempt.
#[test]
fn with_the_default_limits_1100_trickles_do_not_lock_out_another() {
    if !raise_own_open_files(
        2048,
        "with_the_default_limits_1100_trickles_do_not_lock_out_another",
    ) {
        return;
    }
    let work = Workdir::new();
    work.write_config("", &smtp_table(""));
    let mtad = Mtad::start(&work);
    let crowd = Crowd::open(mtad.addr, GREEDY, 1100, Duration::from_secs(1));
    served_at_once(mtad.addr);
    assert_eq!(crowd.count("220"), 50, "{:?}", &crowd.heads[..60]);
    assert_eq!(crowd.count("421 4.7.0"), 1050);
    assert_eq!(refused(&work)["client_connections"], 1050);
    drop(crowd);
}

#[test]
fn new_connections_per_minute_are_limited_per_client() {
    let work = Workdir::new();
    work.write_config("", &smtp_table("max_connection_rate_per_client = 3\n"));
    let mtad = Mtad::start(&work);
    for _ in 0..3 {
        let mut c = Client::from_stream(connect_from(GREEDY, mtad.addr)).expect("banner");
        assert_eq!(c.banner.head(), "220");
        c.cmd("QUIT", "221");
    }
    let mut fourth = Client::from_stream(connect_from(GREEDY, mtad.addr)).expect("banner");
    assert_eq!(
        fourth.banner.head(),
        "421 4.7.0",
        "{}",
        fourth.banner.text()
    );
    assert!(
        fourth.banner.text().contains("per minute from 127.0.0.2"),
        "{}",
        fourth.banner.text()
    );
    assert!(fourth.is_closed());
    // Another client is served; an exempt one (127.0.0.1, a relay
    // network) is not limited at all.
    served_at_once(mtad.addr);
    for _ in 0..10 {
        let mut c = mtad.connect();
        assert_eq!(c.banner.head(), "220");
        c.cmd("QUIT", "221");
    }
    let counts = refused(&work);
    assert_eq!(counts["client_rate"], 1, "{counts}");
    assert_eq!(counts["client_connections"], 0, "{counts}");
    assert!(metrics(&mtad).contains("mta_smtp_refused_total{cause=\"client_rate\"} 1"));
}

/// Writes `pattern` one octet at a time, every `every`, until the peer
/// closes or the trickle is dropped.
struct Trickle {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Trickle {
    fn start(stream: &TcpStream, pattern: &'static [u8], every: Duration) -> Trickle {
        let mut w = stream.try_clone().expect("clone the stream");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            for &b in pattern.iter().cycle() {
                if flag.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                    return;
                }
                // Pacing the trickle, not waiting for anything.
                thread::sleep(every);
            }
        });
        Trickle {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const DEADLINE: Duration = Duration::from_secs(2);
const TRICKLE_EVERY: Duration = Duration::from_millis(300);

/// Reads what the server says to a trickle: `421 4.4.2`, no sooner than
/// the deadline after `clock_start` (a moment before the server's clock
/// started), within generous bounds after it, then the close.
fn expect_cut_off(c: &mut Client, clock_start: Instant, deadline: Duration, what: &str) {
    let r = c.try_reply().unwrap_or_else(|| {
        panic!("{what}: no 421 within {IO_TIMEOUT:?}, the trickle kept its session")
    });
    let waited = clock_start.elapsed();
    assert_eq!(r.head(), "421 4.4.2", "{what}: {}", r.text());
    assert!(
        waited >= deadline,
        "{what}: cut off after {waited:?}, before the deadline"
    );
    assert!(
        waited < deadline + Duration::from_secs(15),
        "{what}: cut off only after {waited:?}"
    );
    assert!(c.is_closed(), "{what}: still open after the 421");
}

#[test]
fn trickles_are_closed_at_their_deadline_with_421() {
    let work = Workdir::new();
    work.write_config(
        "",
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"2s\"\n",
    );
    let mtad = Mtad::start(&work);
    let addr = mtad.addr;
    let cases: Vec<thread::JoinHandle<()>> = vec![
        // In the greeting: the clock starts with the connection.
        thread::spawn(move || {
            let began = Instant::now();
            let tcp = TcpStream::connect(addr).expect("connect");
            let trickle_on = tcp.try_clone().unwrap();
            let mut c = Client::from_stream(tcp).expect("banner");
            let _t = Trickle::start(&trickle_on, b"EHLO slow.client.test", TRICKLE_EVERY);
            expect_cut_off(&mut c, began, DEADLINE, "greeting");
        }),
        // In a command line: the clock starts at the reply before it.
        thread::spawn(move || {
            let tcp = TcpStream::connect(addr).expect("connect");
            let trickle_on = tcp.try_clone().unwrap();
            let mut c = Client::from_stream(tcp).expect("banner");
            let began = Instant::now();
            c.cmd("EHLO client.test", "250");
            let _t = Trickle::start(&trickle_on, b"MAIL FROM:<slow@client.test>", TRICKLE_EVERY);
            expect_cut_off(&mut c, began, DEADLINE, "command line");
        }),
        // In DATA: the octets earn 2 ms each at 500 octets/s.
        thread::spawn(move || {
            let tcp = TcpStream::connect(addr).expect("connect");
            let trickle_on = tcp.try_clone().unwrap();
            let mut c = Client::from_stream(tcp).expect("banner");
            c.cmd("EHLO client.test", "250");
            c.cmd("MAIL FROM:<a@b.test>", "250");
            c.cmd("RCPT TO:<x@remote.test>", "250");
            let began = Instant::now();
            c.cmd("DATA", "354");
            let _t = Trickle::start(
                &trickle_on,
                b"Subject: slow\r\n\r\nabcdefgh\r\n",
                TRICKLE_EVERY,
            );
            expect_cut_off(&mut c, began, DEADLINE, "DATA");
        }),
        // In a BDAT chunk.
        thread::spawn(move || {
            let tcp = TcpStream::connect(addr).expect("connect");
            let trickle_on = tcp.try_clone().unwrap();
            let mut c = Client::from_stream(tcp).expect("banner");
            c.cmd("EHLO client.test", "250");
            c.cmd("MAIL FROM:<a@b.test>", "250");
            c.cmd("RCPT TO:<x@remote.test>", "250");
            let began = Instant::now();
            c.send(b"BDAT 100000 LAST\r\n");
            let _t = Trickle::start(
                &trickle_on,
                b"Subject: slow\r\n\r\nabcdefgh\r\n",
                TRICKLE_EVERY,
            );
            expect_cut_off(&mut c, began, DEADLINE, "BDAT");
        }),
    ];
    let mut failed = Vec::new();
    for case in cases {
        if let Err(e) = case.join() {
            failed.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{e:?}")),
            );
        }
    }
    assert!(failed.is_empty(), "{failed:#?}");
    let counts = refused(&work);
    assert_eq!(counts["command_deadline"], 2, "{counts}");
    assert_eq!(counts["data_deadline"], 2, "{counts}");
    // The daemon still serves.
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "a@b.test",
        &["x@remote.test"],
        &message("after the trickles"),
    );
    assert_eq!(r.head(), "250 2.0.0");
}

/// The data deadline grows with the octets: a message sent steadily
/// above the minimum rate for longer than idle_timeout gets through.
#[test]
fn a_message_above_the_minimum_rate_outlasts_idle_timeout() {
    let work = Workdir::new();
    work.write_config(
        "",
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"3s\"\nmin_data_rate = 100\n",
    );
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RCPT TO:<x@remote.test>", "250");
    let began = Instant::now();
    c.cmd("DATA", "354");
    c.send(b"Subject: steady\r\n\r\n");
    // 40 octets every 200 ms: 200 octets a second, twice the minimum,
    // for 7 s, more than twice idle_timeout.
    let line = b"0123456789012345678901234567890123456\r\n";
    while began.elapsed() < Duration::from_secs(7) {
        c.send(line);
        thread::sleep(Duration::from_millis(200));
    }
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    assert_eq!(refused(&work)["data_deadline"], 0);
}

/// Commands that each come in time cannot keep a session beyond
/// max_session_time.
#[test]
fn a_session_is_closed_at_max_session_time() {
    let work = Workdir::new();
    work.write_config(
        "",
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nidle_timeout = \"3s\"\nmax_session_time = \"4s\"\n",
    );
    let mtad = Mtad::start(&work);
    let began = Instant::now();
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let cap = Duration::from_secs(4);
    let r = loop {
        let r = c
            .try_cmd("NOOP")
            .expect("a reply, or the 421 before the close");
        if r.code != 250 {
            break r;
        }
        assert!(
            began.elapsed() < cap + Duration::from_secs(15),
            "the session outlived its cap: {:?}",
            began.elapsed()
        );
        // Well within idle_timeout: each command comes in time.
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(r.head(), "421 4.4.2", "{}", r.text());
    assert!(began.elapsed() >= cap, "closed after {:?}", began.elapsed());
    assert!(c.is_closed());
    assert_eq!(refused(&work)["session_cap"], 1);
}

/// The soft limit of `/proc/<pid>/limits`.
fn soft_open_files(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace()
        .nth(3)
        .expect("soft")
        .parse()
        .expect("a number")
}

/// Point 10: started with the usual soft limit of 1024, mtad raises it to
/// the hard limit and serves 1,100 sessions at once.
#[test]
fn mtad_raises_its_open_files_limit_and_serves_1100_sessions() {
    const SESSIONS: usize = 1100;
    if !raise_own_open_files(
        1500,
        "mtad_raises_its_open_files_limit_and_serves_1100_sessions",
    ) {
        return;
    }
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let work = Workdir::new();
    work.write_config(
        "",
        &format!("[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = {SESSIONS}\n"),
    );
    let mtad = Mtad::try_start_with(&work, |command| {
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, 1024, hard).map_err(std::io::Error::from)
            });
        }
    })
    .expect("mtad starts");
    assert_eq!(
        soft_open_files(mtad.pid()),
        hard,
        "the soft limit was not raised"
    );
    // From 127.0.0.1, a relay network: no per-client limit.
    let sessions: Vec<Client> = (0..SESSIONS)
        .map(|i| {
            let c = Client::from_stream(TcpStream::connect(mtad.addr).expect("connect"))
                .unwrap_or_else(|| panic!("session {i}: no banner"));
            assert_eq!(c.banner.head(), "220", "session {i}: {}", c.banner.text());
            c
        })
        .collect();
    assert_eq!(sessions.len(), SESSIONS);
    let (_, v) = status_json(&work);
    assert_eq!(v["daemon"]["sessions_open"], SESSIONS as u64);
    assert_eq!(v["daemon"]["smtp_refused"]["accept_error"], 0);
}

/// configtest warns when max_connections cannot fit in the open-files
/// limit mtad can raise itself to (the hard limit it inherits).
#[test]
fn configtest_warns_when_max_connections_cannot_fit() {
    let work = Workdir::new();
    let config = work.write_config("", "");
    let under = |program: &str, args: &[&str], hard: u64| {
        let mut command = Command::new(bin(program));
        command.arg("--config").arg(&config).args(args);
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)
            });
        }
        command.output().expect("run")
    };
    for (program, args) in [
        ("mta-init", &["configtest"][..]),
        ("mtad", &["--check-config"][..]),
    ] {
        let o = under(program, args, 1024);
        assert!(o.status.success(), "{program}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Syntax OK"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("warning")
                && err.contains("smtp.max_connections = 1000")
                && err.contains("1024"),
            "{program}: {err}"
        );
    }
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if hard >= 4096 {
        let o = under("mta-init", &["configtest"], 4096);
        // Other warnings (running as root without `user`) may remain.
        assert!(
            o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("max_connections"),
            "{}",
            text(&o)
        );
    }
}
