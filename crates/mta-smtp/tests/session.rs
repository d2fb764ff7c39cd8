//! Session transcripts: bytes in, replies out, no sockets.

use std::sync::Arc;

use bytes::BytesMut;
use mta_envelope::QueueId;
use mta_smtp::{
    received_header, Admission, AuthPolicy, AuthVerdict, Credentials, LocalRecipients, Message,
    Reply, Session, SessionConfig, Step, StoreError, RESPONSE_LIMIT,
};

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
        auth: None,
        sender_policy: None,
    }
}

/// The users the tests' "database" knows: alice's password is `s3cret`;
/// the passwords `down` and `lock` stand for an unreachable database and
/// a client over its failure limit.
fn verdict(c: &Credentials) -> AuthVerdict {
    match (c.authcid.as_str(), c.password.expose()) {
        (_, "down") => AuthVerdict::Unavailable,
        (_, "lock") => AuthVerdict::LockedOut,
        ("alice" | "Alice", "s3cret") => AuthVerdict::Accepted {
            user: "alice".into(),
        },
        _ => AuthVerdict::Rejected,
    }
}

/// Drives a session over `input`, storing every message, and returns the
/// replies as text plus the stored messages.
struct Driver {
    session: Session,
    admission: Arc<Admission>,
    stored: Vec<Message>,
    closed: bool,
    /// Every reply, as sent on the wire.
    wire: Vec<u8>,
    /// The credentials the session asked to check: `MECH authcid password`.
    auths: Vec<String>,
    /// Input the session has not consumed yet, kept for the next `send`.
    input: BytesMut,
}

impl Driver {
    fn new(config: SessionConfig, peer: &str) -> Driver {
        let admission = Arc::new(Admission::default());
        Driver {
            session: Session::new(Arc::new(config), admission.clone(), peer.parse().unwrap()),
            admission,
            stored: Vec::new(),
            closed: false,
            wire: Vec::new(),
            auths: Vec::new(),
            input: BytesMut::new(),
        }
    }

    /// A session on a listener with implicit TLS (port 465): the handshake
    /// comes before the banner.
    fn implicit_tls(config: SessionConfig, peer: &str) -> Driver {
        let mut d = Driver::new(config, peer);
        d.session.tls_started("TLSv1.3".into());
        d
    }

    fn push(&mut self, replies: &mut Vec<String>, r: Reply) {
        r.write_to(&mut self.wire);
        replies.push(r.to_string());
    }

    fn local() -> Driver {
        Driver::new(config(), "127.0.0.1")
    }

    fn send(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut input = std::mem::take(&mut self.input);
        input.extend_from_slice(bytes);
        let mut replies = Vec::new();
        while !self.closed {
            match self.session.poll(&mut input) {
                Step::NeedInput => break,
                Step::Reply(r) => self.push(&mut replies, r),
                Step::Close(r) => {
                    self.push(&mut replies, r);
                    self.closed = true;
                }
                Step::StartTls(r) => {
                    self.push(&mut replies, r);
                    input.clear();
                    self.session.tls_started("TLSv1.3".into());
                }
                Step::Store(m) => {
                    self.stored.push(*m);
                    let id = QueueId::new(self.stored.len() as u64);
                    let r = self.session.stored(Ok(id));
                    self.push(&mut replies, r);
                }
                Step::Authenticate(c) => {
                    self.auths.push(format!(
                        "{} {} {}",
                        c.mechanism,
                        c.authcid,
                        c.password.expose()
                    ));
                    let verdict = verdict(&c);
                    drop(c);
                    match self.session.authenticated(verdict) {
                        Step::Reply(r) => self.push(&mut replies, r),
                        Step::Close(r) => {
                            self.push(&mut replies, r);
                            self.closed = true;
                        }
                        other => panic!("a verdict gave {other:?}"),
                    }
                }
            }
        }
        self.input = input;
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
fn a_local_failure_before_storing_is_451() {
    let mut d = Driver::local();
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n");
    let mut input = BytesMut::from(MSG);
    let Step::Store(_) = d.session.poll(&mut input) else {
        panic!("expected a message")
    };
    let reply = d.session.stored(Err(StoreError::Local));
    assert_eq!((reply.code, reply.status), (451, Some("4.3.0")));
    // The transaction is over: a new one may start.
    assert_eq!(d.codes(b"MAIL FROM:<a@b.test>\r\n"), ["250 2.1.0"]);
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

// ---- AUTH (RFC 4954) and the submission role (RFC 6409) ---------------

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// `AUTH PLAIN` with the initial response for `user` and `password`.
fn auth_plain(user: &str, password: &str) -> Vec<u8> {
    format!(
        "AUTH PLAIN {}\r\n",
        b64(format!("\0{user}\0{password}").as_bytes())
    )
    .into_bytes()
}

/// The submission role (587): AUTH required for MAIL, under TLS only.
fn submission() -> SessionConfig {
    SessionConfig {
        auth: Some(AuthPolicy::submission()),
        ..config()
    }
}

/// AUTH offered without TLS and without being required: relaying after
/// AUTH on an MX-like listener.
fn auth_optional() -> SessionConfig {
    SessionConfig {
        auth: Some(AuthPolicy {
            require_tls: false,
            required_for_mail: false,
            ..AuthPolicy::submission()
        }),
        ..config()
    }
}

const OUTSIDE: &str = "192.0.2.7";

#[test]
fn ehlo_offers_auth_only_where_and_when_it_may_run() {
    let ehlo = |d: &mut Driver| d.send(b"EHLO c\r\n").remove(0);
    // The MX role: no AUTH at all.
    let mut d = Driver::new(config(), OUTSIDE);
    assert!(!ehlo(&mut d).contains("AUTH"));
    // Submission before TLS, from outside: STARTTLS but no mechanisms.
    let mut d = Driver::new(submission(), OUTSIDE);
    let before = ehlo(&mut d);
    assert!(
        before.contains("STARTTLS") && !before.contains("AUTH"),
        "{before}"
    );
    // After STARTTLS: the mechanisms, and no STARTTLS; byte for byte.
    d.send(b"STARTTLS\r\n");
    d.wire.clear();
    d.send(b"EHLO c\r\n");
    assert_eq!(
        String::from_utf8(d.wire.clone()).unwrap(),
        "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n"
    );
    // A loopback client is exempt from the TLS rule.
    for peer in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
        let mut d = Driver::new(submission(), peer);
        assert!(ehlo(&mut d).contains("AUTH PLAIN LOGIN"), "{peer}");
    }
    // Without require_tls, offered before TLS too; in the order configured.
    let mut config = auth_optional();
    config.auth.as_mut().unwrap().mechanisms.reverse();
    let mut d = Driver::new(config, OUTSIDE);
    assert!(ehlo(&mut d).contains("AUTH LOGIN PLAIN"));
    // Once authenticated, not offered again.
    d.send(&auth_plain("alice", "s3cret"));
    assert!(!ehlo(&mut d).contains("AUTH"));
    // HELP names the command where it is offered.
    assert!(d.send(b"HELP\r\n")[0].contains(" AUTH;"));
    assert!(!Driver::local().send(b"HELP\r\n")[0].contains("AUTH"));
}

/// RFC 4954 section 4: PLAIN in the initial response, then relaying is
/// allowed to a client that was refused it before.
#[test]
fn auth_plain_allows_relaying_and_reaches_the_envelope() {
    let mut d = Driver::new(auth_optional(), OUTSIDE);
    let replies = d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nRSET\r\n");
    assert_eq!(replies[2], "554 5.7.1 <x@far.test>: Relay access denied");
    let mut wire = auth_plain("alice", "s3cret");
    wire.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    wire.extend_from_slice(MSG);
    let replies = d.send(&wire);
    assert_eq!(replies[0], "235 2.7.0 Authentication successful");
    assert_eq!(
        replies[1..].iter().map(|r| &r[..9]).collect::<Vec<_>>(),
        ["250 2.1.0", "250 2.1.5", "354 End d", "250 2.0.0"]
    );
    assert_eq!(d.auths, ["PLAIN alice s3cret"]);
    assert_eq!(d.session.user(), Some("alice"));
    let env = &d.stored[0].envelope;
    assert_eq!(env.origin.auth.as_deref(), Some("alice"));
    assert_eq!(env.origin.protocol, "ESMTPA");
    // The trace header says there was an AUTH, never who, nor a password.
    let header = received_header("mx.test", env, QueueId::new(1));
    assert!(header.contains("with ESMTPA id"), "{header}");
    assert!(
        !header.contains("alice") && !header.contains("s3cret"),
        "{header}"
    );
}

#[test]
fn auth_login_in_two_steps_and_plain_after_an_empty_challenge() {
    let mut d = Driver::new(submission(), "127.0.0.1");
    d.send(b"EHLO c\r\n");
    d.wire.clear();
    let user = format!("{}\r\n", b64(b"alice"));
    let password = format!("{}\r\n", b64(b"s3cret"));
    d.send(b"AUTH LOGIN\r\n");
    d.send(user.as_bytes());
    d.send(password.as_bytes());
    assert_eq!(
        String::from_utf8(d.wire.clone()).unwrap(),
        "334 VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n235 2.7.0 Authentication successful\r\n"
    );
    assert_eq!(d.auths, ["LOGIN alice s3cret"]);
    // PLAIN without an initial response: `334 ` and an empty challenge.
    let mut d = Driver::new(submission(), "127.0.0.1");
    d.send(b"EHLO c\r\n");
    d.wire.clear();
    d.send(b"AUTH plain\r\n");
    assert_eq!(d.wire, b"334 \r\n");
    let response = format!("{}\r\n", b64(b"\0alice\0s3cret"));
    assert_eq!(
        d.send(response.as_bytes()),
        ["235 2.7.0 Authentication successful"]
    );
    // LOGIN with the user name as the initial response.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let wire = format!("EHLO c\r\nAUTH LOGIN {}\r\n{password}", b64(b"alice"));
    assert_eq!(d.codes(wire.as_bytes())[1..], ["334 UGFzc", "235 2.7.0"]);
}

/// Every refusal of the exchange, with its exact reply.
#[test]
fn auth_refusals_and_their_replies() {
    let cases: &[(&[u8], &str)] = &[
        (b"AUTH LOGIN\r\n*\r\n", "501 5.0.0 Authentication cancelled"),
        (b"AUTH PLAIN\r\n*\r\n", "501 5.0.0 Authentication cancelled"),
        (b"AUTH CRAM-MD5\r\n", "504 5.5.4 Unrecognized authentication type"),
        (b"AUTH PLAIN !!!\r\n", "501 5.5.2 Cannot decode response: not base64 (RFC 4954 section 4)"),
        (b"AUTH PLAIN\r\nAHU=AHU=\r\n", "501 5.5.2 Cannot decode response: not base64 (RFC 4954 section 4)"),
        (b"AUTH PLAIN\r\nAGFsaWNlAP/+\r\n", "501 5.5.2 Invalid authentication data: not UTF-8 (RFC 4616)"),
        (b"AUTH PLAIN =\r\n", "501 5.5.2 Invalid authentication data: PLAIN needs three NUL-separated fields (RFC 4616)"),
        (b"AUTH\r\n", "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
        (b"AUTH PLAIN a b\r\n", "501 5.5.4 Syntax: AUTH mechanism [initial-response]"),
    ];
    for (wire, want) in cases {
        let mut d = Driver::new(submission(), "127.0.0.1");
        d.send(b"EHLO c\r\n");
        let replies = d.send(wire);
        assert_eq!(replies.last().map(String::as_str), Some(*want), "{wire:?}");
        assert!(d.auths.is_empty(), "{wire:?}");
        // The session goes on: the next line is a command again.
        assert_eq!(d.codes(b"NOOP\r\n"), ["250 2.0.0"], "{wire:?}");
    }
    // An authorization identity of someone else: 535 before any check.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let wire = format!("EHLO c\r\nAUTH PLAIN {}\r\n", b64(b"bob\0alice\0s3cret"));
    let replies = d.send(wire.as_bytes());
    assert!(
        replies[1].starts_with("535 5.7.8 Authentication credentials invalid"),
        "{replies:?}"
    );
    assert!(d.auths.is_empty() && d.session.user().is_none());
    // The verdicts.
    let verdicts: &[(&str, &str)] = &[
        ("wrong", "535 5.7.8 Authentication credentials invalid"),
        ("down", "454 4.7.0 Temporary authentication failure"),
        (
            "lock",
            "421 4.7.0 mx.test Error: too many failed authentications, closing connection",
        ),
    ];
    for (password, want) in verdicts {
        let mut d = Driver::new(submission(), "127.0.0.1");
        d.send(b"EHLO c\r\n");
        assert_eq!(d.send(&auth_plain("alice", password)), [*want]);
        assert_eq!(d.closed, *password == "lock");
        assert!(d.session.user().is_none());
    }
}

/// RFC 4954 section 4: no AUTH before EHLO, twice, or in a transaction;
/// and none at all where it is not offered.
#[test]
fn auth_out_of_sequence() {
    let mut d = Driver::new(auth_optional(), "127.0.0.1");
    let good = auth_plain("alice", "s3cret");
    assert_eq!(d.send(&good), ["503 5.5.1 Error: send EHLO first"]);
    d.send(b"HELO c\r\n");
    assert_eq!(d.send(&good), ["503 5.5.1 Error: send EHLO first"]);
    d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(
        d.send(&good),
        ["503 5.5.1 Error: MAIL transaction in progress"]
    );
    d.send(b"RSET\r\n");
    assert_eq!(d.codes(&good), ["235 2.7.0"]);
    assert_eq!(d.send(&good), ["503 5.5.1 Error: already authenticated"]);
    // EHLO and RSET keep the authentication (as Postfix does).
    d.send(b"EHLO c\r\nRSET\r\n");
    assert_eq!(d.session.user(), Some("alice"));
    assert_eq!(d.auths.len(), 1);
    let mut mx = Driver::local();
    mx.send(b"EHLO c\r\n");
    assert_eq!(
        mx.send(&good),
        ["502 5.5.1 Error: authentication not enabled"]
    );
}

/// The submission role: no MAIL before AUTH (530), and AUTH only under
/// TLS (538) except from loopback.
#[test]
fn submission_needs_auth_for_mail_and_tls_for_auth() {
    let mut d = Driver::new(submission(), OUTSIDE);
    let codes = d.codes(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    assert_eq!(codes[1], "530 5.7.0");
    assert_eq!(
        d.send(&auth_plain("alice", "s3cret")),
        ["538 5.7.11 Encryption required for requested authentication mechanism"]
    );
    assert!(d.auths.is_empty(), "a password sent in clear was checked");
    // After STARTTLS (which drops what was pipelined behind it): AUTH,
    // then mail to anywhere.
    assert_eq!(d.codes(b"STARTTLS\r\n"), ["220 2.0.0"]);
    let mut wire = b"EHLO c\r\n".to_vec();
    wire.extend(auth_plain("alice", "s3cret"));
    wire.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nBDAT 22 LAST\r\n");
    wire.extend_from_slice(b"Subject: hi\r\n\r\nhello\r\n");
    let codes = d.codes(&wire);
    assert_eq!(
        codes,
        [
            "250 HELP",
            "235 2.7.0",
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0"
        ]
    );
    let origin = &d.stored[0].envelope.origin;
    assert_eq!(
        (origin.protocol.as_str(), origin.auth.as_deref()),
        ("ESMTPSA", Some("alice"))
    );
    // Loopback: AUTH before TLS is taken.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let mut wire = b"EHLO c\r\n".to_vec();
    wire.extend(auth_plain("alice", "s3cret"));
    wire.extend_from_slice(b"MAIL FROM:<a@b.test> SMTPUTF8\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    wire.extend_from_slice(MSG);
    assert_eq!(d.codes(&wire)[1], "235 2.7.0");
    assert_eq!(d.stored[0].envelope.origin.protocol, "UTF8SMTPA");
}

/// RFC 3207 section 4.2: what was learnt before TLS is forgotten, the
/// authentication too.
#[test]
fn starttls_forgets_the_authentication() {
    let mut d = Driver::new(submission(), "127.0.0.1");
    let mut wire = b"EHLO c\r\n".to_vec();
    wire.extend(auth_plain("alice", "s3cret"));
    wire.extend_from_slice(b"STARTTLS\r\n");
    assert_eq!(d.codes(&wire)[1..], ["235 2.7.0", "220 2.0.0"]);
    assert_eq!(d.session.user(), None);
    let replies = d.send(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\n");
    assert!(replies[0].contains("AUTH PLAIN LOGIN"));
    assert!(replies[1].starts_with("530 5.7.0"));
}

/// Port 465 (RFC 8314): TLS from the first byte. No STARTTLS is offered
/// or taken, AUTH is, and the envelope says ESMTPSA.
#[test]
fn implicit_tls_session() {
    let mut d = Driver::implicit_tls(submission(), OUTSIDE);
    assert!(d.session.is_tls());
    let ehlo = d.send(b"EHLO c\r\n").remove(0);
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        d.send(b"STARTTLS\r\n"),
        ["503 5.5.1 Error: TLS already active"]
    );
    let mut wire = auth_plain("alice", "s3cret");
    wire.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n");
    wire.extend_from_slice(MSG);
    assert_eq!(
        d.codes(&wire),
        [
            "235 2.7.0",
            "250 2.1.0",
            "250 2.1.5",
            "354 End d",
            "250 2.0.0"
        ]
    );
    let origin = &d.stored[0].envelope.origin;
    assert_eq!(origin.protocol, "ESMTPSA");
    assert_eq!(origin.tls.as_deref(), Some("TLSv1.3"));
}

/// RFC 4954 section 4: the AUTH command line is held to the command line
/// limit (512 here); a longer initial response gets `500 5.5.6`, and the
/// rest of the line is read and dropped, never run.
#[test]
fn an_initial_response_over_the_command_line_limit() {
    let mut d = Driver::new(submission(), "127.0.0.1");
    d.send(b"EHLO c\r\n");
    let mut wire = b"AUTH PLAIN ".to_vec();
    wire.extend(std::iter::repeat_n(b'A', 20 * 1024));
    wire.extend_from_slice(b"\r\nNOOP\r\n");
    let replies = d.send(&wire);
    assert_eq!(
        replies,
        [
            "500 5.5.6 Authentication exchange line is too long (limit 512 octets for AUTH, 12288 for a response after 334)",
            "250 2.0.0 Ok"
        ]
    );
    assert!(d.auths.is_empty());
    // In pieces, the same: nothing of the line is kept waiting for its end.
    let mut d = Driver::new(submission(), "127.0.0.1");
    d.send(b"EHLO c\r\nAUTH PLAIN ");
    for _ in 0..20 {
        assert!(d.send(&[b'A'; 1024]).is_empty());
    }
    assert_eq!(d.codes(b"\r\nNOOP\r\n"), ["500 5.5.6", "250 2.0.0"]);
    // Where AUTH is not offered, a long AUTH line is any long line.
    let mut d = Driver::local();
    assert_eq!(d.codes(&wire), ["500 5.5.2", "250 2.0.0"]);
}

/// RFC 4954 section 4: a response line after 334 may be 12288 octets
/// (CRLF not counted); a longer one fails the exchange with 500 5.5.6.
#[test]
fn response_lines_up_to_12288_octets() {
    assert_eq!(RESPONSE_LIMIT, 12_288);
    // 9216 octets encode to exactly 12288.
    let password = "p".repeat(9216 - "\0alice\0".len());
    let longest = b64(format!("\0alice\0{password}").as_bytes());
    assert_eq!(longest.len(), RESPONSE_LIMIT);
    let mut d = Driver::new(submission(), "127.0.0.1");
    d.send(b"EHLO c\r\nAUTH PLAIN\r\n");
    assert_eq!(d.codes(format!("{longest}\r\n").as_bytes()), ["535 5.7.8"]);
    assert_eq!(d.auths, [format!("PLAIN alice {password}")]);
    // One octet more.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let wire = format!("EHLO c\r\nAUTH LOGIN\r\n{longest}A\r\nNOOP\r\n");
    let replies = d.send(wire.as_bytes());
    assert!(replies[2].starts_with("500 5.5.6 Authentication exchange line is too long"));
    assert_eq!(replies[3], "250 2.0.0 Ok", "{replies:?}");
    assert!(d.auths.is_empty());
    // A bare LF ends the session here as in a command.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let codes = d.codes(b"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\nNOOP\r\n");
    assert_eq!(codes[1..], ["334 VXNlc", "500 5.5.2"]);
    assert!(d.closed);
}

/// AUTH is not a pipelinable command (RFC 2920 section 3.1: an extension
/// command ends a group; RFC 4954 section 4: the client waits for 334).
/// The session reads a client that did not wait in order, as Postfix
/// does, never dropping input (RFC 2920 section 3.2): the lines after
/// AUTH are its responses, and the commands after the exchange run only
/// once the verdict is in, so they run as exactly what it decided.
#[test]
fn input_pipelined_after_auth_runs_in_order_after_the_verdict() {
    let mut d = Driver::new(submission(), "127.0.0.1");
    let mut wire = b"EHLO c\r\n".to_vec();
    wire.extend(auth_plain("alice", "wrong"));
    wire.extend_from_slice(b"MAIL FROM:<a@b.test>\r\n");
    wire.extend(auth_plain("alice", "s3cret"));
    wire.extend_from_slice(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@far.test>\r\n");
    assert_eq!(
        d.codes(&wire)[1..],
        [
            "535 5.7.8",
            "530 5.7.0",
            "235 2.7.0",
            "250 2.1.0",
            "250 2.1.5"
        ]
    );
    // LOGIN's two responses sent at once with the command.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let wire = format!(
        "EHLO c\r\nAUTH LOGIN\r\n{}\r\n{}\r\nNOOP\r\n",
        b64(b"alice"),
        b64(b"s3cret")
    );
    let whole = d.codes(wire.as_bytes());
    assert_eq!(
        whole[1..],
        ["334 VXNlc", "334 UGFzc", "235 2.7.0", "250 2.0.0"]
    );
    // Byte by byte, the same.
    let mut d = Driver::new(submission(), "127.0.0.1");
    let bytewise: Vec<String> = wire
        .as_bytes()
        .iter()
        .flat_map(|b| d.codes(&[*b]))
        .collect();
    assert_eq!(bytewise, whole);
}

/// Failed AUTHs are errors: `max_errors` (5) of them close the session,
/// as Postfix counts them toward its error limit.
#[test]
fn failed_auths_count_toward_max_errors() {
    let mut d = Driver::new(submission(), "127.0.0.1");
    d.send(b"EHLO c\r\n");
    let mut wire = Vec::new();
    for _ in 0..6 {
        wire.extend(auth_plain("alice", "guess"));
    }
    let codes = d.codes(&wire);
    assert_eq!(
        codes,
        [
            "535 5.7.8",
            "535 5.7.8",
            "535 5.7.8",
            "535 5.7.8",
            "535 5.7.8",
            "421 4.7.0"
        ]
    );
    assert!(d.closed);
    assert_eq!(d.auths.len(), 5);
}

/// RFC 4954 section 5: AUTH= on MAIL is taken as xtext and dropped; it
/// authenticates nothing and never names the envelope's user.
#[test]
fn the_auth_parameter_of_mail_is_checked_and_ignored() {
    let mut d = Driver::new(submission(), "127.0.0.1");
    let codes = d.codes(b"EHLO c\r\nMAIL FROM:<a@b.test> AUTH=alice+40b.test\r\n");
    assert_eq!(codes[1], "530 5.7.0");
    let mut wire = auth_plain("Alice", "s3cret");
    wire.extend_from_slice(
        b"MAIL FROM:<a@b.test> AUTH=bob+40b.test\r\nRCPT TO:<x@local.test>\r\nDATA\r\n",
    );
    wire.extend_from_slice(MSG);
    wire.extend_from_slice(
        b"MAIL FROM:<a@b.test> AUTH=<>\r\nRSET\r\nMAIL FROM:<a@b.test> AUTH=a+0Db\r\n",
    );
    let codes = d.codes(&wire);
    assert_eq!(
        codes,
        [
            "235 2.7.0",
            "250 2.1.0",
            "250 2.1.5",
            "354 End d",
            "250 2.0.0",
            "250 2.1.0",
            "250 2.0.0",
            "501 5.5.4"
        ]
    );
    // The user is the one the verdict named, not the one typed or the
    // parameter's.
    assert_eq!(d.stored[0].envelope.origin.auth.as_deref(), Some("alice"));
    // Where AUTH is not offered, the parameter is unknown.
    let mut mx = Driver::local();
    assert_eq!(
        mx.codes(b"EHLO c\r\nMAIL FROM:<a@b.test> AUTH=<>\r\n")[1],
        "555 5.5.4"
    );
}

/// The password never shows in Debug output of the session or its steps.
#[test]
fn debug_output_never_shows_a_password() {
    let config = Arc::new(submission());
    let mut session = Session::new(
        config,
        Arc::new(Admission::default()),
        "127.0.0.1".parse().unwrap(),
    );
    let encoded = b64(b"hunter2");
    let mut input =
        BytesMut::from(format!("EHLO c\r\nAUTH LOGIN {}\r\n{encoded}\r\n", b64(b"alice")).as_str());
    let mut seen = String::new();
    loop {
        let step = session.poll(&mut input);
        seen.push_str(&format!("{step:?} {step:#?} {session:?}\n"));
        match step {
            Step::Authenticate(c) => {
                assert_eq!(c.password.expose(), "hunter2");
                seen.push_str(&format!("{c:?} {:?}", c.password));
                break;
            }
            Step::Reply(_) => {}
            other => panic!("{other:?}"),
        }
    }
    seen.push_str(&format!("{session:?}"));
    assert!(
        seen.contains("alice") && seen.contains("redacted"),
        "{seen}"
    );
    assert!(
        !seen.contains("hunter2") && !seen.contains(&encoded),
        "{seen}"
    );
    // A session polled without the verdict answers as if the check failed
    // for want of a database: never as a success.
    let step = session.poll(&mut input);
    assert!(
        matches!(step, Step::Reply(ref r) if r.code == 454),
        "{step:?}"
    );
    assert_eq!(session.user(), None);
    // A verdict nobody asked for is ignored.
    assert!(matches!(
        session.authenticated(AuthVerdict::Accepted {
            user: "alice".into()
        }),
        Step::NeedInput
    ));
    assert_eq!(session.user(), None);
}

/// The user name goes into envelopes: a verdict naming a user with a
/// control character is not taken.
#[test]
fn a_user_name_with_a_control_character_is_not_taken() {
    let config = Arc::new(submission());
    let mut session = Session::new(
        config,
        Arc::new(Admission::default()),
        "127.0.0.1".parse().unwrap(),
    );
    let mut input = BytesMut::from(format!("EHLO c\r\nAUTH PLAIN {}\r\n", b64(b"\0a\0b")).as_str());
    assert!(matches!(session.poll(&mut input), Step::Reply(_)));
    assert!(matches!(session.poll(&mut input), Step::Authenticate(_)));
    let step = session.authenticated(AuthVerdict::Accepted {
        user: "a\r\nb".into(),
    });
    assert!(
        matches!(step, Step::Reply(ref r) if r.code == 454),
        "{step:?}"
    );
    assert_eq!(session.user(), None);
}

/// alice may send as alice@a.test, write From: anyone at a.test, and
/// send one message an hour.
#[derive(Debug, Default)]
struct OneAddressOneMessage {
    sent: std::sync::atomic::AtomicU32,
}

impl mta_smtp::SenderPolicy for OneAddressOneMessage {
    fn may_send_as(&self, user: &str, address: &str) -> bool {
        user == "alice" && address == "alice@a.test"
    }
    fn may_write_as(&self, user: &str, address: &str) -> bool {
        user == "alice" && address.to_ascii_lowercase().ends_with("@a.test")
    }
    fn admit_message(&self, _user: &str) -> Result<(), u32> {
        let before = self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if before < 1 {
            Ok(())
        } else {
            Err(1)
        }
    }
}

/// RFC 6409 section 6.1: the envelope sender must be the user's own,
/// the From: header in its domain; over its hourly rate a user gets
/// 450 4.7.1. A client that did not authenticate is not asked about.
#[test]
fn an_authenticated_user_sends_only_as_itself_and_within_its_rate() {
    let config = SessionConfig {
        sender_policy: Some(Arc::new(OneAddressOneMessage::default())),
        ..auth_optional()
    };
    let mut d = Driver::new(config, OUTSIDE);
    d.send(b"EHLO c\r\n");
    let mut wire = auth_plain("alice", "s3cret");
    wire.extend_from_slice(b"MAIL FROM:<bob@a.test>\r\n");
    let replies = d.send(&wire);
    assert_eq!(
        replies[1],
        "553 5.7.1 <bob@a.test>: Sender address rejected: not owned by user alice"
    );
    // Her own address; a From: outside her domain is refused at the end
    // of the text, and nothing is stored.
    let replies = d.send(
        b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n\
          From: Boss <boss@b.test>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n",
    );
    assert_eq!(replies[0], "250 2.1.0 Sender <alice@a.test> ok");
    assert_eq!(
        replies[3],
        "553 5.7.1 <boss@b.test>: From/Sender address rejected: not owned by user alice"
    );
    assert!(d.stored.is_empty());
    // The one message of her hour was counted at MAIL: the next is over.
    let replies = d.send(b"MAIL FROM:<alice@a.test>\r\n");
    assert_eq!(
        replies[0],
        "450 4.7.1 Error: alice has sent 1 messages in the last hour, try again later"
    );
    // Without AUTH the policy is not asked (relaying is refused anyway).
    let config = SessionConfig {
        sender_policy: Some(Arc::new(OneAddressOneMessage::default())),
        ..auth_optional()
    };
    let mut d = Driver::new(config, "127.0.0.1");
    let replies = d.send(b"EHLO c\r\nMAIL FROM:<bob@b.test>\r\n");
    assert_eq!(replies[1], "250 2.1.0 Sender <bob@b.test> ok");
}

#[test]
fn a_from_in_the_users_domain_is_stored() {
    let config = SessionConfig {
        sender_policy: Some(Arc::new(OneAddressOneMessage::default())),
        ..auth_optional()
    };
    let mut d = Driver::new(config, OUTSIDE);
    let mut wire = b"EHLO c\r\n".to_vec();
    wire.extend_from_slice(&auth_plain("alice", "s3cret"));
    wire.extend_from_slice(
        b"MAIL FROM:<alice@a.test>\r\nRCPT TO:<x@far.test>\r\nDATA\r\n\
          From: Team <team@A.TEST>\r\nSender: alice@a.test\r\nSubject: hi\r\n\r\nhello\r\n.\r\n",
    );
    let replies = d.send(&wire);
    assert!(
        replies.last().unwrap().starts_with("250 2.0.0"),
        "{replies:?}"
    );
    assert_eq!(d.stored.len(), 1);
}
