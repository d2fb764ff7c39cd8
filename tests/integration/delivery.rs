//! Delivery end to end: the real mtad, a real DNS server (hickory-server)
//! and SMTP sinks on 127.0.0.x, Maildir, DSNs, retries, expiry, volatile
//! mode, and Postfix's smtp-sink. Nothing leaves loopback: the resolver is
//! pointed at the test DNS server and every destination is 127.0.0.x.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mail_parser::MimeHeaders;
use mta_testkit::dns::{TestDns, Zone};
use mta_testkit::sink::{Sink, SinkConfig};

use crate::util::{init, message, spool_contents, wait_until, Mtad, Workdir};

pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// `[delivery.dane]` for a test DNS that is not signed. Its root zone is
/// unsigned, which the real root never is: validated from the real root's
/// keys (DANE's default), every answer is bogus, so DANE, on by default,
/// would defer every delivery with 4.7.5. DANE's own tests sign their
/// zone and pass its key (`dane.rs`).
pub(crate) const NO_DANE: &str = "[delivery.dane]\nenabled = false";

/// Sinks that share one port on several loopback addresses, as MX hosts
/// of one outbound port do.
pub(crate) fn sinks(ips: &[Ipv4Addr], config: impl Fn() -> SinkConfig) -> (u16, Vec<Sink>) {
    for _ in 0..20 {
        let first = Sink::start_in_background(SinkConfig {
            addr: SocketAddr::from((ips[0], 0)),
            ..config()
        })
        .expect("sink");
        let port = first.addr.port();
        let mut all = vec![first];
        for ip in &ips[1..] {
            match Sink::start_in_background(SinkConfig {
                addr: SocketAddr::from((*ip, port)),
                ..config()
            }) {
                Ok(s) => all.push(s),
                Err(_) => break,
            }
        }
        if all.len() == ips.len() {
            return (port, all);
        }
    }
    panic!("no common free port for the sinks");
}

/// `example.test` with one MX host, `mx1.example.test`, at 127.0.0.2.
pub(crate) fn example_zone() -> Zone {
    Zone::new()
        .mx("example.test", 10, "mx1.example.test")
        .a("mx1.example.test", ip(2))
}

/// 127.0.0.`last`.
pub(crate) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

pub(crate) struct Setup {
    pub work: Workdir,
    _dns: TestDns,
    pub mtad: Mtad,
}

impl Setup {
    /// mtad with the resolver on the test DNS server, delivery to `port`,
    /// local domain `local.test` in `<work>/maildir`, a fast schedule.
    pub fn start(zone: Zone, port: u16, extra: &str) -> Setup {
        Setup::start_with(zone, port, "", extra)
    }

    /// As [`start`](Self::start), with more `[delivery]` keys.
    pub fn start_with(zone: Zone, port: u16, delivery: &str, extra: &str) -> Setup {
        Setup::start_adjusted(zone, port, delivery, extra, |_| {})
    }

    /// As [`start_with`](Self::start_with), with `adjust` given mtad's
    /// command (its environment) before it runs.
    pub fn start_adjusted(
        zone: Zone,
        port: u16,
        delivery: &str,
        extra: &str,
        adjust: impl FnOnce(&mut std::process::Command),
    ) -> Setup {
        let work = Workdir::new();
        let dns = TestDns::start_in_background(zone).expect("test DNS server");
        work.write_config(
            "",
            &format!(
                "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
                 [maildir]\nroot = {:?}\n\
                 [delivery]\nport = {port}\nname_servers = [\"{}\"]\ndns_timeout = \"2s\"\nidle_connection_timeout = \"10s\"\n{delivery}\n\
                 [delivery.timeouts]\nconnect = \"2s\"\ngreeting = \"5s\"\nehlo = \"5s\"\nmail = \"5s\"\nrcpt = \"5s\"\ndata_init = \"5s\"\ndata_block = \"5s\"\ndata_end = \"5s\"\nquit = \"2s\"\n\
                 {NO_DANE}\n\
                 {extra}\n",
                work.path().join("maildir").display().to_string(),
                dns.addr,
            ),
        );
        let mtad = Mtad::try_start_with(&work, adjust)
            .unwrap_or_else(|e| panic!("mtad did not start: {e}"));
        Setup {
            work,
            _dns: dns,
            mtad,
        }
    }

    pub fn send(&self, from: &str, to: &[&str], subject: &str) -> String {
        let mut c = self.mtad.connect();
        c.cmd("EHLO client.test", "250");
        let r = c.send_message(from, to, &message(subject));
        assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
        c.cmd("QUIT", "221");
        r.text().rsplit(' ').next().unwrap().to_owned()
    }

    pub fn log(&self) -> Vec<serde_json::Value> {
        delivery_log(&self.work.queue().join("delivery.log"))
    }

    pub fn wait_log(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut found = None;
        wait_until(what, WAIT, || {
            found = self.log().into_iter().find(|e| f(e));
            found.is_some()
        });
        found.unwrap()
    }

    pub fn maildir_messages(&self, domain: &str, user: &str) -> Vec<PathBuf> {
        let dir = self
            .work
            .path()
            .join("maildir")
            .join(domain)
            .join(user)
            .join("Maildir/new");
        std::fs::read_dir(dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    pub fn wait_maildir(&self, domain: &str, user: &str, n: usize) -> Vec<PathBuf> {
        wait_until(&format!("{n} messages for {user}@{domain}"), WAIT, || {
            self.maildir_messages(domain, user).len() >= n
        });
        self.maildir_messages(domain, user)
    }
}

pub(crate) fn delivery_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a delivery log line is JSON"))
        .collect()
}

pub(crate) fn event(e: &serde_json::Value, name: &str, id: &str) -> bool {
    e["event"] == name && e["queue_id"] == id
}

#[test]
fn delivered_over_mx_with_starttls_and_logged() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        tls: true,
        ..SinkConfig::default()
    });
    let zone = example_zone();
    let s = Setup::start(zone, port, "");
    let id = s.send("alice@local.test", &["bob@example.test"], "over mx");
    let got = sinks[0].wait_for_messages_blocking(1, WAIT);
    assert_eq!(got[0].rcpt_to, vec!["bob@example.test".to_owned()]);
    assert!(got[0].tls, "STARTTLS was not used");
    assert!(String::from_utf8_lossy(&got[0].data).contains("Subject: over mx"));
    let e = s.wait_log("delivered", |e| event(e, "delivered", &id));
    assert_eq!(e["recipient"], "bob@example.test");
    assert_eq!(e["queue"], "ram");
    assert!(
        e["tls"].as_str().unwrap_or_default().starts_with("TLS"),
        "{e}"
    );
    assert!(
        e["remote"]
            .as_str()
            .unwrap_or_default()
            .contains("mx1.example.test"),
        "{e}"
    );
    assert!(s.log().iter().any(|e| event(e, "received", &id)));
    // Done: the message left the queue.
    wait_until("an empty queue", WAIT, || status_queued(&s) == 0);
}

fn status_queued(s: &Setup) -> u64 {
    let out = Command::new(crate::util::bin("mta-init"))
        .arg("--config")
        .arg(s.work.config_path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["daemon"]["queued"].as_u64().unwrap()
}

#[test]
fn deferred_then_delivered_when_the_sink_recovers() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.3.0 try again later");
    let zone = example_zone();
    let s = Setup::start(
        zone,
        port,
        "[queue]\nretry_base = \"1s\"\npoll_interval = \"100ms\"\n",
    );
    let id = s.send("alice@local.test", &["bob@example.test"], "retry me");
    let e = s.wait_log("deferred", |e| event(e, "deferred", &id));
    assert_eq!(e["status"], "4.3.0");
    sinks[0].set_default_rcpt_reply(250, "2.1.5 ok");
    let e = s.wait_log("delivered on retry", |e| event(e, "delivered", &id));
    assert_eq!(e["queue"], "disk");
    assert!(e["attempt"].as_u64().unwrap() >= 2);
    assert_eq!(sinks[0].messages().len(), 1);
}

#[test]
fn permanent_failure_returns_an_rfc3464_dsn() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_rcpt_reply("nobody@", 550, "5.1.1 no such user here");
    let zone = example_zone();
    let s = Setup::start(zone, port, "");
    let mut c = s.mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<alice@local.test> RET=HDRS ENVID=env-42", "250");
    c.cmd(
        "RCPT TO:<nobody@example.test> ORCPT=rfc822;nobody+40example.test",
        "250",
    );
    c.cmd("RCPT TO:<bob@example.test>", "250");
    c.cmd("DATA", "354");
    c.send(message("doomed").as_bytes());
    c.send(b".\r\n");
    let id = c.reply().text().rsplit(' ').next().unwrap().to_owned();
    // The DSN goes back to alice, who is local: it lands in her Maildir.
    let files = s.wait_maildir("local.test", "alice", 1);
    let dsn = std::fs::read(&files[0]).unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&dsn[..])
        .unwrap();
    let ct = parsed.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let text = String::from_utf8_lossy(&dsn);
    for want in [
        "Reporting-MTA: dns; mx.test",
        "Original-Envelope-Id: env-42",
        "Final-Recipient: rfc822; nobody@example.test",
        "Original-Recipient: rfc822;nobody@example.test",
        "Action: failed",
        "Status: 5.1.1",
        "Remote-MTA: dns; mx1.example.test",
        "no such user here",
        "Arrival-Date:",
    ] {
        assert!(text.contains(want), "DSN lacks {want:?}:\n{text}");
    }
    assert!(
        !text.contains("bob@example.test\nAction"),
        "the delivered recipient is not reported as failed"
    );
    assert!(!text.contains("Hello."), "RET=HDRS returns headers only");
    assert!(s.log().iter().any(|e| event(e, "bounced", &id)));
    // The good recipient was delivered all the same.
    assert_eq!(
        sinks[0].wait_for_messages_blocking(1, WAIT)[0].rcpt_to,
        vec!["bob@example.test".to_owned()]
    );
}

#[test]
fn expiry_fails_with_4_4_7() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.4.0 still not");
    let zone = example_zone();
    let s = Setup::start(
        zone,
        port,
        "[queue]\nretry_base = \"1s\"\nlifetime = \"3s\"\npoll_interval = \"100ms\"\n",
    );
    let id = s.send("alice@local.test", &["bob@example.test"], "too late");
    let e = s.wait_log("expired", |e| event(e, "expired", &id));
    assert_eq!(e["status"], "4.4.7");
    let files = s.wait_maildir("local.test", "alice", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Status: 4.4.7"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
    assert!(
        text.contains("still not"),
        "the last error is reported: {text}"
    );
    assert!(sinks[0].messages().is_empty());
    wait_until("an empty queue", WAIT, || status_queued(&s) == 0);
}

#[test]
fn mx_preference_then_fallback_and_implicit_mx() {
    // mx1 (preferred) and mx2 both up: mx1 gets the mail.
    let (port, sinks) = sinks(&[ip(2), ip(3)], SinkConfig::default);
    let zone = Zone::new()
        .mx("pref.test", 20, "mx2.pref.test")
        .mx("pref.test", 10, "mx1.pref.test")
        .a("mx1.pref.test", ip(2))
        .a("mx2.pref.test", ip(3))
        // down.test's preferred MX has nothing listening: mx2 takes it.
        .mx("down.test", 10, "dead.down.test")
        .mx("down.test", 20, "mx2.pref.test")
        .a("dead.down.test", ip(9))
        // implicit.test has no MX, only an A record (RFC 5321 5.1).
        .a("implicit.test", ip(2));
    let s = Setup::start(zone, port, "");
    s.send("alice@local.test", &["a@pref.test"], "preferred");
    assert_eq!(
        sinks[0].wait_for_messages_blocking(1, WAIT)[0].rcpt_to,
        vec!["a@pref.test".to_owned()]
    );
    assert!(
        sinks[1].messages().is_empty(),
        "the less preferred MX was used"
    );
    s.send("alice@local.test", &["b@down.test"], "fallback");
    assert_eq!(
        sinks[1].wait_for_messages_blocking(1, WAIT)[0].rcpt_to,
        vec!["b@down.test".to_owned()]
    );
    s.send("alice@local.test", &["c@implicit.test"], "implicit");
    let got = sinks[0].wait_for_messages_blocking(2, WAIT);
    assert!(got
        .iter()
        .any(|m| m.rcpt_to == vec!["c@implicit.test".to_owned()]));
}

#[test]
fn null_mx_fails_at_once_with_5_1_10() {
    let zone = Zone::new().null_mx("nomail.test");
    let s = Setup::start(zone, 25, "");
    let id = s.send("alice@local.test", &["x@nomail.test"], "nowhere");
    let e = s.wait_log("failed", |e| event(e, "failed", &id));
    assert_eq!(e["status"], "5.1.10");
    let files = s.wait_maildir("local.test", "alice", 1);
    assert!(std::fs::read_to_string(&files[0])
        .unwrap()
        .contains("Status: 5.1.10"));
}

#[test]
fn connections_are_reused_for_several_messages() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let zone = example_zone();
    let s = Setup::start(zone, port, "");
    for n in 1..=5 {
        s.send(
            "alice@local.test",
            &["bob@example.test"],
            &format!("reuse {n}"),
        );
        sinks[0].wait_for_messages_blocking(n, WAIT);
    }
    assert_eq!(sinks[0].messages().len(), 5);
    assert!(
        sinks[0].connections() < 5,
        "{} connections for 5 messages",
        sinks[0].connections()
    );
}

#[test]
fn local_domains_go_to_maildir() {
    let s = Setup::start(Zone::new(), 25, "");
    let id = s.send(
        "someone@else.test",
        &["Carol@local.test", "dave@local.test"],
        "to maildir",
    );
    let carol = s.wait_maildir("local.test", "carol", 1);
    s.wait_maildir("local.test", "dave", 1);
    let text = std::fs::read_to_string(&carol[0]).unwrap();
    assert!(
        text.starts_with("Return-Path: <someone@else.test>\nDelivered-To: Carol@local.test\n"),
        "{text}"
    );
    assert!(text.contains("Subject: to maildir"));
    assert!(!text.contains('\r'), "Maildir files use LF line endings");
    let tmp = s.work.path().join("maildir/local.test/carol/Maildir/tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
    s.wait_log("delivered", |e| {
        event(e, "delivered", &id) && e["recipient"] == "dave@local.test"
    });
}

#[test]
fn null_sender_never_gets_a_dsn_the_postmaster_does() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(550, "5.1.1 gone");
    let zone = example_zone();
    let s = Setup::start(
        zone,
        port,
        "[queue]\npostmaster = \"postmaster@local.test\"\n",
    );
    let id = s.send("", &["bob@example.test"], "bounce of a bounce");
    s.wait_log("failed", |e| event(e, "failed", &id));
    // The report goes to the postmaster, never to <>.
    let files = s.wait_maildir("local.test", "postmaster", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Status: 5.1.1"), "{text}");
    let bounced: Vec<_> = s
        .log()
        .into_iter()
        .filter(|e| event(e, "bounced", &id))
        .collect();
    assert_eq!(bounced.len(), 1);
    assert_eq!(bounced[0]["recipient"], "postmaster@local.test");
}

#[test]
fn volatile_mode_delivers_and_spills_deferred_mail_to_disk() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let zone = example_zone();
    let s = Setup::start(
        zone,
        port,
        "[queue]\nmode = \"volatile\"\nretry_base = \"1h\"\n",
    );
    s.send("alice@local.test", &["bob@example.test"], "fast path");
    sinks[0].wait_for_messages_blocking(1, WAIT);
    // A deferred message moves to the disk queue, and survives a stop.
    sinks[0].set_default_rcpt_reply(451, "4.3.0 later");
    let id = s.send("alice@local.test", &["bob@example.test"], "deferred");
    s.wait_log("deferred", |e| event(e, "deferred", &id));
    let Setup { work, mtad, _dns } = s;
    assert!(mtad.terminate().success());
    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.to_string(), id);
}

/// Postfix's smtp-sink as the next hop: a real, independent SMTP server.
#[test]
fn relays_to_postfix_smtp_sink() {
    let Some(smtp_sink) = SmtpSink::program() else {
        return;
    };
    let dumps = tempfile::tempdir().unwrap();
    // smtp-sink drops privileges to nobody before it writes its dumps.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dumps.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port(ip(4));
    let mut child = SmtpSink::start(smtp_sink, ip(4), port, dumps.path(), &[]);
    let zone = Zone::new()
        .mx("postfix.test", 10, "sink.postfix.test")
        .a("sink.postfix.test", ip(4));
    let s = Setup::start(zone, port, "");
    let ids: Vec<String> = (0..3)
        .map(|n| {
            s.send(
                "alice@local.test",
                &["x@postfix.test"],
                &format!("to smtp-sink {n}"),
            )
        })
        .collect();
    for id in &ids {
        s.wait_log("delivered to smtp-sink", |e| event(e, "delivered", id));
    }
    wait_until("smtp-sink dumps", WAIT, || {
        std::fs::read_dir(dumps.path()).unwrap().count() >= 3
    });
    child.stop();
}

pub(crate) fn free_port(ip: Ipv4Addr) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Postfix's smtp-sink, killed when dropped.
pub(crate) struct SmtpSink(Child);

impl SmtpSink {
    /// Debian's smtp-sink, or None (and a note) when it is not installed;
    /// in CI its absence fails the test: `tests/run` installs it.
    pub(crate) fn program() -> Option<&'static Path> {
        let smtp_sink = Path::new("/usr/sbin/smtp-sink");
        if smtp_sink.exists() {
            return Some(smtp_sink);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "smtp-sink is missing in CI: tests/run installs it"
        );
        eprintln!("skipped: smtp-sink is not installed (tests/run installs it)");
        None
    }

    /// Listens on `ip:port` and dumps each message in `dumps`; `flags`
    /// go first (`-8`: no 8BITMIME).
    pub(crate) fn start(
        bin: &Path,
        ip: Ipv4Addr,
        port: u16,
        dumps: &Path,
        flags: &[&str],
    ) -> SmtpSink {
        let child = Command::new(bin)
            .args(flags)
            .args(["-u", "nobody", "-d"])
            .arg(format!("{}/%Y%m%d%H%M%S.", dumps.display()))
            .arg(format!("{ip}:{port}"))
            .arg("64")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run smtp-sink");
        // Ready once it accepts a connection (bounded).
        wait_until("smtp-sink to listen", WAIT, || {
            std::net::TcpStream::connect((ip, port)).is_ok()
        });
        SmtpSink(child)
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn paused_delivery_keeps_mail_queued_until_resumed() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let zone = example_zone();
    let s = Setup::start(zone, port, "");
    assert!(init(&s.work, &["pause", "delivery"]).status.success());
    let status = init(&s.work, &["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("ram-runner") && text.contains("paused"),
        "{text}"
    );
    let id = s.send("alice@local.test", &["bob@example.test"], "held");
    // Bounded look for what must not happen.
    let began = std::time::Instant::now();
    while began.elapsed() < Duration::from_millis(700) {
        assert!(sinks[0].messages().is_empty(), "delivered while paused");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(status_queued(&s), 1);
    let bad = init(&s.work, &["pause", "delivery", "--runner", "nope"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(init(&s.work, &["resume", "delivery"]).status.success());
    sinks[0].wait_for_messages_blocking(1, WAIT);
    s.wait_log("delivered", |e| event(e, "delivered", &id));
}

#[test]
fn delay_notice_is_sent_once_after_the_configured_age() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    sinks[0].set_default_rcpt_reply(451, "4.2.1 mailbox busy");
    let zone = example_zone();
    let s = Setup::start(
        zone,
        port,
        "[queue]\nretry_base = \"1s\"\npoll_interval = \"100ms\"\ndelay_notice_after = \"1s\"\n",
    );
    let id = s.send("alice@local.test", &["bob@example.test"], "slow going");
    let files = s.wait_maildir("local.test", "alice", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("Will-Retry-Until:"), "{text}");
    assert!(text.contains("mailbox busy"), "{text}");
    // Later attempts send no second notice.
    s.wait_log("a later attempt", |e| {
        event(e, "deferred", &id) && e["attempt"].as_u64() >= Some(3)
    });
    assert_eq!(s.maildir_messages("local.test", "alice").len(), 1);
}

/// To a next hop without DSN the success notice is ours, and says
/// `relayed` (RFC 3461 section 5.2.2; to a next hop with DSN there is none
/// from us: tests/integration/dsn.rs).
#[test]
fn notify_success_reports_relaying_and_never_reports_nothing() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        dsn: false,
        ..SinkConfig::default()
    });
    sinks[0].set_rcpt_reply("gone@", 550, "5.1.1 gone");
    let zone = example_zone();
    let s = Setup::start(zone, port, "");
    let mut c = s.mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<alice@local.test>", "250");
    c.cmd("RCPT TO:<bob@example.test> NOTIFY=SUCCESS", "250");
    c.cmd("RCPT TO:<gone@example.test> NOTIFY=NEVER", "250");
    c.cmd("DATA", "354");
    c.send(message("notify").as_bytes());
    c.send(b".\r\n");
    let id = c.reply().text().rsplit(' ').next().unwrap().to_owned();
    wait_until("the message to be done", WAIT, || status_queued(&s) == 0);
    let files = s.wait_maildir("local.test", "alice", 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("Action: relayed"), "{text}");
    assert!(
        text.contains("Final-Recipient: rfc822; bob@example.test"),
        "{text}"
    );
    assert!(
        !text.contains("gone@example.test"),
        "NOTIFY=NEVER was reported: {text}"
    );
    let bounced = s
        .log()
        .into_iter()
        .filter(|e| event(e, "bounced", &id))
        .count();
    assert_eq!(bounced, 1, "one DSN, for the success only");
}

#[test]
fn a_crash_mid_delivery_delivers_again_never_zero_times() {
    let (port, sinks) = sinks(&[ip(2)], || SinkConfig {
        data_delay: Duration::from_millis(1500),
        ..SinkConfig::default()
    });
    let zone = example_zone();
    let s = Setup::start(zone, port, "");
    let id = s.send("alice@local.test", &["bob@example.test"], "in flight");
    // The attempt is under way: the sink holds the end of data.
    wait_until("the attempt to reach the sink", WAIT, || {
        sinks[0].connections() >= 1
    });
    let Setup { work, _dns, mtad } = s;
    mtad.kill9();
    let mtad = Mtad::start(&work);
    let s = Setup { work, _dns, mtad };
    s.wait_log("delivery after the restart", |e| event(e, "delivered", &id));
    assert!(!sinks[0].wait_for_messages_blocking(1, WAIT).is_empty());
}

#[test]
fn a_configured_route_sends_a_domain_to_its_smarthost() {
    let (port, sinks) = sinks(&[ip(2), ip(5)], SinkConfig::default);
    // The MX says 127.0.0.2, the route says 127.0.0.5: the route wins.
    let zone = Zone::new()
        .mx("routed.test", 10, "mx.routed.test")
        .a("mx.routed.test", ip(2));
    let s = Setup::start(
        zone,
        port,
        &format!("[delivery.routes]\n\"routed.test\" = \"127.0.0.5:{port}\"\n"),
    );
    let id = s.send("alice@local.test", &["x@routed.test"], "via smarthost");
    assert_eq!(
        sinks[1].wait_for_messages_blocking(1, WAIT)[0].rcpt_to,
        vec!["x@routed.test".to_owned()]
    );
    assert!(
        sinks[0].messages().is_empty(),
        "the MX was used instead of the route"
    );
    let e = s.wait_log("delivered", |e| event(e, "delivered", &id));
    assert!(
        e["remote"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.5"),
        "{e}"
    );
}

#[test]
fn volatile_messages_not_yet_attempted_are_spilled_on_a_clean_stop() {
    let (port, sinks) = sinks(&[ip(2)], SinkConfig::default);
    let zone = example_zone();
    let s = Setup::start(zone, port, "[queue]\nmode = \"volatile\"\n");
    assert!(init(&s.work, &["pause", "delivery"]).status.success());
    let ids: Vec<String> = (0..3)
        .map(|n| {
            s.send(
                "alice@local.test",
                &["bob@example.test"],
                &format!("spill {n}"),
            )
        })
        .collect();
    // Nothing is on disk yet: volatile acceptance answered from memory
    // (and status counts them there).
    let files: usize = std::fs::read_dir(s.work.queue().join("msg"))
        .unwrap()
        .map(|bucket| std::fs::read_dir(bucket.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, 0);
    assert_eq!(status_queued(&s), 3);
    let Setup { work, mtad, _dns } = s;
    assert!(mtad.terminate().success());
    let mut stored: Vec<String> = spool_contents(&work.queue())
        .iter()
        .map(|(id, ..)| id.to_string())
        .collect();
    stored.sort();
    assert_eq!(stored, ids);
    assert!(sinks[0].messages().is_empty());
}

/// `required` TLS without `ca_file` verifies against the system's trust
/// store, which `SSL_CERT_FILE` replaces (as for OpenSSL): with the
/// sink's certificate as the store, the message goes over verified TLS;
/// with another certificate, it waits (4.7.5) and nothing is sent.
#[test]
fn required_tls_trusts_the_system_store_that_ssl_cert_file_names() {
    for trusted in [true, false] {
        let last = if trusted { 3 } else { 4 };
        let (port, sinks) = sinks(&[ip(last)], || SinkConfig {
            tls: true,
            tls_names: vec!["mx1.example.test".into()],
            ..SinkConfig::default()
        });
        let zone = Zone::new()
            .mx("example.test", 10, "mx1.example.test")
            .a("mx1.example.test", ip(last));
        let store = tempfile::NamedTempFile::new().unwrap();
        let pem = if trusted {
            sinks[0].cert_pem().unwrap()
        } else {
            rcgen::generate_simple_self_signed(vec!["mx1.example.test".into()])
                .unwrap()
                .cert
                .pem()
        };
        std::fs::write(store.path(), pem).unwrap();
        let s = Setup::start_adjusted(zone, port, "tls = \"required\"", "", |c| {
            c.env("SSL_CERT_FILE", store.path());
            c.env_remove("SSL_CERT_DIR");
        });
        let id = s.send("alice@local.test", &["bob@example.test"], "verified");
        if trusted {
            let e = s.wait_log("delivered or deferred", |e| {
                event(e, "delivered", &id) || event(e, "deferred", &id)
            });
            assert_eq!(e["event"], "delivered", "{e}");
            let got = sinks[0].wait_for_messages_blocking(1, WAIT);
            assert!(got[0].tls);
            assert!(
                e["tls"].as_str().unwrap_or_default().starts_with("TLS"),
                "{e}"
            );
        } else {
            let e = s.wait_log("deferred", |e| event(e, "deferred", &id));
            assert_eq!(e["status"], "4.7.5", "{e}");
            assert!(sinks[0].messages().is_empty());
        }
    }
}
