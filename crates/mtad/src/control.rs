//! The control socket: `mta-init` asks for status, stops, restarts,
//! reloads, pauses and per-service changes here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use mta_control::{
    DaemonState, Request, RescanRow, Response, RunnerRow, ServiceState, ServiceStatus, SpoolOpen,
    Status, StopProgress,
};
use mta_spool::QueueName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::server::{Context, Order, Shutdown, StopKind};
use crate::services::State;

/// The bound socket; its file is removed when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds the socket, replacing a stale file. Only one daemon can get
    /// this far for a queue directory (the spool lock is held), so a file
    /// left there is a leftover of a crash.
    pub fn bind(path: &Path) -> Result<ControlSocket> {
        match std::fs::remove_file(path) {
            Ok(()) => debug!(path = %path.display(), "removed a stale control socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding control socket {}", path.display()))?;
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
        })
    }

    /// Answers requests until the task is dropped.
    pub async fn serve(&self, ctx: Arc<Context>, shutdown: Shutdown, _sessions: TaskTracker) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let ctx = ctx.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &ctx, &shutdown).await {
                    debug!(error = %e, "control request failed");
                }
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(
    stream: UnixStream,
    ctx: &Arc<Context>,
    shutdown: &Shutdown,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(request, ctx, shutdown).await,
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialize");
    out.push(b'\n');
    write.write_all(&out).await
}

pub(crate) async fn handle(request: Request, ctx: &Arc<Context>, shutdown: &Shutdown) -> Response {
    let stopping = shutdown.listen_end.is_cancelled();
    let order = |order: Order, what: &str| {
        info!("{what} requested on the control socket");
        match ctx.orders.send(order) {
            Ok(()) => Response::Ok,
            Err(_) => error("already stopping"),
        }
    };
    match request {
        Request::Status => Response::Status(Box::new(status(ctx, shutdown))),
        Request::Stop => order(Order::Stop(StopKind::Normal), "stop"),
        Request::GracefulStop => order(Order::Stop(StopKind::Graceful), "graceful stop"),
        Request::Restart { .. } if stopping => error("already stopping"),
        Request::Restart { now } => match crate::reload::check_config(ctx) {
            Ok(_) => {
                let kind = if now { StopKind::Now } else { StopKind::Normal };
                order(Order::Restart(kind), "restart")
            }
            Err(e) => error(format!(
                "restart refused, the server is untouched: the configuration does not load:\n{e:#}"
            )),
        },
        Request::Reload if stopping => error("stopping: no reload"),
        Request::Reload => match crate::reload::reload(ctx).await {
            Ok(notes) if notes.is_empty() => Response::Ok,
            Ok(notes) => Response::Done {
                message: notes.join("\n"),
            },
            Err(e) => error(format!(
                "graceful restart refused, the server is untouched:\n{e:#}"
            )),
        },
        Request::ReopenLogs => match crate::reload::reopen_logs(ctx) {
            Ok(()) => Response::Ok,
            Err(e) => error(format!("{e:#}")),
        },
        Request::Pause { runner } => pause(ctx, runner.as_deref(), true).await,
        Request::Resume { runner } => pause(ctx, runner.as_deref(), false).await,
        Request::PauseInjection => {
            ctx.services.set_injection_paused(true);
            Response::Ok
        }
        Request::ResumeInjection => {
            ctx.services.set_injection_paused(false);
            Response::Ok
        }
        Request::Svc { .. } if stopping => error("stopping: services are going down anyway"),
        Request::Svc { action, service } => match ctx.services.svc(ctx, action, &service).await {
            Ok(message) => Response::Done { message },
            Err(e) => error(format!("{e:#}")),
        },
        request @ (Request::QueueList { .. }
        | Request::QueueShow { .. }
        | Request::QueueSummary { .. }
        | Request::QueueAct { .. }
        | Request::PauseDomain { .. }
        | Request::ResumeDomain { .. }) => crate::queue_api::handle(ctx, request)
            .await
            .unwrap_or_else(|| error("not a queue request")),
    }
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

/// Pauses or resumes one runner, or all three.
async fn pause(ctx: &Context, runner: Option<&str>, paused: bool) -> Response {
    let queues = match runner {
        None => vec![QueueName::Ram, QueueName::Bounce, QueueName::Disk],
        Some("ram") => vec![QueueName::Ram],
        Some("bounce") => vec![QueueName::Bounce],
        Some("disk") => vec![QueueName::Disk],
        Some(other) => {
            return Response::Error {
                message: format!("no runner {other:?}: the runners are ram, bounce and disk"),
            }
        }
    };
    {
        let _one_at_a_time = ctx.services.changing.lock().await;
        ctx.services.set_delivery_paused(ctx, &queues, paused);
    }
    info!(
        runner = runner.unwrap_or("all"),
        paused,
        "delivery {}",
        if paused { "paused" } else { "resumed" }
    );
    Response::Ok
}

/// The status report, as `mta-init status` shows it.
pub fn status(ctx: &Context, shutdown: &Shutdown) -> Status {
    let stopping = shutdown.listen_end.is_cancelled();
    let stats = &ctx.stats;
    let services_state = &ctx.services;
    let listen: Vec<String> = ctx.listen.iter().map(ToString::to_string).collect();
    let http_listen: Vec<String> = ctx.http_listen.iter().map(ToString::to_string).collect();
    let now = crate::server::unix_now();
    let per_queue = ctx.spool.queue_stats();
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
                messages: figures.map_or(0, |q| q.messages),
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
    let smtp_state = if stopping {
        ServiceState::Draining
    } else {
        state(services_state.smtp_state())
    };
    let mut services = vec![
        ServiceStatus {
            name: "smtp".into(),
            state: smtp_state,
            detail: format!(
                "{}; {} sessions open",
                match smtp_state {
                    ServiceState::Up => listen.join(", "),
                    ServiceState::Paused => format!("{} (new mail gets 421)", listen.join(", ")),
                    _ => "not listening".to_owned(),
                },
                stats.sessions_open()
            ),
        },
        ServiceStatus {
            name: "spool".into(),
            state: state(services_state.spool_state(ctx)),
            detail: match crate::services::spool_trouble(ctx) {
                Some(trouble) => format!("{trouble}; {} messages queued", ctx.spool.len()),
                None => format!(
                    "{} messages queued in {}",
                    ctx.spool.len(),
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
    ];
    for r in &runners {
        let q = crate::services::runner(&r.name).expect("a runner name");
        services.push(ServiceStatus {
            name: format!("{}-runner", r.name),
            state: if !r.started {
                ServiceState::Draining
            } else {
                state(services_state.runner_state(q))
            },
            detail: format!("{} of {} attempts in flight", r.in_flight, r.limit),
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
        listen,
        sessions_open: stats.sessions_open(),
        accepted_total: stats.accepted_total(),
        queued: ctx.spool.len() as u64,
        spool_open: SpoolOpen {
            clean: ctx.spool_report.clean,
            rescanned: ctx.spool_report.rescanned as u64,
            rescan,
        },
        services,
        runners,
        stop: stats.stop_clock().map(|(elapsed, deadline)| StopProgress {
            elapsed_ms: elapsed.as_millis() as u64,
            deadline_ms: deadline.as_millis() as u64,
            sessions_open: stats.sessions_open(),
            sessions_in_transaction: stats.sessions_in_transaction(),
            deliveries_in_flight: ctx.generations.in_flight(),
            messages_spilled: ctx.generations.spilled(),
            queued: ctx.spool.len() as u64,
        }),
        paused_domains: ctx.queue().paused_domains(),
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
        delivery_log_dropped: ctx.generations.delivery_log_dropped(),
    }
}
