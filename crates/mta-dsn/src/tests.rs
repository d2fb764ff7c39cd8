//! Unit tests: every built DSN is read back with mail-parser.

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};
use mta_envelope::{
    BodyType, Envelope, Mailbox, Notify, Origin, QueueId, Recipient, Ret, ReversePath,
};

use super::*;

const BODY_MARKER: &str = "the secret body text";

fn mailbox(address: &str) -> Mailbox {
    let (local, domain) = address.rsplit_once('@').unwrap();
    Mailbox {
        local: local.into(),
        domain: domain.into(),
    }
}

fn recipient(address: &str, notify: Option<Notify>) -> Recipient {
    Recipient {
        address: mailbox(address),
        notify,
        orcpt: None,
    }
}

fn envelope(ret: Option<Ret>) -> Envelope {
    Envelope {
        sender: ReversePath::Mailbox(mailbox("alice@sender.test")),
        recipients: vec![
            recipient("bob@gone.test", None),
            recipient("carol@slow.test", None),
        ],
        body: BodyType::SevenBit,
        smtputf8: false,
        ret,
        envid: Some("ENV-42.x".into()),
        origin: Origin {
            client_ip: "192.0.2.7".parse().unwrap(),
            helo: "client.sender.test".into(),
            protocol: "ESMTP".into(),
            tls: None,
            auth: None,
        },
        arrival: 1_795_319_280,
    }
}

fn content() -> Vec<u8> {
    format!(
        "From: alice@sender.test\r\nTo: bob@gone.test\r\nSubject: original subject\r\n\
         Message-ID: <orig@sender.test>\r\n\r\nHello,\r\n{BODY_MARKER}\r\n"
    )
    .into_bytes()
}

fn failed() -> RecipientReport {
    RecipientReport {
        recipient: mailbox("bob@gone.test"),
        orcpt: Some("rfc822;Bob@Gone.test".into()),
        action: Action::Failed,
        status: "5.1.1".into(),
        remote_mta: Some("mx.gone.test".into()),
        diagnostic: Some(Diagnostic::Smtp(
            "550 5.1.1 <bob@gone.test>: user unknown".into(),
        )),
        note: None,
        last_attempt: Some(1_795_320_000),
        will_retry_until: None,
    }
}

fn delayed() -> RecipientReport {
    RecipientReport {
        recipient: mailbox("carol@slow.test"),
        orcpt: None,
        action: Action::Delayed,
        status: "4.4.7".into(),
        remote_mta: Some("mx.slow.test".into()),
        diagnostic: Some(Diagnostic::Smtp("421 4.7.0 try again later".into())),
        note: None,
        last_attempt: Some(1_795_320_100),
        will_retry_until: Some(1_795_751_280),
    }
}

fn delivered() -> RecipientReport {
    RecipientReport {
        recipient: mailbox("dave@fine.test"),
        orcpt: None,
        action: Action::Delivered,
        status: "2.0.0".into(),
        remote_mta: Some("mx.fine.test".into()),
        diagnostic: Some(Diagnostic::Smtp("250 2.0.0 queued as 1234".into())),
        note: None,
        last_attempt: Some(1_795_320_200),
        will_retry_until: None,
    }
}

/// Builds a DSN and checks the wire rules every DSN must keep: CRLF line
/// endings only, no line over 998 octets.
fn build_checked(envelope: &Envelope, content: &[u8], reports: &[RecipientReport]) -> Vec<u8> {
    let dsn = build(&DsnInput {
        reporting_mta: "mx.example.test",
        original_id: QueueId::new(0xabc),
        original: envelope,
        original_content: content,
        recipients: reports,
        now: 1_795_400_000,
        postmaster: "MAILER-DAEMON@mx.example.test",
        boundary_seed: 0x1234,
    });
    for (i, &b) in dsn.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && dsn[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(dsn.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(dsn.ends_with(b"\r\n"));
    for line in dsn.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len() - 1);
    }
    dsn
}

fn parse(dsn: &[u8]) -> Message<'_> {
    MessageParser::default().parse(dsn).expect("DSN parses")
}

/// The direct children of the top-level multipart.
fn parts<'a>(message: &'a Message<'a>) -> Vec<&'a MessagePart<'a>> {
    match &message.root_part().body {
        PartType::Multipart(ids) => ids.iter().map(|&id| &message.parts[id as usize]).collect(),
        other => panic!("top level is not multipart: {other:?}"),
    }
}

fn mime_type(part: &MessagePart) -> String {
    let ct = part.content_type().expect("part has a Content-Type");
    format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
}

/// The field groups of a delivery-status body, each read by mail-parser as
/// a header section: (name, unfolded value) pairs.
fn status_groups(body: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).unwrap();
    text.split("\r\n\r\n")
        .filter(|group| !group.trim().is_empty())
        .map(|group| {
            let group = format!("{group}\r\n\r\n");
            let parsed = MessageParser::default().parse_headers(&group).unwrap();
            parsed
                .headers()
                .iter()
                .map(|h| {
                    let raw = &group[h.offset_start() as usize..h.offset_end() as usize];
                    // Unfold (RFC 5322 section 2.2.3): drop each CRLF.
                    (
                        h.name().to_owned(),
                        raw.replace("\r\n", "").trim().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

fn get<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn report_has_three_parts_and_the_rfc3464_fields() {
    let env = envelope(None);
    let dsn = build_checked(&env, &content(), &[failed(), delayed()]);
    let message = parse(&dsn);

    let ct = message.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));

    let to = message.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("alice@sender.test"));
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@mx.example.test"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );
    assert_eq!(
        message.message_id(),
        Some("dsn.0000000000001234@mx.example.test")
    );
    assert_eq!(
        message.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert!(message.date().is_some());

    let parts = parts(&message);
    assert_eq!(parts.len(), 3);
    assert_eq!(mime_type(parts[0]), "text/plain");
    assert_eq!(mime_type(parts[1]), "message/delivery-status");
    assert_eq!(mime_type(parts[2]), "text/rfc822-headers");

    let text = parts[0].text_contents().unwrap();
    assert!(text.contains("0000000000000abc"), "{text}");
    assert!(text.contains("<bob@gone.test>"), "{text}");
    assert!(text.contains("user unknown"), "{text}");
    assert!(text.contains("<carol@slow.test>"), "{text}");
    assert!(text.contains(&format!("retried until {}", rfc5322_date(1_795_751_280))));

    let groups = status_groups(parts[1].contents());
    assert_eq!(groups.len(), 3, "{groups:?}");
    let message_fields = &groups[0];
    assert_eq!(
        get(message_fields, "Reporting-MTA"),
        Some("dns; mx.example.test")
    );
    assert_eq!(
        get(message_fields, "Original-Envelope-Id"),
        Some("ENV-42.x")
    );
    assert_eq!(
        get(message_fields, "Arrival-Date"),
        Some("Sun, 22 Nov 2026 03:48:00 +0000")
    );

    let bob = &groups[1];
    assert_eq!(get(bob, "Original-Recipient"), Some("rfc822;Bob@Gone.test"));
    assert_eq!(get(bob, "Final-Recipient"), Some("rfc822; bob@gone.test"));
    assert_eq!(get(bob, "Action"), Some("failed"));
    assert_eq!(get(bob, "Status"), Some("5.1.1"));
    assert_eq!(get(bob, "Remote-MTA"), Some("dns; mx.gone.test"));
    assert_eq!(
        get(bob, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <bob@gone.test>: user unknown")
    );
    assert_eq!(
        get(bob, "Last-Attempt-Date"),
        Some(rfc5322_date(1_795_320_000).as_str())
    );
    assert_eq!(get(bob, "Will-Retry-Until"), None);

    let carol = &groups[2];
    assert_eq!(get(carol, "Original-Recipient"), None);
    assert_eq!(
        get(carol, "Final-Recipient"),
        Some("rfc822; carol@slow.test")
    );
    assert_eq!(get(carol, "Action"), Some("delayed"));
    assert_eq!(get(carol, "Status"), Some("4.4.7"));
    assert_eq!(get(carol, "Remote-MTA"), Some("dns; mx.slow.test"));
    assert_eq!(
        get(carol, "Diagnostic-Code"),
        Some("smtp; 421 4.7.0 try again later")
    );
    assert_eq!(
        get(carol, "Will-Retry-Until"),
        Some(rfc5322_date(1_795_751_280).as_str())
    );
}

#[test]
fn no_envid_means_no_original_envelope_id() {
    let mut env = envelope(None);
    env.envid = None;
    let dsn = build_checked(&env, &content(), &[failed()]);
    let message = parse(&dsn);
    let groups = status_groups(parts(&message)[1].contents());
    assert_eq!(get(&groups[0], "Original-Envelope-Id"), None);
    assert!(get(&groups[0], "Reporting-MTA").is_some());
}

#[test]
fn subject_names_the_worst_outcome() {
    let env = envelope(None);
    let cases: [(&[RecipientReport], &str); 4] = [
        (
            &[delivered(), delayed(), failed()],
            "Undelivered Mail Returned to Sender",
        ),
        (&[failed()], "Undelivered Mail Returned to Sender"),
        (
            &[delivered(), delayed()],
            "Delayed Mail (still being retried)",
        ),
        (&[delivered()], "Successful Mail Delivery Report"),
    ];
    for (reports, subject) in cases {
        let dsn = build_checked(&env, &content(), reports);
        assert_eq!(parse(&dsn).subject(), Some(subject));
    }
}

#[test]
fn ret_full_returns_the_whole_message() {
    let env = envelope(Some(Ret::Full));
    let original = content();
    let dsn = build_checked(&env, &original, &[failed()]);
    let message = parse(&dsn);
    let parts = parts(&message);
    assert_eq!(mime_type(parts[2]), "message/rfc822");
    assert!(parts[2].content_transfer_encoding().is_none());
    assert_eq!(parts[2].contents(), original.as_slice());
    let returned = parts[2].message().expect("a nested message");
    assert_eq!(returned.subject(), Some("original subject"));
    assert!(returned.body_text(0).unwrap().contains(BODY_MARKER));
}

#[test]
fn ret_hdrs_and_no_ret_return_only_the_headers() {
    for ret in [Some(Ret::Hdrs), None] {
        let env = envelope(ret);
        let dsn = build_checked(&env, &content(), &[failed()]);
        let message = parse(&dsn);
        let parts = parts(&message);
        assert_eq!(mime_type(parts[2]), "text/rfc822-headers", "{ret:?}");
        let headers = parts[2].text_contents().unwrap();
        assert!(headers.contains("Subject: original subject"), "{headers}");
        assert!(headers.contains("Message-ID: <orig@sender.test>"));
        let raw = String::from_utf8(dsn.clone()).unwrap();
        assert!(!raw.contains(BODY_MARKER), "{ret:?}: body returned");
        assert!(!raw.contains("Hello,"), "{ret:?}: body returned");
    }
}

#[test]
fn eight_bit_original_is_labelled_8bit() {
    let env = envelope(Some(Ret::Full));
    let original = "Subject: caf\u{e9}\r\n\r\nna\u{ef}ve body\r\n".as_bytes();
    let dsn = build_checked(&env, original, &[failed()]);
    let message = parse(&dsn);
    assert_eq!(message.content_transfer_encoding(), Some("8bit"));
    let parts = parts(&message);
    assert_eq!(parts[2].content_transfer_encoding(), Some("8bit"));
    assert!(parts[0].content_transfer_encoding().is_none());
    assert_eq!(parts[2].contents(), original);

    // The same message without RET=FULL: the body stays home, and the
    // 8-bit header still labels the part it is in.
    let dsn = build_checked(&envelope(None), original, &[failed()]);
    let message = parse(&dsn);
    assert_eq!(
        parts_of(&message, 2).content_transfer_encoding(),
        Some("8bit")
    );
    assert!(!String::from_utf8_lossy(&dsn).contains("body"));
}

fn parts_of<'a>(message: &'a Message<'a>, index: usize) -> &'a MessagePart<'a> {
    parts(message)[index]
}

#[test]
fn ascii_dsn_has_no_transfer_encoding() {
    let dsn = build_checked(&envelope(Some(Ret::Full)), &content(), &[failed()]);
    assert!(dsn.is_ascii());
    let raw = String::from_utf8(dsn).unwrap();
    assert!(!raw.contains("Content-Transfer-Encoding"), "{raw}");
}

#[test]
fn wants_dsn_honours_notify_and_the_null_sender() {
    use Action::*;
    let on = |success, failure, delay| {
        Some(Notify::On {
            success,
            failure,
            delay,
        })
    };
    // (NOTIFY, [Failed, Delayed, Delivered, Relayed, Expanded])
    let table: [(Option<Notify>, [bool; 5]); 7] = [
        (None, [true, true, false, false, false]),
        (Some(Notify::Never), [false; 5]),
        (on(true, false, false), [false, false, true, true, true]),
        (on(false, true, false), [true, false, false, false, false]),
        (on(false, false, true), [false, true, false, false, false]),
        (on(true, true, false), [true, false, true, true, true]),
        (on(true, true, true), [true; 5]),
    ];
    let actions = [Failed, Delayed, Delivered, Relayed, Expanded];
    let mut env = envelope(None);
    for (notify, expected) in table {
        let rcpt = recipient("bob@gone.test", notify);
        for (action, want) in actions.into_iter().zip(expected) {
            env.sender = ReversePath::Mailbox(mailbox("alice@sender.test"));
            assert_eq!(
                wants_dsn(&env, &rcpt, action),
                want,
                "NOTIFY {notify:?}, {action}"
            );
            env.sender = ReversePath::Null;
            assert!(
                !wants_dsn(&env, &rcpt, action),
                "null sender, NOTIFY {notify:?}, {action}"
            );
        }
    }
}

#[test]
fn crlf_in_a_diagnostic_never_starts_a_line() {
    let mut report = failed();
    report.diagnostic = Some(Diagnostic::Smtp(
        "550 no\r\nX-Injected: yes\r\n\r\nBcc: victim@evil.test\nSubject: spoofed\rX-Bare: cr"
            .into(),
    ));
    report.remote_mta = Some("mx.evil.test\r\nX-Host-Injected: yes".into());
    let dsn = build_checked(&envelope(None), &content(), &[report]);
    for line in dsn.split(|&b| b == b'\n') {
        for bad in [
            &b"X-Injected"[..],
            b"Bcc",
            b"Subject: spoofed",
            b"X-Bare",
            b"X-Host",
        ] {
            assert!(!line.starts_with(bad), "{}", String::from_utf8_lossy(line));
        }
    }
    let message = parse(&dsn);
    assert!(message.header_raw("X-Injected").is_none());
    assert!(message.header_raw("Bcc").is_none());
    assert_eq!(
        message.subject(),
        Some("Undelivered Mail Returned to Sender")
    );

    let groups = status_groups(parts(&message)[1].contents());
    assert_eq!(groups.len(), 2, "a blank line was injected: {groups:?}");
    let bob = &groups[1];
    let diagnostic = get(bob, "Diagnostic-Code").unwrap();
    assert!(diagnostic.starts_with("smtp; 550 no"), "{diagnostic}");
    assert!(diagnostic.contains("X-Injected: yes"), "{diagnostic}");
    assert!(diagnostic.ends_with("X-Bare: cr"), "{diagnostic}");
    assert!(get(bob, "X-Injected").is_none());
    assert!(get(bob, "X-Host-Injected").is_none());
    assert_eq!(get(bob, "Action"), Some("failed"));
}

#[test]
fn long_diagnostics_are_folded_under_998_octets() {
    // Words: folded at spaces, and unfolding gives the text back.
    let words: String = (0..310).map(|i| format!("word{i:05} ")).collect();
    let words = words.trim_end().to_owned();
    assert!(words.len() >= 3000);
    // One 3000-character word: cut.
    let word = "x".repeat(3000);
    // Multi-byte characters: cut on character boundaries.
    let utf8_word = "\u{e9}".repeat(1600);

    for (diagnostic, utf8) in [(&words, false), (&word, false), (&utf8_word, true)] {
        let mut report = failed();
        report.diagnostic = Some(Diagnostic::Smtp(diagnostic.clone()));
        let mut env = envelope(None);
        env.smtputf8 = utf8;
        let dsn = build_checked(&env, &content(), &[report]);
        let message = parse(&dsn);
        let groups = status_groups(parts(&message)[1].contents());
        let value = get(&groups[1], "Diagnostic-Code").unwrap();
        if diagnostic.contains(' ') {
            assert_eq!(value, format!("smtp; {diagnostic}"));
        } else {
            // A cut adds one folding space per line.
            let value = value.replace(' ', "");
            assert_eq!(value, format!("smtp;{diagnostic}"));
        }
        assert_eq!(get(&groups[1], "Status"), Some("5.1.1"));
    }
}

#[test]
fn fold_keeps_short_lines_and_round_trips() {
    let mut out = String::new();
    let value = "a b  c ".repeat(40);
    fold(&mut out, "Name:", &value, "", false);
    assert!(out.ends_with("\r\n"));
    for line in out.trim_end_matches("\r\n").split("\r\n") {
        assert!(line.len() <= SOFT_LINE, "{line:?}");
        assert!(!line.trim().is_empty(), "whitespace-only line");
    }
    assert_eq!(
        out.trim_end_matches("\r\n").replace("\r\n", ""),
        format!("Name: {}", value.trim())
    );
}

#[test]
fn non_ascii_reply_is_kept_out_of_an_ascii_report() {
    let mut report = failed();
    report.diagnostic = Some(Diagnostic::Smtp(
        "550 Benutzer unbekannt \u{2013} gr\u{fc}\u{df}e".into(),
    ));
    let dsn = build_checked(&envelope(None), &content(), &[report]);
    assert!(dsn.is_ascii());
    let message = parse(&dsn);
    let groups = status_groups(parts(&message)[1].contents());
    assert_eq!(
        get(&groups[1], "Diagnostic-Code"),
        Some("smtp; 550 Benutzer unbekannt ? gr??e")
    );
}

#[test]
fn smtputf8_original_uses_the_global_types() {
    let mut env = envelope(Some(Ret::Hdrs));
    env.smtputf8 = true;
    env.sender = ReversePath::Mailbox(mailbox("j\u{fc}rgen@sender.test"));
    let original = "From: j\u{fc}rgen@sender.test\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nbody\r\n";
    let mut report = failed();
    report.recipient = mailbox("\u{7528}\u{6237}@gone.test");
    report.orcpt = Some("utf-8;\u{7528}\u{6237}@gone.test".into());
    report.diagnostic = Some(Diagnostic::Smtp("553 5.6.7 \u{dc}nicode".into()));
    let dsn = build_checked(&env, original.as_bytes(), &[report]);
    let message = parse(&dsn);

    let ct = message.content_type().unwrap();
    assert_eq!(ct.attribute("report-type"), Some("global-delivery-status"));
    assert_eq!(message.content_transfer_encoding(), Some("8bit"));
    let to = message.to().unwrap().first().unwrap();
    assert_eq!(to.address(), Some("j\u{fc}rgen@sender.test"));

    let parts = parts(&message);
    assert_eq!(mime_type(parts[0]), "text/plain");
    assert_eq!(mime_type(parts[1]), "message/global-delivery-status");
    assert_eq!(mime_type(parts[2]), "message/global-headers");
    assert!(parts[0]
        .text_contents()
        .unwrap()
        .contains("<\u{7528}\u{6237}@gone.test>"));

    let groups = status_groups(parts[1].contents());
    let rcpt = &groups[1];
    assert_eq!(
        get(rcpt, "Final-Recipient"),
        Some("utf-8; \u{7528}\u{6237}@gone.test")
    );
    assert_eq!(
        get(rcpt, "Original-Recipient"),
        Some("utf-8;\u{7528}\u{6237}@gone.test")
    );
    assert_eq!(
        get(rcpt, "Diagnostic-Code"),
        Some("smtp; 553 5.6.7 \u{dc}nicode")
    );
    let headers = std::str::from_utf8(parts[2].contents()).unwrap();
    assert!(headers.contains("Subject: Gr\u{fc}\u{df}e"), "{headers}");
    assert!(!headers.contains("body"));

    // RET=FULL: message/global, the whole message.
    env.ret = Some(Ret::Full);
    let dsn = build_checked(&env, original.as_bytes(), &[failed()]);
    let message = parse(&dsn);
    let returned = parts_of(&message, 2);
    assert_eq!(mime_type(returned), "message/global");
    assert_eq!(returned.contents(), original.as_bytes());
}

#[test]
fn boundary_changes_when_the_content_holds_it() {
    let seeded = "=_dsn_0000000000001234";
    let original = format!(
        "Subject: trap\r\n\r\n--{seeded}\r\nContent-Type: text/plain\r\n\r\n\
         --{seeded}.1\r\nfake part\r\n--{seeded}--\r\n"
    );
    let dsn = build_checked(&envelope(Some(Ret::Full)), original.as_bytes(), &[failed()]);
    let message = parse(&dsn);
    let boundary = message
        .content_type()
        .unwrap()
        .attribute("boundary")
        .unwrap()
        .to_owned();
    assert!(!original.contains(&boundary), "{boundary}");
    assert_eq!(parts(&message).len(), 3);
    assert_eq!(parts_of(&message, 2).contents(), original.as_bytes());

    // A diagnostic is checked too: it lands in two of the parts.
    let mut report = failed();
    report.diagnostic = Some(Diagnostic::Smtp(format!("550 --{seeded}")));
    let dsn = build_checked(&envelope(None), &content(), &[report]);
    let message = parse(&dsn);
    let boundary = message
        .content_type()
        .unwrap()
        .attribute("boundary")
        .unwrap();
    assert_ne!(boundary, seeded);
    assert_eq!(parts(&message).len(), 3);
}

/// Issue 11, point 3: what no server said is not written as an SMTP reply
/// (`X-Local;`), a report may leave the field out, and a note reaches the
/// human-readable part only.
#[test]
fn local_causes_are_x_local_and_a_diagnostic_may_be_left_out() {
    let mut dns = failed();
    dns.recipient = mailbox("bob@nomail.test");
    dns.status = "5.1.10".into();
    dns.remote_mta = None;
    dns.diagnostic = Some(Diagnostic::Local(
        "nomail.test: domain does not accept mail (null MX)".into(),
    ));
    let mut expired = delayed();
    expired.action = Action::Failed;
    expired.will_retry_until = None;
    expired.note = Some("Delivery time expired.".into());
    let mut local = delivered();
    local.remote_mta = None;
    local.diagnostic = None;
    let dsn = build_checked(&envelope(None), &content(), &[dns, expired, local]);
    let message = parse(&dsn);
    let parts = parts(&message);
    let groups = status_groups(parts[1].contents());
    assert_eq!(
        get(&groups[1], "Diagnostic-Code"),
        Some("X-Local; nomail.test: domain does not accept mail (null MX)")
    );
    assert_eq!(get(&groups[1], "Remote-MTA"), None);
    assert_eq!(
        get(&groups[2], "Diagnostic-Code"),
        Some("smtp; 421 4.7.0 try again later")
    );
    assert_eq!(get(&groups[3], "Diagnostic-Code"), None);
    assert_eq!(get(&groups[3], "Action"), Some("delivered"));
    let text = parts[0].text_contents().unwrap();
    assert!(text.contains("Delivery time expired."), "{text}");
    assert!(
        text.contains("The server said: 421 4.7.0 try again later"),
        "{text}"
    );
    assert!(text.contains("domain does not accept mail"), "{text}");
    assert!(!groups[2].iter().any(|(_, v)| v.contains("expired")));
}
