//! Accepting SMTP connections, within the global connection limit and
//! the per-client limits (`client_limits.rs`). Every connection turned
//! away is counted by cause (`stats::Refusal`); the log gets one line when
//! a limit starts refusing (warn for the global limit, which needs the
//! operator, info for one client), the rest at debug, so a flood of
//! refusals does not flood the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mta_config::Role;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::client_limits::Over;
use crate::connection;
use crate::context::Context;
use crate::shutdown::Shutdown;
use crate::stats::Refusal;

/// After a failed `accept` (EMFILE: out of descriptors), wait before
/// trying again, doubling up to the maximum, as Go's net/http does: the
/// connection waits in the backlog instead of the loop spinning.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(5);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Accepts connections until the stop begins or the service is taken
/// down (`down`). While injection is paused, a new connection hears
/// `421 4.3.2` and is closed. When a stop begins, a restart leaves new
/// connections in the kernel's backlog for the next image; any other
/// stop answers them `421 4.3.2` (the sending MTA retries later) instead
/// of refusing them, until the open sessions are done. Every session runs
/// on `sessions`, which the stop waits for.
pub async fn accept_loop(
    listener: TcpListener,
    role: Role,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
    down: CancellationToken,
) {
    let mut retry = ACCEPT_RETRY_FIRST;
    let mut at_limit = false;
    loop {
        let (stream, peer) = tokio::select! {
            // A stop takes precedence over a connection waiting in the
            // backlog.
            biased;
            () = shutdown.listen_end.cancelled() => {
                if !shutdown.handover.is_cancelled() {
                    turn_away_until_closed(&listener, &ctx, &shutdown).await;
                }
                break;
            }
            () = down.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    retry = ACCEPT_RETRY_FIRST;
                    a
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the others. Warn
                    // once per run of failures.
                    ctx.stats.refused(Refusal::AcceptError);
                    if retry == ACCEPT_RETRY_FIRST {
                        warn!(error = %e, "accept failed; retrying (connections wait in the backlog)");
                    } else {
                        debug!(error = %e, "accept failed again");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = shutdown.listen_end.cancelled() => {}
                        () = down.cancelled() => {}
                    }
                    retry = (retry * 2).min(ACCEPT_RETRY_MAX);
                    continue;
                }
            },
        };
        // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d; the
        // relay check, the per-client limits and the Received header judge
        // it by its IPv4 address.
        let peer = std::net::SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let _ = stream.set_nodelay(true);
        let settings = ctx.settings();
        let limits = settings.role(role);
        if ctx.services.injection_blocked() {
            ctx.stats.refused(Refusal::InjectionPaused);
            debug!(%peer, "injection paused: turned away with 421");
            let reply = mta_smtp::Reply::new(
                421,
                "4.3.2",
                format!(
                    "{} not accepting mail now, try again later",
                    settings.hostname
                ),
            );
            sessions.spawn(say_and_close(stream, reply));
            continue;
        }
        // A client locked out by its failed authentications gets nothing
        // on the submission ports, where every client must authenticate
        // before MAIL and its AUTH would only hear 421: no session, no TLS
        // handshake. (Port 25 still takes its mail.)
        if matches!(role, Role::Submission | Role::Submissions) {
            if let Some(left) = ctx.auth.client_locked_out(peer.ip()) {
                debug!(client = %peer.ip(), role = role.name(), locked_for = left.as_secs(), "locked out: turned away with 421");
                let reply = mta_smtp::Session::locked_out_at_connect(
                    &settings.hostname,
                    &peer.ip().to_string(),
                    left.as_secs().max(1),
                );
                sessions.spawn(say_and_close(stream, reply));
                continue;
            }
        }
        let Ok(slot) = limits.connection_slots.clone().try_acquire_owned() else {
            ctx.stats.refused(Refusal::MaxConnections);
            if !at_limit {
                at_limit = true;
                warn!(
                    client = %peer.ip(),
                    cause = Refusal::MaxConnections.label(),
                    role = role.name(),
                    max_connections = settings.config.role_limits(role).max_connections,
                    "connection limit reached: new connections get 421 4.7.0"
                );
            } else {
                debug!(client = %peer.ip(), cause = Refusal::MaxConnections.label(), "refused");
            }
            let reply = mta_smtp::Session::too_many_connections(&settings.hostname);
            sessions.spawn(say_and_close(stream, reply));
            continue;
        };
        at_limit = false;
        let client = match ctx.client_limits(role).admit(
            peer.ip(),
            &limits.client_limits,
            Instant::now(),
        ) {
            Ok(permit) => permit,
            Err(refused) => {
                drop(slot);
                let cause = match refused.over {
                    Over::Connections => Refusal::ClientConnections,
                    Over::Rate => Refusal::ClientRate,
                };
                ctx.stats.refused(cause);
                if refused.first {
                    info!(
                        client = %refused.client,
                        cause = cause.label(),
                        "client over its limit: its new connections get 421 4.7.0 (more refusals logged at debug)"
                    );
                } else {
                    debug!(client = %refused.client, cause = cause.label(), "refused");
                }
                let reply = mta_smtp::Session::too_many_connections_from(
                    &settings.hostname,
                    &refused.client.to_string(),
                    refused.over == Over::Rate,
                );
                sessions.spawn(say_and_close(stream, reply));
                continue;
            }
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        sessions.spawn(async move {
            connection::serve(stream, peer, role, &ctx, &settings, &shutdown).await;
            drop(client);
            drop(slot);
        });
    }
}

async fn say_and_close(mut stream: TcpStream, reply: mta_smtp::Reply) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// During the stop: every new connection hears 421 and is closed, until
/// the listener is closed for good.
async fn turn_away_until_closed(listener: &TcpListener, ctx: &Context, shutdown: &Shutdown) {
    let mut out = Vec::new();
    mta_smtp::Reply::new(
        421,
        "4.3.2",
        format!("{} shutting down, try again later", ctx.settings().hostname),
    )
    .write_to(&mut out);
    let out: std::sync::Arc<[u8]> = out.into();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((mut stream, peer)) = accepted {
                    ctx.stats.refused(Refusal::Stopping);
                    debug!(%peer, "stopping: turned away with 421");
                    let out = out.clone();
                    tokio::spawn(async move {
                        let _ = stream.write_all(&out).await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
            () = shutdown.listeners_closed.cancelled() => return,
        }
    }
}
