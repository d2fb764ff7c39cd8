//! Finding the daemon: its control socket first, then its PID file and
//! whether that PID is alive.
//!
//! Not being allowed to look is not the same as finding nothing. A user
//! who may not read the PID file (EACCES: a 0700 queue directory), may
//! not connect to the control socket, or may not signal the process
//! (EPERM from kill: it is alive, and someone else's) cannot tell whether
//! mtad is dead: every command then says so and exits 4 (LSB: unknown,
//! insufficient privilege), and nothing is removed or started. Before,
//! such a user was told "dead but PID file exists" and `stop` removed the
//! PID file of a live daemon.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use mta_config::Config;
use mta_control::{ControlError, Request, Response, Status};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// Exit code when this user may not look at or control the daemon (LSB:
/// "program or service status is unknown"; "user had insufficient
/// privilege").
pub const EXIT_NOT_PERMITTED: u8 = 4;

/// What mta-init can find out about the daemon.
#[derive(Debug)]
pub enum Daemon {
    /// The control socket answered.
    Answering(Box<Status>),
    /// A live mtad whose control socket does not answer (starting,
    /// between the two images of a restart, or stuck).
    Silent {
        /// From the PID file.
        pid: i32,
        /// What the control socket said.
        why: String,
    },
    /// This user may not tell (see the module docs).
    NotPermitted(NotPermitted),
    /// A PID file naming a process that is gone (or is no longer mtad).
    Dead(i32),
    /// No PID file, and nothing answers.
    NotRunning,
}

/// This user may not see or control the daemon: exit 4.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotPermitted {
    /// A live process this user may not control.
    #[error("mtad is running (pid {pid}), but this user is not permitted to control it ({why}); run mta-init as root or as mtad's user")]
    Running {
        /// From the PID file.
        pid: i32,
        /// What was refused.
        why: String,
    },
    /// The PID file or the control socket cannot be reached.
    #[error("cannot tell whether mtad is running: {0}; run mta-init as root or as mtad's user")]
    CannotTell(String),
    /// mtad refused the request: this user may not do that (only root
    /// and mtad's user may change anything; its group may read).
    #[error("{0}")]
    Refused(String),
    /// The control socket refuses this user.
    #[error("not permitted to use the control socket {path} ({why}); run mta-init as root or as mtad's user")]
    Socket {
        /// The socket.
        path: String,
        /// What was refused.
        why: String,
    },
}

impl NotPermitted {
    /// The daemon's pid, when known.
    pub fn pid(&self) -> Option<i32> {
        match self {
            NotPermitted::Running { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// Why the control socket did not answer `status`.
enum Socket {
    /// Permission denied.
    Refused(String),
    /// Nothing listens, or no answer.
    Silent(String),
}

/// Asks the control socket, then the PID file and the process.
pub fn probe(config: &Config) -> Daemon {
    let socket = match call(config, &Request::Status, Duration::from_secs(5)) {
        Ok(Response::Status(status)) => return Daemon::Answering(status),
        Ok(other) => Socket::Silent(format!("unexpected answer: {other:?}")),
        Err(Call::NotPermitted(_)) => Socket::Refused(format!(
            "control socket {}: permission denied",
            config.control_socket().display()
        )),
        Err(Call::Failed(e)) => Socket::Silent(e.to_string()),
    };
    let pid_file = config.pid_file();
    let pid = match read_pid_file(&pid_file) {
        Ok(Some(pid)) => pid,
        Ok(None) if pid_file.exists() => return Daemon::Dead(0),
        Ok(None) => {
            return match socket {
                // Something is there that we may not reach.
                Socket::Refused(why) => Daemon::NotPermitted(NotPermitted::CannotTell(why)),
                _ => Daemon::NotRunning,
            };
        }
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Daemon::NotPermitted(NotPermitted::CannotTell(format!(
                "permission denied reading the PID file {}",
                pid_file.display()
            )));
        }
        Err(e) => {
            return Daemon::NotPermitted(NotPermitted::CannotTell(format!(
                "cannot read the PID file {}: {e}",
                pid_file.display()
            )));
        }
    };
    match (liveness(pid), socket) {
        (Liveness::Gone, _) => Daemon::Dead(pid),
        (Liveness::NotOurs, Socket::Refused(why)) => {
            Daemon::NotPermitted(NotPermitted::Running { pid, why })
        }
        (Liveness::NotOurs, _) => Daemon::NotPermitted(NotPermitted::Running {
            pid,
            why: "kill: operation not permitted".into(),
        }),
        (Liveness::Mtad, Socket::Refused(why)) => {
            Daemon::NotPermitted(NotPermitted::Running { pid, why })
        }
        (Liveness::Mtad, Socket::Silent(why)) => Daemon::Silent { pid, why },
    }
}

/// The PID in the PID file: None when there is no file, or it holds no
/// PID.
fn read_pid_file(path: &Path) -> std::io::Result<Option<i32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse::<i32>().ok().filter(|&pid| pid > 0)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a PID is a live mtad, as this user can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A live (not zombie) process named mtad.
    Mtad,
    /// Alive, but this user may not signal it (EPERM), and it is not
    /// known to be anything but mtad.
    NotOurs,
    /// Gone, a zombie, or another program (the PID was reused).
    Gone,
}

/// Checks `pid`. The name check guards against a stale PID file whose
/// number was reused.
pub fn liveness(pid: i32) -> Liveness {
    let alive = match kill(Pid::from_raw(pid), None) {
        Ok(()) => Liveness::Mtad,
        Err(Errno::EPERM) => Liveness::NotOurs,
        Err(_) => return Liveness::Gone,
    };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: pid (comm) state ...; comm may hold spaces or parens.
        Ok(stat) => match stat.rfind(')') {
            Some(close) => {
                let comm = stat.find('(').map(|open| &stat[open + 1..close]);
                let state = stat[close + 1..].trim_start().chars().next();
                if comm == Some("mtad") && !matches!(state, Some('Z' | 'X')) {
                    alive
                } else {
                    Liveness::Gone
                }
            }
            None => Liveness::Gone,
        },
        // No /proc, or hidden from us: trust kill().
        Err(_) => alive,
    }
}

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Call {
    /// This user may not connect (or the daemon refused it).
    #[error(transparent)]
    NotPermitted(NotPermitted),
    /// Anything else: nothing listens, the exchange broke off.
    #[error(transparent)]
    Failed(ControlError),
}

/// One control request, telling "not permitted" apart from "not there".
pub fn call(config: &Config, request: &Request, timeout: Duration) -> Result<Response, Call> {
    let path = config.control_socket();
    match mta_control::call(&path, request, timeout) {
        Ok(Response::Forbidden { message }) => {
            Err(Call::NotPermitted(NotPermitted::Refused(message)))
        }
        Ok(response) => Ok(response),
        Err(ControlError::Connect { source, .. })
            if source.kind() == ErrorKind::PermissionDenied =>
        {
            Err(Call::NotPermitted(NotPermitted::Socket {
                path: path.display().to_string(),
                why: "permission denied".into(),
            }))
        }
        Err(e) => Err(Call::Failed(e)),
    }
}
