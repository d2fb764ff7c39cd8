//! `[auth]`: who may authenticate (SMTP AUTH, RFC 4954), what each user
//! may send as, how fast, and how failed attempts are slowed down and
//! locked out. mtad hands these to mta-auth.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[auth]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `name:hash` lines (argon2id, `$6$`, `$5$`, `$y$`, bcrypt, with or
    /// without Dovecot's `{SCHEME}` prefix); read at start and by each
    /// graceful restart; `mta-init user` edits it.
    pub users_file: Option<PathBuf>,
    /// Dovecot's `auth-client` socket, asked instead of `users_file`.
    pub dovecot_socket: Option<PathBuf>,
    /// The longest one check may take, the wait for a turn included;
    /// then `454 4.7.0`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Password hashes computed at once; absent: half the cores, at
    /// least one, so an AUTH flood cannot take every core.
    pub max_checks: Option<usize>,
    /// The longest a check waits for its turn behind others (at most
    /// `timeout`); then `454 4.7.0` at once, so that a flood neither
    /// holds connections for `timeout` nor gets checks started for
    /// sessions that have given up.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// The CPU priority of the threads that compute hashes.
    pub hash_priority: HashPriority,
    /// What each user may send as (MAIL FROM and the From: header):
    /// addresses and `@domain`s. A user not listed may use its own name
    /// when that is an address; `<>` is allowed to all.
    pub senders: BTreeMap<String, Vec<String>>,
    /// Messages one user may send in a sliding hour; more get `450
    /// 4.7.1`. 0: no limit.
    pub max_messages_per_hour: u32,
    /// Per-user exceptions to `max_messages_per_hour`.
    pub user_messages_per_hour: BTreeMap<String, u32>,
    /// Failed attempts from one client (an IPv4 address, an IPv6 /64).
    pub client_failures: FailureKeys,
    /// Failed attempts for one user name, whatever the client.
    pub user_failures: FailureKeys,
}

/// `[auth] hash_priority`: how the threads computing users-file
/// password hashes share the CPUs with the rest of the machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashPriority {
    /// The same priority as the rest of mtad (as Dovecot's auth
    /// processes have beside Postfix).
    #[default]
    Normal,
    /// Linux's `SCHED_IDLE`: anything else that is ready to run takes
    /// the CPU from a hash at once; on CPUs kept busy by other work,
    /// checks get only spare time (and may end in `454 4.7.0`).
    Idle,
}

/// `[auth.client_failures]` and `[auth.user_failures]`, as written: a
/// key left out takes its table's own default (see
/// [`FailureLimits::client_default`] and [`FailureLimits::user_default`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FailureKeys {
    /// Counted within this sliding window.
    #[serde(with = "humantime_serde::option")]
    pub window: Option<Duration>,
    /// From this many failures on, each reply to AUTH waits `delay`.
    pub delay_after: Option<u32>,
    /// How long such a reply waits.
    #[serde(with = "humantime_serde::option")]
    pub delay: Option<Duration>,
    /// At this many failures, AUTH gets `421 4.7.0` and the session is
    /// closed, for `lockout_for`.
    pub lockout_after: Option<u32>,
    /// How long a lock-out lasts.
    #[serde(with = "humantime_serde::option")]
    pub lockout_for: Option<Duration>,
}

/// One table's failure limits, its defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureLimits {
    /// Counted within this sliding window.
    pub window: Duration,
    /// From this many failures on, each reply to AUTH waits `delay`.
    pub delay_after: u32,
    /// How long such a reply waits.
    pub delay: Duration,
    /// At this many failures: `421 4.7.0` and close, for `lockout_for`.
    pub lockout_after: u32,
    /// How long a lock-out lasts.
    pub lockout_for: Duration,
}

impl FailureLimits {
    /// Per client: slowed from the 3rd failure in 15 minutes, locked out
    /// for 15 minutes at the 10th (as fail2ban's usual jail).
    pub fn client_default() -> FailureLimits {
        FailureLimits {
            window: Duration::from_secs(15 * 60),
            delay_after: 3,
            delay: Duration::from_secs(2),
            lockout_after: 10,
            lockout_for: Duration::from_secs(15 * 60),
        }
    }

    /// Per user name: higher, since anyone can fail for a name they know
    /// and so lock its owner out.
    pub fn user_default() -> FailureLimits {
        FailureLimits {
            window: Duration::from_secs(15 * 60),
            delay_after: 5,
            delay: Duration::from_secs(2),
            lockout_after: 30,
            lockout_for: Duration::from_secs(5 * 60),
        }
    }
}

impl FailureKeys {
    /// The limits, `default`'s where a key is left out.
    pub fn or(&self, default: FailureLimits) -> FailureLimits {
        FailureLimits {
            window: self.window.unwrap_or(default.window),
            delay_after: self.delay_after.unwrap_or(default.delay_after),
            delay: self.delay.unwrap_or(default.delay),
            lockout_after: self.lockout_after.unwrap_or(default.lockout_after),
            lockout_for: self.lockout_for.unwrap_or(default.lockout_for),
        }
    }

    fn check(&self, key: &str, problem: &mut impl FnMut(&str, String)) {
        if self.window.is_some_and(|w| w.is_zero()) {
            problem(&format!("{key}.window"), "must be longer than zero".into());
        }
        if self.lockout_after == Some(0) {
            problem(&format!("{key}.lockout_after"), "must be at least 1".into());
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            users_file: None,
            dovecot_socket: None,
            timeout: Duration::from_secs(10),
            max_checks: None,
            max_wait: Duration::from_secs(1),
            hash_priority: HashPriority::Normal,
            senders: BTreeMap::new(),
            max_messages_per_hour: 200,
            user_messages_per_hour: BTreeMap::new(),
            client_failures: FailureKeys::default(),
            user_failures: FailureKeys::default(),
        }
    }
}

impl AuthConfig {
    /// The per-client failure limits.
    pub fn client_failure_limits(&self) -> FailureLimits {
        self.client_failures.or(FailureLimits::client_default())
    }

    /// The per-user failure limits.
    pub fn user_failure_limits(&self) -> FailureLimits {
        self.user_failures.or(FailureLimits::user_default())
    }

    /// True when there is somewhere to check passwords.
    pub fn has_backend(&self) -> bool {
        self.users_file.is_some() || self.dovecot_socket.is_some()
    }

    /// Reports what cannot work.
    pub(crate) fn check(&self, problem: &mut impl FnMut(&str, String)) {
        if self.users_file.is_some() && self.dovecot_socket.is_some() {
            problem(
                "auth",
                "users_file and dovecot_socket are alternatives: set one".into(),
            );
        }
        if self.timeout.is_zero() {
            problem("auth.timeout", "must be longer than zero".into());
        }
        if self.max_wait.is_zero() {
            problem("auth.max_wait", "must be longer than zero".into());
        }
        if self.max_checks == Some(0) {
            problem("auth.max_checks", "must be at least 1".into());
        }
        self.client_failures.check("auth.client_failures", problem);
        self.user_failures.check("auth.user_failures", problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_and_each_key_read() {
        let auth: AuthConfig = toml::from_str(
            "users_file = \"/etc/mta/users\"\nmax_messages_per_hour = 50\n\
             [senders]\nalice = [\"alice@example.com\", \"@example.org\"]\n\
             [user_messages_per_hour]\nnewsletter = 5000\n\
             [client_failures]\nlockout_after = 4\n",
        )
        .unwrap();
        assert_eq!(auth.max_messages_per_hour, 50);
        assert_eq!(auth.senders["alice"][1], "@example.org");
        assert_eq!(auth.user_messages_per_hour["newsletter"], 5000);
        assert_eq!(auth.client_failure_limits().lockout_after, 4);
        // A table given in part takes its own defaults for the rest.
        assert_eq!(auth.client_failure_limits().delay_after, 3);
        assert_eq!(auth.user_failure_limits(), FailureLimits::user_default());
        let partial: AuthConfig = toml::from_str("[user_failures]\ndelay = \"1s\"\n").unwrap();
        let user = partial.user_failure_limits();
        assert_eq!(user.delay, Duration::from_secs(1));
        assert_eq!(
            user.lockout_after,
            FailureLimits::user_default().lockout_after
        );
        assert!(auth.has_backend());
        assert!(!AuthConfig::default().has_backend());
        assert_eq!(auth.max_wait, Duration::from_secs(1));
        assert_eq!(auth.hash_priority, HashPriority::Normal);
        let other: AuthConfig =
            toml::from_str("max_wait = \"250ms\"\nhash_priority = \"idle\"\n").unwrap();
        assert_eq!(other.max_wait, Duration::from_millis(250));
        assert_eq!(other.hash_priority, HashPriority::Idle);
        assert!(toml::from_str::<AuthConfig>("hash_priority = \"high\"\n").is_err());
    }

    #[test]
    fn two_backends_and_zero_limits_are_problems() {
        let auth: AuthConfig = toml::from_str(
            "users_file = \"/a\"\ndovecot_socket = \"/b\"\nmax_checks = 0\n\
             [user_failures]\nlockout_after = 0\n",
        )
        .unwrap();
        let mut found = Vec::new();
        auth.check(&mut |key, what| found.push(format!("{key}: {what}")));
        assert_eq!(found.len(), 3, "{found:?}");
    }
}
