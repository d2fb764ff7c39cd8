//! mta-sendmail: the `sendmail` command for local programs, to be linked
//! as `/usr/sbin/sendmail` and `/usr/lib/sendmail` (docs/sendmail.md).
//!
//! It reads the message, hands it to mtad over the local socket and
//! exits 0 once mtad said 250 (the message is on disk); when mtad cannot
//! take it, it leaves it in the drop directory, durable, and exits 0
//! too. Anything else exits with a `sysexits.h` status and says why on
//! standard error.

mod identity;
mod proxy;
mod standalone;

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mta_config::sendmail::SendmailConfig;
use mta_sendmail::client::{self, Report};
use mta_sendmail::options::{self, Mode, Options};
use mta_sendmail::{dropfile, input, Exit, Submission};

use crate::identity::{DropGroup, Me};

/// How long mtad may take to answer one command (the last one, the end
/// of the text, waits for the disk): past it, the message goes to the
/// drop directory.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    identity::ensure_std_fds();
    let group = DropGroup::set_aside();
    run(&group).into()
}

fn run(group: &DropGroup) -> Exit {
    let mut argv = std::env::args_os();
    let program = argv
        .next()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sendmail".to_owned());
    let mut args = Vec::new();
    for arg in argv {
        match arg.into_string() {
            Ok(a) => args.push(a),
            Err(a) => {
                eprintln!("mta-sendmail: argument {a:?} is not UTF-8");
                return Exit::Usage;
            }
        }
    }
    let options = match options::parse(&program, &args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mta-sendmail: {e}");
            return Exit::Usage;
        }
    };
    for warning in &options.warnings {
        eprintln!("mta-sendmail: warning: {warning}");
    }
    match &options.mode {
        Mode::Nothing(note) => {
            if let Some(note) = note {
                eprintln!("mta-sendmail: {note}");
            }
            Exit::Ok
        }
        Mode::Unsupported(why) => {
            eprintln!("mta-sendmail: {why}");
            Exit::Usage
        }
        Mode::Smtp => proxy::run(&config(&options), group),
        Mode::Deliver => deliver(&options, group),
    }
}

/// The `[sendmail]` section of `-C` or `MTA_CONFIG`, or the built-in
/// defaults: a file this user may not read is the normal case (it holds
/// mtad's secrets) and is no reason to complain.
fn config(options: &Options) -> SendmailConfig {
    let path = options.config.clone().or_else(|| {
        std::env::var_os("MTA_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let Some(path) = path else {
        return SendmailConfig::default();
    };
    match SendmailConfig::read(&path) {
        Ok(c) => c,
        Err(e) if e.is_permission_denied() => SendmailConfig::default(),
        Err(e) => {
            eprintln!("mta-sendmail: warning: {e}; using the built-in [sendmail] defaults");
            SendmailConfig::default()
        }
    }
}

/// `-bm`: the message on standard input, to mtad or the drop directory.
fn deliver(options: &Options, group: &DropGroup) -> Exit {
    if !options.extract && options.recipients.is_empty() {
        // Postfix's words, before anything is read.
        eprintln!(
            "mta-sendmail: Recipient addresses must be specified on the command line or via the -t option"
        );
        return Exit::Usage;
    }
    let me = Me::current();
    let content = match input::read_message(std::io::stdin().lock(), options.dot_ends) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mta-sendmail: error reading the message from standard input: {e}");
            return Exit::IoErr;
        }
    };
    let (time, token) = mta_sendmail::compose::stamp();
    // Postfix's order: -F, then $NAME, then the user database.
    let full_name = std::env::var("NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .or(me.full_name);
    let submission = match Submission::gather(options, content, full_name, time, token) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mta-sendmail: {e}");
            return Exit::Usage;
        }
    };
    let config = config(options);
    let report = match UnixStream::connect(&config.socket) {
        Ok(stream) => {
            let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
            let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
            client::submit(stream, &submission, &me.login)
        }
        Err(e) => Report {
            pending: submission.recipients.clone(),
            pending_why: Some(format!(
                "cannot connect to {}: {e}",
                config.socket.display()
            )),
            ..Report::default()
        },
    };
    settle(report, submission, &config, group)
}

/// Says what became of each recipient, drops what is pending, and gives
/// the exit status: 0 when every recipient is queued or dropped.
fn settle(
    report: Report,
    submission: Submission,
    config: &SendmailConfig,
    group: &DropGroup,
) -> Exit {
    let mut exit = Exit::Ok;
    for (rcpt, reply) in &report.refused {
        eprintln!("mta-sendmail: <{rcpt}>: {}", reply.text());
        let unknown = reply.lines.last().is_some_and(|l| l.starts_with("5.1.1"));
        if exit == Exit::Ok {
            exit = if unknown { Exit::NoUser } else { Exit::DataErr };
        }
    }
    if let Some((code, why)) = &report.failed {
        eprintln!("mta-sendmail: message not sent: {why}");
        exit = *code;
    }
    if !report.pending.is_empty() {
        let why = report
            .pending_why
            .as_deref()
            .unwrap_or("mtad did not take it");
        let dropped = submission.for_recipients(report.pending.clone(), report.prepared.as_ref());
        let quota = dropfile::Quota::of(config);
        if let Err(e) = group.with(|| dropfile::write(&config.drop_dir, &dropped, &quota)) {
            eprintln!(
                "mta-sendmail: message NOT sent to {}: mtad could not take it ({why}), and it \
                 could not be left for later: {e}",
                report.pending.join(", ")
            );
            return if e.is_cant_create() {
                Exit::CantCreat
            } else {
                Exit::TempFail
            };
        }
    }
    if exit != Exit::Ok && !report.queued.is_empty() {
        let to: Vec<&str> = report
            .queued
            .iter()
            .flat_map(|(_, r)| r.iter().map(String::as_str))
            .collect();
        eprintln!("mta-sendmail: the message was queued for {}", to.join(", "));
    }
    exit
}
