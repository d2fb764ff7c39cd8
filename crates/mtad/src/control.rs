//! The control socket: `mta-init` asks for status and for a stop here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use mta_control::{
    DaemonState, Request, Response, RunnerRow, ServiceState, ServiceStatus, SpoolOpen, Status,
    StopProgress,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info};

use crate::server::{Context, Shutdown};

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
    pub async fn serve(&self, ctx: Arc<Context>, shutdown: Shutdown) {
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

async fn answer(stream: UnixStream, ctx: &Context, shutdown: &Shutdown) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Status) => Response::Status(status(ctx, shutdown)),
        Ok(Request::Stop) => {
            info!("stop requested on the control socket");
            shutdown.requested.cancel();
            Response::Ok
        }
        Ok(Request::Pause { runner }) => pause(ctx, runner.as_deref(), true),
        Ok(Request::Resume { runner }) => pause(ctx, runner.as_deref(), false),
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&response).expect("responses serialize");
    out.push(b'\n');
    write.write_all(&out).await
}

/// Pauses or resumes one runner, or all three.
fn pause(ctx: &Context, runner: Option<&str>, paused: bool) -> Response {
    use mta_spool::QueueName;
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
    for q in queues {
        if paused {
            ctx.queue.pause(q);
        } else {
            ctx.queue.resume(q);
        }
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
    let stopping = shutdown.stopping.is_cancelled();
    let stats = &ctx.stats;
    let listen: Vec<String> = ctx.listen.iter().map(ToString::to_string).collect();
    let smtp_state = if stopping {
        ServiceState::Draining
    } else {
        ServiceState::Up
    };
    let runners: Vec<RunnerRow> = ctx
        .queue
        .status()
        .into_iter()
        .map(|r| RunnerRow {
            name: r.name.to_owned(),
            started: r.started,
            paused: r.paused,
            in_flight: r.in_flight,
            limit: r.limit as u64,
            attempts: r.attempts,
            delivered: r.delivered,
            deferred: r.deferred,
            failed: r.failed,
        })
        .collect();
    let mut services = vec![
        ServiceStatus {
            name: "smtp".into(),
            state: smtp_state,
            detail: format!(
                "{}; {} sessions open",
                if stopping {
                    "not listening".to_owned()
                } else {
                    listen.join(", ")
                },
                stats.sessions_open()
            ),
        },
        ServiceStatus {
            name: "spool".into(),
            state: ServiceState::Up,
            detail: format!(
                "{} messages queued in {}",
                ctx.spool.len(),
                ctx.spool.dir().display()
            ),
        },
        ServiceStatus {
            name: "control".into(),
            state: ServiceState::Up,
            detail: ctx.control_path.display().to_string(),
        },
    ];
    for r in &runners {
        services.push(ServiceStatus {
            name: format!("{}-runner", r.name),
            state: if !r.started {
                ServiceState::Draining
            } else if r.paused {
                ServiceState::Paused
            } else {
                ServiceState::Up
            },
            detail: format!("{} of {} attempts in flight", r.in_flight, r.limit),
        });
    }
    Status {
        pid: std::process::id(),
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
        },
        services,
        runners,
        stop: stats.stop_clock().map(|(elapsed, deadline)| StopProgress {
            elapsed_ms: elapsed.as_millis() as u64,
            deadline_ms: deadline.as_millis() as u64,
            sessions_open: stats.sessions_open(),
            sessions_in_transaction: stats.sessions_in_transaction(),
            deliveries_in_flight: ctx.queue.in_flight(),
        }),
    }
}
