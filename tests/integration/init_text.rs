//! What mta-init prints for people (issue 11, points 7 and 8): `queue
//! show` as an operator reads it, in local time, rather than the stored
//! envelope's JSON; and a `status` that says only true things about the
//! last stop and lines up its SERVICES table.

use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{bin, init, list, text, wait_until, Mtad, Workdir};

const WAIT: Duration = Duration::from_secs(60);

/// `mta-init --config <the workdir's> ARGS` with `TZ` set.
fn init_tz(work: &Workdir, tz: &str, args: &[&str]) -> Output {
    Command::new(bin("mta-init"))
        .arg("--config")
        .arg(work.config_path())
        .args(args)
        .env_remove("MTA_CONFIG")
        .env("TZ", tz)
        .output()
        .expect("run mta-init")
}

/// `unix` as `date(1)` writes it in `tz`: an oracle independent of
/// mta-init's own conversion.
fn date_in(tz: &str, unix: u64) -> String {
    let o = Command::new("date")
        .env("TZ", tz)
        .arg("-d")
        .arg(format!("@{unix}"))
        .arg("+%Y-%m-%d %H:%M:%S %z")
        .output()
        .expect("run date");
    assert!(o.status.success(), "date: {}", text(&o));
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

/// The value of the first line `label:` (after the colon, trimmed).
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
}

/// Issue 11, point 7: `queue show` printed the envelope as internal JSON
/// (`"body": "seven_bit"`, the arrival as a Unix time, nested address
/// objects) and said "1 attempts".
#[test]
fn queue_show_prints_the_envelope_as_an_operator_reads_it() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd(
        "MAIL FROM:<alice@b.test> BODY=8BITMIME RET=HDRS ENVID=QQ314159",
        "250",
    );
    c.cmd(
        "RCPT TO:<x@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@remote.test",
        "250",
    );
    c.cmd("RCPT TO:<y@remote.test>", "250");
    c.cmd("DATA", "354");
    c.send(b"From: alice@b.test\r\nSubject: shown\r\n\r\nHello.\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    let id = r.text().rsplit(' ').next().unwrap().to_owned();
    c.cmd("QUIT", "221");
    // remote.test is a closed port: one attempt, deferred, then an hour.
    wait_until("the first attempt", WAIT, || {
        list(&work, &[])
            .iter()
            .any(|m| m["id"] == id.as_str() && m["attempts"] == 1)
    });
    let row = list(&work, &[])
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .unwrap();
    let arrival = row["arrival"].as_u64().unwrap();
    let size = row["size"].as_u64().unwrap();

    let o = init_tz(&work, "UTC", &["queue", "show", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!out.contains('{') && !out.contains('"'), "JSON:\n{out}");
    assert!(
        !out.contains("seven_bit") && !out.contains("eight_bit"),
        "{out}"
    );
    assert_eq!(field(&out, "sender"), "alice@b.test", "{out}");
    assert_eq!(field(&out, "size"), format!("{size} bytes"), "{out}");
    assert!(
        field(&out, "arrival").starts_with(&format!("{} (UTC)", date_in("UTC", arrival))),
        "{out}"
    );
    assert_eq!(
        field(&out, "client"),
        "127.0.0.1, HELO client.test",
        "{out}"
    );
    assert_eq!(field(&out, "protocol"), "ESMTP", "{out}");
    assert_eq!(field(&out, "body type"), "8BITMIME", "{out}");
    assert_eq!(field(&out, "SMTPUTF8"), "no", "{out}");
    assert_eq!(field(&out, "DSN"), "RET=HDRS ENVID=QQ314159", "{out}");
    assert!(
        field(&out, "attempts").starts_with("1; next attempt"),
        "{out}"
    );
    // Each recipient with its status and its DSN parameters.
    let x = out
        .lines()
        .position(|l| l.trim_start().starts_with("x@remote.test"))
        .unwrap_or_else(|| panic!("no line for x@remote.test:\n{out}"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[x].contains("deferred") && lines[x].contains("1 attempt "),
        "{out}"
    );
    assert_eq!(
        lines[x + 1].trim(),
        "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@remote.test",
        "{out}"
    );
    assert!(
        lines[x + 2].trim_start().starts_with("y@remote.test"),
        "{out}"
    );
    assert!(!out.contains("1 attempts"), "{out}");
    assert!(
        out.contains("HISTORY") && out.contains("Subject: shown"),
        "{out}"
    );

    // The arrival in the machine's local time, whatever TZ says; a zone
    // given as a POSIX rule needs no time zone database.
    let mut zones = vec![("IST-5:30", "+0530")];
    if std::path::Path::new("/usr/share/zoneinfo/Asia/Kolkata").exists() {
        zones.push(("Asia/Kolkata", "+0530"));
    } else {
        eprintln!("note: no /usr/share/zoneinfo/Asia/Kolkata; TZ=Asia/Kolkata not tried");
    }
    for (tz, offset) in zones {
        let o = init_tz(&work, tz, &["queue", "show", &id]);
        assert!(o.status.success(), "{}", text(&o));
        let out = String::from_utf8(o.stdout).unwrap();
        let expected = date_in(tz, arrival);
        assert!(expected.ends_with(offset), "date says {expected}");
        assert!(
            field(&out, "arrival").starts_with(&format!("{expected} (IST)")),
            "TZ={tz}, expected {expected}:\n{out}"
        );
    }

    // --json is still JSON, with the stored envelope.
    let o = init_tz(&work, "UTC", &["queue", "show", "--json", &id]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["message"]["id"], id.as_str(), "{v}");
    assert_eq!(v["envelope"]["arrival"], arrival, "{v}");
    assert_eq!(v["envelope"]["body"], "eight_bit_mime", "{v}");
    assert_eq!(
        v["envelope"]["recipients"][0]["orcpt"], "rfc822;x@remote.test",
        "{v}"
    );

    // The listing says "1 attempt" too.
    let o = init(&work, &["queue", "list"]);
    let out = text(&o);
    assert!(
        out.contains("1 attempt;") && !out.contains("1 attempts"),
        "{out}"
    );
    assert!(out.contains("in 1 message."), "{out}");
}

/// The `last stop:` line of `mta-init status`.
fn last_stop(work: &Workdir) -> String {
    let o = init(work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    field(&out, "last stop").to_owned()
}

fn send_one(mtad: &Mtad, subject: &str) {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message(
        "a@b.test",
        &["x@remote.test"],
        &crate::util::message(subject),
    );
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
}

/// Issue 11, point 8: a brand-new queue said `last stop: not clean`, and
/// a queue whose index was deleted while stopped said `clean` though its
/// index had just been rebuilt from the spool files (the holds, histories
/// and paused domains the index kept were gone).
#[test]
fn status_tells_a_new_queue_a_crash_a_clean_stop_and_a_rebuilt_index_apart() {
    let work = Workdir::new();
    work.write_config("", "");

    let mtad = Mtad::start(&work);
    let said = last_stop(&work);
    assert!(
        said.contains("new queue") && !said.contains("clean"),
        "a brand-new queue: {said:?}"
    );
    let (_, v) = crate::util::status_json(&work);
    assert_eq!(v["daemon"]["spool_open"]["last_stop"], "new", "{v}");
    send_one(&mtad, "kept through everything");
    mtad.kill9();

    let mtad = Mtad::start(&work);
    let said = last_stop(&work);
    assert!(said.starts_with("not clean"), "after kill -9: {said:?}");
    assert!(mtad.terminate().success());
    assert!(work.queue().join("clean").exists(), "no clean marker");

    let mtad = Mtad::start(&work);
    assert_eq!(last_stop(&work), "clean", "after a clean stop");
    assert!(mtad.terminate().success());

    // The operator deletes the index of a cleanly stopped queue.
    assert!(work.queue().join("clean").exists(), "no clean marker");
    std::fs::remove_dir_all(work.queue().join("index")).unwrap();
    let mtad = Mtad::start(&work);
    let said = last_stop(&work);
    assert!(
        said.contains("rebuilt") && said != "clean",
        "index deleted: {said:?}"
    );
    let (_, v) = crate::util::status_json(&work);
    assert_eq!(v["daemon"]["spool_open"]["index"], "missing", "{v}");
    wait_until("the rescan", WAIT, || list(&work, &[]).len() == 1);
    drop(mtad);
}

/// Issue 11, point 8: `bounce-runner up` overflowed the SERVICES table's
/// name column, pushing its state out of line with the others.
#[test]
fn status_services_table_columns_line_up() {
    let work = Workdir::new();
    work.write_config("", "");
    let _mtad = Mtad::start(&work);
    let o = init(&work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let table: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "SERVICES")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let header = table.first().unwrap_or_else(|| panic!("no table:\n{out}"));
    let state_at = header.find("STATE").unwrap();
    let detail_at = header.find("DETAIL").unwrap();
    assert!(table.len() >= 8, "{out}");
    for row in &table[1..] {
        // The name ends before the STATE column, the state before DETAIL.
        let name = row.get(..state_at).unwrap_or(row);
        let state = row.get(state_at..detail_at).unwrap_or("");
        assert!(
            name.ends_with(' ') && !name.trim().contains(' '),
            "name column of {row:?} in\n{out}"
        );
        assert!(
            state.ends_with(' ')
                && ["up", "down", "draining", "paused", "degraded"].contains(&state.trim_end()),
            "state column of {row:?} in\n{out}"
        );
    }
    assert!(table.iter().any(|r| r.contains("bounce-runner")), "{out}");
}
