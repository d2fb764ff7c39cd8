//! Fuzz targets for `Session::poll`: random byte streams, arbitrary and
//! shaped like SMTP, fed in random chunkings.
//!
//! Properties: the session never panics; every reply is well formed (a
//! 2xx-5xx code, an enhanced code of the same class, no CR or LF inside a
//! line); every stored message keeps the invariants the rest of the MTA
//! relies on (no control character in any envelope string, no bare CR or
//! LF or NUL in the content, within the size limit); and framing does not
//! depend on how the bytes were split into reads: the same bytes, whole,
//! byte by byte or in random pieces, give the same replies and messages.
//! That last one is what SMTP smuggling and pipelining bugs break.
//! With AUTH offered (the submission role, or AUTH as an option), also:
//! the credentials' `Debug` never shows the password; a message relayed
//! for an outside client, or taken by the submission role, comes from an
//! authenticated session; and the envelope's user is the verdict's.
//!
//! Each target runs for `MTA_FUZZ_SECS` seconds (3 by default; see
//! `mta_testkit::fuzz`); `tests/fuzz.sh` runs them longer.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::BytesMut;
use mta_envelope::{Envelope, QueueId, ReversePath};
use mta_smtp::{
    Admission, AuthPolicy, AuthVerdict, Credentials, LocalRecipients, Reply, Session,
    SessionConfig, Step, StoreError,
};
use mta_testkit::{fuzz, regressions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseResult;

/// What the session asked for, in order; the run stops at a close or at
/// STARTTLS (after which the buffered input is discarded by design, so
/// chunking matters from there on).
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Reply(String),
    Close(String),
    StartTls(String),
    /// The session asked to check these: mechanism and user name.
    Authenticate(String),
    /// The envelope (as JSON, without the arrival time) and the content.
    Stored(String, Vec<u8>),
}

/// One case: the server's settings and the client's bytes.
#[derive(Debug, Clone)]
struct Setup {
    max_message_size: usize,
    max_errors: u32,
    tls_available: bool,
    storage_ok: bool,
    peer: IpAddr,
    /// Every n-th store fails (0: none).
    fail_every: u64,
    /// `recipient_overshoot_limit`.
    overshoot: usize,
    /// A local recipient list holding only `u` (else none).
    listed: bool,
    /// AUTH: not offered, the submission role, or offered without TLS
    /// and not required.
    auth: Role,
    /// TLS before the banner (port 465).
    implicit_tls: bool,
}

/// Which AUTH policy a case runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Mx,
    Submission,
    Optional,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![Just(300usize), Just(2_000), Just(100_000)],
        prop_oneof![Just(1u32), 2..6u32, Just(20)],
        any::<bool>(),
        prop::bool::weighted(0.9),
        prop::sample::select(vec!["127.0.0.1", "192.0.2.7", "::1", "2001:db8::1"]),
        prop_oneof![Just(0u64), 1..4u64],
        (
            prop_oneof![Just(0usize), 1..3usize, Just(1000)],
            any::<bool>(),
        ),
        (
            prop::sample::select(vec![Role::Mx, Role::Submission, Role::Optional]),
            prop::bool::weighted(0.2),
        ),
    )
        .prop_map(
            |(
                max_message_size,
                max_errors,
                tls_available,
                storage_ok,
                peer,
                fail_every,
                (overshoot, listed),
                (auth, implicit_tls),
            )| Setup {
                max_message_size,
                max_errors,
                tls_available,
                storage_ok,
                peer: peer.parse().unwrap(),
                fail_every,
                overshoot,
                listed,
                auth,
                implicit_tls,
            },
        )
}

fn session(s: &Setup) -> Session {
    let config = SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: s.max_message_size,
        max_recipients: 3,
        recipient_overshoot_limit: s.overshoot,
        max_command_line: 512,
        max_line_length: 1000,
        max_errors: s.max_errors,
        tls_available: s.tls_available,
        local_domains: vec!["local.test".into()],
        local_recipients: s.listed.then(|| {
            let mut list = LocalRecipients::new();
            list.insert("u".into(), None);
            list
        }),
        relay_networks: vec!["127.0.0.0/8".parse().unwrap()],
        auth: match s.auth {
            Role::Mx => None,
            Role::Submission => Some(AuthPolicy::submission()),
            Role::Optional => Some(AuthPolicy {
                require_tls: false,
                required_for_mail: false,
                ..AuthPolicy::submission()
            }),
        },
        sender_policy: None,
    };
    let admission = Arc::new(Admission::default());
    admission.set_storage_ok(s.storage_ok);
    let mut session = Session::new(Arc::new(config), admission, s.peer);
    if s.implicit_tls {
        session.tls_started("TLSv1.3".into());
    }
    session
}

/// The verdict on some credentials: a pure function of them, so that
/// every chunking gets the same.
fn verdict(c: &Credentials) -> AuthVerdict {
    match c.password.expose() {
        "s3cret" => AuthVerdict::Accepted {
            user: c.authcid.clone(),
        },
        "ctl" => AuthVerdict::Accepted {
            user: "a\nb".into(),
        },
        "down" => AuthVerdict::Unavailable,
        "lock" => AuthVerdict::LockedOut,
        _ => AuthVerdict::Rejected,
    }
}

/// The credentials' Debug form names the mechanism and the user only.
fn check_credentials(c: &Credentials) -> TestCaseResult {
    let shown = format!("{c:?}");
    let expected = format!(
        "Credentials {{ mechanism: {:?}, authcid: {:?}, password: \"<redacted>\" }}",
        c.mechanism, c.authcid
    );
    prop_assert_eq!(shown, expected);
    prop_assert!(!c.authcid.is_empty() && !has_control(&c.authcid));
    prop_assert!(!c.password.expose().is_empty());
    Ok(())
}

/// Checks one reply: the code, the enhanced code, the wire form.
fn check_reply(r: &Reply) -> TestCaseResult {
    prop_assert!((200..600).contains(&r.code), "reply code {}", r.code);
    prop_assert!(!r.lines.is_empty());
    if let Some(status) = r.status {
        let parts: Vec<&str> = status.split('.').collect();
        prop_assert_eq!(parts.len(), 3, "enhanced code {}", status);
        prop_assert!(
            parts
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit())),
            "enhanced code {}",
            status
        );
        // RFC 3463: the class is the reply code's first digit.
        prop_assert_eq!(
            parts[0],
            (r.code / 100).to_string(),
            "{} with {}",
            r.code,
            status
        );
    }
    let mut wire = Vec::new();
    r.write_to(&mut wire);
    prop_assert!(wire.ends_with(b"\r\n"));
    let lines: Vec<&[u8]> = wire[..wire.len() - 2].split(|&b| b == b'\n').collect();
    prop_assert_eq!(lines.len(), r.lines.len(), "a line of {:?} holds a LF", r);
    for (i, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        prop_assert!(!line.contains(&b'\r'), "a line of {:?} holds a CR", r);
        let code = r.code.to_string();
        prop_assert!(line.starts_with(code.as_bytes()));
        let sep = if i + 1 == lines.len() { b' ' } else { b'-' };
        prop_assert_eq!(line.get(3), Some(&sep), "{:?}", r);
    }
    Ok(())
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// The invariants of a message the session hands over for storing.
fn check_message(s: &Setup, envelope: &Envelope, content: &[u8]) -> TestCaseResult {
    // ARCHITECTURE: no string in an envelope holds CR, LF or another
    // control character.
    if let ReversePath::Mailbox(m) = &envelope.sender {
        prop_assert!(!has_control(&m.local) && !has_control(&m.domain), "{:?}", m);
    }
    prop_assert!(!envelope.recipients.is_empty());
    prop_assert!(envelope.recipients.len() <= 3, "over max_recipients");
    for r in &envelope.recipients {
        // A local recipient names a mailbox (and a listed one, with a
        // list): nothing taken can fail at delivery for its name.
        let a = &r.address;
        if a.domain.is_empty() || a.domain.eq_ignore_ascii_case("local.test") {
            let name = mta_envelope::mailbox_name(&a.local);
            prop_assert!(name.is_some(), "{:?}", a);
            if s.listed {
                prop_assert!(
                    matches!(name.as_deref(), Some("u" | "postmaster")),
                    "{:?}",
                    a
                );
            }
        }
        prop_assert!(
            !has_control(&r.address.local) && !has_control(&r.address.domain),
            "{:?}",
            r
        );
        prop_assert!(!r.orcpt.as_deref().is_some_and(has_control), "{:?}", r);
    }
    prop_assert!(!envelope.envid.as_deref().is_some_and(has_control));
    prop_assert!(!has_control(&envelope.origin.helo), "{:?}", envelope.origin);
    // The user is one a verdict accepted, and the protocol says so.
    let origin = &envelope.origin;
    prop_assert!(
        !origin.auth.as_deref().is_some_and(has_control),
        "{:?}",
        origin
    );
    if origin.auth.is_some() && origin.protocol.starts_with("E") {
        prop_assert!(origin.protocol.ends_with('A'), "{:?}", origin);
    }
    if origin.auth.is_none() {
        prop_assert!(!origin.protocol.ends_with('A'), "{:?}", origin);
    }
    // The submission role takes mail from authenticated clients only, and
    // no role relays for an outside client that did not authenticate.
    if s.auth == Role::Submission {
        prop_assert!(origin.auth.is_some(), "{:?}", origin);
    }
    let trusted = s.peer.is_ipv4() && s.peer.is_loopback();
    if !trusted && origin.auth.is_none() {
        for r in &envelope.recipients {
            let d = &r.address.domain;
            prop_assert!(
                d.is_empty() || d.eq_ignore_ascii_case("local.test"),
                "relayed to {:?} for {:?}",
                r.address,
                origin
            );
        }
    }
    // The text: CRLF lines only, no NUL, within the limit, ending with a
    // line end.
    prop_assert!(content.len() <= s.max_message_size + 2);
    prop_assert!(!content.contains(&0));
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' {
            prop_assert!(i > 0 && content[i - 1] == b'\r', "bare LF at {}", i);
        }
        if b == b'\r' {
            prop_assert_eq!(content.get(i + 1), Some(&b'\n'), "bare CR at {}", i);
        }
    }
    prop_assert!(content.is_empty() || content.ends_with(b"\r\n"));
    Ok(())
}

/// Feeds `wire` in pieces cut at `cuts` (offsets, in any order), as a
/// connection would: append what was read, poll until more is needed.
fn drive(s: &Setup, wire: &[u8], cuts: &[usize]) -> Result<Vec<Event>, TestCaseError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(wire.len());
    points.sort_unstable();
    points.dedup();
    let mut session = session(s);
    check_reply(&session.banner())?;
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut stores = 0u64;
    let mut from = 0;
    for to in points {
        input.extend_from_slice(&wire[from..to]);
        from = to;
        loop {
            match session.poll(&mut input) {
                Step::NeedInput => break,
                Step::Reply(r) => {
                    check_reply(&r)?;
                    events.push(Event::Reply(r.to_string()));
                }
                Step::Close(r) => {
                    check_reply(&r)?;
                    events.push(Event::Close(r.to_string()));
                    return Ok(events);
                }
                Step::StartTls(r) => {
                    check_reply(&r)?;
                    events.push(Event::StartTls(r.to_string()));
                    return Ok(events);
                }
                Step::Store(m) => {
                    check_message(s, &m.envelope, &m.content)?;
                    let mut envelope = m.envelope;
                    envelope.arrival = 0;
                    events.push(Event::Stored(
                        serde_json::to_string(&envelope).unwrap(),
                        m.content,
                    ));
                    stores += 1;
                    let result = if s.fail_every > 0 && stores.is_multiple_of(s.fail_every) {
                        Err(StoreError::NoSpace)
                    } else {
                        Ok(QueueId::new(stores))
                    };
                    let r = session.stored(result);
                    check_reply(&r)?;
                    events.push(Event::Reply(r.to_string()));
                }
                Step::Authenticate(c) => {
                    check_credentials(&c)?;
                    events.push(Event::Authenticate(format!(
                        "{} {}",
                        c.mechanism, c.authcid
                    )));
                    let verdict = verdict(&c);
                    drop(c);
                    match session.authenticated(verdict) {
                        Step::Reply(r) => {
                            check_reply(&r)?;
                            events.push(Event::Reply(r.to_string()));
                        }
                        Step::Close(r) => {
                            check_reply(&r)?;
                            events.push(Event::Close(r.to_string()));
                            return Ok(events);
                        }
                        other => prop_assert!(false, "a verdict gave {:?}", other),
                    }
                }
            }
        }
    }
    Ok(events)
}

/// The same bytes in three chunkings: whole, byte by byte, and at `cuts`.
fn chunking_independent(s: &Setup, wire: &[u8], cuts: &[usize]) -> TestCaseResult {
    let whole = drive(s, wire, &[])?;
    let bytewise: Vec<usize> = (0..=wire.len()).collect();
    let by_byte = drive(s, wire, &bytewise)?;
    prop_assert_eq!(&whole, &by_byte, "whole vs byte by byte");
    let pieces = drive(s, wire, cuts)?;
    prop_assert_eq!(&whole, &pieces, "whole vs pieces");
    Ok(())
}

// ---- shaped input ----------------------------------------------------

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::sample::select(items).prop_map(str::to_owned)
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "a@b.test",
            "u@local.test",
            "U@LOCAL.TEST",
            "x@far.test",
            "postmaster",
            "",
            "\"q u\"@local.test",
            "\"a\\\"b\"@local.test",
            "jö@local.test",
            "a@[127.0.0.1]",
            "a@[IPv6:::1]",
            "a@@b",
            "@x.test:a@b.test",
            "a@b.test>",
            "<a@b.test",
            "a b@c.test",
            "a@-b.test",
            "a..b@c.test",
            "\"../x\"@local.test",
            "\"u\"@local.test",
            "a/b@local.test",
            "PostMaster@local.test",
            "v@local.test",
        ]),
        "[a-z.\"@\\[\\]:<> ü\\\\-]{0,40}",
    ]
}

fn mail_param() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "SIZE=100",
            "SIZE=99999999999999999999999",
            "SIZE=",
            "SIZE=-1",
            "BODY=8BITMIME",
            "BODY=7BIT",
            "BODY=BINARYMIME",
            "SMTPUTF8",
            "SMTPUTF8=1",
            "RET=FULL",
            "RET=HDRS",
            "RET=X",
            "ENVID=abc+2B",
            "ENVID=+0D+0A",
            "ENVID=+00",
            "ENVID=+ZZ",
            "AUTH=<>",
            "AUTH=a+40b.test",
            "AUTH=+0D",
            "AUTH",
            "X-UNKNOWN",
        ]),
        "[A-Z]{1,6}(=[a-zA-Z0-9+]{0,12})?",
    ]
}

fn rcpt_param() -> impl Strategy<Value = String> {
    prop_oneof![
        pick(&[
            "NOTIFY=NEVER",
            "NOTIFY=SUCCESS,FAILURE",
            "NOTIFY=DELAY",
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=",
            "ORCPT=rfc822;a@b.test",
            "ORCPT=rfc822;a+0Ab@b.test",
            "ORCPT=rfc822;a+0D+0A@b.test",
            "ORCPT=rfc822;+7F",
            "ORCPT=x",
        ]),
        "[A-Z]{1,6}(=[a-zA-Z0-9+;@.]{0,16})?",
    ]
}

/// Message text: lines made of pieces that matter to the framing (dots,
/// CR, LF, NUL) among ordinary text, sometimes with a header section.
fn text() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => pick(&["Subject: x", "From: a@b.test", "", "hello", "a line of text", " folded"]),
        2 => Just(".".to_owned()),
        2 => Just("..".to_owned()),
        1 => Just(".\r".to_owned()),
        1 => Just("\r".to_owned()),
        1 => Just("\n".to_owned()),
        1 => Just("\0".to_owned()),
        1 => Just("\r\n.\n".to_owned()),
        1 => Just("\n.\r\n".to_owned()),
        1 => Just("\r.\r".to_owned()),
        1 => Just("MAIL FROM:<evil@x.test>".to_owned()),
        1 => Just("x".repeat(1000)),
    ];
    let line = prop::collection::vec(piece, 0..4).prop_map(|p| p.concat());
    (any::<bool>(), prop::collection::vec(line, 0..12)).prop_map(|(headers, lines)| {
        let mut t = Vec::new();
        if headers {
            t.extend_from_slice(b"Subject: fuzz\r\n\r\n");
        }
        for l in lines {
            t.extend_from_slice(l.as_bytes());
            t.extend_from_slice(b"\r\n");
        }
        t
    })
}

/// One command (or a piece of raw input), with its line end.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let end = prop_oneof![
        20 => Just("\r\n"),
        1 => Just("\n"),
        1 => Just("\r"),
        1 => Just(""),
    ];
    let command = prop_oneof![
        3 => pick(&["EHLO c.test", "HELO c.test", "EHLO", "EHLO [127.0.0.1]", "ehlo ü.test", "HELO a b"]),
        4 => (address(), prop::collection::vec(mail_param(), 0..3))
            .prop_map(|(a, p)| format!("MAIL FROM:<{a}> {}", p.join(" ")).trim_end().to_owned()),
        4 => (address(), prop::collection::vec(rcpt_param(), 0..3))
            .prop_map(|(a, p)| format!("RCPT TO:<{a}> {}", p.join(" ")).trim_end().to_owned()),
        2 => pick(&["MAIL FROM: <a@b.test>", "MAIL FROM:a@b.test", "RCPT TO:postmaster", "MAIL TO:<a@b.test>", "RCPT FROM:<a@b.test>"]),
        1 => pick(&["RSET", "NOOP", "NOOP x", "VRFY u", "EXPN list", "HELP", "HELP DATA", "QUIT", "STARTTLS", "STARTTLS x", "data", "BDAT", "BDAT x", "BDAT -1", "BDAT 99999999999999999999999", "XYZZY", ""]),
        1 => "[ -~]{0,30}",
        1 => Just("NOOP ".to_owned() + &"y".repeat(600)),
        4 => auth_line(),
    ];
    let line = (command, end).prop_map(|(c, e)| format!("{c}{e}").into_bytes());
    let data = (
        text(),
        prop_oneof![
            8 => Just(&b".\r\n"[..]),
            1 => Just(&b"\n.\n"[..]),
            1 => Just(&b".\n"[..]),
            1 => Just(&b""[..]),
        ],
    )
        .prop_map(|(mut t, end)| {
            // Not dot-stuffed: a line of its own that is a lone dot ends
            // the text early, and the rest runs as commands, as it must.
            let mut wire = b"DATA\r\n".to_vec();
            wire.append(&mut t);
            wire.extend_from_slice(end);
            wire
        })
        .boxed();
    let bdat = (
        text(),
        any::<bool>(),
        prop_oneof![4 => Just(0i64), 1 => -3..4i64],
    )
        .prop_map(|(t, last, skew)| {
            let n = (t.len() as i64 + skew).max(0);
            let mut wire = format!("BDAT {n}{}\r\n", if last { " LAST" } else { "" }).into_bytes();
            wire.extend_from_slice(&t);
            wire
        })
        .boxed();
    // A transaction that is likely to get as far as the text.
    let transaction = (
        prop::collection::vec(mail_param(), 0..2),
        prop::sample::select(vec![
            "u@local.test",
            "x@far.test",
            "postmaster",
            "\"../x\"@local.test",
            "v@local.test",
        ]),
        prop_oneof![data.clone(), bdat.clone(), chunks()],
    )
        .prop_map(|(params, rcpt, text)| {
            let mut wire = format!(
                "MAIL FROM:<a@b.test> {}\r\nRCPT TO:<{rcpt}>\r\n",
                params.join(" ")
            )
            .into_bytes();
            wire.extend_from_slice(&text);
            wire
        });
    prop_oneof![
        12 => line,
        3 => data,
        2 => bdat,
        6 => transaction,
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// An AUTH command or a response line of an exchange: PLAIN and LOGIN
/// with right, wrong and malformed data, cancellation, long lines.
fn auth_line() -> impl Strategy<Value = String> {
    use base64::Engine;
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let user = prop::sample::select(vec!["alice", "bob", "", "a\rb", "ü"]);
    let password = prop::sample::select(vec!["s3cret", "wrong", "down", "lock", "ctl", ""]);
    let authzid = prop::sample::select(vec!["", "alice", "someone"]);
    prop_oneof![
        2 => (authzid, user.clone(), password.clone()).prop_map(move |(z, u, p)| {
            format!("AUTH PLAIN {}", b64(format!("{z}\0{u}\0{p}").as_bytes()))
        }),
        1 => (user.clone(), password.clone()).prop_map(move |(u, p)| {
            b64(format!("\0{u}\0{p}").as_bytes())
        }),
        2 => user.prop_map(move |u| b64(u.as_bytes())),
        2 => password.prop_map(move |p| b64(p.as_bytes())),
        2 => pick(&[
            "AUTH PLAIN", "AUTH LOGIN", "auth login", "AUTH PLAIN =", "AUTH LOGIN =",
            "AUTH CRAM-MD5", "AUTH", "AUTH PLAIN a b", "AUTH PLAIN !!!", "*", "=", "",
            "AHU=AHU=", "AGFsaWNlAP/+", "YWxpY2U=", "czNjcmV0",
        ]),
        1 => (prop_oneof![Just(""), Just("AUTH PLAIN ")], 500..13_000usize)
            .prop_map(|(head, n)| format!("{head}{}", "A".repeat(n))),
    ]
}

/// Text sent in several BDAT chunks, the last one LAST (or not).
fn chunks() -> impl Strategy<Value = Vec<u8>> {
    (
        text(),
        prop::collection::vec(any::<usize>(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(t, cuts, last)| {
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (t.len() + 1)).collect();
            points.push(0);
            points.push(t.len());
            points.sort_unstable();
            points.dedup();
            let mut wire = Vec::new();
            let n = points.len() - 1;
            for (i, w) in points.windows(2).enumerate() {
                let piece = &t[w[0]..w[1]];
                let flag = if last && i + 1 == n { " LAST" } else { "" };
                wire.extend_from_slice(format!("BDAT {}{flag}\r\n", piece.len()).as_bytes());
                wire.extend_from_slice(piece);
            }
            wire
        })
}

/// A session's worth of input: usually a greeting (and, where AUTH is
/// offered, often a successful one: PLAIN, or LOGIN pipelined) and a
/// transaction, then anything.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![
            Just(&b"EHLO c.test\r\n"[..]),
            Just(&b"HELO c\r\n"[..]),
            Just(&b""[..]),
            Just(&b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n"[..]),
            Just(&b"EHLO c.test\r\nAUTH LOGIN\r\nYWxpY2U=\r\nczNjcmV0\r\n"[..]),
        ],
        prop::collection::vec(piece(), 0..16),
    )
        .prop_map(|(hello, pieces)| {
            let mut wire = hello.to_vec();
            for p in pieces {
                wire.extend_from_slice(&p);
            }
            wire
        })
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..24)
}

#[test]
fn session_on_arbitrary_bytes_never_panics_and_replies_well() {
    fuzz::check(
        regressions!("session_arbitrary_bytes"),
        (setup(), prop::collection::vec(any::<u8>(), 0..2048), cuts()),
        |(s, wire, cuts)| {
            drive(&s, &wire, &cuts)?;
            Ok(())
        },
    );
}

#[test]
fn session_on_arbitrary_bytes_after_a_transaction_opens() {
    // Garbage that starts where a parser is most stateful: inside a
    // transaction, after DATA, after a BDAT command, inside AUTH.
    let prefix = prop::sample::select(vec![
        &b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\n"[..],
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\n",
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nBDAT 40\r\n",
        b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nBDAT 10 LAST\r\n",
        // Inside an AUTH exchange, where AUTH is offered.
        b"EHLO c\r\nAUTH PLAIN\r\n",
        b"EHLO c\r\nAUTH LOGIN\r\n",
        b"EHLO c\r\nAUTH LOGIN YWxpY2U=\r\n",
    ]);
    fuzz::check(
        regressions!("session_arbitrary_in_transaction"),
        (
            setup(),
            prefix,
            prop::collection::vec(any::<u8>(), 0..1024),
            cuts(),
        ),
        |(s, prefix, rest, cuts)| {
            let mut wire = prefix.to_vec();
            wire.extend_from_slice(&rest);
            chunking_independent(&s, &wire, &cuts)
        },
    );
}

#[test]
fn session_framing_does_not_depend_on_chunking() {
    fuzz::check(
        regressions!("session_chunking"),
        (setup(), stream(), cuts()),
        |(s, wire, cuts)| chunking_independent(&s, &wire, &cuts),
    );
}
