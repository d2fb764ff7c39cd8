//! The drop directory's files: a [`Submission`] left for mtad while it
//! cannot take it (stopped, restarting, or out of space).
//!
//! A drop file is a first line `MTA-DROP 1`, one line of JSON (the
//! submission without its text, and `length`, the text's octets), then
//! the text. [`write`] makes it appear whole or not at all: the file is
//! written under a `tmp-` name, fsynced, renamed to its `drop-` name
//! (never over another file), and the directory is synced, so a crash
//! never leaves half a message where mtad looks. [`decode`] checks
//! everything before mtad trusts any of it: the user wrote this file.
//!
//! Who submitted the message is not in the file: it is the file's owner,
//! which a user cannot choose (`mta-sendmail` is set-group-id, not
//! set-user-id), and mtad reads it from the file itself.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compose::Submission;

/// The first line of a drop file of this format.
const MAGIC: &[u8] = b"MTA-DROP 1\n";

/// What names of a drop directory mean.
pub const DROP_PREFIX: &str = "drop-";
/// A file still being written (or left by a crash while it was).
pub const TMP_PREFIX: &str = "tmp-";
/// A drop file mtad could not use, set aside for the operator.
pub const BAD_PREFIX: &str = "bad-";

/// The most recipients a drop file may name.
pub const MAX_RECIPIENTS: usize = 10_000;

/// Longest the JSON line may be.
const MAX_ENVELOPE_LINE: usize = 1 << 20;

/// The JSON line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    submission: Submission,
    length: u64,
}

/// Why a drop file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropError {
    /// Not this format: another first line.
    #[error("not a drop file (no MTA-DROP 1 line)")]
    NotADropFile,
    /// The envelope line cannot be read.
    #[error("the envelope line is unreadable: {0}")]
    Envelope(String),
    /// The text is not as long as the envelope line says.
    #[error("the message text is {found} octets, the envelope line says {said}")]
    Length {
        /// What the file holds.
        found: u64,
        /// What the envelope line says.
        said: u64,
    },
    /// A value no submission can hold.
    #[error("{0}")]
    Invalid(&'static str),
}

/// The bytes of a drop file for `submission`.
pub fn encode(submission: &Submission) -> Vec<u8> {
    let line = Line {
        submission: Submission {
            content: Vec::new(),
            ..submission.clone()
        },
        length: submission.content.len() as u64,
    };
    let json = serde_json::to_vec(&line).expect("a submission serializes");
    let mut out = Vec::with_capacity(MAGIC.len() + json.len() + 1 + submission.content.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&json);
    out.push(b'\n');
    out.extend_from_slice(&submission.content);
    out
}

/// Reads a drop file back, checking it: the format, the length, and
/// that no string holds a control character (they go into envelopes and
/// headers) and there is a recipient.
pub fn decode(bytes: &[u8]) -> Result<Submission, DropError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DropError::NotADropFile)?;
    let window = &rest[..rest.len().min(MAX_ENVELOPE_LINE)];
    let end = window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| DropError::Envelope("no end of line".into()))?;
    let line: Line =
        serde_json::from_slice(&rest[..end]).map_err(|e| DropError::Envelope(e.to_string()))?;
    let content = &rest[end + 1..];
    if content.len() as u64 != line.length {
        return Err(DropError::Length {
            found: content.len() as u64,
            said: line.length,
        });
    }
    let mut submission = line.submission;
    check(&submission)?;
    submission.content = content.to_vec();
    Ok(submission)
}

/// What a decoded submission must be before anything uses it.
fn check(s: &Submission) -> Result<(), DropError> {
    if s.recipients.is_empty() || s.recipients.len() > MAX_RECIPIENTS {
        return Err(DropError::Invalid("no recipient, or too many"));
    }
    let mut strings = s
        .recipients
        .iter()
        .chain(&s.sender)
        .chain(&s.full_name)
        .chain(&s.notify)
        .chain(&s.ret)
        .chain(&s.envid)
        .chain([&s.token]);
    if strings.any(|t| t.chars().any(char::is_control) || t.len() > 4096) {
        return Err(DropError::Invalid(
            "a control character, or a value too long",
        ));
    }
    if s.notify.as_deref().is_some_and(|n| {
        n.split(',')
            .any(|w| !["NEVER", "SUCCESS", "FAILURE", "DELAY"].contains(&w))
    }) || s.ret.as_deref().is_some_and(|r| r != "FULL" && r != "HDRS")
        || s.envid
            .as_deref()
            .is_some_and(|e| !e.bytes().all(|b| (0x21..0x7f).contains(&b)))
        || s.token.is_empty()
        || !s
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err(DropError::Invalid(
            "a DSN parameter or the token is malformed",
        ));
    }
    Ok(())
}

/// Why [`write`] failed, and whether anything was created at all (the
/// exit status differs: `EX_CANTCREAT` against `EX_TEMPFAIL`).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// No file could be created in the directory.
    #[error("cannot create a file in {dir}: {source}")]
    Create {
        /// The drop directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing, syncing or renaming the file failed (it was removed).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `submission` into the drop directory `dir` as a new file, and
/// returns its path once it is durable: write, fsync, rename (never over
/// another file), then the directory synced.
///
/// The file is 0444: its owner is the user (who cannot reach it: the
/// directory, 1730, lets only mtad's user list or enter it, and the
/// drop group add to it) and mtad reads it as "others".
pub fn write(dir: &Path, submission: &Submission) -> Result<PathBuf, WriteError> {
    let bytes = encode(submission);
    let unique = format!(
        "{}-{}-{}",
        submission.time,
        std::process::id(),
        submission.token.replace('.', "-")
    );
    let tmp = dir.join(format!("{TMP_PREFIX}{unique}"));
    let path = dir.join(format!("{DROP_PREFIX}{unique}"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|source| WriteError::Create {
            dir: dir.to_owned(),
            source,
        })?;
    let written = (|| {
        // The mode whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o444))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        nix::fcntl::renameat2(
            None,
            &tmp,
            None,
            &path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )?;
        sync_dir(dir, &file)
    })();
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(WriteError::Write { path, source });
    }
    Ok(path)
}

/// Makes the rename durable. The drop group may not read the directory
/// (mode 1730), so it cannot be opened for an fsync; then the whole file
/// system is synced through the file (syncfs(2)), which covers the
/// directory entry too.
fn sync_dir(dir: &Path, file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    match std::fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            nix::unistd::syncfs(file.as_raw_fd()).map_err(std::io::Error::from)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Submission {
        Submission {
            sender: Some("root".into()),
            full_name: Some("Cron Daemon".into()),
            recipients: vec!["alice@local.test".into(), "bob".into()],
            notify: Some("SUCCESS,DELAY".into()),
            ret: Some("HDRS".into()),
            envid: Some("e1".into()),
            eight_bit: true,
            time: 1_700_000_000,
            token: "123.456".into(),
            content: b"Subject: s\r\n\r\nline\r\nMTA-DROP 1\n\r\n".to_vec(),
        }
    }

    #[test]
    fn a_submission_round_trips() {
        let s = sample();
        let bytes = encode(&s);
        assert!(bytes.starts_with(b"MTA-DROP 1\n{"));
        assert_eq!(decode(&bytes).unwrap(), s);
    }

    #[test]
    fn damaged_files_are_refused() {
        let bytes = encode(&sample());
        assert_eq!(decode(b"hello"), Err(DropError::NotADropFile));
        // Truncated, or longer than said.
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DropError::Length { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert!(matches!(decode(&longer), Err(DropError::Length { .. })));
        // Every prefix fails, none panics.
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "{n}");
        }
        for bad in [
            Submission {
                recipients: vec![],
                ..sample()
            },
            Submission {
                sender: Some("a\r\nRCPT TO:<x>".into()),
                ..sample()
            },
            Submission {
                notify: Some("SOMETIMES".into()),
                ..sample()
            },
            Submission {
                ret: Some("ALL".into()),
                ..sample()
            },
            Submission {
                token: "../x".into(),
                ..sample()
            },
        ] {
            assert!(
                matches!(decode(&encode(&bad)), Err(DropError::Invalid(_))),
                "{bad:?}"
            );
        }
        let unknown = String::from_utf8(bytes.clone()).unwrap().replacen(
            "{\"submission\":{",
            "{\"submission\":{\"uid\":0,",
            1,
        );
        assert!(matches!(
            decode(unknown.as_bytes()),
            Err(DropError::Envelope(_))
        ));
    }

    #[test]
    fn write_leaves_one_whole_file_and_no_temporary() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        let path = write(dir.path(), &s).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(name.starts_with(DROP_PREFIX), "{name}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o444);
        assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), s);
        // The same name again is not written over.
        assert!(matches!(
            write(dir.path(), &s),
            Err(WriteError::Write { .. })
        ));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "the temporary file is gone");
        let missing = dir.path().join("missing");
        assert!(matches!(
            write(&missing, &s),
            Err(WriteError::Create { .. })
        ));
    }
}
