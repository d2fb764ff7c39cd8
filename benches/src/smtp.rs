//! The client side of one SMTP connection: replies, commands, deadlines,
//! STARTTLS (RFC 3207) or implicit TLS (RFC 8314), and AUTH PLAIN (RFC
//! 4954, RFC 4616).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use tokio::io::ReadBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::tls::server_name;

/// Longest reply line accepted (RFC 5321 says 512 octets; be generous).
const MAX_LINE: u64 = 4096;
/// Most lines accepted in one multi-line reply.
const MAX_LINES: usize = 1000;
/// Longest reply text kept in a failure message.
const MAX_TEXT: usize = 300;

/// One SMTP reply, possibly assembled from several `NNN-` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    /// A 2xx reply.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    /// `550 first line / second line`, cut to a sane length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!("{} {}", self.code, self.lines.join(" / "));
        if s.len() > MAX_TEXT {
            let mut cut = MAX_TEXT;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        f.write_str(s.trim_end())
    }
}

/// Parses one reply line (without its line ending): returns the code,
/// whether it is the last line of the reply, and its text.
pub fn parse_reply_line(line: &str) -> Result<(u16, bool, &str), String> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&b[0]) {
        return Err(format!("malformed reply line {:?}", shorten(line)));
    }
    let code: u16 = line[..3].parse().expect("three digits");
    match b.get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(format!("malformed reply line {:?}", shorten(line))),
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Why a connection cannot be used any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The run's overall deadline passed.
    Timeout,
    /// The connection is broken (I/O error, EOF, garbage, 421); the text
    /// says what happened and is recorded as a failure.
    Broken(String),
    /// Retrying cannot help (e.g. the server lacks an extension the options
    /// need); the session gives up.
    Fatal(String),
}

/// Runs one I/O future under the run's deadline.
async fn io<T>(
    deadline: Instant,
    what: &str,
    fut: impl Future<Output = io::Result<T>>,
) -> Result<T, ConnError> {
    match timeout_at(deadline, fut).await {
        Err(_) => Err(ConnError::Timeout),
        Ok(Err(e)) => Err(ConnError::Broken(format!("{what}: {e}"))),
        Ok(Ok(v)) => Ok(v),
    }
}

/// The byte stream under a connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while STARTTLS swaps one for the other.
    Upgrading,
}

fn upgrading() -> io::Error {
    io::Error::other("the connection is being upgraded to TLS")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Upgrading => Poll::Ready(Err(upgrading())),
        }
    }
}

/// One client connection.
pub struct Conn {
    stream: BufReader<Stream>,
    server: SocketAddr,
    deadline: Instant,
    line: Vec<u8>,
    /// When the last reply was completely read.
    pub last_reply: Option<Instant>,
    /// The server advertised PIPELINING (in its last EHLO reply).
    pub pipelining: bool,
    /// The server advertised CHUNKING.
    pub chunking: bool,
    /// The server advertised STARTTLS.
    pub starttls: bool,
    /// The server advertised AUTH with the PLAIN mechanism.
    pub auth_plain: bool,
}

impl Conn {
    /// Opens a TCP connection (the caller has checked the address is
    /// loopback), from `source` when given (any port).
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        deadline: Instant,
    ) -> Result<Conn, ConnError> {
        let stream = io(deadline, "connect", tcp_connect(addr, source)).await?;
        stream
            .set_nodelay(true)
            .map_err(|e| ConnError::Broken(format!("connect: set TCP_NODELAY: {e}")))?;
        Ok(Conn {
            stream: BufReader::with_capacity(16 * 1024, Stream::Plain(stream)),
            server: addr,
            deadline,
            line: Vec::with_capacity(512),
            last_reply: None,
            pipelining: false,
            chunking: false,
            starttls: false,
            auth_plain: false,
        })
    }

    /// Whether the connection is under TLS now.
    pub fn is_tls(&self) -> bool {
        matches!(self.stream.get_ref(), Stream::Tls(_))
    }

    /// Makes the TLS handshake on the connection as it is: right after
    /// connecting for implicit TLS, after the 220 to STARTTLS otherwise.
    pub async fn start_tls(&mut self, connector: &TlsConnector) -> Result<(), ConnError> {
        // RFC 3207 section 4.2 (and the STARTTLS injection bugs of 2011
        // and 2021): nothing the server sent before the handshake may be
        // read as if it came over TLS.
        if !self.stream.buffer().is_empty() {
            return Err(ConnError::Broken(
                "STARTTLS: the server sent more after its 220".into(),
            ));
        }
        let Stream::Plain(tcp) = std::mem::replace(self.stream.get_mut(), Stream::Upgrading) else {
            return Err(ConnError::Fatal("TLS started twice".into()));
        };
        let tls = io(
            self.deadline,
            "TLS handshake",
            connector.connect(server_name(self.server), tcp),
        )
        .await?;
        *self.stream.get_mut() = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Reads the greeting and sends EHLO, noting the extensions.
    pub async fn handshake(&mut self, ehlo: &str) -> Result<(), ConnError> {
        let greeting = self.read_reply().await?;
        if greeting.code != 220 {
            return Err(ConnError::Broken(format!("greeting: {greeting}")));
        }
        self.ehlo(ehlo).await
    }

    /// Sends EHLO and notes what the reply advertises (RFC 3207 section
    /// 4.2: after STARTTLS, only what the second EHLO says counts).
    pub async fn ehlo(&mut self, ehlo: &str) -> Result<(), ConnError> {
        let reply = self.command(format!("EHLO {ehlo}\r\n").as_bytes()).await?;
        if reply.code != 250 {
            return Err(ConnError::Broken(format!("EHLO: {reply}")));
        }
        (
            self.pipelining,
            self.chunking,
            self.starttls,
            self.auth_plain,
        ) = (false, false, false, false);
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let keyword = words.next().unwrap_or("");
            if keyword.eq_ignore_ascii_case("PIPELINING") {
                self.pipelining = true;
            } else if keyword.eq_ignore_ascii_case("CHUNKING") {
                self.chunking = true;
            } else if keyword.eq_ignore_ascii_case("STARTTLS") {
                self.starttls = true;
            } else if keyword.eq_ignore_ascii_case("AUTH") {
                self.auth_plain = words.any(|m| m.eq_ignore_ascii_case("PLAIN"));
            }
        }
        Ok(())
    }

    /// Sends STARTTLS, expects 220, and makes the handshake; the caller
    /// sends EHLO again.
    pub async fn starttls(&mut self, connector: &TlsConnector) -> Result<(), ConnError> {
        let reply = self.command(b"STARTTLS\r\n").await?;
        if reply.code != 220 {
            return Err(ConnError::Broken(format!("STARTTLS: {reply}")));
        }
        self.start_tls(connector).await
    }

    /// `AUTH PLAIN` with the initial response (RFC 4954 section 4, RFC
    /// 4616: no authorization identity, the user, the password) and its
    /// reply, whatever it is.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<Reply, ConnError> {
        let command = format!("AUTH PLAIN {}\r\n", plain_response(user, password));
        self.command(command.as_bytes()).await
    }

    /// Writes bytes (one `write_all`, then a flush so that TLS sends its
    /// records now).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let stream = &mut self.stream;
        io(self.deadline, "write", async move {
            stream.write_all(bytes).await?;
            stream.flush().await
        })
        .await
    }

    /// Writes a command and reads its reply.
    pub async fn command(&mut self, bytes: &[u8]) -> Result<Reply, ConnError> {
        self.send(bytes).await?;
        self.read_reply().await
    }

    /// Reads one complete (possibly multi-line) reply.
    pub async fn read_reply(&mut self) -> Result<Reply, ConnError> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            self.line.clear();
            let mut limited = (&mut self.stream).take(MAX_LINE);
            let n = io(
                self.deadline,
                "read",
                limited.read_until(b'\n', &mut self.line),
            )
            .await?;
            if n == 0 {
                return Err(ConnError::Broken("connection closed by server".into()));
            }
            if self.line.last() != Some(&b'\n') {
                return Err(ConnError::Broken(if n as u64 >= MAX_LINE {
                    "reply line too long".into()
                } else {
                    "connection closed by server in the middle of a reply".into()
                }));
            }
            let text = String::from_utf8_lossy(&self.line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (c, last, rest) = parse_reply_line(text).map_err(ConnError::Broken)?;
            if *code.get_or_insert(c) != c {
                return Err(ConnError::Broken(format!(
                    "reply lines with different codes ({} then {c})",
                    code.unwrap_or(c)
                )));
            }
            lines.push(rest.to_string());
            if last {
                break;
            }
            if lines.len() >= MAX_LINES {
                return Err(ConnError::Broken("multi-line reply too long".into()));
            }
        }
        self.last_reply = Some(Instant::now());
        Ok(Reply {
            code: code.expect("at least one line"),
            lines,
        })
    }

    /// Sends QUIT and checks for 221.
    pub async fn quit(&mut self) -> Result<Reply, ConnError> {
        self.command(b"QUIT\r\n").await
    }
}

/// A TCP connection to `addr`, from `source` (port chosen by the kernel)
/// when given.
async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// The initial response of AUTH PLAIN: base64 of an empty authorization
/// identity, NUL, the user, NUL, the password (RFC 4616 section 2).
pub fn plain_response(user: &str, password: &str) -> String {
    let mut raw = Vec::with_capacity(user.len() + password.len() + 2);
    raw.push(0);
    raw.extend_from_slice(user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A shared connector for a run's TLS connections.
pub fn connector(config: Arc<rustls::ClientConfig>) -> TlsConnector {
    TlsConnector::from(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_reply_line("250 ok"), Ok((250, true, "ok")));
        assert_eq!(
            parse_reply_line("250-PIPELINING"),
            Ok((250, false, "PIPELINING"))
        );
        assert_eq!(parse_reply_line("354"), Ok((354, true, "")));
        assert!(parse_reply_line("25").is_err());
        assert!(parse_reply_line("abc def").is_err());
        assert!(parse_reply_line("250x").is_err());
        assert!(parse_reply_line("650 no").is_err());
    }

    #[test]
    fn reply_display() {
        let r = Reply {
            code: 550,
            lines: vec!["5.1.1 no such user".into(), "try again".into()],
        };
        assert_eq!(r.to_string(), "550 5.1.1 no such user / try again");
        let long = Reply {
            code: 451,
            lines: vec!["x".repeat(1000)],
        };
        assert!(long.to_string().len() < 320);
        assert!(!long.is_positive() && !r.is_positive());
    }

    #[test]
    fn plain_initial_response() {
        // RFC 4616 section 4's example, without the authorization identity.
        assert_eq!(
            plain_response("tim", "tanstaaftanstaaf"),
            "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
        );
    }

    /// A fake server writing canned bytes; the client must assemble
    /// multi-line replies and spot the EHLO keywords.
    #[tokio::test]
    async fn multi_line_replies_over_a_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Split across writes to exercise partial reads.
            s.write_all(b"220-first\r\n220 sec").await.unwrap();
            s.write_all(b"ond\r\n").await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"EHLO me.test\r\n");
            s.write_all(
                b"250-hello\r\n250-SIZE 100\r\n250-pipelining\r\n250-STARTTLS\r\n\
                  250-AUTH LOGIN plain\r\n250 CHUNKING\r\n",
            )
            .await
            .unwrap();
            s.write_all(b"250-a\r\n251 b\r\n").await.unwrap();
        });
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let mut c = Conn::connect(addr, None, deadline).await.unwrap();
        c.handshake("me.test").await.unwrap();
        assert!(c.pipelining && c.chunking && c.starttls && c.auth_plain);
        assert!(!c.is_tls());
        let err = c.read_reply().await.unwrap_err();
        assert!(matches!(err, ConnError::Broken(ref t) if t.contains("different codes")));
        server.await.unwrap();
        let err = c.read_reply().await.unwrap_err();
        assert!(matches!(err, ConnError::Broken(_)));
    }
}
