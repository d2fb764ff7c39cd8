//! Every configured limit and bad input, with its reply.

use crate::util::{message, Mtad, Workdir};

fn start(extra_smtp: &str) -> (Workdir, Mtad) {
    let work = Workdir::new();
    work.write_config(
        "",
        &format!("[smtp]\nlisten = [\"127.0.0.1:0\"]\n{extra_smtp}"),
    );
    let mtad = Mtad::start(&work);
    (work, mtad)
}

#[test]
fn command_line_over_512_octets() {
    let (_w, mtad) = start("");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd(&format!("NOOP {}", "x".repeat(600)), "500 5.5.2");
    // The rest of the long line was not taken as a command.
    c.cmd("NOOP", "250 2.0.0");
}

#[test]
fn text_line_over_1000_octets_keeps_the_session_usable() {
    let (_w, mtad) = start("");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let long = format!("Subject: long\r\n\r\n{}\r\n", "a".repeat(1200));
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &long).head(),
        "500 5.5.2"
    );
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &message("after"))
            .head(),
        "250 2.0.0"
    );
}

#[test]
fn message_over_size() {
    let (_w, mtad) = start("max_message_size = \"10KiB\"\n");
    let mut c = mtad.connect();
    let ehlo = c.cmd("EHLO client.test", "250");
    assert!(ehlo.text().contains("SIZE 10240"), "{}", ehlo.text());
    c.cmd("MAIL FROM:<a@b.test> SIZE=20000", "552 5.3.4");
    let big = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789012345678901234567890123456789\r\n".repeat(400)
    );
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &big).head(),
        "552 5.3.4"
    );
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &message("small"))
            .head(),
        "250 2.0.0"
    );
}

#[test]
fn over_100_recipients() {
    let (_w, mtad) = start("");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    for i in 0..100 {
        c.cmd(&format!("RCPT TO:<r{i}@remote.test>"), "250 2.1.5");
    }
    c.cmd("RCPT TO:<r100@remote.test>", "452 4.5.3");
    c.cmd("DATA", "354");
    c.send(message("hundred").as_bytes());
    c.send(b".\r\n");
    assert_eq!(c.reply().head(), "250 2.0.0");
}

#[test]
fn bad_sequence_unknown_command_bad_syntax_and_bad_bytes() {
    let (_w, mtad) = start("");
    let mut c = mtad.connect();
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1");
    c.cmd("EHLO client.test", "250");
    c.cmd("RCPT TO:<x@remote.test>", "503 5.5.1");
    c.cmd("DATA", "503 5.5.1");
    c.cmd("FROB", "500 5.5.1");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("MAIL FROM:<a@b.test>", "503 5.5.1");
    c.cmd("RCPT TO:<not an address>", "501 5.1.3");
    c.cmd("RCPT TO:<x@bad..domain>", "501 5.1.3");
    c.send(b"RCPT TO:<\xff\xfe@localhost>\r\n");
    assert_eq!(c.reply().head(), "501 5.5.2");
    c.cmd("RSET", "250");
    c.cmd("MAIL FROM:<bad sender>", "501 5.1.7");
}

#[test]
fn idle_timeout_closes_with_421() {
    let (_w, mtad) = start("idle_timeout = \"300ms\"\n");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    // Say nothing: the server must speak first, then close.
    let r = c.reply();
    assert_eq!(r.head(), "421 4.4.2");
    assert!(c.is_closed());
}

#[test]
fn too_many_errors_closes_with_421() {
    let (_w, mtad) = start("max_errors = 3\n");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("FROB", "500");
    c.cmd("FROB", "500");
    c.cmd("FROB", "500");
    let r = c.reply();
    assert_eq!(r.code, 421, "{}", r.text());
    assert!(c.is_closed());
}

#[test]
fn too_many_connections_get_421_at_the_banner() {
    let (_w, mtad) = start("max_connections = 2\n");
    let mut first = mtad.connect();
    let mut second = mtad.connect();
    assert_eq!(first.banner.code, 220);
    assert_eq!(second.banner.code, 220);
    let mut third = mtad.connect();
    assert_eq!(third.banner.head(), "421 4.7.0");
    assert!(third.is_closed());
    // A slot frees up when a session ends.
    first.cmd("QUIT", "221");
    assert!(first.is_closed());
    crate::util::wait_until(
        "a free connection slot",
        std::time::Duration::from_secs(10),
        || mtad.connect().banner.code == 220,
    );
    second.cmd("NOOP", "250");
}

#[test]
fn dsn_parameters_with_crlf_in_xtext_are_refused() {
    let (_w, mtad) = start("");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd(
        "MAIL FROM:<a@b.test> ENVID=x+0D+0AInjected:+20header",
        "501 5.5.4",
    );
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RCPT TO:<x@remote.test> ORCPT=rfc822;x+0Ay", "501 5.5.4");
}
