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
use mta_control::{ErrorKind, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::shutdown::{Order, Shutdown, StopKind};
use crate::{pausing, services};

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
        Err(e) => Response::error(ErrorKind::Invalid, format!("bad request: {e}")),
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
    use ErrorKind::{Conflict, Invalid, Unavailable};
    let stopping = shutdown.listen_end.is_cancelled();
    let order = |order: Order, what: &str| {
        info!("{what} requested on the control socket");
        match ctx.orders.send(order) {
            Ok(()) => Response::Ok,
            Err(_) => Response::error(Conflict, "already stopping"),
        }
    };
    match request {
        Request::Status => Response::Status(Box::new(crate::status::status(ctx, shutdown))),
        Request::Stop => order(Order::Stop(StopKind::Normal), "stop"),
        Request::GracefulStop => order(Order::Stop(StopKind::Graceful), "graceful stop"),
        Request::Restart { .. } if stopping => Response::error(Conflict, "already stopping"),
        Request::Restart { now } => match crate::reload::check_config(ctx) {
            Ok(_) => {
                let kind = if now { StopKind::Now } else { StopKind::Normal };
                order(Order::Restart(kind), "restart")
            }
            Err(e) => Response::error(
                Invalid,
                format!(
                "restart refused, the server is untouched: the configuration does not load:\n{e:#}"
            ),
            ),
        },
        Request::Reload if stopping => Response::error(Conflict, "stopping: no reload"),
        Request::Reload => match crate::reload::reload(ctx).await {
            Ok(notes) if notes.is_empty() => Response::Ok,
            Ok(notes) => Response::Done {
                message: notes.join("\n"),
            },
            // The configuration, or what it names (TLS files, the local
            // recipient list), does not load.
            Err(e) => Response::error(
                Invalid,
                format!("graceful restart refused, the server is untouched:\n{e:#}"),
            ),
        },
        Request::ReopenLogs => match crate::reload::reopen_logs(ctx) {
            Ok(()) => Response::Ok,
            Err(e) => Response::error(Unavailable, format!("{e:#}")),
        },
        Request::Pause { runner } => pausing::pause_delivery(ctx, runner, true).await,
        Request::Resume { runner } => pausing::pause_delivery(ctx, runner, false).await,
        Request::PauseInjection => pausing::pause_injection(ctx, true),
        Request::ResumeInjection => pausing::pause_injection(ctx, false),
        Request::Svc { .. } if stopping => {
            Response::error(Conflict, "stopping: services are going down anyway")
        }
        // What fails here is a socket that cannot be bound again or an
        // index that cannot be flushed.
        Request::Svc { action, service } => match services::svc(ctx, action, service).await {
            Ok(message) => Response::Done { message },
            Err(e) => Response::error(Unavailable, format!("{e:#}")),
        },
        Request::Queue(request) => crate::queue_api::handle(ctx, request).await,
    }
}
