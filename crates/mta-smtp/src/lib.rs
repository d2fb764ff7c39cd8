//! The SMTP server protocol (RFC 5321 and its extensions) as a state
//! machine, with no sockets and no storage.
//!
//! [`Session`] takes the bytes a client sent and says what to do next as a
//! [`Step`]: send a [`Reply`], start TLS, store a [`Message`], check the
//! [`Credentials`] of an AUTH exchange, or close. It frames commands and
//! message text itself ([`Command`] for one command line; `text.rs` for
//! DATA and BDAT; `auth.rs` for AUTH's response lines), because that
//! framing is where SMTP smuggling and STARTTLS injection live, and it
//! must be testable byte by byte. The daemon owns the sockets, the spool
//! and the user database; this crate knows nothing of any of them.
//!
//! One [`SessionConfig`] serves one role: the MX (port 25: no AUTH,
//! relaying for `relay_networks` only) or submission (ports 587 and 465,
//! RFC 6409: an [`AuthPolicy`] with `required_for_mail`). A client that
//! authenticated ([`Session::authenticated`] with [`AuthVerdict::Accepted`])
//! may relay, and its user goes into the envelope's `Origin::auth`.
//! Implicit TLS (port 465) is a session whose caller calls
//! [`Session::tls_started`] before it sends the banner.
//!
//! [`submission_fixes`] and [`author_addresses`] are what a submission
//! server does with a message's header (RFC 6409 section 8, and the
//! author addresses for a sender check).
#![deny(missing_docs)]

mod address;
mod auth;
mod command;
mod date;
mod params;
mod recipients;
mod replay;
mod reply;
mod session;
mod submission;
mod text;

pub use address::AddressError;
pub use auth::{
    AuthPolicy, AuthVerdict, Credentials, Mechanism, Password, UnknownMechanism, RESPONSE_LIMIT,
};
pub use command::{Command, CommandError};
pub use date::rfc5322_date;
pub use params::{check_orcpt, parse_orcpt, OrcptError};
pub use recipients::LocalRecipients;
pub use replay::envelope_of_commands;
pub use reply::Reply;
pub use session::{
    received_header, Admission, LocalUser, Message, Session, SessionConfig, Step, StoreError,
};
pub use submission::{author_addresses, submission_fixes, Authors, SenderPolicy};
pub use text::{header_section, TextError};
