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
pub mod report;
pub mod smtp;

pub use load::{check_loopback, run, Options};
pub use report::Report;
