//! One session: connect, set up (greeting, EHLO, TLS, AUTH), send its
//! messages, QUIT, reconnecting as the options and failures say; and
//! what it counted.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};
use tokio_rustls::TlsConnector;

use crate::message::{dot_stuff_into, rcpt_address, MessageSpec};
use crate::options::Options;
use crate::report::{FailureLog, Report};
use crate::smtp::{Conn, ConnError, Reply};
use crate::tls::TlsMode;

/// A session gives up after this many connection failures in a row.
pub const MAX_CONSECUTIVE_CONN_FAILURES: u32 = 5;
/// First pause before reconnecting after a connection failure; doubles up
/// to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What every session of a run shares.
pub(crate) struct Shared {
    pub(crate) opts: Options,
    spec: MessageSpec,
    mail_command: String,
    rcpt_commands: Vec<String>,
    pub(crate) deadline: Instant,
    tls: Option<TlsConnector>,
    /// Which of `opts.sources` the next connection comes from.
    next_source: AtomicUsize,
}

impl Shared {
    /// The run's options, its messages' shape, its TLS connector (when
    /// the options ask for TLS) and its deadline.
    pub(crate) fn new(
        opts: Options,
        spec: MessageSpec,
        tls: Option<TlsConnector>,
        deadline: Instant,
    ) -> Shared {
        Shared {
            rcpt_commands: (1..=opts.rcpts)
                .map(|k| format!("RCPT TO:<{}>\r\n", rcpt_address(&opts.to_domain, k)))
                .collect(),
            mail_command: format!("MAIL FROM:<{}>\r\n", opts.from),
            opts,
            spec,
            deadline,
            tls,
            next_source: AtomicUsize::new(0),
        }
    }

    fn source(&self) -> Option<IpAddr> {
        let sources = &self.opts.sources;
        if sources.is_empty() {
            return None;
        }
        let i = self.next_source.fetch_add(1, Ordering::Relaxed);
        Some(sources[i % sources.len()])
    }
}

/// What one session (or the whole run, merged) counted.
#[derive(Default)]
pub(crate) struct SessionStats {
    accepted: u64,
    failed: u64,
    pub(crate) unsent: u64,
    connections: u64,
    connect_failures: u64,
    latencies: Vec<Duration>,
    /// Connect to ready for MAIL (TLS and AUTH included), per connection.
    setup_latencies: Vec<Duration>,
    /// AUTH command to its reply.
    auth_latencies: Vec<Duration>,
    /// AUTH replies by code.
    auth_replies: BTreeMap<u16, u64>,
    /// Open loop: starts that had to wait for a free session.
    pub(crate) late_starts: u64,
    /// Open loop: the latest any start came after its due time.
    pub(crate) max_start_delay: Duration,
    failures: FailureLog,
    first_connect: Option<Instant>,
    last_reply: Option<Instant>,
    pub(crate) timed_out: bool,
}

impl SessionStats {
    pub(crate) fn merge(&mut self, o: SessionStats) {
        self.accepted += o.accepted;
        self.failed += o.failed;
        self.unsent += o.unsent;
        self.connections += o.connections;
        self.connect_failures += o.connect_failures;
        self.latencies.extend(o.latencies);
        self.setup_latencies.extend(o.setup_latencies);
        self.auth_latencies.extend(o.auth_latencies);
        for (code, n) in o.auth_replies {
            *self.auth_replies.entry(code).or_default() += n;
        }
        self.late_starts += o.late_starts;
        self.max_start_delay = self.max_start_delay.max(o.max_start_delay);
        self.failures.merge(o.failures);
        self.first_connect = min_opt(self.first_connect, o.first_connect);
        self.last_reply = self.last_reply.max(o.last_reply);
        self.timed_out |= o.timed_out;
    }

    /// A session task panicked: its counts are lost, so all of its
    /// messages count as failed.
    pub(crate) fn lost_task(&mut self, count: u64, e: &tokio::task::JoinError) {
        self.failed += count;
        self.failures.record(format!("session task failed: {e}"));
    }

    fn note_reply(&mut self, conn: &Conn) {
        self.last_reply = self.last_reply.max(conn.last_reply);
    }

    pub(crate) fn into_report(mut self, opts: &Options, started: Instant) -> Report {
        self.latencies.sort_unstable();
        self.setup_latencies.sort_unstable();
        self.auth_latencies.sort_unstable();
        let wall = match (self.first_connect, self.last_reply) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => Duration::ZERO,
        };
        Report {
            options: opts.clone(),
            accepted: self.accepted,
            failed: self.failed,
            unsent: self.unsent,
            timed_out: self.timed_out,
            connections: self.connections,
            connect_failures: self.connect_failures,
            failures: self.failures,
            wall,
            elapsed: started.elapsed(),
            latencies: self.latencies,
            setup_latencies: self.setup_latencies,
            auth_latencies: self.auth_latencies,
            auth_replies: self.auth_replies,
            late_starts: self.late_starts,
            max_start_delay: self.max_start_delay,
        }
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Counts AUTH attempts, for `{n}` in `--auth-user`.
static NEXT_AUTH: AtomicU64 = AtomicU64::new(0);

/// The user name of AUTH attempt `n`: `pattern` with `{n}` replaced by
/// `n` (a new name at each attempt), or `pattern` itself.
fn auth_user(pattern: &str, n: u64) -> Cow<'_, str> {
    if pattern.contains("{n}") {
        Cow::Owned(pattern.replace("{n}", &n.to_string()))
    } else {
        Cow::Borrowed(pattern)
    }
}

/// How a connection's set-up ended.
enum Setup {
    /// Ready for MAIL.
    Ready,
    /// The server refused AUTH (recorded); the connection may still take
    /// QUIT unless it said 421.
    AuthRefused { closing: bool },
}

/// Greeting, EHLO, STARTTLS or implicit TLS, EHLO again, AUTH PLAIN: up
/// to the first MAIL.
async fn set_up(
    conn: &mut Conn,
    shared: &Shared,
    st: &mut SessionStats,
) -> Result<Setup, ConnError> {
    let opts = &shared.opts;
    let connector = shared.tls.as_ref();
    if opts.tls == TlsMode::Implicit {
        let connector = connector.ok_or_else(|| ConnError::Fatal("no TLS set-up".into()))?;
        conn.start_tls(connector).await?;
    }
    conn.handshake(&opts.ehlo).await?;
    if opts.tls == TlsMode::StartTls {
        if !conn.starttls {
            return Err(ConnError::Fatal(
                "server does not advertise STARTTLS (needed by --starttls)".into(),
            ));
        }
        let connector = connector.ok_or_else(|| ConnError::Fatal("no TLS set-up".into()))?;
        conn.starttls(connector).await?;
        conn.ehlo(&opts.ehlo).await?;
    }
    if opts.pipelining && !conn.pipelining {
        return Err(ConnError::Fatal(
            "server does not advertise PIPELINING (needed by --pipelining)".into(),
        ));
    }
    if opts.bdat && !conn.chunking {
        return Err(ConnError::Fatal(
            "server does not advertise CHUNKING (needed by --bdat)".into(),
        ));
    }
    let Some(login) = &opts.auth else {
        return Ok(Setup::Ready);
    };
    if !conn.auth_plain {
        return Err(ConnError::Fatal(
            "server does not advertise AUTH PLAIN (needed by --auth-user)".into(),
        ));
    }
    let user = auth_user(&login.user, NEXT_AUTH.fetch_add(1, Ordering::Relaxed));
    let sent = Instant::now();
    let reply = conn.auth_plain(&user, &login.password).await?;
    st.auth_latencies.push(sent.elapsed());
    *st.auth_replies.entry(reply.code).or_default() += 1;
    if reply.code == 235 {
        return Ok(Setup::Ready);
    }
    st.failures.record(format!("AUTH: {reply}"));
    Ok(Setup::AuthRefused {
        closing: reply.code == 421,
    })
}

/// One session: sends messages `first_seq .. first_seq + count` over one or
/// more successive connections.
pub(crate) async fn session(shared: Arc<Shared>, first_seq: u64, count: u64) -> SessionStats {
    let opts = &shared.opts;
    let deadline = shared.deadline;
    let mut st = SessionStats::default();
    let mut done = 0u64; // messages accepted or failed
    let mut consecutive_failures = 0u32;
    let mut backoff = FIRST_BACKOFF;
    let mut bufs = Buffers::default();

    'connections: while done < count {
        if Instant::now() >= deadline {
            st.timed_out = true;
            break;
        }
        // Connect and greet. A connection that fails here costs the next
        // message, so the number of attempts is bounded by `count`.
        let connecting = Instant::now();
        st.first_connect = min_opt(st.first_connect, Some(connecting));
        let mut conn = match Conn::connect(opts.server, shared.source(), deadline).await {
            Ok(conn) => {
                st.connections += 1;
                conn
            }
            Err(e) => {
                st.connect_failures += 1;
                match connection_failed(&mut st, e, &mut done, count, &mut consecutive_failures) {
                    Next::Stop => break 'connections,
                    Next::Retry => {
                        pause(&mut backoff, deadline).await;
                        continue 'connections;
                    }
                }
            }
        };
        let setup = set_up(&mut conn, &shared, &mut st).await;
        st.note_reply(&conn);
        match setup {
            Ok(Setup::Ready) if opts.setup_only => {
                // The session's whole point was its set-up: it counts as
                // one "message" taken, and ends.
                st.setup_latencies.push(connecting.elapsed());
                st.accepted += 1;
                done += 1;
                consecutive_failures = 0;
                backoff = FIRST_BACKOFF;
                if !quit(&mut conn, &mut st).await {
                    break 'connections;
                }
                continue 'connections;
            }
            Ok(Setup::Ready) => st.setup_latencies.push(connecting.elapsed()),
            Ok(Setup::AuthRefused { closing }) => {
                // An answer, not a broken connection: the message in hand
                // fails, the next one gets a new connection at once.
                st.failed += 1;
                done += 1;
                if !closing && conn.quit().await.is_ok() {
                    st.note_reply(&conn);
                }
                continue 'connections;
            }
            Err(e) => {
                st.connect_failures += 1;
                match connection_failed(&mut st, e, &mut done, count, &mut consecutive_failures) {
                    Next::Stop => break 'connections,
                    Next::Retry => {
                        pause(&mut backoff, deadline).await;
                        continue 'connections;
                    }
                }
            }
        }

        // Messages on this connection.
        let left = count - done;
        let batch = match opts.messages_per_connection() {
            0 => left,
            k => k.min(left),
        };
        for _ in 0..batch {
            if Instant::now() >= deadline {
                st.timed_out = true;
                break 'connections;
            }
            let result =
                transaction(&mut conn, &shared, first_seq + done, &mut bufs, &mut st).await;
            st.note_reply(&conn);
            match result {
                Ok(accepted) => {
                    done += 1;
                    if accepted {
                        st.accepted += 1;
                    } else {
                        st.failed += 1;
                    }
                    consecutive_failures = 0;
                    backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    match connection_failed(&mut st, e, &mut done, count, &mut consecutive_failures)
                    {
                        Next::Stop => break 'connections,
                        Next::Retry => {
                            pause(&mut backoff, deadline).await;
                            continue 'connections;
                        }
                    }
                }
            }
        }

        if !quit(&mut conn, &mut st).await {
            break 'connections;
        }
    }
    st.unsent = count - done;
    st
}

enum Next {
    Retry,
    Stop,
}

/// A connection failed: the message in hand fails (bounding the attempts),
/// and the session gives up after too many failures in a row, or at once
/// on a fatal error. On timeout the message in hand stays unsent.
fn connection_failed(
    st: &mut SessionStats,
    e: ConnError,
    done: &mut u64,
    count: u64,
    consecutive: &mut u32,
) -> Next {
    let text = match e {
        ConnError::Timeout => {
            st.timed_out = true;
            return Next::Stop;
        }
        ConnError::Fatal(text) => {
            let left = count - *done;
            st.failures.record(format!("{text}; session gave up"));
            st.failed += left;
            *done = count;
            return Next::Stop;
        }
        ConnError::Broken(text) => text,
    };
    st.failures.record(text);
    st.failed += 1;
    *done += 1;
    *consecutive += 1;
    if *done < count && *consecutive >= MAX_CONSECUTIVE_CONN_FAILURES {
        let left = count - *done;
        st.failures.record(format!(
            "session gave up after {MAX_CONSECUTIVE_CONN_FAILURES} connection failures in a row"
        ));
        st.failed += left;
        *done = count;
    }
    if *done < count {
        Next::Retry
    } else {
        Next::Stop
    }
}

/// Ends a session with QUIT; anything but 221 is a failure. False when
/// the run's deadline passed (the run ends).
async fn quit(conn: &mut Conn, st: &mut SessionStats) -> bool {
    match conn.quit().await {
        Ok(reply) if reply.code == 221 => {}
        Ok(reply) => st.failures.record(format!("QUIT: {reply}")),
        Err(ConnError::Timeout) => {
            st.timed_out = true;
            return false;
        }
        Err(ConnError::Broken(text) | ConnError::Fatal(text)) => {
            st.failures.record(format!("QUIT: {text}"))
        }
    }
    st.note_reply(conn);
    true
}

async fn pause(backoff: &mut Duration, deadline: Instant) {
    let until = (Instant::now() + *backoff).min(deadline);
    sleep_until(until).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

#[derive(Default)]
struct Buffers {
    message: Vec<u8>,
    out: Vec<u8>,
}

/// Checks a reply: `Ok(true)` if it is the expected one, `Ok(false)` (and
/// the failure recorded) if not, `Err` if the server is closing (421).
fn expect(st: &mut SessionStats, what: &str, reply: &Reply, ok: bool) -> Result<bool, ConnError> {
    if ok {
        return Ok(true);
    }
    let text = format!("{what}: {reply}");
    if reply.code == 421 {
        return Err(ConnError::Broken(text));
    }
    st.failures.record(text);
    Ok(false)
}

/// Ends a failed transaction with RSET; a refused RSET breaks the
/// connection.
async fn rset(conn: &mut Conn) -> Result<(), ConnError> {
    let reply = conn.command(b"RSET\r\n").await?;
    if reply.is_positive() {
        Ok(())
    } else {
        Err(ConnError::Broken(format!("RSET: {reply}")))
    }
}

/// Sends one message. `Ok(true)` if every reply was the expected success,
/// `Ok(false)` if the server refused something (recorded in `st`) but the
/// connection is still usable, `Err` if the connection is not.
async fn transaction(
    conn: &mut Conn,
    shared: &Shared,
    seq: u64,
    bufs: &mut Buffers,
    st: &mut SessionStats,
) -> Result<bool, ConnError> {
    let opts = &shared.opts;
    shared.spec.build(&mut bufs.message, seq);
    let out = &mut bufs.out;
    out.clear();
    let bdat_command = format!("BDAT {} LAST\r\n", bufs.message.len());

    if opts.pipelining {
        // MAIL, RCPTs and DATA (or BDAT with its chunk) in one write.
        out.extend_from_slice(shared.mail_command.as_bytes());
        for rcpt in &shared.rcpt_commands {
            out.extend_from_slice(rcpt.as_bytes());
        }
        if opts.bdat {
            out.extend_from_slice(bdat_command.as_bytes());
            out.extend_from_slice(&bufs.message);
        } else {
            out.extend_from_slice(b"DATA\r\n");
        }
        conn.send(out).await?;
        let written = Instant::now();
        let reply = conn.read_reply().await?;
        let mut ok = expect(st, "MAIL", &reply, reply.is_positive())?;
        for _ in &shared.rcpt_commands {
            let reply = conn.read_reply().await?;
            ok &= expect(st, "RCPT", &reply, reply.is_positive())?;
        }
        let reply = conn.read_reply().await?;
        if opts.bdat {
            st.latencies.push(written.elapsed());
            ok &= expect(st, "BDAT", &reply, reply.is_positive())?;
            if !ok {
                rset(conn).await?;
            }
            return Ok(ok);
        }
        if !expect(st, "DATA", &reply, reply.code == 354)? {
            rset(conn).await?;
            return Ok(false);
        }
        // The server took DATA: send the message even if a RCPT failed.
        out.clear();
        dot_stuff_into(out, &bufs.message);
        conn.send(out).await?;
        let written = Instant::now();
        let reply = conn.read_reply().await?;
        st.latencies.push(written.elapsed());
        ok &= expect(st, "end of DATA", &reply, reply.is_positive())?;
        return Ok(ok);
    }

    // One command at a time.
    let reply = conn.command(shared.mail_command.as_bytes()).await?;
    if !expect(st, "MAIL", &reply, reply.is_positive())? {
        rset(conn).await?;
        return Ok(false);
    }
    let mut ok = true;
    for rcpt in &shared.rcpt_commands {
        let reply = conn.command(rcpt.as_bytes()).await?;
        ok &= expect(st, "RCPT", &reply, reply.is_positive())?;
    }
    if !ok {
        rset(conn).await?;
        return Ok(false);
    }
    if opts.bdat {
        out.extend_from_slice(bdat_command.as_bytes());
        out.extend_from_slice(&bufs.message);
        conn.send(out).await?;
        let written = Instant::now();
        let reply = conn.read_reply().await?;
        st.latencies.push(written.elapsed());
        if !expect(st, "BDAT", &reply, reply.is_positive())? {
            rset(conn).await?;
            return Ok(false);
        }
        return Ok(true);
    }
    let reply = conn.command(b"DATA\r\n").await?;
    if !expect(st, "DATA", &reply, reply.code == 354)? {
        rset(conn).await?;
        return Ok(false);
    }
    dot_stuff_into(out, &bufs.message);
    conn.send(out).await?;
    let written = Instant::now();
    let reply = conn.read_reply().await?;
    st.latencies.push(written.elapsed());
    expect(st, "end of DATA", &reply, reply.is_positive())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_in_the_user_name_makes_a_new_name_per_attempt() {
        assert_eq!(auth_user("guess{n}@x.test", 7), "guess7@x.test");
        assert_eq!(auth_user("a{n}b{n}", 12), "a12b12");
        assert!(matches!(
            auth_user("alice@x.test", 7),
            Cow::Borrowed("alice@x.test")
        ));
    }
}
