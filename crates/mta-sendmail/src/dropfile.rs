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
//! The directory is every local user's, so [`write`] keeps to a
//! [`Quota`]: a user has at most `per_user` files waiting, and no file
//! is written that would leave its file system less free space than
//! `min_free_space`. The drop group may add names to the directory but
//! not list it, so a user's files are counted by their names: the
//! `n`-th is `drop-<uid>-<n>`, and a new file takes the first free `n`
//! (a rename that never replaces: two writers never take one name).
//!
//! Who submitted the message is not in the file: it is the file's owner,
//! which a user cannot choose (`mta-sendmail` is set-group-id, not
//! set-user-id), and mtad reads it from the file itself.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mta_envelope::{BodyType, Envelope, Ret, ReversePath};
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

/// Longest a string of the submission may be, in octets.
const MAX_VALUE: usize = 4096;

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

/// Reads a drop file back, checking it: the format, the length, that
/// no string holds a control character (they go into envelopes and
/// headers), that there is a recipient, and that each ORCPT is one a
/// session would take, for one of the recipients.
pub fn decode(bytes: &[u8]) -> Result<Submission, DropError> {
    let (line, content) = envelope_line(bytes)?;
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

/// The submission of a drop file too big to be read whole, from its first
/// octets `head`: the envelope line, checked as [`decode`] checks it, and
/// the text cut after its header section (or where `head` ends). Only
/// for telling its sender why it was not sent: the text is not all there.
pub fn decode_head(head: &[u8]) -> Result<Submission, DropError> {
    let (line, content) = envelope_line(head)?;
    let mut submission = line.submission;
    check(&submission)?;
    let cut = memchr::memmem::find(content, b"\r\n\r\n").map_or(content.len(), |at| at + 4);
    submission.content = content[..cut].to_vec();
    Ok(submission)
}

/// The envelope line of a drop file, and what follows it.
fn envelope_line(bytes: &[u8]) -> Result<(Line, &[u8]), DropError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DropError::NotADropFile)?;
    let window = &rest[..rest.len().min(MAX_ENVELOPE_LINE)];
    let end = window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| DropError::Envelope("no end of line".into()))?;
    let line: Line =
        serde_json::from_slice(&rest[..end]).map_err(|e| DropError::Envelope(e.to_string()))?;
    Ok((line, &rest[end + 1..]))
}

/// How much of a drop file [`decode_head`] needs: the envelope line at
/// its longest and room for a header section.
pub const HEAD_LEN: usize = MAGIC.len() + MAX_ENVELOPE_LINE + 1 + (256 << 10);

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
    if strings.any(|t| t.chars().any(char::is_control) || t.len() > MAX_VALUE) {
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
    check_orcpt(s)
}

/// Each ORCPT is for one of the recipients, and is what a session would
/// have made of an ORCPT parameter (`mta_smtp::check_orcpt`: the form
/// `addr-type;address`, RFC 3461's 500 characters, no control
/// character): the importing client sends it to mtad's session again.
/// The session bounds the addr-type only by its command line, so here
/// the whole value is bounded as every string is.
fn check_orcpt(s: &Submission) -> Result<(), DropError> {
    if s.orcpt.is_empty() {
        return Ok(());
    }
    let recipients: HashSet<&str> = s.recipients.iter().map(String::as_str).collect();
    for (recipient, orcpt) in &s.orcpt {
        if !recipients.contains(recipient.as_str()) {
            return Err(DropError::Invalid(
                "an ORCPT is for an address that is not one of the recipients",
            ));
        }
        if orcpt.len() > MAX_VALUE {
            return Err(DropError::Invalid("an ORCPT is over 4096 octets"));
        }
        mta_smtp::check_orcpt(orcpt).map_err(|e| DropError::Invalid(e.reason()))?;
    }
    Ok(())
}

/// The recipients of one NOTIFY value, and the ORCPT of those that
/// have one.
#[derive(Default)]
struct Group {
    recipients: Vec<String>,
    orcpt: BTreeMap<String, String>,
}

/// The submissions a message taken over SMTP makes (`-bs` with mtad
/// down, whose stand-alone session took it): one per NOTIFY value among
/// its recipients, as a drop file has one NOTIFY for all of them; each
/// recipient's ORCPT (decoded, as the session keeps it) goes with it,
/// as a drop file keeps one per recipient. `token` is made unique per
/// submission.
pub fn submissions_of(
    envelope: &Envelope,
    content: &[u8],
    time: u64,
    token: &str,
) -> Vec<Submission> {
    let mut groups: Vec<(Option<String>, Group)> = Vec::new();
    for r in &envelope.recipients {
        let notify = r.notify.map(|n| n.value());
        let group = match groups.iter().position(|(n, _)| *n == notify) {
            Some(at) => &mut groups[at].1,
            None => {
                groups.push((notify, Group::default()));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        let address = r.address.to_string();
        if let Some(orcpt) = &r.orcpt {
            // A recipient given twice: the first one's.
            group
                .orcpt
                .entry(address.clone())
                .or_insert_with(|| orcpt.clone());
        }
        group.recipients.push(address);
    }
    let sender = match &envelope.sender {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(m) => m.to_string(),
    };
    groups
        .into_iter()
        .enumerate()
        .map(|(i, (notify, group))| Submission {
            sender: Some(sender.clone()),
            full_name: None,
            recipients: group.recipients,
            notify,
            orcpt: group.orcpt,
            ret: envelope.ret.map(|r| match r {
                Ret::Full => "FULL".to_owned(),
                Ret::Hdrs => "HDRS".to_owned(),
            }),
            envid: envelope.envid.clone(),
            eight_bit: envelope.body == BodyType::EightBitMime,
            time,
            token: format!("{token}.{i}"),
            content: content.to_vec(),
        })
        .collect()
}

/// What [`write`] keeps the drop directory to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Drop files one user may have waiting at once.
    pub per_user: u32,
    /// Free space (as an unprivileged user may use it) that a new file
    /// must leave on the directory's file system.
    pub min_free_space: u64,
}

impl Quota {
    /// The quota `[sendmail]` sets.
    pub fn of(config: &mta_config::sendmail::SendmailConfig) -> Quota {
        Quota {
            per_user: config.drop_max_per_user,
            min_free_space: config.drop_min_free_space.0,
        }
    }
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
    /// The user already has `per_user` files waiting.
    #[error("{per_user} messages of this user already wait in {dir} (sendmail.drop_max_per_user)")]
    Full {
        /// The drop directory.
        dir: PathBuf,
        /// The quota.
        per_user: u32,
    },
    /// The file would leave its file system too little free space.
    #[error(
        "{dir} has {available} octets free; a {size}-octet message would leave less than \
         the {reserve} that must stay free (sendmail.drop_min_free_space)"
    )]
    NoSpace {
        /// The drop directory.
        dir: PathBuf,
        /// Free space, as an unprivileged user may use it.
        available: u64,
        /// The drop file's size.
        size: u64,
        /// `Quota::min_free_space`.
        reserve: u64,
    },
}

impl WriteError {
    /// True when nothing could be created at all (`EX_CANTCREAT`); the
    /// other failures are worth trying again later (`EX_TEMPFAIL`).
    pub fn is_cant_create(&self) -> bool {
        matches!(self, WriteError::Create { .. })
    }
}

/// Writes `submission` into the drop directory `dir` as a new file, and
/// returns its path once it is durable: write, fsync, rename (never over
/// another file) to the user's first free name, then the directory
/// synced. Within `quota`: the free space is measured first, and a user
/// with `quota.per_user` files waiting gets [`WriteError::Full`] (the
/// file written is removed again).
///
/// The file is 0444: its owner is the user (who cannot reach it: the
/// directory, 1730, lets only mtad's user list or enter it, and the
/// drop group add to it) and mtad reads it as "others".
pub fn write(dir: &Path, submission: &Submission, quota: &Quota) -> Result<PathBuf, WriteError> {
    let bytes = encode(submission);
    check_space(dir, bytes.len() as u64, quota.min_free_space)?;
    let unique = format!(
        "{}-{}-{}",
        submission.time,
        std::process::id(),
        submission.token.replace('.', "-")
    );
    let tmp = dir.join(format!("{TMP_PREFIX}{unique}"));
    let uid = nix::unistd::geteuid();
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
        let Some(path) = take_name(dir, &tmp, uid.as_raw(), quota.per_user)? else {
            return Ok(None);
        };
        sync_dir(dir, &file)?;
        Ok(Some(path))
    })();
    match written {
        Ok(Some(path)) => Ok(path),
        Ok(None) => {
            let _ = std::fs::remove_file(&tmp);
            Err(WriteError::Full {
                dir: dir.to_owned(),
                per_user: quota.per_user,
            })
        }
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            Err(WriteError::Write { path: tmp, source })
        }
    }
}

/// The name of user `uid`'s `n`-th drop file.
fn drop_name(uid: u32, n: u32) -> String {
    format!("{DROP_PREFIX}{uid}-{n}")
}

/// Renames `tmp` to the first of the user's `per_user` names that no file
/// has; None when every one is taken.
fn take_name(dir: &Path, tmp: &Path, uid: u32, per_user: u32) -> std::io::Result<Option<PathBuf>> {
    for n in 0..per_user {
        let path = dir.join(drop_name(uid, n));
        match nix::fcntl::renameat2(
            None,
            tmp,
            None,
            &path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(Some(path)),
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// [`WriteError::NoSpace`] unless `size` more octets leave at least
/// `reserve` free on `dir`'s file system (counted as an unprivileged user
/// may use it: the blocks kept for root are not the drop's).
fn check_space(dir: &Path, size: u64, reserve: u64) -> Result<(), WriteError> {
    if reserve == 0 {
        return Ok(());
    }
    let fs = nix::sys::statvfs::statvfs(dir).map_err(|e| WriteError::Create {
        dir: dir.to_owned(),
        source: e.into(),
    })?;
    let available = (fs.blocks_available() as u64).saturating_mul(fs.fragment_size() as u64);
    if available < size.saturating_add(reserve) {
        return Err(WriteError::NoSpace {
            dir: dir.to_owned(),
            available,
            size,
            reserve,
        });
    }
    Ok(())
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
            orcpt: BTreeMap::from([(
                "alice@local.test".to_owned(),
                "rfc822;Alice+Smith=1@old.test".to_owned(),
            )]),
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
        // ORCPT as a session decoded it, by the recipient as given.
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(r#""orcpt":{"alice@local.test":"rfc822;Alice+Smith=1@old.test"}"#),
            "{text}"
        );
        // No ORCPT, no field: a file an older mtad can read.
        let none = Submission {
            orcpt: BTreeMap::new(),
            ..sample()
        };
        let bytes = encode(&none);
        assert!(!String::from_utf8_lossy(&bytes).contains("orcpt"));
        assert_eq!(decode(&bytes).unwrap(), none);
    }

    /// A drop file written before ORCPT was kept (no such field) still
    /// reads, with no ORCPT.
    #[test]
    fn a_drop_file_without_orcpt_still_decodes() {
        let old = b"MTA-DROP 1\n{\"submission\":{\"sender\":\"root\",\"full_name\":null,\
            \"recipients\":[\"bob\"],\"notify\":\"NEVER\",\"ret\":null,\"envid\":null,\
            \"eight_bit\":false,\"time\":1700000000,\"token\":\"1.2.0\"},\"length\":3}\nx\r\n";
        let s = decode(old).unwrap();
        assert_eq!(s.recipients, ["bob"]);
        assert_eq!(s.notify.as_deref(), Some("NEVER"));
        assert!(s.orcpt.is_empty());
        assert_eq!(s.content, b"x\r\n");
    }

    /// An ORCPT a session would refuse, or for no recipient, makes the
    /// file invalid, each with its own reason.
    #[test]
    fn bad_orcpt_values_are_refused() {
        use mta_smtp::OrcptError;
        let with = |recipient: &str, orcpt: &str| Submission {
            orcpt: BTreeMap::from([(recipient.to_owned(), orcpt.to_owned())]),
            ..sample()
        };
        let too_long = format!("rfc822;{}@old.test", "a".repeat(493));
        let not_a_recipient = "an ORCPT is for an address that is not one of the recipients";
        for (bad, why) in [
            (
                with("carol@local.test", "rfc822;c@old.test"),
                not_a_recipient,
            ),
            // As given: "bob" is a recipient, "bob@local.test" is not.
            (with("bob@local.test", "rfc822;b@old.test"), not_a_recipient),
            (with("bob", "b@old.test"), OrcptError::NoAddrType.reason()),
            (with("bob", ";b@old.test"), OrcptError::BadAddrType.reason()),
            (
                with("bob", "rfc 822;b@old.test"),
                OrcptError::BadAddrType.reason(),
            ),
            (with("bob", "rfc822;"), OrcptError::Empty.reason()),
            (with("bob", &too_long), OrcptError::TooLong.reason()),
            (
                with("bob", &format!("{};b@old.test", "x".repeat(4096))),
                "an ORCPT is over 4096 octets",
            ),
            (
                with("bob", "rfc822;b\u{7f}@old.test"),
                OrcptError::Control.reason(),
            ),
            (
                with("bob", "rfc822;b@old.test\r\nX: y"),
                OrcptError::Control.reason(),
            ),
        ] {
            assert_eq!(
                decode(&encode(&bad)),
                Err(DropError::Invalid(why)),
                "{:?}",
                bad.orcpt
            );
        }
        // The longest a session takes is taken.
        let longest = format!("rfc822;{}", "a".repeat(500));
        let ok = with("bob", &longest);
        assert_eq!(decode(&encode(&ok)).unwrap(), ok);
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

    const ROOMY: Quota = Quota {
        per_user: 1000,
        min_free_space: 0,
    };

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// A message taken over SMTP makes one submission per NOTIFY value,
    /// with the envelope's sender (`<>` as ""), RET, ENVID and BODY, and
    /// each recipient's ORCPT (decoded), and each reads back the same
    /// from its drop file.
    #[test]
    fn a_message_taken_over_smtp_makes_a_submission_per_notify() {
        let origin = crate::test_origin();
        let rcpts = [
            "RCPT TO:<a@x.test>",
            "RCPT TO:<b@x.test> NOTIFY=NEVER ORCPT=rfc822;original+2Bb@old.test",
            "RCPT TO:<c@x.test> ORCPT=utf-8;c+40old.test",
        ]
        .map(str::to_owned);
        let mail = "MAIL FROM:<s@x.test> BODY=8BITMIME RET=FULL ENVID=e1";
        let e = mta_smtp::envelope_of_commands(mail, &rcpts, origin.clone(), 5).unwrap();
        let made = submissions_of(&e, b"Subject: s\r\n\r\nx\r\n", 9, "77.1");
        let groups: Vec<(Vec<String>, Option<String>, String)> = made
            .iter()
            .map(|s| (s.recipients.clone(), s.notify.clone(), s.token.clone()))
            .collect();
        let (a, b, c) = ("a@x.test", "b@x.test", "c@x.test");
        assert_eq!(
            groups,
            [
                (vec![a.to_owned(), c.to_owned()], None, "77.1.0".to_owned()),
                (
                    vec![b.to_owned()],
                    Some("NEVER".to_owned()),
                    "77.1.1".to_owned()
                ),
            ]
        );
        let orcpt: Vec<BTreeMap<String, String>> = made.iter().map(|s| s.orcpt.clone()).collect();
        assert_eq!(
            orcpt,
            [
                BTreeMap::from([(c.to_owned(), "utf-8;c@old.test".to_owned())]),
                BTreeMap::from([(b.to_owned(), "rfc822;original+b@old.test".to_owned())]),
            ]
        );
        for s in &made {
            assert_eq!(s.sender.as_deref(), Some("s@x.test"));
            assert_eq!(
                (s.ret.as_deref(), s.envid.as_deref()),
                (Some("FULL"), Some("e1"))
            );
            assert!(s.eight_bit && s.time == 9);
            assert_eq!(s.content, b"Subject: s\r\n\r\nx\r\n");
            assert_eq!(&decode(&encode(s)).unwrap(), s);
        }
        let null = mta_smtp::envelope_of_commands("MAIL FROM:<>", &rcpts[..1], origin, 5).unwrap();
        let made = submissions_of(&null, b"x\r\n", 9, "t");
        assert_eq!(made[0].sender.as_deref(), Some(""));
        assert_eq!(&decode(&encode(&made[0])).unwrap(), &made[0]);
    }

    /// The head of a drop file gives its envelope and header section.
    #[test]
    fn the_head_of_a_drop_file_gives_its_envelope_and_header() {
        let mut s = sample();
        s.content = b"Subject: big\r\nX: y\r\n\r\nbody line\r\n".repeat(3);
        let bytes = encode(&s);
        let head = decode_head(&bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(head.content, b"Subject: big\r\nX: y\r\n\r\n");
        assert_eq!(
            Submission {
                content: Vec::new(),
                ..head
            },
            Submission {
                content: Vec::new(),
                ..s.clone()
            }
        );
        // A header section longer than the head: what there is.
        let cut = encode(&s);
        let short = &cut[..cut.len() - s.content.len() + 8];
        assert_eq!(decode_head(short).unwrap().content, b"Subject:");
        assert!(matches!(decode_head(b"junk"), Err(DropError::NotADropFile)));
    }

    #[test]
    fn write_leaves_one_whole_file_and_no_temporary() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let s = sample();
        let path = write(dir.path(), &s, &ROOMY).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        assert_eq!(names_in(dir.path()), [format!("drop-{uid}-0")]);
        assert_eq!(path, dir.path().join(format!("drop-{uid}-0")));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o444);
        assert_eq!(decode(&std::fs::read(&path).unwrap()).unwrap(), s);
        let missing = dir.path().join("missing");
        assert!(matches!(
            write(&missing, &s, &ROOMY),
            Err(WriteError::Create { .. })
        ));
    }

    /// A user's files take the first free names; with `per_user` of them
    /// waiting the next is refused, and nothing is left of it; one gone,
    /// its name is taken again. Names of other users are not counted.
    #[test]
    fn a_user_has_at_most_per_user_files_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let quota = Quota {
            per_user: 3,
            min_free_space: 0,
        };
        std::fs::write(dir.path().join(drop_name(uid + 1, 0)), "another user's").unwrap();
        let s = sample();
        for _ in 0..3 {
            write(dir.path(), &s, &quota).unwrap();
        }
        let full = write(dir.path(), &s, &quota).unwrap_err();
        assert!(
            matches!(full, WriteError::Full { per_user: 3, .. }),
            "{full}"
        );
        assert!(!full.is_cant_create());
        assert!(
            full.to_string().contains("sendmail.drop_max_per_user"),
            "{full}"
        );
        let mine = |n| format!("drop-{uid}-{n}");
        let other = drop_name(uid + 1, 0);
        assert_eq!(
            names_in(dir.path()),
            [mine(0), mine(1), mine(2), other.clone()]
        );
        std::fs::remove_file(dir.path().join(mine(1))).unwrap();
        let again = write(dir.path(), &s, &quota).unwrap();
        assert_eq!(again, dir.path().join(mine(1)));
        assert_eq!(names_in(dir.path()), [mine(0), mine(1), mine(2), other]);
    }

    /// A file that would leave less than the reserve free is not written
    /// at all; the message says what is free and what must stay free.
    #[test]
    fn no_file_eats_into_the_free_space_reserve() {
        let dir = tempfile::tempdir().unwrap();
        let quota = Quota {
            per_user: 10,
            min_free_space: u64::MAX / 4,
        };
        let e = write(dir.path(), &sample(), &quota).unwrap_err();
        let WriteError::NoSpace {
            available,
            size,
            reserve,
            ..
        } = &e
        else {
            panic!("{e}");
        };
        let (available, size, reserve) = (*available, *size, *reserve);
        assert!(available > 0 && available < reserve);
        assert_eq!(size, encode(&sample()).len() as u64);
        assert!(
            e.to_string().contains("sendmail.drop_min_free_space"),
            "{e}"
        );
        assert!(names_in(dir.path()).is_empty());
        // A reserve below what is free (with room for what other
        // processes write meanwhile) lets it through.
        let room = Quota {
            per_user: 10,
            min_free_space: available.saturating_sub(size + (256 << 20)).max(1),
        };
        write(dir.path(), &sample(), &room).unwrap();
    }
}
