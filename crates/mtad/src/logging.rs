//! The daemon's log: `tracing` to standard error, at the configured level
//! unless `RUST_LOG` says otherwise, and a handle that changes the level
//! on a graceful restart.

use tracing_subscriber::{reload as filter_reload, EnvFilter, Registry};

/// Changes the log level of the running daemon (a graceful restart).
#[derive(Clone)]
pub struct LogLevel(Option<filter_reload::Handle<EnvFilter, Registry>>);

impl LogLevel {
    /// Applies `level` unless `RUST_LOG` decides.
    pub fn set(&self, level: &str) {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let Some(handle) = &self.0 else { return };
        match EnvFilter::try_new(level) {
            Ok(filter) => {
                let _ = handle.reload(filter);
            }
            Err(e) => tracing::warn!(level, error = %e, "log level not changed"),
        }
    }
}

/// Installs the subscriber; `level` applies when `RUST_LOG` is unset.
pub fn init(level: &str) -> LogLevel {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = filter_reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
    {
        Ok(()) => LogLevel(Some(handle)),
        Err(_) => LogLevel(None),
    }
}
