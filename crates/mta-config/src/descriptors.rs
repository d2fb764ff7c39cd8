//! Whether a configuration fits in the open-files limit.
//!
//! Every SMTP session holds a socket, and a spool file while its message
//! is stored; every delivery attempt an outbound connection and a spool or
//! Maildir file. A shell's usual soft limit of 1024 is below what the
//! default `max_connections = 1000` needs, so mtad raises its soft limit
//! to the hard one at start, and the configuration check warns when even
//! the hard limit is too small: past it, `accept` fails with EMFILE and
//! clients wait unanswered.

use nix::sys::resource::{getrlimit, Resource};

use crate::Config;

/// Descriptors mtad needs whatever its load: listening sockets, the
/// control socket, the HTTP server, the PID file, logs, the queue index's
/// files, DNS sockets, directories fsynced by the group commit, standard
/// input and output.
const FIXED_MARGIN: u64 = 128;

impl Config {
    /// The open files this configuration may need at full load.
    pub fn open_files_needed(&self) -> u64 {
        let sessions = self.smtp.max_connections as u64;
        let attempts = (self.queue.ram_concurrency
            + self.queue.bounce_concurrency
            + self.queue.disk_concurrency) as u64;
        // A socket each, and a file each while a message is stored or read.
        2 * sessions + 2 * attempts + FIXED_MARGIN
    }

    /// A warning when the configuration cannot fit in `limit` open files.
    pub fn open_files_warning_for(&self, limit: u64) -> Option<String> {
        let needed = self.open_files_needed();
        (needed > limit).then(|| {
            format!(
                "smtp.max_connections = {} needs about {needed} open files at full load \
                 (a socket and a spool file per session, the same per delivery attempt of \
                 queue.*_concurrency, and {FIXED_MARGIN} for listeners, logs and the index), \
                 but the open-files limit mtad can raise itself to is {limit}: past it, new \
                 connections wait unanswered. Raise the hard limit (ulimit -Hn, systemd's \
                 LimitNOFILE) or lower smtp.max_connections",
                self.smtp.max_connections
            )
        })
    }

    /// [`open_files_warning_for`](Self::open_files_warning_for) with the
    /// limit mtad will have when started from this process: its hard
    /// limit, which mtad raises its soft limit to.
    pub fn open_files_warning(&self) -> Option<String> {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        self.open_files_warning_for(hard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_do_not_fit_in_1024_but_do_in_4096() {
        let c = Config::default();
        assert!(c.open_files_needed() > 2000);
        let warning = c.open_files_warning_for(1024).expect("a warning");
        assert!(warning.contains("smtp.max_connections = 1000"), "{warning}");
        assert!(warning.contains("1024"), "{warning}");
        assert_eq!(c.open_files_warning_for(4096), None);
    }

    #[test]
    fn fewer_connections_fit_in_less() {
        let mut c = Config::default();
        c.smtp.max_connections = 100;
        c.queue.ram_concurrency = 20;
        c.queue.bounce_concurrency = 5;
        c.queue.disk_concurrency = 20;
        assert_eq!(c.open_files_warning_for(1024), None);
    }
}
