//! mtad, the MTA daemon: the SMTP listener in front of the spool, and the
//! control socket `mta-init` talks to. Runs in the foreground; announces
//! each listening address on standard output when ready.

mod connection;
mod control;
mod http;
mod listener;
mod pidfile;
mod server;
mod stats;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use mta_config::Config;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mtad: configuration error:\n{e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    if cli.check_config {
        println!("Syntax OK");
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log.level);
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mtad: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
