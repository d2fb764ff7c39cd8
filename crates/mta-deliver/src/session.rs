//! One SMTP connection from the client's side: connect, greeting, EHLO
//! (or HELO), STARTTLS, and the plumbing every command uses (RFC 5321
//! section 4.1, RFC 3207). The mail transaction itself is in
//! `transaction.rs`.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::UnixTime;

use crate::reply::{MalformedReply, Reply, ReplyParser, MAX_LINE};
use crate::tls;
use crate::{ServerSignal, Timeouts, TlsInfo, Verification};

/// Where in the session something went wrong, for reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt,
    Data,
    Body,
    EndOfData,
    Rset,
    Quit,
}

impl Stage {
    /// `while sending MAIL FROM`, Postfix's wording.
    fn during(self) -> &'static str {
        match self {
            Stage::Greeting => "while receiving the initial server greeting",
            Stage::Ehlo => "while performing the EHLO handshake",
            Stage::Helo => "while performing the HELO handshake",
            Stage::StartTls => "while performing the STARTTLS handshake",
            Stage::Mail => "while sending MAIL FROM",
            Stage::Rcpt => "while sending RCPT TO",
            Stage::Data => "while sending DATA command",
            Stage::Body => "while sending message body",
            Stage::EndOfData => "while sending end of data -- message may be sent more than once",
            Stage::Rset => "while sending RSET",
            Stage::Quit => "while sending QUIT",
        }
    }

    /// The command a reply answers, for `(in reply to X command)`.
    pub(crate) fn command(self) -> &'static str {
        match self {
            Stage::Greeting => "initial greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body | Stage::EndOfData => "end of DATA",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        }
    }
}

/// Why a session could not be opened or went on no further.
#[derive(Debug)]
pub(crate) enum SessionError {
    /// TCP connect failed.
    Connect(io::Error),
    /// TCP connect took longer than the connect timeout.
    ConnectTimeout,
    /// The server closed the connection, or it broke.
    Lost {
        stage: Stage,
        error: Option<io::Error>,
    },
    /// The server did not answer in time.
    Timeout { stage: Stage },
    /// The server's reply was not SMTP.
    Malformed { stage: Stage, error: MalformedReply },
    /// The greeting, EHLO or HELO was refused.
    Rejected { stage: Stage, reply: Reply },
    /// TLS was required and could not be had, or the handshake failed.
    Tls {
        reason: String,
        /// Opportunistic TLS failed in the handshake: the same address may
        /// be tried again in plaintext.
        retry_plaintext: bool,
    },
}

impl SessionError {
    /// The enhanced status (always class 4: this is a reason to try later
    /// or elsewhere) and the reason, naming the server.
    pub fn describe(&self, remote: &str) -> (String, String) {
        match self {
            SessionError::Connect(e) => ("4.4.1".into(), format!("connect to {remote}: {e}")),
            SessionError::ConnectTimeout => (
                "4.4.1".into(),
                format!("connect to {remote}: Connection timed out"),
            ),
            SessionError::Lost { stage, error } => {
                let mut reason = format!("lost connection with {remote} {}", stage.during());
                if let Some(e) = error {
                    reason.push_str(&format!(": {e}"));
                }
                ("4.4.2".into(), reason)
            }
            SessionError::Timeout { stage } => (
                "4.4.2".into(),
                format!("conversation with {remote} timed out {}", stage.during()),
            ),
            SessionError::Malformed { stage, error } => (
                "4.5.0".into(),
                format!("{remote} broke the protocol {}: {error}", stage.during()),
            ),
            SessionError::Rejected { stage, reply } => {
                let reason = if *stage == Stage::Greeting {
                    format!("host {remote} refused to talk to me: {reply}")
                } else {
                    format!(
                        "host {remote} said: {reply} (in reply to {} command)",
                        stage.command()
                    )
                };
                (reply.transient_status(), reason)
            }
            SessionError::Tls { reason, .. } => ("4.7.5".into(), reason.clone()),
        }
    }

    /// The back-off signal: a 4xx (or 421) reply to the greeting, EHLO or
    /// HELO counts; a connection that failed or broke says nothing.
    pub fn signal(&self, remote: &str) -> ServerSignal {
        match self {
            SessionError::Rejected { reply, .. } if reply.is_transient() => {
                ServerSignal::of_reply(reply.code, &self.describe(remote).1)
            }
            _ => ServerSignal::Silent,
        }
    }

    /// True when the error left the connection unusable.
    fn is_fatal(&self) -> bool {
        !matches!(self, SessionError::Rejected { .. })
    }
}

/// What the server said it supports in its EHLO reply (RFC 5321 section
/// 4.1.1.1). All false after HELO.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870: the SIZE parameter is understood.
    pub size: bool,
    /// RFC 1870: the limit, when the server gave a nonzero one.
    pub size_limit: Option<u64>,
    /// RFC 6152.
    pub eightbitmime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3461.
    pub dsn: bool,
    /// RFC 3207.
    pub starttls: bool,
}

impl Extensions {
    fn parse(reply: &Reply) -> Extensions {
        let mut ext = Extensions::default();
        for line in reply.extension_lines() {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => ext.pipelining = true,
                "SIZE" => {
                    ext.size = true;
                    ext.size_limit = words
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .filter(|&n| n > 0);
                }
                "8BITMIME" => ext.eightbitmime = true,
                "SMTPUTF8" => ext.smtputf8 = true,
                "DSN" => ext.dsn = true,
                "STARTTLS" => ext.starttls = true,
                _ => {}
            }
        }
        ext
    }
}

/// What STARTTLS step to take after EHLO.
#[derive(Clone)]
pub(crate) enum TlsStep {
    /// Plaintext.
    Skip,
    /// STARTTLS if offered, any certificate accepted.
    Opportunistic(Arc<rustls::ClientConfig>),
    /// As opportunistic, and then the certificate is checked without
    /// consequence: what failed is kept in [`Session::audit`] (a policy
    /// in testing mode).
    Audited(Arc<rustls::ClientConfig>, Arc<WebPkiServerVerifier>),
    /// STARTTLS must be offered and the certificate must verify; a
    /// connection that passes is labelled with who required it.
    Required(Arc<rustls::ClientConfig>, Verification),
}

impl TlsStep {
    /// True when a failed handshake may be retried in plaintext.
    pub fn is_opportunistic(&self) -> bool {
        matches!(self, TlsStep::Opportunistic(_) | TlsStep::Audited(..))
    }
}

/// The connection, before or after STARTTLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Counts open connections for `Client::connections_open`; one lives in
/// each session and counts it down when the session is dropped.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    pub fn new(counter: Arc<AtomicUsize>) -> OpenGuard {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counter)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open SMTP session, past the greeting, EHLO and any STARTTLS.
pub(crate) struct Session {
    stream: Stream,
    /// Bytes read and not yet taken as reply lines.
    rbuf: Vec<u8>,
    /// `host[ip]:port`, for reasons and logs.
    pub remote: String,
    /// What the last EHLO advertised.
    pub ext: Extensions,
    /// The TLS version, cipher and verification, when STARTTLS was done.
    pub tls: Option<TlsInfo>,
    /// What an audited TLS step found wrong (`TlsStep::Audited`): no
    /// STARTTLS, or a certificate that would not have verified.
    pub audit: Option<String>,
    /// Transactions completed on this connection.
    pub messages: usize,
    /// Taken from the idle pool without its RSET check: the next
    /// transaction sends RSET in front of MAIL, in the same write
    /// (`transaction.rs`), and is given up as [`SessionError::Stale`] if
    /// that RSET is not answered 2xx.
    pub check_pending: bool,
    pub timeouts: Timeouts,
    _open: OpenGuard,
}

/// `mx1.test[127.0.0.2]:2525`; `[127.0.0.2]:2525` when the host is an
/// address literal.
pub(crate) fn remote_name(host: &str, addr: SocketAddr) -> String {
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
        format!("[{}]:{}", addr.ip(), addr.port())
    } else {
        format!("{host}[{}]:{}", addr.ip(), addr.port())
    }
}

impl Session {
    /// Connects to `addr`, reads the greeting, says EHLO (or HELO), and
    /// does STARTTLS as `tls` says.
    pub async fn open(
        host: &str,
        addr: SocketAddr,
        helo: &str,
        timeouts: Timeouts,
        tls: &TlsStep,
        counter: Arc<AtomicUsize>,
    ) -> Result<Session, SessionError> {
        let remote = remote_name(host, addr);
        tracing::debug!(%remote, "connecting");
        let tcp = match timeout(timeouts.connect, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(SessionError::Connect(e)),
            Err(_) => return Err(SessionError::ConnectTimeout),
        };
        // Commands are small and each waits for its reply.
        let _ = tcp.set_nodelay(true);
        let mut session = Session {
            stream: Stream::Plain(tcp),
            rbuf: Vec::with_capacity(1024),
            remote,
            ext: Extensions::default(),
            tls: None,
            audit: None,
            messages: 0,
            check_pending: false,
            timeouts,
            _open: OpenGuard::new(counter),
        };
        let greeting = session
            .read_reply(Stage::Greeting, timeouts.greeting)
            .await?;
        if !greeting.is_success() {
            // RFC 5321 section 3.1: a 554 greeting still expects QUIT; a
            // 421 closes anyway.
            session.quit_quickly().await;
            return Err(SessionError::Rejected {
                stage: Stage::Greeting,
                reply: greeting,
            });
        }
        let result = session.handshake(host, addr, helo, tls).await;
        match result {
            Ok(session) => Ok(session),
            Err((Some(mut session), e)) => {
                session.quit_quickly().await;
                Err(e)
            }
            Err((None, e)) => Err(e),
        }
    }

    /// EHLO, STARTTLS, EHLO again. On error, the session is handed back
    /// when it can still take a QUIT.
    async fn handshake(
        mut self,
        host: &str,
        addr: SocketAddr,
        helo: &str,
        tls: &TlsStep,
    ) -> Result<Session, (Option<Session>, SessionError)> {
        if let Err(e) = self.hello(helo).await {
            return Err(if e.is_fatal() {
                (None, e)
            } else {
                (Some(self), e)
            });
        }
        let (config, required, audit) = match tls {
            TlsStep::Skip => return Ok(self),
            TlsStep::Opportunistic(_) if !self.ext.starttls => return Ok(self),
            TlsStep::Audited(..) if !self.ext.starttls => {
                self.audit = Some(format!("host {} did not offer STARTTLS", self.remote));
                return Ok(self);
            }
            TlsStep::Opportunistic(config) => (config.clone(), None, None),
            TlsStep::Audited(config, verifier) => (config.clone(), None, Some(verifier.clone())),
            TlsStep::Required(..) if !self.ext.starttls => {
                let reason = format!(
                    "TLS is required, but host {} did not offer STARTTLS",
                    self.remote
                );
                return Err((
                    Some(self),
                    SessionError::Tls {
                        reason,
                        retry_plaintext: false,
                    },
                ));
            }
            TlsStep::Required(config, verification) => (config.clone(), Some(*verification), None),
        };
        let mut session = match self.starttls(config, host, addr, required, audit).await {
            Ok(session) => session,
            Err(e) => return Err(e),
        };
        if session.tls.is_some() {
            // RFC 3207 section 4.2: forget what was learned before TLS and
            // ask again.
            if let Err(e) = session.hello(helo).await {
                return Err(if e.is_fatal() {
                    (None, e)
                } else {
                    (Some(session), e)
                });
            }
        }
        Ok(session)
    }

    /// EHLO; HELO when EHLO gets a 5xx (RFC 5321 section 4.1.4 and
    /// 3.2): then no extensions.
    async fn hello(&mut self, helo: &str) -> Result<(), SessionError> {
        let t = self.timeouts.ehlo;
        self.send(format!("EHLO {helo}\r\n").as_bytes(), Stage::Ehlo, t)
            .await?;
        let reply = self.read_reply(Stage::Ehlo, t).await?;
        if reply.is_success() {
            self.ext = Extensions::parse(&reply);
            tracing::debug!(remote = %self.remote, ext = ?self.ext, "EHLO accepted");
            return Ok(());
        }
        if reply.code < 500 {
            return Err(SessionError::Rejected {
                stage: Stage::Ehlo,
                reply,
            });
        }
        self.send(format!("HELO {helo}\r\n").as_bytes(), Stage::Helo, t)
            .await?;
        let reply = self.read_reply(Stage::Helo, t).await?;
        if !reply.is_success() {
            return Err(SessionError::Rejected {
                stage: Stage::Helo,
                reply,
            });
        }
        self.ext = Extensions::default();
        Ok(())
    }

    /// STARTTLS and the handshake (RFC 3207 section 4). The session comes
    /// back in TLS, or, when opportunistic and the server refused the
    /// command, in plaintext as it was. `required` says who requires a
    /// verified certificate, if anyone; `audit` checks the certificate
    /// afterwards without consequence.
    async fn starttls(
        mut self,
        config: Arc<rustls::ClientConfig>,
        host: &str,
        addr: SocketAddr,
        verification: Option<Verification>,
        audit: Option<Arc<WebPkiServerVerifier>>,
    ) -> Result<Session, (Option<Session>, SessionError)> {
        let required = verification.is_some();
        let t = self.timeouts.ehlo;
        if let Err(e) = self.send(b"STARTTLS\r\n", Stage::StartTls, t).await {
            return Err((None, e));
        }
        let reply = match self.read_reply(Stage::StartTls, t).await {
            Ok(reply) => reply,
            Err(e) => return Err((None, e)),
        };
        if !reply.is_success() {
            if required {
                let reason = format!(
                    "TLS is required, but host {} refused STARTTLS: {reply}",
                    self.remote
                );
                let e = SessionError::Tls {
                    reason,
                    retry_plaintext: false,
                };
                return Err((Some(self), e));
            }
            // Opportunistic: carry on in plaintext, as Postfix does.
            tracing::debug!(remote = %self.remote, %reply, "STARTTLS refused; staying in plaintext");
            return Ok(self);
        }
        if !self.rbuf.is_empty() {
            // Anything the server sent after its 220 was sent before TLS
            // and must not be read as if it came over TLS: the client side
            // of the CVE-2011-0411 class of injection.
            tracing::warn!(
                remote = %self.remote,
                bytes = self.rbuf.len(),
                "discarding plaintext sent after the STARTTLS reply"
            );
            self.rbuf.clear();
        }
        let Stream::Plain(tcp) = self.stream else {
            // hello() is only followed by STARTTLS once, in plaintext.
            let e = SessionError::Tls {
                reason: format!("STARTTLS inside TLS with {}", self.remote),
                retry_plaintext: false,
            };
            return Err((None, e));
        };
        let name = tls::server_name(host, addr.ip());
        let connector = TlsConnector::from(config);
        let failed = |reason: String| SessionError::Tls {
            reason,
            retry_plaintext: !required,
        };
        let stream = match timeout(t, connector.connect(name.clone(), tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                let reason = match certificate_error(&e) {
                    // DANE's own sentence (`dane/verifier.rs`).
                    Some(rustls::CertificateError::Other(other)) => {
                        format!("TLS handshake with {} failed: {other}", self.remote)
                    }
                    Some(bad) => format!(
                        "TLS handshake with {} failed: certificate of {} not valid: {bad}",
                        self.remote,
                        host.trim_end_matches('.')
                    ),
                    None => format!("TLS handshake with {} failed: {e}", self.remote),
                };
                return Err((None, failed(reason)));
            }
            Err(_) => {
                let reason = format!("TLS handshake with {} timed out", self.remote);
                return Err((None, failed(reason)));
            }
        };
        let conn = stream.get_ref().1;
        let info = TlsInfo::of(conn, verification.unwrap_or_default());
        let audit = audit.and_then(|verifier| {
            let problem = match conn.peer_certificates() {
                Some([end_entity, intermediates @ ..]) => verifier
                    .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
                    .err()
                    .map(|e| e.to_string()),
                _ => Some("no certificate sent".to_owned()),
            };
            problem.map(|p| {
                format!(
                    "certificate of {} not valid: {p}",
                    host.trim_end_matches('.')
                )
            })
        });
        tracing::debug!(remote = %self.remote, tls = %info, "TLS established");
        Ok(Session {
            stream: Stream::Tls(Box::new(stream)),
            ext: Extensions::default(),
            tls: Some(info),
            audit,
            ..self
        })
    }

    /// Writes `bytes` and flushes, within `limit`.
    pub async fn send(
        &mut self,
        bytes: &[u8],
        stage: Stage,
        limit: Duration,
    ) -> Result<(), SessionError> {
        self.send_all(&[bytes], stage, limit).await
    }

    /// Writes `pieces` one after the other (in as few system calls as the
    /// kernel takes them) and flushes, within `limit`.
    pub async fn send_all(
        &mut self,
        pieces: &[&[u8]],
        stage: Stage,
        limit: Duration,
    ) -> Result<(), SessionError> {
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => {
                    write_all_vectored(s, pieces).await?;
                    s.flush().await
                }
                Stream::Tls(s) => {
                    write_all_vectored(s, pieces).await?;
                    s.flush().await
                }
            }
        };
        match timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SessionError::Lost {
                stage,
                error: Some(e),
            }),
            Err(_) => Err(SessionError::Timeout { stage }),
        }
    }

    /// Reads one whole reply, within `limit`.
    pub async fn read_reply(
        &mut self,
        stage: Stage,
        limit: Duration,
    ) -> Result<Reply, SessionError> {
        match timeout(limit, self.read_reply_inner(stage)).await {
            Ok(result) => {
                if let Ok(reply) = &result {
                    tracing::debug!(remote = %self.remote, %reply, "reply");
                }
                result
            }
            Err(_) => Err(SessionError::Timeout { stage }),
        }
    }

    async fn read_reply_inner(&mut self, stage: Stage) -> Result<Reply, SessionError> {
        let mut parser = ReplyParser::default();
        let mut scanned = 0;
        loop {
            if let Some(nl) = self.rbuf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + nl;
                let mut line_end = end;
                if line_end > 0 && self.rbuf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                let parsed = parser.push(&self.rbuf[..line_end]);
                self.rbuf.drain(..=end);
                scanned = 0;
                match parsed {
                    Ok(Some(reply)) => return Ok(reply),
                    Ok(None) => continue,
                    Err(error) => return Err(SessionError::Malformed { stage, error }),
                }
            }
            scanned = self.rbuf.len();
            if self.rbuf.len() > MAX_LINE {
                let text = String::from_utf8_lossy(&self.rbuf[..80]).into_owned();
                return Err(SessionError::Malformed {
                    stage,
                    error: MalformedReply(format!("{text}... (line too long)")),
                });
            }
            self.rbuf.reserve(4096);
            let read = match &mut self.stream {
                Stream::Plain(s) => s.read_buf(&mut self.rbuf).await,
                Stream::Tls(s) => s.read_buf(&mut self.rbuf).await,
            };
            match read {
                Ok(0) => return Err(SessionError::Lost { stage, error: None }),
                Ok(_) => {}
                Err(e) => {
                    return Err(SessionError::Lost {
                        stage,
                        error: Some(e),
                    })
                }
            }
        }
    }

    /// A command and its reply, each within `limit`.
    pub async fn command(
        &mut self,
        line: &str,
        stage: Stage,
        limit: Duration,
    ) -> Result<Reply, SessionError> {
        tracing::debug!(remote = %self.remote, command = line.trim_end(), "send");
        self.send(line.as_bytes(), stage, limit).await?;
        self.read_reply(stage, limit).await
    }

    /// RSET (RFC 5321 section 4.1.1.5): true when the server took it. Uses
    /// the `mail` timeout.
    pub async fn rset(&mut self) -> Result<bool, SessionError> {
        let reply = self
            .command("RSET\r\n", Stage::Rset, self.timeouts.mail)
            .await?;
        Ok(reply.is_success())
    }

    /// QUIT and wait for the reply (RFC 5321 section 4.1.1.10), within the
    /// `quit` timeout; the connection closes either way.
    pub async fn quit(mut self) {
        let limit = self.timeouts.quit;
        let _ = self.command("QUIT\r\n", Stage::Quit, limit).await;
        self.shutdown().await;
    }

    /// QUIT without waiting for the reply, on the way to another address.
    async fn quit_quickly(&mut self) {
        let limit = self.timeouts.quit.min(Duration::from_secs(5));
        let _ = self.send(b"QUIT\r\n", Stage::Quit, limit).await;
    }

    async fn shutdown(&mut self) {
        let limit = self.timeouts.quit.min(Duration::from_secs(5));
        let _ = match &mut self.stream {
            Stream::Plain(s) => timeout(limit, s.shutdown()).await,
            Stream::Tls(s) => timeout(limit, s.shutdown()).await,
        };
    }

    /// True when the server has sent something unasked or closed the
    /// connection: an idle connection in that state is not reused. Peeks,
    /// so nothing is consumed.
    pub fn is_stale(&self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        let tcp = match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        };
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // Ready means data, EOF or an error; Pending means quiet.
        tcp.poll_peek(&mut cx, &mut buf).is_ready()
    }
}

/// The certificate error inside a failed handshake's I/O error, if that
/// is what failed it.
fn certificate_error(e: &io::Error) -> Option<&rustls::CertificateError> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(bad) => Some(bad),
        _ => None,
    }
}

/// `write_all` for several buffers: vectored writes until all is written.
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, pieces: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = pieces
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_from_an_ehlo_reply() {
        let mut parser = ReplyParser::default();
        for line in [
            "250-mx.test",
            "250-pipelining",
            "250-SIZE 1000",
            "250-8BITMIME",
            "250-DSN",
        ] {
            assert!(parser.push(line.as_bytes()).unwrap().is_none());
        }
        let reply = parser.push(b"250 STARTTLS").unwrap().unwrap();
        let ext = Extensions::parse(&reply);
        assert!(ext.pipelining && ext.size && ext.eightbitmime && ext.dsn && ext.starttls);
        assert!(!ext.smtputf8);
        assert_eq!(ext.size_limit, Some(1000));
    }

    #[test]
    fn size_without_a_limit() {
        let mut parser = ReplyParser::default();
        parser.push(b"250-mx.test").unwrap();
        let reply = parser.push(b"250 SIZE 0").unwrap().unwrap();
        let ext = Extensions::parse(&reply);
        assert!(ext.size);
        assert_eq!(ext.size_limit, None);
    }

    #[test]
    fn remote_names() {
        let addr: SocketAddr = "127.0.0.2:2525".parse().unwrap();
        assert_eq!(remote_name("mx1.test.", addr), "mx1.test[127.0.0.2]:2525");
        assert_eq!(remote_name("[127.0.0.2]", addr), "[127.0.0.2]:2525");
    }
}
