//! The status report, as `mta-init status` and `GET /status` show it,
//! and a stop's progress: read from the parts, never changing them.

use mta_config::Role;
use mta_control::{
    DaemonState, RescanRow, RunnerRow, ServiceState, ServiceStatus, SpoolOpen, Status, StopProgress,
};
use mta_spool::QueueName;

use crate::context::Context;
use crate::service_table::{State, RUNNERS};
use crate::shutdown::Shutdown;

/// How far a stop has got; None before one begins.
pub fn stop_progress(ctx: &Context) -> Option<StopProgress> {
    let stats = &ctx.stats;
    stats.stop_clock().map(|(elapsed, deadline)| StopProgress {
        elapsed_ms: elapsed.as_millis() as u64,
        deadline_ms: deadline.as_millis() as u64,
        sessions_open: stats.sessions_open(),
        sessions_in_transaction: stats.sessions_in_transaction(),
        deliveries_in_flight: ctx.generations.in_flight(),
        messages_spilled: ctx.generations.spilled(),
        queued: ctx.spool.len() as u64 + ctx.queue().in_memory(),
        index_not_saved: None,
    })
}

/// The status report, as `mta-init status` shows it.
pub fn status(ctx: &Context, shutdown: &Shutdown) -> Status {
    let stopping = shutdown.listen_end.is_cancelled();
    let stats = &ctx.stats;
    let services_state = &ctx.services;
    let http_listen: Vec<String> = ctx.http_listen.iter().map(ToString::to_string).collect();
    let now = mta_envelope::unix_now();
    let per_queue = ctx.spool.queue_stats();
    // Volatile messages in memory wait for (or are in) the ram runner.
    let in_memory = ctx.queue().in_memory();
    let saved = ctx.spool.schedule_saved();
    let now_ms = now.saturating_mul(1000);
    let runners: Vec<RunnerRow> = ctx
        .generations
        .status()
        .into_iter()
        .map(|r| {
            let figures = per_queue.iter().find(|q| q.queue.as_str() == r.name);
            RunnerRow {
                name: r.name.to_owned(),
                started: r.started,
                paused: r.paused,
                in_flight: r.in_flight,
                limit: r.limit as u64,
                attempts: r.attempts,
                delivered: r.delivered,
                deferred: r.deferred,
                failed: r.failed,
                messages: figures.map_or(0, |q| q.messages)
                    + if r.name == "ram" { in_memory } else { 0 },
                oldest_age_secs: figures
                    .and_then(|q| q.oldest_arrival)
                    .map(|t| now.saturating_sub(t)),
                schedule_saved_ms_ago: saved.last_flush_unix_ms.map(|t| now_ms.saturating_sub(t)),
                schedule_unsaved_changes: saved.changes_since_flush,
            }
        })
        .collect();
    let state = |s: State| match s {
        State::Up => ServiceState::Up,
        State::Down => ServiceState::Down,
        State::Paused => ServiceState::Paused,
        State::Degraded => ServiceState::Degraded,
    };
    let queued = count(ctx.spool.len() as u64, "message", "messages");
    let spool_trouble = ctx.spool_trouble();
    // One row per SMTP role: port 25's always, the submission roles when
    // they have addresses to listen on.
    let mut services: Vec<ServiceStatus> = Role::ALL
        .into_iter()
        .filter(|&role| role == Role::Mx || !ctx.listen(role).is_empty())
        .map(|role| {
            let smtp_state = if stopping {
                ServiceState::Draining
            } else {
                state(services_state.smtp_state(role))
            };
            let listen = addresses(ctx.listen(role));
            ServiceStatus {
                name: role.name().into(),
                state: smtp_state,
                detail: format!(
                    "{}; {} open",
                    match smtp_state {
                        ServiceState::Up => listen.join(", "),
                        ServiceState::Paused => {
                            format!("{} (new mail gets 421)", listen.join(", "))
                        }
                        _ => "not listening".to_owned(),
                    },
                    count(stats.sessions_open_on(role), "session", "sessions")
                ),
            }
        })
        .collect();
    services.extend([
        ServiceStatus {
            name: "spool".into(),
            state: state(services_state.spool_state(spool_trouble.is_some())),
            detail: match (spool_trouble, in_memory) {
                (Some(trouble), 0) => format!("{trouble}; {queued} queued"),
                (Some(trouble), n) => {
                    format!("{trouble}; {queued} queued, {n} more in memory only")
                }
                (None, 0) => format!("{queued} queued in {}", ctx.spool.dir().display()),
                (None, n) => format!(
                    "{queued} queued in {}, {n} more in memory only",
                    ctx.spool.dir().display()
                ),
            },
        },
        ServiceStatus {
            name: "http".into(),
            state: if stopping {
                ServiceState::Draining
            } else {
                state(services_state.http_state())
            },
            detail: if http_listen.is_empty() {
                "no address configured".to_owned()
            } else {
                http_listen.join(", ")
            },
        },
        ServiceStatus {
            name: "control".into(),
            state: ServiceState::Up,
            detail: ctx.control_path.display().to_string(),
        },
    ]);
    for r in &runners {
        // The runners' rows come from the same three queues.
        let q = RUNNERS.into_iter().find(|q| q.as_str() == r.name);
        services.push(ServiceStatus {
            name: format!("{}-runner", r.name),
            state: if !r.started {
                ServiceState::Draining
            } else {
                q.map_or(ServiceState::Down, |q| {
                    state(services_state.runner_state(q))
                })
            },
            detail: format!(
                "{} of {} in flight",
                r.in_flight,
                count(r.limit, "attempt", "attempts")
            ),
        });
    }
    let rescan = ctx.spool.rescan_progress().map(|p| RescanRow {
        running: p.running,
        files_total: p.files_total,
        files_done: p.files_done,
        messages_added: p.messages_added,
        elapsed_ms: p.elapsed.as_millis() as u64,
    });
    Status {
        pid: std::process::id(),
        instance: ctx.instance.clone(),
        config: ctx.config_path.as_ref().map(|p| p.display().to_string()),
        reloads: ctx.reloads.load(std::sync::atomic::Ordering::Relaxed),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_secs: stats.uptime().as_secs(),
        state: if stopping {
            DaemonState::Stopping
        } else {
            DaemonState::Running
        },
        listen: addresses(ctx.listen(Role::Mx)),
        submission_listen: addresses(ctx.listen(Role::Submission)),
        submissions_listen: addresses(ctx.listen(Role::Submissions)),
        sessions_open: stats.sessions_open(),
        accepted_total: stats.accepted_total(),
        queued: ctx.spool.len() as u64 + in_memory,
        in_memory,
        corrupt_files: ctx.spool.corrupt_set_aside(),
        spool_open: SpoolOpen {
            clean: ctx.spool_report.clean,
            last_stop: Some(last_stop(ctx.spool_report.last_stop)),
            index: Some(index_origin(ctx.spool_report.index)),
            rescanned: ctx.spool_report.rescanned as u64,
            rescan,
        },
        services,
        runners,
        stop: stop_progress(ctx),
        paused_domains: ctx.queue().operator().paused_domains(),
        backoffs: ctx
            .queue()
            .throttles()
            .backoffs
            .into_iter()
            .map(|b| mta_control::BackoffRow {
                key: b.key,
                until: b.until,
                cause: b.cause,
            })
            .collect(),
        held: per_queue
            .iter()
            .find(|q| q.queue == QueueName::Held)
            .map_or(0, |q| q.messages),
        smtp_refused: stats.smtp_refused(),
        delivery_log_dropped: ctx.generations.delivery_log_dropped(),
        dsns_dropped: ctx.generations.dsns_dropped(),
    }
}

/// `n` and its noun, singular for exactly one ("1 session open").
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The spool's [`mta_spool::LastStop`], as the control protocol says it.
fn last_stop(l: mta_spool::LastStop) -> mta_control::LastStop {
    use mta_spool::LastStop as L;
    match l {
        L::New => mta_control::LastStop::New,
        L::Clean => mta_control::LastStop::Clean,
        L::NotClean => mta_control::LastStop::NotClean,
    }
}

/// The spool's [`mta_spool::IndexOrigin`], as the control protocol says
/// it.
fn index_origin(i: mta_spool::IndexOrigin) -> mta_control::IndexOrigin {
    use mta_control::IndexOrigin as C;
    use mta_spool::IndexOrigin as I;
    match i {
        I::Trusted => C::Trusted,
        I::Checked => C::Checked,
        I::Created => C::Created,
        I::Missing => C::Missing,
        I::Replaced => C::Replaced,
        I::Damaged => C::Damaged,
        I::Unavailable => C::Unavailable,
    }
}

fn addresses(addrs: &[std::net::SocketAddr]) -> Vec<String> {
    addrs.iter().map(ToString::to_string).collect()
}
