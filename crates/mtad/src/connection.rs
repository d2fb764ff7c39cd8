//! Drives one SMTP session over a TCP connection, then over TLS after
//! STARTTLS. The protocol decisions are all in `mta_smtp::Session`; this
//! file moves bytes, stores messages and watches the clock (`deadlines.rs`:
//! deadlines a trickle cannot push back) and the stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use mta_config::Role;
use mta_smtp::{received_header, Message, Reply, Session, Step, StoreError};
use mta_spool::QueueName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tracing::{debug, error, info, warn};

use crate::context::Context;
use crate::deadlines::{Deadlines, Expired};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use crate::signing::{self, Parts};
use crate::stats::{Refusal, SessionGuard};

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
/// restart installs meanwhile. On the implicit-TLS role (port 465, RFC
/// 8314) the TLS handshake comes first and the banner is its first
/// record; on the others TLS starts when the client asks (STARTTLS).
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    role: Role,
    ctx: &Context,
    settings: &Settings,
    shutdown: &Shutdown,
) {
    let with = With {
        ctx,
        settings,
        shutdown,
        peer,
        role,
        began: Instant::now(),
    };
    let session = Session::new(
        settings.role(role).session_config.clone(),
        ctx.admission.clone(),
        peer.ip(),
    );
    let mut live = Live::new(with, session);
    debug!(%peer, role = role.name(), "session opened");
    if role == Role::Submissions {
        tls_session(stream, &mut live, with, true).await;
    } else {
        live.session.banner().write_to(&mut live.out);
        let mut stream = stream;
        match drive(&mut stream, &mut live, with).await {
            Ok(Outcome::Closed) => {}
            Ok(Outcome::StartTls) => tls_session(stream, &mut live, with, false).await,
            Err(e) => debug!(%peer, error = %e, "session ended with an error"),
        }
    }
    debug!(%peer, "session closed");
}

/// Runs the TLS handshake on `stream`, within the handshake deadline,
/// then the rest of the session over TLS. With `banner` (port 465), the
/// banner is the first thing the session sends, over TLS.
async fn tls_session(stream: TcpStream, live: &mut Live<'_>, with: With<'_>, banner: bool) {
    let peer = with.peer;
    let Some(acceptor) = &with.settings.tls else {
        return;
    };
    let (until, expired) = live.deadlines.handshake(Instant::now());
    // A stop does not wait for a handshake: no 421 can be sent before
    // TLS is up, so the client is closed and tries again (the next image,
    // on a restart).
    let handshake = tokio::select! {
        biased;
        () = with.shutdown.stopping.cancelled() => {
            debug!(%peer, "stopping: TLS handshake abandoned");
            return;
        }
        handshake = timeout_at(until.into(), acceptor.accept(stream)) => handshake,
    };
    let mut tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            // No reply can be sent in the middle of a handshake.
            timed_out(with, expired, "TLS handshake");
            return;
        }
    };
    let description = crate::tls::describe(tls.get_ref().1);
    debug!(%peer, tls = %description, "TLS started");
    live.session.tls_started(description);
    if banner {
        live.session.banner().write_to(&mut live.out);
    }
    live.deadlines.await_command(Instant::now());
    if let Err(e) = drive(&mut tls, live, with).await {
        debug!(%peer, error = %e, "session ended with an error");
    }
}

/// What a session carries across the switch to TLS: the protocol
/// state, the input not yet read by it, the replies not yet sent, its
/// place in the counters and its deadlines.
struct Live<'a> {
    session: Session,
    input: BytesMut,
    out: Vec<u8>,
    guard: SessionGuard<'a>,
    deadlines: Deadlines,
}

impl<'a> Live<'a> {
    /// A session starting now on `with`'s role: its deadlines, its place
    /// in the counters, empty buffers.
    fn new(with: With<'a>, mut session: Session) -> Live<'a> {
        let limits = with.settings.role(with.role);
        session.expect_size(with.ctx.stats.recent_size());
        Live {
            deadlines: Deadlines::new(
                limits.idle_timeout,
                with.settings.min_data_rate,
                limits.max_session_time,
                with.began,
            ),
            guard: with.ctx.stats.session_opened(with.role),
            session,
            input: BytesMut::with_capacity(COMMAND_ROOM),
            out: Vec::with_capacity(1024),
        }
    }
}

/// What a session runs with.
#[derive(Clone, Copy)]
struct With<'a> {
    ctx: &'a Context,
    settings: &'a Settings,
    shutdown: &'a Shutdown,
    peer: SocketAddr,
    role: Role,
    began: Instant,
}

/// Counts and logs a session cut off at a deadline.
fn timed_out(with: With<'_>, expired: Expired, during: &str) {
    let cause = match expired {
        Expired::Command => Refusal::CommandDeadline,
        Expired::Data => Refusal::DataDeadline,
        Expired::Session => Refusal::SessionCap,
    };
    with.ctx.stats.refused(cause);
    // One line per session, as Postfix's "timeout after DATA": a session
    // that was served, so info rather than warn.
    info!(
        client = %with.peer.ip(),
        cause = cause.label(),
        during,
        session_secs = with.began.elapsed().as_secs_f64(),
        "deadline passed: session closed with 421 4.4.2"
    );
}

/// Room made in the input buffer before a read of commands: a pipelined
/// batch of them fits.
const COMMAND_ROOM: usize = 16 * 1024;

/// Room made in the input buffer before a read of message text, once a
/// read of it filled the room it had. The buffer keeps its size for the
/// session (64 KiB more for a session that sent a large message).
const TEXT_ROOM: usize = 64 * 1024;

/// Runs the session over `stream` until it closes or asks for TLS.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    live: &mut Live<'_>,
    with: With<'_>,
) -> std::io::Result<Outcome> {
    let Live {
        session,
        input,
        out,
        guard,
        deadlines,
    } = live;
    let With {
        ctx,
        settings,
        shutdown,
        ..
    } = with;
    // The last read took all the room it had.
    let mut filled = false;
    loop {
        // Answer everything already buffered: with PIPELINING the client may
        // have sent many commands in one packet (RFC 2920).
        let mut answered = false;
        loop {
            if session.opens_transaction(input) {
                in_flow(ctx, settings, shutdown).await;
            }
            let step = session.poll(input);
            guard.set_in_transaction(session.in_transaction());
            if !matches!(step, Step::NeedInput) {
                answered = true;
            }
            match step {
                Step::NeedInput => break,
                Step::Reply(reply) => reply.write_to(out),
                Step::Close(reply) => return finish(stream, out, reply, deadlines).await,
                Step::StartTls(reply) => {
                    reply.write_to(out);
                    deadlines.await_command(Instant::now());
                    bounded(deadlines, flush(stream, out)).await?;
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
                    let reply = store(ctx, settings, with.role, session, *message).await;
                    reply.write_to(out);
                    guard.set_in_transaction(session.in_transaction());
                }
                Step::Authenticate(credentials) => {
                    let verdict = ctx
                        .auth
                        .check(&credentials, with.peer.ip(), session.is_tls(), with.role)
                        .await;
                    drop(credentials);
                    match session.authenticated(verdict) {
                        Step::Close(reply) => return finish(stream, out, reply, deadlines).await,
                        Step::Reply(reply) => reply.write_to(out),
                        _ => {}
                    }
                }
            }
            if shutdown.stopping.is_cancelled() && !session.in_transaction() {
                return finish(stream, out, session.shutting_down(), deadlines).await;
            }
        }
        // The clocks: text earns time as it comes; a command line has
        // idle_timeout from the moment its wait began (the last reply),
        // however its octets trickle in.
        let now = Instant::now();
        if session.is_reading_text() {
            if answered || !deadlines.in_text() {
                deadlines.await_text(now);
            }
        } else if answered || deadlines.in_text() {
            deadlines.await_command(now);
        }
        // RFC 2920 section 3.1: flush before waiting for more input. A
        // client that does not read its replies meets the same deadline.
        match bounded(deadlines, flush(stream, out)).await {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return expire(stream, out, session, with, deadlines, "a reply").await
            }
            other => other?,
        }
        if shutdown.stopping.is_cancelled() && !session.in_transaction() {
            return finish(stream, out, session.shutting_down(), deadlines).await;
        }
        // Message text that fills the room it is read into is read in
        // larger pieces from then on (a 100 KiB message in a few reads
        // instead of seven); commands and short messages never make the
        // buffer grow past its first size.
        let (least, room) = if filled && session.is_reading_text() {
            (TEXT_ROOM / 2, TEXT_ROOM)
        } else {
            (4096, COMMAND_ROOM)
        };
        // Message text is read straight into the buffer it is decoded in
        // (saving a copy of every octet) when no input waits before it.
        let idle = !session.in_transaction();
        let mut text = session.text_room(input);
        let text_start = text.as_ref().map(|text| text.len());
        let (target, spare): (&mut (dyn BufMut + Send), usize) = match text {
            Some(ref mut text) => {
                if text.capacity() - text.len() < least {
                    text.reserve(room);
                }
                let spare = text.capacity() - text.len();
                (*text, spare)
            }
            None => {
                if input.capacity() - input.len() < least {
                    input.reserve(room);
                }
                let spare = input.capacity() - input.len();
                (input, spare)
            }
        };
        let (until, _) = deadlines.next();
        tokio::select! {
            read = timeout_at(until.into(), stream.read_buf(target)) => match read {
                Err(_) => {
                    let during = if deadlines.in_text() { "message text" } else { "a command" };
                    return expire(stream, out, session, with, deadlines, during).await;
                }
                Ok(Ok(0)) => return Ok(Outcome::Closed),
                Ok(Ok(n)) => {
                    if let Some(start) = text_start {
                        session.text_read(start, input);
                    }
                    filled = n == spare;
                    deadlines.received(n, Instant::now());
                }
                Ok(Err(e)) => return Err(e),
            },
            // An idle session is told at once; one in a transaction may
            // finish it (the checks above run after each step).
            () = shutdown.stopping.cancelled(), if idle => {}
            () = shutdown.deadline.cancelled() => {
                return finish(stream, out, session.shutting_down(), deadlines).await;
            }
        }
    }
}

/// In-flow control before a MAIL that opens a transaction: while first
/// attempts wait for a ram runner slot, the reply waits (at most
/// `smtp.in_flow_delay`) for the runner to take one from its line, so the
/// clients slow to the pace of delivery. A stop lets it go at once.
async fn in_flow(ctx: &Context, settings: &Settings, shutdown: &Shutdown) {
    let queue = ctx.queue();
    tokio::select! {
        waited = queue.in_flow(settings.in_flow_delay) => {
            if let Some(waited) = waited {
                ctx.stats.in_flow_waited(waited);
            }
        }
        () = shutdown.stopping.cancelled() => {}
    }
}

/// A deadline passed: `421 4.4.2`, counted and logged by cause, then close.
async fn expire<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    session: &Session,
    with: With<'_>,
    deadlines: &Deadlines,
    during: &str,
) -> std::io::Result<Outcome> {
    timed_out(with, deadlines.next().1, during);
    // Replies the client never read are dropped: the 421 goes alone.
    out.clear();
    finish(stream, out, session.timeout(), deadlines).await
}

/// Runs a write within the session's current deadline (TimedOut past it).
async fn bounded<T>(
    deadlines: &Deadlines,
    io: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    let (until, _) = deadlines.next();
    timeout_at(until.into(), io)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Makes the message durable, then answers: 250 only once it is on disk
/// (in volatile mode, once it is in the ram queue).
async fn store(
    ctx: &Context,
    settings: &Settings,
    role: Role,
    session: &mut Session,
    message: Message,
) -> Reply {
    if ctx.services.spool_down() {
        warn!("the spool is down (svc down spool): message not taken");
        return session.stored(Err(StoreError::Io));
    }
    let id = ctx.spool.next_id();
    let received = received_header(&settings.hostname, &message.envelope, id);
    // RFC 6409 section 8: a submission server adds the Date: and
    // Message-ID: a submitted message lacks, and nothing else; an MX
    // never does (RFC 5321 section 6.1 leaves the message alone).
    let fixes = if role == Role::Mx {
        Vec::new()
    } else {
        mta_smtp::submission_fixes(
            &message.content,
            &settings.hostname,
            message.envelope.arrival,
            id,
        )
    };
    let parts = Parts {
        received,
        fixes,
        content: message.content,
    };
    // DKIM: signed once, here, after the fixes and before the message is
    // durable; never sent unsigned when a key is for it.
    let (parts, signed) = if !settings.dkim.is_empty()
        && signing::is_ours(
            &message.envelope.origin,
            &settings.config.smtp.relay_networks,
        ) {
        signing::sign(&settings.dkim, parts).await
    } else {
        (parts, Ok(None))
    };
    let signed = match signed {
        Ok(signed) => signed,
        Err(e) => {
            error!(queue_id = %id, error = %e, "could not sign the message: not taken");
            return session.stored(Err(StoreError::Local));
        }
    };
    let dkim = signed.as_ref().map(|s| {
        s.by.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    });
    let content = Arc::new(parts.assemble(signed.as_ref()));
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
            ctx.stats.message_accepted(content.len());
            info!(
                queue_id = %id,
                from = %message.envelope.sender,
                recipients = message.envelope.recipients.len(),
                size = content.len(),
                client = %message.envelope.origin.client_ip,
                dkim = dkim.as_deref().unwrap_or("none"),
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

/// Sends the last reply and closes. The write has until the session's
/// deadline; past it (a 421 for a deadline), it is tried once and dropped
/// if the client's receive window is full, so a client that reads nothing
/// cannot hold the session open.
async fn finish<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
    reply: Reply,
    deadlines: &Deadlines,
) -> std::io::Result<Outcome> {
    reply.write_to(out);
    let written = bounded(deadlines, flush(stream, out)).await;
    let _ = bounded(deadlines, stream.shutdown()).await;
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(Outcome::Closed),
        other => other.map(|()| Outcome::Closed),
    }
}

/// Serves one local submission: a client of the local socket
/// (`mta-sendmail`), or a drop file being imported (`maildrop.rs`), for
/// `user`, whom the kernel named (the socket's peer, the file's owner).
///
/// The session is `Session::local` under `config` (port 25's, without
/// AUTH or STARTTLS), with port 25's deadlines, counted among port 25's
/// sessions, and its messages take the same way to the spool as any
/// other.
pub async fn serve_local(
    stream: tokio::net::UnixStream,
    user: mta_smtp::LocalUser,
    config: Arc<mta_smtp::SessionConfig>,
    ctx: &Context,
    settings: &Settings,
    shutdown: &Shutdown,
) {
    let with = With {
        ctx,
        settings,
        shutdown,
        // No address: the session records the user, not a client.
        peer: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Port 25's limits; mta-sendmail adds the Date: and Message-ID:
        // itself, so the submission fixes are not applied again.
        role: Role::Mx,
        began: Instant::now(),
    };
    let mut live = Live::new(with, Session::local(config, ctx.admission.clone(), &user));
    live.session.banner().write_to(&mut live.out);
    let mut stream = stream;
    if let Err(e) = drive(&mut stream, &mut live, with).await {
        debug!(user = %user.name, uid = user.uid, error = %e, "local session ended with an error");
    }
}
