//! mtad, the MTA daemon: the SMTP listener in front of the spool, the
//! queue runners, the admin HTTP server and the control socket `mta-init`
//! talks to. Runs in the foreground; announces each listening address on
//! standard output when ready. A restart re-executes this program in the
//! same process with the listening sockets inherited.

mod allocator;
mod auth;
mod client_limits;
mod connection;
mod context;
mod control;
mod deadlines;
mod generations;
mod http;
mod http_access;
mod listener;
mod local_session;
mod local_submit;
mod logfile;
mod logging;
mod maildrop;
mod notify;
mod pausing;
mod pidfile;
mod privileges;
mod queue_api;
mod queue_rows;
mod reload;
mod server;
mod service_table;
mod services;
mod settings;
mod shutdown;
mod signing;
mod sockets;
mod stats;
mod status;
mod time_slice;
mod tls;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mta_config::Config;

use crate::logfile::LogFile;
use crate::server::{Exit, Startup};
use crate::sockets::Inherited;

/// The MTA daemon. Runs in the foreground (for systemd, tests and
/// `mta-init start`) and prints `mtad: ready` once it accepts mail.
#[derive(Debug, Parser)]
#[command(name = "mtad", version)]
struct Cli {
    /// TOML configuration file; without it, built-in defaults are used.
    #[arg(short, long, env = "MTA_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration, print "Syntax OK" or every error, and exit.
    #[arg(long)]
    check_config: bool,
    /// Write standard output and standard error to this file, reopened on
    /// SIGUSR1 and `mta-init reopen-logs` (for log rotation).
    #[arg(long)]
    log_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    allocator::init();
    // What the ready log line counts the start from.
    let started = std::time::Instant::now();
    // Before anything else (and before any thread): the sockets a restart
    // or systemd handed us, and the program to run again on a restart.
    let inherited = Inherited::take_from_env();
    let exe = std::env::current_exe().ok();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let cli = Cli::parse();
    let log_file = match cli.log_file.as_deref().map(LogFile::open).transpose() {
        Ok(log) => log,
        Err(e) => {
            eprintln!("mtad: cannot open the log file: {e}");
            return ExitCode::from(73); // EX_CANTCREAT
        }
    };
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mtad: configuration error:\n{e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    if cli.check_config {
        for warning in config
            .warnings()
            .into_iter()
            .chain(config.open_files_warning())
        {
            eprintln!("mtad: warning: {warning}");
        }
        println!("Syntax OK");
        return ExitCode::SUCCESS;
    }
    // Before any file is created and any thread started.
    privileges::set_umask(&config);
    let log_level = logging::init(&config.log.level);
    raise_open_files_limit(&config);
    // An absolute path, so a restart reads the same file whatever the
    // working directory.
    let config_path = cli.config.map(|p| std::path::absolute(&p).unwrap_or(p));
    let startup = Startup {
        started,
        config_path,
        log_file,
        inherited,
        log_level,
    };
    match server::run(config, startup) {
        Ok(Exit::Stopped {
            index_not_saved: None,
        }) => ExitCode::SUCCESS,
        Ok(Exit::Stopped {
            index_not_saved: Some(e),
        }) => {
            eprintln!(
                "mtad: stopped, but the queue index was not saved ({e}); the spool files are kept and the next start rebuilds the index from them"
            );
            ExitCode::from(75) // EX_TEMPFAIL
        }
        Ok(Exit::Restart(sockets)) => {
            let Some(exe) = exe else {
                eprintln!("mtad: cannot restart: the path of this program is unknown");
                return ExitCode::FAILURE;
            };
            let env = match sockets::prepare_handover(sockets) {
                Ok(env) => env,
                Err(e) => {
                    eprintln!("mtad: cannot restart: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(program = %exe.display(), "restarting");
            // Only returns on failure.
            let error = std::process::Command::new(&exe)
                .args(&args)
                .envs(env)
                .exec();
            eprintln!("mtad: cannot restart {}: {error}", exe.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mtad: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-files limit to the hard one: a shell's usual 1024
/// is less than `max_connections = 1000` and the spool files need, and
/// past it `accept` fails with EMFILE. Logs what it got, and warns when
/// the configuration needs more than that.
fn raise_open_files_limit(config: &Config) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        tracing::warn!("cannot read the open-files limit");
        return;
    };
    let limit = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "open-files limit raised");
                hard
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
                soft
            }
        }
    } else {
        tracing::info!(limit = soft, "open-files limit already at its hard limit");
        soft
    };
    if let Some(warning) = config.open_files_warning_for(limit) {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
