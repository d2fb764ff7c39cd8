//! `[sendmail]`: local submission, for programs that run
//! `/usr/sbin/sendmail` (cron, PHP's `mail()`, monitoring scripts).
//!
//! `mta-sendmail` hands a message to mtad over a Unix socket any local
//! user may connect to, and mtad learns who connected from the kernel
//! (SO_PEERCRED), never from the client. When mtad is down, the message
//! goes to a drop directory instead (Postfix's maildrop): writable by
//! one group only (`drop_group`, which `mta-sendmail` is installed
//! setgid to), listable by mtad alone, and imported by mtad when it
//! starts and while it runs.
//!
//! `mta-sendmail` runs as any user, and the configuration file may be
//! unreadable to them: [`SendmailConfig::read`] reads this section alone
//! and falls back to the built-in defaults, which are fixed paths, so
//! that both sides agree without the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
use crate::ByteSize;

/// The socket `mta-sendmail` connects to when no configuration says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mta/submit.sock";

/// The drop directory when no configuration says otherwise.
pub const DEFAULT_DROP_DIR: &str = "/var/spool/mta/maildrop";

/// `[sendmail]`: the local submission socket and the drop directory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendmailConfig {
    /// mtad serves the socket and imports the drop directory. Off: local
    /// programs can only leave mail in the drop directory, which nothing
    /// imports.
    pub enabled: bool,
    /// The Unix socket `mta-sendmail` submits through (mode 0666; mtad
    /// creates its directory, 0755, when it starts as root).
    pub socket: PathBuf,
    /// Where `mta-sendmail` leaves messages while mtad is down (mode
    /// 1730: mtad's user lists it, `drop_group` may only add to it).
    pub drop_dir: PathBuf,
    /// The group that may write to `drop_dir`; install `mta-sendmail`
    /// setgid to it.
    pub drop_group: String,
    /// How often mtad looks in `drop_dir` for messages left there while
    /// it was down or restarting.
    #[serde(with = "humantime_serde")]
    pub drop_scan_interval: Duration,
    /// Local submission sessions at once; one more waits for a slot.
    pub max_connections: usize,
    /// Drop files one user may have waiting at once; `mta-sendmail`
    /// exits 75 (EX_TEMPFAIL) for the next until mtad imports some.
    pub drop_max_per_user: u32,
    /// Free space `mta-sendmail` leaves on the drop directory's file
    /// system: a message that would leave less is not dropped (exit 75).
    /// Keep it above `spool.min_free_space` when the two share a file
    /// system, so that users filling the drop directory never bring the
    /// spool down to its reserve.
    pub drop_min_free_space: ByteSize,
}

impl Default for SendmailConfig {
    fn default() -> Self {
        SendmailConfig {
            enabled: true,
            socket: PathBuf::from(DEFAULT_SOCKET),
            drop_dir: PathBuf::from(DEFAULT_DROP_DIR),
            drop_group: "mtadrop".to_owned(),
            drop_scan_interval: Duration::from_secs(5),
            max_connections: 100,
            drop_max_per_user: 1000,
            drop_min_free_space: ByteSize(300 * 1024 * 1024),
        }
    }
}

impl ConfigError {
    /// True when the file exists but this user may not read it: for
    /// mta-sendmail, the expected case for a configuration that holds
    /// secrets, which is no reason to complain on every message.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, ConfigError::Read { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

impl SendmailConfig {
    /// The `[sendmail]` section of the file at `path`, ignoring every
    /// other table (it is mtad's business, and may not even be valid for
    /// this version); the defaults when the file has no such section.
    pub fn read(path: &Path) -> Result<SendmailConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        SendmailConfig::parse(&text).map_err(|message| ConfigError::Syntax {
            path: path.to_owned(),
            message,
        })
    }

    /// [`read`](Self::read) on text.
    pub fn parse(text: &str) -> Result<SendmailConfig, String> {
        /// The file with everything but `[sendmail]` skipped.
        #[derive(Deserialize)]
        struct OnlySendmail {
            #[serde(default)]
            sendmail: SendmailConfig,
        }
        toml::from_str::<OnlySendmail>(text)
            .map(|f| f.sendmail)
            .map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Reports what cannot work.
    pub(crate) fn check(&self, problem: &mut impl FnMut(&str, String)) {
        for (key, path) in [
            ("sendmail.socket", &self.socket),
            ("sendmail.drop_dir", &self.drop_dir),
        ] {
            // Any user's mta-sendmail looks for them, from any working
            // directory.
            if !path.is_absolute() {
                problem(key, format!("{} must be an absolute path", path.display()));
            }
        }
        if self.socket.as_os_str().len() > 100 {
            // sun_path holds 108 octets with the NUL (unix(7)).
            problem(
                "sendmail.socket",
                "longer than a Unix socket path may be (100 octets here)".into(),
            );
        }
        if self.drop_scan_interval.is_zero() {
            problem(
                "sendmail.drop_scan_interval",
                "must be longer than zero".into(),
            );
        }
        if self.max_connections == 0 {
            problem("sendmail.max_connections", "must be at least 1".into());
        }
        if self.drop_max_per_user == 0 {
            problem("sendmail.drop_max_per_user", "must be at least 1".into());
        }
        if self.drop_group.is_empty() {
            problem("sendmail.drop_group", "must name a group".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sendmail_section_is_read() {
        // Other tables, even unknown keys in them, are mtad's business.
        let c = SendmailConfig::parse(
            "hostname = \"mx.test\"\n[smtp]\nno_such_key = 1\n[sendmail]\nsocket = \"/tmp/s.sock\"\n",
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/s.sock"));
        assert_eq!(c.drop_dir, PathBuf::from(DEFAULT_DROP_DIR));
        let c = SendmailConfig::parse("[http]\ntoken = \"x\"\n").unwrap();
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.drop_max_per_user, 1000);
        assert_eq!(c.drop_min_free_space, ByteSize(300 << 20));
        let c = SendmailConfig::parse(
            "[sendmail]\ndrop_max_per_user = 5\ndrop_min_free_space = \"1GiB\"\n",
        )
        .unwrap();
        assert_eq!(c.drop_max_per_user, 5);
        assert_eq!(c.drop_min_free_space, ByteSize(1 << 30));
        let e = SendmailConfig::parse("[sendmail]\nsocket_path = \"/x\"\n").unwrap_err();
        assert!(e.contains("socket_path"), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_error_the_caller_may_ignore() {
        let e = SendmailConfig::read(Path::new("/nonexistent/mta.toml")).unwrap_err();
        assert!(!e.is_permission_denied());
        assert!(e.to_string().starts_with("/nonexistent/mta.toml: "), "{e}");
    }

    #[test]
    fn relative_paths_and_zero_limits_are_problems() {
        let c = SendmailConfig::parse(
            "[sendmail]\nsocket = \"submit.sock\"\ndrop_dir = \"drop\"\nmax_connections = 0\n\
             drop_scan_interval = \"0s\"\ndrop_max_per_user = 0\n",
        )
        .unwrap();
        let mut found = Vec::new();
        c.check(&mut |key, what| found.push(format!("{key}: {what}")));
        assert_eq!(found.len(), 5, "{found:?}");
        let mut none = Vec::new();
        SendmailConfig::default().check(&mut |key, what| none.push(format!("{key}: {what}")));
        assert!(none.is_empty(), "{none:?}");
    }
}
