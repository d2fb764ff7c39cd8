//! The daemon as a process: its PID file and whether that PID is alive.

use std::path::Path;

use nix::sys::signal::kill;
use nix::unistd::Pid;

/// What the PID file says about the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// No PID file.
    NotRunning,
    /// A PID file naming a process that is gone (or is no longer mtad).
    Dead(i32),
    /// A PID file naming a live mtad.
    Running(i32),
}

/// Reads the PID file and checks the process it names.
pub fn probe(pid_file: &Path) -> Daemon {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return Daemon::NotRunning;
    };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 && is_mtad(pid) => Daemon::Running(pid),
        Ok(pid) => Daemon::Dead(pid),
        Err(_) => Daemon::Dead(0),
    }
}

/// True while `pid` is a live (not zombie) process named mtad. Checking
/// the name guards against a stale PID file whose number was reused.
/// EPERM means the process lives but is another user's (mtad's own user,
/// seen by an operator in its group): alive, not gone.
pub fn is_mtad(pid: i32) -> bool {
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => {}
        Err(_) => return false,
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Format: pid (comm) state ...; comm may hold spaces or parens.
        Ok(stat) => match stat.rfind(')') {
            Some(close) => {
                let comm = stat.find('(').map(|open| &stat[open + 1..close]);
                let state = stat[close + 1..].trim_start().chars().next();
                comm == Some("mtad") && !matches!(state, Some('Z' | 'X'))
            }
            None => false,
        },
        // No /proc: trust kill().
        Err(_) => true,
    }
}
