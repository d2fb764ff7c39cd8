//! Real peers for tests, on loopback only: [`dns::TestDns`], an
//! authoritative DNS server (hickory-server) for test zones, and
//! [`sink::Sink`], an SMTP server whose replies a test scripts;
//! [`https::PolicyHost`], an HTTPS server for MTA-STS policies. And
//! [`fuzz::check`], which runs a property test (proptest) for a time
//! budget, for the fuzz targets of the protocol, spool and config crates.
//!
//! Used by the tests of the delivery, protocol, spool and config crates
//! and by the integration tests; never by the programs themselves.

pub mod dns;
pub mod dovecot;
pub mod fuzz;
pub mod https;
pub mod sink;
pub mod unbound;

use std::path::Path;

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
