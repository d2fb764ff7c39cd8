//! What local sessions share, whether a client of the local socket or a
//! drop file being imported is on the other end: their slots, their
//! session configuration, and who a uid is.

use std::sync::Arc;

use mta_smtp::{LocalUser, SessionConfig};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::settings::Settings;

/// What local sessions share.
pub struct Local {
    /// `[sendmail] max_connections`.
    slots: Arc<Semaphore>,
    /// The session configuration, made from the current settings' port
    /// 25 one (which holds the local recipient list, too big to copy
    /// per session), and those settings.
    session_config: Mutex<Option<(Arc<Settings>, Arc<SessionConfig>)>>,
}

impl Local {
    /// With this many sessions at once.
    pub fn new(max_connections: usize) -> Local {
        Local {
            slots: Arc::new(Semaphore::new(max_connections)),
            session_config: Mutex::new(None),
        }
    }

    /// Waits for a session slot; None once the semaphore is closed.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    /// The configuration of a local session under `settings`: port 25's
    /// limits, domains and recipients; no AUTH, no STARTTLS (there is no
    /// network to protect).
    pub fn session_config(&self, settings: &Arc<Settings>) -> Arc<SessionConfig> {
        let mut cached = self.session_config.lock();
        if let Some((for_settings, config)) = &*cached {
            if Arc::ptr_eq(for_settings, settings) {
                return config.clone();
            }
        }
        let mut config = (*settings.role(mta_config::Role::Mx).session_config).clone();
        config.auth = None;
        config.tls_available = false;
        // A local user is who the kernel says it is, and may use any
        // sender (`-f`), as with Postfix's sendmail: the sender rules and
        // rates of `[auth]` are for SMTP AUTH users.
        config.sender_policy = None;
        let config = Arc::new(config);
        *cached = Some((settings.clone(), config.clone()));
        config
    }
}

/// The user with this uid, as the user database names them. Blocking
/// (NSS), so called on the blocking pool.
pub async fn local_user(uid: u32) -> LocalUser {
    let name = tokio::task::spawn_blocking(move || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    })
    .await
    .ok()
    .flatten();
    LocalUser::new(uid, name.as_deref())
}
