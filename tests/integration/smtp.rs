//! Happy paths: pipelining, BDAT, the Received header and the spool record.

use crate::util::{message, spool_contents, Mtad, Workdir};

#[test]
fn pipelined_transaction_is_stored_with_received_header() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    assert!(c.banner.head().starts_with("220"), "{:?}", c.banner);
    let ehlo = c.cmd("EHLO client.test", "250");
    for ext in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
    ] {
        assert!(
            ehlo.text().contains(ext),
            "EHLO lacks {ext}: {}",
            ehlo.text()
        );
    }
    assert!(
        !ehlo.text().contains("STARTTLS"),
        "STARTTLS offered without a certificate"
    );
    // Everything in one write, as RFC 2920 allows.
    let mut wire = String::from(
        "MAIL FROM:<sender@b.test> RET=HDRS ENVID=e1\r\nRCPT TO:<x@remote.test> NOTIFY=FAILURE ORCPT=rfc822;x+40remote.test\r\nRCPT TO:<postmaster>\r\nDATA\r\n",
    );
    wire.push_str(&message("pipelined"));
    wire.push_str(".\r\nQUIT\r\n");
    c.send(wire.as_bytes());
    let heads: Vec<String> = (0..6).map(|_| c.reply().head()).collect();
    assert_eq!(
        heads,
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.1.5",
            "354",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert!(c.is_closed());
    drop(mtad);

    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1);
    let (id, env, content) = &stored[0];
    let text = String::from_utf8_lossy(content);
    assert!(
        text.starts_with("Received: from client.test ([127.0.0.1])"),
        "{text}"
    );
    assert!(
        text.contains(&format!("by mx.test (mtad) with ESMTP id {id}")),
        "{text}"
    );
    assert!(text.contains("Subject: pipelined"));
    assert_eq!(env.envid.as_deref(), Some("e1"));
    assert_eq!(env.recipients.len(), 2);
    assert_eq!(
        env.recipients[0].orcpt.as_deref(),
        Some("rfc822;x@remote.test")
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(content.as_slice())
        .unwrap();
    assert_eq!(parsed.subject(), Some("pipelined"));
}

/// A client that waits for the 354 has its text read straight into the
/// buffer it is decoded in: stuffed dots, a long text in several writes,
/// and a QUIT in the same write as the end all come out as they should,
/// two messages running on one connection.
#[test]
fn text_read_after_the_354_is_decoded_in_place() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let body: String = (0..3000)
        .map(|n| {
            if n % 7 == 0 {
                format!("..line {n} opened with a dot\r\n")
            } else {
                format!("line {n} of the text\r\n")
            }
        })
        .collect();
    let mut expected = Vec::new();
    for (i, subject) in ["first", "second"].into_iter().enumerate() {
        c.cmd("MAIL FROM:<sender@b.test>", "250");
        c.cmd("RCPT TO:<x@remote.test>", "250");
        c.cmd("DATA", "354");
        let text = format!("{}{body}", message(subject));
        let (head, tail) = text.split_at(text.len() / 2 + i * 1000);
        c.send(head.as_bytes());
        let end = if i == 0 { ".\r\n" } else { ".\r\nQUIT\r\n" };
        c.send(format!("{tail}{end}").as_bytes());
        assert!(c.reply().head().starts_with("250 2.0.0"));
        expected.push(text.replace("\r\n..", "\r\n."));
    }
    assert!(c.reply().head().starts_with("221 2.0.0"));
    assert!(c.is_closed());
    drop(mtad);

    let mut stored: Vec<String> = spool_contents(&work.queue())
        .into_iter()
        .map(|(_, _, content)| String::from_utf8(content).unwrap())
        .collect();
    stored.sort_by_key(|text| !text.contains("Subject: first"));
    assert_eq!(stored.len(), 2);
    for (text, expected) in stored.iter().zip(&expected) {
        // The Received header mtad put on top, then the text unstuffed.
        let (received, content) = text.split_once("\r\nFrom: ").unwrap();
        assert!(received.starts_with("Received: "), "{received}");
        assert_eq!(format!("From: {content}"), *expected);
    }
}

#[test]
fn bdat_chunks_make_one_message() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RCPT TO:<x@remote.test>", "250");
    let first = "Subject: chunked\r\n";
    let second = "\r\nbody with a line\r\n.\r\nthat dot is content in BDAT\r\n";
    c.send(format!("BDAT {}\r\n{first}", first.len()).as_bytes());
    assert_eq!(c.reply().head(), "250 2.0.0");
    c.send(format!("BDAT {} LAST\r\n{second}", second.len()).as_bytes());
    let r = c.reply();
    assert_eq!(r.head(), "250 2.0.0");
    assert!(r.text().contains("queued as"), "{}", r.text());
    c.cmd("QUIT", "221");
    drop(mtad);
    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1);
    let content = String::from_utf8_lossy(&stored[0].2).into_owned();
    assert!(content.ends_with(&format!("{first}{second}")), "{content}");
}

#[test]
fn commands_that_need_no_transaction() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("HELO client.test", "250");
    c.cmd("NOOP", "250 2.0.0");
    c.cmd("VRFY someone", "252 2.5.2");
    c.cmd("HELP", "214");
    c.cmd("RSET", "250 2.0.0");
    c.cmd("QUIT", "221 2.0.0");
}

#[test]
fn relay_is_refused_outside_relay_networks() {
    let work = Workdir::new();
    // Loopback is not a relay network here, so only local domains pass.
    work.write_config("", "[smtp]\nlisten = [\"127.0.0.1:0\"]\nrelay_networks = []\nlocal_domains = [\"local.test\"]\n");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RCPT TO:<x@elsewhere.test>", "554 5.7.1");
    c.cmd("RCPT TO:<x@local.test>", "250 2.1.5");
}

/// A dual-stack listener sees an IPv4 client as `::ffff:a.b.c.d`: the
/// relay check, the per-client limits and the Received header must judge
/// it by its IPv4 address, or `relay_networks = ["127.0.0.1/32"]` would
/// deny the very client it names.
#[test]
fn an_ipv4_client_of_a_dual_stack_listener_is_judged_by_its_ipv4_address() {
    let work = Workdir::new();
    work.write_config(
        "",
        "[smtp]\nlisten = [\"[::ffff:127.0.0.1]:0\"]\nrelay_networks = [\"127.0.0.1/32\"]\n",
    );
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    assert!(c.banner.head().starts_with("220"), "{:?}", c.banner);
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<sender@b.test>", "250");
    c.cmd("RCPT TO:<x@remote.test>", "250");
    c.cmd("DATA", "354");
    c.send(message("mapped").as_bytes());
    c.cmd(".", "250");
    c.cmd("QUIT", "221");
    assert!(mtad.terminate().success());
    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1);
    let (_, envelope, content) = &stored[0];
    assert_eq!(envelope.origin.client_ip.to_string(), "127.0.0.1");
    let text = String::from_utf8_lossy(content);
    assert!(text.contains("[127.0.0.1]"), "{text}");
    assert!(!text.contains("::ffff:"), "{text}");
}
