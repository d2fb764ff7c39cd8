//! The control socket: `mta-init` asks for status, stops, restarts,
//! reloads, pauses and per-service changes here.
//!
//! Two locks guard it. The file: mode 0600 (0660 with a configured
//! `group`), in the queue directory, which only mtad's user (and group)
//! can enter; it is bound under mtad's umask (0077 or 0027), so it is
//! never open wider than that, not even before the chmod. And the peer:
//! the kernel tells who connected (SO_PEERCRED), and only root and mtad's
//! own user may change anything; members of the configured group may read
//! (status, queue list, show and summary). A refusal is a
//! `Response::Forbidden` that `mta-init` turns into exit 4.

use std::os::unix::fs::PermissionsExt;
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
use tracing::{debug, info, warn};

use crate::server::{Context, Order, Shutdown, StopKind};
use crate::services::State;

/// The bound socket; its file is removed when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    peers: Arc<Peers>,
}

impl ControlSocket {
    /// Binds the socket, replacing a stale file, and gives it its mode
    /// (and `group`). Only one daemon can get this far for a queue
    /// directory (the spool lock is held), so a file left there is a
    /// leftover of a crash.
    pub fn bind(path: &Path, group: Option<nix::unistd::Gid>) -> Result<ControlSocket> {
        match std::fs::remove_file(path) {
            Ok(()) => debug!(path = %path.display(), "removed a stale control socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding control socket {}", path.display()))?;
        let mode = if group.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        if let Some(gid) = group {
            // Created with mtad's gid; a daemon that runs as itself in
            // another primary group hands it to the configured one.
            if let Err(e) = nix::unistd::chown(path, None, Some(gid)) {
                warn!(path = %path.display(), gid = gid.as_raw(), error = %e, "cannot give the control socket to the configured group");
            }
        }
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            peers: Arc::new(Peers::new(group)),
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
            let peers = self.peers.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &peers, &ctx, &shutdown).await {
                    debug!(error = %e, "control request failed");
                }
            });
        }
    }
}

/// What a peer on the control socket may ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Anything: root and mtad's own user.
    Full,
    /// Read-only requests: members of the configured group.
    Read,
    /// Nothing (the socket's mode should have kept it out).
    None,
}

impl Access {
    fn allows(self, request: &Request) -> bool {
        match self {
            Access::Full => true,
            Access::Read => request.is_read_only(),
            Access::None => false,
        }
    }
}

/// Who may ask what, by uid and groups.
#[derive(Debug)]
struct Peers {
    /// mtad's own (effective) uid, after any switch.
    owner: nix::unistd::Uid,
    /// Its name, for refusals.
    owner_name: String,
    /// The configured group, and its name.
    group: Option<(nix::unistd::Gid, String)>,
}

impl Peers {
    fn new(group: Option<nix::unistd::Gid>) -> Peers {
        let owner = nix::unistd::geteuid();
        let owner_name = nix::unistd::User::from_uid(owner)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid {owner}"), |u| u.name);
        let group = group.map(|gid| {
            let name = nix::unistd::Group::from_gid(gid)
                .ok()
                .flatten()
                .map_or_else(|| format!("gid {gid}"), |g| g.name);
            (gid, name)
        });
        Peers {
            owner,
            owner_name,
            group,
        }
    }

    fn access(&self, peer: &tokio::net::unix::UCred) -> Access {
        if peer.uid() == 0 || peer.uid() == self.owner.as_raw() {
            return Access::Full;
        }
        match &self.group {
            Some((gid, _)) if peer.gid() == gid.as_raw() || in_group(peer.pid(), *gid) => {
                Access::Read
            }
            _ => Access::None,
        }
    }

    /// Why `peer` may not ask this.
    fn refusal(&self, peer: &tokio::net::unix::UCred) -> String {
        let readers = match &self.group {
            Some((_, name)) => format!(
                "; members of group {name} may ask for status and list, show and sum up the queue"
            ),
            None => String::new(),
        };
        format!(
            "not permitted: uid {} may not ask this of mtad; only root and mtad's user ({}) may \
             change anything{readers}",
            peer.uid(),
            self.owner_name
        )
    }
}

/// True when process `pid` has `gid` among its supplementary groups
/// (SO_PEERCRED gives the primary group only).
fn in_group(pid: Option<i32>, gid: nix::unistd::Gid) -> bool {
    let Some(pid) = pid else { return false };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let wanted = gid.as_raw().to_string();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|groups| groups.split_whitespace().any(|g| g == wanted))
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(
    stream: UnixStream,
    peers: &Peers,
    ctx: &Arc<Context>,
    shutdown: &Shutdown,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    let access = peers.access(&peer);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let request = serde_json::from_str::<Request>(&line);
    // A stop's client hears the whole stop's figures on a second line;
    // it is listening before the stop is ordered.
    let mut listener = match &request {
        Ok(request @ (Request::Stop | Request::GracefulStop)) if access.allows(request) => {
            Some(ctx.stats.stop_listener())
        }
        _ => None,
    };
    let response = match request {
        Ok(request) if !access.allows(&request) => {
            warn!(uid = peer.uid(), gid = peer.gid(), pid = ?peer.pid(), ?request, "control request refused");
            Response::Forbidden {
                message: peers.refusal(&peer),
            }
        }
        Ok(request) => handle(request, ctx, shutdown).await,
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
    };
    write_line(&mut write, &response).await?;
    if let (Some(listener), Response::Ok) = (&mut listener, &response) {
        if let Some(report) = listener.report().await {
            write_line(&mut write, &Response::Stopped(report)).await?;
        }
    }
    Ok(())
}

async fn write_line(
    write: &mut (impl AsyncWriteExt + Unpin),
    response: &Response,
) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(response).expect("responses serialize");
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
    let listen: Vec<String> = ctx.listen.iter().map(ToString::to_string).collect();
    let http_listen: Vec<String> = ctx.http_listen.iter().map(ToString::to_string).collect();
    let now = crate::server::unix_now();
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
    let smtp_state = if stopping {
        ServiceState::Draining
    } else {
        state(services_state.smtp_state())
    };
    let queued = count(ctx.spool.len() as u64, "message", "messages");
    let mut services = vec![
        ServiceStatus {
            name: "smtp".into(),
            state: smtp_state,
            detail: format!(
                "{}; {} open",
                match smtp_state {
                    ServiceState::Up => listen.join(", "),
                    ServiceState::Paused => format!("{} (new mail gets 421)", listen.join(", ")),
                    _ => "not listening".to_owned(),
                },
                count(stats.sessions_open(), "session", "sessions")
            ),
        },
        ServiceStatus {
            name: "spool".into(),
            state: state(services_state.spool_state(ctx)),
            detail: match (crate::services::spool_trouble(ctx), in_memory) {
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
        listen,
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
