//! `[smtp]`: the listener and its limits. (The local recipient list it
//! names is read and checked in `recipients.rs`.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::size::ByteSize;

/// `[smtp]`: the listener and its limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    /// Addresses to listen on; port 0 picks a free port (the daemon
    /// announces the real one).
    pub listen: Vec<SocketAddr>,
    /// Connections served at once; one more gets `421 4.7.0` at the banner.
    pub max_connections: usize,
    /// The SIZE limit in octets (RFC 1870).
    pub max_message_size: ByteSize,
    /// Recipients per transaction; one more gets `452 4.5.3`, which is
    /// not an error (RFC 5321 section 4.5.3.1.10): the client sends the
    /// rest in another transaction.
    pub max_recipients: usize,
    /// Recipients over `max_recipients` one transaction may send, each
    /// answered `452 4.5.3`, before the next one gets `421 4.7.0` and the
    /// session is closed (as Postfix's `smtpd_recipient_overshoot_limit`,
    /// counted per transaction as there).
    pub recipient_overshoot_limit: usize,
    /// Longest command line, CRLF included (RFC 5321 section 4.5.3.1.4).
    pub max_command_line: usize,
    /// Longest text line in DATA, CRLF included (RFC 5321 section 4.5.3.1.6).
    pub max_line_length: usize,
    /// Error replies in one session before it gets `421` and is closed.
    pub max_errors: u32,
    /// The command deadline: from the moment the server waits for a
    /// command (after the banner, after each reply) to the end of the
    /// complete command line, whatever arrives in between; then `421
    /// 4.4.2`. Also bounds the TLS handshake, each write, and the pause a
    /// client may make in message text (RFC 5321 section 4.5.3.2.7 asks
    /// for at least 5 minutes).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// DATA and BDAT text: the deadline, `idle_timeout` from the start of
    /// the text, moves on by one second for every this many octets
    /// received, never to more than `idle_timeout` ahead (Postfix's
    /// `smtpd_min_data_rate` with `smtpd_per_request_deadline`). Octets
    /// per second, at least 1.
    pub min_data_rate: u64,
    /// The longest a session may last, whatever it does; then `421
    /// 4.4.2`, even in the middle of a message.
    #[serde(with = "humantime_serde")]
    pub max_session_time: Duration,
    /// In-flow control, as Postfix's `in_flow_delay`: while first
    /// delivery attempts wait for a slot of the ram runner (mail arrives
    /// faster than it is delivered), a MAIL command that opens a
    /// transaction waits, at most this long, for the runner to take the
    /// next message from its line; then it is answered as usual. The
    /// same for every role. 0 turns it off; never more than half of
    /// `idle_timeout` (a longer setting is cut to that).
    #[serde(with = "humantime_serde")]
    pub in_flow_delay: Duration,
    /// Sessions at once from one client (an IPv4 address, an IPv6 /64);
    /// one more gets `421 4.7.0` at the banner. 0: no limit.
    pub max_connections_per_client: usize,
    /// New sessions per minute (a sliding minute) from one client; one
    /// more gets `421 4.7.0` at the banner. 0: no limit.
    pub max_connection_rate_per_client: u32,
    /// Clients the two per-client limits do not apply to. Absent: the
    /// `relay_networks` (as Postfix exempts `$mynetworks`).
    pub client_limit_exemptions: Option<Vec<IpNet>>,
    /// Domains whose mail is ours to keep: anyone may send to them.
    pub local_domains: Vec<String>,
    /// The mailboxes of the local domains, `user` (at every local domain)
    /// or `user@domain`; a local recipient not listed here or in
    /// `local_recipients_file` gets `550 5.1.1` at RCPT. Neither set: any
    /// local part that can name a mailbox is taken.
    pub local_recipients: Option<Vec<String>>,
    /// A file of more such mailboxes, one a line (`#` comments), read at
    /// start and by each graceful restart.
    pub local_recipients_file: Option<PathBuf>,
    /// Clients that may relay to any domain.
    pub relay_networks: Vec<IpNet>,
    /// Offer AUTH on port 25 too, after STARTTLS (for clients that cannot
    /// use 587 or 465); off by default, as an MX has no users.
    pub auth: bool,
}

impl SmtpConfig {
    /// The clients exempt from the per-client limits: the explicit list,
    /// or the relay networks.
    pub fn client_limit_exemptions(&self) -> &[IpNet] {
        self.client_limit_exemptions
            .as_deref()
            .unwrap_or(&self.relay_networks)
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 2525))],
            max_connections: 1000,
            max_message_size: ByteSize(25 * 1024 * 1024),
            max_recipients: 100,
            recipient_overshoot_limit: 1000,
            max_command_line: 512,
            max_line_length: 1000,
            max_errors: 20,
            idle_timeout: Duration::from_secs(300),
            min_data_rate: 500,
            max_session_time: Duration::from_secs(3600),
            in_flow_delay: Duration::from_secs(1),
            max_connections_per_client: 50,
            max_connection_rate_per_client: 600,
            client_limit_exemptions: None,
            local_domains: vec!["localhost".to_owned()],
            local_recipients: None,
            local_recipients_file: None,
            relay_networks: vec![
                "127.0.0.0/8".parse().expect("valid network"),
                "::1/128".parse().expect("valid network"),
            ],
            auth: false,
        }
    }
}
