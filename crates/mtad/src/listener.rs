//! Accepting SMTP connections, within the connection limit.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection;
use crate::server::{Context, Shutdown};

/// Accepts connections until the stop begins or the service is taken
/// down (`down`). While injection is paused, a new connection hears
/// `421 4.3.2` and is closed. When a stop begins, a restart leaves new
/// connections in the kernel's backlog for the next image; any other
/// stop answers them `421 4.3.2` (the sending MTA retries later) instead
/// of refusing them, until the open sessions are done. Every session runs
/// on `sessions`, which the stop waits for.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
    down: CancellationToken,
) {
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
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: keep serving the others.
                    warn!(error = %e, "accept failed");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let settings = ctx.settings();
        if ctx.services.injection_blocked() {
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
        match settings.connection_slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    connection::serve(stream, peer, &ctx, &settings, &shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                debug!(%peer, "connection limit reached");
                let reply = mta_smtp::Session::too_many_connections(&settings.hostname);
                sessions.spawn(say_and_close(stream, reply));
            }
        }
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
