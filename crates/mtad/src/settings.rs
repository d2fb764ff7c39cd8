//! mtad's own settings, built from a [`Config`] in one place (as
//! ripgrep's `HiArgs` is built from its flags), so that the rest of the
//! daemon reads settings, not the configuration file's layout:
//!
//! - [`Settings`]: what the SMTP sessions, the listener and the HTTP
//!   server use; a graceful restart builds a new one and swaps it in, and
//!   work under way keeps the one it started with;
//! - [`Fixed`]: what only a restart changes (the listening addresses, the
//!   spool, the control socket, the PID file, the free-space check, the stop's deadlines).
//!
//! - [`queue`]: the queue runners' settings ([`mta_queue::QueueSettings`],
//!   with the SMTP client's and the resolver's): mta-queue reads no
//!   configuration, it is told.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use mta_config::{Config, Role};
use mta_deliver::{ClientConfig, ResolverConfig};
use mta_queue::schedule::Schedule;
use mta_queue::QueueSettings;
use mta_smtp::{AuthPolicy, LocalRecipients, SessionConfig};
use mta_spool::SpoolConfig;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::auth::AuthPlan;
use crate::shutdown::StopKind;

/// The settings a graceful restart replaces. A session keeps the ones it
/// started with; new sessions take the current ones.
pub struct Settings {
    pub config: Arc<Config>,
    pub hostname: String,
    pub min_data_rate: u64,
    /// `smtp.in_flow_delay`: the longest a MAIL waits for the ram
    /// runner's line to move (`Queue::in_flow`).
    pub in_flow_delay: Duration,
    pub tls: Option<TlsAcceptor>,
    /// Per SMTP role, in [`Role::ALL`] order.
    roles: [RoleSettings; 3],
    /// The users, limits and sender rules of SMTP AUTH.
    pub auth: AuthPlan,
    /// The DKIM keys, loaded at start and at each graceful restart (also
    /// given to the queue, for DSNs).
    pub dkim: Arc<mta_dkim::Signers>,
}

/// What one SMTP role (port 25, submission, implicit-TLS submission)
/// gives its sessions: each has its own limits, connection pool and
/// per-client limits.
pub struct RoleSettings {
    pub session_config: Arc<SessionConfig>,
    pub idle_timeout: Duration,
    pub max_session_time: Duration,
    pub connection_slots: Arc<Semaphore>,
    pub client_limits: crate::client_limits::Limits,
}

impl Settings {
    /// Builds them from a configuration (reading the TLS files and the
    /// local recipient file) and the AUTH plan read from it.
    pub fn new(config: Arc<Config>, auth: AuthPlan) -> Result<Settings> {
        let tls = match (&config.tls.certificate, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?))
            }
            _ => None,
        };
        let local_recipients = local_recipients(&config)?;
        let roles = Role::ALL.map(|role| {
            RoleSettings::new(
                &config,
                role,
                tls.is_some(),
                local_recipients.clone(),
                &auth.policy,
            )
        });
        let dkim = mta_dkim::Signers::load(&config.dkim.sign).context("[[dkim.sign]]")?;
        for warning in &dkim.warnings {
            tracing::warn!("{warning}");
        }
        for key in dkim.signers.describe() {
            tracing::info!(key = %key, "DKIM key loaded");
        }
        Ok(Settings {
            dkim: Arc::new(dkim.signers),
            hostname: config.hostname.clone(),
            min_data_rate: config.smtp.min_data_rate,
            // The client waits for its MAIL reply meanwhile: well within
            // the command deadline it knows.
            in_flow_delay: config.smtp.in_flow_delay.min(config.smtp.idle_timeout / 2),
            roles,
            tls,
            config,
            auth,
        })
    }

    /// One role's settings.
    pub fn role(&self, role: Role) -> &RoleSettings {
        &self.roles[role.index()]
    }
}

impl RoleSettings {
    fn new(
        config: &Config,
        role: Role,
        tls_available: bool,
        local_recipients: Option<LocalRecipients>,
        policy: &Arc<crate::auth::Policy>,
    ) -> RoleSettings {
        let limits = config.role_limits(role);
        let smtp = &config.smtp;
        RoleSettings {
            session_config: Arc::new(SessionConfig {
                hostname: config.hostname.clone(),
                max_message_size: limits.max_message_size as usize,
                max_recipients: limits.max_recipients,
                recipient_overshoot_limit: smtp.recipient_overshoot_limit,
                max_command_line: smtp.max_command_line,
                max_line_length: smtp.max_line_length,
                max_errors: limits.max_errors,
                // Port 465 speaks TLS from the first byte: no STARTTLS.
                tls_available: tls_available && role != Role::Submissions,
                local_domains: smtp.local_domains.clone(),
                local_recipients,
                relay_networks: smtp.relay_networks.clone(),
                auth: auth_policy(config, role),
                sender_policy: Some(policy.clone()),
            }),
            idle_timeout: limits.idle_timeout,
            max_session_time: limits.max_session_time,
            connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
            client_limits: crate::client_limits::Limits {
                max_connections: limits.max_connections_per_client,
                max_rate: limits.max_connection_rate_per_client,
                exemptions: smtp.client_limit_exemptions().to_vec(),
            },
        }
    }
}

/// AUTH as each role offers it: the submission roles always, and AUTH
/// before MAIL (RFC 6409 section 4.3), under TLS except from loopback
/// (the session exempts it); port 25 only with `[smtp] auth`, after
/// STARTTLS, never required.
fn auth_policy(config: &Config, role: Role) -> Option<AuthPolicy> {
    match role {
        Role::Mx if config.smtp.auth => Some(AuthPolicy {
            required_for_mail: false,
            ..AuthPolicy::submission()
        }),
        Role::Mx => None,
        Role::Submission | Role::Submissions => Some(AuthPolicy::submission()),
    }
}

/// The local recipient list of `[smtp] local_recipients` and
/// `local_recipients_file` (read now: at start, and by each graceful
/// restart), or None when neither is set.
fn local_recipients(config: &Config) -> Result<Option<LocalRecipients>> {
    let entries = config.smtp.local_recipient_list().map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("the local recipient list:\n{}", lines.join("\n"))
    })?;
    Ok(entries.map(|entries| {
        let mut list = LocalRecipients::new();
        for entry in entries {
            list.insert(entry.name, entry.domain);
        }
        info!(entries = list.len(), "local recipient list loaded");
        list
    }))
}

/// What only a restart changes, read once at start. (A graceful restart
/// reports a change to these and leaves them as they are: `reload.rs`.)
pub struct Fixed {
    /// The SMTP listening addresses, per role in [`Role::ALL`] order.
    pub smtp_listen: [Vec<SocketAddr>; 3],
    /// The admin HTTP server's addresses.
    pub http_listen: Vec<SocketAddr>,
    /// Where the queue lives and how the spool behaves.
    pub spool: SpoolConfig,
    /// The control socket `mta-init` talks to.
    pub control_socket: PathBuf,
    /// The PID file.
    pub pid_file: PathBuf,
    /// How often free space (and a failed index) is checked.
    pub free_space_check_interval: Duration,
    /// The deadlines of a stop.
    pub stop: StopDeadlines,
}

impl Fixed {
    /// Reads them from the configuration the daemon starts with.
    pub fn new(config: &Config) -> Fixed {
        Fixed {
            smtp_listen: Role::ALL.map(|role| config.role_listen(role).to_vec()),
            http_listen: config.http.listen.clone(),
            spool: SpoolConfig {
                dir: config.queue_dir.clone(),
                min_free_space: config.spool.min_free_space.bytes(),
                max_batch: config.spool.max_batch,
                writers: config.spool.writers,
                rescan_rate: config.spool.rescan_rate,
                index_cache: config.spool.index_cache.0,
            },
            control_socket: config.control_socket(),
            pid_file: config.pid_file(),
            free_space_check_interval: config.spool.free_space_check_interval,
            stop: StopDeadlines {
                timeout: config.shutdown.timeout,
                drain_timeout: config.shutdown.drain_timeout,
                graceful_timeout: config.shutdown.graceful_timeout,
            },
        }
    }
}

/// `[shutdown]`: how long a stop waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopDeadlines {
    /// Open sessions may finish their transaction this long.
    pub timeout: Duration,
    /// Then deliveries in flight may finish this long.
    pub drain_timeout: Duration,
    /// A graceful stop: sessions and deliveries together.
    pub graceful_timeout: Duration,
}

impl StopDeadlines {
    /// For a stop of this kind: how long open sessions may go on, and how
    /// long deliveries in flight may then finish (a graceful stop's
    /// deliveries share its one deadline with the sessions).
    pub fn for_kind(&self, kind: StopKind) -> (Duration, Duration) {
        match kind {
            StopKind::Now => (Duration::ZERO, Duration::ZERO),
            StopKind::Normal => (self.timeout, self.drain_timeout),
            StopKind::Graceful => (self.graceful_timeout, Duration::ZERO),
        }
    }
}

/// Everything the queue runners are started with: mta-queue reads no
/// configuration, it is told.
pub fn queue(config: &Config, dkim: Arc<mta_dkim::Signers>) -> QueueSettings {
    let d = &config.delivery;
    let q = &config.queue;
    QueueSettings {
        attempts: mta_queue::Settings {
            hostname: config.hostname.clone(),
            postmaster: config.postmaster(),
            dsn_from: config.dsn_from(),
            port: d.port,
            maildir_root: config.maildir.root.clone(),
            schedule: Schedule {
                base: q.retry_base,
                jitter: q.retry_jitter,
                lifetime: q.lifetime,
            },
            delay_notice_after: q.delay_notice_after,
            volatile: q.mode == mta_config::QueueMode::Volatile,
            poll_interval: q.poll_interval,
            dkim,
        },
        delivery_log: config.delivery_log(),
        client: client_config(config),
        resolver: ResolverConfig {
            name_servers: d.name_servers.clone(),
            timeout: d.dns_timeout,
            attempts: 2,
        },
        local_domains: config.smtp.local_domains.clone(),
        routes: d.routes.clone(),
        ram_concurrency: q.ram_concurrency,
        bounce_concurrency: q.bounce_concurrency,
        disk_concurrency: q.disk_concurrency,
    }
}

fn client_config(config: &Config) -> ClientConfig {
    let delivery = config.delivery.clone();
    ClientConfig {
        helo_name: delivery
            .helo_name
            .clone()
            .unwrap_or_else(|| config.hostname.clone()),
        delivery,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stop_takes_its_own_deadlines() {
        let d = StopDeadlines {
            timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(2),
            graceful_timeout: Duration::from_secs(3),
        };
        assert_eq!(d.for_kind(StopKind::Now), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            d.for_kind(StopKind::Normal),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(
            d.for_kind(StopKind::Graceful),
            (Duration::from_secs(3), Duration::ZERO)
        );
    }

    #[test]
    fn fixed_settings_come_from_the_configuration() {
        let config = Config::default();
        let fixed = Fixed::new(&config);
        assert_eq!(fixed.spool.dir, config.queue_dir);
        assert_eq!(fixed.control_socket, config.control_socket());
        assert_eq!(fixed.pid_file, config.pid_file());
        assert_eq!(fixed.stop.drain_timeout, config.shutdown.drain_timeout);
        assert_eq!(
            fixed.free_space_check_interval,
            config.spool.free_space_check_interval
        );
    }
}
