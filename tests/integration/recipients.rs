//! Recipients at RCPT: the limit per transaction and what lies beyond it
//! (`max_recipients`, `recipient_overshoot_limit`), local parts that cannot
//! name a Maildir, and the list of local mailboxes (`local_recipients`,
//! `local_recipients_file`). Everything is decided at RCPT, so a refused
//! recipient never becomes a bounce to a sender nobody checked.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::util::{
    list, message, signal, spool_contents, status_json, wait_until, Mtad, Workdir, IO_TIMEOUT,
};

const WAIT: Duration = Duration::from_secs(30);

fn start(smtp: &str) -> (Workdir, Mtad) {
    let work = Workdir::new();
    work.write_config("", &format!("[smtp]\nlisten = [\"127.0.0.1:0\"]\n{smtp}"));
    let mtad = Mtad::start(&work);
    (work, mtad)
}

/// Writes `wire` in one go (from a thread, so that neither side can block
/// the other on full socket buffers) and returns the last line of every
/// reply, the banner first, until the server closes the connection.
fn pipeline(addr: SocketAddr, wire: Vec<u8>) -> Vec<String> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut writer = tcp.try_clone().expect("clone the socket");
    let sender = std::thread::spawn(move || {
        // The server may close before it has read everything: a failed
        // write is expected then.
        let _ = writer.write_all(&wire).and_then(|()| writer.flush());
    });
    let mut replies = Vec::new();
    let mut reader = BufReader::new(tcp);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading replies after {} of them: {e}", replies.len()),
        }
        let line = line.trim_end().to_owned();
        if line.as_bytes().get(3) != Some(&b'-') {
            replies.push(line);
        }
    }
    sender.join().expect("writer thread");
    replies
}

/// EHLO, MAIL, `n` RCPTs to `remote.test`, DATA, a message and QUIT, all
/// in one write.
fn pipelined_transaction(n: usize) -> Vec<u8> {
    let mut wire = String::from("EHLO client.test\r\nMAIL FROM:<a@b.test>\r\n");
    for i in 0..n {
        wire.push_str(&format!("RCPT TO:<r{i}@remote.test>\r\n"));
    }
    wire.push_str("DATA\r\n");
    wire.push_str(&message("many recipients"));
    wire.push_str(".\r\nQUIT\r\n");
    wire.into_bytes()
}

/// Counts replies by their first nine characters (`452 4.5.3`).
fn count(replies: &[String], head: &str) -> usize {
    replies.iter().filter(|r| r.starts_with(head)).count()
}

/// The recipients of the one message in a stopped daemon's spool.
fn spooled_recipients(queue: &Path) -> Vec<String> {
    let messages = spool_contents(queue);
    assert_eq!(messages.len(), 1, "one message expected in the spool");
    messages[0]
        .1
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect()
}

/// RFC 5321 section 4.5.3.1.10: a 452 for too many recipients is the
/// expected answer, and the client sends the rest in another transaction.
/// It used to count as an error, so 20 of them closed the session with
/// `421 too many errors` and lost the first 100 recipients' transaction.
#[test]
fn recipients_over_the_limit_get_452_and_the_transaction_goes_on() {
    let (work, mtad) = start("");
    let replies = pipeline(mtad.addr, pipelined_transaction(150));
    // Banner, EHLO, MAIL, 150 RCPTs, 354, 250, 221.
    assert_eq!(replies.len(), 156, "{replies:?}");
    assert!(replies[3..103].iter().all(|r| r.starts_with("250 2.1.5")));
    assert!(
        replies[103..153].iter().all(|r| r.starts_with("452 4.5.3")),
        "{:?}",
        &replies[103..153]
    );
    assert!(replies[153].starts_with("354"), "{}", replies[153]);
    assert!(replies[154].starts_with("250 2.0.0"), "{}", replies[154]);
    assert!(replies[155].starts_with("221"), "{}", replies[155]);
    assert!(mtad.terminate().success());
    let expected: Vec<String> = (0..100).map(|i| format!("r{i}@remote.test")).collect();
    assert_eq!(spooled_recipients(&work.queue()), expected);
}

/// 10,000 recipients in one write, the case that was reported: the first
/// 1,000 over the limit (`recipient_overshoot_limit`, as Postfix's
/// `smtpd_recipient_overshoot_limit`) get 452, the next one `421 4.7.0 ...
/// too many recipients`, and the session is closed: nothing was stored.
#[test]
fn ten_thousand_pipelined_recipients_close_after_the_overshoot_limit() {
    let (work, mtad) = start("");
    let replies = pipeline(mtad.addr, pipelined_transaction(10_000));
    assert_eq!(count(&replies, "250 2.1.5"), 100, "{:?}", &replies[..5]);
    assert_eq!(count(&replies, "452 4.5.3"), 1000);
    let last = replies.last().expect("replies");
    assert!(
        last.starts_with("421 4.7.0") && last.contains("too many recipients"),
        "{last}"
    );
    assert!(
        !replies.iter().any(|r| r.contains("too many errors")),
        "the 452s were counted as errors"
    );
    // Banner, EHLO, MAIL, 100 + 1000 RCPTs, 421: nothing after it ran.
    assert_eq!(replies.len(), 3 + 100 + 1000 + 1, "{:?}", &replies[1100..]);
    assert!(mtad.terminate().success());
    assert!(spool_contents(&work.queue()).is_empty());
}

/// With room for the whole overshoot, 10,000 pipelined recipients give
/// one message for the first 100.
#[test]
fn ten_thousand_pipelined_recipients_within_a_larger_overshoot_limit() {
    let (work, mtad) = start("recipient_overshoot_limit = 10000\n");
    let replies = pipeline(mtad.addr, pipelined_transaction(10_000));
    assert_eq!(count(&replies, "250 2.1.5"), 100);
    assert_eq!(count(&replies, "452 4.5.3"), 9900);
    let tail: Vec<&str> = replies[replies.len() - 3..]
        .iter()
        .map(|r| &r[..3])
        .collect();
    assert_eq!(tail, ["354", "250", "221"], "{:?}", &replies[10_000..]);
    assert!(mtad.terminate().success());
    assert_eq!(spooled_recipients(&work.queue()).len(), 100);
}

/// Names in `maildir.root` (`<domain>/<user>`), sorted.
fn maildirs(work: &Workdir) -> Vec<String> {
    let root = work.path().join("maildir");
    let mut names = Vec::new();
    for domain in std::fs::read_dir(&root).into_iter().flatten() {
        let domain = domain.unwrap();
        for user in std::fs::read_dir(domain.path()).unwrap() {
            names.push(format!(
                "{}/{}",
                domain.file_name().to_string_lossy(),
                user.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    names.sort();
    names
}

/// Local parts that cannot be a Maildir name used to get 250 and then fail
/// at delivery, with a DSN to a sender nobody verified (backscatter). Now
/// RCPT refuses them with 550 5.1.3: no Maildir, no bounce.
#[test]
fn local_parts_that_cannot_be_a_maildir_are_refused_at_rcpt() {
    let (work, mtad) = start("");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    for bad in [
        "\"../../x\"@localhost",
        "\"..\"@localhost",
        "\"/abs\"@localhost",
        "\".x\"@localhost",
        "\"a..b\"@localhost",
        "\"x.\"@localhost",
        "\"a b\"@localhost",
        "\"a\\\\b\"@localhost",
        "\"\"@localhost",
        "a/b@localhost",
    ] {
        let r = c.cmd(&format!("RCPT TO:<{bad}>"), "550 5.1.3");
        assert!(r.text().contains(bad), "{}", r.text());
    }
    // Not even the syntax of RFC 5321: a syntax error, as before.
    c.cmd("RCPT TO:<.x@localhost>", "501 5.1.3");
    // Needless quotes name the same mailbox (RFC 5322 section 3.2.4).
    c.cmd("RCPT TO:<\"Good\"@localhost>", "250 2.1.5");
    c.cmd("DATA", "354");
    c.send(message("only the good one").as_bytes());
    c.send(b".\r\n");
    assert_eq!(c.reply().head(), "250 2.0.0");
    c.cmd("QUIT", "221");

    let new = work.path().join("maildir/localhost/good/Maildir/new");
    wait_until("the delivery to good@localhost", WAIT, || {
        std::fs::read_dir(&new).is_ok_and(|mut d| d.next().is_some())
    });
    // Delivered and removed, with no DSN left behind in the queue.
    wait_until("an empty queue", WAIT, || list(&work, &[]).is_empty());
    assert_eq!(maildirs(&work), ["localhost/good"]);
    assert!(mtad.terminate().success());
}

/// With `local_recipients`, an unknown user of a local domain is refused at
/// RCPT (550 5.1.1) instead of bounced later; postmaster is always taken
/// (RFC 5321 section 4.5.1).
#[test]
fn a_recipient_list_refuses_unknown_local_users() {
    let (_work, mtad) = start(
        "local_domains = [\"localhost\", \"example.test\"]\n\
         local_recipients = [\"alice\", \"bob@localhost\"]\n",
    );
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    for known in [
        "alice@localhost",
        "ALICE@Example.Test",
        "\"alice\"@localhost",
        "bob@localhost",
        "Bob@LOCALHOST",
        "postmaster@localhost",
        "POSTMASTER@localhost",
        "PostMaster@example.test",
        "postmaster",
        "x@remote.test",
    ] {
        c.cmd(&format!("RCPT TO:<{known}>"), "250 2.1.5");
    }
    for unknown in ["carol@localhost", "bob@example.test", "alice+tag@localhost"] {
        let r = c.cmd(&format!("RCPT TO:<{unknown}>"), "550 5.1.1");
        assert!(r.text().contains(unknown), "{}", r.text());
    }
    c.cmd("DATA", "354");
    c.send(message("to the known").as_bytes());
    c.send(b".\r\n");
    assert_eq!(c.reply().head(), "250 2.0.0");
}

/// `local_recipients_file` is read at start and again by a graceful
/// restart (USR1), like every setting of new sessions.
#[test]
fn the_recipient_file_is_read_again_on_graceful_restart() {
    let work = Workdir::new();
    let file = work.path().join("recipients");
    std::fs::write(&file, "# who gets mail here\nalice\n\n").unwrap();
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_recipients_file = {:?}\n",
            file.display().to_string()
        ),
    );
    let mtad = Mtad::start(&work);
    let mut old = mtad.connect();
    old.cmd("EHLO client.test", "250");
    old.cmd("MAIL FROM:<a@b.test>", "250");
    old.cmd("RCPT TO:<alice@localhost>", "250 2.1.5");
    old.cmd("RCPT TO:<carol@localhost>", "550 5.1.1");

    std::fs::write(&file, "  carol  \n# alice left\n").unwrap();
    signal(mtad.pid(), Signal::SIGUSR1);
    wait_until("the reload", WAIT, || {
        status_json(&work).1["daemon"]["reloads"] == 1
    });

    let mut new = mtad.connect();
    new.cmd("EHLO client.test", "250");
    new.cmd("MAIL FROM:<a@b.test>", "250");
    new.cmd("RCPT TO:<carol@localhost>", "250 2.1.5");
    new.cmd("RCPT TO:<alice@localhost>", "550 5.1.1");
    new.cmd("RCPT TO:<postmaster@localhost>", "250 2.1.5");
    // The session opened before keeps the list it started with.
    old.cmd("RCPT TO:<carol@localhost>", "550 5.1.1");
    old.cmd("RCPT TO:<alice@localhost>", "250 2.1.5");
    assert!(mtad.terminate().success());
}
