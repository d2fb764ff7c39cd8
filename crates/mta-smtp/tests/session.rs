//! Session transcripts: bytes in, replies out, no sockets.

use std::sync::Arc;

use bytes::BytesMut;
use mta_envelope::QueueId;
use mta_smtp::{Admission, LocalRecipients, Message, Session, SessionConfig, Step, StoreError};

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 10_000,
        max_recipients: 3,
        recipient_overshoot_limit: 4,
        max_command_line: 512,
        max_line_length: 1000,
        max_errors: 5,
        tls_available: true,
        local_domains: vec!["local.test".into()],
        local_recipients: None,
        relay_networks: vec!["127.0.0.0/8".parse().unwrap()],
    }
}

/// Drives a session over `input`, storing every message, and returns the
/// replies as text plus the stored messages.
struct Driver {
    session: Session,
    admission: Arc<Admission>,
    stored: Vec<Message>,
    closed: bool,
}

impl Driver {
    fn new(config: SessionConfig, peer: &str) -> Driver {
        let admission = Arc::new(Admission::default());
        Driver {
            session: Session::new(Arc::new(config), admission.clone(), peer.parse().unwrap()),
            admission,
            stored: Vec::new(),
            closed: false,
        }
    }

    fn local() -> Driver {
        Driver::new(config(), "127.0.0.1")
    }

    fn send(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut input = BytesMut::from(bytes);
        let mut replies = Vec::new();
        while !self.closed {
            match self.session.poll(&mut input) {
                Step::NeedInput => break,
                Step::Reply(r) => replies.push(r.to_string()),
                Step::Close(r) => {
                    replies.push(r.to_string());
                    self.closed = true;
                }
                Step::StartTls(r) => {
                    replies.push(r.to_string());
                    input.clear();
                    self.session.tls_started("TLSv1.3".into());
                }
                Step::Store(m) => {
                    self.stored.push(*m);
                    let id = QueueId::new(self.stored.len() as u64);
                    replies.push(self.session.stored(Ok(id)).to_string());
                }
            }
        }
        replies
    }

    fn codes(&mut self, bytes: &[u8]) -> Vec<String> {
        self.send(bytes)
            .into_iter()
            .map(|r| {
                let last = r.lines().last().unwrap();
                last.chars().take(9).collect()
            })
            .collect()
    }
}

const MSG: &[u8] = b"Subject: hi\r\n\r\nhello\r\n.\r\n";

#[test]
fn pipelined_transaction() {
    let mut d = Driver::local();
    let mut wire = b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nRCPT TO:<y@far.test>\r\nDATA\r\n".to_vec();
    wire.extend_from_slice(MSG);
    wire.extend_from_slice(b"QUIT\r\n");
    let replies = d.send(&wire);
    assert!(replies[0].contains("PIPELINING") && replies[0].contains("CHUNKING"));
    assert!(replies[0].contains("STARTTLS") && replies[0].contains("SIZE 10000"));
    let codes: Vec<_> = replies[1..].iter().map(|r| &r[..3]).collect();
    assert_eq!(codes, ["250", "250", "250", "354", "250", "221"]);
    assert!(replies[5].contains("queued as 0000000000000001"));
    assert_eq!(d.stored.len(), 1);
    let m = &d.stored[0];
    assert_eq!(m.content, b"Subject: hi\r\n\r\nhello\r\n");
    assert_eq!(m.envelope.recipients.len(), 2);
    assert_eq!(m.envelope.origin.protocol, "ESMTP");
}

#[test]
fn bad_sequence_and_unknown() {
    let mut d = Driver::local();
    assert_eq!(d.codes(b"MAIL FROM:<a@b.test>\r\n"), ["503 5.5.1"]);
    assert_eq!(
        d.codes(b"HELO c\r\nRCPT TO:<x@local.test>\r\n"),
        ["250 mx.te", "503 5.5.1"]
    );
    assert_eq!(d.codes(b"DATA\r\n"), ["503 5.5.1"]);
    assert_eq!(d.codes(b"WHAT\r\n"), ["500 5.5.1"]);
}

#[test]
fn relay_is_refused_to_outsiders_but_local_domains_are_open() {
    let mut d = Driver::new(config(), "192.0.2.7");
    let codes = d.codes(
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nRCPT TO:<x@LOCAL.test>\r\nRCPT TO:<postmaster>\r\n",
    );
    assert_eq!(codes[2..], ["554 5.7.1", "250 2.1.5", "250 2.1.5"]);
}

#[test]
fn recipient_limit() {
    let mut d = Driver::local();
    let codes = d.codes(
        b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\nRCPT TO:<d@x.test>\r\n",
    );
    assert_eq!(codes[5], "452 4.5.3");
}

/// RFC 5321 section 4.5.3.1.10: 452 for too many recipients is what a
/// client expects, not an error. Counted as one, 20 of them (here 5) closed
/// the session with "too many errors" and lost the transaction.
#[test]
fn recipients_over_the_limit_are_not_errors_and_the_transaction_completes() {
    let mut d = Driver::local();
    let mut wire = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for i in 0..7 {
        wire.extend_from_slice(format!("RCPT TO:<r{i}@far.test>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"DATA\r\n");
    wire.extend_from_slice(MSG);
    wire.extend_from_slice(b"QUIT\r\n");
    let codes = d.codes(&wire);
    assert_eq!(
        codes[2..],
        [
            "250 2.1.5",
            "250 2.1.5",
            "250 2.1.5",
            "452 4.5.3",
            "452 4.5.3",
            "452 4.5.3",
            "452 4.5.3",
            "354 End d",
            "250 2.0.0",
            "221 2.0.0"
        ]
    );
    assert_eq!(d.stored[0].envelope.recipients.len(), 3);
    // Real errors still count (max_errors is 5): after the four 452s, it
    // takes five of them to close the session.
    let mut d = Driver::local();
    let mut wire = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    for i in 0..7 {
        wire.extend_from_slice(format!("RCPT TO:<r{i}@far.test>\r\n").as_bytes());
    }
    wire.extend_from_slice(b"A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n");
    let codes = d.codes(&wire);
    assert_eq!(
        codes[9..],
        [
            "500 5.5.1",
            "500 5.5.1",
            "500 5.5.1",
            "500 5.5.1",
            "500 5.5.1",
            "421 4.7.0"
        ]
    );
    assert!(d.closed);
}

/// Past `recipient_overshoot_limit` recipients over the limit in one
/// transaction, the session is closed (421 4.7.0), with nothing after it
/// run; the count starts again with each transaction, as Postfix's does.
#[test]
fn recipients_past_the_overshoot_limit_close_the_session() {
    let rcpts = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|i| format!("RCPT TO:<r{i}@far.test>\r\n").into_bytes())
            .collect()
    };
    let mut d = Driver::local();
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    // 3 taken, 4 over: all 452, within the limit of 4.
    let codes = d.codes(&rcpts(7));
    assert_eq!(codes[3..], ["452 4.5.3"; 4]);
    // A new transaction counts from zero.
    let mut wire = b"RSET\r\nMAIL FROM:<a@b.test>\r\n".to_vec();
    wire.extend(rcpts(7));
    let codes = d.codes(&wire);
    assert_eq!(codes[5..], ["452 4.5.3"; 4]);
    assert!(!d.closed);
    // The fifth over the limit: 421, closed, DATA never runs.
    let mut wire = rcpts(1);
    wire.extend_from_slice(b"DATA\r\n");
    let replies = d.send(&wire);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(
        replies[0].starts_with("421 4.7.0") && replies[0].contains("too many recipients"),
        "{replies:?}"
    );
    assert!(d.closed);
    assert!(d.stored.is_empty());
}

/// A local part that cannot name a Maildir is refused at RCPT, not bounced
/// at delivery to a sender nobody verified.
#[test]
fn local_parts_that_cannot_name_a_mailbox_get_550_5_1_3() {
    let mut d = Driver::new(config(), "192.0.2.7");
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    for bad in [
        "\"../../x\"@local.test",
        "\"..\"@local.test",
        "\"/abs\"@local.test",
        "\".x\"@local.test",
        "a/b@LOCAL.test",
    ] {
        let replies = d.send(format!("RCPT TO:<{bad}>\r\n").as_bytes());
        assert!(replies[0].starts_with("550 5.1.3"), "{bad}: {replies:?}");
        assert!(replies[0].contains(bad), "{replies:?}");
    }
    // Only at local domains: elsewhere the name is the next hop's business
    // (here relayed for a trusted client).
    let mut d = Driver::local();
    let codes = d.codes(
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<\"../x\"@far.test>\r\nRCPT TO:<\"U\"@local.test>\r\n",
    );
    assert_eq!(codes[2..], ["250 2.1.5", "250 2.1.5"]);
}

fn listed() -> SessionConfig {
    let mut list = LocalRecipients::new();
    list.insert("alice".into(), None);
    list.insert("bob".into(), Some("local.test".into()));
    SessionConfig {
        local_domains: vec!["local.test".into(), "other.test".into()],
        local_recipients: Some(list),
        max_recipients: 100,
        max_errors: 20,
        ..config()
    }
}

/// With a recipient list, unknown local users get 550 5.1.1 at RCPT;
/// postmaster is always taken (RFC 5321 section 4.5.1).
#[test]
fn a_recipient_list_refuses_unknown_local_users_but_never_postmaster() {
    let mut d = Driver::new(listed(), "192.0.2.7");
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    let rcpt =
        |d: &mut Driver, a: &str| d.codes(format!("RCPT TO:<{a}>\r\n").as_bytes())[0].clone();
    for known in [
        "alice@local.test",
        "Alice@OTHER.test",
        "\"alice\"@local.test",
        "bob@Local.Test",
        "postmaster",
        "Postmaster",
        "postmaster@local.test",
        "POSTMASTER@other.test",
    ] {
        assert_eq!(rcpt(&mut d, known), "250 2.1.5", "{known}");
    }
    for unknown in ["carol@local.test", "bob@other.test", "alice+tag@local.test"] {
        assert_eq!(rcpt(&mut d, unknown), "550 5.1.1", "{unknown}");
    }
    // A bad name is a bad name, listed or not.
    assert_eq!(rcpt(&mut d, "\"../alice\"@local.test"), "550 5.1.3");
    // Not a local domain: not ours to judge, and here not ours to relay.
    assert_eq!(rcpt(&mut d, "carol@far.test"), "554 5.7.1");
    let mut wire = b"DATA\r\n".to_vec();
    wire.extend_from_slice(MSG);
    assert_eq!(d.codes(&wire), ["354 End d", "250 2.0.0"]);
    assert_eq!(d.stored[0].envelope.recipients.len(), 8);
}

#[test]
fn address_syntax_and_utf8() {
    let mut d = Driver::local();
    let codes = d.codes(
        "EHLO c\r\nMAIL FROM:<bad address>\r\nMAIL FROM:<jö@b.test>\r\nMAIL FROM:<jö@b.test> SMTPUTF8\r\nRCPT TO:<no-at-sign>\r\nRCPT TO:<ü@x.test>\r\n"
            .as_bytes(),
    );
    assert_eq!(
        codes[1..],
        [
            "501 5.1.7",
            "553 5.6.7",
            "250 2.1.0",
            "501 5.1.3",
            "250 2.1.5"
        ]
    );
}

#[test]
fn command_framing() {
    let mut d = Driver::local();
    let mut long = b"NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 600));
    long.extend_from_slice(b"\r\nNOOP\r\n");
    assert_eq!(d.codes(&long), ["500 5.5.2", "250 2.0.0"]);
    assert_eq!(d.codes(b"NOOP\rRSET\r\n"), ["500 5.5.2"]);
    assert_eq!(d.codes(b"NOOP \xff\xfe\r\n"), ["501 5.5.2"]);
    // A line of exactly 512 octets, CRLF included, is fine.
    let mut exact = b"NOOP ".to_vec();
    exact.extend(std::iter::repeat_n(b'y', 512 - 7));
    exact.extend_from_slice(b"\r\n");
    assert_eq!(d.codes(&exact), ["250 2.0.0"]);
}

#[test]
fn bare_lf_in_a_command_closes_before_anything_after_it_runs() {
    let mut d = Driver::local();
    assert_eq!(
        d.codes(b"EHLO c\r\nMAIL FROM:<a@b.test>\nRCPT TO:<x@local.test>\r\n")[1..],
        ["500 5.5.2"]
    );
    assert!(d.closed);
}

#[test]
fn too_many_errors_closes() {
    let mut d = Driver::local();
    let replies = d.codes(b"A\r\nB\r\nC\r\nD\r\nE\r\nF\r\nG\r\n");
    assert_eq!(replies.len(), 6);
    assert_eq!(replies[5], "421 4.7.0");
    assert!(d.closed);
}

#[test]
fn bdat_chunks() {
    let mut d = Driver::local();
    let mut wire = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nBDAT 13\r\nSubject: hi\r\nBDAT 9 LAST\r\n\r\nhello\r\n".to_vec();
    wire.extend_from_slice(b"NOOP\r\n");
    let codes = d.codes(&wire);
    assert_eq!(codes[3..], ["250 2.0.0", "250 2.0.0", "250 2.0.0"]);
    assert_eq!(d.stored[0].content, b"Subject: hi\r\n\r\nhello\r\n");
}

#[test]
fn bdat_without_transaction_reads_and_drops_the_chunk() {
    let mut d = Driver::local();
    // The chunk holds text that looks like a command; it must not run.
    let codes = d.codes(b"EHLO c\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes[1..], ["503 5.5.1", "250 2.0.0"]);
    assert!(!d.closed);
}

#[test]
fn bdat_over_size_fails_the_transaction() {
    let mut d = Driver::local();
    let mut wire =
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nBDAT 10001\r\n".to_vec();
    wire.extend(std::iter::repeat_n(b'a', 10001));
    wire.extend_from_slice(b"BDAT 2 LAST\r\nab");
    let codes = d.codes(&wire);
    assert_eq!(codes[3..], ["552 5.3.4", "503 5.5.1"]);
    assert!(d.stored.is_empty());
}

#[test]
fn data_errors_keep_the_session_usable() {
    let mut d = Driver::local();
    d.send(b"EHLO c\r\n");
    let tx = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n";
    let mut long = tx.to_vec();
    long.extend_from_slice(b"Subject: x\r\n\r\n");
    long.extend(std::iter::repeat_n(b'a', 1200));
    long.extend_from_slice(b"\r\n.\r\n");
    assert_eq!(d.codes(&long)[3], "500 5.5.2");
    let mut big = tx.to_vec();
    big.extend_from_slice(b"Subject: x\r\n\r\n");
    for _ in 0..200 {
        big.extend_from_slice(&[b'b'; 98]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b".\r\n");
    assert_eq!(d.codes(&big)[3], "552 5.3.4");
    let mut headerless = tx.to_vec();
    headerless.extend_from_slice(b"just a body line\r\n.\r\n");
    let replies = d.send(&headerless);
    assert!(
        replies[3].starts_with("554 5.6.0") && replies[3].contains("header"),
        "{replies:?}"
    );
    // And a good message still goes through afterwards.
    let mut good = tx.to_vec();
    good.extend_from_slice(MSG);
    assert_eq!(d.codes(&good)[3], "250 2.0.0");
    assert_eq!(d.stored.len(), 1);
}

#[test]
fn smuggled_transaction_is_never_split_off() {
    for seq in [&b"\n.\n"[..], b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r.\r\n"] {
        let mut d = Driver::local();
        let mut wire = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\nSubject: one\r\n\r\nfirst".to_vec();
        wire.extend_from_slice(seq);
        wire.extend_from_slice(b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<y@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\nNOOP\r\n");
        let codes = d.codes(&wire);
        // EHLO, MAIL, RCPT, 354, one rejection for everything up to the
        // real CRLF.CRLF, then NOOP: the inner MAIL never ran.
        assert_eq!(codes.len(), 6, "{seq:?}: {codes:?}");
        assert_eq!(codes[4], "554 5.6.0", "{seq:?}");
        assert_eq!(codes[5], "250 2.0.0", "{seq:?}");
        assert!(d.stored.is_empty(), "{seq:?}");
    }
}

#[test]
fn starttls_discards_pipelined_plaintext_and_resets() {
    let mut d = Driver::local();
    let codes = d.codes(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<evil@b.test>\r\n");
    assert_eq!(codes[1], "220 2.0.0");
    assert_eq!(codes.len(), 2, "the injected MAIL ran: {codes:?}");
    // After the handshake the session starts over: EHLO is needed again.
    assert_eq!(d.codes(b"RCPT TO:<x@local.test>\r\n"), ["503 5.5.1"]);
    let replies = d.send(b"EHLO c\r\n");
    assert!(!replies[0].contains("STARTTLS"));
}

#[test]
fn storage_floor_refuses_mail() {
    let mut d = Driver::local();
    d.admission.set_storage_ok(false);
    assert_eq!(
        d.codes(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n")[1],
        "452 4.3.1"
    );
    d.admission.set_storage_ok(true);
    assert_eq!(d.codes(b"MAIL FROM:<a@b.test>\r\n"), ["250 2.1.0"]);
}

#[test]
fn store_failure_is_452() {
    let mut d = Driver::local();
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n");
    let mut input = BytesMut::from(MSG);
    let Step::Store(_) = d.session.poll(&mut input) else {
        panic!("expected a message")
    };
    let reply = d.session.stored(Err(StoreError::NoSpace));
    assert_eq!((reply.code, reply.status), (452, Some("4.3.1")));
}

#[test]
fn dsn_parameters_reach_the_envelope() {
    let mut d = Driver::local();
    let mut wire = b"EHLO c\r\nMAIL FROM:<a@b.test> RET=HDRS ENVID=abc+2B1\r\nRCPT TO:<x@local.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+40local.test\r\nDATA\r\n".to_vec();
    wire.extend_from_slice(MSG);
    d.send(&wire);
    let env = &d.stored[0].envelope;
    assert_eq!(env.envid.as_deref(), Some("abc+1"));
    assert_eq!(env.ret, Some(mta_envelope::Ret::Hdrs));
    assert_eq!(
        env.recipients[0].orcpt.as_deref(),
        Some("rfc822;x@local.test")
    );
    let codes = Driver::local().codes(b"EHLO c\r\nMAIL FROM:<a@b.test> ENVID=a+0D+0Ab\r\n");
    assert_eq!(codes[1], "501 5.5.4", "CR/LF via xtext must be refused");
}

#[test]
fn reading_text_is_known_during_data_and_bdat_chunks_only() {
    let mut d = Driver::local();
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\n");
    assert!(!d.session.is_reading_text());
    d.send(b"DATA\r\nSubject: hi\r\n");
    assert!(d.session.is_reading_text());
    d.send(b"\r\nhello\r\n.\r\n");
    assert!(!d.session.is_reading_text());
    d.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nBDAT 20\r\nSubject");
    assert!(d.session.is_reading_text());
    d.send(b": hi\r\n\r\nhello");
    assert!(!d.session.is_reading_text());
    // Half a command line is not text.
    d.send(b"BDAT 5 LA");
    assert!(!d.session.is_reading_text());
}
