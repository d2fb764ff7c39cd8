//! Accepting SMTP connections, within the connection limit.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection;
use crate::server::{Context, Shutdown};

/// Accepts connections until the stop begins. While the stop drains the
/// open sessions, a new connection gets `421 4.3.2` at once (the sending
/// MTA retries later) instead of a refusal; once they are done the socket
/// is dropped. Every session runs on `sessions`, which the stop waits for.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            // A stop takes precedence over a connection waiting in the
            // backlog, which then hears 421.
            biased;
            () = shutdown.stopping.cancelled() => {
                turn_away_until_closed(&listener, &ctx, &shutdown).await;
                break;
            }
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
        match ctx.connection_slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                sessions.spawn(async move {
                    connection::serve(stream, peer, &ctx, &shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                debug!(%peer, "connection limit reached");
                let reply = mta_smtp::Session::too_many_connections(&ctx.hostname);
                sessions.spawn(async move {
                    let mut out = Vec::new();
                    reply.write_to(&mut out);
                    let mut stream = stream;
                    let _ = stream.write_all(&out).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}

/// During the stop: every new connection hears 421 and is closed, until
/// the listener is closed for good.
async fn turn_away_until_closed(listener: &TcpListener, ctx: &Context, shutdown: &Shutdown) {
    let mut out = Vec::new();
    mta_smtp::Reply::new(
        421,
        "4.3.2",
        format!("{} shutting down, try again later", ctx.hostname),
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
