//! SMTPUTF8 (RFC 6531) and 8BITMIME (RFC 6152) on delivery, end to end:
//! what goes to a next hop that lacks the extension, and what fails with
//! which status. Peers: the testkit sink with SMTPUTF8 or 8BITMIME turned
//! off, and Postfix's smtp-sink (which never offers SMTPUTF8, and with
//! `-8` not 8BITMIME either). DSNs are read with Python's `email` package,
//! a parser that owes nothing to ours.

use std::process::{Command, Stdio};

use mta_testkit::dns::Zone;
use mta_testkit::sink::{Received, SinkConfig};

use crate::delivery::{event, example_zone, free_port, ip, sinks, Setup, SmtpSink, WAIT};
use crate::util::wait_until;

/// An all-ASCII message.
const ASCII: &str =
    "From: alice@local.test\r\nTo: bob@example.test\r\nSubject: plain\r\n\r\nHello.\r\n";

/// UTF-8 in the Subject, an ASCII body.
const UTF8_SUBJECT: &str =
    "From: alice@local.test\r\nTo: bob@example.test\r\nSubject: Gr\u{fc}\u{df}e\r\n\r\nHello.\r\n";

/// ASCII headers, UTF-8 in the body (an 8-bit MIME body, RFC 6152).
const EIGHT_BIT_BODY: &str = "From: alice@local.test\r\nTo: bob@example.test\r\nSubject: body\r\n\
     MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
     Content-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e.\r\n";

/// MAIL (with its parameters), the recipients and DATA; the queue id.
fn submit(s: &Setup, mail: &str, rcpts: &[&str], content: &str) -> String {
    let mut c = s.mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd(&format!("MAIL FROM:{mail}"), "250");
    for rcpt in rcpts {
        c.cmd(&format!("RCPT TO:<{rcpt}>"), "250");
    }
    c.cmd("DATA", "354");
    c.send(content.as_bytes());
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
    r.text().rsplit(' ').next().unwrap().to_owned()
}

/// Reads a DSN with Python's `email` package and prints what a program
/// reading it would see: the report type, and the fields of every
/// recipient block. `message/delivery-status` comes as a list of blocks;
/// `message/global-delivery-status` (RFC 6533) as one message whose header
/// is the first block and whose body holds the others.
const DSN_READER: &str = r#"
import email, json, re, sys
# UTF-8 header fields (RFC 6532) read as text, not as 8-bit bytes.
msg = email.message_from_string(sys.stdin.buffer.read().decode("utf-8"))
blocks = []
for part in msg.walk():
    if part.get_content_type() not in ("message/delivery-status", "message/global-delivery-status"):
        continue
    for block in part.get_payload():
        blocks.append({k: str(v) for k, v in block.items()})
        rest = block.get_payload()
        if isinstance(rest, str):
            for chunk in re.split(r"\r?\n\r?\n", rest.strip()):
                if chunk.strip():
                    fields = email.message_from_string(chunk)
                    blocks.append({k: str(v) for k, v in fields.items()})
print(json.dumps({
    "content_type": msg.get_content_type(),
    "report_type": msg.get_param("report-type"),
    "recipients": [b for b in blocks if "Final-Recipient" in b],
}))
"#;

/// True when python3 is there; otherwise says the test is skipped (and
/// fails in CI, where it must be).
fn have_python(test: &str) -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is missing in CI: {test} reads DSNs with Python's email package"
        );
        eprintln!("skipped: {test} needs python3 to read DSNs");
    }
    ok
}

/// The DSN as Python's `email` package reads it (see [`DSN_READER`]).
pub(crate) fn read_dsn(dsn: &[u8]) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", DSN_READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(dsn).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 could not read the DSN: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(dsn)
    );
    serde_json::from_slice(&out.stdout).expect("the reader prints JSON")
}

/// The one DSN in alice@local.test's Maildir, read by Python.
fn alice_dsn(s: &Setup) -> serde_json::Value {
    let files = s.wait_maildir("local.test", "alice", 1);
    assert_eq!(files.len(), 1, "one DSN");
    read_dsn(&std::fs::read(&files[0]).unwrap())
}

/// `(Final-Recipient, Action, Status)` of each recipient block.
fn statuses(dsn: &serde_json::Value) -> Vec<(String, String, String)> {
    assert_eq!(dsn["content_type"], "multipart/report", "{dsn}");
    dsn["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipient blocks: {dsn}"))
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().trim().to_owned();
            (field("Final-Recipient"), field("Action"), field("Status"))
        })
        .collect()
}

fn no_smtputf8() -> SinkConfig {
    SinkConfig {
        smtputf8: false,
        ..SinkConfig::default()
    }
}

fn mail_commands(commands: &[(usize, String)]) -> Vec<&str> {
    commands
        .iter()
        .filter(|(_, c)| c.to_ascii_uppercase().starts_with("MAIL"))
        .map(|(_, c)| c.as_str())
        .collect()
}

/// Some clients set SMTPUTF8 whenever it is offered. When nothing in the
/// envelope or the headers needs it, a next hop without it still gets the
/// message, without the parameter, as Postfix does (it was bounced 5.6.7).
#[test]
fn an_ascii_message_flagged_smtputf8_goes_without_the_flag_to_a_hop_lacking_it() {
    let (port, sinks) = sinks(&[ip(2)], no_smtputf8);
    let s = Setup::start(example_zone(), port, "");
    let id = submit(
        &s,
        "<alice@local.test> SMTPUTF8",
        &["bob@example.test"],
        ASCII,
    );
    s.wait_log("delivered", |e| event(e, "delivered", &id));
    let got: Vec<Received> = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, ["bob@example.test"]);
    assert!(
        !got[0].mail_params.to_ascii_uppercase().contains("SMTPUTF8"),
        "MAIL had SMTPUTF8: {:?}",
        got[0].mail_params
    );
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: plain"));
    assert!(
        s.maildir_messages("local.test", "alice").is_empty(),
        "a DSN"
    );
}

/// A UTF-8 recipient cannot be named to a hop without SMTPUTF8: it fails
/// with 5.6.7. Another recipient of the same message, ASCII, with ASCII
/// headers, is delivered all the same (it used to fail 5.6.7 with it).
#[test]
fn a_utf8_recipient_fails_5_6_7_and_an_ascii_one_of_the_same_message_is_delivered() {
    if !have_python("a_utf8_recipient_fails_5_6_7") {
        return;
    }
    let (port, sinks) = sinks(&[ip(2)], no_smtputf8);
    let s = Setup::start(example_zone(), port, "");
    let id = submit(
        &s,
        "<alice@local.test> SMTPUTF8",
        &["j\u{f6}rg@example.test", "bob@example.test"],
        ASCII,
    );
    s.wait_log("bob delivered", |e| {
        event(e, "delivered", &id) && e["recipient"] == "bob@example.test"
    });
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, ["bob@example.test"]);
    assert!(!got[0].mail_params.to_ascii_uppercase().contains("SMTPUTF8"));
    let dsn = alice_dsn(&s);
    let reported = statuses(&dsn);
    assert_eq!(reported.len(), 1, "only the failed recipient: {dsn}");
    let (recipient, action, status) = &reported[0];
    assert!(recipient.contains("j\u{f6}rg@example.test"), "{dsn}");
    assert_eq!(action, "failed", "{dsn}");
    assert_eq!(status, "5.6.7", "{dsn}");
    // Nobody named the UTF-8 recipient to the server.
    let commands = sinks[0].commands();
    assert!(
        !commands.iter().any(|(_, c)| c.contains("j\u{f6}rg")),
        "{commands:?}"
    );
}

/// A UTF-8 sender cannot be named to a hop without SMTPUTF8: every
/// recipient fails 5.6.7, and the DSN goes back to the sender (over a hop
/// that offers SMTPUTF8). This was already so; kept as a guard.
#[test]
fn a_utf8_sender_fails_5_6_7_for_every_recipient() {
    if !have_python("a_utf8_sender_fails_5_6_7") {
        return;
    }
    let (port, sinks) = sinks(&[ip(2)], no_smtputf8);
    let (_, home) = crate::delivery::sinks(&[ip(3)], SinkConfig::default);
    let routes = format!("[delivery.routes]\n\"utf8.test\" = \"{}\"\n", home[0].addr);
    let s = Setup::start(example_zone(), port, &routes);
    let id = submit(
        &s,
        "<\u{e5}sa@utf8.test> SMTPUTF8",
        &["bob@example.test", "carol@example.test"],
        ASCII,
    );
    s.wait_log("the DSN", |e| event(e, "bounced", &id));
    let got = home[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, ["\u{e5}sa@utf8.test"]);
    assert!(got[0].mail_params.contains("SMTPUTF8"), "{:?}", got[0]);
    let dsn = read_dsn(&got[0].data);
    let reported = statuses(&dsn);
    assert_eq!(reported.len(), 2, "{dsn}");
    for (_, action, status) in &reported {
        assert_eq!(action, "failed", "{dsn}");
        assert_eq!(status, "5.6.7", "{dsn}");
    }
    assert!(mail_commands(&sinks[0].commands()).is_empty());
}

/// UTF-8 in the header section with an ASCII envelope: the message itself
/// cannot be carried, so 5.6.9 (RFC 6531's "UTF-8 header message cannot
/// be transferred to one or more recipients"), not 5.6.7 (which speaks of
/// addresses).
#[test]
fn a_utf8_subject_with_an_ascii_envelope_fails_5_6_9() {
    if !have_python("a_utf8_subject_fails_5_6_9") {
        return;
    }
    let (port, sinks) = sinks(&[ip(2)], no_smtputf8);
    let s = Setup::start(example_zone(), port, "");
    submit(
        &s,
        "<alice@local.test> SMTPUTF8",
        &["bob@example.test"],
        UTF8_SUBJECT,
    );
    let dsn = alice_dsn(&s);
    assert_eq!(
        statuses(&dsn),
        [(
            "rfc822; bob@example.test".to_owned(),
            "failed".to_owned(),
            "5.6.9".to_owned()
        )],
        "{dsn}"
    );
    assert!(mail_commands(&sinks[0].commands()).is_empty());
}

/// The same messages to a hop that offers SMTPUTF8 go with the parameter:
/// nothing is downgraded when it need not be.
#[test]
fn a_hop_offering_smtputf8_gets_every_flagged_message_with_the_parameter() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let s = Setup::start(example_zone(), port, "");
    let mail = "<alice@local.test> SMTPUTF8";
    let ids = [
        submit(&s, mail, &["bob@example.test"], ASCII),
        submit(&s, mail, &["j\u{f6}rg@example.test"], ASCII),
        submit(&s, mail, &["bob@example.test"], UTF8_SUBJECT),
        submit(
            &s,
            "<\u{e5}sa@local.test> SMTPUTF8",
            &["bob@example.test"],
            ASCII,
        ),
    ];
    for id in &ids {
        s.wait_log("delivered", |e| event(e, "delivered", id));
    }
    let got = sinks[0].wait_for_messages_blocking(ids.len(), WAIT);
    assert_eq!(got.len(), ids.len());
    for m in &got {
        assert!(m.mail_params.contains("SMTPUTF8"), "{m:?}");
    }
    assert!(got
        .iter()
        .any(|m| String::from_utf8_lossy(&m.data).contains("Subject: Gr\u{fc}\u{df}e")));
}

/// RFC 6152: 8-bit text never goes to a server that does not offer
/// 8BITMIME. It fails with 5.6.3 (conversion required but not supported)
/// instead of being sent; an ASCII message declared BODY=8BITMIME goes,
/// without the parameter.
#[test]
fn an_8bit_body_fails_5_6_3_at_a_hop_without_8bitmime_and_ascii_goes() {
    if !have_python("an_8bit_body_fails_5_6_3") {
        return;
    }
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        eightbitmime: false,
        ..SinkConfig::default()
    });
    let s = Setup::start(example_zone(), port, "");
    let ascii = submit(
        &s,
        "<alice@local.test> BODY=8BITMIME",
        &["bob@example.test"],
        ASCII,
    );
    s.wait_log("the ASCII message delivered", |e| {
        event(e, "delivered", &ascii)
    });
    let eight = submit(
        &s,
        "<alice@local.test> BODY=8BITMIME",
        &["carol@example.test"],
        EIGHT_BIT_BODY,
    );
    s.wait_log("the 8-bit message bounced", |e| event(e, "bounced", &eight));
    let dsn = alice_dsn(&s);
    assert_eq!(
        statuses(&dsn),
        [(
            "rfc822; carol@example.test".to_owned(),
            "failed".to_owned(),
            "5.6.3".to_owned()
        )],
        "{dsn}"
    );
    let got = sinks[0].messages();
    assert_eq!(got.len(), 1, "only the ASCII message: {got:?}");
    assert!(!got[0].mail_params.to_ascii_uppercase().contains("BODY"));
    let commands = sinks[0].commands();
    assert_eq!(mail_commands(&commands).len(), 1, "{commands:?}");
}

/// `eightbit_without_8bitmime = "send"` sends 8-bit text anyway, as
/// sendmail's pass8 and Exim do, for a next hop known to take it (one
/// behind a firewall that hides the EHLO keywords).
#[test]
fn eightbit_without_8bitmime_send_delivers_8bit_text_anyway() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        eightbitmime: false,
        ..SinkConfig::default()
    });
    let s = Setup::start_with(
        example_zone(),
        port,
        "eightbit_without_8bitmime = \"send\"",
        "",
    );
    let id = submit(
        &s,
        "<alice@local.test> BODY=8BITMIME",
        &["bob@example.test"],
        EIGHT_BIT_BODY,
    );
    s.wait_log("delivered", |e| event(e, "delivered", &id));
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert!(!got[0].mail_params.to_ascii_uppercase().contains("BODY"));
    assert!(String::from_utf8_lossy(&got[0].data).contains("Gr\u{fc}\u{df}e."));
}

/// Postfix's smtp-sink, an independent server, offers no SMTPUTF8: an
/// ASCII message flagged SMTPUTF8 reaches it without the flag. With `-8`
/// it offers no 8BITMIME either: an 8-bit body fails 5.6.3 there.
#[test]
fn postfix_smtp_sink_gets_flagged_ascii_mail_and_no_8bit_text_without_8bitmime() {
    let Some(smtp_sink) = SmtpSink::program() else {
        return;
    };
    if !have_python("postfix_smtp_sink_smtputf8") {
        return;
    }
    // smtp-sink drops privileges to nobody before it writes its dumps.
    use std::os::unix::fs::PermissionsExt;
    let dumps = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let seven_dumps = tempfile::tempdir().unwrap();
    std::fs::set_permissions(seven_dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port(ip(5));
    let _plain = SmtpSink::start(smtp_sink, ip(5), port, dumps.path(), &[]);
    let seven_port = free_port(ip(6));
    let _seven = SmtpSink::start(smtp_sink, ip(6), seven_port, seven_dumps.path(), &["-8"]);
    let zone = Zone::new()
        .mx("postfix.test", 10, "sink.postfix.test")
        .a("sink.postfix.test", ip(5));
    let routes = format!(
        "[delivery.routes]\n\"seven.test\" = \"{}:{seven_port}\"\n",
        ip(6)
    );
    let s = Setup::start(zone, port, &routes);

    let id = submit(
        &s,
        "<alice@local.test> SMTPUTF8",
        &["x@postfix.test"],
        ASCII,
    );
    s.wait_log("delivered to smtp-sink", |e| event(e, "delivered", &id));
    let mut dump = String::new();
    wait_until("smtp-sink's dump", WAIT, || {
        let files: Vec<_> = std::fs::read_dir(dumps.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        match files.first() {
            Some(f) => {
                dump = std::fs::read_to_string(f).unwrap_or_default();
                dump.contains("Subject: plain")
            }
            None => false,
        }
    });
    let mail_args = dump
        .lines()
        .find_map(|l| l.strip_prefix("X-Mail-Args: "))
        .unwrap_or_else(|| panic!("no X-Mail-Args in the dump:\n{dump}"));
    assert!(
        !mail_args.to_ascii_uppercase().contains("SMTPUTF8"),
        "{mail_args}"
    );

    let eight = submit(
        &s,
        "<alice@local.test> BODY=8BITMIME",
        &["y@seven.test"],
        EIGHT_BIT_BODY,
    );
    s.wait_log("the 8-bit message bounced", |e| event(e, "bounced", &eight));
    let dsn = alice_dsn(&s);
    assert_eq!(
        statuses(&dsn),
        [(
            "rfc822; y@seven.test".to_owned(),
            "failed".to_owned(),
            "5.6.3".to_owned()
        )],
        "{dsn}"
    );
    assert_eq!(std::fs::read_dir(seven_dumps.path()).unwrap().count(), 0);
}
