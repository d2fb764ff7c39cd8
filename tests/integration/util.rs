//! The harness: the real mtad on 127.0.0.1:0 with a queue of its own, and
//! an SMTP client that reads like a transcript.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any single read in a test may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A program built by this workspace (`tests/run` builds them first).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("MTA_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/integration-<hash>
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_owned()
        }
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the programs first (tests/run does: cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A scratch directory with a config file that puts everything inside it.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::Builder::new()
                .prefix("mta-it-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn queue(&self) -> PathBuf {
        self.path().join("queue")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("mta.toml")
    }

    /// Writes the config: listen on port 0, queue and Maildir inside the
    /// workdir, no free-space floor, then `extra` (TOML that may open its
    /// own tables). `top` goes before any table.
    ///
    /// Unless `extra` says otherwise, mail stays queued: `remote.test` is
    /// routed to a closed loopback port (connection refused: deferred at
    /// once) and the next retry is an hour away.
    pub fn write_config(&self, top: &str, extra: &str) -> PathBuf {
        let mut text = format!(
            "hostname = \"mx.test\"\nqueue_dir = {:?}\n{top}\n[spool]\nmin_free_space = 0\n{extra}\n",
            self.queue().display().to_string()
        );
        if !extra.contains("[smtp]") {
            text.push_str("\n[smtp]\nlisten = [\"127.0.0.1:0\"]\n");
        }
        if !extra.contains("[maildir]") {
            let root = self.path().join("maildir").display().to_string();
            text.push_str(&format!("\n[maildir]\nroot = {root:?}\n"));
        }
        if !extra.contains("[delivery]") {
            text.push_str(
                "\n[delivery]\nname_servers = [\"127.0.0.1:9\"]\ndns_timeout = \"1s\"\n\
                 [delivery.routes]\n\"remote.test\" = \"127.0.0.1:9\"\n",
            );
        }
        if !extra.contains("[http]") {
            text.push_str("\n[http]\nlisten = [\"127.0.0.1:0\"]\n");
        }
        if !extra.contains("[sendmail]") {
            // Tests run as root in CI: the default local socket and drop
            // directory are system paths shared by every mtad.
            text.push_str("\n[sendmail]\nenabled = false\n");
        }
        if !extra.contains("[queue]") {
            text.push_str("\n[queue]\nretry_base = \"1h\"\n");
        }
        std::fs::write(self.config_path(), text).expect("write config");
        self.config_path()
    }
}

/// A running mtad.
pub struct Mtad {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin HTTP server, when one is configured.
    pub http: Option<SocketAddr>,
    /// The submission role's first address (port 587's), when it listens.
    pub submission: Option<SocketAddr>,
    /// The implicit-TLS submission role's first address (port 465's).
    pub submissions: Option<SocketAddr>,
    /// What mtad wrote to its standard error so far (its log).
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Mtad {
    /// Starts mtad with the workdir's config and waits for `ready`.
    pub fn start(work: &Workdir) -> Mtad {
        Mtad::try_start(work).unwrap_or_else(|e| panic!("mtad did not start: {e}"))
    }

    pub fn try_start(work: &Workdir) -> Result<Mtad, String> {
        Mtad::try_start_with(work, |_| {})
    }

    /// [`try_start`](Self::try_start), with the command adjusted first
    /// (a umask, another user).
    pub fn try_start_with(
        work: &Workdir,
        adjust: impl FnOnce(&mut Command),
    ) -> Result<Mtad, String> {
        Mtad::try_start_from(&bin("mtad"), work, adjust)
    }

    /// [`try_start_with`](Self::try_start_with), running `program` (a
    /// copy of mtad elsewhere).
    pub fn try_start_from(
        program: &Path,
        work: &Workdir,
        adjust: impl FnOnce(&mut Command),
    ) -> Result<Mtad, String> {
        let mut command = Command::new(program);
        command
            .arg("--config")
            .arg(work.config_path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().map_err(|e| e.to_string())?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut addr = None;
        let mut http = None;
        let mut submission = None;
        let mut submissions = None;
        let mut line = String::new();
        loop {
            line.clear();
            let n = stdout.read_line(&mut line).map_err(|e| e.to_string())?;
            if n == 0 {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let _ = child.wait();
                return Err(format!("mtad exited before ready: {err}"));
            }
            if let Some(a) = line.trim().strip_prefix("mtad: smtp listening on ") {
                addr = Some(a.parse().expect("announced address"));
            }
            if let Some(a) = line.trim().strip_prefix("mtad: http listening on ") {
                http = Some(a.parse().expect("announced address"));
            }
            if let Some(a) = line.trim().strip_prefix("mtad: submission listening on ") {
                submission.get_or_insert(a.parse().expect("announced address"));
            }
            if let Some(a) = line.trim().strip_prefix("mtad: submissions listening on ") {
                submissions.get_or_insert(a.parse().expect("announced address"));
            }
            if line.starts_with("mtad: ready") {
                break;
            }
        }
        // Keep stderr drained so the daemon never blocks on a full pipe,
        // and kept for `log()`.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut err) = child.stderr.take() {
            let kept = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let all = kept.lock().unwrap();
                if !all.is_empty() {
                    eprintln!("--- mtad stderr ---\n{}", String::from_utf8_lossy(&all));
                }
            });
        }
        Ok(Mtad {
            child,
            addr: addr.ok_or("no address announced")?,
            http,
            submission,
            submissions,
            stdout,
            stderr,
        })
    }

    /// mtad's log (its standard error) so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// After a restart (the same process re-executes itself): waits for
    /// the new image's `ready` line and returns the SMTP address it
    /// announced. Fails if the process exits instead.
    pub fn await_ready_again(&mut self) -> SocketAddr {
        let mut addr = None;
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read mtad stdout");
            assert!(n > 0, "mtad exited instead of restarting");
            if let Some(a) = line.trim().strip_prefix("mtad: smtp listening on ") {
                addr = Some(a.parse().expect("announced address"));
            }
            if line.starts_with("mtad: ready") {
                return addr.expect("an address announced before ready");
            }
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// SIGKILL: the crash every acknowledged message must survive.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.wait_exit()
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let mut rest = String::new();
                let _ = self.stdout.read_to_string(&mut rest);
                return status;
            }
            assert!(
                began.elapsed() < Duration::from_secs(60),
                "mtad did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mtad {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `mta-init --config <the workdir's config> ARGS`.
pub fn init(work: &Workdir, args: &[&str]) -> std::process::Output {
    Command::new(bin("mta-init"))
        .arg("--config")
        .arg(work.config_path())
        .args(args)
        .env_remove("MTA_CONFIG")
        .output()
        .expect("run mta-init")
}

/// mta-init as a program nobody may run: the build's own when every
/// directory above it lets others through, else a copy in the workdir.
pub fn init_for_nobody(work: &Workdir) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let built = bin("mta-init");
    let open = built
        .ancestors()
        .all(|p| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o001 != 0));
    if open {
        return built;
    }
    let copy = work.path().join("mta-init");
    std::fs::copy(&built, &copy).expect("copy mta-init");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// Starting a command in a session of its own (setsid), away from the
/// test's terminal if it has one: a password prompt can never wait for a
/// person.
pub trait SpawnDetached {
    fn spawn_detached(&mut self) -> std::io::Result<std::process::Child>;
}

impl SpawnDetached for Command {
    fn spawn_detached(&mut self) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            self.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            })
        }
        .spawn()
    }
}

/// [`init`], with `input` on its standard input (`mta-init user add
/// --password-stdin`), detached from any terminal.
pub fn init_with_input(work: &Workdir, args: &[&str], input: &str) -> std::process::Output {
    let mut child = Command::new(bin("mta-init"))
        .arg("--config")
        .arg(work.config_path())
        .args(args)
        .env_remove("MTA_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_detached()
        .expect("run mta-init");
    let mut stdin = child.stdin.take().expect("stdin");
    // A command refused before it reads its input may be gone already:
    // a broken pipe is its answer, not the test's failure.
    match stdin.write_all(input.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        result => result.expect("write mta-init's input"),
    }
    drop(stdin);
    child.wait_with_output().expect("mta-init ends")
}

/// `mta-init queue ARGS`, which must succeed; its standard output.
pub fn queue(work: &Workdir, args: &[&str]) -> String {
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    let o = init(work, &all);
    assert!(o.status.success(), "mta-init {all:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `mta-init queue list --json ARGS`: one object per message.
pub fn list(work: &Workdir, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["list", "--json"];
    all.extend_from_slice(args);
    queue(work, &all)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Standard output then standard error, as text.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `mta-init status --json`: the exit code and the report.
pub fn status_json(work: &Workdir) -> (i32, serde_json::Value) {
    let o = init(work, &["status", "--json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap(), v)
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal");
}

/// One SMTP reply as read off the wire.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `250 2.0.0` style: the code and, when present, the enhanced code.
    pub fn head(&self) -> String {
        let last = self.lines.last().map(String::as_str).unwrap_or("");
        let code = &last[..3];
        let enhanced = last
            .get(4..)
            .and_then(|rest| rest.split(' ').next())
            .filter(|word| {
                let parts: Vec<&str> = word.split('.').collect();
                parts.len() == 3
                    && parts
                        .iter()
                        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            });
        match enhanced {
            Some(e) => format!("{code} {e}"),
            None => code.to_owned(),
        }
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking SMTP client with bounded reads.
pub struct Client {
    stream: BufReader<Box<dyn Stream>>,
    pub banner: Reply,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut stream = BufReader::new(Box::new(tcp) as Box<dyn Stream>);
        let banner = read_reply(&mut stream).expect("banner");
        Client { stream, banner }
    }

    /// A client connecting from `from` (another loopback address, so as
    /// to be outside `relay_networks`).
    pub fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Client {
        Client::from_stream(tcp_from(addr, from)).expect("banner")
    }

    /// [`connect_tls`](Self::connect_tls) from `from`.
    pub fn connect_tls_from(
        addr: SocketAddr,
        from: std::net::IpAddr,
        cert: &rustls::pki_types::CertificateDer<'static>,
    ) -> Client {
        let tcp = tcp_from(addr, from);
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut stream = BufReader::new(tls_over(Box::new(tcp), cert));
        let banner = read_reply(&mut stream).expect("banner over TLS");
        Client { stream, banner }
    }

    /// A client over a connection already made; None when no banner
    /// comes (the server closed or reset it).
    pub fn from_stream(tcp: TcpStream) -> Option<Client> {
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut stream = BufReader::new(Box::new(tcp) as Box<dyn Stream>);
        let banner = read_reply(&mut stream)?;
        Some(Client { stream, banner })
    }

    /// Sends one command line; None when the connection is gone.
    pub fn try_cmd(&mut self, line: &str) -> Option<Reply> {
        let w = self.stream.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        w.flush().ok()?;
        self.try_reply()
    }

    /// [`send_message`](Self::send_message) for a server that may go away:
    /// the first reply that is not the expected one, or the final reply;
    /// None when the connection is gone.
    pub fn try_send_message(&mut self, from: &str, to: &[&str], content: &str) -> Option<Reply> {
        let r = self.try_cmd(&format!("MAIL FROM:<{from}>"))?;
        if r.code != 250 {
            return Some(r);
        }
        for rcpt in to {
            let r = self.try_cmd(&format!("RCPT TO:<{rcpt}>"))?;
            if r.code != 250 {
                return Some(r);
            }
        }
        let r = self.try_cmd("DATA")?;
        if r.code != 354 {
            return Some(r);
        }
        let w = self.stream.get_mut();
        w.write_all(content.as_bytes()).ok()?;
        w.write_all(b".\r\n").ok()?;
        w.flush().ok()?;
        self.try_reply()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        let w = self.stream.get_mut();
        w.write_all(bytes).expect("write");
        w.flush().expect("flush");
    }

    /// Reads one reply; None when the server closed the connection.
    pub fn try_reply(&mut self) -> Option<Reply> {
        read_reply(&mut self.stream)
    }

    pub fn reply(&mut self) -> Reply {
        self.try_reply().expect("server closed the connection")
    }

    /// Sends one command line and checks the reply's head (`"250 2.1.0"`
    /// or just `"250"`).
    pub fn cmd(&mut self, line: &str, expect: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        let r = self.reply();
        assert!(
            r.head().starts_with(expect),
            "{line:?}: expected {expect}, got {}",
            r.text()
        );
        r
    }

    /// True once the server has closed: the next read sees EOF.
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// EHLO, MAIL, RCPT, DATA with `content` (already CRLF, not
    /// dot-stuffed); returns the final reply.
    pub fn send_message(&mut self, from: &str, to: &[&str], content: &str) -> Reply {
        self.cmd(&format!("MAIL FROM:<{from}>"), "250");
        for rcpt in to {
            self.cmd(&format!("RCPT TO:<{rcpt}>"), "250");
        }
        self.cmd("DATA", "354");
        self.send(content.as_bytes());
        self.send(b".\r\n");
        self.reply()
    }

    /// STARTTLS and the handshake, trusting `cert`.
    pub fn starttls(mut self, cert: &rustls::pki_types::CertificateDer<'static>) -> Client {
        self.cmd("STARTTLS", "220");
        self.after_starttls_reply(cert)
    }

    /// The handshake, once the 220 to STARTTLS has been read.
    pub fn after_starttls_reply(self, cert: &rustls::pki_types::CertificateDer<'static>) -> Client {
        assert!(
            self.stream.buffer().is_empty(),
            "data after 220 to STARTTLS"
        );
        Client {
            stream: BufReader::new(tls_over(self.stream.into_inner(), cert)),
            banner: self.banner,
        }
    }

    /// Implicit TLS (RFC 8314, port 465): the handshake first, trusting
    /// `cert`, then the banner over TLS.
    pub fn connect_tls(
        addr: SocketAddr,
        cert: &rustls::pki_types::CertificateDer<'static>,
    ) -> Client {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut stream = BufReader::new(tls_over(Box::new(tcp), cert));
        let banner = read_reply(&mut stream).expect("banner over TLS");
        Client { stream, banner }
    }
}

/// A TCP connection to `addr` from the address `from`.
pub fn tcp_from(addr: SocketAddr, from: std::net::IpAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind the client address");
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

/// A rustls client configuration (rustls's defaults: its suite order,
/// resumption with an in-memory session cache) trusting only `cert`.
pub fn client_trusting(cert: &rustls::pki_types::CertificateDer<'static>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test certificate");
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A TLS client stream over `tcp` for `localhost`, trusting `cert` only.
fn tls_over(
    tcp: Box<dyn Stream>,
    cert: &rustls::pki_types::CertificateDer<'static>,
) -> Box<dyn Stream> {
    let config = client_trusting(cert);
    let conn = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap())
        .expect("TLS client");
    Box::new(rustls::StreamOwned::new(conn, tcp))
}

fn read_reply<R: BufRead>(r: &mut R) -> Option<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        assert!(line.len() >= 3, "short reply line {line:?}");
        let code: u16 = line[..3].parse().expect("reply code");
        let more = line.as_bytes().get(3) == Some(&b'-');
        lines.push(line);
        if !more {
            return Some(Reply { code, lines });
        }
    }
}

/// A self-signed certificate for `localhost`, written as PEM files in
/// `dir`; returns the TOML `[tls]` table and the certificate to trust.
pub fn tls_files(dir: &Path) -> (String, rustls::pki_types::CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let table = format!(
        "[tls]\ncertificate = {:?}\nkey = {:?}\n",
        cert_path.display().to_string(),
        key_path.display().to_string()
    );
    (table, certified.cert.der().clone())
}

/// A small valid message with a unique subject.
pub fn message(subject: &str) -> String {
    format!("From: a@b.test\r\nTo: x@remote.test\r\nSubject: {subject}\r\n\r\nHello.\r\n")
}

/// Opens the spool of a stopped (or killed) daemon and returns every
/// message's envelope and content, as the spool files hold them.
pub fn spool_contents(
    queue: &Path,
) -> Vec<(mta_envelope::QueueId, mta_envelope::Envelope, Vec<u8>)> {
    let (spool, _) = mta_spool::Spool::open(mta_spool::SpoolConfig {
        dir: queue.to_owned(),
        min_free_space: 0,
        max_batch: 16,
        rescan_rate: 0,
        writers: 2,
        index_cache: 0,
    })
    .expect("open spool");
    spool.wait_rescan();
    let out = spool
        .ids()
        .expect("ids")
        .into_iter()
        .map(|id| {
            let (env, content) = spool.read(id).expect("read");
            (id, env, content)
        })
        .collect();
    spool.close().expect("close spool");
    out
}

/// Waits (bounded) until `f` holds; false if it never did.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let began = Instant::now();
    while !f() {
        if began.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Waits (bounded) until `f` holds.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let began = Instant::now();
    while !f() {
        assert!(began.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// Authenticated submission (RFC 6409 on 587, RFC 8314 on 465, SMTP AUTH
// RFC 4954): the set-up tests/integration/submission.rs and
// submission_peers.rs share.

/// The password of every user [`Submission::start`] writes.
pub const PASSWORD: &str = "correct horse 7";

/// A loopback address outside the `relay_networks` of a [`Submission`]
/// (127.0.0.1/32), so that only AUTH lets its clients relay.
pub const OUTSIDE: &str = "127.0.0.2";

/// [`OUTSIDE`] as an address.
pub fn outside() -> std::net::IpAddr {
    OUTSIDE.parse().unwrap()
}

/// Whether a real peer is installed; outside CI a missing one skips the
/// test with a note, in CI it fails (tests/install-peers.sh installs it).
pub fn have(program: &str, arg: &str) -> bool {
    if Command::new(program).arg(arg).output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is missing in CI: tests/install-peers.sh installs it"
    );
    eprintln!("skipped: {program} is not installed (tests/install-peers.sh installs it)");
    false
}

/// `openssl passwd -6`: a SHA-512 crypt hash of `password`, made by an
/// independent implementation, never by our own code.
pub fn sha512_crypt(password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", "-6", password])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// mtad with the submission roles (587 and 465, a self-signed
/// certificate for `localhost`), relaying for 127.0.0.1 only, the local
/// domain `local.test`, logging at `info`.
pub struct Submission {
    pub work: Workdir,
    pub mtad: Mtad,
    /// The certificate to trust.
    pub cert: rustls::pki_types::CertificateDer<'static>,
    /// The same, as a PEM file (for clients that read one).
    pub cert_path: PathBuf,
}

impl Submission {
    /// Two users (alice@local.test and bob@local.test, both with
    /// [`PASSWORD`]) in a users file, and `auth_extra` in `[auth]`.
    pub fn start(auth_extra: &str) -> Submission {
        let work = Workdir::new();
        let hash = sha512_crypt(PASSWORD);
        let users = work.path().join("users");
        std::fs::write(
            &users,
            format!("alice@local.test:{hash}\nbob@local.test:{{SHA512-CRYPT}}{hash}\n"),
        )
        .unwrap();
        Submission::start_in(
            work,
            &format!(
                "users_file = {:?}\n{auth_extra}",
                users.display().to_string()
            ),
        )
    }

    /// In `work` (where the caller may have written a users file), with
    /// `auth` as the whole of `[auth]`.
    pub fn start_in(work: Workdir, auth: &str) -> Submission {
        let (tls, cert) = tls_files(work.path());
        work.write_config(
            "",
            &format!(
                "{tls}\n[smtp]\nlisten = [\"127.0.0.1:0\"]\nrelay_networks = [\"127.0.0.1/32\"]\n\
                 local_domains = [\"local.test\"]\n\
                 [submission]\nlisten = [\"127.0.0.1:0\"]\n\
                 [submissions]\nlisten = [\"127.0.0.1:0\"]\n\
                 [auth]\n{auth}\n"
            ),
        );
        let mtad = Mtad::try_start_with(&work, |c| {
            c.env("RUST_LOG", "info");
        })
        .expect("mtad starts");
        let cert_path = work.path().join("cert.pem");
        Submission {
            work,
            mtad,
            cert,
            cert_path,
        }
    }

    /// Port 587's address.
    pub fn submission(&self) -> SocketAddr {
        self.mtad.submission.expect("587 announced")
    }

    /// Port 465's address.
    pub fn submissions(&self) -> SocketAddr {
        self.mtad.submissions.expect("465 announced")
    }

    /// mtad's log so far.
    pub fn log(&self) -> String {
        self.mtad.log()
    }

    /// Stops mtad; every stored message's envelope and content.
    pub fn stored(self) -> Vec<(mta_envelope::Envelope, String)> {
        let status = self.mtad.terminate();
        assert!(status.success(), "{status}");
        spool_contents(&self.work.queue())
            .into_iter()
            .map(|(_, env, content)| (env, String::from_utf8_lossy(&content).into_owned()))
            .collect()
    }
}

/// Runs swaks against `addr` from [`OUTSIDE`] with `args` added; whether
/// it succeeded, and all it printed.
pub fn swaks(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args([
            "--server",
            &addr.ip().to_string(),
            "--port",
            &addr.port().to_string(),
            "--local-interface",
            OUTSIDE,
            "--timeout",
            "20",
        ])
        .args(args)
        .output()
        .expect("run swaks");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `AUTH PLAIN` initial response: NUL user NUL password, base64 (RFC
/// 4616). Both go in as arguments, so any quote in them is theirs.
pub fn plain(user: &str, password: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import base64,sys; a = sys.argv; \
             sys.stdout.write(base64.b64encode(('\\0' + a[1] + '\\0' + a[2]).encode()).decode())",
        )
        .arg(user)
        .arg(password)
        .output()
        .expect("python3");
    assert!(out.status.success(), "python3: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}
