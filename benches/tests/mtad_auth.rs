//! The load generator against the real mtad (its debug build, as the
//! workspace's integration tests start it: `cargo build --workspace
//! --bins` first, which `tests/run` does) with submission on 587-style
//! STARTTLS and 465-style implicit TLS, AUTH PLAIN against a users file
//! whose hash `openssl passwd -6` made (not our code), small counts.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mta_bench::{run, Login, Options, TlsMode};

const USER: &str = "bench@example.test";
const PASSWORD: &str = "bench-password-1";

/// A program of the workspace: `MTA_BIN_DIR`, else next to this test's
/// own directory (`target/<profile>/deps/..`).
fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("MTA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .expect("test executable path")
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_owned(),
    };
    let path = dir.join(name);
    assert!(
        path.metadata().is_ok_and(|m| m.is_file() && m.len() > 0),
        "{} is missing: build the programs first (cargo build --workspace --bins; tests/run does)",
        path.display()
    );
    path
}

/// A running mtad, killed on drop.
struct Mtad {
    child: Child,
    submission: SocketAddr,
    submissions: SocketAddr,
    dir: tempfile::TempDir,
}

impl Mtad {
    fn start() -> Mtad {
        let dir = tempfile::Builder::new()
            .prefix("mta-bench-it-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(d.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(d.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        let hash = Command::new("openssl")
            .args(["passwd", "-6", PASSWORD])
            .output()
            .expect("openssl");
        assert!(hash.status.success());
        let hash = String::from_utf8(hash.stdout).unwrap();
        std::fs::write(
            d.join("users"),
            format!("{USER}:{{SHA512-CRYPT}}{}\n", hash.trim()),
        )
        .unwrap();
        let p = |name: &str| format!("{:?}", d.join(name).display().to_string());
        // Mail stays queued: example.test goes to a closed port, the retry
        // is an hour away. The failure limits are out of the way of the
        // wrong-password run (its replies would wait 2 s each).
        let config = format!(
            "hostname = \"mx.test\"\nqueue_dir = {queue}\n\
             [smtp]\nlisten = [\"127.0.0.1:0\"]\n\
             [submission]\nlisten = [\"127.0.0.1:0\"]\n\
             [submissions]\nlisten = [\"127.0.0.1:0\"]\n\
             [tls]\ncertificate = {cert}\nkey = {key}\n\
             [auth]\nusers_file = {users}\nmax_messages_per_hour = 0\n\
             [auth.client_failures]\ndelay_after = 1000\nlockout_after = 1000\n\
             [spool]\nmin_free_space = 0\n[http]\nlisten = []\n[sendmail]\nenabled = false\n\
             [queue]\nretry_base = \"1h\"\n\
             [delivery]\nname_servers = [\"127.0.0.1:9\"]\n\
             [delivery.routes]\n\"example.test\" = \"127.0.0.1:9\"\n",
            queue = p("queue"),
            cert = p("cert.pem"),
            key = p("key.pem"),
            users = p("users"),
        );
        std::fs::write(d.join("mtad.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("mtad.log")).unwrap();
        let mut child = Command::new(bin("mtad"))
            .arg("--config")
            .arg(d.join("mtad.toml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start mtad");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (mut submission, mut submissions) = (None, None);
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(d.join("mtad.log")).unwrap_or_default();
                    panic!("mtad did not get ready ({e}); its log:\n{log}");
                }
            };
            let addr = |prefix: &str| line.strip_prefix(prefix).map(|a| a.parse().unwrap());
            if let Some(a) = addr("mtad: submission listening on ") {
                submission = Some(a);
            }
            if let Some(a) = addr("mtad: submissions listening on ") {
                submissions = Some(a);
            }
            if line.starts_with("mtad: ready") {
                break;
            }
        }
        Mtad {
            child,
            submission: submission.expect("587-style address announced"),
            submissions: submissions.expect("465-style address announced"),
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mtad.log")).unwrap_or_default()
    }

    /// The spool files in the queue (`msg/<bucket>/<id>`), read.
    fn queued(&self) -> Vec<Vec<u8>> {
        let msg = self.dir.path().join("queue/msg");
        let mut files = Vec::new();
        for bucket in std::fs::read_dir(msg).unwrap().flatten() {
            for file in std::fs::read_dir(bucket.path()).unwrap().flatten() {
                files.push(std::fs::read(file.path()).unwrap());
            }
        }
        files
    }
}

impl Drop for Mtad {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(server: SocketAddr, tls: TlsMode, password: &str, messages: u64) -> Options {
    Options {
        server,
        sessions: 2,
        messages,
        per_connection: 1,
        size: 2048,
        from: USER.into(),
        tls,
        auth: Some(Login {
            user: USER.into(),
            password: password.into(),
        }),
        timeout: Duration::from_secs(120),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_and_implicit_tls_with_auth_plain_against_mtad() {
    let mtad = Mtad::start();

    let o = options(mtad.submission, TlsMode::StartTls, PASSWORD, 6);
    let r = run(&o).await.unwrap();
    assert_eq!(r.accepted, 6, "{}\n{}", r.text(), mtad.log());
    assert_eq!(r.exit_code(), 0, "{}", r.text());
    assert_eq!(r.auth_replies.get(&235), Some(&6));
    assert_eq!(r.setup_latencies.len(), 6);

    let o = options(mtad.submissions, TlsMode::Implicit, PASSWORD, 4);
    let r = run(&o).await.unwrap();
    assert_eq!(r.accepted, 4, "{}\n{}", r.text(), mtad.log());
    assert_eq!(r.auth_replies.get(&235), Some(&4));

    // Without TLS on the implicit-TLS port, nothing works: the greeting
    // never comes in plain text.
    let o = Options {
        timeout: Duration::from_secs(3),
        messages: 1,
        sessions: 1,
        ..options(mtad.submissions, TlsMode::None, PASSWORD, 1)
    };
    let r = run(&o).await.unwrap();
    assert_eq!(r.accepted, 0);

    // Wrong passwords: each session is refused at AUTH and nothing is
    // stored.
    let o = options(mtad.submission, TlsMode::StartTls, "wrong-password-1", 3);
    let r = run(&o).await.unwrap();
    assert_eq!((r.accepted, r.failed), (0, 3), "{}", r.text());
    assert_eq!(r.auth_replies.get(&535), Some(&3), "{}", r.text());
    assert!(r.failures.distinct()[0].0.starts_with("AUTH: 535 5.7.8"));

    // mtad's side of it: ten logins, three failures, ten messages queued,
    // each through TLS and authenticated: `with ESMTPSA` in Received:
    // (RFC 3848). A loopback client may authenticate without TLS, so
    // this is what shows TLS was really used.
    let log = mtad.log();
    assert_eq!(log.matches("authentication succeeded").count(), 10, "{log}");
    assert_eq!(log.matches("authentication failed").count(), 3, "{log}");
    let queued = mtad.queued();
    assert_eq!(queued.len(), 10);
    for file in &queued {
        let text = String::from_utf8_lossy(file);
        assert!(text.contains("with ESMTPSA"), "{text}");
    }
}
