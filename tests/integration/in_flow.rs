//! In-flow control (`smtp.in_flow_delay`): while first delivery attempts
//! wait for a slot of the ram runner, a MAIL that opens a transaction
//! waits for the runner to take the next message from its line, at most
//! `in_flow_delay`.
//!
//! Each test gives the ram runner one slot and a destination that accepts
//! connections and never greets: the first message's attempt holds the
//! slot, the second waits in the line, and the third MAIL meets the line.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::util::*;

/// A destination that takes connections and says nothing.
struct Silent {
    listener: TcpListener,
    held: Vec<TcpStream>,
}

impl Silent {
    fn new() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Silent {
            listener,
            held: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Waits for mtad's next delivery connection and holds it.
    fn hold_next(&mut self) {
        let mut got = None;
        wait_until("a delivery connection", Duration::from_secs(20), || {
            got = self.listener.accept().ok();
            got.is_some()
        });
        self.held.push(got.unwrap().0);
    }

    /// Closes the held connections: their attempts end (deferred).
    fn release(&mut self) {
        self.held.clear();
    }
}

fn start(work: &Workdir, silent: &Silent, delay: &str) -> Mtad {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nin_flow_delay = \"{delay}\"\n\
             [queue]\nretry_base = \"1h\"\nram_concurrency = 1\n\
             [delivery]\nname_servers = [\"127.0.0.1:9\"]\ndns_timeout = \"1s\"\n\
             [delivery.routes]\n\"remote.test\" = \"{}\"\n",
            silent.addr()
        ),
    );
    Mtad::start(work)
}

/// One message in, its attempt holding the ram runner's slot; a second
/// one in, waiting in the line behind it.
fn fill_the_line(mtad: &Mtad, silent: &mut Silent) {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.send_message("a@client.test", &["x@remote.test"], &message("first"));
    silent.hold_next();
    c.send_message("a@client.test", &["y@remote.test"], &message("second"));
    c.cmd("QUIT", "221");
}

/// A session of its own, up to its MAIL command, sent.
fn send_mail(addr: SocketAddr) -> (BufReader<TcpStream>, Instant) {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("220"), "{line}");
    r.get_mut().write_all(b"EHLO client.test\r\n").unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("250 ") {
            break;
        }
        assert!(line.starts_with("250-"), "{line}");
    }
    r.get_mut()
        .write_all(b"MAIL FROM:<c@client.test>\r\n")
        .unwrap();
    (r, Instant::now())
}

fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line)
}

fn metric(mtad: &Mtad, name: &str) -> u64 {
    let (code, body) =
        crate::http::request(mtad.http.expect("http"), "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn a_mail_waits_while_the_line_is_full_and_goes_when_a_message_leaves_it() {
    let work = Workdir::new();
    let mut silent = Silent::new();
    let mtad = start(&work, &silent, "60s");
    fill_the_line(&mtad, &mut silent);
    assert_eq!(metric(&mtad, "mta_in_flow_waits_total"), 0);

    let (mut r, _) = send_mail(mtad.addr);
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let early = read_line(&mut r);
    assert!(
        early.is_err(),
        "MAIL answered while the line was full: {early:?}"
    );

    // The first attempt ends (its destination closes), the runner takes
    // the second message from the line: the MAIL goes on, long before
    // its 60 s.
    let released = Instant::now();
    silent.release();
    r.get_ref().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let reply = read_line(&mut r).unwrap();
    assert!(reply.starts_with("250 2.1.0"), "{reply}");
    assert!(
        released.elapsed() < Duration::from_secs(30),
        "answered only at in_flow_delay: {:?}",
        released.elapsed()
    );
    assert_eq!(metric(&mtad, "mta_in_flow_waits_total"), 1);
    // A MAIL with the line empty again (the second attempt holds the
    // slot) is answered at once, and not counted.
    silent.hold_next();
    let (mut r2, _) = send_mail(mtad.addr);
    let reply = read_line(&mut r2).unwrap();
    assert!(reply.starts_with("250 2.1.0"), "{reply}");
    assert_eq!(metric(&mtad, "mta_in_flow_waits_total"), 1);
}

/// With `in_flow_delay` at `delay`, the line full and its slot held
/// throughout (the line never moves): how long a MAIL took to be
/// answered 250, and the daemon, for its metrics. The workdir and the held connection
/// go with the daemon.
fn mail_with_the_line_held(delay: &str) -> (Duration, Mtad, Workdir, Silent) {
    let work = Workdir::new();
    let mut silent = Silent::new();
    let mtad = start(&work, &silent, delay);
    fill_the_line(&mtad, &mut silent);
    let (mut r, sent) = send_mail(mtad.addr);
    let reply = read_line(&mut r).unwrap();
    assert!(reply.starts_with("250 2.1.0"), "{reply}");
    (sent.elapsed(), mtad, work, silent)
}

#[test]
fn a_mail_waits_no_longer_than_in_flow_delay_and_not_at_all_when_it_is_zero() {
    // Answered when its 2 s are up.
    let (took, mtad, _work, _silent) = mail_with_the_line_held("2s");
    assert!(
        took >= Duration::from_secs(2),
        "answered after {took:?}, before in_flow_delay"
    );
    assert!(metric(&mtad, "mta_in_flow_wait_microseconds_total") >= 2_000_000);
    drop(mtad);
    // Off: answered (within the 20 s read timeout), not counted.
    let (_, mtad, _work, _silent) = mail_with_the_line_held("0s");
    assert_eq!(metric(&mtad, "mta_in_flow_waits_total"), 0);
}
