//! `[submission]` (RFC 6409, port 587) and `[submissions]` (RFC 8314,
//! port 465): the listeners for people and programs that authenticate
//! before they send, beside `[smtp]`, the MX and relay role of port 25.
//!
//! Each role has its own listening addresses, its own connection pool
//! and its own per-client counters, so that a flood on one port cannot
//! starve another, as Postfix gives each `master.cf` service its own
//! process limit. The limits an operator tunes per port are keys of the
//! role's own section; unset, they take `[smtp]`'s value. What is the
//! same for every role stays in `[smtp]` only: the command and text line
//! lengths (protocol limits), `min_data_rate`, the local domains and
//! recipients, and `relay_networks` (a client in them may relay on any
//! port, as it may on port 25).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::size::ByteSize;
use crate::smtp::SmtpConfig;

/// `[submission]` or `[submissions]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubmissionConfig {
    /// Addresses to listen on; empty (the default): the role is off.
    pub listen: Vec<SocketAddr>,
    /// Sessions served at once on this role's addresses.
    pub max_connections: Option<usize>,
    /// The SIZE limit in octets.
    pub max_message_size: Option<ByteSize>,
    /// Recipients per transaction.
    pub max_recipients: Option<usize>,
    /// Error replies before the session is closed.
    pub max_errors: Option<u32>,
    /// The command deadline (see `[smtp] idle_timeout`).
    #[serde(default, with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// The longest a session may last.
    #[serde(default, with = "humantime_serde::option")]
    pub max_session_time: Option<Duration>,
    /// Sessions at once from one client; 0: no limit.
    pub max_connections_per_client: Option<usize>,
    /// New sessions per minute from one client; 0: no limit.
    pub max_connection_rate_per_client: Option<u32>,
}

/// The three SMTP roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `[smtp]`: port 25, mail from other MTAs and from `relay_networks`.
    Mx,
    /// `[submission]`: port 587, STARTTLS then AUTH (RFC 6409).
    Submission,
    /// `[submissions]`: port 465, TLS from the first byte (RFC 8314).
    Submissions,
}

impl Role {
    /// All three, in the order status shows them.
    pub const ALL: [Role; 3] = [Role::Mx, Role::Submission, Role::Submissions];

    /// Its place in [`Role::ALL`], for tables kept per role.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The role's name in status, metrics and logs, which is also its
    /// configuration section.
    pub fn name(self) -> &'static str {
        match self {
            Role::Mx => "smtp",
            Role::Submission => "submission",
            Role::Submissions => "submissions",
        }
    }
}

/// A role's limits with `[smtp]`'s filled in where its section is silent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleLimits {
    /// Sessions at once.
    pub max_connections: usize,
    /// The SIZE limit in octets.
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Error replies before the session is closed.
    pub max_errors: u32,
    /// The command deadline.
    pub idle_timeout: Duration,
    /// The longest a session may last.
    pub max_session_time: Duration,
    /// Sessions at once from one client; 0: no limit.
    pub max_connections_per_client: usize,
    /// New sessions per minute from one client; 0: no limit.
    pub max_connection_rate_per_client: u32,
}

impl SubmissionConfig {
    /// This role's limits, `[smtp]`'s where unset.
    pub fn limits(&self, smtp: &SmtpConfig) -> RoleLimits {
        let base = smtp.limits();
        RoleLimits {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_message_size: self.max_message_size.map_or(base.max_message_size, |s| s.0),
            max_recipients: self.max_recipients.unwrap_or(base.max_recipients),
            max_errors: self.max_errors.unwrap_or(base.max_errors),
            idle_timeout: self.idle_timeout.unwrap_or(base.idle_timeout),
            max_session_time: self.max_session_time.unwrap_or(base.max_session_time),
            max_connections_per_client: self
                .max_connections_per_client
                .unwrap_or(base.max_connections_per_client),
            max_connection_rate_per_client: self
                .max_connection_rate_per_client
                .unwrap_or(base.max_connection_rate_per_client),
        }
    }

    /// Reports what cannot work: limits of zero where at least one is
    /// needed.
    pub(crate) fn check(&self, section: &str, problem: &mut impl FnMut(&str, String)) {
        let mut at_least_one = |key: &str, value: Option<u64>| {
            if value == Some(0) {
                problem(&format!("{section}.{key}"), "must be at least 1".into());
            }
        };
        at_least_one("max_connections", self.max_connections.map(|v| v as u64));
        at_least_one("max_recipients", self.max_recipients.map(|v| v as u64));
        at_least_one("max_errors", self.max_errors.map(u64::from));
        for (key, value) in [
            ("idle_timeout", self.idle_timeout),
            ("max_session_time", self.max_session_time),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                problem(
                    &format!("{section}.{key}"),
                    "must be longer than zero".into(),
                );
            }
        }
    }
}

impl SmtpConfig {
    /// The MX role's limits, as `[smtp]` gives them.
    pub fn limits(&self) -> RoleLimits {
        RoleLimits {
            max_connections: self.max_connections,
            max_message_size: self.max_message_size.0,
            max_recipients: self.max_recipients,
            max_errors: self.max_errors,
            idle_timeout: self.idle_timeout,
            max_session_time: self.max_session_time,
            max_connections_per_client: self.max_connections_per_client,
            max_connection_rate_per_client: self.max_connection_rate_per_client,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_takes_smtp_limits_where_its_section_is_silent() {
        let smtp = SmtpConfig {
            max_recipients: 7,
            max_connections_per_client: 3,
            ..SmtpConfig::default()
        };
        let role: SubmissionConfig = toml::from_str(
            "listen = [\"127.0.0.1:0\"]\nmax_recipients = 50\nidle_timeout = \"30s\"\n",
        )
        .unwrap();
        let limits = role.limits(&smtp);
        assert_eq!(limits.max_recipients, 50);
        assert_eq!(limits.idle_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_connections_per_client, 3);
        assert_eq!(limits.max_message_size, smtp.max_message_size.0);
        assert_eq!(SubmissionConfig::default().limits(&smtp), smtp.limits());
    }

    #[test]
    fn zero_limits_are_problems() {
        let role: SubmissionConfig =
            toml::from_str("max_connections = 0\nmax_recipients = 0\nidle_timeout = \"0s\"\n")
                .unwrap();
        let mut found = Vec::new();
        role.check("submission", &mut |key, what| {
            found.push(format!("{key}: {what}"))
        });
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("submission.max_connections"));
    }
}
