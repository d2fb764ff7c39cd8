//! The envelope of a message: who sent it, to whom it goes, and the DSN
//! requests made for it (RFC 5321 section 2.3.1, RFC 3461).
//!
//! These are plain data types shared by the SMTP protocol crate (which builds
//! them from MAIL and RCPT commands), the spool (which stores them beside the
//! message) and delivery (which reads them back). Parsing address syntax is
//! the protocol crate's job: a [`Mailbox`] here is already valid.
//!
//! Invariant: no string held here contains CR, LF or any other control
//! character; the protocol crate rejects such input before building one.
//!
//! [`mailbox_name`] is the one rule for what a local part of a local
//! domain may name: the SMTP server checks it at RCPT and local delivery
//! builds the Maildir path with it.
#![deny(missing_docs)]

mod local_part;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use local_part::mailbox_name;

/// Seconds since the Unix epoch: the clock of arrival times, schedules and
/// histories (0 if the system clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A queue id: a monotonic 64-bit number shown as 16 lowercase hex digits.
///
/// Ids sort in order of acceptance, so a directory listing or an index scan
/// meets older messages first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct QueueId(u64);

impl QueueId {
    /// Wraps a raw id value.
    pub const fn new(value: u64) -> Self {
        QueueId(value)
    }

    /// The raw id value.
    pub const fn value(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A string that is not a queue id.
#[derive(Debug, thiserror::Error)]
#[error("not a queue id (16 hex digits): {0:?}")]
pub struct BadQueueId(String);

impl FromStr for QueueId {
    type Err = BadQueueId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(BadQueueId(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(QueueId)
            .map_err(|_| BadQueueId(s.to_owned()))
    }
}

impl From<QueueId> for String {
    fn from(id: QueueId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for QueueId {
    type Error = BadQueueId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A mailbox, `local-part@domain` (RFC 5321 section 4.1.2), already checked.
///
/// The local part is kept as sent (a quoted string keeps its quotes); the
/// domain is kept as sent too, and compared without regard to ASCII case.
/// A recipient of just `postmaster` (RFC 5321 section 4.5.1) has an empty
/// domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mailbox {
    /// The part before the last `@`.
    pub local: String,
    /// The part after the last `@`: a domain name or an address literal
    /// such as `[192.0.2.1]`; empty only for the bare `postmaster`.
    pub domain: String,
}

impl Mailbox {
    /// `local@domain`, the parts as given (no check: the protocol crate
    /// parses addresses from the wire).
    pub fn new(local: impl Into<String>, domain: impl Into<String>) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    /// True when the local part or the domain holds non-ASCII characters,
    /// which needs SMTPUTF8 (RFC 6531) to be carried.
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.domain.is_empty() {
            f.write_str(&self.local)
        } else {
            write!(f, "{}@{}", self.local, self.domain)
        }
    }
}

/// The reverse path of MAIL FROM: a mailbox, or the null sender `<>` used
/// by delivery status notifications (RFC 5321 section 4.5.5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReversePath {
    /// `MAIL FROM:<>`: no DSN may ever be sent back.
    Null,
    /// An ordinary sender.
    Mailbox(Mailbox),
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// The BODY parameter of MAIL (RFC 6152).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyType {
    /// No BODY parameter, or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// The RET parameter of MAIL (RFC 3461 section 4.3): what a DSN returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ret {
    /// Return the whole message.
    Full,
    /// Return the headers only.
    Hdrs,
}

/// The NOTIFY parameter of RCPT (RFC 3461 section 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notify {
    /// `NOTIFY=NEVER`: no DSN at all for this recipient.
    Never,
    /// A list of the conditions that ask for a DSN.
    On {
        /// SUCCESS was listed.
        success: bool,
        /// FAILURE was listed.
        failure: bool,
        /// DELAY was listed.
        delay: bool,
    },
}

impl Notify {
    /// The parameter's value as RCPT carries it (RFC 3461 section 4.1):
    /// `NEVER`, or the conditions listed, comma-separated, in the order
    /// SUCCESS, FAILURE, DELAY (empty when none is).
    pub fn value(&self) -> String {
        match *self {
            Notify::Never => "NEVER".to_owned(),
            Notify::On {
                success,
                failure,
                delay,
            } => [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")]
                .into_iter()
                .filter_map(|(listed, word)| listed.then_some(word))
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// One recipient of a transaction, with its DSN requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The forward path of RCPT TO.
    pub address: Mailbox,
    /// NOTIFY, when given; without it, failures and delays are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// ORCPT, decoded from xtext: `addr-type;address`, e.g.
    /// `rfc822;user@example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
}

/// How the client reached us: what the `Received:` header and later DSNs
/// say about the session that handed the message over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The client's IP address.
    pub client_ip: IpAddr,
    /// The argument of EHLO or HELO.
    pub helo: String,
    /// `ESMTP`, `ESMTPS`, `ESMTPSA`, `UTF8SMTPS`...: the `with` clause of
    /// `Received:` (RFC 3848, RFC 6531); the `A` says the client
    /// authenticated.
    pub protocol: String,
    /// The TLS version and cipher suite, when the session used TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// The user the client authenticated as (SMTP AUTH, RFC 4954), when it
    /// did. Absent from spool files written before AUTH existed, and from
    /// those of unauthenticated sessions. Never shown in `Received:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
}

/// Everything about a message except its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// MAIL FROM.
    pub sender: ReversePath,
    /// RCPT TO, in the order given.
    pub recipients: Vec<Recipient>,
    /// BODY.
    #[serde(default)]
    pub body: BodyType,
    /// The SMTPUTF8 parameter was given (RFC 6531).
    #[serde(default)]
    pub smtputf8: bool,
    /// RET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<Ret>,
    /// ENVID, decoded from xtext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envid: Option<String>,
    /// Who handed the message to us.
    pub origin: Origin,
    /// When the message was accepted, in seconds since the Unix epoch.
    pub arrival: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_values_as_rcpt_carries_them() {
        let on = |success, failure, delay| Notify::On {
            success,
            failure,
            delay,
        };
        assert_eq!(Notify::Never.value(), "NEVER");
        assert_eq!(on(true, true, true).value(), "SUCCESS,FAILURE,DELAY");
        assert_eq!(on(false, true, true).value(), "FAILURE,DELAY");
        assert_eq!(on(true, false, false).value(), "SUCCESS");
        assert_eq!(on(false, false, false).value(), "");
    }

    #[test]
    fn queue_id_round_trips_as_sixteen_hex_digits() {
        let id = QueueId::new(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!("0123456789abcdef".parse::<QueueId>().unwrap(), id);
        assert!("123".parse::<QueueId>().is_err());
        assert!("0123456789abcdeg".parse::<QueueId>().is_err());
    }

    #[test]
    fn envelope_serializes_without_raw_newlines() {
        let env = Envelope {
            sender: ReversePath::Null,
            recipients: vec![Recipient {
                address: Mailbox {
                    local: "a".into(),
                    domain: "example.test".into(),
                },
                notify: Some(Notify::Never),
                orcpt: None,
            }],
            body: BodyType::EightBitMime,
            smtputf8: false,
            ret: Some(Ret::Hdrs),
            envid: Some("x".into()),
            origin: Origin {
                client_ip: "127.0.0.1".parse().unwrap(),
                helo: "client".into(),
                protocol: "ESMTP".into(),
                tls: None,
                auth: None,
            },
            arrival: 1,
        };
        let json = serde_json::to_string(&env).unwrap();
        assert!(!json.contains('\n'));
        assert!(!json.contains("auth"), "None is left out: {json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, env);
        let mut authenticated = env;
        authenticated.origin.auth = Some("alice".into());
        authenticated.origin.protocol = "ESMTPSA".into();
        let json = serde_json::to_string(&authenticated).unwrap();
        assert!(json.contains(r#""auth":"alice""#), "{json}");
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, authenticated);
    }

    /// Spool files written before `Origin::auth` existed still read, as
    /// unauthenticated: the envelope line of such a file, as it was.
    #[test]
    fn an_envelope_written_before_auth_existed_reads() {
        let old = r#"{"sender":{"mailbox":{"local":"a","domain":"b.test"}},"recipients":[{"address":{"local":"x","domain":"local.test"}}],"body":"seven_bit","smtputf8":false,"origin":{"client_ip":"192.0.2.7","helo":"c.test","protocol":"ESMTPS","tls":"TLSv1.3"},"arrival":1700000000}"#;
        let env: Envelope = serde_json::from_str(old).unwrap();
        assert_eq!(env.origin.auth, None);
        assert_eq!(env.origin.protocol, "ESMTPS");
        assert_eq!(env.origin.tls.as_deref(), Some("TLSv1.3"));
        assert_eq!(env.recipients[0].address, Mailbox::new("x", "local.test"));
    }
}
