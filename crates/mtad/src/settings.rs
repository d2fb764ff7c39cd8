//! mtad's own settings, built from a [`Config`] in one place (as
//! ripgrep's `HiArgs` is built from its flags): what the SMTP sessions,
//! the listener and the HTTP server use. A graceful restart builds a new
//! [`Settings`] and swaps it in; work under way keeps the one it started
//! with.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use mta_config::Config;
use mta_smtp::{LocalRecipients, SessionConfig};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::info;

/// The settings a graceful restart replaces. A session keeps the ones it
/// started with; new sessions take the current ones.
pub struct Settings {
    pub config: Arc<Config>,
    pub hostname: String,
    pub session_config: Arc<SessionConfig>,
    pub idle_timeout: Duration,
    pub min_data_rate: u64,
    pub max_session_time: Duration,
    pub tls: Option<TlsAcceptor>,
    pub connection_slots: Arc<Semaphore>,
    pub client_limits: crate::client_limits::Limits,
}

impl Settings {
    /// Builds them from a configuration (reading the TLS files and the
    /// local recipient file).
    pub fn new(config: Arc<Config>) -> Result<Settings> {
        let tls = match (&config.tls.certificate, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?))
            }
            _ => None,
        };
        let local_recipients = local_recipients(&config)?;
        Ok(Settings {
            hostname: config.hostname.clone(),
            session_config: Arc::new(SessionConfig {
                hostname: config.hostname.clone(),
                max_message_size: config.smtp.max_message_size.bytes() as usize,
                max_recipients: config.smtp.max_recipients,
                recipient_overshoot_limit: config.smtp.recipient_overshoot_limit,
                max_command_line: config.smtp.max_command_line,
                max_line_length: config.smtp.max_line_length,
                max_errors: config.smtp.max_errors,
                tls_available: tls.is_some(),
                local_domains: config.smtp.local_domains.clone(),
                local_recipients,
                relay_networks: config.smtp.relay_networks.clone(),
            }),
            idle_timeout: config.smtp.idle_timeout,
            min_data_rate: config.smtp.min_data_rate,
            max_session_time: config.smtp.max_session_time,
            connection_slots: Arc::new(Semaphore::new(config.smtp.max_connections)),
            client_limits: crate::client_limits::Limits {
                max_connections: config.smtp.max_connections_per_client,
                max_rate: config.smtp.max_connection_rate_per_client,
                exemptions: config.smtp.client_limit_exemptions().to_vec(),
            },
            tls,
            config,
        })
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
