//! Real peers for tests, on loopback only: [`dns::TestDns`], an
//! authoritative DNS server (hickory-server) for test zones, and
//! [`sink::Sink`], an SMTP server whose replies a test scripts. And
//! [`fuzz::check`], which runs a property test (proptest) for a time
//! budget, for the fuzz targets of the protocol, spool and config crates.
//!
//! Used by the tests of the delivery, protocol, spool and config crates
//! and by the integration tests; never by the programs themselves.

pub mod dns;
pub mod fuzz;
pub mod sink;
