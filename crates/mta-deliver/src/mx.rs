//! MX resolution. Placeholder until the DNS work lands; `Target` is the
//! shared shape both halves of the crate agree on.

use std::net::SocketAddr;

/// One host to try, in order: an MX host (or the domain itself for an
/// implicit MX, or a smarthost) with its addresses, port included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name (or IP literal) as routing found it.
    pub host: String,
    /// Its addresses with the outbound port, IPv6 and IPv4 as resolved.
    pub addrs: Vec<SocketAddr>,
}
