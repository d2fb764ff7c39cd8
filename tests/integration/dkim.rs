//! DKIM signing end to end: keys made by `mta-init dkim keygen`, the
//! real mtad signing at acceptance, a sink receiving what it relays, and
//! every signature verified by dkimpy (python3-dkim), an implementation
//! independent of ours.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mta_testkit::sink::{Received, Sink, SinkConfig};

use crate::util::{init, outside, spool_contents, wait_until, Client, Mtad, Workdir};

const WAIT: Duration = Duration::from_secs(30);

/// The verifier, or None (outside CI) when dkimpy is missing.
fn verifier() -> Option<PathBuf> {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import dkim"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-dkim is missing (tests/install-peers.sh installs it)"
        );
        eprintln!("skipped: python3-dkim is missing");
        return None;
    }
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/dkim_verify.py"))
}

/// A key made by `mta-init dkim keygen`: its `[[dkim.sign]]` table and
/// the record it told us to publish.
struct Key {
    table: String,
    name: String,
    record: String,
}

fn keygen(work: &Workdir, domain: &str, selector: &str, algorithm: &str) -> Key {
    let path = work.path().join(format!("{domain}.{selector}.pem"));
    if !work.config_path().exists() {
        work.write_config("", "");
    }
    let out = init(
        work,
        &[
            "dkim",
            "keygen",
            "--domain",
            domain,
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--out",
            path.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The zone line: the record's value in quoted strings of <= 255.
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{selector}._domainkey.{domain}. IN TXT")))
        .unwrap_or_else(|| panic!("no record in {text}"));
    let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
    assert!(strings.iter().all(|s| s.len() <= 255), "{line}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640, "the key's mode");
    Key {
        table: format!(
            "[[dkim.sign]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nkey = {:?}\nalgorithm = \"{algorithm}\"\n",
            path.display().to_string()
        ),
        name: format!("{selector}._domainkey.{domain}"),
        record: strings.concat(),
    }
}

/// dkimpy's verdict on each signature: (d, s, ok), in header order.
fn verify(script: &Path, dir: &Path, message: &[u8], keys: &[&Key]) -> Vec<(String, String, bool)> {
    let file = dir.join("verify.eml");
    std::fs::write(&file, message).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(&file);
    for k in keys {
        cmd.arg(format!("{}={}", k.name, k.record));
    }
    let out = cmd.output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["d"].as_str().unwrap().to_owned(),
                v["s"].as_str().unwrap().to_owned(),
                v["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// mtad relaying `dest.test` and `example.com` to `sink`, relaying for
/// 127.0.0.1 only, with the given `[[dkim.sign]]` tables.
fn config(work: &Workdir, sink: &Sink, tables: &str) {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             relay_networks = [\"127.0.0.1/32\"]\nmax_message_size = \"30MB\"\n\
             [delivery]\nname_servers = [\"127.0.0.1:9\"]\ndns_timeout = \"1s\"\n\
             [delivery.routes]\n\"dest.test\" = \"{0}\"\n\"example.com\" = \"{0}\"\n\
             [queue]\nretry_base = \"1h\"\npostmaster = \"postmaster@example.com\"\n{tables}",
            sink.addr
        ),
    );
}

fn sink() -> Sink {
    Sink::start_in_background(SinkConfig::default()).expect("sink")
}

fn dkim_fields(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap();
    let mut fields: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push_str("\r\n");
                last.push_str(line);
            }
        } else {
            fields.push(line.to_owned());
        }
    }
    fields
        .into_iter()
        .filter(|f| f.to_ascii_lowercase().starts_with("dkim-signature:"))
        .collect()
}

fn all_verify(found: &[(String, String, bool)], expected: &[(&str, &str)]) {
    let got: Vec<(&str, &str)> = found
        .iter()
        .map(|(d, s, _)| (d.as_str(), s.as_str()))
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got_sorted, want, "{found:?}");
    assert!(found.iter().all(|(_, _, ok)| *ok), "{found:?}");
}

fn wait_for(sink: &Sink, n: usize) -> Vec<Received> {
    let got = sink.wait_for_messages_blocking(n, WAIT);
    assert_eq!(got.len(), n, "messages at the sink");
    got
}

#[test]
fn relayed_mail_is_signed_and_dkimpy_verifies_every_form() {
    let Some(script) = verifier() else { return };
    let work = Workdir::new();
    let rsa = keygen(&work, "example.com", "r2026", "rsa-sha256");
    let ed = keygen(&work, "example.com", "e2026", "ed25519-sha256");
    let sink = sink();
    config(&work, &sink, &format!("{}{}", rsa.table, ed.table));
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");

    // Folded header fields, odd spacing, trailing blank lines.
    let folded = "From: Joe Example\r\n <joe@example.com>\r\nTo: ann@dest.test,\r\n\tbob@dest.test\r\n\
                  Subject:   a   long\r\n  folded   subject \r\nDate: Sun, 6 Dec 2026 12:00:00 +0000\r\n\
                  Message-ID: <f1@example.com>\r\n\r\nLine one  \r\n\r\nLine three\twith tab\r\n\r\n\r\n";
    let r = c.send_message("joe@example.com", &["ann@dest.test"], folded);
    assert_eq!(r.code, 250, "{}", r.text());

    // 8-bit body.
    c.cmd("MAIL FROM:<joe@example.com> BODY=8BITMIME", "250");
    c.cmd("RCPT TO:<ann@dest.test>", "250");
    c.cmd("DATA", "354");
    c.send("From: joe@example.com\r\nSubject: 8bit\r\n\r\nÄrger über Öl, 10 €\r\n.\r\n".as_bytes());
    assert_eq!(c.reply().code, 250);

    // SMTPUTF8: UTF-8 addresses and header fields (RFC 6532).
    c.cmd("MAIL FROM:<jöran@example.com> SMTPUTF8", "250");
    c.cmd("RCPT TO:<ann@dest.test>", "250");
    c.cmd("DATA", "354");
    c.send("From: Jöran <jöran@example.com>\r\nSubject: grüße\r\n\r\nhej\r\n.\r\n".as_bytes());
    assert_eq!(c.reply().code, 250);

    // BDAT in two chunks, split inside the header.
    c.cmd("MAIL FROM:<joe@example.com>", "250");
    c.cmd("RCPT TO:<ann@dest.test>", "250");
    let (a, b) = (
        "From: joe@exa",
        "mple.com\r\nSubject: bdat\r\n\r\nchunked\r\n",
    );
    c.send(format!("BDAT {}\r\n{a}", a.len()).as_bytes());
    assert_eq!(c.reply().code, 250);
    c.send(format!("BDAT {} LAST\r\n{b}", b.len()).as_bytes());
    assert_eq!(c.reply().code, 250);

    // 20 MB.
    let mut big = String::from("From: joe@example.com\r\nSubject: big\r\n\r\n");
    let line = format!("{}\r\n", "0123456789".repeat(9));
    while big.len() < 20 * 1024 * 1024 {
        big.push_str(&line);
    }
    let r = c.send_message("joe@example.com", &["ann@dest.test"], &big);
    assert_eq!(r.code, 250, "{}", r.text());
    c.cmd("QUIT", "221");

    let got = wait_for(&sink, 5);
    let dir = work.path();
    for m in &got {
        let found = verify(&script, dir, &m.data, &[&rsa, &ed]);
        all_verify(
            &found,
            &[("example.com", "r2026"), ("example.com", "e2026")],
        );
        // The signatures are on top, above our Received:.
        assert!(m.data.starts_with(b"DKIM-Signature: "), "signatures on top");
    }
    // A changed body fails.
    let mut tampered = got[0].data.clone();
    let at = tampered.len() - 5;
    tampered[at] ^= 0x01;
    let found = verify(&script, dir, &tampered, &[&rsa, &ed]);
    assert!(found.iter().all(|(_, _, ok)| !ok), "{found:?}");
    assert!(!mtad.log().contains("could not sign"));
    // The delivery log says who signed, on the received and the
    // delivered lines.
    let log = delivery_log(&work);
    for event in ["received", "delivered"] {
        let lines: Vec<_> = log.iter().filter(|e| e["event"] == event).collect();
        assert_eq!(lines.len(), 5, "{event}");
        for e in lines {
            assert_eq!(e["dkim"], "example.com:r2026,example.com:e2026", "{e}");
        }
    }
}

fn delivery_log(work: &Workdir) -> Vec<serde_json::Value> {
    crate::delivery::delivery_log(&work.queue().join("delivery.log"))
}

#[test]
fn a_queued_message_keeps_its_one_signature_across_kill_rescan_and_key_rotation() {
    let Some(script) = verifier() else { return };
    let work = Workdir::new();
    let old = keygen(&work, "example.com", "old", "ed25519-sha256");
    let new = keygen(&work, "example.com", "new", "ed25519-sha256");
    let sink = sink();
    sink.set_data_reply(451, "4.3.0 not now");
    config(&work, &sink, &old.table);
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "joe@example.com",
        &["ann@dest.test"],
        "From: joe@example.com\r\nSubject: kept\r\n\r\nkept\r\n",
    );
    assert_eq!(r.code, 250);
    c.cmd("QUIT", "221");
    wait_until("the first attempt deferred", WAIT, || {
        sink.commands().iter().any(|(_, c)| c.starts_with("DATA"))
            && mtad.log().contains("deferred")
            || crate::util::queue(&work, &["list"]).contains("deferred")
    });
    // An unclean stop; the spool is read back by a rescan.
    mtad.kill9();
    let spooled = spool_contents(&work.queue());
    assert_eq!(spooled.len(), 1);
    let before = dkim_fields(&spooled[0].2);
    assert_eq!(before.len(), 1, "{before:?}");

    // The key rotates: the new selector replaces the old.
    config(&work, &sink, &new.table);
    let mtad = Mtad::start(&work);
    sink.set_data_reply(250, "2.0.0 ok");
    let out = init(&work, &["queue", "flush", "--all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = wait_for(&sink, 1);
    assert_eq!(
        dkim_fields(&got[0].data),
        before,
        "signed once, at acceptance"
    );
    let found = verify(&script, work.path(), &got[0].data, &[&old, &new]);
    all_verify(&found, &[("example.com", "old")]);

    // New mail is signed with the new key.
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "joe@example.com",
        &["ann@dest.test"],
        "From: joe@example.com\r\nSubject: after\r\n\r\nnew\r\n",
    );
    assert_eq!(r.code, 250);
    let got = wait_for(&sink, 2);
    let found = verify(&script, work.path(), &got[1].data, &[&old, &new]);
    all_verify(&found, &[("example.com", "new")]);
}

#[test]
fn only_our_mail_is_signed_and_dsns_are() {
    let Some(script) = verifier() else { return };
    let work = Workdir::new();
    let key = keygen(&work, "example.com", "s1", "ed25519-sha256");
    let sink = sink();
    sink.set_rcpt_reply("refused", 550, "5.1.1 no such user");
    config(&work, &sink, &key.table);
    let mtad = Mtad::start(&work);

    // From outside relay_networks, to a local mailbox: relayed in, not ours.
    let mut c = Client::connect_from(mtad.addr, outside());
    c.cmd("EHLO outside.test", "250");
    let r = c.send_message(
        "joe@example.com",
        &["user@local.test"],
        "From: joe@example.com\r\nSubject: inbound\r\n\r\nin\r\n",
    );
    assert_eq!(r.code, 250);
    let new = work.path().join("maildir/local.test/user/Maildir/new");
    wait_until("the local delivery", WAIT, || {
        std::fs::read_dir(&new).is_ok_and(|d| d.count() == 1)
    });
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        dkim_fields(&std::fs::read(file).unwrap()).is_empty(),
        "inbound mail signed"
    );

    // Ours, but From: a domain without a key: unsigned.
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "joe@nokey.test",
        &["ann@dest.test"],
        "From: joe@nokey.test\r\nSubject: no key\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let got = wait_for(&sink, 1);
    assert!(dkim_fields(&got[0].data).is_empty());

    // A bounce: our DSN comes from postmaster@example.com, and is signed.
    let r = c.send_message(
        "joe@example.com",
        &["refused@dest.test"],
        "From: joe@example.com\r\nSubject: bounce me\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let got = wait_for(&sink, 2);
    let dsn = &got[1];
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.rcpt_to, ["joe@example.com"]);
    let found = verify(&script, work.path(), &dsn.data, &[&key]);
    all_verify(&found, &[("example.com", "s1")]);
    let log = delivery_log(&work);
    let bounced = log
        .iter()
        .find(|e| e["event"] == "bounced")
        .expect("a bounced line");
    assert_eq!(bounced["dkim"], "example.com:s1", "{bounced}");
    // Inbound and unsigned mail has no dkim field.
    let local = log
        .iter()
        .find(|e| e["event"] == "delivered" && e["recipient"] == "user@local.test")
        .expect("the local delivery's line");
    assert!(local.get("dkim").is_none(), "{local}");
}

#[test]
fn a_key_that_cannot_be_used_stops_configtest_start_and_graceful() {
    let work = Workdir::new();
    let key = keygen(&work, "example.com", "s1", "ed25519-sha256");
    let sink = sink();
    let missing = "[[dkim.sign]]\ndomain = \"example.com\"\nselector = \"gone\"\nkey = \"/nonexistent/k.pem\"\n";
    config(&work, &sink, missing);
    let out = init(&work, &["configtest"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/k.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        Mtad::try_start(&work).is_err(),
        "mtad started with a missing key"
    );

    // An RSA key below RFC 8301's 1024 bits.
    let tiny = work.path().join("tiny.pem");
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-quiet",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:512",
            "-out",
        ])
        .arg(&tiny)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let small = format!(
        "[[dkim.sign]]\ndomain = \"example.com\"\nselector = \"tiny\"\nkey = {:?}\n",
        tiny.display().to_string()
    );
    config(&work, &sink, &small);
    let out = init(&work, &["configtest"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("512 bits"));

    // A running mtad refuses a reload to a broken key and keeps signing.
    config(&work, &sink, &key.table);
    let mtad = Mtad::start(&work);
    config(&work, &sink, missing);
    let out = init(&work, &["graceful"]);
    assert!(!out.status.success(), "graceful accepted a missing key");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "joe@example.com",
        &["ann@dest.test"],
        "From: joe@example.com\r\nSubject: still\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let got = wait_for(&sink, 1);
    assert_eq!(dkim_fields(&got[0].data).len(), 1);
}

#[test]
fn submitted_mail_is_signed_after_the_submission_fixes() {
    let Some(script) = verifier() else { return };
    let work = Workdir::new();
    let key = keygen(&work, "local.test", "sub", "rsa-sha256");
    let users = work.path().join("users");
    std::fs::write(
        &users,
        format!(
            "alice@local.test:{}\n",
            crate::util::sha512_crypt(crate::util::PASSWORD)
        ),
    )
    .unwrap();
    let s = crate::util::Submission::start_in(
        work,
        &format!(
            "users_file = {:?}\n{}",
            users.display().to_string(),
            key.table
        ),
    );
    // Loopback may authenticate on 587 without TLS.
    let mut c = Client::connect(s.submission());
    c.cmd("EHLO client.test", "250");
    c.cmd(
        &format!(
            "AUTH PLAIN {}",
            crate::util::plain("alice@local.test", crate::util::PASSWORD)
        ),
        "235",
    );
    // No Date: and no Message-ID: the submission role adds both, before
    // signing, so the signature covers them.
    let r = c.send_message(
        "alice@local.test",
        &["x@remote.test"],
        "From: alice@local.test\r\nTo: x@remote.test\r\nSubject: fixed\r\n\r\nhi\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.text());
    c.cmd("QUIT", "221");
    let dir = tempfile::tempdir().unwrap();
    let stored = s.stored();
    assert_eq!(stored.len(), 1);
    let content = stored[0].1.as_bytes();
    let text = &stored[0].1;
    assert!(text.contains("\r\nDate: "), "{text}");
    assert!(text.contains("\r\nMessage-ID: "), "{text}");
    let found = verify(&script, dir.path(), content, &[&key]);
    all_verify(&found, &[("local.test", "sub")]);
}
