//! MTA-STS (RFC 8461) end to end: the real mtad, the test DNS publishing
//! `_mta-sts.example.test` TXT and the MX, a real HTTPS server on
//! 127.0.0.1 serving the policy with a certificate an rcgen CA signed for
//! `mta-sts.example.test`, and SMTP sinks with STARTTLS. mtad is told the
//! policy host's port and the test CA (`[delivery.mta_sts] port`,
//! `ca_file`), and trusts the sink's certificate (`[delivery] ca_file`).

use std::net::SocketAddr;

use mta_testkit::dns::{TestDns, Zone};
use mta_testkit::https::{Answer, PolicyHost};
use mta_testkit::sink::{Sink, SinkConfig};

use crate::delivery::{delivery_log, event, ip, sinks, WAIT};
use crate::util::{message, wait_until, Mtad, Workdir};

/// A policy in `mode` allowing `mx`.
fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

/// The policy host of `example.test` serving `body`, and its CA as a file
/// for `[delivery.mta_sts] ca_file`.
struct Host {
    server: PolicyHost,
    ca: tempfile::NamedTempFile,
}

impl Host {
    fn start(body: &str) -> Host {
        let server = PolicyHost::start("mta-sts.example.test", Answer::ok(body)).unwrap();
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), &server.ca_pem).unwrap();
        Host { server, ca }
    }

    fn port(&self) -> u16 {
        self.server.addr.port()
    }

    fn requests(&self) -> usize {
        self.server.requests()
    }
}

/// `example.test` publishing policy `id`, its MX `mx_host` at `mx_ip`, and
/// the policy host at 127.0.0.1.
fn zone(id: &str, mx_host: &str, mx_ip: std::net::Ipv4Addr) -> Zone {
    Zone::new()
        .mx("example.test", 10, mx_host)
        .a(mx_host, mx_ip)
        .txt("_mta-sts.example.test", &format!("v=STSv1; id={id};"))
        .a("mta-sts.example.test", ip(1))
}

/// A sink with STARTTLS and a certificate for `names` (and localhost).
fn tls_sink(last: u8, names: &[&str]) -> (u16, Sink) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let (port, mut all) = sinks(&[ip(last)], || SinkConfig {
        tls: true,
        tls_names: names.clone(),
        ..SinkConfig::default()
    });
    (port, all.remove(0))
}

/// The sinks' certificates as one trust-anchor file for `[delivery]
/// ca_file` (each sink's certificate is self-signed).
fn trust(sinks: &[&Sink]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let pems: Vec<String> = sinks.iter().map(|s| s.cert_pem().unwrap()).collect();
    std::fs::write(file.path(), pems.concat()).unwrap();
    file
}

/// Writes mtad's configuration: the test DNS, delivery to `port`, the
/// sinks' certificates trusted, the policy host's port and CA.
fn configure(
    work: &Workdir,
    dns: SocketAddr,
    port: u16,
    sinks_ca: &std::path::Path,
    host: &Host,
    delivery: &str,
) {
    work.write_config(
        "",
        &format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n\
             [delivery]\nport = {port}\nname_servers = [\"{dns}\"]\ndns_timeout = \"2s\"\n\
             ca_file = {:?}\n{delivery}\n\
             [delivery.timeouts]\nconnect = \"2s\"\ngreeting = \"5s\"\nehlo = \"5s\"\nmail = \"5s\"\nrcpt = \"5s\"\ndata_init = \"5s\"\ndata_block = \"5s\"\ndata_end = \"5s\"\nquit = \"2s\"\n\
             [delivery.mta_sts]\nport = {}\nca_file = {:?}\nfetch_timeout = \"5s\"\n\
             {NO_DANE}\n\
             [queue]\nretry_base = \"1h\"\n",
            sinks_ca.display().to_string(),
            host.port(),
            host.ca.path().display().to_string(),
            NO_DANE = crate::delivery::NO_DANE,
        ),
    );
}

/// Sends one message to bob@example.test; its queue id.
pub(crate) fn send(mtad: &Mtad, subject: &str) -> String {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("alice@local.test", &["bob@example.test"], &message(subject));
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
    r.text().rsplit(' ').next().unwrap().to_owned()
}

/// The first delivered or deferred line about `id`.
pub(crate) fn outcome(work: &Workdir, id: &str) -> serde_json::Value {
    let log = work.queue().join("delivery.log");
    let mut found = None;
    wait_until("delivered or deferred", WAIT, || {
        found = delivery_log(&log)
            .into_iter()
            .find(|e| event(e, "delivered", id) || event(e, "deferred", id));
        found.is_some()
    });
    found.unwrap()
}

/// mtad, the DNS and the policy host of one test.
struct Run {
    work: Workdir,
    _dns: TestDns,
    mtad: Mtad,
}

fn start(zone: Zone, port: u16, sinks_ca: &std::path::Path, host: &Host) -> Run {
    let work = Workdir::new();
    let dns = TestDns::start_in_background(zone).unwrap();
    configure(&work, dns.addr, port, sinks_ca, host, "");
    let mtad = Mtad::start(&work);
    Run {
        work,
        _dns: dns,
        mtad,
    }
}

#[test]
fn enforce_with_a_matching_mx_and_a_valid_certificate_is_verified_by_mta_sts() {
    let host = Host::start(&policy("enforce", "*.example.test"));
    let (port, sink) = tls_sink(21, &["mx1.example.test"]);
    let ca = trust(&[&sink]);
    let run = start(
        zone("1", "mx1.example.test", ip(21)),
        port,
        ca.path(),
        &host,
    );
    let id = send(&run.mtad, "enforced");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "mta-sts", "{e}");
    assert!(e["tls"].as_str().unwrap().starts_with("TLSv1."), "{e}");
    assert!(sink.wait_for_messages_blocking(1, WAIT)[0].tls);
    assert_eq!(host.requests(), 1);
    let (code, metrics) = crate::http::request(
        run.mtad.http.expect("[http] listens"),
        "GET",
        "/metrics",
        None,
        None,
    );
    assert_eq!(code, 200);
    let tls_version = e["tls"].as_str().unwrap();
    let line =
        format!("mta_deliveries_by_tls_total{{verified=\"mta-sts\",tls=\"{tls_version}\"}} 1");
    assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    assert!(
        metrics.contains("mta_tls_policy_failures_total{policy=\"mta-sts\",mode=\"enforce\"} 0"),
        "{metrics}"
    );
}

#[test]
fn enforce_defers_when_no_mx_host_matches_and_sends_nothing() {
    let host = Host::start(&policy("enforce", "mx.elsewhere.test"));
    let (port, sink) = tls_sink(22, &["mx1.example.test"]);
    let ca = trust(&[&sink]);
    let run = start(
        zone("1", "mx1.example.test", ip(22)),
        port,
        ca.path(),
        &host,
    );
    let id = send(&run.mtad, "no match");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "deferred", "{e}");
    assert_eq!(e["status"], "4.7.5", "{e}");
    let reply = e["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("MTA-STS policy of example.test: no MX host matches the policy"),
        "{reply}"
    );
    assert_eq!(
        sink.connections(),
        0,
        "a host outside the policy was contacted"
    );
    // `queue show` gives the reason of the deferral.
    let shown = crate::util::queue(&run.work, &["show", &id]);
    assert!(shown.contains("MTA-STS policy of example.test"), "{shown}");
    let (_, metrics) = crate::http::request(run.mtad.http.unwrap(), "GET", "/metrics", None, None);
    assert!(
        metrics.contains("mta_tls_policy_failures_total{policy=\"mta-sts\",mode=\"enforce\"} 1"),
        "{metrics}"
    );
}

#[test]
fn enforce_defers_when_the_certificate_is_not_valid_for_the_mx_name() {
    let host = Host::start(&policy("enforce", "mx1.example.test"));
    // The sink's certificate names localhost only.
    let (port, sink) = tls_sink(23, &[]);
    let ca = trust(&[&sink]);
    let run = start(
        zone("1", "mx1.example.test", ip(23)),
        port,
        ca.path(),
        &host,
    );
    let id = send(&run.mtad, "bad certificate");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "deferred", "{e}");
    assert_eq!(e["status"], "4.7.5", "{e}");
    let reply = e["reply"].as_str().unwrap();
    assert!(
        reply.starts_with("MTA-STS policy of example.test: "),
        "{reply}"
    );
    assert!(
        reply.contains("certificate of mx1.example.test not valid"),
        "{reply}"
    );
    assert!(sink.messages().is_empty());
}

#[test]
fn testing_mode_delivers_and_logs_what_would_have_failed() {
    let host = Host::start(&policy("testing", "mx.elsewhere.test"));
    let (port, sink) = tls_sink(24, &[]);
    let ca = trust(&[&sink]);
    let run = start(
        zone("1", "mx1.example.test", ip(24)),
        port,
        ca.path(),
        &host,
    );
    let id = send(&run.mtad, "testing");
    let e = outcome(&run.work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "none", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
    let mut log = String::new();
    wait_until("the testing-mode warning", WAIT, || {
        log = run.mtad.log();
        log.contains("(testing mode) would have deferred")
    });
    assert!(
        log.contains("MX host mx1.example.test does not match the policy"),
        "{log}"
    );
    assert!(
        log.contains("certificate of mx1.example.test not valid"),
        "{log}"
    );
}

/// A policy fetched once holds for its max_age, across a restart, while
/// the policy host is down: the MX moved to a host outside the policy,
/// so the message waits rather than going there.
#[test]
fn a_cached_policy_holds_across_a_restart_while_the_policy_host_is_down() {
    let mut host = Host::start(&policy("enforce", "mx1.example.test"));
    let (port, sinks) = sinks(&[ip(25), ip(26)], || SinkConfig {
        tls: true,
        tls_names: vec!["mx1.example.test".into(), "mx2.example.test".into()],
        ..SinkConfig::default()
    });
    let ca = trust(&[&sinks[0], &sinks[1]]);
    let first = start(
        zone("1", "mx1.example.test", ip(25)),
        port,
        ca.path(),
        &host,
    );
    let id = send(&first.mtad, "before");
    assert_eq!(outcome(&first.work, &id)["verified"], "mta-sts");
    assert_eq!(host.requests(), 1);
    let Run { work, _dns, mtad } = first;
    assert!(mtad.terminate().success());
    host.server.stop();
    // Nothing listens there any more: a fetch would fail.
    assert!(std::net::TcpStream::connect(host.server.addr).is_err());

    // Same policy id, but the MX is now mx2, outside the policy.
    let dns = TestDns::start_in_background(zone("1", "mx2.example.test", ip(26))).unwrap();
    use_dns(&work, _dns.addr, dns.addr);
    let mtad = Mtad::start(&work);
    let id = send(&mtad, "after");
    let e = outcome(&work, &id);
    assert_eq!(e["event"], "deferred", "{e}");
    assert!(
        e["reply"]
            .as_str()
            .unwrap()
            .contains("no MX host matches the policy"),
        "{e}"
    );
    assert!(sinks[1].messages().is_empty());
}

/// A new id in the TXT record fetches the policy again, at once, though
/// the cached one is still fresh; the same id does not.
#[test]
fn a_new_txt_id_fetches_the_policy_again() {
    let host = Host::start(&policy("enforce", "mx1.example.test"));
    let (port, sinks) = sinks(&[ip(27), ip(28)], || SinkConfig {
        tls: true,
        tls_names: vec!["mx1.example.test".into(), "mx2.example.test".into()],
        ..SinkConfig::default()
    });
    let ca = trust(&[&sinks[0], &sinks[1]]);
    let first = start(
        zone("1", "mx1.example.test", ip(27)),
        port,
        ca.path(),
        &host,
    );
    for subject in ["one", "two"] {
        let id = send(&first.mtad, subject);
        assert_eq!(outcome(&first.work, &id)["verified"], "mta-sts");
    }
    assert_eq!(host.requests(), 1, "the same id fetched again");
    let Run { work, _dns, mtad } = first;
    assert!(mtad.terminate().success());

    // The domain moves its mail to mx2 and says so with a new id.
    host.server
        .set_answer(Answer::ok(&policy("enforce", "mx2.example.test")));
    let dns = TestDns::start_in_background(zone("2", "mx2.example.test", ip(28))).unwrap();
    use_dns(&work, _dns.addr, dns.addr);
    let mtad = Mtad::start(&work);
    let id = send(&mtad, "three");
    let e = outcome(&work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "mta-sts", "{e}");
    assert_eq!(host.requests(), 2);
    assert_eq!(sinks[1].wait_for_messages_blocking(1, WAIT).len(), 1);
}

/// Points the configuration of `work` at another test DNS server.
fn use_dns(work: &Workdir, old: SocketAddr, new: SocketAddr) {
    let path = work.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let from = format!("name_servers = [\"{old}\"]");
    assert!(text.contains(&from), "{text}");
    let to = format!("name_servers = [\"{new}\"]");
    std::fs::write(&path, text.replace(&from, &to)).unwrap();
}

/// An explicit `[delivery.tls_policy]` entry wins over the domain's
/// policy in enforce mode, and a warning says so.
#[test]
fn an_explicit_tls_policy_overrides_mta_sts_with_a_warning() {
    let host = Host::start(&policy("enforce", "mx.elsewhere.test"));
    let (port, sink) = tls_sink(29, &[]);
    let ca = trust(&[&sink]);
    let work = Workdir::new();
    let dns = TestDns::start_in_background(zone("1", "mx1.example.test", ip(29))).unwrap();
    configure(
        &work,
        dns.addr,
        port,
        ca.path(),
        &host,
        "tls_policy = { \"example.test\" = \"opportunistic\" }",
    );
    let mtad = Mtad::start(&work);
    let id = send(&mtad, "overridden");
    let e = outcome(&work, &id);
    assert_eq!(e["event"], "delivered", "{e}");
    assert_eq!(e["verified"], "none", "{e}");
    assert_eq!(sink.wait_for_messages_blocking(1, WAIT).len(), 1);
    wait_until("the override warning", WAIT, || {
        mtad.log()
            .contains("overrides the MTA-STS policy in enforce mode")
    });
}

#[test]
fn configtest_warns_when_tls_policy_lowers_a_published_enforce_policy() {
    let host = Host::start(&policy("enforce", "mx1.example.test"));
    let (port, sink) = tls_sink(30, &[]);
    let ca = trust(&[&sink]);
    let work = Workdir::new();
    let dns = TestDns::start_in_background(zone("7", "mx1.example.test", ip(30))).unwrap();
    let lowered = "the MTA-STS policy example.test publishes (enforce, id 7)";
    for (entry, warned) in [("opportunistic", true), ("none", true), ("required", false)] {
        configure(
            &work,
            dns.addr,
            port,
            ca.path(),
            &host,
            &format!("tls_policy = {{ \"example.test\" = \"{entry}\" }}"),
        );
        let out = crate::util::init(&work, &["configtest"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.contains(lowered), warned, "{entry}: {err}");
    }
    // A domain that publishes nothing is not warned about.
    configure(
        &work,
        dns.addr,
        port,
        ca.path(),
        &host,
        "tls_policy = { \"other.test\" = \"none\" }",
    );
    let out = crate::util::init(&work, &["configtest"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("lowers"));
}
