//! STARTTLS with a real rustls handshake and an rcgen certificate, and
//! swaks as a real peer.

use std::process::Command;

use crate::util::{message, spool_contents, tls_files, Mtad, Workdir};

#[test]
fn starttls_then_mail_records_tls_in_received() {
    let work = Workdir::new();
    let (tls, cert) = tls_files(work.path());
    work.write_config("", &tls);
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(ehlo.text().contains("STARTTLS"), "{}", ehlo.text());
    let mut c = c.starttls(&cert);
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(!ehlo.text().contains("STARTTLS"), "STARTTLS offered twice");
    c.cmd("STARTTLS", "503 5.5.1");
    let r = c.send_message("a@b.test", &["x@remote.test"], &message("over tls"));
    assert_eq!(r.head(), "250 2.0.0");
    c.cmd("QUIT", "221");
    drop(mtad);
    let stored = spool_contents(&work.queue());
    let (_, env, content) = &stored[0];
    let text = String::from_utf8_lossy(content);
    assert!(text.contains("with ESMTPS id"), "{text}");
    assert!(text.contains("(using TLSv1.3 with cipher TLS13_"), "{text}");
    assert_eq!(env.origin.protocol, "ESMTPS");
}

#[test]
fn starttls_is_not_offered_without_a_certificate() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("STARTTLS", "502 5.5.1");
}

/// swaks, a real SMTP client, with STARTTLS and pipelining. `tests/run`
/// installs it; outside CI a missing swaks skips this test with a note.
#[test]
fn swaks_delivers_over_starttls_with_pipelining() {
    if Command::new("swaks").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "swaks is missing in CI: tests/run installs it"
        );
        eprintln!("skipped: swaks is not installed (tests/run installs it)");
        return;
    }
    let work = Workdir::new();
    let (tls, _cert) = tls_files(work.path());
    work.write_config("", &tls);
    let mtad = Mtad::start(&work);
    let out = Command::new("swaks")
        .args(["--server", &mtad.addr.to_string(), "--tls", "--pipeline"])
        .args([
            "--from",
            "a@b.test",
            "--to",
            "x@remote.test",
            "--helo",
            "swaks.test",
        ])
        .args(["--header", "Subject: from swaks", "--timeout", "20"])
        .output()
        .expect("run swaks");
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "swaks failed:\n{transcript}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(transcript.contains("queued as"), "{transcript}");
    drop(mtad);
    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1);
    assert!(String::from_utf8_lossy(&stored[0].2).contains("Subject: from swaks"));
    assert_eq!(stored[0].1.origin.protocol, "ESMTPS");
}
