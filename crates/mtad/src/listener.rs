//! Accepting SMTP connections, within the connection limit.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection;
use crate::server::{Context, Shutdown};

/// Accepts connections until the stop begins, then drops the socket so the
/// kernel refuses new ones. Every session runs on `sessions`, which the stop
/// waits for.
pub async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: keep serving the others.
                    warn!(error = %e, "accept failed");
                    tokio::task::yield_now().await;
                    continue;
                }
            },
            () = shutdown.stopping.cancelled() => break,
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
