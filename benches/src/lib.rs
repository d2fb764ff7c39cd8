//! `mta-loadgen`: an SMTP load generator for the MTA's benchmarks.
//!
//! The binary (`src/main.rs`) is a thin wrapper: it parses [`cli::Cli`],
//! turns it into [`Options`] and calls [`run`], which drives the load and
//! returns a [`Report`]. Tests call [`run`] directly against a sink.
//!
//! Safety rails: [`run`] only ever connects to loopback addresses
//! (127.0.0.0/8 or `::1`), the number of messages is bounded by
//! [`Options::messages`] and the whole run is bounded by [`Options::timeout`].

pub mod cli;
pub mod load;
pub mod message;
pub mod open_loop;
pub mod options;
pub mod report;
mod session;
pub mod smtp;
pub mod tls;

pub use load::run;
pub use options::{check_loopback, Login, Options};
pub use report::Report;
pub use tls::TlsMode;
