//! User names: which ones a users file may hold, and when two are the same.
//!
//! A name is one field of a `name:hash` line, so it cannot hold `:` or a
//! line break; a name starting with `#` would read back as a comment. We
//! also refuse whitespace and other control characters (no SASL client
//! sends them on purpose, and they make log lines and `list` output lie)
//! and names over 254 bytes (the longest RFC 5321 path less its
//! brackets).
//!
//! Case: a name compares exactly (case-sensitively), as Dovecot's
//! passwd-file does by default, except that when the name is an address
//! (it holds an `@`) the domain after the last `@` compares without case:
//! RFC 5321 section 2.4 makes domains case-insensitive while a local part
//! may be case-sensitive. So `Joe@Example.COM` and `Joe@example.com` are
//! one user, `joe@example.com` another.

use std::borrow::Cow;
use std::fmt;

/// The longest name accepted, in bytes (the longest RFC 5321 path, less
/// its brackets).
pub const MAX_NAME_LEN: usize = 254;

/// What is wrong with a user name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameProblem {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// Holds `:`, the field separator of the file.
    Colon,
    /// Holds a space, tab or other whitespace.
    Whitespace,
    /// Holds a control character (CR, LF, NUL, ...).
    Control,
    /// Starts with `#`, which reads back as a comment line.
    Hash,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "empty",
            NameProblem::TooLong => "longer than 254 bytes",
            NameProblem::Colon => "holds ':'",
            NameProblem::Whitespace => "holds whitespace",
            NameProblem::Control => "holds a control character",
            NameProblem::Hash => "starts with '#'",
        })
    }
}

/// Checks that `name` may be a user of the file.
pub fn check_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameProblem::TooLong);
    }
    if name.starts_with('#') {
        return Err(NameProblem::Hash);
    }
    for c in name.chars() {
        if c == ':' {
            return Err(NameProblem::Colon);
        }
        // Control before whitespace: tab, CR and LF are both, and
        // "control character" says more about a CR.
        if c.is_control() {
            return Err(NameProblem::Control);
        }
        if c.is_whitespace() {
            return Err(NameProblem::Whitespace);
        }
    }
    Ok(())
}

/// The form two names are compared in: the name itself, or for an
/// address the local part as it is and the domain lower-cased.
pub fn name_key(name: &str) -> Cow<'_, str> {
    match name.rsplit_once('@') {
        Some((local, domain)) if domain.chars().any(char::is_uppercase) => {
            Cow::Owned(format!("{local}@{}", domain.to_lowercase()))
        }
        _ => Cow::Borrowed(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_table() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let longest = "a".repeat(MAX_NAME_LEN);
        let table: &[(&str, Result<(), NameProblem>)] = &[
            ("joe", Ok(())),
            ("joe@example.com", Ok(())),
            ("Joe.Smith+tag@Example.COM", Ok(())),
            ("jöe@bücher.example", Ok(())),
            (&longest, Ok(())),
            ("", Err(NameProblem::Empty)),
            (&long, Err(NameProblem::TooLong)),
            ("jo:e", Err(NameProblem::Colon)),
            ("jo e", Err(NameProblem::Whitespace)),
            ("joe\u{a0}", Err(NameProblem::Whitespace)),
            ("joe\t", Err(NameProblem::Control)),
            ("joe\r", Err(NameProblem::Control)),
            ("jo\ne", Err(NameProblem::Control)),
            ("jo\0e", Err(NameProblem::Control)),
            ("jo\u{7f}e", Err(NameProblem::Control)),
            ("#joe", Err(NameProblem::Hash)),
            ("jo#e", Ok(())),
        ];
        for (name, want) in table {
            assert_eq!(check_name(name), *want, "{name:?}");
        }
    }

    #[test]
    fn keys_table() {
        let table = [
            ("joe", "joe"),
            ("Joe", "Joe"),
            ("Joe@Example.COM", "Joe@example.com"),
            ("joe@example.com", "joe@example.com"),
            // The last @ starts the domain (a quoted local part may hold one).
            ("\"a@B\"@Example.com", "\"a@B\"@example.com"),
            ("joe@BÜCHER.example", "joe@bücher.example"),
        ];
        for (name, key) in table {
            assert_eq!(name_key(name), key, "{name:?}");
        }
        assert_ne!(name_key("Joe@example.com"), name_key("joe@example.com"));
    }
}
