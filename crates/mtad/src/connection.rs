//! Drives one SMTP session over a TCP connection, then over TLS after
//! STARTTLS. The protocol decisions are all in `mta_smtp::Session`; this
//! file moves bytes, stores messages and watches the clock and the stop.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use mta_smtp::{received_header, Message, Reply, Session, Step, StoreError};
use mta_spool::QueueName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, error, info, warn};

use crate::server::{Context, Settings, Shutdown};
use crate::stats::SessionGuard;

/// How a stretch of the session over one stream ended.
enum Outcome {
    /// The connection is done.
    Closed,
    /// The client asked for TLS and got 220.
    StartTls,
}

/// Serves one connection to its end.
///
/// The session keeps the `settings` it started with, whatever a graceful
/// restart installs meanwhile.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    settings: &Settings,
    shutdown: &Shutdown,
) {
    let with = With {
        ctx,
        settings,
        shutdown,
    };
    let mut guard = ctx.stats.session_opened();
    let mut session = Session::new(
        settings.session_config.clone(),
        ctx.admission.clone(),
        peer.ip(),
    );
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut stream = stream;
    let mut out = Vec::with_capacity(1024);
    session.banner().write_to(&mut out);
    debug!(%peer, "session opened");

    let outcome = drive(
        &mut stream,
        &mut session,
        &mut input,
        &mut out,
        with,
        &mut guard,
    )
    .await;
    match outcome {
        Ok(Outcome::Closed) => {}
        Ok(Outcome::StartTls) => {
            let Some(acceptor) = &settings.tls else {
                return;
            };
            let handshake =
                tokio::time::timeout(settings.idle_timeout, acceptor.accept(stream)).await;
            let mut tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let description = crate::tls::describe(tls.get_ref().1);
            debug!(%peer, tls = %description, "TLS started");
            session.tls_started(description);
            if let Err(e) = drive(
                &mut tls,
                &mut session,
                &mut input,
                &mut out,
                with,
                &mut guard,
            )
            .await
            {
                debug!(%peer, error = %e, "session ended with an error");
            }
        }
        Err(e) => debug!(%peer, error = %e, "session ended with an error"),
    }
    debug!(%peer, "session closed");
}

/// What a session runs with.
#[derive(Clone, Copy)]
struct With<'a> {
    ctx: &'a Context,
    settings: &'a Settings,
    shutdown: &'a Shutdown,
}

/// Runs the session over `stream` until it closes or asks for TLS.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    session: &mut Session,
    input: &mut BytesMut,
    out: &mut Vec<u8>,
    with: With<'_>,
    guard: &mut SessionGuard<'_>,
) -> std::io::Result<Outcome> {
    let With {
        ctx,
        settings,
        shutdown,
    } = with;
    loop {
        // Answer everything already buffered: with PIPELINING the client may
        // have sent many commands in one packet (RFC 2920).
        loop {
            let step = session.poll(input);
            guard.set_in_transaction(session.in_transaction());
            match step {
                Step::NeedInput => break,
                Step::Reply(reply) => reply.write_to(out),
                Step::Close(reply) => return finish(stream, out, reply).await,
                Step::StartTls(reply) => {
                    reply.write_to(out);
                    flush(stream, out).await?;
                    if !input.is_empty() {
                        // CVE-2011-0411: plaintext pipelined after STARTTLS
                        // must never run inside the TLS session.
                        warn!(
                            octets = input.len(),
                            "discarding plaintext sent after STARTTLS"
                        );
                        input.clear();
                    }
                    return Ok(Outcome::StartTls);
                }
                Step::Store(message) => {
                    let reply = store(ctx, settings, session, *message).await;
                    reply.write_to(out);
                    guard.set_in_transaction(session.in_transaction());
                }
            }
            if shutdown.stopping.is_cancelled() && !session.in_transaction() {
                return finish(stream, out, session.shutting_down()).await;
            }
        }
        // RFC 2920 section 3.1: flush before waiting for more input.
        flush(stream, out).await?;
        if shutdown.stopping.is_cancelled() && !session.in_transaction() {
            return finish(stream, out, session.shutting_down()).await;
        }
        if input.capacity() - input.len() < 4096 {
            input.reserve(16 * 1024);
        }
        tokio::select! {
            read = tokio::time::timeout(settings.idle_timeout, stream.read_buf(input)) => match read {
                Err(_) => return finish(stream, out, session.timeout()).await,
                Ok(Ok(0)) => return Ok(Outcome::Closed),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            },
            // An idle session is told at once; one in a transaction may
            // finish it (the checks above run after each step).
            () = shutdown.stopping.cancelled(), if !session.in_transaction() => {}
            () = shutdown.deadline.cancelled() => {
                return finish(stream, out, session.shutting_down()).await;
            }
        }
    }
}

/// Makes the message durable, then answers: 250 only once it is on disk
/// (in volatile mode, once it is in the ram queue).
async fn store(
    ctx: &Context,
    settings: &Settings,
    session: &mut Session,
    message: Message,
) -> Reply {
    if ctx.services.spool_down() {
        warn!("the spool is down (svc down spool): message not taken");
        return session.stored(Err(StoreError::Io));
    }
    let id = ctx.spool.next_id();
    let header = received_header(&settings.hostname, &message.envelope, id);
    let mut content = Vec::with_capacity(header.len() + message.content.len());
    content.extend_from_slice(header.as_bytes());
    content.extend_from_slice(&message.content);
    drop(message.content);
    let content = Arc::new(content);
    // Claimed before the commit so the disk runner leaves it to the ram
    // runner.
    let queue = ctx.queue();
    let claim = queue.claim(id);
    let volatile = queue.is_volatile();
    let result = if volatile {
        Ok(())
    } else {
        ctx.spool
            .store_in(QueueName::Ram, id, &message.envelope, content.clone())
            .await
    };
    match result {
        Ok(()) => {
            ctx.stats.message_accepted();
            info!(
                queue_id = %id,
                from = %message.envelope.sender,
                recipients = message.envelope.recipients.len(),
                size = content.len(),
                client = %message.envelope.origin.client_ip,
                volatile,
                "accepted"
            );
            queue.accepted(claim, message.envelope, content, !volatile);
            session.stored(Ok(id))
        }
        Err(e) => {
            error!(queue_id = %id, error = %e, "could not store message");
            let kind = if e.is_no_space() {
                StoreError::NoSpace
            } else {
                StoreError::Io
            };
            session.stored(Err(kind))
        }
    }
}

async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
        stream.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Sends the last reply and closes.
async fn finish<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    reply: Reply,
) -> std::io::Result<Outcome> {
    reply.write_to(out);
    flush(stream, out).await?;
    let _ = stream.shutdown().await;
    Ok(Outcome::Closed)
}
