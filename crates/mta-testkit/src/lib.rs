//! Real peers for tests, on loopback only: [`dns::TestDns`], an
//! authoritative DNS server (hickory-server) for test zones, and
//! [`sink::Sink`], an SMTP server whose replies a test scripts.
//!
//! Used by the delivery crate's tests and by the integration tests; never
//! by the programs themselves.

pub mod dns;
pub mod sink;
