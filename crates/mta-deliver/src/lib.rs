//! Outbound delivery: the SMTP client (RFC 5321) and MX resolution.
//!
//! [`Client`] delivers one message ([`OutboundMessage`]: an envelope, the
//! recipient indexes for this transaction, the stored content) to one
//! [`Destination`] (a key, the recipient domain, and the [`Target`] hosts
//! to try in order) and returns an [`Attempt`]: one [`Outcome`] per
//! recipient — Delivered (saying whether the next hop took over the DSN
//! duty: [`Delivery`]), Deferred or Failed, with an enhanced status code,
//! a reason in Postfix's words and the server's own reply
//! ([`ServerReply`]) when one decided it. It is configured by a [`ClientConfig`]:
//! the EHLO name, the [`Timeouts`] of RFC 5321 section 4.5.3.2, the
//! [`TlsPolicy`] (none, opportunistic per RFC 7435, or required and
//! verified) by domain, the connection limits, and the throttles: rules
//! ([`ThrottleRule`]) by domain, `*.` suffix or MX host, enforced by
//! [`Throttles`] (connections at once, messages per hour, back-off after
//! 4xx and 421 replies), which client generations share across a reload.
//!
//! Inside, modules follow the order of a session:
//!
//! - `client.rs`: [`Client`], trying targets in order and the plaintext
//!   retry after a failed opportunistic handshake;
//! - `session.rs`: one connection — greeting, EHLO/HELO, STARTTLS (RFC
//!   3207), reply reading with timeouts;
//! - `transaction.rs`: MAIL, RCPT, DATA, pipelined when offered (RFC 2920),
//!   with SIZE, BODY, SMTPUTF8 and DSN parameters;
//! - `needs.rs`: which recipients of a message can go to a server that
//!   lacks SMTPUTF8 or 8BITMIME (5.6.7, 5.6.9, 5.6.3 for those that
//!   cannot), and whether BODY and SMTPUTF8 are sent;
//! - `data.rs`: dot-stuffing; `reply.rs`: reply and enhanced status
//!   parsing (RFC 2034);
//! - `tls.rs`: the rustls configurations; `pool.rs`: idle connections kept
//!   for reuse by destination key;
//! - `throttle.rs`: [`Throttles`] — rule lookup, hourly windows,
//!   back-offs and their export; `limits.rs`: the connection counters
//!   (by destination key and by `mx:` host) it owns;
//! - `mx.rs`: MX resolution into [`Target`]s;
//! - `dane/`: DANE (RFC 7672), the TLSA records of MX hosts through a
//!   DNSSEC-validating resolver ([`Dane`], [`DanePolicy`]), and the
//!   certificate check they require; `sts/`: MTA-STS (RFC 8461).
//!
//! Delivery never returns a Rust error: every problem, local or remote,
//! becomes an outcome the queue can act on. A connection lost after the
//! message text was sent is Deferred: the message may then arrive twice,
//! never zero times.
#![deny(missing_docs)]

mod client;
mod config;
mod counters;
pub mod dane;
pub mod data;
mod error;
mod limits;
pub mod mx;
mod needs;
mod outcome;
mod pool;
mod reply;
mod requirement;
mod session;
pub mod sts;
mod throttle;
mod tls;
mod tls_info;
mod transaction;

pub use client::{Client, Destination, OutboundMessage};
pub use config::{ClientConfig, DeliveryConfig, EightBitPolicy, ThrottleRule, Timeouts, TlsPolicy};
pub use counters::TlsCounts;
pub use dane::{Dane, DanePolicy, HostTlsa};
pub use error::ClientError;
pub use mx::{ResolveError, Resolver, ResolverConfig, Target};
pub use outcome::{Attempt, Delivery, Outcome, ServerReply, ServerSignal};
pub use reply::enhanced_code;
pub use requirement::{HostPolicy, Published, TlsRequirement};
pub use sts::cache::{CachedPolicy, PolicyCache};
pub use sts::MtaSts;
pub use throttle::{Backoff, RateWindow, ThrottleSnapshot, Throttles};
pub use tls::{describe_session, AcceptAnyCertificate};
pub use tls_info::{TlsInfo, Verification};
