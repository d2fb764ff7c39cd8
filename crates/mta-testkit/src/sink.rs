//! A scriptable SMTP server on loopback, for testing the SMTP client.
//!
//! [`Sink`] listens on a 127.0.0.x address, speaks enough ESMTP for a
//! client (EHLO with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, STARTTLS as
//! [`SinkConfig`] says; HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), answers
//! RCPT, end of data and the greeting as the test scripts, and records
//! every message it accepts as a [`Received`]. It stops when dropped.
//!
//! It is strict where a client could be wrong: ESMTP parameters of an
//! extension it did not advertise are refused (555), DATA without an
//! accepted recipient is refused (554), and only `CRLF.CRLF` ends the text.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// How long the sink waits for a client to say something before it hangs
/// up, so that no test can leave a connection open for ever.
const IDLE: Duration = Duration::from_secs(60);

/// The most message text the sink holds for one message.
const MAX_DATA: usize = 64 * 1024 * 1024;

/// What the sink offers and how fast it answers.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Where to listen: a loopback address, port 0 for any free port.
    pub addr: SocketAddr,
    /// Offer STARTTLS with a self-signed certificate for `localhost` and
    /// `tls_names`.
    pub tls: bool,
    /// More names for the certificate.
    pub tls_names: Vec<String>,
    /// Offer this chain and key instead of a self-signed certificate
    /// (e.g. a certificate a test CA issued, for DANE-TA).
    pub tls_identity: Option<TlsIdentity>,
    /// Advertise PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// Advertise SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// Advertise 8BITMIME (RFC 6152); without it, the BODY parameter is
    /// refused.
    pub eightbitmime: bool,
    /// Advertise `SIZE n` and refuse bigger messages; None advertises a
    /// bare `SIZE`.
    pub size_limit: Option<usize>,
    /// Advertise DSN (RFC 3461).
    pub dsn: bool,
    /// Wait this long before the greeting.
    pub greeting_delay: Duration,
    /// Wait this long before answering the end of data.
    pub data_delay: Duration,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            tls_names: Vec::new(),
            tls_identity: None,
            pipelining: true,
            smtputf8: true,
            eightbitmime: true,
            size_limit: None,
            dsn: true,
            greeting_delay: Duration::ZERO,
            data_delay: Duration::ZERO,
        }
    }
}

/// A certificate chain (the sink's own first) and its private key.
#[derive(Clone, Debug)]
pub struct TlsIdentity {
    /// The sink's certificate, then the ones it sends along.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the first, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
}

/// One message the sink accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The reverse path, without the angle brackets.
    pub mail_from: String,
    /// The accepted recipients, without the angle brackets.
    pub rcpt_to: Vec<String>,
    /// Everything after `MAIL FROM:<...>`, trimmed.
    pub mail_params: String,
    /// Everything after `RCPT TO:<...>` for each accepted recipient.
    pub rcpt_params: Vec<String>,
    /// The message text, dot-unstuffed, with its final CRLF.
    pub data: Vec<u8>,
    /// It came over TLS.
    pub tls: bool,
    /// The connection number that carried it, from 1.
    pub connection: usize,
    /// When MAIL was read, the DATA of the same transaction was already
    /// buffered behind it: the client pipelined (RFC 2920).
    pub pipelined: bool,
}

/// A scripted reply.
#[derive(Clone, Debug)]
struct Scripted {
    code: u16,
    text: String,
}

impl Scripted {
    fn new(code: u16, text: &str) -> Scripted {
        Scripted {
            code,
            text: text.to_owned(),
        }
    }

    /// The reply as sent: a text with `\n` in it becomes a multi-line
    /// reply (RFC 5321 section 4.2.1), `code-line` for all but the last.
    fn line(&self) -> String {
        let lines: Vec<&str> = self.text.split('\n').collect();
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, text)| {
                let sep = if i == last { ' ' } else { '-' };
                format!("{}{sep}{text}\r\n", self.code)
            })
            .collect()
    }

    fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

#[derive(Debug)]
struct Rules {
    greeting: Scripted,
    rcpt: Vec<(String, Scripted)>,
    default_rcpt: Scripted,
    data: Scripted,
    mail: Option<Scripted>,
    ehlo: Option<Scripted>,
    rset: Option<Scripted>,
    break_tls: bool,
    starttls_extra: String,
}

struct Shared {
    config: SinkConfig,
    rules: Mutex<Rules>,
    messages: Mutex<Vec<Received>>,
    commands: Mutex<Vec<(usize, String)>>,
    connections: AtomicUsize,
    current: AtomicUsize,
    max_current: AtomicUsize,
    acceptor: Option<TlsAcceptor>,
    cert_der: Option<CertificateDer<'static>>,
    cert_pem: Option<String>,
}

/// A running sink. Dropping it stops the listener and every connection.
pub struct Sink {
    /// The address it listens on.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
    /// For a sink with a runtime of its own: dropping this ends it.
    _background: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

impl Sink {
    /// Starts the sink in the caller's tokio runtime.
    pub async fn start(config: SinkConfig) -> io::Result<Sink> {
        if !config.addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the sink listens on loopback only",
            ));
        }
        let (acceptor, cert_der, cert_pem) = if config.tls {
            let (acceptor, der, pem) =
                tls_acceptor(&config.tls_names, config.tls_identity.as_ref())?;
            (Some(acceptor), Some(der), pem)
        } else {
            (None, None, None)
        };
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            rules: Mutex::new(Rules {
                greeting: Scripted::new(220, "localhost ESMTP mta-testkit sink"),
                rcpt: Vec::new(),
                default_rcpt: Scripted::new(250, "2.1.5 Ok"),
                data: Scripted::new(250, "2.0.0 Ok: queued"),
                mail: None,
                ehlo: None,
                rset: None,
                break_tls: false,
                starttls_extra: String::new(),
            }),
            messages: Mutex::new(Vec::new()),
            commands: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            current: AtomicUsize::new(0),
            max_current: AtomicUsize::new(0),
            acceptor,
            cert_der,
            cert_pem,
        });
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(accept_loop(listener, shared.clone(), stopped));
        Ok(Sink {
            addr,
            shared,
            _stop: stop,
            _background: None,
        })
    }

    /// Starts the sink on a thread with a runtime of its own, for tests
    /// that are not async.
    pub fn start_in_background(config: SinkConfig) -> io::Result<Sink> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (end, ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("mta-testkit-sink".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    match Sink::start(config).await {
                        Ok(sink) => {
                            if tx.send(Ok(sink)).is_ok() {
                                let _ = ended.await;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let mut sink = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|e| io::Error::other(format!("sink thread: {e}")))??;
        sink._background = Some(end);
        Ok(sink)
    }

    /// RCPT to an address containing `recipient_substring` gets this reply
    /// (e.g. `451`, `4.3.0 try later`; a `\n` in `text` makes it a
    /// multi-line reply, as in every scripted reply). The first rule set that matches
    /// wins; setting the same substring again replaces its reply.
    pub fn set_rcpt_reply(&self, recipient_substring: &str, code: u16, text: &str) {
        let mut rules = self.shared.rules.lock();
        let reply = Scripted::new(code, text);
        match rules
            .rcpt
            .iter_mut()
            .find(|(s, _)| s == recipient_substring)
        {
            Some((_, r)) => *r = reply,
            None => rules.rcpt.push((recipient_substring.to_owned(), reply)),
        }
    }

    /// RCPT to any other address gets this reply (default `250 2.1.5 Ok`).
    pub fn set_default_rcpt_reply(&self, code: u16, text: &str) {
        self.shared.rules.lock().default_rcpt = Scripted::new(code, text);
    }

    /// The reply to the end of data (default `250 2.0.0 Ok: queued`). Only
    /// a 2xx records the message.
    pub fn set_data_reply(&self, code: u16, text: &str) {
        self.shared.rules.lock().data = Scripted::new(code, text);
    }

    /// A well-formed MAIL gets this reply instead of `250 2.1.0 Ok`; a
    /// reply that is not 2xx opens no transaction.
    pub fn set_mail_reply(&self, code: u16, text: &str) {
        self.shared.rules.lock().mail = Some(Scripted::new(code, text));
    }

    /// The greeting (default 220). Any other code is sent and the
    /// connection closed.
    pub fn set_greeting(&self, code: u16, text: &str) {
        self.shared.rules.lock().greeting = Scripted::new(code, text);
    }

    /// EHLO gets this reply instead of the list of extensions (e.g. 502,
    /// to make the client fall back to HELO).
    pub fn set_ehlo_reply(&self, code: u16, text: &str) {
        self.shared.rules.lock().ehlo = Some(Scripted::new(code, text));
    }

    /// RSET gets this reply instead of `250 2.0.0 Ok`; a 421 closes the
    /// connection after it, as a server shutting down does.
    pub fn set_rset_reply(&self, code: u16, text: &str) {
        self.shared.rules.lock().rset = Some(Scripted::new(code, text));
    }

    /// When true, STARTTLS is answered with 220 and then the connection
    /// gets garbage instead of a TLS handshake: a handshake failure.
    pub fn set_break_tls(&self, broken: bool) {
        self.shared.rules.lock().break_tls = broken;
    }

    /// Sends `text` right after the 220 to STARTTLS, in the same write and
    /// before the handshake: a STARTTLS response injection (the client
    /// side of CVE-2011-0411) that the client must discard.
    pub fn set_starttls_extra(&self, text: &str) {
        self.shared.rules.lock().starttls_extra = text.to_owned();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn max_concurrent_connections(&self) -> usize {
        self.shared.max_current.load(Ordering::SeqCst)
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().clone()
    }

    /// Every command line received, with its connection number, in order
    /// of arrival.
    pub fn commands(&self) -> Vec<(usize, String)> {
        self.shared.commands.lock().clone()
    }

    /// Waits until at least `n` messages arrived or `timeout` passed, and
    /// returns what arrived.
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// [`wait_for_messages`](Sink::wait_for_messages), blocking the thread.
    pub fn wait_for_messages_blocking(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The certificate offered with STARTTLS, to trust it.
    pub fn cert_der(&self) -> Option<CertificateDer<'static>> {
        self.shared.cert_der.clone()
    }

    /// The same certificate in PEM, to write a CA file (None with a
    /// `tls_identity`).
    pub fn cert_pem(&self) -> Option<String> {
        self.shared.cert_pem.clone()
    }
}

/// A self-signed certificate for `localhost` and `names` (or `identity`),
/// and the acceptor using it.
fn tls_acceptor(
    names: &[String],
    identity: Option<&TlsIdentity>,
) -> io::Result<(TlsAcceptor, CertificateDer<'static>, Option<String>)> {
    let (chain, pem, key) = match identity {
        Some(identity) => {
            if identity.chain.is_empty() {
                return Err(io::Error::other("an empty certificate chain"));
            }
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.clone()));
            (identity.chain.clone(), None, key)
        }
        None => {
            let mut all = vec!["localhost".to_owned()];
            all.extend(names.iter().cloned());
            let certified = rcgen::generate_simple_self_signed(all).map_err(io::Error::other)?;
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
            (
                vec![certified.cert.der().clone()],
                Some(certified.cert.pem()),
                key,
            )
        }
    };
    let der = chain[0].clone();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(io::Error::other)?;
    Ok((TlsAcceptor::from(Arc::new(config)), der, pem))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    // Dropping the set when the loop ends aborts every connection.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let number = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let now = shared.current.fetch_add(1, Ordering::SeqCst) + 1;
                shared.max_current.fetch_max(now, Ordering::SeqCst);
                let shared = shared.clone();
                sessions.spawn(async move {
                    let _ = serve(&shared, tcp, number).await;
                    shared.current.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// Per-connection state that survives STARTTLS.
struct Conn {
    number: usize,
    tls: bool,
}

/// The transaction in progress.
#[derive(Default)]
struct Transaction {
    mail: Option<(String, String, bool)>,
    rcpts: Vec<(String, String)>,
}

async fn serve(shared: &Shared, mut tcp: TcpStream, number: usize) -> io::Result<()> {
    if !shared.config.greeting_delay.is_zero() {
        tokio::time::sleep(shared.config.greeting_delay).await;
    }
    let greeting = shared.rules.lock().greeting.clone();
    tcp.write_all(greeting.line().as_bytes()).await?;
    if !greeting.is_success() {
        let _ = tcp.shutdown().await;
        return Ok(());
    }
    let mut conn = Conn { number, tls: false };
    let Some(tcp) = session(shared, &mut conn, tcp).await? else {
        return Ok(());
    };
    let Some(acceptor) = &shared.acceptor else {
        return Ok(());
    };
    let tls = tokio::time::timeout(IDLE, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))??;
    conn.tls = true;
    session(shared, &mut conn, tls).await?;
    Ok(())
}

/// Takes one line (without its CRLF or LF) off the front of `buf`.
fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=nl).collect();
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(line)
}

/// Reads more input into `buf`; false at EOF.
async fn fill<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.reserve(8192);
    let n = tokio::time::timeout(IDLE, stream.read_buf(buf))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client idle"))??;
    Ok(n > 0)
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, text: &str) -> io::Result<()> {
    stream.write_all(text.as_bytes()).await?;
    stream.flush().await
}

/// `<path> params` after `FROM:` or `TO:`: the path without brackets and
/// the parameters.
fn path_and_params(arg: &str) -> Option<(String, String)> {
    let arg = arg.trim_start();
    let rest = arg.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((rest[..end].to_owned(), rest[end + 1..].trim().to_owned()))
}

/// The `KEY` of each `KEY=value` or `KEY` parameter, uppercased.
fn param_keys(params: &str) -> impl Iterator<Item = String> + '_ {
    params
        .split_ascii_whitespace()
        .map(|p| p.split('=').next().unwrap_or("").to_ascii_uppercase())
}

/// Undoes dot-stuffing (RFC 5321 section 4.5.2).
fn unstuff(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut line_start = true;
    for &b in text {
        if !(line_start && b == b'.') {
            out.push(b);
        }
        line_start = b == b'\n';
    }
    out
}

/// Runs commands until QUIT or EOF (None) or STARTTLS (the stream handed
/// back for the handshake).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    conn: &mut Conn,
    mut stream: S,
) -> io::Result<Option<S>> {
    let config = &shared.config;
    let mut buf = Vec::new();
    let mut hello = false;
    let mut tx = Transaction::default();
    loop {
        let Some(line) = take_line(&mut buf) else {
            if buf.len() > 4096 {
                send(&mut stream, "500 5.5.2 line too long\r\n").await?;
                return Ok(None);
            }
            if !fill(&mut stream, &mut buf).await? {
                return Ok(None);
            }
            continue;
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        shared.commands.lock().push((conn.number, line.clone()));
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.to_owned()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" => {
                tx = Transaction::default();
                let scripted = shared.rules.lock().ehlo.clone();
                if let Some(reply) = scripted {
                    hello = reply.is_success();
                    send(&mut stream, &reply.line()).await?;
                    continue;
                }
                hello = true;
                let mut lines = vec!["localhost hello".to_owned()];
                if config.pipelining {
                    lines.push("PIPELINING".into());
                }
                match config.size_limit {
                    Some(n) => lines.push(format!("SIZE {n}")),
                    None => lines.push("SIZE".into()),
                }
                if config.eightbitmime {
                    lines.push("8BITMIME".into());
                }
                if config.smtputf8 {
                    lines.push("SMTPUTF8".into());
                }
                if config.dsn {
                    lines.push("DSN".into());
                }
                if shared.acceptor.is_some() && !conn.tls {
                    lines.push("STARTTLS".into());
                }
                lines.push("ENHANCEDSTATUSCODES".into());
                let last = lines.len() - 1;
                let mut reply = String::new();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    reply.push_str(&format!("250{sep}{l}\r\n"));
                }
                send(&mut stream, &reply).await?;
            }
            "HELO" => {
                hello = true;
                tx = Transaction::default();
                send(&mut stream, "250 localhost\r\n").await?;
            }
            "STARTTLS" if shared.acceptor.is_some() && !conn.tls => {
                let (broken, extra) = {
                    let rules = shared.rules.lock();
                    (rules.break_tls, rules.starttls_extra.clone())
                };
                send(
                    &mut stream,
                    &format!("220 2.0.0 ready to start TLS\r\n{extra}"),
                )
                .await?;
                if broken {
                    send(&mut stream, "this is not a TLS handshake\r\n").await?;
                    let _ = stream.shutdown().await;
                    return Ok(None);
                }
                // Whatever was pipelined behind STARTTLS came in plaintext
                // and is dropped (CVE-2011-0411).
                return Ok(Some(stream));
            }
            "MAIL" => {
                // Read once: the rules' lock must not be held across the
                // branches below.
                let scripted_mail = shared.rules.lock().mail.clone();
                let parsed = arg
                    .get(..5)
                    .filter(|p| p.eq_ignore_ascii_case("FROM:"))
                    .and_then(|_| path_and_params(&arg[5..]));
                let reply = if !hello {
                    "503 5.5.1 EHLO or HELO first\r\n".to_owned()
                } else if tx.mail.is_some() {
                    "503 5.5.1 nested MAIL command\r\n".to_owned()
                } else if let Some((from, params)) = parsed {
                    let mut bad = None;
                    for key in param_keys(&params) {
                        let known = match key.as_str() {
                            "SIZE" => true,
                            "BODY" => config.eightbitmime,
                            "SMTPUTF8" => config.smtputf8,
                            "RET" | "ENVID" => config.dsn,
                            _ => false,
                        };
                        if !known {
                            bad = Some(key);
                        }
                    }
                    let size = params.split_ascii_whitespace().find_map(|p| {
                        let (k, v) = p.split_once('=')?;
                        k.eq_ignore_ascii_case("SIZE")
                            .then(|| v.parse::<usize>().ok())?
                    });
                    if let Some(key) = bad {
                        format!("555 5.5.4 unsupported parameter {key}\r\n")
                    } else if matches!((size, config.size_limit), (Some(s), Some(l)) if s > l) {
                        "552 5.3.4 message size exceeds fixed limit\r\n".to_owned()
                    } else if let Some(refusal) = scripted_mail.as_ref().filter(|m| !m.is_success())
                    {
                        refusal.line()
                    } else {
                        let pipelined = buf
                            .split(|&b| b == b'\n')
                            .any(|l| l.trim_ascii().eq_ignore_ascii_case(b"DATA"));
                        tx.mail = Some((from, params, pipelined));
                        match &scripted_mail {
                            Some(scripted) => scripted.line(),
                            None => "250 2.1.0 Ok\r\n".to_owned(),
                        }
                    }
                } else {
                    "501 5.5.4 syntax: MAIL FROM:<address>\r\n".to_owned()
                };
                send(&mut stream, &reply).await?;
            }
            "RCPT" => {
                let parsed = arg
                    .get(..3)
                    .filter(|p| p.eq_ignore_ascii_case("TO:"))
                    .and_then(|_| path_and_params(&arg[3..]));
                let reply = if tx.mail.is_none() {
                    "503 5.5.1 need MAIL before RCPT\r\n".to_owned()
                } else if let Some((to, params)) = parsed {
                    let bad = param_keys(&params)
                        .find(|k| !(config.dsn && (k == "NOTIFY" || k == "ORCPT")));
                    if let Some(key) = bad {
                        format!("555 5.5.4 unsupported parameter {key}\r\n")
                    } else {
                        let rules = shared.rules.lock();
                        let rule = rules
                            .rcpt
                            .iter()
                            .find(|(s, _)| to.contains(s.as_str()))
                            .map(|(_, r)| r)
                            .unwrap_or(&rules.default_rcpt)
                            .clone();
                        drop(rules);
                        if rule.is_success() {
                            tx.rcpts.push((to, params));
                        }
                        rule.line()
                    }
                } else {
                    "501 5.5.4 syntax: RCPT TO:<address>\r\n".to_owned()
                };
                send(&mut stream, &reply).await?;
            }
            "DATA" => {
                if tx.mail.is_none() {
                    send(&mut stream, "503 5.5.1 need MAIL command\r\n").await?;
                    continue;
                }
                if tx.rcpts.is_empty() {
                    send(&mut stream, "554 5.5.1 no valid recipients\r\n").await?;
                    continue;
                }
                send(&mut stream, "354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                // Only CRLF.CRLF ends the text; the DATA line's own CRLF
                // counts as the first CRLF.
                let end = loop {
                    if buf.starts_with(b".\r\n") {
                        break 0;
                    }
                    if let Some(i) = buf.windows(5).position(|w| w == b"\r\n.\r\n") {
                        break i + 2;
                    }
                    if buf.len() > MAX_DATA {
                        send(&mut stream, "552 5.3.4 too much mail data\r\n").await?;
                        return Ok(None);
                    }
                    if !fill(&mut stream, &mut buf).await? {
                        return Ok(None);
                    }
                };
                let text: Vec<u8> = buf.drain(..end + 3).take(end).collect();
                let data = unstuff(&text);
                if !config.data_delay.is_zero() {
                    tokio::time::sleep(config.data_delay).await;
                }
                let reply = if matches!(config.size_limit, Some(l) if data.len() > l) {
                    Scripted::new(552, "5.3.4 message size exceeds fixed limit")
                } else {
                    shared.rules.lock().data.clone()
                };
                let tx = std::mem::take(&mut tx);
                if reply.is_success() {
                    let (mail_from, mail_params, pipelined) = tx.mail.unwrap_or_default();
                    let (rcpt_to, rcpt_params) = tx.rcpts.into_iter().unzip();
                    shared.messages.lock().push(Received {
                        mail_from,
                        rcpt_to,
                        mail_params,
                        rcpt_params,
                        data,
                        tls: conn.tls,
                        connection: conn.number,
                        pipelined,
                    });
                }
                send(&mut stream, &reply.line()).await?;
            }
            "RSET" => {
                tx = Transaction::default();
                let scripted = shared.rules.lock().rset.clone();
                match scripted {
                    Some(reply) => {
                        send(&mut stream, &reply.line()).await?;
                        if reply.code == 421 {
                            let _ = stream.shutdown().await;
                            return Ok(None);
                        }
                    }
                    None => send(&mut stream, "250 2.0.0 Ok\r\n").await?,
                }
            }
            "NOOP" => send(&mut stream, "250 2.0.0 Ok\r\n").await?,
            "QUIT" => {
                send(&mut stream, "221 2.0.0 Bye\r\n").await?;
                let _ = stream.shutdown().await;
                return Ok(None);
            }
            _ => send(&mut stream, "500 5.5.2 command not recognized\r\n").await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstuffing_removes_one_leading_dot() {
        assert_eq!(unstuff(b"..a\r\nb.\r\n...\r\n"), b".a\r\nb.\r\n..\r\n");
    }

    #[test]
    fn a_scripted_text_with_newlines_is_a_multi_line_reply() {
        assert_eq!(Scripted::new(250, "2.0.0 Ok").line(), "250 2.0.0 Ok\r\n");
        assert_eq!(
            Scripted::new(550, "5.1.1 one\n5.1.1 two").line(),
            "550-5.1.1 one\r\n550 5.1.1 two\r\n"
        );
    }

    #[test]
    fn paths_and_parameters() {
        assert_eq!(
            path_and_params("<a@b> SIZE=10 BODY=8BITMIME"),
            Some(("a@b".into(), "SIZE=10 BODY=8BITMIME".into()))
        );
        assert_eq!(path_and_params("<>"), Some((String::new(), String::new())));
        assert_eq!(path_and_params("a@b"), None);
    }
}
