//! STARTTLS with a real rustls handshake and an rcgen certificate, and
//! swaks as a real peer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::util::{client_trusting, message, spool_contents, tls_files, Mtad, Workdir};

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

/// What one STARTTLS session negotiated.
struct Negotiated {
    suite: rustls::CipherSuite,
    kind: rustls::HandshakeKind,
}

/// A session with a rustls client that lists its cipher suites in
/// rustls's order (AES-256 first) and keeps the tickets it is given in
/// `config`'s session cache: EHLO, STARTTLS, EHLO over TLS (which reads
/// the ticket sent after the handshake), QUIT.
fn starttls_session(addr: std::net::SocketAddr, config: &Arc<rustls::ClientConfig>) -> Negotiated {
    fn reply(stream: &mut impl Read) -> String {
        // A byte at a time: nothing past the reply is read from the
        // plain connection before the handshake takes it over.
        let mut text = Vec::new();
        let mut byte = [0u8];
        loop {
            stream.read_exact(&mut byte).expect("read reply");
            text.push(byte[0]);
            let line_start = text[..text.len() - 1]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            if byte[0] == b'\n' && text.get(line_start + 3) == Some(&b' ') {
                return String::from_utf8(text).expect("ASCII reply");
            }
        }
    }
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert!(reply(&mut tcp).starts_with("220"));
    tcp.write_all(b"EHLO client.test\r\n").unwrap();
    assert!(reply(&mut tcp).contains("STARTTLS"));
    tcp.write_all(b"STARTTLS\r\n").unwrap();
    assert!(reply(&mut tcp).starts_with("220"));
    let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
        .expect("TLS client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"EHLO client.test\r\n").unwrap();
    assert!(reply(&mut tls).starts_with("250"));
    let negotiated = Negotiated {
        suite: tls.conn.negotiated_cipher_suite().expect("suite").suite(),
        kind: tls.conn.handshake_kind().expect("handshake done"),
    };
    tls.write_all(b"QUIT\r\n").unwrap();
    assert!(reply(&mut tls).starts_with("221"));
    negotiated
}

/// The server's suite order wins (SHA-256 suites first), and a client
/// that comes back with the ticket it was given resumes its session
/// instead of a full handshake.
#[test]
fn starttls_prefers_sha256_suites_and_resumes_with_a_ticket() {
    let work = Workdir::new();
    let (tls, cert) = tls_files(work.path());
    work.write_config("", &tls);
    let mtad = Mtad::start(&work);
    let config = client_trusting(&cert);
    assert_eq!(
        config.crypto_provider().cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
        "the client must prefer another suite for this test to mean anything"
    );
    let config = Arc::new(config);

    let first = starttls_session(mtad.addr, &config);
    assert_eq!(first.suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    assert_eq!(first.kind, rustls::HandshakeKind::Full);
    let second = starttls_session(mtad.addr, &config);
    assert_eq!(second.kind, rustls::HandshakeKind::Resumed);
    assert_eq!(second.suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}
