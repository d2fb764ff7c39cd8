//! SMTP AUTH (RFC 4954) with real peers on both sides of mtad:
//!
//! - Debian's Postfix as an authenticating client: a private instance
//!   relays everything through our port 587 (`relayhost`), STARTTLS
//!   required (`smtp_tls_security_level = encrypt`, our certificate in
//!   `smtp_tls_CAfile`), then AUTH with the user and password of its
//!   `smtp_sasl_password_maps` (Cyrus SASL's client modules, Debian's
//!   `libsasl2-modules`). It binds 127.0.0.2, outside mtad's
//!   `relay_networks`, so only AUTH lets it relay.
//! - Dovecot as mtad's password backend (`[auth] dovecot_socket`), with
//!   a passwd-file of `doveadm pw -s ARGON2ID` hashes: Dovecot's own
//!   code checks every password.
//! - The users file read again by a graceful restart, after `mta-init
//!   user add`.
//!
//! A test that needs root (Postfix's master, Dovecot) or a peer that is
//! not installed is skipped with a note, and fails in CI (`CI` set),
//! where tests/install-peers.sh installs the peers.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mta_testkit::dovecot::{Dovecot, DOVECOT};

use crate::postfix::{skip_without_postfix, PrivatePostfix};
use crate::util::{
    have, init, init_with_input, outside, plain, sha512_crypt, status_json, swaks, text,
    wait_until, Client, Submission, Workdir, OUTSIDE, PASSWORD,
};

/// How long Postfix may take to hand a message over (or to give up on
/// an attempt): its retries come every second or two.
const WAIT: Duration = Duration::from_secs(60);

const ALICE: &str = "alice@local.test";

/// True, with a note, when the test cannot run here because it is not
/// root; in CI (which runs as root) that fails instead.
fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI runs as root, and this test needs it"
    );
    eprintln!("skipped {test}: it needs root (Postfix's master, Dovecot)");
    true
}

/// A message from alice with `subject`, as Postfix is handed it.
fn alice_message(subject: &str) -> String {
    format!(
        "From: {ALICE}\r\nTo: friend@remote.test\r\nSubject: {subject}\r\n\r\nRelayed by Postfix.\r\n"
    )
}

/// A private Postfix in `dir` relaying all mail to `relay` (our 587) as
/// an AUTH client: STARTTLS required, our certificate (`cert`) as its
/// CA, `user` and `password` from a texthash map (read as root before
/// Postfix drops privileges, so mode 0600 as Postfix's documentation
/// asks), from 127.0.0.2.
fn postfix_client(
    dir: &Path,
    relay: SocketAddr,
    cert: &Path,
    user: &str,
    password: &str,
) -> PrivatePostfix {
    let relayhost = format!("[{}]:{}", relay.ip(), relay.port());
    let ca = dir.join("ca.pem");
    std::fs::copy(cert, &ca).expect("copy the certificate");
    let map = dir.join("sasl_passwd");
    std::fs::write(&map, format!("{relayhost} {user}:{password}\n")).expect("sasl_passwd");
    std::fs::set_permissions(&map, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "# Postfix as an AUTH client of mtad's submission port (RFC 4954).
smtp_bind_address = {OUTSIDE}
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:{map}
# The default also refuses plaintext mechanisms, which is all there is
# under TLS on a submission port (PLAIN, LOGIN).
smtp_sasl_security_options = noanonymous
smtp_sasl_mechanism_filter = plain, login
smtp_tls_security_level = encrypt
smtp_tls_CAfile = {ca}
smtp_tls_loglevel = 1
",
        map = map.display(),
        ca = ca.display(),
    );
    PrivatePostfix::start_on_free_port(dir, &relayhost, &extra)
}

/// Waits (bounded) until Postfix logged a delivery attempt of `id` with
/// `status` (`sent`, `deferred`); that line.
fn wait_status(
    pf: &PrivatePostfix,
    id: &str,
    status: &str,
    context: impl Fn() -> String,
) -> String {
    let began = Instant::now();
    loop {
        if let Some((_, line)) = pf.statuses(id).into_iter().find(|(s, _)| s == status) {
            return line;
        }
        assert!(
            began.elapsed() < WAIT,
            "Postfix logged no status={status} for {id} in {WAIT:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn postfix_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mta-it-postfix-")
        .tempdir()
        .expect("tempdir")
}

#[test]
fn postfix_relays_through_587_with_auth() {
    let test = "postfix_relays_through_587_with_auth";
    if skip_without_postfix(test) || skip_unless_root(test) {
        return;
    }
    // Declared first, removed last.
    let pf_dir = postfix_dir();
    let s = Submission::start("");
    let pf = postfix_client(pf_dir.path(), s.submission(), &s.cert_path, ALICE, PASSWORD);
    let context = || {
        format!(
            "--- Postfix maillog ---\n{}\n--- mtad log ---\n{}",
            pf.maillog(),
            s.log()
        )
    };
    let ids = pf.submit(ALICE, "friend@remote.test", &[alice_message("via Postfix")]);
    let sent = wait_status(&pf, &ids[0], "sent", context);
    assert!(
        sent.contains(&format!(
            "relay=127.0.0.1[127.0.0.1]:{}",
            s.submission().port()
        )),
        "{sent}"
    );
    let maillog = pf.maillog();
    // Our certificate verified against the CA file (with `encrypt` a
    // failed check would only be logged as Untrusted).
    assert!(
        maillog.contains("Trusted TLS connection established to 127.0.0.1"),
        "{}",
        context()
    );
    let log = s.log();
    assert!(
        log.lines().any(|l| l.contains("authentication succeeded")
            && l.contains(&format!("client={OUTSIDE}"))
            && l.contains(ALICE)
            && l.contains("submission")),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
    drop(pf);
    let stored = s.stored();
    assert_eq!(stored.len(), 1, "{log}");
    let (env, content) = &stored[0];
    assert_eq!(env.origin.auth.as_deref(), Some(ALICE));
    assert_eq!(env.origin.protocol, "ESMTPSA");
    assert_eq!(env.origin.client_ip.to_string(), OUTSIDE);
    assert_eq!(env.sender.to_string(), ALICE);
    assert!(content.contains("Subject: via Postfix"), "{content}");
    // Postfix's own trace line, below ours.
    let ours = content.find("with ESMTPSA id").expect("our Received line");
    let postfix = content
        .find("by upstream.test (Postfix) with ESMTP id")
        .unwrap_or_else(|| panic!("no Received line of Postfix's in\n{content}"));
    assert!(ours < postfix, "{content}");
    assert!(!content.contains(PASSWORD), "{content}");
}

#[test]
fn postfix_with_a_wrong_password_defers_and_keeps_the_message() {
    let test = "postfix_with_a_wrong_password_defers_and_keeps_the_message";
    if skip_without_postfix(test) || skip_unless_root(test) {
        return;
    }
    let pf_dir = postfix_dir();
    let s = Submission::start("");
    let pf = postfix_client(
        pf_dir.path(),
        s.submission(),
        &s.cert_path,
        ALICE,
        "not the password",
    );
    let context = || {
        format!(
            "--- Postfix maillog ---\n{}\n--- mtad log ---\n{}",
            pf.maillog(),
            s.log()
        )
    };
    let ids = pf.submit(ALICE, "friend@remote.test", &[alice_message("refused")]);
    let deferred = wait_status(&pf, &ids[0], "deferred", context);
    assert!(
        deferred.contains("SASL authentication failed") && deferred.contains("535 5.7.8"),
        "{deferred}"
    );
    // Still in Postfix's queue (`postqueue -j`), for the reason mtad gave.
    let queue = pf.queue();
    let entry = queue
        .iter()
        .find(|m| m["queue_id"] == ids[0].as_str())
        .unwrap_or_else(|| panic!("{} is not in Postfix's queue: {queue:?}", ids[0]));
    let reason = entry["recipients"][0]["delay_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("535"), "{entry}");
    let log = s.log();
    assert!(
        log.lines().any(|l| l.contains("authentication failed")
            && l.contains(&format!("client={OUTSIDE}"))
            && l.contains(ALICE)),
        "{log}"
    );
    assert!(!log.contains("authentication succeeded"), "{log}");
    drop(pf);
    assert!(s.stored().is_empty(), "mtad took a message without AUTH");
}

/// `doveadm pw -s ARGON2ID`: Dovecot's own hash of `password`.
fn doveadm_argon2id(password: &str) -> String {
    let out = Command::new("doveadm")
        .args(["pw", "-s", "ARGON2ID", "-p", password])
        .output()
        .expect("doveadm");
    assert!(out.status.success(), "doveadm pw: {out:?}");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("{ARGON2ID}$argon2id$"), "{hash}");
    hash
}

#[test]
fn dovecot_checks_the_passwords_of_465_and_its_absence_is_454() {
    let test = "dovecot_checks_the_passwords_of_465_and_its_absence_is_454";
    if !have("swaks", "--version")
        || !have(DOVECOT, "--version")
        || !have("doveadm", "help")
        || skip_unless_root(test)
    {
        return;
    }
    // Dovecot's folder: removed after Dovecot (declared later) stops.
    let dir = tempfile::Builder::new()
        .prefix("mta-it-dovecot-")
        .tempdir()
        .expect("tempdir");
    let users = dir.path().join("users");
    std::fs::write(&users, format!("{ALICE}:{}\n", doveadm_argon2id(PASSWORD))).unwrap();
    let mut dovecot = Dovecot::start(dir.path(), &users);
    let s = Submission::start_in(
        Workdir::new(),
        &format!(
            "dovecot_socket = {:?}\n",
            dovecot.socket().display().to_string()
        ),
    );
    for mechanism in ["PLAIN", "LOGIN"] {
        let (ok, said) = swaks(
            s.submissions(),
            &[
                "--tlsc",
                "--auth",
                mechanism,
                "--auth-user",
                ALICE,
                "--auth-password",
                PASSWORD,
                "--from",
                ALICE,
                "--to",
                "friend@remote.test",
                "--header",
                &format!("Subject: {mechanism} through Dovecot"),
            ],
        );
        assert!(ok && said.contains("235 2.7.0"), "{mechanism}: {said}");
    }
    // One wrong password (Dovecot answers a failure after about 2 s).
    let mut c = Client::connect_tls_from(s.submissions(), outside(), &s.cert);
    c.cmd("EHLO client.test", "250");
    c.cmd(
        &format!("AUTH PLAIN {}", plain(ALICE, "not the password")),
        "535 5.7.8",
    );
    // Dovecot gone: the right password cannot be checked.
    dovecot.stop();
    c.cmd(
        &format!("AUTH PLAIN {}", plain(ALICE, PASSWORD)),
        "454 4.7.0",
    );
    c.cmd("QUIT", "221");
    // The reply can reach the client before mtad's log line reaches the
    // harness that reads its standard error.
    wait_until("the log line of the unavailable check", WAIT, || {
        s.log().contains("authentication unavailable")
    });
    let log = s.log();
    for (what, times) in [
        ("authentication succeeded", 2),
        ("authentication failed", 1),
        ("authentication unavailable", 1),
    ] {
        let n = log.lines().filter(|l| l.contains(what)).count();
        assert_eq!(n, times, "{what}:\n{log}");
    }
    assert!(!log.contains(PASSWORD), "{log}");
    let stored = s.stored();
    assert_eq!(stored.len(), 2, "{log}");
    for (env, content) in &stored {
        assert_eq!(env.origin.auth.as_deref(), Some(ALICE));
        assert_eq!(env.origin.protocol, "ESMTPSA");
        assert!(content.contains("through Dovecot"), "{content}");
    }
}

/// One AUTH PLAIN on 465 from 127.0.0.2; the reply's head.
fn auth_on_465(s: &Submission, user: &str, password: &str) -> String {
    let mut c = Client::connect_tls_from(s.submissions(), outside(), &s.cert);
    c.cmd("EHLO client.test", "250");
    let head = c
        .try_cmd(&format!("AUTH PLAIN {}", plain(user, password)))
        .expect("a reply to AUTH")
        .head();
    let _ = c.try_cmd("QUIT");
    head
}

#[test]
fn a_user_added_with_mta_init_may_log_in_after_graceful() {
    let work = Workdir::new();
    let users = work.path().join("users");
    std::fs::write(&users, format!("{ALICE}:{}\n", sha512_crypt(PASSWORD))).unwrap();
    let s = Submission::start_in(
        work,
        &format!("users_file = {:?}\n", users.display().to_string()),
    );
    let bob = "bob@local.test";
    let bobs = "bob's own Secret 42";
    assert_eq!(auth_on_465(&s, ALICE, PASSWORD), "235 2.7.0");
    assert_eq!(auth_on_465(&s, bob, bobs), "535 5.7.8");

    let o = init_with_input(
        &s.work,
        &["user", "add", bob, "--password-stdin"],
        &format!("{bobs}\n"),
    );
    assert!(o.status.success(), "mta-init user add: {}", text(&o));
    assert!(
        std::fs::read_to_string(&users).unwrap().contains(bob),
        "bob is not in the users file"
    );
    // Written, not yet read: mtad reads the file at start and at a
    // graceful restart only.
    assert_eq!(auth_on_465(&s, bob, bobs), "535 5.7.8");

    let o = init(&s.work, &["graceful"]);
    assert!(o.status.success(), "mta-init graceful: {}", text(&o));
    wait_until("the graceful restart", WAIT, || {
        status_json(&s.work).1["daemon"]["reloads"] == 1
    });
    assert_eq!(auth_on_465(&s, bob, bobs), "235 2.7.0", "{}", s.log());
    assert_eq!(auth_on_465(&s, ALICE, PASSWORD), "235 2.7.0");
    let log = s.log();
    assert_eq!(
        log.matches("users file loaded").count(),
        2,
        "loaded at start and at the graceful restart:\n{log}"
    );
    assert!(!log.contains(bobs), "{log}");
}
