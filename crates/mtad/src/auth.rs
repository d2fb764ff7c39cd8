//! SMTP AUTH in the daemon: who checks a password (mta-auth's
//! `Verifier`, over the users file or Dovecot), the failure limits in
//! front of it, and what an authenticated user may send (the session's
//! `SenderPolicy`).
//!
//! The counters (failures, lock-outs, message rates) live as long as the
//! process, across graceful restarts; what a restart re-reads (the users
//! file, the sender rules, the limits) is an [`AuthPlan`], built with
//! the new settings and installed when they are.
//!
//! Every success and every failure is one log line at `info`/`warn` with
//! the client's address, the user name, the mechanism and the role, in a
//! fixed wording a fail2ban filter matches (`contrib/fail2ban/`):
//! `authentication failed client=203.0.113.9 user="bob" ...`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mta_auth::{
    Backend, FailureLimiter, LimiterSettings, MessageRate, RateSettings, SenderRules, Thresholds,
    UsersFile, Verdict, Verifier, VerifierSettings,
};
use mta_config::{Config, FailureLimits, HashPriority, Role};
use mta_smtp::{AuthVerdict, Credentials, SenderPolicy};
use tracing::{info, warn};

/// The process's authentication state.
#[derive(Debug)]
pub struct Auth {
    verifier: Verifier,
    limiter: FailureLimiter,
    rate: Arc<MessageRate>,
}

/// What a (graceful) restart re-reads: the password backend, the
/// limits, the sender rules.
pub struct AuthPlan {
    backend: Backend,
    verifier: VerifierSettings,
    limiter: LimiterSettings,
    rate: RateSettings,
    /// The policy the new sessions are given.
    pub policy: Arc<Policy>,
}

/// The sender rules and message rates an authenticated session obeys.
#[derive(Debug)]
pub struct Policy {
    rules: SenderRules,
    rate: Arc<MessageRate>,
}

impl SenderPolicy for Policy {
    fn may_send_as(&self, user: &str, address: &str) -> bool {
        self.rules.may_send_as(user, address)
    }

    fn may_write_as(&self, user: &str, address: &str) -> bool {
        self.rules.may_use_domain_of(user, address)
    }

    fn admit_message(&self, user: &str) -> Result<(), u32> {
        self.rate
            .reserve(user, Instant::now())
            .map_err(|limited| limited.limit)
    }
}

impl Auth {
    /// The state, and the plan of the configuration mtad starts with.
    pub fn start(config: &Config) -> Result<(Arc<Auth>, AuthPlan)> {
        let rate = Arc::new(MessageRate::new(rate_settings(config)));
        let plan = plan(config, &rate)?;
        let auth = Auth {
            verifier: Verifier::new(plan.backend.clone(), plan.verifier.clone()),
            limiter: FailureLimiter::new(&plan.limiter),
            rate,
        };
        Ok((Arc::new(auth), plan))
    }

    /// Reads what a graceful restart changes; nothing changes yet.
    pub fn plan(&self, config: &Config) -> Result<AuthPlan> {
        plan(config, &self.rate)
    }

    /// Installs a plan: new checks use its backend and limits; the
    /// counts go on.
    pub fn install(&self, plan: &AuthPlan) {
        self.verifier
            .reload(plan.backend.clone(), plan.verifier.clone());
        self.limiter.set_settings(&plan.limiter);
        self.rate.set_settings(plan.rate.clone());
    }

    /// Checks credentials a session received: the lock-outs first, then
    /// the password; a failure is delayed as the limits say. Logs one
    /// line either way.
    pub async fn check(
        &self,
        credentials: &Credentials,
        client: IpAddr,
        secured: bool,
        role: Role,
    ) -> AuthVerdict {
        let user = credentials.authcid.as_str();
        let mechanism = credentials.mechanism.name();
        let role = role.name();
        if let Some(lockout) = self.limiter.check(client, user, Instant::now()) {
            warn!(
                %client, user, mechanism, role,
                locked_for = lockout.remaining.as_secs(),
                "authentication refused: locked out"
            );
            return AuthVerdict::LockedOut;
        }
        let verdict = self
            .verifier
            .verify(
                user,
                credentials.password.expose().as_bytes(),
                client,
                secured,
            )
            .await;
        match verdict {
            Verdict::Accepted { user: name } => {
                self.limiter.record_success(client, user, Instant::now());
                info!(%client, user = %name, mechanism, role, "authentication succeeded");
                AuthVerdict::Accepted { user: name }
            }
            Verdict::Rejected => {
                let penalty = self.limiter.record_failure(client, user, Instant::now());
                warn!(%client, user, mechanism, role, "authentication failed");
                if !penalty.delay.is_zero() {
                    tokio::time::sleep(penalty.delay).await;
                }
                if penalty.lockout.is_some() {
                    warn!(%client, user, mechanism, role, "authentication locked out");
                    AuthVerdict::LockedOut
                } else {
                    AuthVerdict::Rejected
                }
            }
            Verdict::Unavailable(why) => {
                warn!(%client, user, mechanism, role, reason = %why, "authentication unavailable");
                AuthVerdict::Unavailable
            }
        }
    }

    /// How long `client`'s lockout has left, if it is locked out: the
    /// submission listeners turn it away at connect (421 4.7.0), before a
    /// TLS handshake it could only waste.
    pub fn client_locked_out(&self, client: IpAddr) -> Option<Duration> {
        self.limiter.client_locked(client, Instant::now())
    }

    /// The counters for /metrics: checks accepted, rejected and
    /// unavailable; failures recorded and lock-outs started.
    pub fn counts(&self) -> AuthCounts {
        let v = self.verifier.counts();
        let l = self.limiter.counts();
        AuthCounts {
            accepted: v.accepted,
            rejected: v.rejected,
            unavailable: v.unavailable,
            lockouts: l.lockouts,
            refused_locked: l.refused,
        }
    }
}

/// Authentication counters since start.
#[derive(Debug, Clone, Copy)]
pub struct AuthCounts {
    pub accepted: u64,
    pub rejected: u64,
    pub unavailable: u64,
    pub lockouts: u64,
    pub refused_locked: u64,
}

fn plan(config: &Config, rate: &Arc<MessageRate>) -> Result<AuthPlan> {
    let auth = &config.auth;
    let backend = match (&auth.users_file, &auth.dovecot_socket) {
        (_, Some(socket)) => Backend::Dovecot {
            socket: socket.clone(),
        },
        (Some(path), None) => {
            let (file, warnings) = UsersFile::load(path)
                .with_context(|| format!("reading the users file {}", path.display()))?;
            for warning in warnings {
                warn!("{warning}");
            }
            info!(path = %path.display(), users = file.len(), "users file loaded");
            Backend::UsersFile(Arc::new(file))
        }
        // No AUTH is offered anywhere (the configuration check says so
        // when a role would need it): an empty file refuses everyone.
        (None, None) => Backend::UsersFile(Arc::new(
            UsersFile::parse(std::path::Path::new("(no users file)"), b"").0,
        )),
    };
    let mut verifier = VerifierSettings {
        timeout: auth.timeout,
        max_wait: auth.max_wait,
        idle_priority: auth.hash_priority == HashPriority::Idle,
        ..VerifierSettings::default()
    };
    if let Some(n) = auth.max_checks {
        verifier.max_checks = n;
    }
    let rules = SenderRules::new(auth.senders.iter().map(|(u, list)| (u, list.clone())))
        .context("[auth] senders")?;
    Ok(AuthPlan {
        backend,
        verifier,
        limiter: LimiterSettings {
            client: thresholds(auth.client_failure_limits()),
            user: thresholds(auth.user_failure_limits()),
            ..LimiterSettings::default()
        },
        rate: rate_settings(config),
        policy: Arc::new(Policy {
            rules,
            rate: rate.clone(),
        }),
    })
}

fn thresholds(l: FailureLimits) -> Thresholds {
    Thresholds {
        delay_after: l.delay_after,
        delay: l.delay,
        window: l.window,
        lockout_after: l.lockout_after,
        lockout_for: l.lockout_for,
    }
}

fn rate_settings(config: &Config) -> RateSettings {
    RateSettings {
        messages_per_hour: config.auth.max_messages_per_hour,
        per_user: config
            .auth
            .user_messages_per_hour
            .iter()
            .map(|(u, n)| (u.clone(), *n))
            .collect::<HashMap<_, _>>(),
        ..RateSettings::default()
    }
}
