//! mta-init, the init controller: starts, stops and reports on mtad, in
//! the tradition of GreenArrow's `hvmail_init` and Apache's `apachectl`.
//!
//! `println!` and `eprintln!` in this crate are `output.rs`'s: a reader
//! that goes away (`mta-init status | head -1`) ends the output quietly
//! instead of a panic.

#[macro_use]
mod output;
mod dkim;
mod exit;
mod localtime;
mod process;
mod published;
mod queue;
mod restart;
mod start;
mod status;
mod stop;
mod user;
mod wording;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mta_config::Config;
use mta_control::{
    parse_name, Queue, QueueRequest, Request, Response, Runner, Service, SvcAction, UnknownName,
};

use crate::exit::{fail, EXIT_CONFIG};

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
    /// Stop and start again, refusing no connection: mtad keeps its pid
    /// and listening sockets. Checks the configuration first and refuses
    /// (exit 78) on an error, leaving the server untouched. Starts mtad
    /// when it is not running.
    Restart {
        /// As SIGHUP: sessions get 421 at once, deliveries under way are
        /// cut short (deferred), rather than the usual deadlines.
        #[arg(long)]
        now: bool,
        /// How long to wait for the new instance, in seconds; by default
        /// the shutdown and drain timeouts plus 30.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Graceful restart (as SIGUSR1): re-read the configuration and reopen
    /// the logs, dropping no session or delivery. Checks the
    /// configuration first and refuses (exit 78) on an error.
    Graceful,
    /// Graceful stop (as SIGWINCH): no new sessions; open sessions and
    /// deliveries may finish, up to shutdown.graceful_timeout.
    GracefulStop {
        /// How long to wait for the process to exit, in seconds; by default
        /// shutdown.graceful_timeout plus 30.
        #[arg(long)]
        wait: Option<u64>,
    },
    /// Reopen the daemon log and the delivery log (after rotation); exits
    /// 0 when mtad is not running.
    ReopenLogs,
    /// Take one service down, bring it up, or restart it, as daemontools'
    /// svc: smtp, submission, submissions, http, spool, ram, bounce, disk. Taking the spool down
    /// pauses injection and the runners.
    Svc {
        /// down, up or restart.
        action: SvcVerb,
        /// The service.
        #[arg(value_enum, value_name = "SERVICE")]
        service: Service,
    },
    /// Pause injection (new connections get 421 4.3.2) or delivery
    /// (attempts under way finish, no new one starts; mail waits queued).
    Pause {
        /// What to pause.
        what: Pausable,
        /// Delivery only: just this runner.
        #[arg(long, value_enum, value_name = "RUNNER", conflicts_with = "domain")]
        runner: Option<Runner>,
        /// Delivery only: just this destination domain (its mail stays
        /// queued, its lifetime still counts; kept across restarts).
        #[arg(long)]
        domain: Option<String>,
    },
    /// Resume paused injection or delivery.
    Resume {
        /// What to resume.
        what: Pausable,
        /// Delivery only: just this runner.
        #[arg(long, value_enum, value_name = "RUNNER", conflicts_with = "domain")]
        runner: Option<Runner>,
        /// Delivery only: just this destination domain; its mail is due at
        /// once.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Look into the queue and steer it: list, show, summary, flush, hold,
    /// release, delete. Exit 3 when the message asked for is not queued.
    Queue {
        #[command(subcommand)]
        verb: queue::QueueVerb,
    },
    /// The users of SMTP AUTH in [auth] users_file: add, passwd, del,
    /// list. Passwords are asked on the terminal or read with
    /// --password-stdin, never taken from the command line. mtad reads
    /// the file at start and at each graceful restart.
    User {
        #[command(subcommand)]
        verb: user::UserVerb,
    },
    /// DKIM keys: `keygen` makes one and prints the DNS record to publish.
    Dkim {
        #[command(subcommand)]
        verb: dkim::DkimVerb,
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
    /// The SMTP listener's intake.
    Injection,
    /// The queue runners.
    Delivery,
}

/// What `svc` does.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SvcVerb {
    Down,
    Up,
    Restart,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match unknown_name(&e) {
            Some(unknown) => {
                eprintln!("mta-init: {unknown}");
                return output::finish(ExitCode::FAILURE);
            }
            None => e.exit(),
        },
    };
    let code = run(cli);
    output::finish(code)
}

/// A runner, service or queue name that is none of the known ones. It
/// exits 1 with the daemon's own words, not clap's usage error (2): the
/// daemon used to be the one to refuse it, and scripts may count on that.
fn unknown_name(e: &clap::Error) -> Option<UnknownName> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::InvalidValue {
        return None;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(given))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    if arg.ends_with("<SERVICE>") {
        Service::parse(given).err()
    } else if arg.ends_with("<RUNNER>") {
        parse_name::<Runner>(given).err()
    } else if arg.ends_with("<QUEUE>") {
        parse_name::<Queue>(given).err()
    } else {
        None
    }
}

fn run(cli: Cli) -> ExitCode {
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            // Nothing was sent to the daemon: a restart or graceful
            // restart is refused with the server untouched.
            let verb = match cli.command {
                Verb::Restart { .. } => Some("restart"),
                Verb::Graceful => Some("graceful restart"),
                _ => None,
            };
            return match verb {
                Some(verb) => restart::Refusal::Config(e.to_string()).exit(verb),
                None => {
                    eprintln!("mta-init: configuration error:\n{e}");
                    ExitCode::from(EXIT_CONFIG)
                }
            };
        }
    };
    match cli.command {
        Verb::Configtest => {
            if let Err(e) = published::check_dane_anchor(&config) {
                eprintln!("mta-init: configuration error:\n{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let dkim_warnings = match dkim::check_keys(&config) {
                Ok(warnings) => warnings,
                Err(e) => {
                    eprintln!("mta-init: configuration error:\n{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            for warning in config
                .warnings()
                .into_iter()
                .chain(config.open_files_warning())
                .chain(dkim_warnings)
                .chain(published::lowered_policies(&config))
            {
                eprintln!("mta-init: warning: {warning}");
            }
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
        Verb::Restart { now, wait } => {
            let wait = wait.map(Duration::from_secs).unwrap_or(
                config.shutdown.timeout + config.shutdown.drain_timeout + Duration::from_secs(30),
            );
            match restart::restart(&config, now, wait) {
                Ok(true) => status::run(&config, false),
                Ok(false) => {
                    println!("mtad is not running; starting it");
                    let mtad = cli.mtad.unwrap_or_else(default_mtad);
                    match start::run(
                        &config,
                        cli.config.as_deref(),
                        &mtad,
                        Duration::from_secs(30),
                    ) {
                        Ok(_) => status::run(&config, false),
                        Err(e) => fail(e),
                    }
                }
                Err(refusal) => refusal.exit("restart"),
            }
        }
        Verb::Graceful => match restart::graceful(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(refusal) => refusal.exit("graceful restart"),
        },
        Verb::GracefulStop { wait } => {
            let wait = wait
                .map(Duration::from_secs)
                .unwrap_or(config.shutdown.graceful_timeout + Duration::from_secs(30));
            match restart::graceful_stop(&config, wait) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Verb::ReopenLogs => match restart::reopen_logs(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Verb::Svc { action, service } => {
            let action = match action {
                SvcVerb::Down => SvcAction::Down,
                SvcVerb::Up => SvcAction::Up,
                SvcVerb::Restart => SvcAction::Restart,
            };
            control(&config, Request::Svc { action, service }, "done")
        }
        Verb::Queue { verb } => queue::run(&config, verb),
        Verb::User { verb } => user::run(&config, verb),
        Verb::Dkim { verb } => dkim::run(&config, cli.config.as_deref(), verb),
        Verb::Pause {
            what: Pausable::Delivery,
            domain: Some(domain),
            ..
        } => control(
            &config,
            Request::Queue(QueueRequest::PauseDomain { domain }),
            "delivery paused",
        ),
        Verb::Resume {
            what: Pausable::Delivery,
            domain: Some(domain),
            ..
        } => control(
            &config,
            Request::Queue(QueueRequest::ResumeDomain { domain }),
            "delivery resumed",
        ),
        Verb::Pause {
            what: Pausable::Delivery,
            runner,
            ..
        } => control(&config, Request::Pause { runner }, "delivery paused"),
        Verb::Resume {
            what: Pausable::Delivery,
            runner,
            ..
        } => control(&config, Request::Resume { runner }, "delivery resumed"),
        Verb::Pause {
            what: Pausable::Injection,
            runner,
            domain,
        }
        | Verb::Resume {
            what: Pausable::Injection,
            runner,
            domain,
        } if runner.is_some() || domain.is_some() => fail(anyhow::anyhow!(
            "--runner and --domain go with delivery, not injection"
        )),
        Verb::Pause {
            what: Pausable::Injection,
            ..
        } => control(
            &config,
            Request::PauseInjection,
            "injection paused: new connections get 421 4.3.2",
        ),
        Verb::Resume {
            what: Pausable::Injection,
            ..
        } => control(&config, Request::ResumeInjection, "injection resumed"),
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
    match process::call(config, &request, Duration::from_secs(5)) {
        Ok(Response::Ok) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Ok(Response::Done { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message, .. }) => fail(anyhow::anyhow!(message)),
        Ok(other) => fail(anyhow::anyhow!("unexpected answer: {other:?}")),
        Err(process::Call::Failed(e)) => fail(anyhow::anyhow!("{e} (is mtad running?)")),
        Err(e) => fail(e.into()),
    }
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
    use clap::Parser;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    fn refusal(args: &[&str]) -> Option<String> {
        let mut argv = vec!["mta-init"];
        argv.extend(args);
        let e = Cli::try_parse_from(argv).expect_err("refused");
        unknown_name(&e).map(|u| u.to_string())
    }

    #[test]
    fn names_are_typed_on_the_command_line() {
        let cli = Cli::try_parse_from(["mta-init", "svc", "down", "disk-runner"]).unwrap();
        assert!(matches!(
            cli.command,
            Verb::Svc {
                service: Service::Disk,
                ..
            }
        ));
        let cli =
            Cli::try_parse_from(["mta-init", "pause", "delivery", "--runner", "bounce"]).unwrap();
        assert!(matches!(
            cli.command,
            Verb::Pause {
                runner: Some(Runner::Bounce),
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_name_gets_the_daemons_words() {
        assert_eq!(
            refusal(&["svc", "down", "nonesuch"]).as_deref(),
            Some(
                r#"no service "nonesuch": the services are smtp, submission, submissions, http, spool, ram, bounce and disk"#
            )
        );
        assert_eq!(
            refusal(&["pause", "delivery", "--runner", "nope"]).as_deref(),
            Some(r#"no runner "nope": the runners are ram, bounce and disk"#)
        );
        assert_eq!(
            refusal(&["queue", "list", "--queue", "nowhere"]).as_deref(),
            Some(r#"no queue "nowhere": the queues are ram, bounce, disk and held"#)
        );
        assert_eq!(
            refusal(&["queue", "summary", "--queue=nowhere"]).as_deref(),
            Some(r#"no queue "nowhere": the queues are ram, bounce, disk and held"#)
        );
        // Other bad values stay clap's usage errors.
        assert_eq!(refusal(&["svc", "sideways", "smtp"]), None);
        assert_eq!(refusal(&["queue", "list", "--older-than", "soon"]), None);
    }
}
