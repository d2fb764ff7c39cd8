//! What a run sends, where, and how: [`Options`], their checks and the
//! first line of the report.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::tls::TlsMode;

/// Highest `--rate`, in sessions per second.
pub const MAX_RATE: f64 = 100_000.0;

/// A user name and password for AUTH PLAIN.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The authentication identity (RFC 4616 authcid).
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Login {
    /// The user; never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// What to send, where, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The server; must be a loopback address.
    pub server: SocketAddr,
    /// Concurrent connections.
    pub sessions: u32,
    /// Total messages across all sessions.
    pub messages: u64,
    /// Message size in bytes, headers included.
    pub size: usize,
    /// Recipients per message.
    pub rcpts: u32,
    /// Messages per connection before QUIT and reconnect; 0 = no limit.
    pub per_connection: u64,
    /// Pipeline MAIL, RCPTs and DATA/BDAT (RFC 2920).
    pub pipelining: bool,
    /// Use BDAT <n> LAST (RFC 3030) instead of DATA.
    pub bdat: bool,
    /// Envelope sender and From: address.
    pub from: String,
    /// Recipient domain.
    pub to_domain: String,
    /// EHLO name.
    pub ehlo: String,
    /// Overall time limit.
    pub timeout: Duration,
    /// TLS: none, STARTTLS, or implicit.
    pub tls: TlsMode,
    /// AUTH PLAIN after the (last) EHLO, before the first MAIL.
    pub auth: Option<Login>,
    /// Open loop: new sessions per second, one message each, at most
    /// `sessions` open at once. None: closed loop.
    pub rate: Option<f64>,
    /// Local addresses to connect from, taken in turn (loopback only);
    /// empty: the kernel chooses.
    pub sources: Vec<IpAddr>,
    /// Each connection only sets up (greeting, EHLO, TLS, AUTH) and
    /// QUITs; a successful set-up counts as one message accepted.
    pub setup_only: bool,
}

impl Default for Options {
    /// The command line's defaults.
    fn default() -> Self {
        Options {
            server: SocketAddr::from(([127, 0, 0, 1], 2525)),
            sessions: 10,
            messages: 1000,
            size: 4096,
            rcpts: 1,
            per_connection: 0,
            pipelining: false,
            bdat: false,
            from: "sender@example.test".into(),
            to_domain: "example.test".into(),
            ehlo: "loadgen.test".into(),
            timeout: Duration::from_secs(300),
            tls: TlsMode::None,
            auth: None,
            rate: None,
            sources: Vec::new(),
            setup_only: false,
        }
    }
}

impl Options {
    /// Checks the options a caller could have got wrong.
    pub fn validate(&self) -> Result<(), String> {
        check_loopback(&self.server)?;
        if self.sessions == 0 {
            return Err("--sessions must be at least 1".into());
        }
        if self.rcpts == 0 {
            return Err("--rcpts must be at least 1".into());
        }
        if self.size == 0 {
            return Err("--size must be at least 1 byte".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        parse_mailbox(&self.from)?;
        parse_domain(&self.to_domain)?;
        parse_domain(&self.ehlo)?;
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_RATE) {
                return Err(format!(
                    "--rate must be more than 0 and at most {MAX_RATE} sessions per second"
                ));
            }
            if self.per_connection > 1 {
                return Err(
                    "--rate sends one message per session: leave --per-connection out".into(),
                );
            }
        }
        for source in &self.sources {
            check_loopback(&SocketAddr::new(*source, 0))?;
            if source.is_ipv4() != self.server.is_ipv4() {
                return Err(format!(
                    "--source {source} is not of the server's address family"
                ));
            }
        }
        if let Some(login) = &self.auth {
            // RFC 4616: NUL separates the fields; CR and LF would end the
            // command line.
            for (what, text) in [("user", &login.user), ("password", &login.password)] {
                if text.is_empty() || text.contains(['\0', '\r', '\n']) {
                    return Err(format!(
                        "the AUTH {what} must be non-empty, without NUL, CR or LF"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Messages per connection: 1 in the open loop or set-up only, else
    /// `per_connection` (0: no limit).
    pub fn messages_per_connection(&self) -> u64 {
        if self.rate.is_some() || self.setup_only {
            1
        } else {
            self.per_connection
        }
    }

    /// The first line of the text output, e.g. `mta-loadgen: 1000 messages
    /// of 4096 bytes, 1 rcpt, 10 sessions, pipelining off -> 127.0.0.1:2525`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "mta-loadgen: {} messages of {} bytes, {} rcpt{}, {} session{}, pipelining {}",
            self.messages,
            self.size,
            self.rcpts,
            if self.rcpts == 1 { "" } else { "s" },
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            if self.pipelining { "on" } else { "off" },
        );
        if self.bdat {
            s.push_str(", BDAT");
        }
        if self.per_connection > 0 && self.rate.is_none() {
            s.push_str(&format!(", {} per connection", self.per_connection));
        }
        if self.tls.is_tls() {
            s.push_str(&format!(", {}", self.tls));
        }
        if let Some(login) = &self.auth {
            s.push_str(&format!(", AUTH PLAIN as {}", login.user));
        }
        if let Some(rate) = self.rate {
            s.push_str(&format!(", open loop at {rate} sessions/s"));
        }
        if self.setup_only {
            s.push_str(", set-up only");
        }
        if !self.sources.is_empty() {
            let list: Vec<String> = self.sources.iter().map(IpAddr::to_string).collect();
            s.push_str(&format!(", from {}", list.join(" ")));
        }
        s.push_str(&format!(" -> {}", self.server));
        s
    }

    /// How many messages session `i` sends: an even split, the first
    /// sessions taking one more when it does not divide.
    pub fn share(&self, i: u32) -> u64 {
        let n = u64::from(self.sessions);
        self.messages / n + u64::from(u64::from(i) < self.messages % n)
    }
}

/// Refuses anything but 127.0.0.0/8 and ::1.
pub fn check_loopback(addr: &SocketAddr) -> Result<(), String> {
    let ok = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "refusing to connect to {}: mta-loadgen only connects to loopback addresses \
             (127.0.0.0/8 or ::1)",
            addr.ip()
        ))
    }
}

/// Parses an address for `MAIL FROM:<...>`: `local@domain`, no spaces,
/// angle brackets or control characters.
pub fn parse_mailbox(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 254
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        && matches!(s.rsplit_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty());
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a plain address like sender@example.test"
        ))
    }
}

/// Parses a domain name (for `--to-domain` and `--ehlo`).
pub fn parse_domain(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !s.starts_with('.')
        && !s.ends_with('.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a domain name like example.test"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn shares_add_up() {
        for (sessions, messages) in [(10, 1000), (3, 10), (7, 2), (1, 0), (4, 4)] {
            let o = Options {
                sessions,
                messages,
                ..Options::default()
            };
            let shares: Vec<u64> = (0..sessions).map(|i| o.share(i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), messages);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn loopback_only() {
        for ok in ["127.0.0.1:25", "127.255.0.9:25", "[::1]:25"] {
            assert!(check_loopback(&ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "10.1.1.1:25",
            "0.0.0.0:25",
            "[::]:25",
            "[::ffff:127.0.0.1]:25",
            "8.8.8.8:25",
        ] {
            let err = check_loopback(&bad.parse().unwrap()).unwrap_err();
            assert!(err.contains("loopback"), "{bad}");
        }
    }

    #[test]
    fn describe_line() {
        assert_eq!(
            Options::default().describe(),
            "mta-loadgen: 1000 messages of 4096 bytes, 1 rcpt, 10 sessions, pipelining off \
             -> 127.0.0.1:2525"
        );
        let o = Options {
            rcpts: 2,
            pipelining: true,
            bdat: true,
            per_connection: 5,
            ..Options::default()
        };
        assert_eq!(
            o.describe(),
            "mta-loadgen: 1000 messages of 4096 bytes, 2 rcpts, 10 sessions, pipelining on, \
             BDAT, 5 per connection -> 127.0.0.1:2525"
        );
    }
}
