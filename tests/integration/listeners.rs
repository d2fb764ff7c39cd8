//! The SMTP roles: port 25 (`[smtp]`), submission (`[submission]`, port
//! 587, STARTTLS) and implicit-TLS submission (`[submissions]`, port 465,
//! RFC 8314), each with its own listener that status and /metrics show
//! and that survives `svc down|up`, restart (the sockets handed over) and
//! graceful restart.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use crate::util::{init, status_json, text, tls_files, Client, Mtad, Workdir, IO_TIMEOUT};

fn roles_config(work: &Workdir) -> rustls::pki_types::CertificateDer<'static> {
    let (tls, cert) = tls_files(work.path());
    let users = work.path().join("users");
    std::fs::write(&users, "").unwrap();
    work.write_config(
        "",
        &format!(
            "{tls}\n[submission]\nlisten = [\"127.0.0.1:0\"]\nmax_message_size = \"1MiB\"\n\
             [submissions]\nlisten = [\"127.0.0.1:0\"]\n\
             [auth]\nusers_file = {:?}\n",
            users.display().to_string()
        ),
    );
    cert
}

fn service(work: &Workdir, name: &str) -> (String, String) {
    let (_, v) = status_json(work);
    let rows = v["daemon"]["services"].as_array().unwrap().clone();
    let row = rows
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} row in {rows:?}"));
    (
        row["state"].as_str().unwrap().to_owned(),
        row["detail"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn each_role_listens_on_its_own_addresses_and_shows_in_status_and_metrics() {
    let work = Workdir::new();
    let cert = roles_config(&work);
    let mtad = Mtad::start(&work);
    let submission = mtad.submission.expect("submission announced");
    let submissions = mtad.submissions.expect("submissions announced");
    assert_ne!(submission, mtad.addr);
    assert_ne!(submissions, submission);

    // 587: plain text first, STARTTLS offered.
    let mut c = Client::connect(submission);
    assert_eq!(c.banner.code, 220);
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(ehlo.text().contains("STARTTLS"), "{}", ehlo.text());
    let mut c = c.starttls(&cert);
    c.cmd("EHLO client.test", "250");
    c.cmd("QUIT", "221");

    // 465: TLS from the first byte; the banner comes over it, and
    // STARTTLS is not offered again.
    let mut c = Client::connect_tls(submissions, &cert);
    assert_eq!(c.banner.code, 220, "{}", c.banner.text());
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(!ehlo.text().contains("STARTTLS"), "{}", ehlo.text());
    c.cmd("QUIT", "221");

    // Plain text to 465 is not SMTP: no banner, the handshake fails and
    // the connection is closed.
    let mut plain = TcpStream::connect(submissions).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    plain.write_all(b"EHLO client.test\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("220"),
        "a plain-text banner on the implicit-TLS port: {got:?}"
    );

    // Each role has its own limits: 587 takes 1 MiB, 25 the default.
    let mut c = Client::connect(submission);
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(ehlo.text().contains("SIZE 1048576"), "{}", ehlo.text());
    // Submission wants AUTH before MAIL (RFC 6409 section 4.3).
    c.cmd("MAIL FROM:<a@localhost>", "530 5.7.0");
    let ehlo_25 = mtad.connect().cmd("EHLO client.test", "250");
    assert!(ehlo_25.text().contains("STARTTLS"));
    assert!(
        ehlo_25.text().contains("SIZE 26214400"),
        "{}",
        ehlo_25.text()
    );
    assert!(!ehlo_25.text().contains("AUTH"), "{}", ehlo_25.text());

    // Status: one row per role, with its addresses and its sessions.
    for (name, addr) in [
        ("smtp", mtad.addr),
        ("submission", submission),
        ("submissions", submissions),
    ] {
        let (state, detail) = service(&work, name);
        assert_eq!(state, "up", "{name}: {detail}");
        assert!(detail.contains(&addr.to_string()), "{name}: {detail}");
    }
    let (_, detail) = service(&work, "submission");
    assert!(detail.contains("1 session open"), "{detail}");
    let (_, v) = status_json(&work);
    assert_eq!(
        v["daemon"]["submissions_listen"][0].as_str(),
        Some(submissions.to_string().as_str())
    );
    let table = text(&init(&work, &["status"]));
    assert!(table.contains("submissions"), "{table}");

    // /metrics: sessions and up, by role.
    let (code, metrics) =
        crate::http::request(mtad.http.expect("http"), "GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mta_listener_sessions_open{role=\"submission\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mta_listener_up{role=\"submissions\"} 1"),
        "{metrics}"
    );
    drop(c);
}

#[test]
fn each_role_goes_down_and_up_alone_and_survives_restart_and_graceful() {
    let work = Workdir::new();
    let cert = roles_config(&work);
    let mut mtad = Mtad::start(&work);
    let submission = mtad.submission.expect("submission announced");
    let submissions = mtad.submissions.expect("submissions announced");
    let run = |args: &[&str]| {
        let out = init(&work, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };

    // svc down submission: 587 refuses, 25 and 465 serve on.
    let said = run(&["svc", "down", "submission"]);
    assert!(said.contains("submission down"), "{said}");
    assert_eq!(
        TcpStream::connect(submission)
            .map(drop)
            .map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionRefused)
    );
    assert_eq!(service(&work, "submission").0, "down");
    assert_eq!(service(&work, "smtp").0, "up");
    assert_eq!(mtad.connect().banner.code, 220);
    assert_eq!(Client::connect_tls(submissions, &cert).banner.code, 220);
    run(&["svc", "up", "submission"]);
    assert_eq!(Client::connect(submission).banner.code, 220);

    // A restart hands every role's sockets to the next image: the same
    // addresses. A client in the middle of its TLS handshake on 465 does
    // not hold the restart up (no 421 can be sent before TLS is up): it
    // is closed.
    let mut handshaking = TcpStream::connect(submissions).expect("connect before the restart");
    run(&["restart"]);
    let addr = mtad.await_ready_again();
    assert_eq!(addr, mtad.addr);
    assert_eq!(Client::connect(submission).banner.code, 220);
    assert_eq!(Client::connect_tls(submissions, &cert).banner.code, 220);
    handshaking.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert!(matches!(handshaking.read(&mut [0u8; 1]), Ok(0) | Err(_)));

    // A graceful restart keeps them too.
    run(&["graceful"]);
    assert_eq!(Client::connect(submission).banner.code, 220);
    assert_eq!(Client::connect_tls(submissions, &cert).banner.code, 220);
    assert_eq!(mtad.connect().banner.code, 220);
}

#[test]
fn implicit_tls_without_a_certificate_is_a_configuration_error() {
    let work = Workdir::new();
    work.write_config(
        "",
        "[submissions]\nlisten = [\"127.0.0.1:0\"]\n[auth]\nusers_file = \"/dev/null\"\n",
    );
    let out = init(&work, &["configtest"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("submissions.listen") && said.contains("certificate"),
        "{said}"
    );
}
