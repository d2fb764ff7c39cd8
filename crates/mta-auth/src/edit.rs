//! Changing the users file: what `mta-init user add|passwd|del|list`
//! calls.
//!
//! Every change takes the edit lock, reads the file, changes the lines
//! of one user and leaves every other byte as it was (comments, other
//! users, extra fields, lines we refuse), then replaces the file
//! atomically (`replace.rs`). The new hash is made before the lock is
//! taken, so an editor holds the lock for milliseconds.
//!
//! The user a line belongs to is found as loading finds it
//! ([`name_key`]): `passwd joe@EXAMPLE.com` changes the line of
//! `joe@example.com`. A line whose hash we refuse (a weak scheme) still
//! belongs to its user: `add` refuses that name, `passwd` replaces the
//! weak hash, which is how such a user is brought back.

use std::path::{Path, PathBuf};

use crate::error::AuthError;
use crate::name::{check_name, name_key};
use crate::new_hash::{hash_password, HashParams};
use crate::replace::{lock, replace};
use crate::users_file::{lines, parse_line, Line, ListedUser, UsersFile, Warning};

/// Edits one users file.
#[derive(Clone, Debug)]
pub struct UsersEditor {
    path: PathBuf,
    owner: Option<(u32, u32)>,
    params: HashParams,
}

impl UsersEditor {
    /// An editor of the file at `path`, keeping its owner and making
    /// hashes with the default [`HashParams`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UsersEditor {
            path: path.into(),
            owner: None,
            params: HashParams::default(),
        }
    }

    /// Gives the file this owner and group (uid, gid) at each change; with
    /// `None` (the default) it keeps the old file's, or ours for a new one.
    /// `mta-init` passes root and mtad's group, so that mtad can read the
    /// file (mode 0640) and not change it.
    pub fn with_owner(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    /// Makes new hashes with these parameters.
    pub fn with_hash_params(mut self, params: HashParams) -> Self {
        self.params = params;
        self
    }

    /// The file edited.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a user; refuses a name the file already has (even on a line
    /// whose hash is refused) and a name that cannot be written. Creates
    /// the file when there is none.
    pub fn add(&self, name: &str, password: &[u8]) -> Result<(), AuthError> {
        check(name)?;
        let hash = hash_password(password, self.params)?;
        self.change(name, |text, found| {
            if !found.is_empty() {
                return Err(AuthError::UserExists(name.to_owned()));
            }
            let mut out = text.to_vec();
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(format!("{name}:{hash}\n").as_bytes());
            Ok(out)
        })
    }

    /// Sets a new password; refuses a name the file does not have. The
    /// hash field of the user's line is replaced, its other fields kept.
    pub fn passwd(&self, name: &str, password: &[u8]) -> Result<(), AuthError> {
        check(name)?;
        let hash = hash_password(password, self.params)?;
        self.change(name, |text, found| {
            let Some(&first) = found.first() else {
                return Err(AuthError::NoSuchUser(name.to_owned()));
            };
            let mut out = Vec::with_capacity(text.len() + hash.len());
            for (index, raw) in lines(text).enumerate() {
                if index == first {
                    out.extend_from_slice(&with_hash(raw, &hash));
                } else {
                    out.extend_from_slice(raw);
                }
                out.push(b'\n');
            }
            Ok(out)
        })
    }

    /// Removes a user (every line of that name); refuses a name the file
    /// does not have.
    pub fn del(&self, name: &str) -> Result<(), AuthError> {
        check(name)?;
        self.change(name, |text, found| {
            if found.is_empty() {
                return Err(AuthError::NoSuchUser(name.to_owned()));
            }
            let mut out = Vec::with_capacity(text.len());
            for (index, raw) in lines(text).enumerate() {
                if !found.contains(&index) {
                    out.extend_from_slice(raw);
                    out.push(b'\n');
                }
            }
            Ok(out)
        })
    }

    /// The users that can log in, in file order, and the warnings of the
    /// lines that cannot; no file is no users.
    pub fn list(&self) -> Result<(Vec<ListedUser>, Vec<Warning>), AuthError> {
        let text = read(&self.path)?;
        let (file, warnings) = UsersFile::parse(&self.path, &text);
        Ok((file.users().to_vec(), warnings))
    }

    /// Under the lock: reads the file, finds the lines (indexes from 0) of
    /// `name`, and writes what `edit` makes of them.
    fn change(
        &self,
        name: &str,
        edit: impl FnOnce(&[u8], &[usize]) -> Result<Vec<u8>, AuthError>,
    ) -> Result<(), AuthError> {
        let _lock = lock(&self.path)?;
        let text = read(&self.path)?;
        let key = name_key(name);
        let found: Vec<usize> = lines(&text)
            .enumerate()
            .filter(|(_, raw)| {
                matches!(parse_line(raw), Line::User { name: n, .. } if name_key(n) == key)
            })
            .map(|(index, _)| index)
            .collect();
        let out = edit(&text, &found)?;
        replace(&self.path, &out, self.owner)
    }
}

/// The name check, as an edit error.
fn check(name: &str) -> Result<(), AuthError> {
    check_name(name).map_err(|problem| AuthError::BadName {
        name: name.to_owned(),
        problem,
    })
}

/// The file's bytes; none when there is no file.
fn read(path: &Path) -> Result<Vec<u8>, AuthError> {
    match std::fs::read(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AuthError::io(path, "read", e)),
    }
}

/// A user line with its hash field replaced (`name:hash[:rest]`), its
/// CR kept if it had one.
fn with_hash(raw: &[u8], hash: &str) -> Vec<u8> {
    let (body, cr) = match raw.strip_suffix(b"\r") {
        Some(body) => (body, &b"\r"[..]),
        None => (raw, &b""[..]),
    };
    let mut fields = body.splitn(3, |&b| b == b':');
    let name = fields.next().unwrap_or_default();
    let _old = fields.next();
    let mut out = name.to_vec();
    out.push(b':');
    out.extend_from_slice(hash.as_bytes());
    if let Some(rest) = fields.next() {
        out.push(b':');
        out.extend_from_slice(rest);
    }
    out.extend_from_slice(cr);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_hash::FAST;
    use crate::stored_hash::Scheme;
    use std::os::unix::fs::MetadataExt;

    fn editor(dir: &Path) -> UsersEditor {
        UsersEditor::new(dir.join("users")).with_hash_params(FAST)
    }

    fn verify(path: &Path, name: &str, password: &[u8]) -> Option<String> {
        let (file, _) = UsersFile::load(path).unwrap();
        file.verify(name, password).map(str::to_owned)
    }

    #[test]
    fn add_passwd_del_list() {
        let dir = tempfile::tempdir().unwrap();
        let ed = editor(dir.path());
        assert_eq!(ed.list().unwrap(), (vec![], vec![]));
        ed.add("joe", b"one").unwrap();
        ed.add("ann@Example.com", b"two").unwrap();
        assert_eq!(verify(ed.path(), "joe", b"one").as_deref(), Some("joe"));
        assert_eq!(
            verify(ed.path(), "ann@example.COM", b"two").as_deref(),
            Some("ann@Example.com")
        );
        assert!(matches!(ed.add("joe", b"x"), Err(AuthError::UserExists(n)) if n == "joe"));
        assert!(matches!(
            ed.add("ann@EXAMPLE.com", b"x"),
            Err(AuthError::UserExists(_))
        ));
        ed.passwd("joe", b"three").unwrap();
        assert_eq!(verify(ed.path(), "joe", b"one"), None);
        assert_eq!(verify(ed.path(), "joe", b"three").as_deref(), Some("joe"));
        assert!(matches!(ed.passwd("bob", b"x"), Err(AuthError::NoSuchUser(n)) if n == "bob"));
        let (users, warnings) = ed.list().unwrap();
        assert!(warnings.is_empty());
        let names: Vec<_> = users.iter().map(|u| (u.name.as_str(), u.scheme)).collect();
        assert_eq!(
            names,
            [
                ("joe", Scheme::Argon2id),
                ("ann@Example.com", Scheme::Argon2id)
            ]
        );
        ed.del("joe").unwrap();
        assert!(matches!(ed.del("joe"), Err(AuthError::NoSuchUser(_))));
        assert_eq!(verify(ed.path(), "joe", b"three"), None);
        ed.del("ann@example.com").unwrap();
        assert_eq!(std::fs::read(ed.path()).unwrap(), b"");
    }

    #[test]
    fn edits_keep_every_other_byte() {
        let dir = tempfile::tempdir().unwrap();
        let ed = editor(dir.path());
        let before = "# users\r\n\
                      weak:{PLAIN}secret:1000:1000::/home/weak::quota=1G\r\n\
                      \n\
                      bad\u{1}:x\n\
                      other:{PLAIN}x\n\
                      weak:{PLAIN}second\n\
                      last-without-newline:{PLAIN}y";
        std::fs::write(ed.path(), before).unwrap();
        // `add` of a name that only a refused line has is still refused.
        assert!(matches!(
            ed.add("weak", b"x"),
            Err(AuthError::UserExists(_))
        ));
        ed.passwd("weak", b"strong").unwrap();
        let after = std::fs::read_to_string(ed.path()).unwrap();
        let lines: Vec<&str> = after.split('\n').collect();
        assert_eq!(lines[0], "# users\r");
        let (name, rest) = lines[1].split_once(':').unwrap();
        assert_eq!(name, "weak");
        assert!(rest.starts_with("{ARGON2ID}$argon2id$"), "{rest}");
        assert!(
            rest.ends_with(":1000:1000::/home/weak::quota=1G\r"),
            "{rest}"
        );
        assert_eq!(
            lines[2..],
            [
                "",
                "bad\u{1}:x",
                "other:{PLAIN}x",
                "weak:{PLAIN}second",
                "last-without-newline:{PLAIN}y",
                ""
            ]
        );
        assert_eq!(
            verify(ed.path(), "weak", b"strong").as_deref(),
            Some("weak")
        );
        ed.add("new", b"pw").unwrap();
        let after = std::fs::read_to_string(ed.path()).unwrap();
        assert!(
            after.contains("last-without-newline:{PLAIN}y\nnew:{ARGON2ID}"),
            "{after}"
        );
        // `del` takes every line of the name, and only those.
        ed.del("weak").unwrap();
        let after = std::fs::read_to_string(ed.path()).unwrap();
        assert!(!after.contains("weak"), "{after}");
        assert!(after.starts_with("# users\r\n\nbad\u{1}:x\nother:{PLAIN}x\nlast-without-newline"));
    }

    #[test]
    fn bad_names_and_passwords_are_refused_before_any_change() {
        let dir = tempfile::tempdir().unwrap();
        let ed = editor(dir.path());
        for name in ["", "a:b", "a b", "a\nb", "#a", "a\tb"] {
            assert!(
                matches!(ed.add(name, b"pw"), Err(AuthError::BadName { .. })),
                "{name:?}"
            );
        }
        for password in [&b""[..], b"a\0b"] {
            assert!(matches!(
                ed.add("joe", password),
                Err(AuthError::BadPassword(_))
            ));
        }
        assert!(!ed.path().exists());
    }

    #[test]
    fn a_new_file_is_0640_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let ed = editor(dir.path());
        ed.add("joe", b"pw").unwrap();
        let mode = std::fs::metadata(ed.path()).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640);
    }

    /// Editors that race must not lose each other's change: each thread
    /// adds its own users; without the lock, read-modify-write cycles
    /// overlap and some lines go missing.
    #[test]
    fn concurrent_editors_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let threads: Vec<_> = (0..6)
            .map(|t| {
                let ed = UsersEditor::new(&path).with_hash_params(FAST);
                std::thread::spawn(move || {
                    for i in 0..8 {
                        ed.add(&format!("user{t}-{i}"), b"pw").unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (users, warnings) = UsersEditor::new(&path).list().unwrap();
        assert!(warnings.is_empty());
        assert_eq!(users.len(), 48);
    }

    #[test]
    fn with_hash_table() {
        let table: &[(&[u8], &[u8])] = &[
            (b"joe:old", b"joe:NEW"),
            (b"joe:", b"joe:NEW"),
            (b"joe", b"joe:NEW"),
            (b"joe:old:1:2::/home", b"joe:NEW:1:2::/home"),
            (b"joe:old\r", b"joe:NEW\r"),
        ];
        for (raw, want) in table {
            assert_eq!(with_hash(raw, "NEW"), *want, "{raw:?}");
        }
    }
}
