//! The listening sockets, and their hand-over across a restart.
//!
//! mtad keeps one descriptor of every listening socket in a [`Sockets`]
//! registry and gives each accept loop its own duplicate. A restart
//! re-executes mtad in the same process with those descriptors inherited,
//! as systemd's socket activation passes them (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, descriptors from 3 up): the sockets never close, so
//! a client connecting meanwhile waits in the kernel's backlog and is
//! served by the new image instead of being refused. The same code takes
//! the sockets systemd passes to a socket-activated mtad.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use anyhow::{Context as _, Result};
use mta_config::Role;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use parking_lot::Mutex;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// What a listening socket serves: SMTP in one of its roles (port 25,
/// submission, implicit-TLS submission), or the admin HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Smtp(Role),
    Http,
}

impl Kind {
    /// Every kind, in the order a hand-over passes them.
    pub const ALL: [Kind; 4] = [
        Kind::Smtp(Role::Mx),
        Kind::Smtp(Role::Submission),
        Kind::Smtp(Role::Submissions),
        Kind::Http,
    ];

    /// The name in `LISTEN_FDNAMES` and the log: the configuration
    /// section (`smtp`, `submission`, `submissions`, `http`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Smtp(role) => role.name(),
            Kind::Http => "http",
        }
    }

    /// The kind a `LISTEN_FDNAMES` entry names; an unknown or missing
    /// name is port 25's (systemd's default name is `unknown`).
    fn named(name: Option<&str>) -> Kind {
        Kind::ALL
            .into_iter()
            .find(|k| Some(k.name()) == name)
            .unwrap_or(Kind::Smtp(Role::Mx))
    }
}

/// Sockets handed to this process image by the one before it (or by
/// systemd), not yet claimed by a configured address.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(Kind, TcpListener)>,
}

impl Inherited {
    /// Takes the sockets named by `LISTEN_FDS` when `LISTEN_PID` is this
    /// process, and removes those variables so no child sees them. Call
    /// first thing in `main`, before any thread starts.
    pub fn take_from_env() -> Inherited {
        let pid_matches = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        let count = std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse::<i32>().ok())
            .unwrap_or(0);
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        if !pid_matches || count <= 0 {
            return Inherited::default();
        }
        let names: Vec<&str> = names.split(':').collect();
        let mut sockets = Vec::new();
        for i in 0..count {
            let fd = FIRST_FD + i;
            // Ours from here on; not to be passed to anything we run.
            if fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).is_err() {
                continue;
            }
            // SAFETY: the protocol hands these descriptors to this process;
            // nothing else in it owns them.
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            if listener.local_addr().is_err() {
                // Not a socket of ours (a datagram socket, a file): close.
                continue;
            }
            let kind = Kind::named(names.get(i as usize).copied());
            sockets.push((kind, listener));
        }
        Inherited { sockets }
    }

    /// Number of sockets still unclaimed.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// The inherited socket for a configured address: the same address,
    /// or, when the configuration leaves the port to the system (port 0),
    /// the same IP with whatever port it got the first time.
    fn claim(&mut self, kind: Kind, wanted: SocketAddr) -> Option<TcpListener> {
        let position = self.sockets.iter().position(|(k, l)| {
            *k == kind
                && l.local_addr().is_ok_and(|have| {
                    have == wanted || (wanted.port() == 0 && have.ip() == wanted.ip())
                })
        })?;
        Some(self.sockets.remove(position).1)
    }
}

/// Every listening socket of this process, by kind, in configuration order.
#[derive(Debug, Default)]
pub struct Sockets {
    open: Mutex<HashMap<Kind, Vec<TcpListener>>>,
}

impl Sockets {
    /// Binds (or takes over from `inherited`) one socket per address.
    /// Returns the addresses actually bound.
    pub fn open(
        &self,
        kind: Kind,
        addrs: &[SocketAddr],
        inherited: &mut Inherited,
    ) -> Result<Vec<SocketAddr>> {
        let mut bound = Vec::new();
        for &addr in addrs {
            let listener = match inherited.claim(kind, addr) {
                Some(l) => {
                    tracing::info!(%addr, kind = kind.name(), "listening socket taken over");
                    l
                }
                None => bind(addr).map_err(|e| cannot_listen(kind, addr, e))?,
            };
            bound.push(listener.local_addr().context("listening address")?);
            self.open.lock().entry(kind).or_default().push(listener);
        }
        Ok(bound)
    }

    /// Binds again the addresses a service had (after `svc down`).
    pub fn reopen(&self, kind: Kind, addrs: &[SocketAddr]) -> Result<()> {
        self.open(kind, addrs, &mut Inherited::default()).map(drop)
    }

    /// Closes a kind's sockets (`svc down`): once the accept loops have
    /// dropped their duplicates, new connections are refused.
    pub fn close(&self, kind: Kind) {
        self.open.lock().remove(&kind);
    }

    /// Tokio duplicates of a kind's sockets, for accept loops.
    pub fn duplicates(&self, kind: Kind) -> Result<Vec<tokio::net::TcpListener>> {
        let open = self.open.lock();
        let Some(list) = open.get(&kind) else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(|l| {
                let dup = l.try_clone().context("duplicating a listening socket")?;
                dup.set_nonblocking(true)
                    .context("non-blocking listening socket")?;
                tokio::net::TcpListener::from_std(dup).context("registering a listening socket")
            })
            .collect()
    }

    /// Takes every socket out for a hand-over.
    pub fn take_all(&self) -> Vec<(Kind, TcpListener)> {
        let mut open = self.open.lock();
        let mut all = Vec::new();
        for kind in Kind::ALL {
            for l in open.remove(&kind).unwrap_or_default() {
                all.push((kind, l));
            }
        }
        all
    }
}

/// Why a bind failed, with the way out when it is a privileged port and
/// mtad no longer runs as root (a restart after switching users).
fn cannot_listen(kind: Kind, addr: SocketAddr, e: std::io::Error) -> anyhow::Error {
    let what = format!("cannot listen on {addr} ({}): {e}", kind.name());
    let euid = nix::unistd::geteuid();
    if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 && !euid.is_root() {
        anyhow::anyhow!(
            "{what}: mtad runs as uid {euid} and only root may bind a port below 1024; a restart \
             keeps the sockets mtad has, so a new privileged address takes `mta-init stop` and \
             `mta-init start`"
        )
    } else {
        anyhow::anyhow!(what)
    }
}

/// A listening socket with the backlog clients wait in during a restart.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?;
    let std = listener.into_std()?;
    Ok(std)
}

/// Connections the kernel holds for us while no one accepts (a restart);
/// Linux caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// Puts the sockets at descriptors 3, 4, ... without close-on-exec and
/// returns the environment that names them for the next image. Call only
/// right before `exec`: it replaces whatever those descriptors were.
pub fn prepare_handover(sockets: Vec<(Kind, TcpListener)>) -> Result<Vec<(OsString, OsString)>> {
    // First move every socket above the range, so placing one cannot
    // clobber another that happens to sit at 3, 4, ...
    let high: Vec<(Kind, OwnedFd)> = sockets
        .into_iter()
        .map(|(kind, l)| {
            let fd = l.into_raw_fd();
            let moved = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(1000)).context("moving a socket")?;
            nix::unistd::close(fd).ok();
            // SAFETY: `moved` is a fresh descriptor we own.
            Ok((kind, unsafe { OwnedFd::from_raw_fd(moved) }))
        })
        .collect::<Result<_>>()?;
    let mut names = Vec::new();
    for (i, (kind, fd)) in high.iter().enumerate() {
        let target = FIRST_FD + i as RawFd;
        // dup2 leaves the new descriptor without close-on-exec.
        nix::unistd::dup2(fd.as_raw_fd(), target).context("placing a socket for the new image")?;
        names.push(kind.name());
    }
    drop(high);
    Ok(vec![
        ("LISTEN_FDS".into(), names.len().to_string().into()),
        // The pid does not change across exec.
        ("LISTEN_PID".into(), std::process::id().to_string().into()),
        ("LISTEN_FDNAMES".into(), names.join(":").into()),
    ])
}
