//! Local delivery to Maildir (the qmail/Courier format): write into
//! `tmp/`, fsync, rename into `new/`, fsync `new/`. A reader never sees a
//! partial message, and a crash never loses one we called delivered.
//!
//! Mail is private whatever the umask: directories mtad creates here are
//! 0700 and message files 0600, owned by mtad's user (the IMAP server
//! reading them runs as that user, as with a virtual-mail account).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use mta_envelope::{mailbox_name, Mailbox, ReversePath};

/// Why a local delivery did not happen.
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// The local part cannot name a mailbox ([`mailbox_name`]: `/`, a
    /// leading dot, `..`, control characters...): a permanent failure. The
    /// SMTP server refuses such recipients at RCPT, so only mail queued
    /// before that check meets it.
    #[error("mailbox name {0:?} cannot be delivered to a Maildir")]
    BadName(String),
    /// Writing failed (disk full, permissions): a temporary failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl MaildirError {
    /// The enhanced status code of the recipient's outcome (RFC 3463): a
    /// bad name fails for good (5.1.3); a full disk or quota is "mail
    /// system full" (4.3.1, deferred); any other write failure 4.3.0
    /// (deferred). Deferred mail stays queued for the next attempt.
    pub fn status(&self) -> &'static str {
        match self {
            MaildirError::BadName(_) => "5.1.3",
            MaildirError::Io { source, .. } if is_no_space(source) => "4.3.1",
            MaildirError::Io { .. } => "4.3.0",
        }
    }

    /// A permanent failure (the others are deferrals).
    pub fn is_permanent(&self) -> bool {
        matches!(self, MaildirError::BadName(_))
    }
}

/// `ENOSPC` or `EDQUOT`.
fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MaildirError + 'a {
    move |source| MaildirError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The directory of a local domain (or of the default domain for the bare
/// `postmaster`), or None when it could escape `root`. Domains come from
/// RFC 5321 syntax and `smtp.local_domains`, so this only guards.
fn domain_component(domain: &str) -> Option<String> {
    let d = domain.to_lowercase();
    let ok = !d.is_empty()
        && !d.starts_with('.')
        && !d.contains(['/', '\\'])
        && !d.chars().any(char::is_control);
    ok.then_some(d)
}

/// The Maildir of a recipient: `<root>/<domain>/<user>/Maildir`; the bare
/// `postmaster` goes under `default_domain`. The user's directory is
/// [`mailbox_name`], the rule the SMTP server applies at RCPT, so what was
/// accepted there has a Maildir here.
pub fn maildir_of(
    root: &Path,
    recipient: &Mailbox,
    default_domain: &str,
) -> Result<PathBuf, MaildirError> {
    let domain = if recipient.domain.is_empty() {
        default_domain
    } else {
        &recipient.domain
    };
    let bad = || MaildirError::BadName(recipient.to_string());
    let domain = domain_component(domain).ok_or_else(bad)?;
    let user = mailbox_name(&recipient.local).ok_or_else(bad)?;
    Ok(root.join(domain).join(user).join("Maildir"))
}

/// Delivers one copy; returns the file's path in `new/`.
pub fn deliver(
    maildir: &Path,
    sender: &ReversePath,
    recipient: &Mailbox,
    content: &[u8],
    hostname: &str,
) -> Result<PathBuf, MaildirError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for sub in ["tmp", "new", "cur"] {
        let dir = maildir.join(sub);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // The Maildir unique name: time, then what makes it unique on this host.
    let name = format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        hostname
    );
    let tmp = maildir.join("tmp").join(&name);
    let new = maildir.join("new").join(&name);
    // Maildir files use the local line ending (LF), as qmail writes them.
    let mut data = Vec::with_capacity(content.len() + 128);
    write!(data, "Return-Path: <{sender}>\nDelivered-To: {recipient}\n").expect("Vec write");
    let mut rest = content;
    while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
        data.extend_from_slice(&rest[..pos]);
        data.push(b'\n');
        rest = &rest[pos + 2..];
    }
    data.extend_from_slice(rest);

    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        f.write_all(&data).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &new).map_err(io("rename", &tmp))?;
        let new_dir = maildir.join("new");
        fs::File::open(&new_dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &new_dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| new)
}

/// Prepares the Maildir root at start: creates it if missing (0700;
/// missing parents 0755, as the operator's directories are) and, for a
/// daemon about to switch users, hands the Maildirs under it to that
/// user's `owner` uid and gid (`chown -R`, symbolic links not followed)
/// when the root is not theirs already: the first start that switches,
/// after runs as root. Returns whether it handed them over.
pub fn prepare_root(root: &Path, owner: Option<(u32, u32)>) -> Result<bool, MaildirError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut missing = Vec::new();
    let mut dir = root;
    while !dir.exists() {
        missing.push(dir.to_owned());
        match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    for (i, dir) in missing.iter().rev().enumerate() {
        let mode = if i + 1 == missing.len() { 0o700 } else { 0o755 };
        match fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                .map_err(io("chmod", dir))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", dir)(e)),
        }
    }
    let Some((uid, gid)) = owner else {
        return Ok(false);
    };
    let meta = fs::metadata(root).map_err(io("stat", root))?;
    if (meta.uid(), meta.gid()) == (uid, gid) {
        return Ok(false);
    }
    // The root may be a symbolic link; nothing below it is followed.
    let list = |d: &Path| -> Result<Vec<PathBuf>, MaildirError> {
        fs::read_dir(d)
            .and_then(|entries| entries.map(|e| e.map(|e| e.path())).collect())
            .map_err(io("list", d))
    };
    std::os::unix::fs::chown(root, Some(uid), Some(gid)).map_err(io("chown", root))?;
    let mut todo = list(root)?;
    while let Some(path) = todo.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io("chown", &path))?;
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            todo.extend(list(&path)?);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_into_new_with_lf_line_endings() {
        let root = tempfile::tempdir().unwrap();
        let rcpt = Mailbox::new("User", "Local.test");
        let dir = maildir_of(root.path(), &rcpt, "mx.test").unwrap();
        assert_eq!(dir, root.path().join("local.test/user/Maildir"));
        let path = deliver(
            &dir,
            &ReversePath::Null,
            &rcpt,
            b"Subject: x\r\n\r\nhi\r\n",
            "mx.test",
        )
        .unwrap();
        assert!(path.starts_with(dir.join("new")));
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        for d in [root.path().join("local.test"), dir.clone(), dir.join("new")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "Return-Path: <>\nDelivered-To: User@Local.test\nSubject: x\n\nhi\n"
        );
        assert_eq!(fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn the_root_is_created_private_below_searchable_parents() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("srv/mail");
        assert!(!prepare_root(&root, None).unwrap());
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&top.path().join("srv")), 0o755);
        // Already there: nothing changes.
        assert!(!prepare_root(&root, None).unwrap());
    }

    #[test]
    fn a_full_disk_defers_with_4_3_1() {
        let full = MaildirError::Io {
            op: "write",
            path: PathBuf::from("x"),
            source: std::io::Error::from_raw_os_error(28), // ENOSPC
        };
        assert_eq!(full.status(), "4.3.1");
        assert!(!full.is_permanent());
        let other = MaildirError::Io {
            op: "write",
            path: PathBuf::from("x"),
            source: std::io::Error::from_raw_os_error(13), // EACCES
        };
        assert_eq!(other.status(), "4.3.0");
        let bad = MaildirError::BadName("a/b".into());
        assert_eq!((bad.status(), bad.is_permanent()), ("5.1.3", true));
    }

    #[test]
    fn names_that_escape_are_refused() {
        let root = Path::new("/nonexistent");
        for local in [
            "../etc",
            ".hidden",
            "a/b",
            "\"../../x\"",
            "\"..\"",
            "\"/abs\"",
        ] {
            assert!(matches!(
                maildir_of(root, &Mailbox::new(local, "x.test"), "mx"),
                Err(MaildirError::BadName(_))
            ));
        }
        let pm = maildir_of(root, &Mailbox::new("postmaster", ""), "mx.test").unwrap();
        assert_eq!(pm, root.join("mx.test/postmaster/Maildir"));
        // Needless quotes name the same mailbox.
        let quoted = maildir_of(root, &Mailbox::new("\"Alice\"", "x.test"), "mx").unwrap();
        assert_eq!(quoted, root.join("x.test/alice/Maildir"));
    }
}
