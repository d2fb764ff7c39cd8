//! SMTP smuggling (CVE-2023-51764 class) and STARTTLS injection
//! (CVE-2011-0411 class), over real TCP.

use crate::util::{spool_contents, tls_files, Mtad, Workdir};

/// Every way a lenient parser has been fooled into ending DATA early.
const ENDINGS: [&[u8]; 8] = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
];

#[test]
fn smuggled_transactions_are_never_split_off() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    for ending in ENDINGS {
        let mut c = mtad.connect();
        c.cmd("EHLO client.test", "250");
        c.cmd("MAIL FROM:<a@b.test>", "250");
        c.cmd("RCPT TO:<x@remote.test>", "250");
        c.cmd("DATA", "354");
        let mut wire = b"Subject: outer\r\n\r\nouter body".to_vec();
        wire.extend_from_slice(ending);
        wire.extend_from_slice(
            b"MAIL FROM:<smuggled@b.test>\r\nRCPT TO:<y@remote.test>\r\nDATA\r\nSubject: smuggled\r\n\r\ninner\r\n.\r\n",
        );
        c.send(&wire);
        // Exactly one reply for all of it, and it is a rejection.
        let r = c.reply();
        assert_eq!(r.code / 100, 5, "{ending:?} was accepted: {}", r.text());
        // The session is in a clean state: no smuggled MAIL is open.
        c.cmd("RCPT TO:<x@remote.test>", "503 5.5.1");
        c.cmd("QUIT", "221");
    }
    drop(mtad);
    assert!(
        spool_contents(&work.queue()).is_empty(),
        "a smuggled message was stored"
    );
}

#[test]
fn bare_newlines_in_commands_are_refused_whole() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    // A bare CR cannot end a line: the whole line is refused.
    c.send(b"MAIL FROM:<a@b.test>\rRCPT TO:<x@remote.test>\r\n");
    assert_eq!(c.reply().head(), "500 5.5.2");
    c.cmd("RCPT TO:<x@remote.test>", "503 5.5.1");
    // After a bare LF nothing runs: refused, and the session ends.
    c.send(b"MAIL FROM:<a@b.test>\nRCPT TO:<x@remote.test>\r\n");
    assert_eq!(c.reply().head(), "500 5.5.2");
    assert!(
        c.try_reply().is_none(),
        "a command after the bare LF was answered"
    );
}

#[test]
fn dot_stuffing_is_undone() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "a@b.test",
        &["x@remote.test"],
        "Subject: dots\r\n\r\n..leading dot\r\n...\r\n",
    );
    assert_eq!(r.head(), "250 2.0.0");
    drop(mtad);
    let stored = spool_contents(&work.queue());
    let content = String::from_utf8_lossy(&stored[0].2).into_owned();
    assert!(content.ends_with("\r\n.leading dot\r\n..\r\n"), "{content}");
}

#[test]
fn plaintext_pipelined_after_starttls_is_never_run() {
    let work = Workdir::new();
    let (tls, cert) = tls_files(work.path());
    work.write_config("", &tls);
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    // The injected commands ride in the same packet as STARTTLS.
    c.send(b"STARTTLS\r\nMAIL FROM:<injected@b.test>\r\nRCPT TO:<x@remote.test>\r\n");
    assert_eq!(c.reply().head(), "220 2.0.0");
    let mut c = c.after_starttls_reply(&cert);
    // Had the MAIL run, this RCPT would be taken; the session starts over.
    c.cmd("EHLO client.test", "250");
    c.cmd("RCPT TO:<x@remote.test>", "503 5.5.1");
}
