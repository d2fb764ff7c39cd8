//! [`Client`]: delivers one message to one destination, trying its hosts in
//! order, reusing idle connections and keeping within the per-destination
//! connection limit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mta_envelope::Envelope;

use crate::limits::Limits;
use crate::pool::{Conn, Pool};
use crate::session::{remote_name, Session, SessionError, TlsStep};
use crate::tls::TlsConfigs;
use crate::{Attempt, ClientConfig, ClientError, Outcome, Target, TlsPolicy};

/// Where one message goes: the hosts to try in order, and the key that
/// groups connections and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Groups connections for reuse and the concurrency limit, e.g.
    /// `mx:example.com` or `relay:smart.test:2525`. Connections are never
    /// reused across keys.
    pub key: String,
    /// The recipient domain, which chooses the TLS policy.
    pub domain: String,
    /// The hosts to try, in order, each with its addresses in order.
    pub targets: Vec<Target>,
}

/// One transaction's worth of a stored message.
#[derive(Clone, Copy, Debug)]
pub struct OutboundMessage<'a> {
    /// The envelope as stored.
    pub envelope: &'a Envelope,
    /// Indexes into `envelope.recipients` to send in this transaction.
    pub recipients: &'a [usize],
    /// The message as stored: CRLF line ends, not dot-stuffed.
    pub content: &'a [u8],
}

/// The outbound SMTP client. Cheap to clone: clones share the connection
/// pool, the per-destination limits and the TLS configurations.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    tls: TlsConfigs,
    pool: Pool,
    limits: Limits,
    /// Connections open, busy or idle.
    open: Arc<AtomicUsize>,
    reaper_started: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("helo_name", &self.inner.config.helo_name)
            .field("connections_open", &self.connections_open())
            .field("connections_idle", &self.connections_idle())
            .finish()
    }
}

impl Client {
    /// Builds the client and its TLS configurations. Fails when `ca_file`
    /// cannot be read or holds no certificate.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let tls = TlsConfigs::new(config.ca_file.as_deref())?;
        Ok(Client {
            inner: Arc::new(Inner {
                pool: Pool::new(config.idle_connection_timeout),
                limits: Limits::new(config.max_per_destination),
                config,
                tls,
                open: Arc::new(AtomicUsize::new(0)),
                reaper_started: AtomicBool::new(false),
            }),
        })
    }

    /// Connections open now, busy or idle.
    pub fn connections_open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Connections waiting in the pool for another message.
    pub fn connections_idle(&self) -> usize {
        self.inner.pool.len()
    }

    /// Closes every idle connection with QUIT, e.g. before shutting down.
    pub async fn close_idle(&self) {
        let closing: Vec<_> = self
            .inner
            .pool
            .drain()
            .into_iter()
            .map(Conn::close)
            .collect();
        for close in closing {
            close.await;
        }
    }

    /// Delivers `msg` to `dest`: one transaction on one connection, taken
    /// from the pool or opened by trying every target address in order.
    /// Never fails as a Rust error: each recipient gets an [`Outcome`].
    pub async fn deliver(&self, dest: &Destination, msg: OutboundMessage<'_>) -> Attempt {
        self.start_reaper();
        let mut attempt = Attempt {
            outcomes: Vec::with_capacity(msg.recipients.len()),
            remote: None,
            tls: None,
            dsn: false,
        };
        let count = msg.envelope.recipients.len();
        let (valid, invalid): (Vec<usize>, Vec<usize>) =
            msg.recipients.iter().partition(|&&i| i < count);
        if valid.is_empty() {
            attempt.outcomes = invalid.iter().map(|&i| (i, out_of_range(i))).collect();
            return attempt;
        }
        let order = msg.recipients;
        let msg = OutboundMessage {
            recipients: &valid,
            ..msg
        };
        let every = |outcome: Outcome| -> Vec<(usize, Outcome)> {
            msg.recipients
                .iter()
                .map(|&i| (i, outcome.clone()))
                .collect()
        };

        let policy = self.inner.config.policy_for(&dest.domain);
        let step = match policy {
            TlsPolicy::None => Some(TlsStep::Skip),
            TlsPolicy::Opportunistic => {
                Some(TlsStep::Opportunistic(self.inner.tls.opportunistic.clone()))
            }
            TlsPolicy::Required => self.inner.tls.verified.clone().map(TlsStep::Required),
        };
        match step {
            None => {
                attempt.outcomes = every(Outcome::deferred(
                    "4.7.5",
                    format!(
                        "TLS is required for {}, but no trust anchors are configured \
                         (ca_file is unset)",
                        dest.domain
                    ),
                ));
            }
            Some(step) => match self.connection(dest, policy, &step).await {
                Err((status, reason)) => {
                    tracing::debug!(key = %dest.key, %status, %reason, "no connection");
                    attempt.outcomes = every(Outcome::deferred(status, reason));
                }
                Ok(mut conn) => {
                    let result = conn.session.send_message(&msg).await;
                    conn.session.messages += 1;
                    attempt.outcomes = result.outcomes;
                    attempt.remote = Some(conn.session.remote.clone());
                    attempt.tls = conn.session.tls.clone();
                    attempt.dsn = conn.session.ext.dsn;
                    self.release(&dest.key, conn, result.reusable);
                }
            },
        }
        if !invalid.is_empty() {
            attempt
                .outcomes
                .extend(invalid.iter().map(|&i| (i, out_of_range(i))));
            // Back to the order asked for.
            let position = |i: usize| order.iter().position(|&j| j == i);
            attempt.outcomes.sort_by_key(|(i, _)| position(*i));
        }
        attempt
    }

    /// A connection for `dest`: an idle one if there is one that still
    /// works, else a new one when a slot is free, waiting for whichever
    /// comes first. Err holds the status and reason of the last failure.
    async fn connection(
        &self,
        dest: &Destination,
        policy: TlsPolicy,
        step: &TlsStep,
    ) -> Result<Conn, (String, String)> {
        let sem = self.inner.limits.semaphore(&dest.key);
        // Made once, so that this delivery keeps its place in the queue for
        // a slot while it also watches for idle connections.
        let acquire = sem.acquire_owned();
        tokio::pin!(acquire);
        loop {
            let returned = self.inner.pool.returned();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.idle_connection(&dest.key, policy).await {
                return Ok(conn);
            }
            tokio::select! {
                permit = &mut acquire => {
                    let Ok(permit) = permit else {
                        // The semaphore is never closed.
                        return Err(("4.3.0".into(), "internal error: connection limit closed".into()));
                    };
                    return self.connect(dest, step).await.map(|session| Conn { session, permit });
                }
                () = &mut returned => continue,
            }
        }
    }

    /// An idle connection for `key` that passes RSET (as Postfix checks a
    /// cached connection before reuse), if any.
    async fn idle_connection(&self, key: &str, policy: TlsPolicy) -> Option<Conn> {
        loop {
            let (found, expired) = self.inner.pool.take(key);
            for conn in expired {
                conn.close_later();
            }
            let mut conn = found?;
            if policy == TlsPolicy::Required && !conn.session.tls_verified {
                // Another domain sharing this key put it there without
                // verified TLS; this domain needs it.
                conn.close_later();
                continue;
            }
            if conn.session.is_stale() {
                tracing::debug!(remote = %conn.session.remote, "idle connection closed by the server");
                continue;
            }
            match conn.session.rset().await {
                Ok(true) => {
                    tracing::debug!(remote = %conn.session.remote, key, "reusing connection");
                    return Some(conn);
                }
                Ok(false) => conn.close_later(),
                Err(e) => {
                    let (_, reason) = e.describe(&conn.session.remote);
                    tracing::debug!(%reason, "idle connection failed RSET");
                }
            }
        }
    }

    /// Opens a session by trying every address of every target in order.
    async fn connect(
        &self,
        dest: &Destination,
        step: &TlsStep,
    ) -> Result<Session, (String, String)> {
        let config = &self.inner.config;
        let mut last: Option<(String, String)> = None;
        for target in &dest.targets {
            for &addr in &target.addrs {
                let mut step = step.clone();
                // At most twice: once more in plaintext when opportunistic
                // TLS failed in the handshake.
                for _ in 0..2 {
                    let result = Session::open(
                        &target.host,
                        addr,
                        &config.helo_name,
                        config.timeouts,
                        &step,
                        self.inner.open.clone(),
                    )
                    .await;
                    let e = match result {
                        Ok(session) => return Ok(session),
                        Err(e) => e,
                    };
                    let (status, reason) = e.describe(&remote_name(&target.host, addr));
                    tracing::debug!(key = %dest.key, %status, %reason, "address failed");
                    last = Some((status, reason));
                    let retry = matches!(
                        e,
                        SessionError::Tls {
                            retry_plaintext: true,
                            ..
                        }
                    ) && matches!(step, TlsStep::Opportunistic(_));
                    if !retry {
                        break;
                    }
                    // RFC 7435: opportunistic security must not be worse
                    // than no security; try again in the clear.
                    step = TlsStep::Skip;
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            (
                "4.4.4".to_owned(),
                format!("no address to try for {}", dest.key),
            )
        }))
    }

    /// After a transaction: back to the pool, or closed.
    fn release(&self, key: &str, conn: Conn, reusable: bool) {
        let config = &self.inner.config;
        if !reusable {
            // Broken or closing: nothing more to say on it.
            return;
        }
        if conn.session.messages >= config.max_messages_per_connection
            || config.idle_connection_timeout.is_zero()
        {
            conn.close_later();
            return;
        }
        self.inner.pool.put(key, conn);
    }

    /// Starts, once, the task that closes connections idle for too long
    /// and forgets unused destination keys. It stops when the last clone of
    /// the client is dropped.
    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let period = (self.inner.config.idle_connection_timeout / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                for conn in inner.pool.expired() {
                    tracing::debug!(remote = %conn.session.remote, "closing idle connection");
                    conn.close_later();
                }
                inner.limits.prune();
            }
        });
    }
}

fn out_of_range(i: usize) -> Outcome {
    Outcome::deferred(
        "4.3.0",
        format!("internal error: recipient index {i} is not in the envelope"),
    )
}
