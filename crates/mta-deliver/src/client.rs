//! [`Client`]: delivers one message to one destination, trying its hosts in
//! order, reusing idle connections and keeping within the throttles
//! (connections at once, messages per hour, back-off).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mta_envelope::Envelope;

use crate::counters::{TlsCounters, TlsCounts};
use crate::limits::Slot;
use crate::pool::{Conn, Pool};
use crate::requirement::{
    requirement, HostPolicy, HostRule, OverrideWarnings, Published, TlsRequirement,
};
use crate::session::{remote_name, Session, SessionError, TlsStep};
use crate::throttle::{normalize, Reservation};
use crate::tls::TlsConfigs;
use crate::{
    Attempt, ClientConfig, ClientError, Outcome, ServerReply, ServerSignal, Target, Throttles,
    TlsPolicy, Verification,
};

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
    /// What the domain publishes about TLS (an MTA-STS policy, DANE
    /// TLSA records), for delivery to its MX hosts; nothing for a fixed
    /// route.
    pub published: Published,
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
/// pool, the [`Throttles`] and the TLS configurations.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The same outcome for every recipient of `msg`.
fn every_recipient(msg: &OutboundMessage<'_>, outcome: Outcome) -> Vec<(usize, Outcome)> {
    msg.recipients
        .iter()
        .map(|&i| (i, outcome.clone()))
        .collect()
}

/// How a connection taken from the idle pool is checked before reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// RSET in the same write as the next MAIL, when the server pipelines.
    Pipelined,
    /// RSET and its reply before anything else: after a pipelined check
    /// failed.
    Separate,
}

/// Why no connection: the status and reason every recipient gets, the
/// server reply that refused the session (a 5xx or 4xx greeting or EHLO)
/// if that was the last failure, and what the servers said on the way.
struct NoConnection {
    status: String,
    reason: String,
    reply: Option<ServerReply>,
    signal: ServerSignal,
}

impl NoConnection {
    fn local(status: &str, reason: String) -> NoConnection {
        NoConnection {
            status: status.to_owned(),
            reason,
            reply: None,
            signal: ServerSignal::Silent,
        }
    }

    /// Every recipient's outcome: deferred, another server or a later
    /// attempt may do better.
    fn outcome(self) -> Outcome {
        Outcome::Deferred {
            status: self.status,
            reason: self.reason,
            reply: self.reply,
        }
    }
}

struct Inner {
    config: ClientConfig,
    tls: TlsConfigs,
    pool: Pool,
    throttles: Throttles,
    /// Connections open, busy or idle.
    open: Arc<AtomicUsize>,
    reaper_started: AtomicBool,
    counters: TlsCounters,
    warned: OverrideWarnings,
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
    /// Builds the client, its TLS configurations and its [`Throttles`].
    /// Fails when `ca_file` cannot be read or holds no certificate, or a
    /// throttle pattern is not one.
    pub fn new(config: ClientConfig) -> Result<Client, ClientError> {
        let throttles = Throttles::new(&config.delivery)?;
        Client::build(config, throttles)
    }

    /// Builds a client that shares `throttles` with the clients before it
    /// (a reload): their rules become those of `config`, and every
    /// connection count, hourly count and back-off carries on, so that two
    /// generations together stay within every limit. On error `throttles`
    /// is left as it was.
    pub fn with_throttles(
        config: ClientConfig,
        throttles: Throttles,
    ) -> Result<Client, ClientError> {
        let client = Client::build(config, throttles)?;
        // Last, as it changes what the other generations see; it changes
        // nothing when it fails.
        client
            .inner
            .throttles
            .set_rules(&client.inner.config.delivery)?;
        Ok(client)
    }

    fn build(config: ClientConfig, throttles: Throttles) -> Result<Client, ClientError> {
        let tls = TlsConfigs::new(
            config.delivery.ca_file.as_deref(),
            config.delivery.system_roots,
        )?;
        Ok(Client {
            inner: Arc::new(Inner {
                pool: Pool::new(config.delivery.idle_connection_timeout),
                throttles,
                config,
                tls,
                open: Arc::new(AtomicUsize::new(0)),
                reaper_started: AtomicBool::new(false),
                counters: TlsCounters::default(),
                warned: OverrideWarnings::default(),
            }),
        })
    }

    /// The throttles: to hand to the next client generation, to save and
    /// restore back-offs, and for the status.
    pub fn throttles(&self) -> &Throttles {
        &self.inner.throttles
    }

    /// Deliveries by TLS version and verification, and deliveries a
    /// published policy held back, since this client was built.
    pub fn tls_counts(&self) -> TlsCounts {
        self.inner.counters.counts()
    }

    /// The TLS requirement for `domain`, given what it publishes:
    /// explicit `tls_policy`, then the published policy, then `[delivery]
    /// tls`.
    pub fn requirement(&self, domain: &str, published: &Published) -> TlsRequirement {
        requirement(&self.inner.config, domain, published, &self.inner.warned)
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
            server: ServerSignal::Silent,
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

        let (outcomes, server) = self.deliver_valid(dest, &msg, &mut attempt).await;
        attempt.outcomes = outcomes;
        attempt.server = server;
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

    /// One transaction for the valid recipients of `msg`, within the
    /// throttles: the outcomes and how the servers ended it. Fills the
    /// remote, TLS and DSN fields of `attempt` when a server got that far.
    async fn deliver_valid(
        &self,
        dest: &Destination,
        msg: &OutboundMessage<'_>,
        attempt: &mut Attempt,
    ) -> (Vec<(usize, Outcome)>, ServerSignal) {
        let every = |outcome: Outcome| every_recipient(msg, outcome);
        let throttles = &self.inner.throttles;
        let mut planned = None;
        // An idle connection is checked with an RSET pipelined in front of
        // MAIL; if that fails, the message goes on another connection,
        // idle ones now checked by an RSET of its own.
        let mut check = Check::Pipelined;
        let (outcomes, signal) = loop {
            let now = SystemTime::now();
            if let Some(reason) = throttles.backed_off(&dest.key, now) {
                tracing::debug!(key = %dest.key, %reason, "not tried");
                return (
                    every(Outcome::deferred("4.4.5", reason)),
                    ServerSignal::Silent,
                );
            }
            let mut reservation = match throttles.reserve_domain(&dest.domain, now) {
                Ok(reservation) => reservation,
                Err(reason) => {
                    tracing::debug!(key = %dest.key, %reason, "not tried");
                    return (
                        every(Outcome::deferred("4.4.5", reason)),
                        ServerSignal::Silent,
                    );
                }
            };
            let (requirement, plan) = match &mut planned {
                Some(planned) => planned,
                None => {
                    let requirement = self.requirement(&dest.domain, &dest.published);
                    match self.plan(dest, &requirement) {
                        Ok(plan) => planned.insert((requirement, plan)),
                        Err(reason) => {
                            tracing::warn!(key = %dest.key, %reason, "delivery deferred by policy");
                            return (
                                every(Outcome::deferred("4.7.5", reason)),
                                ServerSignal::Silent,
                            );
                        }
                    }
                }
            };
            let requirement = &*requirement;
            let conn = self
                .connection(dest, plan, requirement, &mut reservation, check)
                .await;
            match self
                .transaction(dest, msg, attempt, requirement, reservation, conn)
                .await
            {
                Some(done) => break done,
                None => check = Check::Separate,
            }
        };
        throttles.record(&dest.key, &signal, SystemTime::now());
        (outcomes, signal)
    }

    /// The transaction on `conn` (or what its failure to open says), as
    /// `deliver_valid` reports it; `None` when `conn` came from the idle
    /// pool and failed its check, to go again on another connection.
    async fn transaction(
        &self,
        dest: &Destination,
        msg: &OutboundMessage<'_>,
        attempt: &mut Attempt,
        requirement: &TlsRequirement,
        reservation: Reservation,
        conn: Result<Conn, NoConnection>,
    ) -> Option<(Vec<(usize, Outcome)>, ServerSignal)> {
        let every = |outcome: Outcome| every_recipient(msg, outcome);
        let done = match conn {
            Err(mut failure) => {
                let policy = match &requirement {
                    TlsRequirement::Enforced(policy) => Some((policy.name(), Verification::MtaSts)),
                    TlsRequirement::Dane { .. } => Some((
                        format!("DANE policy of {}", dest.domain),
                        Verification::Dane,
                    )),
                    _ => None,
                };
                if let Some((name, source)) = policy {
                    if failure.status.starts_with("4.7.") {
                        if source == Verification::Dane {
                            self.inner.counters.dane_failure();
                        } else {
                            self.inner.counters.policy_failure(false);
                        }
                        failure.reason = format!("{name}: {}", failure.reason);
                        tracing::warn!(key = %dest.key, reason = %failure.reason, "delivery deferred by policy");
                    }
                }
                tracing::debug!(key = %dest.key, status = %failure.status, reason = %failure.reason, "no connection");
                // No transaction: the messages counted are taken back.
                drop(reservation);
                let signal = failure.signal.clone();
                (every(failure.outcome()), signal)
            }
            Ok(mut conn) => {
                reservation.commit();
                if let HostRule::Other(TlsRequirement::Testing { policy, .. }) =
                    requirement.for_host(&conn.host)
                {
                    self.audit(policy, &conn);
                }
                let result = conn
                    .session
                    .send_message(msg, self.inner.config.delivery.eightbit_without_8bitmime)
                    .await;
                if result.stale {
                    // Closed by dropping it: the server said nothing that
                    // counts, and nothing is waiting for an answer.
                    return None;
                }
                conn.session.messages += 1;
                attempt.remote = Some(conn.session.remote.clone());
                attempt.tls = conn.session.tls.clone();
                attempt.dsn = conn.session.ext.dsn;
                let delivered = result
                    .outcomes
                    .iter()
                    .filter(|(_, o)| o.is_delivered())
                    .count() as u64;
                let tls = conn.session.tls.as_ref();
                self.inner.counters.delivered(
                    tls.map_or(Verification::None, |t| t.verified),
                    tls.map(|t| t.version.as_str()),
                    delivered,
                );
                self.release(&dest.key, conn, result.reusable);
                (result.outcomes, result.signal)
            }
        };
        Some(done)
    }

    /// The hosts of `dest` that may be tried, each with the STARTTLS step
    /// it needs; Err is the reason to defer (4.7.5) when no host may be,
    /// counted as a policy failure.
    fn plan(
        &self,
        dest: &Destination,
        requirement: &TlsRequirement,
    ) -> Result<Vec<(Target, TlsStep)>, String> {
        let counters = &self.inner.counters;
        let TlsRequirement::Dane { others, .. } = requirement else {
            let step = self.tls_step(&dest.domain, requirement).inspect_err(|_| {
                if matches!(requirement, TlsRequirement::Enforced(_)) {
                    counters.policy_failure(false);
                }
            })?;
            if let TlsRequirement::Enforced(policy) = requirement {
                let allowed: Vec<(Target, TlsStep)> = dest
                    .targets
                    .iter()
                    .filter(|t| policy.allows(&t.host))
                    .map(|t| (t.clone(), step.clone()))
                    .collect();
                if allowed.is_empty() {
                    counters.policy_failure(false);
                    return Err(no_host_matches(policy, &dest.targets));
                }
                return Ok(allowed);
            }
            return Ok(dest
                .targets
                .iter()
                .map(|t| (t.clone(), step.clone()))
                .collect());
        };
        let other_step = self.tls_step(&dest.domain, others);
        let mut plan = Vec::new();
        let mut refused = Vec::new();
        for target in &dest.targets {
            let host = target.host.trim_end_matches('.');
            let step = match requirement.for_host(host) {
                HostRule::Dane { owner, records } => {
                    match self.inner.tls.dane(owner, records.to_vec()) {
                        Ok(config) => TlsStep::Required(config, Verification::Dane),
                        Err(e) => {
                            refused.push(format!("{host}: {e}"));
                            continue;
                        }
                    }
                }
                // RFC 7672 section 2.2: TLS, without authentication.
                HostRule::Encrypt => {
                    TlsStep::Required(self.inner.tls.opportunistic.clone(), Verification::None)
                }
                HostRule::Failed(reason) => {
                    refused.push(format!("{host}: {reason}"));
                    continue;
                }
                HostRule::Other(other) => {
                    if let TlsRequirement::Enforced(policy) = other {
                        if !policy.allows(host) {
                            refused.push(format!(
                                "{host}: no TLSA records, and not an MX host of the {}",
                                policy.name()
                            ));
                            continue;
                        }
                    }
                    match &other_step {
                        Ok(step) => step.clone(),
                        Err(reason) => {
                            refused.push(format!("{host}: {reason}"));
                            continue;
                        }
                    }
                }
            };
            plan.push((target.clone(), step));
        }
        if plan.is_empty() {
            counters.dane_failure();
            return Err(format!(
                "DANE policy of {}: no MX host may be tried ({})",
                dest.domain,
                refused.join("; ")
            ));
        }
        for reason in &refused {
            tracing::warn!(key = %dest.key, %reason, "MX host not tried (DANE)");
        }
        Ok(plan)
    }

    /// The STARTTLS step `requirement` asks for; Err is the reason to
    /// defer when it cannot be met (no trust anchor).
    fn tls_step(&self, domain: &str, requirement: &TlsRequirement) -> Result<TlsStep, String> {
        let tls = &self.inner.tls;
        let verified = |label: Verification, who: String| match tls.verified.clone() {
            Some(config) => Ok(TlsStep::Required(config, label)),
            None => Err(format!(
                "{who}, but there is no trust anchor \
                 (no system trust store, and ca_file is unset)"
            )),
        };
        match requirement {
            TlsRequirement::Configured(TlsPolicy::None) => Ok(TlsStep::Skip),
            TlsRequirement::Configured(TlsPolicy::Opportunistic) => {
                Ok(TlsStep::Opportunistic(tls.opportunistic.clone()))
            }
            TlsRequirement::Configured(TlsPolicy::Required) => {
                verified(Verification::Ca, format!("TLS is required for {domain}"))
            }
            TlsRequirement::Enforced(policy) => verified(
                policy.source,
                format!(
                    "{}: TLS with a verified certificate is required",
                    policy.name()
                ),
            ),
            // Only the hosts without TLSA records get here (`plan`).
            TlsRequirement::Dane { others, .. } => self.tls_step(domain, others),
            TlsRequirement::Testing { configured, .. } => match (configured, &tls.verifier) {
                (TlsPolicy::Opportunistic, Some(verifier)) => Ok(TlsStep::Audited(
                    tls.opportunistic.clone(),
                    verifier.clone(),
                )),
                (configured, _) => self.tls_step(domain, &TlsRequirement::Configured(*configured)),
            },
        }
    }

    /// Logs what a policy in testing mode would have refused of `conn`.
    fn audit(&self, policy: &HostPolicy, conn: &Conn) {
        let session = &conn.session;
        let mut problems = Vec::new();
        if !policy.allows(&conn.host) {
            problems.push(format!("MX host {} does not match the policy", conn.host));
        }
        if session.tls.is_none() {
            problems.push(format!("no TLS with {}", session.remote));
        }
        problems.extend(session.audit.clone());
        if problems.is_empty() {
            return;
        }
        self.inner.counters.policy_failure(true);
        tracing::warn!(
            remote = %session.remote,
            "{} (testing mode) would have deferred this delivery: {}; delivered anyway",
            policy.name(),
            problems.join("; ")
        );
    }

    /// A connection for `dest` to one of `targets`: an idle one if there
    /// is one that still works and meets `requirement`, else a new one
    /// when a slot is free, waiting for whichever comes first. The hourly
    /// count of an `mx:` host goes in `reservation`.
    async fn connection(
        &self,
        dest: &Destination,
        plan: &[(Target, TlsStep)],
        requirement: &TlsRequirement,
        reservation: &mut Reservation,
        check: Check,
    ) -> Result<Conn, NoConnection> {
        let throttles = &self.inner.throttles;
        let gate = throttles.key_gate(&dest.key);
        // Made once, so that this delivery keeps waiting for a slot while
        // it also watches for idle connections; the limit is asked again
        // at each wake-up (a reload may change it).
        let acquire = gate.acquire(|| throttles.connection_limit(&dest.domain));
        tokio::pin!(acquire);
        loop {
            let returned = self.inner.pool.returned();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.idle_connection(&dest.key, requirement, check).await {
                if throttles.host_rule(&conn.host).is_none() {
                    return Ok(conn);
                }
                match throttles.reserve_host(&conn.host, SystemTime::now()) {
                    Ok(counted) => {
                        reservation.absorb(counted);
                        return Ok(conn);
                    }
                    Err(reason) => {
                        // Its host has had its hour's worth: another host
                        // of the destination may take the message.
                        tracing::debug!(remote = %conn.session.remote, %reason, "idle connection not used");
                        conn.close_later();
                        continue;
                    }
                }
            }
            tokio::select! {
                permit = &mut acquire => {
                    return self.connect(dest, plan, permit, reservation).await;
                }
                () = &mut returned => continue,
            }
        }
    }

    /// An idle connection for `key` that passes RSET (as Postfix checks a
    /// cached connection before reuse), if any. With [`Check::Pipelined`]
    /// and a server that pipelines, the RSET is left to go in front of
    /// the next MAIL (`Session::check_pending`).
    async fn idle_connection(
        &self,
        key: &str,
        requirement: &TlsRequirement,
        check: Check,
    ) -> Option<Conn> {
        loop {
            let (found, expired) = self.inner.pool.take(key);
            for conn in expired {
                conn.close_later();
            }
            let mut conn = found?;
            let verified = conn.session.tls.as_ref().map(|t| t.verified);
            let unfit = match requirement.for_host(&conn.host) {
                HostRule::Dane { .. } => verified != Some(Verification::Dane),
                HostRule::Encrypt => verified.is_none(),
                HostRule::Failed(_) => true,
                HostRule::Other(TlsRequirement::Enforced(policy)) => {
                    verified != Some(policy.source) || !policy.allows(&conn.host)
                }
                HostRule::Other(other) => other
                    .verification()
                    .is_some_and(|needed| verified != Some(needed)),
            };
            if unfit {
                // Opened without the verified TLS (or to a host) this
                // delivery needs: by another domain sharing the key, or
                // before the domain's policy was known.
                conn.close_later();
                continue;
            }
            if conn.session.is_stale() {
                tracing::debug!(remote = %conn.session.remote, "idle connection closed by the server");
                continue;
            }
            if check == Check::Pipelined && conn.session.ext.pipelining {
                tracing::debug!(remote = %conn.session.remote, key, "reusing connection; RSET goes with MAIL");
                conn.session.check_pending = true;
                return Some(conn);
            }
            match conn.session.rset().await {
                Ok(true) => {
                    conn.session.check_pending = false;
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

    /// Opens a session by trying every address of every target in order,
    /// within the `mx:` host rules. Err holds the status and reason of the
    /// last failure, and the strongest back-off signal seen.
    async fn connect(
        &self,
        dest: &Destination,
        plan: &[(Target, TlsStep)],
        permit: Slot,
        reservation: &mut Reservation,
    ) -> Result<Conn, NoConnection> {
        let config = &self.inner.config;
        let throttles = &self.inner.throttles;
        // A back-off may have begun while this delivery waited for a slot.
        if let Some(reason) = throttles.backed_off(&dest.key, SystemTime::now()) {
            return Err(NoConnection::local("4.4.5", reason));
        }
        let mut last: Option<(String, String, Option<ServerReply>)> = None;
        let mut signal = ServerSignal::Silent;
        for (target, step) in plan {
            let host = normalize(&target.host);
            let (counted, host_permit) = match self.host_throttle(&host).await {
                Ok(held) => held,
                Err(reason) => {
                    tracing::debug!(key = %dest.key, %reason, "target skipped");
                    last = Some(("4.4.5".to_owned(), reason, None));
                    continue;
                }
            };
            for &addr in &target.addrs {
                let mut step = step.clone();
                // At most twice: once more in plaintext when opportunistic
                // TLS failed in the handshake.
                for _ in 0..2 {
                    let result = Session::open(
                        &target.host,
                        addr,
                        &config.helo_name,
                        config.delivery.timeouts,
                        &step,
                        self.inner.open.clone(),
                    )
                    .await;
                    let e = match result {
                        Ok(session) => {
                            if let Some(counted) = counted {
                                reservation.absorb(counted);
                            }
                            return Ok(Conn {
                                session,
                                host,
                                permit,
                                host_permit,
                            });
                        }
                        Err(e) => e,
                    };
                    let remote = remote_name(&target.host, addr);
                    let (status, reason) = e.describe(&remote);
                    tracing::debug!(key = %dest.key, %status, %reason, "address failed");
                    let seen = e.signal(&remote);
                    if seen.weight() > signal.weight() {
                        signal = seen;
                    }
                    let reply = match &e {
                        SessionError::Rejected { reply, .. } => Some(ServerReply {
                            remote: remote.clone(),
                            text: reply.to_string(),
                        }),
                        _ => None,
                    };
                    last = Some((status, reason, reply));
                    let retry = matches!(
                        e,
                        SessionError::Tls {
                            retry_plaintext: true,
                            ..
                        }
                    ) && step.is_opportunistic();
                    if !retry {
                        break;
                    }
                    // RFC 7435: opportunistic security must not be worse
                    // than no security; try again in the clear.
                    step = TlsStep::Skip;
                }
            }
        }
        let (status, reason, reply) = last.unwrap_or_else(|| {
            (
                "4.4.4".to_owned(),
                format!("no address to try for {}", dest.key),
                None,
            )
        });
        Err(NoConnection {
            status,
            reason,
            reply,
            signal,
        })
    }

    /// What an `mx:` rule for `host` (normalized) asks before connecting:
    /// one message counted in its hour, and a place among its connections,
    /// waited for up to the connect timeout. Err is the reason the host is
    /// skipped.
    async fn host_throttle(
        &self,
        host: &str,
    ) -> Result<(Option<Reservation>, Option<Slot>), String> {
        let throttles = &self.inner.throttles;
        let Some(rule) = throttles.host_rule(host) else {
            return Ok((None, None));
        };
        let counted = throttles.reserve_host(host, SystemTime::now())?;
        if rule.max_connections.is_none() {
            return Ok((Some(counted), None));
        }
        let limit = || {
            throttles
                .host_rule(host)
                .and_then(|rule| rule.max_connections)
                .unwrap_or(usize::MAX)
        };
        let wait = self.inner.config.delivery.timeouts.connect;
        let gate = throttles.host_gate(host);
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            let freed = gate.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let returned = self.inner.pool.returned();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(slot) = gate.try_acquire(limit()) {
                return Ok((Some(counted), Some(slot)));
            }
            // An idle connection to the host, kept for another destination,
            // gives its place up; its slot comes free once it is closed.
            if let Some(idle) = self.inner.pool.take_to_host(host) {
                tracing::debug!(remote = %idle.session.remote, "closing idle connection for another destination");
                idle.close_later();
            }
            tokio::select! {
                () = &mut freed => {}
                () = &mut returned => {}
                () = &mut deadline => {
                    return Err(format!(
                        "local throttle: at most {} connections at once to mx:{host}, \
                         and none came free within {}",
                        limit(),
                        humantime::format_duration(wait)
                    ));
                }
            }
        }
    }

    /// After a transaction: back to the pool, or closed.
    fn release(&self, key: &str, conn: Conn, reusable: bool) {
        let config = &self.inner.config;
        if !reusable {
            // Broken or closing: nothing more to say on it.
            return;
        }
        if conn.session.messages >= config.delivery.max_messages_per_connection
            || config.delivery.idle_connection_timeout.is_zero()
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
        let period = (self.inner.config.delivery.idle_connection_timeout / 2)
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
                inner.throttles.prune(SystemTime::now());
            }
        });
    }
}

/// Why no host may be tried: `MTA-STS policy of example.com: no MX host
/// matches the policy (MX: mx.example.com; policy: *.example.net)`.
fn no_host_matches(policy: &HostPolicy, targets: &[Target]) -> String {
    let hosts: Vec<&str> = targets.iter().map(|t| t.host.as_str()).collect();
    format!(
        "{}: no MX host matches the policy (MX: {}; policy: {})",
        policy.name(),
        hosts.join(", "),
        policy.mx.join(", ")
    )
}

fn out_of_range(i: usize) -> Outcome {
    Outcome::deferred(
        "4.3.0",
        format!("internal error: recipient index {i} is not in the envelope"),
    )
}
