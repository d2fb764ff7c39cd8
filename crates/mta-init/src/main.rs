//! mta-init, the init controller: starts, stops and reports on mtad, in
//! the tradition of GreenArrow's `hvmail_init` and Apache's `apachectl`.

mod process;
mod start;
mod status;
mod stop;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mta_config::Config;
use mta_control::{Request, Response};

/// Exit code for a bad configuration (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// Start, stop and inspect the MTA daemon.
#[derive(Debug, Parser)]
#[command(name = "mta-init", version)]
struct Cli {
    /// TOML configuration file, the same one mtad reads; without it,
    /// built-in defaults are used.
    #[arg(short, long, global = true, env = "MTA_CONFIG")]
    config: Option<PathBuf>,
    /// The mtad program; by default the one next to mta-init, else on PATH.
    #[arg(long, global = true)]
    mtad: Option<PathBuf>,
    #[command(subcommand)]
    command: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Start mtad in the background, wait until it accepts mail, print status.
    Start {
        /// How long to wait for mtad to become ready, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Stop mtad cleanly: stop accepting, let sessions finish, close the spool.
    Stop {
        /// How long to wait for the process to exit, in seconds; by default
        /// the configured shutdown timeout plus 30.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Pause delivery: attempts under way finish, no new one starts; mail
    /// keeps arriving and waits in the queue.
    Pause {
        /// What to pause.
        what: Pausable,
        /// Only this runner: ram, bounce or disk.
        #[arg(long)]
        runner: Option<String>,
    },
    /// Resume paused delivery.
    Resume {
        /// What to resume.
        what: Pausable,
        /// Only this runner: ram, bounce or disk.
        #[arg(long)]
        runner: Option<String>,
    },
    /// Check the configuration's syntax and meaning: prints "Syntax OK", or
    /// every error with its file, line and column, and exits 78.
    Configtest,
    /// Show the services and the queue; exit 0 running, 1 dead but PID file
    /// exists, 3 not running, 4 unknown.
    Status {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// What `pause` and `resume` act on.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Pausable {
    /// The queue runners.
    Delivery,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mta-init: configuration error:\n{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Verb::Configtest => {
            println!("Syntax OK");
            ExitCode::SUCCESS
        }
        Verb::Status { json } => status::run(&config, json),
        Verb::Start { wait } => {
            let mtad = cli.mtad.unwrap_or_else(default_mtad);
            match start::run(
                &config,
                cli.config.as_deref(),
                &mtad,
                Duration::from_secs(wait),
            ) {
                Ok(_) => status::run(&config, false),
                Err(e) => fail(e),
            }
        }
        Verb::Pause {
            what: Pausable::Delivery,
            runner,
        } => control(&config, Request::Pause { runner }, "delivery paused"),
        Verb::Resume {
            what: Pausable::Delivery,
            runner,
        } => control(&config, Request::Resume { runner }, "delivery resumed"),
        Verb::Stop { wait } => {
            let wait = wait
                .map(Duration::from_secs)
                .unwrap_or(config.shutdown.timeout + Duration::from_secs(30));
            match stop::run(&config, wait) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

/// Sends one control request that answers Ok.
fn control(config: &Config, request: Request, done: &str) -> ExitCode {
    match mta_control::call(&config.control_socket(), &request, Duration::from_secs(5)) {
        Ok(Response::Ok) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message }) => fail(anyhow::anyhow!(message)),
        Ok(other) => fail(anyhow::anyhow!("unexpected answer: {other:?}")),
        Err(e) => fail(anyhow::anyhow!("{e} (is mtad running?)")),
    }
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("mta-init: {e:#}");
    ExitCode::FAILURE
}

/// mtad beside this program (as installed, or in target/), else from PATH.
fn default_mtad() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mtad")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("mtad"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
