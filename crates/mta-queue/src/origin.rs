//! The origin recorded on the messages this MTA makes itself: DSNs, and
//! the envelopes rebuilt from the index when a spool file is unreadable.

use std::net::{IpAddr, Ipv4Addr};

use mta_envelope::Origin;

/// A local origin under our host name.
pub(crate) fn local_origin(hostname: &str) -> Origin {
    Origin {
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        helo: hostname.to_owned(),
        protocol: "local".to_owned(),
        tls: None,
        auth: None,
    }
}
