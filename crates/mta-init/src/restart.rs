//! `mta-init restart`, `graceful` and `graceful-stop`.
//!
//! `restart` and `graceful` check the configuration the daemon will read
//! first and refuse on any error, leaving the running server untouched
//! (mtad checks again itself). A restart keeps the pid: mtad stops, then
//! re-executes itself with the listening sockets inherited, so this waits
//! for a new instance (the status's `instance` changes) to answer.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use mta_config::Config;
use mta_control::{Request, Response, Status};

use crate::exit::EXIT_CONFIG;
use crate::process::{liveness, probe, Daemon, Liveness};

/// Why a verb did not go ahead.
pub enum Refusal {
    /// The configuration does not load (exit 78).
    Config(String),
    /// Anything else (exit 1).
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Refusal::Other(e)
    }
}

impl Refusal {
    pub fn exit(self, verb: &str) -> ExitCode {
        match self {
            Refusal::Config(errors) => {
                eprintln!(
                    "mta-init: {verb} refused, the running server is untouched: configuration error:\n{errors}"
                );
                ExitCode::from(EXIT_CONFIG)
            }
            Refusal::Other(e) => crate::exit::fail(e),
        }
    }
}

/// Loads the configuration the running daemon reads, as it will on a
/// restart.
fn check_daemon_config(status: &Status) -> Result<Config, Refusal> {
    let path = status.config.as_ref().map(PathBuf::from);
    let config = Config::load(path.as_deref()).map_err(|e| Refusal::Config(e.to_string()))?;
    crate::dkim::check_keys(&config).map_err(Refusal::Config)?;
    crate::published::check_dane_anchor(&config).map_err(Refusal::Config)?;
    Ok(config)
}

/// The status of a running daemon that answers; None when mtad is not
/// running (or only a stale PID file is left); an error when it runs but
/// does not answer, or this user may not tell.
fn answering(config: &Config) -> Result<Option<Box<Status>>> {
    match probe(config) {
        Daemon::Answering(status) => Ok(Some(status)),
        Daemon::Silent { pid, why } => bail!("mtad (pid {pid}) does not answer: {why}"),
        Daemon::NotPermitted(e) => Err(e.into()),
        Daemon::Dead(_) | Daemon::NotRunning => Ok(None),
    }
}

/// `mta-init restart [--now]`. Returns false when mtad was not running
/// (the caller starts it).
pub fn restart(config: &Config, now: bool, wait: Duration) -> Result<bool, Refusal> {
    let Some(before) = answering(config)? else {
        return Ok(false);
    };
    let pid = before.pid as i32;
    check_daemon_config(&before)?;
    let began = Instant::now();
    match crate::process::call(config, &Request::Restart { now }, Duration::from_secs(5)) {
        Ok(Response::Ok) => println!(
            "restarting mtad (pid {pid}){}: the listening sockets stay open, new connections wait",
            if now { " now" } else { "" }
        ),
        Ok(Response::Error { message, .. }) => {
            return Err(Refusal::Other(anyhow!("{message}")));
        }
        Ok(other) => return Err(Refusal::Other(anyhow!("unexpected answer: {other:?}"))),
        Err(e) => return Err(Refusal::Other(e.into())),
    }
    let mut last_report = Instant::now();
    loop {
        if liveness(pid) == Liveness::Gone {
            return Err(Refusal::Other(anyhow!(
                "mtad (pid {pid}) exited during the restart; see its log"
            )));
        }
        match crate::status::query(config) {
            Ok(status) if status.instance != before.instance => {
                println!(
                    "mtad restarted in {:.1} s (pid {})",
                    began.elapsed().as_secs_f64(),
                    status.pid
                );
                return Ok(true);
            }
            Ok(status) => {
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    crate::stop::report_progress(&status);
                }
            }
            Err(_) => {} // between the two images
        }
        if began.elapsed() > wait {
            return Err(Refusal::Other(anyhow!(
                "mtad (pid {pid}) did not come back within {:.0} s; see its log",
                wait.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mta-init graceful`: a reload in place.
pub fn graceful(config: &Config) -> Result<(), Refusal> {
    let Some(before) = answering(config)? else {
        return Err(Refusal::Other(anyhow!("mtad is not running")));
    };
    let pid = before.pid;
    check_daemon_config(&before)?;
    match crate::process::call(config, &Request::Reload, Duration::from_secs(30)) {
        Ok(Response::Ok) => {
            println!(
                "graceful restart done (pid {pid}): new settings apply to new work, logs reopened"
            );
            Ok(())
        }
        Ok(Response::Done { message }) => {
            println!(
                "graceful restart done (pid {pid}): new settings apply to new work, logs reopened"
            );
            for line in message.lines() {
                println!("  note: {line}");
            }
            Ok(())
        }
        Ok(Response::Error { message, .. }) => Err(Refusal::Other(anyhow!("{message}"))),
        Ok(other) => Err(Refusal::Other(anyhow!("unexpected answer: {other:?}"))),
        Err(e) => Err(Refusal::Other(e.into())),
    }
}

/// `mta-init graceful-stop`: as SIGWINCH.
pub fn graceful_stop(config: &Config, wait: Duration) -> Result<()> {
    crate::stop::run_with(config, &Request::GracefulStop, wait)
}

/// `mta-init reopen-logs`: succeeds when mtad is not running (nothing
/// to reopen), as logrotate's postrotate wants.
pub fn reopen_logs(config: &Config) -> Result<()> {
    if answering(config)?.is_none() {
        println!("mtad is not running; nothing to reopen");
        return Ok(());
    }
    match crate::process::call(config, &Request::ReopenLogs, Duration::from_secs(5)) {
        Ok(Response::Ok) => {
            println!("logs reopened");
            Ok(())
        }
        Ok(Response::Error { message, .. }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer: {other:?}"),
        Err(e) => Err(e.into()),
    }
}
