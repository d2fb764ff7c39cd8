//! A private Unbound as the recursive, validating resolver between mtad
//! and test DNS servers: what a real network has and a single test DNS
//! server cannot be. With stub zones it follows a test root to a child
//! zone served by another test server, so a delegation (a signed root, an
//! unsigned child, the DS absence proved by the root's NSEC) is real.
//! Listens on 127.0.0.1 only; Debian's `unbound` (tests/install-peers.sh).
//! Unbound answers `.test` names (RFC 6761) itself unless told not to:
//! the config turns that default off.
//! Stopped on drop.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs it.
pub const UNBOUND: &str = "/usr/sbin/unbound";

/// A running Unbound.
pub struct Unbound {
    /// Where it answers (UDP and TCP).
    pub addr: SocketAddr,
    child: Child,
}

impl Unbound {
    /// Starts one in `dir` (its config and log go there), validating from
    /// `trust_anchor` (DNSKEY records in zone-file form), sending queries
    /// for each `(zone, server)` of `stubs` to that server (`"."` for the
    /// root). Waits (at most 10 s) until it answers.
    pub fn start(
        dir: &Path,
        trust_anchor: &str,
        stubs: &[(&str, SocketAddr)],
    ) -> io::Result<Unbound> {
        std::fs::write(dir.join("root.key"), trust_anchor)?;
        let mut last = None;
        for _ in 0..10 {
            let port = free_udp_port()?;
            let mut config = format!(
                "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  username: \"\"\n\
                 \x20 chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n\
                 \x20 logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  do-ip6: no\n\
                 \x20 do-not-query-localhost: no\n  access-control: 127.0.0.0/8 allow\n\
                 \x20 module-config: \"validator iterator\"\n  trust-anchor-file: \"{d}/root.key\"\n\
                 \x20 qname-minimisation: no\n  harden-referral-path: no\n  cache-max-ttl: 1\n\
                 \x20 cache-max-negative-ttl: 1\n\
                 \x20 local-zone: \"test.\" nodefault\n",
                d = dir.display()
            );
            for (zone, server) in stubs {
                config.push_str(&format!(
                    "stub-zone:\n  name: \"{zone}\"\n  stub-addr: {}@{}\n",
                    server.ip(),
                    server.port()
                ));
            }
            let conf = dir.join("unbound.conf");
            std::fs::write(&conf, config)?;
            let child = Command::new(UNBOUND)
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut unbound = Unbound {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                child,
            };
            match unbound.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(unbound),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("unbound did not start")))
    }

    /// Polls with a root SOA query until an answer comes.
    fn wait_ready(&mut self, limit: Duration) -> io::Result<()> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        // A query for ". SOA", id 0x1234, RD set.
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 1,
        ];
        let began = Instant::now();
        while began.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("unbound exited: {status}")));
            }
            socket.send_to(&query, self.addr)?;
            let mut buf = [0u8; 512];
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n >= 2 && buf[..2] == query[..2] {
                    return Ok(());
                }
            }
        }
        Err(io::Error::other("unbound did not answer in time"))
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP port free now on 127.0.0.1 (Unbound binds it, and TCP, after).
fn free_udp_port() -> io::Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    let tcp_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    if tcp_free {
        Ok(port)
    } else {
        free_udp_port()
    }
}
