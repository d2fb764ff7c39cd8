//! Apache's stop signals: TERM stops now, WINCH stops gracefully. Either
//! way nothing acknowledged is lost. (HUP and USR1: `restart.rs`.)

use nix::sys::signal::Signal;

use crate::util::{message, signal, spool_contents, Mtad, Workdir};

fn open_transaction(mtad: &Mtad) -> crate::util::Client {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RCPT TO:<x@remote.test>", "250");
    c
}

#[test]
fn term_stops_now_open_transactions_hear_421() {
    let work = Workdir::new();
    // A long session deadline: TERM must not wait for it.
    work.write_config(
        "",
        "[shutdown]\ntimeout = \"60s\"\ndrain_timeout = \"60s\"\n",
    );
    let mut mtad = Mtad::start(&work);
    let mut done = mtad.connect();
    done.cmd("EHLO client.test", "250");
    assert_eq!(
        done.send_message("a@b.test", &["x@remote.test"], &message("kept"))
            .head(),
        "250 2.0.0"
    );
    let mut open = open_transaction(&mtad);
    let began = std::time::Instant::now();
    signal(mtad.pid(), Signal::SIGTERM);
    assert_eq!(open.reply().head(), "421 4.3.2");
    assert!(mtad.wait_exit().success());
    assert!(
        began.elapsed() < std::time::Duration::from_secs(20),
        "TERM waited for the session deadline"
    );
    // The message acknowledged before the stop is still there.
    assert_eq!(spool_contents(&work.queue()).len(), 1);
}

#[test]
fn winch_stops_gracefully_open_transactions_finish() {
    let work = Workdir::new();
    work.write_config("", "[shutdown]\ntimeout = \"20s\"\n");
    let mut mtad = Mtad::start(&work);
    let mut open = open_transaction(&mtad);
    signal(mtad.pid(), Signal::SIGWINCH);
    // The stop has begun: a new connection hears 421...
    crate::util::wait_until(
        "the stop to begin",
        std::time::Duration::from_secs(10),
        || mtad.connect().banner.code == 421,
    );
    // ...and the open transaction still completes.
    open.cmd("DATA", "354");
    open.send(message("finished").as_bytes());
    open.send(b".\r\n");
    assert_eq!(open.reply().head(), "250 2.0.0");
    // A graceful stop does not cut a session short between transactions:
    // it may send another message, and it ends when it quits.
    let r = open.send_message("a@b.test", &["x@remote.test"], &message("another"));
    assert_eq!(r.head(), "250 2.0.0");
    open.cmd("QUIT", "221");
    assert!(mtad.wait_exit().success());
    assert_eq!(spool_contents(&work.queue()).len(), 2);
}
