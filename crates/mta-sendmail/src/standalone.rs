//! `-bs` with mtad down: a stand-alone SMTP session on standard input
//! and output, as Postfix runs its own `smtpd` there, whose messages go
//! to the drop directory, for mtad to import when it starts. The
//! session is mtad's own state machine (`mta_smtp::Session`, a local
//! session: it may relay, offers no AUTH or STARTTLS), with the built-in
//! limits; the checks that need mtad's configuration (local recipients)
//! are made at the import, whose refusals are bounced to the sender.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use mta_config::sendmail::SendmailConfig;
use mta_config::SmtpConfig;
use mta_sendmail::{dropfile, Exit};
use mta_smtp::{Admission, LocalUser, Reply, Session, SessionConfig, Step, StoreError};

use crate::identity::{DropGroup, Me};

/// Runs the session until the client quits or standard input ends.
pub fn run(config: &SendmailConfig, group: &DropGroup, me: &Me) -> Exit {
    let user = LocalUser::new(nix::unistd::getuid().as_raw(), Some(&me.login));
    let mut session = Session::local(
        Arc::new(session_config(host_name())),
        Arc::new(Admission::default()),
        &user,
    );
    let mut stdin = std::io::stdin().lock();
    let mut stdout = std::io::stdout().lock();
    let mut out = Vec::new();
    session.banner().write_to(&mut out);
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut buf = [0u8; 16 * 1024];
    let mut drops = 0u32;
    loop {
        let reply = match session.poll(&mut input) {
            Step::NeedInput => {
                // The client waits for each reply before it sends more.
                if stdout
                    .write_all(&out)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Exit::Ok;
                }
                out.clear();
                match stdin.read(&mut buf) {
                    Ok(0) => return Exit::Ok,
                    Ok(n) => input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("mta-sendmail: error reading standard input: {e}");
                        return Exit::IoErr;
                    }
                }
                continue;
            }
            Step::Reply(r) => r,
            Step::Close(r) => {
                r.write_to(&mut out);
                let _ = stdout.write_all(&out).and_then(|()| stdout.flush());
                return Exit::Ok;
            }
            Step::Store(message) => {
                drops += 1;
                match drop_message(config, group, &message, drops) {
                    Ok(()) => Reply::new(250, "2.0.0", "Ok: left for mtad in the drop directory"),
                    Err(e) => {
                        eprintln!("mta-sendmail: message not left for later: {e}");
                        session.stored(Err(StoreError::Io))
                    }
                }
            }
            // Neither STARTTLS nor AUTH is offered to a local session.
            Step::StartTls(_) | Step::Authenticate(_) => {
                Reply::new(502, "5.5.1", "Error: command not implemented")
            }
        };
        reply.write_to(&mut out);
    }
}

/// Leaves the message in the drop directory: one file per NOTIFY value
/// among its recipients, each within the quota.
fn drop_message(
    config: &SendmailConfig,
    group: &DropGroup,
    message: &mta_smtp::Message,
    n: u32,
) -> Result<(), dropfile::WriteError> {
    let (time, token) = mta_sendmail::compose::stamp();
    let quota = dropfile::Quota::of(config);
    for submission in dropfile::submissions_of(
        &message.envelope,
        &message.content,
        time,
        &format!("{token}.{n}"),
    ) {
        group.with(|| dropfile::write(&config.drop_dir, &submission, &quota))?;
    }
    Ok(())
}

/// The session's limits: the built-in ones of `[smtp]` (mtad's file is
/// not this user's to read), no local domains (a local session may send
/// anywhere; mtad checks local recipients when it imports).
fn session_config(hostname: String) -> SessionConfig {
    let smtp = SmtpConfig::default();
    SessionConfig {
        hostname,
        max_message_size: smtp.max_message_size.0 as usize,
        max_recipients: smtp.max_recipients,
        recipient_overshoot_limit: smtp.recipient_overshoot_limit,
        max_command_line: smtp.max_command_line,
        max_line_length: smtp.max_line_length,
        max_errors: smtp.max_errors,
        tls_available: false,
        local_domains: Vec::new(),
        local_recipients: None,
        relay_networks: Vec::new(),
        auth: None,
        sender_policy: None,
    }
}

/// The kernel's host name, for the banner and EHLO reply.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
