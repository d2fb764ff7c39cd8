//! The users file (`[auth] users_file`): one `name:hash` line per user,
//! read whole and checked at load, and the password check against it.
//!
//! The format is Dovecot's passwd-file as far as we need it: fields are
//! separated by `:`, the first is the name, the second the hash, further
//! fields (uid, gid, home, extra fields) are ignored; lines starting with
//! `#` and blank lines are skipped; a CR before the LF is dropped. So a
//! file made for Dovecot works here, and one we write works for Dovecot.
//!
//! A line that cannot be used does not stop the load: the user is refused
//! with a [`Warning`] naming the file, the line and why (a bad name, a
//! second line for a name already seen, a weak or unknown hash scheme, a
//! malformed or too costly hash), and the other users load. Only a file
//! that cannot be read at all is an error.
//!
//! A name that is not in the file costs the same time as a wrong password:
//! [`UsersFile::verify`] then checks the password against the hash of a
//! user of the file whose cost class (scheme and parameters) is the most
//! common one, and throws the result away. So the time of an answer does
//! not tell whether a name exists (as long as the file's users share their
//! scheme, which a file written by `mta-init user` does).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::AuthError;
use crate::name::{check_name, name_key, NameProblem};
use crate::new_hash::MAX_PASSWORD_LEN;
use crate::stored_hash::{HashProblem, Scheme, StoredHash};

/// What an empty file checks a password against, so that a check costs
/// the same whatever the file holds: an argon2id hash of a random
/// password with the default [`HashParams`](crate::HashParams), made once
/// with this crate.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$60SQMXo1Zfmm4BhVWDUu8A$oF2dorRZsvncUAAyZ/vv/ppO8xn63KF6U40awWJ7BB0";

/// A line of the users file that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub path: PathBuf,
    /// The line number, from 1.
    pub line: usize,
    /// The user name of the line, when it has a readable one.
    pub name: Option<String>,
    /// What is wrong.
    pub kind: WarningKind,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WarningKind {
    /// The line is not UTF-8.
    NotUtf8,
    /// No `:` and so no hash field.
    NoHash,
    /// The name cannot be a user's.
    BadName(NameProblem),
    /// An earlier line has the same name (compared as
    /// [`name_key`] does); that one is used.
    Duplicate {
        /// The line in force.
        first_line: usize,
    },
    /// The hash is refused.
    Hash(HashProblem),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.path.display(), self.line)?;
        match &self.name {
            Some(name) => write!(f, "user {name:?} refused: ")?,
            None => f.write_str("line ignored: ")?,
        }
        match &self.kind {
            WarningKind::NotUtf8 => f.write_str("not UTF-8"),
            WarningKind::NoHash => f.write_str("no ':' and no password hash"),
            WarningKind::BadName(problem) => write!(f, "bad user name: {problem}"),
            WarningKind::Duplicate { first_line } => {
                write!(f, "the same user as line {first_line}, which is used")
            }
            WarningKind::Hash(problem) => write!(f, "{problem}"),
        }
    }
}

/// One line of the file, as parsing sees it.
#[derive(Debug)]
pub(crate) enum Line<'a> {
    /// Blank or a comment.
    Skip,
    /// Not UTF-8.
    NotUtf8,
    /// A user line: the name field and the hash field (`None`: no `:`).
    User {
        name: &'a str,
        hash: Option<&'a str>,
    },
}

/// Splits one line (without its LF) into its fields.
pub(crate) fn parse_line(raw: &[u8]) -> Line<'_> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    let Ok(text) = std::str::from_utf8(raw) else {
        return Line::NotUtf8;
    };
    if text.trim().is_empty() || text.trim_start().starts_with('#') {
        return Line::Skip;
    }
    let mut fields = text.split(':');
    let name = fields.next().unwrap_or("");
    Line::User {
        name,
        hash: fields.next(),
    }
}

/// The lines of a file's bytes, without their LFs (a last line without an
/// LF counts; an empty last piece after the final LF does not).
pub(crate) fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let empty = text.is_empty();
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.split(|&b| b == b'\n').filter(move |_| !empty)
}

/// A user of the file.
#[derive(Debug)]
struct User {
    /// As written in the file.
    name: String,
    hash: StoredHash,
}

/// A user of the file, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedUser {
    /// The name as written in the file.
    pub name: String,
    /// Its line, from 1.
    pub line: usize,
    /// The scheme of its hash.
    pub scheme: Scheme,
}

/// The users of a users file, ready to check passwords against.
///
/// Loaded whole; load it again (on `graceful`) to see changes.
#[derive(Debug)]
pub struct UsersFile {
    path: PathBuf,
    /// By [`name_key`].
    users: HashMap<String, User>,
    /// In file order, for listings.
    listed: Vec<ListedUser>,
    /// What a name that is not here is checked against.
    dummy: StoredHash,
}

impl UsersFile {
    /// Reads and checks the file at `path`. Lines that cannot be used are
    /// refused with a warning each; only a file that cannot be read is an
    /// error.
    pub fn load(path: &Path) -> Result<(UsersFile, Vec<Warning>), AuthError> {
        let text = std::fs::read(path).map_err(|e| AuthError::io(path, "read", e))?;
        Ok(UsersFile::parse(path, &text))
    }

    /// Checks the text of a users file; `path` is for the warnings.
    pub fn parse(path: &Path, text: &[u8]) -> (UsersFile, Vec<Warning>) {
        let mut users: HashMap<String, User> = HashMap::new();
        let mut first_lines: HashMap<String, usize> = HashMap::new();
        let mut listed = Vec::new();
        let mut warnings = Vec::new();
        for (index, raw) in lines(text).enumerate() {
            let line = index + 1;
            let mut warn = |name: Option<&str>, kind| {
                warnings.push(Warning {
                    path: path.to_owned(),
                    line,
                    name: name.map(str::to_owned),
                    kind,
                })
            };
            let (name, hash) = match parse_line(raw) {
                Line::Skip => continue,
                Line::NotUtf8 => {
                    warn(None, WarningKind::NotUtf8);
                    continue;
                }
                Line::User { name, hash } => (name, hash),
            };
            if let Err(problem) = check_name(name) {
                warn(None, WarningKind::BadName(problem));
                continue;
            }
            let key = name_key(name).into_owned();
            if let Some(&first_line) = first_lines.get(&key) {
                warn(Some(name), WarningKind::Duplicate { first_line });
                continue;
            }
            // A refused line still claims its name: a later line for the
            // same user must not take over silently.
            first_lines.insert(key.clone(), line);
            let Some(hash) = hash else {
                warn(Some(name), WarningKind::NoHash);
                continue;
            };
            match StoredHash::parse(hash) {
                Ok(hash) => {
                    listed.push(ListedUser {
                        name: name.to_owned(),
                        line,
                        scheme: hash.scheme(),
                    });
                    users.insert(
                        key,
                        User {
                            name: name.to_owned(),
                            hash,
                        },
                    );
                }
                Err(problem) => warn(Some(name), WarningKind::Hash(problem)),
            }
        }
        let dummy = dummy_for(&listed, &users);
        let file = UsersFile {
            path: path.to_owned(),
            users,
            listed,
            dummy,
        };
        (file, warnings)
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many users can log in.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// No user can log in.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The users that can log in, in file order.
    pub fn users(&self) -> &[ListedUser] {
        &self.listed
    }

    /// The user `name` denotes (as [`name_key`] compares), as written in
    /// the file.
    pub fn user(&self, name: &str) -> Option<&str> {
        self.users.get(&*name_key(name)).map(|u| u.name.as_str())
    }

    /// Checks a password, and returns the user's name as written in the
    /// file when it is right.
    ///
    /// Costly (a password hash): call it on a blocking thread. A name not
    /// in the file costs what a wrong password costs (see the module
    /// documentation); a password over
    /// [`MAX_PASSWORD_LEN`](crate::MAX_PASSWORD_LEN) bytes is rejected
    /// without hashing, whoever the user.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<&str> {
        if password.len() > MAX_PASSWORD_LEN {
            return None;
        }
        match self.users.get(&*name_key(name)) {
            Some(user) => user.hash.verify(password).then_some(user.name.as_str()),
            None => {
                std::hint::black_box(self.dummy.verify(password));
                None
            }
        }
    }

    /// The hash an unknown name is checked against (for the tests).
    #[cfg(test)]
    fn dummy_class(&self) -> &str {
        self.dummy.cost_class()
    }
}

/// A hash of the most common cost class among the users (the first such
/// user's), or the built-in dummy for a file with none.
fn dummy_for(listed: &[ListedUser], users: &HashMap<String, User>) -> StoredHash {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (order, entry) in listed.iter().enumerate() {
        let user = &users[&*name_key(&entry.name)];
        counts.entry(user.hash.cost_class()).or_insert((0, order)).0 += 1;
    }
    let best = counts
        .values()
        // Most users first, then the earliest line.
        .max_by_key(|&&(count, order)| (count, std::cmp::Reverse(order)))
        .map(|&(_, order)| &listed[order]);
    match best {
        Some(entry) => users[&*name_key(&entry.name)].hash.clone(),
        None => StoredHash::parse(DUMMY_HASH).expect("the built-in dummy hash parses"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_hash::{hash_password, FAST};

    // Real tools' output (see stored_hash.rs): `openssl passwd -6/-5`.
    const SHA512: &str = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";
    const SHA256: &str = "$5$d8ZnBaDEMVFAKw/8$/rVxo7jxb.sqWHf7ktr9GEHHOPT.A76SlvORWwHdEN7";

    fn parse(text: &str) -> (UsersFile, Vec<Warning>) {
        UsersFile::parse(Path::new("/etc/mta/users"), text.as_bytes())
    }

    #[test]
    fn lines_table() {
        let table: &[(&[u8], &[&[u8]])] = &[
            (b"", &[]),
            (b"\n", &[b""]),
            (b"a", &[b"a"]),
            (b"a\n", &[b"a"]),
            (b"a\nb", &[b"a", b"b"]),
            (b"a\n\nb\n", &[b"a", b"", b"b"]),
        ];
        for (text, want) in table {
            assert_eq!(lines(text).collect::<Vec<_>>(), *want, "{text:?}");
        }
    }

    #[test]
    fn a_file_loads_and_refuses_line_by_line() {
        let text = format!(
            "# users of example.com\n\
             \n\
             joe:{SHA512}\n\
             ann@Example.COM:{{SHA256-CRYPT}}{SHA256}:1000:1000::/home/ann::extra=1\r\n\
             weak:{{PLAIN}}secret\n\
             md5:$1$abcdefgh$abcdefghijklmnopqrstuv\n\
             bad name:{SHA512}\n\
             nohash\n\
             empty:\n\
             joe:{SHA256}\n\
             ann@EXAMPLE.com:{SHA512}\n\
             Joe:{SHA256}\n\
             weak:{SHA512}\n\
             \t# indented comment\n\
             costly:$6$rounds=2000000$abc${}\n",
            "a".repeat(86)
        );
        let (file, warnings) = parse(&text);
        let got: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        let p = "/etc/mta/users";
        assert_eq!(
            got,
            [
                format!("{p}:5: user \"weak\" refused: weak password scheme {{PLAIN}}; set a new password (new hashes are argon2id)"),
                format!("{p}:6: user \"md5\" refused: weak password scheme MD5 crypt ($1$); set a new password (new hashes are argon2id)"),
                format!("{p}:7: line ignored: bad user name: holds whitespace"),
                format!("{p}:8: user \"nohash\" refused: no ':' and no password hash"),
                format!("{p}:9: user \"empty\" refused: no password hash"),
                format!("{p}:10: user \"joe\" refused: the same user as line 3, which is used"),
                format!("{p}:11: user \"ann@EXAMPLE.com\" refused: the same user as line 4, which is used"),
                format!("{p}:13: user \"weak\" refused: the same user as line 5, which is used"),
                format!("{p}:15: user \"costly\" refused: sha512-crypt hash too costly to check: rounds=2000000, at most 1000000"),
            ]
        );
        let names: Vec<(&str, usize, Scheme)> = file
            .users()
            .iter()
            .map(|u| (u.name.as_str(), u.line, u.scheme))
            .collect();
        assert_eq!(
            names,
            [
                ("joe", 3, Scheme::Sha512Crypt),
                ("ann@Example.COM", 4, Scheme::Sha256Crypt),
                ("Joe", 12, Scheme::Sha256Crypt),
            ]
        );
        assert_eq!(file.len(), 3);
        assert_eq!(file.user("ann@example.com"), Some("ann@Example.COM"));
        assert_eq!(file.user("Ann@example.com"), None);
        assert_eq!(file.user("weak"), None);
    }

    #[test]
    fn verify_table() {
        let text = format!("joe:{SHA512}\nann@Example.COM:{SHA256}\nweak:{{PLAIN}}secret\n");
        let (file, _) = parse(&text);
        let long = vec![b'a'; MAX_PASSWORD_LEN + 1];
        let table: &[(&str, &[u8], Option<&str>)] = &[
            ("joe", b"secret", Some("joe")),
            ("joe", b"Secret", None),
            ("joe", b"", None),
            ("Joe", b"secret", None),
            ("ann@example.com", b"secret", Some("ann@Example.COM")),
            ("ann@EXAMPLE.com", b"secret", Some("ann@Example.COM")),
            ("Ann@example.com", b"secret", None),
            ("weak", b"secret", None),
            ("nobody", b"secret", None),
            ("joe", &long, None),
        ];
        for (name, password, want) in table {
            assert_eq!(file.verify(name, password), *want, "{name} {password:?}");
        }
    }

    #[test]
    fn unknown_names_check_the_most_common_cost_class() {
        let (file, _) = parse(&format!("a:{SHA256}\nb:{SHA512}\nc:{SHA512}\n"));
        assert_eq!(file.dummy_class(), "$6$");
        // A tie: the earlier line's class.
        let (file, _) = parse(&format!("a:{SHA256}\nb:{SHA512}\n"));
        assert_eq!(file.dummy_class(), "$5$");
        let argon = hash_password(b"pw", FAST).unwrap();
        let (file, _) = parse(&format!("a:{SHA256}\nb:{argon}\nc:{argon}\n"));
        assert_eq!(file.dummy_class(), "$argon2id$v=19$m=64,t=1,p=1");
        // Nobody usable: the built-in one, of the default parameters.
        let (file, _) = parse("weak:{PLAIN}x\n");
        assert_eq!(file.dummy_class(), "$argon2id$v=19$m=19456,t=2,p=1");
        assert!(file.is_empty());
    }

    #[test]
    fn not_utf8_lines_are_refused_alone() {
        let mut text = b"bad\xff:x\n".to_vec();
        text.extend_from_slice(format!("joe:{SHA512}\n").as_bytes());
        let (file, warnings) = UsersFile::parse(Path::new("f"), &text);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].to_string(), "f:1: line ignored: not UTF-8");
        assert_eq!(file.user("joe"), Some("joe"));
    }

    #[test]
    fn load_reads_the_file_and_reports_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let err = UsersFile::load(&path).unwrap_err();
        assert!(err.to_string().contains("users: read: "), "{err}");
        std::fs::write(&path, format!("joe:{SHA512}\n")).unwrap();
        let (file, warnings) = UsersFile::load(&path).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(file.path(), path);
        assert_eq!(file.verify("joe", b"secret"), Some("joe"));
    }
}
