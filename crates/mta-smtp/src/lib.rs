//! The SMTP server protocol (RFC 5321 and its extensions) as a state
//! machine, with no sockets and no storage.
//!
//! [`Session`] takes the bytes a client sent and says what to do next as a
//! [`Step`]: send a [`Reply`], start TLS, store a [`Message`], or close. It
//! frames commands and message text itself ([`Command`] for one command
//! line; `text.rs` for DATA and BDAT), because that framing is where SMTP
//! smuggling and STARTTLS injection live, and it must be testable byte by
//! byte. The daemon owns the sockets and the spool; this crate knows nothing
//! of either.
#![deny(missing_docs)]

mod address;
mod command;
mod date;
mod params;
mod recipients;
mod reply;
mod session;
mod text;

pub use address::AddressError;
pub use command::{Command, CommandError};
pub use date::rfc5322_date;
pub use recipients::LocalRecipients;
pub use reply::Reply;
pub use session::{received_header, Admission, Message, Session, SessionConfig, Step, StoreError};
pub use text::{header_section, TextError};
