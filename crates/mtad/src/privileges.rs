//! Who mtad runs as.
//!
//! Started as root with `user` set (Postfix's `mail_owner`), mtad first
//! does what needs root: it prepares the queue directory and hands it,
//! its log files and the Maildirs to that user, reads its TLS key, and
//! binds its listening sockets. Then it switches to the user for good
//! (supplementary groups, gid, uid) before it opens the spool, the
//! control socket and the PID file, so everything it creates from then on
//! is the user's. The switch is checked: every thread runs with the
//! user's ids, real, effective and saved, and setuid(0) fails.
//!
//! A restart re-executes the same, now unprivileged, process: it keeps
//! the listening sockets it has, but cannot bind a new port below 1024,
//! which takes a full stop and start. A graceful restart reads the TLS
//! key as the user, so a key owned by root must be readable by mtad's
//! group (0640).
//!
//! Started as root without `user`, mtad keeps running as root (with
//! `group`, as that group) and says so loudly; started as anyone else,
//! it runs as itself.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use mta_config::Config;
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Group, Uid, User};
use tracing::{info, warn};

/// Sets the umask mtad creates files with: nothing for others, and
/// nothing for the group unless `group` is set. What mtad creates itself
/// also gets an explicit mode; this covers what libraries create (the
/// index's files, the control socket before its chmod).
pub fn set_umask(config: &Config) {
    let mask = if config.group.is_some() { 0o027 } else { 0o077 };
    umask(Mode::from_bits_truncate(mask));
}

/// The account mtad switches to.
#[derive(Debug)]
struct Account {
    name: String,
    uid: Uid,
    gid: Gid,
}

/// Who mtad is and will be, from the configuration and who started it.
#[derive(Debug)]
pub struct Identity {
    /// Set when started as root with `user`.
    switch_to: Option<Account>,
    /// The configured `group`.
    group: Option<Gid>,
    /// The configured `user`, when mtad was not started as root.
    configured_user: Option<(String, Uid)>,
}

impl Identity {
    /// Looks the configured user and group up.
    pub fn resolve(config: &Config) -> Result<Identity> {
        let group = match &config.group {
            Some(name) => Some(
                Group::from_name(name)
                    .with_context(|| format!("looking up group {name:?}"))?
                    .with_context(|| format!("group: no group named {name:?}"))?
                    .gid,
            ),
            None => None,
        };
        let user = match &config.user {
            Some(name) => Some(
                User::from_name(name)
                    .with_context(|| format!("looking up user {name:?}"))?
                    .with_context(|| format!("user: no account named {name:?}"))?,
            ),
            None => None,
        };
        let root = nix::unistd::geteuid().is_root();
        Ok(match user {
            Some(user) if root => Identity {
                switch_to: Some(Account {
                    gid: group.unwrap_or(user.gid),
                    name: user.name,
                    uid: user.uid,
                }),
                group,
                configured_user: None,
            },
            user => Identity {
                switch_to: None,
                group,
                configured_user: user.map(|u| (u.name, u.uid)),
            },
        })
    }

    /// The uid and gid mtad will run as when, started as root, it is
    /// about to change them (to `user`, or, without one, to root in
    /// `group`): what it prepares before is handed to them.
    pub fn owner(&self) -> Option<(u32, u32)> {
        match (&self.switch_to, self.group) {
            (Some(a), _) => Some((a.uid.as_raw(), a.gid.as_raw())),
            (None, Some(gid)) if nix::unistd::geteuid().is_root() => Some((0, gid.as_raw())),
            (None, _) => None,
        }
    }

    /// The configured group's id.
    pub fn group(&self) -> Option<Gid> {
        self.group
    }

    /// Hands a file opened before the switch (a log) to the
    /// [`owner`](Self::owner) to be, so that mtad can still reopen it
    /// after a rotation or a restart. Nothing to do when mtad does not
    /// switch or the file does not exist.
    fn hand_over(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Some((uid, gid)) = self.owner() else {
            return Ok(());
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() && (meta.uid(), meta.gid()) != (uid, gid) => {
                nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                    .with_context(|| format!("handing {} over to uid {uid}", path.display()))
            }
            _ => Ok(()),
        }
    }

    /// Prepares what mtad writes to before it switches: the queue
    /// directory (created, its mode set, handed over), the Maildir root
    /// (the same), the daemon log and the delivery log (handed over).
    pub fn prepare_files(&self, config: &Config, daemon_log: Option<&Path>) -> Result<()> {
        let access = mta_spool::Access {
            owner: self.owner(),
            group_readable: config.group.is_some(),
        };
        mta_spool::prepare(&config.queue_dir, &access)
            .with_context(|| format!("preparing queue directory {}", config.queue_dir.display()))?;
        let root = &config.maildir.root;
        if mta_queue::maildir::prepare_root(root, self.owner())
            .with_context(|| format!("preparing Maildir root {}", root.display()))?
        {
            info!(root = %root.display(), "Maildirs handed over to mtad's user");
        }
        for log in daemon_log
            .into_iter()
            .chain([config.delivery_log().as_path()])
        {
            self.hand_over(log)?;
        }
        Ok(())
    }

    /// Switches to the configured user (started as root with `user`), or
    /// says why mtad runs as it does. Call once everything that needs
    /// root is done.
    pub fn switch(&self) -> Result<()> {
        let euid = nix::unistd::geteuid();
        match &self.switch_to {
            Some(account) => {
                switch_to(account)?;
                info!(
                    user = %account.name,
                    uid = account.uid.as_raw(),
                    gid = account.gid.as_raw(),
                    "switched to the configured user"
                );
            }
            None if euid.is_root() => {
                // The configuration's warnings, logged at start, say it
                // loudly: mtad runs as root.
                if let Some(gid) = self.group {
                    nix::unistd::setgid(gid).context("setgid to the configured group")?;
                }
            }
            None => {
                if let Some((name, uid)) = &self.configured_user {
                    if *uid != euid {
                        warn!(
                            user = %name,
                            uid = euid.as_raw(),
                            "mtad runs as uid {euid}, not as the configured user: only a start \
                             as root switches users"
                        );
                    }
                }
                if let Some(gid) = self.group {
                    let member = nix::unistd::getegid() == gid
                        || nix::unistd::getgroups().is_ok_and(|g| g.contains(&gid));
                    if !member {
                        warn!(
                            gid = gid.as_raw(),
                            "mtad is not in the configured group: its files will not be the \
                             group's; start it as root, or in that group"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// initgroups, setgid, setuid, then the proof that there is no way back.
/// glibc applies each change to every thread of the process.
fn switch_to(account: &Account) -> Result<()> {
    let name = std::ffi::CString::new(account.name.as_str()).context("user name")?;
    nix::unistd::initgroups(&name, account.gid)
        .with_context(|| format!("setting the groups of {}", account.name))?;
    nix::unistd::setgid(account.gid).with_context(|| format!("setgid {}", account.gid))?;
    nix::unistd::setuid(account.uid).with_context(|| format!("setuid {}", account.uid))?;

    let uids = nix::unistd::getresuid().context("getresuid")?;
    let gids = nix::unistd::getresgid().context("getresgid")?;
    if [uids.real, uids.effective, uids.saved] != [account.uid; 3]
        || [gids.real, gids.effective, gids.saved] != [account.gid; 3]
    {
        bail!(
            "switching to {} left other ids: {uids:?} {gids:?}",
            account.name
        );
    }
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("after switching to {}, setuid(0) still works", account.name);
    }
    // Every thread, as the kernel sees it (the runtime's threads exist
    // already).
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue; // a thread that just ended
            };
            let uids = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .unwrap_or_default();
            if uids
                .split_whitespace()
                .any(|id| id != account.uid.to_string())
            {
                bail!(
                    "thread {} still runs with uids {uids:?} after switching to {}",
                    task.file_name().to_string_lossy(),
                    account.name
                );
            }
        }
    }
    Ok(())
}
