//! A private Postfix instance on loopback, for tests that need Debian's
//! Postfix as a real upstream (or relay) MTA.
//!
//! [`PrivatePostfix::start`] has `tests/postfix-instance.sh` (the private
//! instance the benchmarks use too) write its `main.cf` and `master.cf`,
//! with this instance's settings added, in a
//! folder of the test (config, queue and data directories all inside it),
//! listens on `127.0.0.1:PORT` only, accepts mail from loopback and relays
//! everything to one fixed next hop (`relayhost = [127.0.0.1]:PORT`, in
//! brackets: no MX lookup). Nothing in it asks DNS: no peer name lookup of
//! clients, `smtp_dns_support_level = disabled`. Deferred mail is retried
//! every second or two (`minimal_backoff_time = 1s`, `maximal_backoff_time
//! = 2s`, `queue_run_delay = 1s`), and [`flush`](PrivatePostfix::flush)
//! (`postqueue -f`) retries at once and forgets that the next hop was dead.
//!
//! Its log goes to `<dir>/maillog` ([`maillog`](PrivatePostfix::maillog)).
//! Dropping it stops it: `postfix stop`, then SIGKILL for the master if it
//! lingers, then for any process of this instance (found by the
//! `MAIL_CONFIG=<its config directory>` in its environment) still alive,
//! so that no Postfix process outlives the test, even a failed one.
//!
//! Needs root (the master runs as root, its workers as the `postfix` user)
//! and Debian's `postfix` package (`tests/install-peers.sh`); see
//! [`skip_without_postfix`] for tests on machines without it.

use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::Client;

const POSTFIX: &str = "/usr/sbin/postfix";
const POSTQUEUE: &str = "/usr/sbin/postqueue";

/// How long one Postfix command (start, stop, postqueue) may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// True, with a note on stderr, when Postfix is not installed and the test
/// should return at once. In CI (`CI` set) a missing Postfix fails the
/// test instead: `tests/run` installs it.
pub fn skip_without_postfix(test: &str) -> bool {
    if Path::new(POSTFIX).exists() && Path::new(POSTQUEUE).exists() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{POSTFIX} is missing in CI: tests/run installs it (tests/install-peers.sh)"
    );
    eprintln!("skipped {test}: Postfix is not installed (tests/install-peers.sh installs it)");
    true
}

/// A port on 127.0.0.1 that is free now and is not in the kernel's
/// ephemeral range, so that no outgoing connection of another test can
/// take it as its local port while a server is down between a stop and a
/// restart. Falls back to any free port when the ephemeral range starts
/// too low to leave room below it.
pub fn free_port() -> u16 {
    let lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|w| w.parse().ok()))
        .unwrap_or(32768u16);
    if lo > 12_000 {
        let span = u64::from(lo - 10_000);
        for _ in 0..200 {
            let port = 10_000 + (random() % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What a bounded command printed.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` with its output in files under `dir` (never pipes: a daemon
/// it starts could hold a pipe open for ever), killing it after `limit`.
pub fn run_bounded(
    cmd: &mut Command,
    dir: &Path,
    name: &str,
    limit: Duration,
) -> Result<Ran, String> {
    let out_path = dir.join(format!("{name}.stdout"));
    let err_path = dir.join(format!("{name}.stderr"));
    let out = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let err = File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let began = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("{cmd:?}: {e}")),
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| {
        let mut s = String::new();
        if let Ok(mut f) = File::open(p) {
            let _ = f.read_to_string(&mut s);
        }
        s
    };
    Ok(Ran {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    })
}

/// A running private Postfix; dropping it stops it (see the module docs).
pub struct PrivatePostfix {
    /// The instance's folder: `etc/` (config), `spool/` (queue), `data/`,
    /// `maillog`, and the output of the last commands.
    pub dir: PathBuf,
    /// `config_directory`: what `-c` names and `MAIL_CONFIG` holds.
    pub config_dir: PathBuf,
    /// `queue_directory`.
    pub queue_dir: PathBuf,
    /// Where its smtpd listens.
    pub addr: SocketAddr,
    /// `postfix start` was run: there may be processes to stop.
    started: bool,
}

impl PrivatePostfix {
    /// Starts an instance in `dir` (created if needed; it and the folders
    /// above it must be searchable by the `postfix` user: this makes `dir`
    /// mode 0755) with smtpd on `127.0.0.1:port`, relaying all mail to
    /// `relayhost` (e.g. `[127.0.0.1]:2525`). `main_cf_extra` is appended
    /// to `main.cf` (later lines win). Panics if it does not start.
    #[allow(dead_code)] // for the restart tests of issue 4
    pub fn start(dir: &Path, port: u16, relayhost: &str, main_cf_extra: &str) -> PrivatePostfix {
        PrivatePostfix::try_start(dir, port, relayhost, main_cf_extra)
            .unwrap_or_else(|e| panic!("private Postfix did not start: {e}"))
    }

    /// [`start`](PrivatePostfix::start) on a [`free_port`], trying other
    /// ports if the chosen one is taken before Postfix binds it.
    pub fn start_on_free_port(dir: &Path, relayhost: &str, main_cf_extra: &str) -> PrivatePostfix {
        let mut errors = Vec::new();
        for _ in 0..5 {
            match PrivatePostfix::try_start(dir, free_port(), relayhost, main_cf_extra) {
                Ok(pf) => return pf,
                Err(e) => errors.push(e),
            }
        }
        panic!("private Postfix did not start:\n{}", errors.join("\n---\n"));
    }

    /// [`start`](PrivatePostfix::start), with the reason on failure (the
    /// half-started instance is stopped before this returns).
    pub fn try_start(
        dir: &Path,
        port: u16,
        relayhost: &str,
        main_cf_extra: &str,
    ) -> Result<PrivatePostfix, String> {
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let config_dir = dir.join("etc");
        let queue_dir = dir.join("spool");
        let data_dir = dir.join("data");
        for d in [&config_dir, &queue_dir, &data_dir] {
            std::fs::create_dir_all(d).map_err(|e| io(&d.display().to_string(), e))?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", e))?;
        for a in dir.ancestors().skip(1) {
            let mode = std::fs::metadata(a)
                .map_err(|e| io("stat", e))?
                .permissions()
                .mode();
            if mode & 0o001 == 0 {
                return Err(format!(
                    "{} (mode {mode:o}) is not searchable by the postfix user",
                    a.display()
                ));
            }
        }
        let chown = run_bounded(
            Command::new("chown").arg("postfix").arg(&data_dir),
            dir,
            "chown",
            COMMAND_LIMIT,
        )?;
        if !chown.status.success() {
            return Err(format!(
                "chown postfix {}: {}",
                data_dir.display(),
                chown.text()
            ));
        }
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("chmod", e))?;

        // The shared configuration (tests/postfix-instance.sh, which the
        // benchmarks use too), then this instance's own settings.
        let extra = format!(
            "# A private instance for mtad's integration tests (tests/integration/postfix.rs).
queue_directory = {queue}
data_directory = {data}
myhostname = upstream.test
smtpd_recipient_restrictions = permit_mynetworks, reject
relayhost = {relayhost}
smtp_tls_security_level =
# Every delivery opens a connection of its own: nothing cached across a
# restart of the next hop.
smtp_connection_cache_on_demand = no
# Quick retries: a dead next hop is tried again within a second or two.
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
smtp_connect_timeout = 5s
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
{main_cf_extra}
",
            queue = queue_dir.display(),
            data = data_dir.display(),
            dir = dir.display(),
        );
        let extra_path = dir.join("main.cf.extra");
        std::fs::write(&extra_path, extra).map_err(|e| io("main.cf.extra", e))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postfix-instance.sh");
        let config = run_bounded(
            Command::new("bash")
                .arg(&script)
                .arg("config")
                .arg(&config_dir)
                .arg(port.to_string())
                .arg(&extra_path),
            dir,
            "config",
            COMMAND_LIMIT,
        )?;
        if !config.status.success() {
            return Err(format!(
                "{} config failed: {}",
                script.display(),
                config.text()
            ));
        }

        let mut pf = PrivatePostfix {
            dir: dir.to_owned(),
            config_dir,
            queue_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            started: false,
        };
        let check = pf.postfix(&["check"], "check")?;
        if !check.status.success() {
            return Err(format!("postfix check failed:\n{}", check.text()));
        }
        pf.started = true;
        // `postfix start` prints its errors only on a terminal: give it one
        // with script(1) when there is one to be had.
        let start = if Path::new("/usr/bin/script").exists() {
            let line = format!("{POSTFIX} -c '{}' start", pf.config_dir.display());
            run_bounded(
                Command::new("/usr/bin/script").args(["-qec", &line, "/dev/null"]),
                &pf.dir,
                "start",
                COMMAND_LIMIT,
            )?
        } else {
            pf.postfix(&["start"], "start")?
        };
        if !start.status.success() {
            return Err(format!(
                "postfix start on 127.0.0.1:{port} failed:\n{}\n{}",
                start.text(),
                pf.maillog()
            ));
        }
        // Ready when smtpd answers (the master binds before `start` returns).
        let began = Instant::now();
        loop {
            if let Ok(s) = std::net::TcpStream::connect(pf.addr) {
                drop(s);
                break;
            }
            if began.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "Postfix is not listening on {}:\n{}",
                    pf.addr,
                    pf.maillog()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut c = Client::connect(pf.addr);
        if c.banner.code != 220 {
            return Err(format!("Postfix greeted with {}", c.banner.text()));
        }
        c.cmd("QUIT", "221");
        Ok(pf)
    }

    fn postfix(&self, args: &[&str], name: &str) -> Result<Ran, String> {
        run_bounded(
            Command::new(POSTFIX)
                .arg("-c")
                .arg(&self.config_dir)
                .args(args),
            &self.dir,
            name,
            COMMAND_LIMIT,
        )
    }

    fn postqueue(&self, flag: &str, name: &str) -> Ran {
        let ran = run_bounded(
            Command::new(POSTQUEUE)
                .arg("-c")
                .arg(&self.config_dir)
                .arg(flag),
            &self.dir,
            name,
            COMMAND_LIMIT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            ran.status.success(),
            "postqueue {flag} failed: {}",
            ran.text()
        );
        ran
    }

    /// `postqueue -f`: attempt every queued message now, next hops that
    /// were found dead included.
    pub fn flush(&self) {
        self.postqueue("-f", "flush");
    }

    /// `postqueue -j`: one JSON object per queued message (`queue_name`,
    /// `queue_id`, `recipients` with their `delay_reason`, ...).
    pub fn queue(&self) -> Vec<serde_json::Value> {
        self.postqueue("-j", "queue")
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("postqueue -j: {e}: {l}")))
            .collect()
    }

    /// How many messages are queued, in any of Postfix's queues.
    pub fn queue_len(&self) -> usize {
        self.queue().len()
    }

    /// The instance's log so far.
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// The `status=` of every delivery attempt logged for queue id `id`,
    /// in order (`sent`, `deferred`, `bounced`...), with the whole line.
    pub fn statuses(&self, id: &str) -> Vec<(String, String)> {
        let tag = format!(" {id}: to=<");
        self.maillog()
            .lines()
            .filter(|l| l.contains(&tag))
            .filter_map(|l| {
                let status = l.split(", status=").nth(1)?.split(' ').next()?.to_owned();
                Some((status, l.to_owned()))
            })
            .collect()
    }

    /// Submits `content` (CRLF lines, no dot-stuffing needed) over SMTP,
    /// one transaction per message on one connection; returns Postfix's
    /// queue id for each.
    pub fn submit(&self, from: &str, to: &str, contents: &[String]) -> Vec<String> {
        let mut c = Client::connect(self.addr);
        c.cmd("EHLO client.test", "250");
        let ids = contents
            .iter()
            .map(|content| {
                let r = c.send_message(from, &[to], content);
                assert_eq!(r.code, 250, "Postfix refused a message: {}", r.text());
                r.text()
                    .rsplit("queued as ")
                    .next()
                    .expect("queue id in the 250 reply")
                    .trim()
                    .to_owned()
            })
            .collect();
        c.cmd("QUIT", "221");
        ids
    }

    /// The master's PID, while it runs.
    fn master_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.queue_dir.join("pid/master.pid")).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        alive(pid).then_some(pid)
    }

    /// Every live process of this instance: `MAIL_CONFIG` in its
    /// environment names our config directory.
    pub fn processes(&self) -> Vec<i32> {
        let want = format!("MAIL_CONFIG={}", self.config_dir.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
                    .unwrap_or(false)
            })
            .filter(|pid| alive(*pid))
            .collect()
    }

    /// Stops the instance; returns what had to be killed (empty when
    /// `postfix stop` was enough). Idempotent.
    pub fn stop(&mut self) -> Vec<String> {
        if !self.started {
            return Vec::new();
        }
        self.started = false;
        let mut forced = Vec::new();
        let master = self.master_pid();
        let _ = self.postfix(&["stop"], "stop");
        if let Some(pid) = master {
            if !wait_gone(&[pid], Duration::from_secs(10)) {
                forced.push(format!("master {pid}"));
                kill9(pid);
            }
        }
        // Workers exit once the master is gone; make sure of it.
        let left = self.processes();
        if !wait_gone(&left, Duration::from_secs(5)) {
            for pid in self.processes() {
                forced.push(format!("process {pid}"));
                kill9(pid);
            }
            wait_gone(&self.processes(), Duration::from_secs(5));
        }
        forced
    }
}

impl Drop for PrivatePostfix {
    fn drop(&mut self) {
        let forced = self.stop();
        if !forced.is_empty() {
            eprintln!(
                "private Postfix in {}: killed {}",
                self.dir.display(),
                forced.join(", ")
            );
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(close) => !matches!(
                stat[close + 1..].trim_start().chars().next(),
                Some('Z' | 'X')
            ),
            None => false,
        },
        Err(_) => false,
    }
}

fn wait_gone(pids: &[i32], limit: Duration) -> bool {
    let began = Instant::now();
    loop {
        if !pids.iter().any(|p| alive(*p)) {
            return true;
        }
        if began.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}
