//! Command-line interface of `mta-loadgen`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::options::{check_loopback, parse_domain, parse_mailbox, Login, Options, MAX_RATE};
use crate::tls::TlsMode;

/// Largest accepted `--size`: every session holds one message in memory.
pub const MAX_SIZE: u64 = 64 * 1024 * 1024;

/// SMTP load generator for the MTA's benchmarks.
///
/// Sends --messages messages of --size bytes over --sessions concurrent
/// connections and reports accepted messages/s and the latency of the reply
/// to the end of the message data. It only ever connects to loopback
/// addresses. Exit status: 0 if every message was accepted, 1 if anything
/// failed or was left unsent at --timeout, 2 on bad usage.
#[derive(Debug, Clone, Parser)]
#[command(name = "mta-loadgen", version)]
pub struct Cli {
    /// SMTP server as IP:PORT (or localhost:PORT); must be a loopback address (127.0.0.0/8 or [::1])
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:2525", value_parser = parse_server)]
    pub server: SocketAddr,

    /// Number of concurrent SMTP connections
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub sessions: u32,

    /// Total number of messages across all sessions
    #[arg(long, value_name = "M", default_value_t = 1000)]
    pub messages: u64,

    /// Size of each message in bytes, headers included (plain bytes, or with a suffix: 4KiB, 100KiB, 1MiB, 10kB)
    #[arg(long, value_name = "S", default_value = "4096", value_parser = parse_size)]
    pub size: usize,

    /// Recipients per message (rcpt1@DOMAIN ... rcptR@DOMAIN)
    #[arg(long, value_name = "R", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rcpts: u32,

    /// Messages sent on one connection before QUIT and reconnect (0 = the session's whole share on one connection)
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub per_connection: u64,

    /// Send MAIL, all RCPTs and DATA (or BDAT) in one write and read the replies after (RFC 2920); otherwise one command at a time
    #[arg(long)]
    pub pipelining: bool,

    /// Send the message with BDAT <n> LAST (RFC 3030) instead of DATA
    #[arg(long)]
    pub bdat: bool,

    /// Envelope sender and From: address
    #[arg(long, value_name = "ADDR", default_value = "sender@example.test", value_parser = parse_mailbox)]
    pub from: String,

    /// Domain of the recipients, which are rcptN@DOMAIN
    #[arg(long, value_name = "DOMAIN", default_value = "example.test", value_parser = parse_domain)]
    pub to_domain: String,

    /// Name sent with EHLO
    #[arg(long, value_name = "NAME", default_value = "loadgen.test", value_parser = parse_domain)]
    pub ehlo: String,

    /// Overall time limit, after which the generator stops and reports what it has (seconds, or a duration like 90s, 5m)
    #[arg(long, value_name = "SECS", default_value = "300", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Secure each connection with STARTTLS (RFC 3207) after the first EHLO, then send EHLO again
    #[arg(long, conflicts_with = "tls")]
    pub starttls: bool,

    /// Use TLS from the first byte (implicit TLS, RFC 8314; port 465)
    #[arg(long)]
    pub tls: bool,

    /// Authenticate with AUTH PLAIN (RFC 4954, RFC 4616) as this user before the first MAIL of each connection; `{n}` in it is replaced by the attempt's number, a new user name at each attempt
    #[arg(long, value_name = "USER", requires = "auth_password")]
    pub auth_user: Option<String>,

    /// The password for --auth-user; better given in the environment variable, which ps does not show
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "MTA_LOADGEN_AUTH_PASSWORD",
        hide_env_values = true
    )]
    pub auth_password: Option<String>,

    /// Open loop: start R sessions per second, one message each, whatever the server's pace; --sessions caps how many are open at once
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Connect from this loopback address; repeat it to take several in turn (e.g. 127.0.0.2, 127.0.0.3)
    #[arg(long = "source", value_name = "ADDR", value_parser = parse_source)]
    pub sources: Vec<IpAddr>,

    /// Send no mail: each connection sets up (greeting, EHLO, TLS, AUTH) and QUITs, and counts as one of --messages
    #[arg(long, conflicts_with_all = ["pipelining", "bdat"])]
    pub setup_only: bool,

    /// Print the result as one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// The load options this command line asks for.
    pub fn options(&self) -> Options {
        Options {
            server: self.server,
            sessions: self.sessions,
            messages: self.messages,
            size: self.size,
            rcpts: self.rcpts,
            per_connection: self.per_connection,
            pipelining: self.pipelining,
            bdat: self.bdat,
            from: self.from.clone(),
            to_domain: self.to_domain.clone(),
            ehlo: self.ehlo.clone(),
            timeout: self.timeout,
            tls: if self.tls {
                TlsMode::Implicit
            } else if self.starttls {
                TlsMode::StartTls
            } else {
                TlsMode::None
            },
            auth: self.auth_user.as_ref().map(|user| Login {
                user: user.clone(),
                password: self.auth_password.clone().unwrap_or_default(),
            }),
            rate: self.rate,
            sources: self.sources.clone(),
            setup_only: self.setup_only,
        }
    }
}

/// Parses `--rate`: sessions per second, more than 0.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= MAX_RATE => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate: sessions per second, more than 0 and at most {MAX_RATE}"
        )),
    }
}

/// Parses `--source`: a loopback IP address.
pub fn parse_source(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address"))?;
    check_loopback(&SocketAddr::new(ip, 0))?;
    Ok(ip)
}

/// Parses `--server`: an `IP:PORT` (IPv6 as `[::1]:PORT`) or `localhost:PORT`,
/// refusing anything that is not a loopback address.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let addr = match s.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => match s.rsplit_once(':') {
            Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("bad port {port:?} in {s:?}"))?;
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            }
            _ => {
                return Err(format!(
                    "{s:?} is not IP:PORT (e.g. 127.0.0.1:2525 or [::1]:2525); \
                     host names other than localhost are not resolved"
                ))
            }
        },
    };
    if addr.port() == 0 {
        return Err("port 0 is not a server port".to_string());
    }
    check_loopback(&addr)?;
    Ok(addr)
}

/// Parses a byte size: a plain number of bytes, or a number followed by a
/// unit (case-insensitive): `B`, `K`/`KiB` (1024), `M`/`MiB` (1024²),
/// `kB` (1000), `MB` (1000²).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("{s:?} is not a size (e.g. 4096, 4KiB, 100KiB)"));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 4KiB, 100KiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "kb" => 1000,
        "m" | "mib" => 1024 * 1024,
        "mb" => 1000 * 1000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, kB or MB)"
            ))
        }
    };
    let bytes = n
        .checked_mul(mult)
        .filter(|&b| b <= MAX_SIZE)
        .ok_or_else(|| format!("{s:?} is larger than the limit of {MAX_SIZE} bytes"))?;
    if bytes == 0 {
        return Err("size must be at least 1 byte".to_string());
    }
    Ok(bytes as usize)
}

/// Parses `--timeout`: plain seconds (may be fractional) or a humantime
/// duration such as `90s` or `5m`.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 1e9 => Duration::from_secs_f64(secs),
        Ok(_) => {
            return Err(format!(
                "timeout {s:?} must be a positive number of seconds"
            ))
        }
        Err(_) => humantime::parse_duration(t)
            .map_err(|e| format!("{s:?} is not a duration (e.g. 300, 90s, 5m): {e}"))?,
    };
    if d.is_zero() {
        return Err("timeout must be positive".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["mta-loadgen"]).unwrap();
        let o = cli.options();
        assert_eq!(o.server, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(o.sessions, 10);
        assert_eq!(o.messages, 1000);
        assert_eq!(o.size, 4096);
        assert_eq!(o.rcpts, 1);
        assert_eq!(o.per_connection, 0);
        assert!(!o.pipelining && !o.bdat && !cli.json);
        assert_eq!(o.from, "sender@example.test");
        assert_eq!(o.to_domain, "example.test");
        assert_eq!(o.ehlo, "loadgen.test");
        assert_eq!(o.timeout, Duration::from_secs(300));
        assert_eq!(o.tls, TlsMode::None);
        assert!(o.auth.is_none() && o.rate.is_none() && o.sources.is_empty());
    }

    #[test]
    fn tls_auth_rate_and_sources() {
        let cli = Cli::try_parse_from([
            "mta-loadgen",
            "--starttls",
            "--auth-user",
            "bench@example.test",
            "--auth-password",
            "pw-123456",
            "--rate",
            "12.5",
            "--source",
            "127.0.0.2",
            "--source",
            "127.0.0.3",
        ])
        .unwrap();
        let o = cli.options();
        assert_eq!(o.tls, TlsMode::StartTls);
        let login = o.auth.clone().unwrap();
        assert_eq!(
            (login.user.as_str(), login.password.as_str()),
            ("bench@example.test", "pw-123456")
        );
        assert_eq!(o.rate, Some(12.5));
        assert_eq!(
            o.sources,
            [
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "127.0.0.3".parse().unwrap()
            ]
        );
        assert!(o.validate().is_ok());
        assert_eq!(o.messages_per_connection(), 1);
        let o = Cli::try_parse_from(["mta-loadgen", "--tls"])
            .unwrap()
            .options();
        assert_eq!(o.tls, TlsMode::Implicit);

        // Usage errors (status 2).
        for bad in [
            &["mta-loadgen", "--tls", "--starttls"][..],
            &["mta-loadgen", "--auth-user", "u"],
            &["mta-loadgen", "--rate", "0"],
            &["mta-loadgen", "--rate", "-1"],
            &["mta-loadgen", "--rate", "fast"],
            &["mta-loadgen", "--source", "10.0.0.1"],
            &["mta-loadgen", "--source", "example.test"],
            &["mta-loadgen", "--setup-only", "--bdat"],
        ] {
            let err = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        // What only the options' check can see.
        let o = Cli::try_parse_from(["mta-loadgen", "--rate", "5", "--per-connection", "3"])
            .unwrap()
            .options();
        assert!(o.validate().unwrap_err().contains("--per-connection"));
        let o = Cli::try_parse_from([
            "mta-loadgen",
            "--server",
            "[::1]:25",
            "--source",
            "127.0.0.2",
        ])
        .unwrap()
        .options();
        assert!(o.validate().unwrap_err().contains("address family"));
        let o = Cli::try_parse_from(["mta-loadgen", "--auth-user", "u", "--auth-password", ""])
            .unwrap()
            .options();
        assert!(o.validate().unwrap_err().contains("password"));
    }

    #[test]
    fn full_command_line() {
        let cli = Cli::try_parse_from([
            "mta-loadgen",
            "--server",
            "[::1]:25",
            "--sessions",
            "3",
            "--messages",
            "7",
            "--size",
            "100KiB",
            "--rcpts",
            "4",
            "--per-connection",
            "2",
            "--pipelining",
            "--bdat",
            "--from",
            "a@b.test",
            "--to-domain",
            "c.test",
            "--ehlo",
            "me.test",
            "--timeout",
            "5m",
            "--json",
        ])
        .unwrap();
        let o = cli.options();
        assert_eq!(o.server, "[::1]:25".parse().unwrap());
        assert_eq!(
            (o.sessions, o.messages, o.size, o.rcpts),
            (3, 7, 102_400, 4)
        );
        assert_eq!(o.per_connection, 2);
        assert!(o.pipelining && o.bdat && cli.json);
        assert_eq!(o.timeout, Duration::from_secs(300));
    }

    #[test]
    fn non_loopback_server_is_a_usage_error() {
        for bad in [
            "10.0.0.1:25",
            "192.0.2.1:2525",
            "[2001:db8::1]:25",
            "0.0.0.0:25",
        ] {
            let err = Cli::try_parse_from(["mta-loadgen", "--server", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(err.to_string().contains("loopback"), "{bad}: {err}");
        }
        for bad in [
            "example.com:25",
            "127.0.0.1",
            "127.0.0.1:0",
            "[::ffff:127.0.0.1]:25",
        ] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
        for good in [
            "127.0.0.1:2525",
            "127.3.4.5:25",
            "[::1]:2525",
            "localhost:2525",
        ] {
            assert!(parse_server(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kib"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("100KiB"), Ok(102_400));
        assert_eq!(parse_size("10kB"), Ok(10_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("12 B"), Ok(12));
        assert!(parse_size("").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("4XB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("65MiB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-3").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn addresses_and_domains() {
        assert!(parse_mailbox("sender@example.test").is_ok());
        assert!(parse_mailbox("a b@example.test").is_err());
        assert!(parse_mailbox("x@y>\r\nRCPT").is_err());
        assert!(parse_mailbox("nodomain").is_err());
        assert!(parse_domain("example.test").is_ok());
        assert!(parse_domain("ex ample").is_err());
        assert!(parse_domain("a\r\nb").is_err());
        assert!(parse_domain("").is_err());
    }
}
