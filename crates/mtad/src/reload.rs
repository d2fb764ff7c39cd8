//! Graceful restart (SIGUSR1, `mta-init graceful`): re-read the
//! configuration and reopen the logs without dropping a session or a
//! delivery in progress.
//!
//! New sessions get the new settings (limits, TLS certificate, local
//! domains, the local recipient list with its file read again, relay
//! networks, timeouts); sessions already open finish with
//! the ones they started with. New queue runners start with the new
//! delivery settings (routes, retry schedule, concurrency, TLS policy)
//! beside the old ones, which finish the attempts they have under way
//! (until `shutdown.drain_timeout`); the two share the set of messages in
//! flight, so none is attempted twice. What only a restart can change
//! (the queue directory, listening addresses, PID file, control socket)
//! is reported and left as it is; so is the user and group mtad runs as,
//! which only a start as root can change. The TLS key is read again as
//! that user: it must be readable by mtad's user or group.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use mta_config::Config;
use tracing::{info, warn};

use crate::context::Context;
use crate::settings::Settings;

/// Loads the configuration the daemon was started with, as a restart
/// would: an error means the restart must be refused.
pub fn check_config(ctx: &Context) -> Result<Config> {
    Config::load(ctx.config_path.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Re-reads the configuration and applies it; returns notes on what did
/// not change until a restart. On error nothing has changed.
pub async fn reload(ctx: &Arc<Context>) -> Result<Vec<String>> {
    let _one_at_a_time = ctx.services.changing.lock().await;
    let config = check_config(ctx)?;
    let _ = crate::notify::reloading();
    let old = ctx.settings();
    let notes = restart_only(&old.config, &config);
    for note in &notes {
        warn!("{note}");
    }
    let config = Arc::new(config);
    let auth = ctx.auth.plan(&config).context("the users of SMTP AUTH")?;
    let settings = Settings::new(config.clone(), auth).context("new settings")?;
    let next = ctx
        .queue()
        .successor(crate::settings::queue(&config, settings.dkim.clone()))
        .context("starting the new queue runners")?;

    // From here on nothing can fail: switch over.
    ctx.auth.install(&settings.auth);
    ctx.replace_settings(settings);
    ctx.generations
        .clone()
        .replace(next, config.shutdown.drain_timeout);
    ctx.log_level.set(&config.log.level);
    if let Some(log) = &ctx.log_file {
        if let Err(e) = log.reopen() {
            warn!(path = %log.path().display(), error = %e, "cannot reopen the daemon log");
        }
    }
    ctx.count_reload();
    info!(
        config = ?ctx.config_path,
        "graceful restart done: new settings for new work, logs reopened"
    );
    let _ = crate::notify::ready("accepting mail");
    Ok(notes)
}

/// Reopens the daemon log and the delivery log (after rotation).
pub fn reopen_logs(ctx: &Context) -> Result<()> {
    if let Some(log) = &ctx.log_file {
        log.reopen()
            .with_context(|| format!("reopening {}", log.path().display()))?;
    }
    ctx.queue()
        .reopen_log()
        .context("reopening the delivery log")?;
    info!("logs reopened");
    Ok(())
}

/// Settings that a graceful restart cannot change.
fn restart_only(old: &Config, new: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let mut check = |changed: bool, what: &str| {
        if changed {
            notes.push(format!(
                "{what} changed: it takes effect at the next restart"
            ));
        }
    };
    check(old.queue_dir != new.queue_dir, "queue_dir");
    check(old.smtp.listen != new.smtp.listen, "smtp.listen");
    check(
        old.submission.listen != new.submission.listen,
        "submission.listen",
    );
    check(
        old.submissions.listen != new.submissions.listen,
        "submissions.listen",
    );
    check(old.http.listen != new.http.listen, "http.listen");
    check(old.pid_file() != new.pid_file(), "pid_file");
    check(
        old.control_socket() != new.control_socket(),
        "control_socket",
    );
    check(
        old.spool.max_batch != new.spool.max_batch,
        "spool.max_batch",
    );
    check(old.spool.writers != new.spool.writers, "spool.writers");
    check(old.time_slice != new.time_slice, "time_slice");
    if old.user != new.user || old.group != new.group {
        // A restart re-executes the process as the user it runs as now.
        notes.push(
            "user or group changed: it takes effect at the next stop and start (mta-init stop, \
             then start, as root)"
                .to_owned(),
        );
    }
    notes
}
