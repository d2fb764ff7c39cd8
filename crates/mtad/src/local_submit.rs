//! Local submission: the Unix socket `mta-sendmail` hands messages to,
//! and the drop directory it leaves them in while mtad is down
//! (`[sendmail]`, docs/sendmail.md).
//!
//! The socket is any local user's (0666, in a 0755 directory): who
//! connected is what the kernel says (SO_PEERCRED), never what the client
//! claims, and the session is an ordinary SMTP session
//! (`connection::serve_local`) with that user identified from the start
//! (`Session::local`): it may relay, AUTH and STARTTLS are not offered,
//! and the message takes the acceptance path of every other (durable
//! before 250).
//!
//! Started as root, mtad creates the socket's directory (0755) and the
//! drop directory (1730, `drop_group`) for the user it switches to, so
//! that after the switch, and in the image a restart executes, it can
//! bind the socket again and list the drops. A run that cannot (not
//! root, and the default paths under /run and /var/spool) logs one
//! warning and goes on without them. A stop, and so a restart, closes
//! the socket first: a client in the gap is refused at once and drops
//! its message, which the next image imports (`maildrop.rs`).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mta_config::Config;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::local_session::{local_user, Local};
use crate::privileges::Identity;
use crate::shutdown::Shutdown;

/// What `prepare` found or made, for `start`.
pub struct Prepared {
    /// The socket to serve, when local submission is on.
    socket: Option<PathBuf>,
    /// The drop directory to import from, when it is usable.
    drop_dir: Option<PathBuf>,
    /// What could not be made ready, for the one warning `start` logs.
    problems: Vec<String>,
}

/// Makes the socket's directory and the drop directory, as root, for the
/// user mtad is about to become: call before the switch.
pub fn prepare(config: &Config, identity: &Identity) -> Prepared {
    let s = &config.sendmail;
    if !s.enabled {
        return Prepared {
            socket: None,
            drop_dir: None,
            problems: Vec::new(),
        };
    }
    let root = nix::unistd::geteuid().is_root();
    let owner = identity.owner();
    let mut problems = Vec::new();
    let mut socket = Some(s.socket.clone());
    if let Some(dir) = s.socket.parent() {
        if let Err(e) = socket_dir(dir, root, owner) {
            problems.push(format!("no socket: cannot create {} ({e})", dir.display()));
            socket = None;
        }
    }
    let drop_dir = match drop_dir(&s.drop_dir, &s.drop_group, root, owner) {
        Ok(note) => {
            if let Some(note) = note {
                // It works, but not for everyone.
                warn!("local submission (mta-sendmail): {note}");
            }
            if let Some(note) = reserve_note(config) {
                warn!("local submission (mta-sendmail): {note}");
            }
            Some(s.drop_dir.clone())
        }
        Err(e) => {
            problems.push(format!(
                "no drop directory: cannot make {} ({e})",
                s.drop_dir.display()
            ));
            None
        }
    };
    Prepared {
        socket,
        drop_dir,
        problems,
    }
}

/// Creates the socket's directory when it is missing: 0755 (any user
/// reaches the socket), the user's to be (so that a restart, no longer
/// root, can bind the socket again). An existing one is left as it is.
fn socket_dir(dir: &Path, root: bool, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    create_dirs(dir)?;
    if let (true, Some((uid, gid))) = (root, owner) {
        chown(dir, uid, Some(gid))?;
    }
    Ok(())
}

/// Creates `dir` and the directories above it that are missing, each
/// 0755 whatever mtad's umask (0077): every user must get through them
/// to the socket or the drop directory.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(0o755).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?,
            // Made meanwhile by someone else: theirs to set.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Makes the drop directory what `mta-sendmail` expects: mode 1730,
/// mtad's user its owner (it lists the drops and removes them; the
/// sticky bit keeps users from removing each other's), `drop_group` its
/// group (which may add files, not list them). Created when missing;
/// an existing one is set so only when it holds nothing but drops (a
/// wrong path must not chmod a directory of someone else's). Ok(Some)
/// is a note for the warning: the directory works, but not for others.
fn drop_dir(
    dir: &Path,
    group: &str,
    root: bool,
    owner: Option<(u32, u32)>,
) -> std::io::Result<Option<String>> {
    let created = if dir.is_dir() {
        false
    } else {
        if let Some(parent) = dir.parent() {
            create_dirs(parent)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        true
    };
    let gid = nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw());
    let uid = owner.map_or_else(|| nix::unistd::geteuid().as_raw(), |(u, _)| u);
    let meta = std::fs::metadata(dir)?;
    let wanted_gid = gid.unwrap_or(meta.gid());
    let right = meta.mode() & 0o7777 == 0o1730 && meta.uid() == uid && meta.gid() == wanted_gid;
    if !right {
        if !created && !only_drops(dir)? {
            return Ok(Some(format!(
                "drop directory {} is mode {:o}, uid {}, gid {} and holds other files: left as \
                 it is (1730, mtad's user, group {group} wanted)",
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            )));
        }
        if root {
            chown(dir, uid, gid)?;
        } else if let Some(gid) = gid {
            // A member of the group may give it its directory.
            let _ = chown(dir, uid, Some(gid));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1730))?;
    }
    Ok(match gid {
        None if root => Some(format!(
            "no group {group:?}: only mtad's user can leave mail in the drop directory while \
             mtad is down (create the group and install mta-sendmail setgid to it, \
             docs/sendmail.md)"
        )),
        _ => None,
    })
}

/// A warning when users filling the drop directory could bring the spool
/// to its own free-space reserve: the two on one file system, and the
/// drop's reserve not above the spool's.
fn reserve_note(config: &Config) -> Option<String> {
    let device = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let same = device(&config.sendmail.drop_dir)
        .zip(device(&config.queue_dir))
        .is_some_and(|(a, b)| a == b);
    let drop = config.sendmail.drop_min_free_space;
    let spool = config.spool.min_free_space;
    (same && spool.0 > 0 && drop <= spool).then(|| {
        format!(
            "sendmail.drop_min_free_space ({drop} octets) is not above spool.min_free_space \
             ({spool} octets) \
             on the file system they share: users filling the drop directory while mtad is \
             down can bring the spool to its reserve, and new mail then gets 452 4.3.1 \
             (docs/sendmail.md, Quota)"
        )
    })
}

/// True when the directory holds nothing but drop files.
fn only_drops(dir: &Path) -> std::io::Result<bool> {
    use mta_sendmail::dropfile::{BAD_PREFIX, DROP_PREFIX, TMP_PREFIX};
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if ![DROP_PREFIX, TMP_PREFIX, BAD_PREFIX]
            .iter()
            .any(|p| name.starts_with(p))
        {
            return Ok(false);
        }
    }
    Ok(true)
}

fn chown(path: &Path, uid: u32, gid: Option<u32>) -> std::io::Result<()> {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .map_err(std::io::Error::from)
}

/// Binds the socket and starts its accept loop and the drop directory's
/// import, after the switch. Whatever cannot start is in one warning;
/// mtad runs on without it.
pub fn start(ctx: &Arc<Context>, shutdown: &Shutdown, sessions: &TaskTracker, prepared: Prepared) {
    let Prepared {
        socket,
        drop_dir,
        mut problems,
    } = prepared;
    let config = &ctx.settings().config.sendmail;
    let local = Arc::new(Local::new(config.max_connections));
    if let Some(path) = socket {
        match LocalSocket::bind(&path) {
            Ok(socket) => {
                info!(socket = %path.display(), "local submission socket ready");
                tokio::spawn(accept_loop(
                    socket,
                    ctx.clone(),
                    shutdown.clone(),
                    sessions.clone(),
                    local.clone(),
                ));
            }
            Err(e) => problems.push(format!("no socket {}: {e:#}", path.display())),
        }
    }
    if let Some(dir) = drop_dir {
        tokio::spawn(crate::maildrop::import_loop(
            dir,
            config.drop_scan_interval,
            ctx.clone(),
            shutdown.clone(),
            sessions.clone(),
            local,
        ));
    }
    if !problems.is_empty() {
        warn!(
            "local submission (mta-sendmail): {}; running on without it (start mtad as root \
             once, or set [sendmail] paths it can create: docs/sendmail.md)",
            problems.join("; ")
        );
    }
}

/// The bound socket; its file is removed when dropped, if it is still
/// the one bound here.
struct LocalSocket {
    listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl LocalSocket {
    /// Binds the socket, mode 0666. A file already there is a leftover
    /// of a crash, unless a daemon answers on it: then it is that
    /// daemon's, and this one goes without.
    fn bind(path: &Path) -> anyhow::Result<LocalSocket> {
        use anyhow::Context as _;
        match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    anyhow::bail!("a file that is not a socket is in the way");
                }
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    anyhow::bail!("another daemon answers on it");
                }
                std::fs::remove_file(path).context("removing the stale socket")?;
                debug!(path = %path.display(), "removed a stale local submission socket");
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("looking at the path"),
        }
        let listener = UnixListener::bind(path).context("binding")?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .context("setting its mode")?;
        let meta = std::fs::symlink_metadata(path).context("looking at it")?;
        Ok(LocalSocket {
            listener,
            path: path.to_owned(),
            inode: (meta.dev(), meta.ino()),
        })
    }
}

impl Drop for LocalSocket {
    fn drop(&mut self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Takes local sessions until the stop, which closes the socket (and
/// removes its file): a client then drops its message rather than wait.
async fn accept_loop(
    socket: LocalSocket,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
    local: Arc<Local>,
) {
    loop {
        let permit = tokio::select! {
            () = shutdown.listen_end.cancelled() => break,
            permit = local.slot() => match permit {
                Some(p) => p,
                None => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.listen_end.cancelled() => break,
            accepted = socket.listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "local accept failed");
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let local = local.clone();
        sessions.spawn(async move {
            let _permit = permit;
            serve(stream, &ctx, &shutdown, &local).await;
        });
    }
    drop(socket);
    debug!("local submission socket closed");
}

/// One local session: the peer's uid from the kernel, then SMTP.
async fn serve(stream: UnixStream, ctx: &Context, shutdown: &Shutdown, local: &Local) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            debug!(error = %e, "no peer credentials: local session refused");
            return;
        }
    };
    let user = local_user(uid).await;
    let settings = ctx.settings();
    let config = local.session_config(&settings);
    debug!(user = %user.name, uid, "local session opened");
    crate::connection::serve_local(stream, user, config, ctx, &settings, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use mta_config::ByteSize;

    fn config(queue: &Path, drop: &Path, spool_reserve: u64, drop_reserve: u64) -> Config {
        let mut c = Config {
            queue_dir: queue.to_owned(),
            ..Config::default()
        };
        c.sendmail.drop_dir = drop.to_owned();
        c.spool.min_free_space = ByteSize(spool_reserve);
        c.sendmail.drop_min_free_space = ByteSize(drop_reserve);
        c
    }

    /// Warned only when the drop's reserve is not above the spool's on
    /// one file system; the defaults are quiet.
    #[test]
    fn a_drop_reserve_at_or_below_the_spools_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let (queue, drop) = (dir.path().join("queue"), dir.path().join("drop"));
        std::fs::create_dir_all(&queue).unwrap();
        std::fs::create_dir_all(&drop).unwrap();
        let mib = 1 << 20;
        let note = reserve_note(&config(&queue, &drop, 500 * mib, 300 * mib)).unwrap();
        assert!(
            note.contains(
                "sendmail.drop_min_free_space (314572800 octets) is not above \
                 spool.min_free_space (524288000 octets) on the file system they share"
            ),
            "{note}"
        );
        assert!(reserve_note(&config(&queue, &drop, 300 * mib, 300 * mib)).is_some());
        assert_eq!(
            reserve_note(&config(&queue, &drop, 100 * mib, 300 * mib)),
            None
        );
        assert_eq!(reserve_note(&config(&queue, &drop, 0, 0)), None);
        let defaults = Config::default();
        assert!(defaults.sendmail.drop_min_free_space > defaults.spool.min_free_space);
        // Not on one file system (a missing directory counts as not).
        let gone = dir.path().join("gone");
        assert_eq!(
            reserve_note(&config(&queue, &gone, 500 * mib, 300 * mib)),
            None
        );
    }
}
