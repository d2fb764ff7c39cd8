//! The Dovecot backend against a real Dovecot: a private instance on a
//! config, socket and users file of the test's own (the set-up of
//! /work/shared/PEERS.md, "Dovecot as a SASL backend"), with no mail
//! protocols, only the `auth-client` socket.
//!
//! The users file is written by our editor, so this also shows that
//! Dovecot takes the file and the hashes we write. Needs root (Dovecot's
//! processes run as root in this set-up) and dovecot-core; without them
//! the test is skipped with a note, or fails in CI.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use common::{first_line, skip_without};
use mta_auth::{Backend, UsersEditor, UsersFile, Verdict, Verifier, VerifierSettings};
use mta_testkit::dovecot::{Dovecot, DOVECOT};

const PASSWORD: &str = "p@ss wörd 7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// One check: who, which password, from where, under TLS or not.
struct Row {
    user: &'static str,
    password: &'static str,
    client: &'static str,
    secured: bool,
    want: Verdict,
}

/// Runs the rows at once (each Dovecot failure takes about 2 s; apart,
/// they would add up) and compares the verdicts.
async fn check_rows(verifier: &Arc<Verifier>, rows: &[Row], backend: &str) {
    let tasks: Vec<_> = rows
        .iter()
        .map(|row| {
            let v = Arc::clone(verifier);
            let (user, password, client, secured) =
                (row.user, row.password, ip(row.client), row.secured);
            tokio::spawn(async move { v.verify(user, password.as_bytes(), client, secured).await })
        })
        .collect();
    for (row, task) in rows.iter().zip(tasks) {
        let got = task.await.unwrap();
        assert_eq!(
            got, row.want,
            "{backend}: {} with {:?} from {}",
            row.user, row.password, row.client
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_backend_against_a_real_dovecot() {
    if skip_without(
        "dovecot_backend_against_a_real_dovecot",
        DOVECOT,
        "dovecot-core",
    ) {
        return;
    }
    if !is_root() {
        assert!(std::env::var_os("CI").is_none(), "CI runs as root");
        eprintln!("skipped dovecot_backend_against_a_real_dovecot: the private Dovecot needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    // Our editor writes the file, with our default argon2id parameters...
    let editor = UsersEditor::new(&users);
    editor.add("joe@example.com", PASSWORD.as_bytes()).unwrap();
    editor.add("ann", b"another one").unwrap();
    // ...beside a line Dovecot's own tool made.
    let bob = first_line("doveadm", &["pw", "-s", "SHA512-CRYPT", "-p", PASSWORD]);
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&format!("bob:{bob}::::\n"));
    std::fs::write(&users, text).unwrap();

    let mut dovecot = Dovecot::start(dir.path(), &users);
    let settings = VerifierSettings {
        max_checks: 1,
        // Dovecot delays failures, more for a client that failed before.
        timeout: Duration::from_secs(30),
        max_wait: Duration::from_secs(30),
        ..VerifierSettings::default()
    };
    let verifier = Arc::new(Verifier::new(
        Backend::Dovecot {
            socket: dovecot.socket(),
        },
        settings.clone(),
    ));
    let accepted = |user: &str| Verdict::Accepted {
        user: user.to_owned(),
    };
    // Each failing row from its own address: Dovecot's auth penalty
    // grows the delay for an address that failed before.
    let rows = [
        Row {
            user: "joe@example.com",
            password: PASSWORD,
            client: "127.0.0.1",
            secured: true,
            want: accepted("joe@example.com"),
        },
        Row {
            user: "joe@example.com",
            password: PASSWORD,
            client: "2001:db8::5",
            secured: false,
            want: accepted("joe@example.com"),
        },
        Row {
            user: "bob",
            password: PASSWORD,
            client: "192.0.2.11",
            secured: true,
            want: accepted("bob"),
        },
        Row {
            user: "joe@example.com",
            password: "p@ss wörd 8",
            client: "192.0.2.12",
            secured: true,
            want: Verdict::Rejected,
        },
        Row {
            user: "nobody",
            password: PASSWORD,
            client: "192.0.2.13",
            secured: true,
            want: Verdict::Rejected,
        },
        Row {
            user: "ann",
            password: PASSWORD,
            client: "192.0.2.14",
            secured: false,
            want: Verdict::Rejected,
        },
    ];
    check_rows(&verifier, &rows, "dovecot").await;
    let counts = verifier.counts();
    assert_eq!(
        (counts.accepted, counts.rejected, counts.unavailable),
        (3, 3, 0)
    );
    // Dovecot saw the client address we sent (rip=).
    let mut logged = false;
    for _ in 0..200 {
        if dovecot.log().contains("(joe@example.com,192.0.2.12") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        logged,
        "no failure for 192.0.2.12 in the log:\n{}",
        dovecot.log()
    );

    // The same file through our own backend gives the same verdicts.
    let (file, warnings) = UsersFile::load(&users).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    verifier.reload(Backend::UsersFile(Arc::new(file)), settings);
    check_rows(&verifier, &rows, "users file").await;

    // A Dovecot that is gone: unavailable (454), not rejected (535).
    dovecot.stop();
    verifier.reload(
        Backend::Dovecot {
            socket: dir.path().join("auth-client"),
        },
        VerifierSettings::default(),
    );
    let verdict = verifier
        .verify(
            "joe@example.com",
            PASSWORD.as_bytes(),
            ip("127.0.0.1"),
            true,
        )
        .await;
    assert!(matches!(verdict, Verdict::Unavailable(_)), "{verdict:?}");
}
