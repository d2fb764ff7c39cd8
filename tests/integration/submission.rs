//! Authenticated submission (RFC 6409 on 587, RFC 8314 on 465, SMTP AUTH
//! RFC 4954) with real clients: swaks and Python's smtplib, from
//! 127.0.0.2 so that the client is outside `relay_networks`. The users
//! file holds hashes made by `openssl passwd` (an independent
//! implementation), never by our own code.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::util::{have, outside, plain, swaks, Client, Mtad, Submission, OUTSIDE, PASSWORD};

#[test]
fn swaks_submits_with_plain_and_login_on_587_and_465() {
    if !have("swaks", "--version") {
        return;
    }
    let s = Submission::start("");
    let cases: [(SocketAddr, &str, &str, &str); 4] = [
        (s.submission(), "--tls", "PLAIN", "alice@local.test"),
        (s.submission(), "--tls", "LOGIN", "bob@local.test"),
        (s.submissions(), "--tlsc", "PLAIN", "bob@local.test"),
        (s.submissions(), "--tlsc", "LOGIN", "alice@local.test"),
    ];
    for (addr, tls, mechanism, user) in cases {
        let (ok, said) = swaks(
            addr,
            &[
                tls,
                "--auth",
                mechanism,
                "--auth-user",
                user,
                "--auth-password",
                PASSWORD,
                "--from",
                user,
                "--to",
                "someone@remote.test",
                "--header",
                &format!("Subject: {mechanism} on {}", addr.port()),
            ],
        );
        assert!(ok, "{mechanism} {tls}: {said}");
        assert!(said.contains("235 2.7.0"), "{said}");
        // A 535 reply line, not those digits anywhere (a queue id may
        // hold them).
        assert!(!said.contains(" 535 "), "{said}");
    }
    let log = s.log();
    let stored = s.stored();
    assert_eq!(stored.len(), 4, "{log}");
    for (env, content) in &stored {
        let user = env
            .origin
            .auth
            .as_deref()
            .expect("the user in the envelope");
        assert_eq!(env.sender.to_string(), user);
        assert_eq!(env.origin.protocol, "ESMTPSA");
        assert_eq!(env.origin.client_ip.to_string(), OUTSIDE);
        assert!(content.contains("with ESMTPSA id"), "{content}");
        assert!(!content.contains(PASSWORD), "{content}");
    }
    assert!(
        log.contains("authentication succeeded") && log.contains("client=127.0.0.2"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD));
}

/// Python's smtplib: STARTTLS, `login()`, a message without Date: and
/// Message-ID:, which the submission role adds (RFC 6409 section 8).
#[test]
fn smtplib_logs_in_and_the_message_gets_date_and_message_id() {
    let s = Submission::start("");
    let script = format!(
        r#"
import smtplib, ssl
ctx = ssl.create_default_context(cafile={cafile:?})
ctx.check_hostname = False
c = smtplib.SMTP("127.0.0.1", {port}, source_address=("127.0.0.2", 0), timeout=20)
c.ehlo("client.test")
c.starttls(context=ctx)
c.ehlo("client.test")
c.login("alice@local.test", {password:?})
c.sendmail("alice@local.test", ["friend@remote.test"],
           "From: alice@local.test\r\nTo: friend@remote.test\r\nSubject: from smtplib\r\n\r\nhello\r\n")
c.quit()
"#,
        cafile = s.cert_path.display().to_string(),
        port = s.submission().port(),
        password = PASSWORD,
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = s.stored();
    assert_eq!(stored.len(), 1);
    let (env, content) = &stored[0];
    assert_eq!(env.origin.auth.as_deref(), Some("alice@local.test"));
    let header_end = content.find("\r\n\r\n").unwrap();
    let header = &content[..header_end];
    assert!(header.contains("\r\nDate: "), "{header}");
    assert!(header.contains("\r\nMessage-ID: <"), "{header}");
    assert!(header.contains("@mx.test>"), "{header}");
    assert_eq!(header.matches("Date:").count(), 1, "{header}");
}

/// The replies of the issue, over the wire, from a client outside
/// relay_networks.
#[test]
fn refusals_without_auth_and_for_a_sender_the_user_does_not_own() {
    let s = Submission::start("");
    // Port 25: relaying without AUTH is refused at RCPT.
    let mut c = Client::connect_from(s.mtad.addr, outside());
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(
        !ehlo.text().contains("AUTH"),
        "port 25 offers AUTH: {}",
        ehlo.text()
    );
    c.cmd("MAIL FROM:<alice@local.test>", "250");
    c.cmd("RCPT TO:<x@remote.test>", "554 5.7.1");
    // 465: MAIL before AUTH is 530; a 20 KB initial response is 500
    // 5.5.6; a wrong password 535; a sender alice does not own 553.
    let mut c = Client::connect_tls_from(s.submissions(), outside(), &s.cert);
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(ehlo.text().contains("AUTH PLAIN LOGIN"), "{}", ehlo.text());
    c.cmd("MAIL FROM:<alice@local.test>", "530 5.7.0");
    c.cmd(
        &format!("AUTH PLAIN {}", "A".repeat(20 * 1024)),
        "500 5.5.6",
    );
    c.cmd("AUTH CRAM-MD5", "504 5.5.4");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice@local.test", "wrong")),
        "535 5.7.8",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice@local.test", PASSWORD)),
        "235 2.7.0",
    );
    c.cmd("AUTH PLAIN", "503 5.5.1");
    c.cmd("MAIL FROM:<bob@local.test>", "553 5.7.1");
    c.cmd("MAIL FROM:<alice@local.test>", "250");
    c.cmd("RCPT TO:<x@remote.test>", "250");
    c.cmd("QUIT", "221");
    let log = s.log();
    assert!(
        log.contains("authentication failed") && log.contains("user=\"alice@local.test\""),
        "{log}"
    );
    drop(s);
}

/// N wrong passwords from one client: the limit in `[auth]
/// client_failures` locks it out with 421 4.7.0. Its next connections to
/// 465 and 587 hear 421 4.7.0 at once, before any TLS handshake, while
/// port 25 still takes its mail and another client still gets in.
#[test]
fn wrong_passwords_lock_the_client_out() {
    let s = Submission::start("[auth.client_failures]\ndelay = \"0s\"\nlockout_after = 3\n");
    let mut c = Client::connect_tls_from(s.submissions(), outside(), &s.cert);
    c.cmd("EHLO client.test", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("bob@local.test", "no1")),
        "535 5.7.8",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain("bob@local.test", "no2")),
        "535 5.7.8",
    );
    c.cmd(
        &format!("AUTH PLAIN {}", plain("bob@local.test", "no3")),
        "421 4.7.0",
    );
    assert!(c.is_closed());
    // Turned away at connect on both submission ports: the reply comes
    // in the clear, where a TLS handshake would have begun on 465.
    for port in [s.submissions(), s.submission()] {
        let mut c = Client::connect_from(port, outside());
        assert_eq!(c.banner.code, 421, "{port}: {}", c.banner.text());
        assert!(c.banner.text().contains("4.7.0"), "{}", c.banner.text());
        assert!(
            c.banner
                .text()
                .contains("too many failed authentications from 127.0.0.2"),
            "{}",
            c.banner.text()
        );
        assert!(c.is_closed());
    }
    // Port 25 still takes its mail.
    let mut c = Client::connect_from(s.mtad.addr, outside());
    assert_eq!(c.banner.code, 220, "{}", c.banner.text());
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<someone@remote.test>", "250");
    c.cmd("RCPT TO:<alice@local.test>", "250");
    // Another client (127.0.0.3) is not locked out.
    let mut c = Client::connect_tls_from(s.submissions(), "127.0.0.3".parse().unwrap(), &s.cert);
    c.cmd("EHLO client.test", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("bob@local.test", PASSWORD)),
        "235 2.7.0",
    );
    let metrics = metrics(&s.mtad);
    assert!(metrics.contains("mta_auth_lockouts_total 1"), "{metrics}");
    assert!(
        metrics.contains("mta_auth_refused_locked_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mta_auth_checks_total{result=\"rejected\"} 3"),
        "{metrics}"
    );
    let log = s.log();
    assert!(log.contains("authentication locked out"), "{log}");
    fail2ban_matches(&log, 3);
}

fn metrics(mtad: &Mtad) -> String {
    let (code, body) =
        crate::http::request(mtad.http.expect("http"), "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    body
}

/// The fail2ban filter in contrib/ finds the client of every failed
/// AUTH in the log, as fail2ban would (its `<HOST>` becomes a named
/// group), and nothing in the lines of successes.
fn fail2ban_matches(log: &str, failures: usize) {
    let filter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/fail2ban/filter.d/mtad-auth.conf");
    let script = r#"
import configparser, re, sys
c = configparser.ConfigParser(interpolation=None)
c.read(sys.argv[1])
regexes = [r for r in c["Definition"]["failregex"].splitlines() if r.strip()]
host = r"(?P<host>\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]+)"
found = []
for line in open(sys.argv[2], encoding="utf-8", errors="replace"):
    for r in regexes:
        m = re.search(r.replace("<HOST>", host), line)
        if m:
            found.append(m.group("host"))
            break
print(" ".join(found))
"#;
    let log_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(log_file.path(), log).unwrap();
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&filter)
        .arg(log_file.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hosts = String::from_utf8(out.stdout).unwrap();
    let hosts: Vec<&str> = hosts.split_whitespace().collect();
    assert!(hosts.len() >= failures, "{hosts:?} in\n{log}");
    assert!(hosts.iter().all(|h| *h == OUTSIDE), "{hosts:?}");
}
