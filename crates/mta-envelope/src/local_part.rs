//! The one rule for the name of a local mailbox.
//!
//! A local part of a local domain names a mailbox: a Maildir directory
//! (`<root>/<domain>/<name>/Maildir`) and an entry of the recipient list.
//! The SMTP server refuses at RCPT what this rule refuses, and local
//! delivery builds its path with it, so nothing the server accepted can
//! later fail for its name (a bounce to a sender nobody verified), and no
//! name can reach outside its directory. It lives here, in the crate both
//! the protocol and the queue already share.

/// The mailbox a local part names, or None when it cannot name one.
///
/// A quoted local part is the same mailbox as its content (RFC 5322
/// section 3.2.4: the quotes are not part of the string), so `"alice"` is
/// `alice`. The name must then be a dot-atom of RFC 5322 (atoms of atext
/// separated by single dots: no leading or trailing dot, no `..`, no
/// space, no control character, no backslash or quote) without `/`, which
/// would make it a path; UTF-8 letters are allowed (RFC 6531). The result
/// is lower-cased: local parts are compared without regard to case, as
/// Postfix does by default.
pub fn mailbox_name(local_part: &str) -> Option<String> {
    let unquoted;
    let name = match local_part
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
    {
        Some(quoted) => {
            unquoted = unquote(quoted)?;
            unquoted.as_str()
        }
        None => local_part,
    };
    let atom_ok = |atom: &str| !atom.is_empty() && atom.chars().all(is_name_char);
    name.split('.').all(atom_ok).then(|| name.to_lowercase())
}

/// Resolves the backslash pairs of a quoted string's content.
fn unquote(quoted: &str) -> Option<String> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// RFC 5322 atext, without `/`; UTF-8 beyond ASCII unless a control or a
/// space character.
fn is_name_char(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&'*+-=?^_`{|}~".contains(c)
    } else {
        !c.is_control() && !c.is_whitespace()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_lower_cased() {
        assert_eq!(mailbox_name("Alice").as_deref(), Some("alice"));
        assert_eq!(
            mailbox_name("first.last+tag").as_deref(),
            Some("first.last+tag")
        );
        assert_eq!(mailbox_name("Jöran").as_deref(), Some("jöran"));
        assert_eq!(mailbox_name("PostMaster").as_deref(), Some("postmaster"));
    }

    #[test]
    fn needless_quotes_name_the_same_mailbox() {
        assert_eq!(mailbox_name("\"alice\"").as_deref(), Some("alice"));
        assert_eq!(mailbox_name("\"a\\lice\"").as_deref(), Some("alice"));
        assert_eq!(mailbox_name("\"a.b\"").as_deref(), Some("a.b"));
    }

    #[test]
    fn names_that_are_paths_or_odd_are_refused() {
        for bad in [
            "",
            "\"\"",
            "\"../../x\"",
            "\"..\"",
            "\"/abs\"",
            "a/b",
            "\".x\"",
            "\"x.\"",
            "\"a..b\"",
            ".x",
            "\"a b\"",
            "\"a\\\\b\"",
            "\"a\\\"b\"",
            "\"a\tb\"",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{a0}b",
            "\"unterminated\\\"",
        ] {
            assert_eq!(mailbox_name(bad), None, "{bad:?}");
        }
    }
}
