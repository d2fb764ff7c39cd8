//! The load loop: sessions, transactions, bookkeeping.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{sleep_until, Instant};

use crate::message::{dot_stuff_into, rcpt_address, rfc5322_date, MessageSpec};
use crate::report::{FailureLog, Report};
use crate::smtp::{Conn, ConnError, Reply};

/// A session gives up after this many connection failures in a row.
pub const MAX_CONSECUTIVE_CONN_FAILURES: u32 = 5;
/// First pause before reconnecting after a connection failure; doubles up
/// to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// What to send, where, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The server; must be a loopback address.
    pub server: SocketAddr,
    /// Concurrent connections.
    pub sessions: u32,
    /// Total messages across all sessions.
    pub messages: u64,
    /// Message size in bytes, headers included.
    pub size: usize,
    /// Recipients per message.
    pub rcpts: u32,
    /// Messages per connection before QUIT and reconnect; 0 = no limit.
    pub per_connection: u64,
    /// Pipeline MAIL, RCPTs and DATA/BDAT (RFC 2920).
    pub pipelining: bool,
    /// Use BDAT <n> LAST (RFC 3030) instead of DATA.
    pub bdat: bool,
    /// Envelope sender and From: address.
    pub from: String,
    /// Recipient domain.
    pub to_domain: String,
    /// EHLO name.
    pub ehlo: String,
    /// Overall time limit.
    pub timeout: Duration,
}

impl Default for Options {
    /// The command line's defaults.
    fn default() -> Self {
        Options {
            server: SocketAddr::from(([127, 0, 0, 1], 2525)),
            sessions: 10,
            messages: 1000,
            size: 4096,
            rcpts: 1,
            per_connection: 0,
            pipelining: false,
            bdat: false,
            from: "sender@example.test".into(),
            to_domain: "example.test".into(),
            ehlo: "loadgen.test".into(),
            timeout: Duration::from_secs(300),
        }
    }
}

impl Options {
    /// Checks the options a caller could have got wrong.
    pub fn validate(&self) -> Result<(), String> {
        check_loopback(&self.server)?;
        if self.sessions == 0 {
            return Err("--sessions must be at least 1".into());
        }
        if self.rcpts == 0 {
            return Err("--rcpts must be at least 1".into());
        }
        if self.size == 0 {
            return Err("--size must be at least 1 byte".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        crate::cli::parse_mailbox(&self.from)?;
        crate::cli::parse_domain(&self.to_domain)?;
        crate::cli::parse_domain(&self.ehlo)?;
        Ok(())
    }

    /// The first line of the text output, e.g. `mta-loadgen: 1000 messages
    /// of 4096 bytes, 1 rcpt, 10 sessions, pipelining off -> 127.0.0.1:2525`.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "mta-loadgen: {} messages of {} bytes, {} rcpt{}, {} session{}, pipelining {}",
            self.messages,
            self.size,
            self.rcpts,
            if self.rcpts == 1 { "" } else { "s" },
            self.sessions,
            if self.sessions == 1 { "" } else { "s" },
            if self.pipelining { "on" } else { "off" },
        );
        if self.bdat {
            s.push_str(", BDAT");
        }
        if self.per_connection > 0 {
            s.push_str(&format!(", {} per connection", self.per_connection));
        }
        s.push_str(&format!(" -> {}", self.server));
        s
    }

    /// How many messages session `i` sends: an even split, the first
    /// sessions taking one more when it does not divide.
    pub fn share(&self, i: u32) -> u64 {
        let n = u64::from(self.sessions);
        self.messages / n + u64::from(u64::from(i) < self.messages % n)
    }
}

/// Refuses anything but 127.0.0.0/8 and ::1.
pub fn check_loopback(addr: &SocketAddr) -> Result<(), String> {
    let ok = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "refusing to connect to {}: mta-loadgen only connects to loopback addresses \
             (127.0.0.0/8 or ::1)",
            addr.ip()
        ))
    }
}

/// Runs the load described by `opts` and reports. Fails only if the
/// options are invalid (e.g. a non-loopback server); everything that goes
/// wrong on the wire is counted in the report.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    opts.validate().map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let now = SystemTime::now();
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        spec: MessageSpec {
            from: opts.from.clone(),
            to_domain: opts.to_domain.clone(),
            rcpts: opts.rcpts,
            size: opts.size,
            date: rfc5322_date(now),
            id_domain: opts.ehlo.clone(),
            id_tag: format!("{}.{nanos}", std::process::id()),
        },
        rcpt_commands: (1..=opts.rcpts)
            .map(|k| format!("RCPT TO:<{}>\r\n", rcpt_address(&opts.to_domain, k)))
            .collect(),
        mail_command: format!("MAIL FROM:<{}>\r\n", opts.from),
        deadline,
    });

    let mut tasks = Vec::new();
    let mut first_seq = 1;
    for i in 0..opts.sessions {
        let count = opts.share(i);
        if count == 0 {
            continue;
        }
        tasks.push((
            count,
            tokio::spawn(session(shared.clone(), first_seq, count)),
        ));
        first_seq += count;
    }

    let mut total = SessionStats::default();
    for (count, task) in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => {
                // A session panicked: its counts are lost, so count all of
                // its messages as failed.
                total.failed += count;
                total.failures.record(format!("session task failed: {e}"));
            }
        }
    }
    Ok(total.into_report(opts, started))
}

struct Shared {
    opts: Options,
    spec: MessageSpec,
    mail_command: String,
    rcpt_commands: Vec<String>,
    deadline: Instant,
}

/// What one session counted.
#[derive(Default)]
struct SessionStats {
    accepted: u64,
    failed: u64,
    unsent: u64,
    connections: u64,
    connect_failures: u64,
    latencies: Vec<Duration>,
    failures: FailureLog,
    first_connect: Option<Instant>,
    last_reply: Option<Instant>,
    timed_out: bool,
}

impl SessionStats {
    fn merge(&mut self, o: SessionStats) {
        self.accepted += o.accepted;
        self.failed += o.failed;
        self.unsent += o.unsent;
        self.connections += o.connections;
        self.connect_failures += o.connect_failures;
        self.latencies.extend(o.latencies);
        self.failures.merge(o.failures);
        self.first_connect = min_opt(self.first_connect, o.first_connect);
        self.last_reply = self.last_reply.max(o.last_reply);
        self.timed_out |= o.timed_out;
    }

    fn note_reply(&mut self, conn: &Conn) {
        self.last_reply = self.last_reply.max(conn.last_reply);
    }

    fn into_report(mut self, opts: &Options, started: Instant) -> Report {
        self.latencies.sort_unstable();
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
        }
    }
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One session: sends messages `first_seq .. first_seq + count` over one or
/// more successive connections.
async fn session(shared: Arc<Shared>, first_seq: u64, count: u64) -> SessionStats {
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
        st.first_connect = min_opt(st.first_connect, Some(Instant::now()));
        let mut conn = match Conn::connect(opts.server, deadline).await {
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
        let handshake = match conn.handshake(&opts.ehlo).await {
            Ok(()) if opts.pipelining && !conn.pipelining => Err(ConnError::Fatal(
                "server does not advertise PIPELINING (needed by --pipelining)".into(),
            )),
            Ok(()) if opts.bdat && !conn.chunking => Err(ConnError::Fatal(
                "server does not advertise CHUNKING (needed by --bdat)".into(),
            )),
            other => other,
        };
        st.note_reply(&conn);
        if let Err(e) = handshake {
            st.connect_failures += 1;
            match connection_failed(&mut st, e, &mut done, count, &mut consecutive_failures) {
                Next::Stop => break 'connections,
                Next::Retry => {
                    pause(&mut backoff, deadline).await;
                    continue 'connections;
                }
            }
        }

        // Messages on this connection.
        let left = count - done;
        let batch = if opts.per_connection == 0 {
            left
        } else {
            opts.per_connection.min(left)
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

        match conn.quit().await {
            Ok(reply) if reply.code == 221 => {}
            Ok(reply) => st.failures.record(format!("QUIT: {reply}")),
            Err(ConnError::Timeout) => {
                st.timed_out = true;
                break 'connections;
            }
            Err(ConnError::Broken(text) | ConnError::Fatal(text)) => {
                st.failures.record(format!("QUIT: {text}"))
            }
        }
        st.note_reply(&conn);
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
    fn shares_add_up() {
        for (sessions, messages) in [(10, 1000), (3, 10), (7, 2), (1, 0), (4, 4)] {
            let o = Options {
                sessions,
                messages,
                ..Options::default()
            };
            let shares: Vec<u64> = (0..sessions).map(|i| o.share(i)).collect();
            assert_eq!(shares.iter().sum::<u64>(), messages);
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn loopback_only() {
        for ok in ["127.0.0.1:25", "127.255.0.9:25", "[::1]:25"] {
            assert!(check_loopback(&ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "10.1.1.1:25",
            "0.0.0.0:25",
            "[::]:25",
            "[::ffff:127.0.0.1]:25",
            "8.8.8.8:25",
        ] {
            let err = check_loopback(&bad.parse().unwrap()).unwrap_err();
            assert!(err.contains("loopback"), "{bad}");
        }
    }

    #[tokio::test]
    async fn run_refuses_non_loopback() {
        let o = Options {
            server: "192.0.2.1:25".parse().unwrap(),
            ..Options::default()
        };
        let err = run(&o).await.unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn describe_line() {
        assert_eq!(
            Options::default().describe(),
            "mta-loadgen: 1000 messages of 4096 bytes, 1 rcpt, 10 sessions, pipelining off \
             -> 127.0.0.1:2525"
        );
        let o = Options {
            rcpts: 2,
            pipelining: true,
            bdat: true,
            per_connection: 5,
            ..Options::default()
        };
        assert_eq!(
            o.describe(),
            "mta-loadgen: 1000 messages of 4096 bytes, 2 rcpts, 10 sessions, pipelining on, \
             BDAT, 5 per connection -> 127.0.0.1:2525"
        );
    }
}
