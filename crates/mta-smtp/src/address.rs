//! Address syntax of MAIL FROM and RCPT TO (RFC 5321 section 4.1.2, with
//! the UTF-8 extensions of RFC 6531 section 3.3).

use mta_envelope::Mailbox;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressError {
    /// Not `<local@domain>` as RFC 5321 spells it.
    Syntax,
    /// Non-ASCII characters without the SMTPUTF8 parameter.
    NeedsSmtpUtf8,
}

/// Longest local part (RFC 5321 section 4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 5321 section 4.5.3.1.2).
const MAX_DOMAIN: usize = 255;
/// Longest path, brackets included (RFC 5321 section 4.5.3.1.3).
const MAX_PATH: usize = 256;

/// Splits `<path> params` into the path text (between the brackets) and the
/// rest. A missing closing bracket, or text before the opening one, is a
/// syntax error.
pub(crate) fn split_path(arg: &str) -> Result<(&str, &str), AddressError> {
    let arg = arg.trim_start_matches(' ');
    let rest = arg.strip_prefix('<').ok_or(AddressError::Syntax)?;
    // A quoted local part may hold '>', so find the closing bracket outside
    // quotes.
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => {
                let path = &rest[..i];
                if path.len() + 2 > MAX_PATH {
                    return Err(AddressError::Syntax);
                }
                return Ok((path, &rest[i + 1..]));
            }
            _ => {}
        }
    }
    Err(AddressError::Syntax)
}

/// Parses the inside of a path: `[@a,@b:]local@domain`. The source route,
/// if any, is dropped as RFC 5321 section 4.1.1.3 allows.
pub(crate) fn parse_mailbox(path: &str, utf8_allowed: bool) -> Result<Mailbox, AddressError> {
    let path = match path.strip_prefix('@') {
        Some(_) => path
            .split_once(':')
            .map(|(_, mailbox)| mailbox)
            .ok_or(AddressError::Syntax)?,
        None => path,
    };
    let at = path.rfind('@').ok_or(AddressError::Syntax)?;
    let (local, domain) = (&path[..at], &path[at + 1..]);
    if !is_local_part(local) || !(is_domain(domain) || is_address_literal(domain)) {
        return Err(AddressError::Syntax);
    }
    if !utf8_allowed && !path.is_ascii() {
        return Err(AddressError::NeedsSmtpUtf8);
    }
    Ok(Mailbox {
        local: local.to_owned(),
        domain: domain.to_owned(),
    })
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_local_part(local: &str) -> bool {
    if local.is_empty() || local.len() > MAX_LOCAL {
        return false;
    }
    if let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        // Quoted-string: printable ASCII (or UTF-8) with backslash pairs.
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) if (' '..='~').contains(&e) => {}
                    _ => return false,
                },
                '"' => return false,
                c if c == ' ' || (c.is_ascii_graphic()) || !c.is_ascii() => {
                    if c.is_control() {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        return true;
    }
    // Dot-string: atoms separated by single dots.
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| {
                c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && !c.is_control())
            })
    })
}

fn is_address_literal(domain: &str) -> bool {
    let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return false;
    };
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
            inner[5..].parse::<std::net::Ipv6Addr>().is_ok()
        }
        _ => inner.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(s: &str) -> Result<Mailbox, AddressError> {
        parse_mailbox(s, false)
    }

    #[test]
    fn good_addresses() {
        for a in [
            "user@example.com",
            "first.last+tag@sub.example.com",
            "\"quoted local\"@example.com",
            "\"a\\\"b\"@example.com",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "@relay.example:user@example.com",
        ] {
            assert!(mailbox(a).is_ok(), "{a}");
        }
        let m = mailbox("@a.example,@b.example:u@c.example").unwrap();
        assert_eq!((m.local.as_str(), m.domain.as_str()), ("u", "c.example"));
    }

    #[test]
    fn bad_addresses() {
        for a in [
            "",
            "user",
            "user@",
            "@example.com",
            "us er@example.com",
            "user..x@example.com",
            ".user@example.com",
            "user@-bad.example",
            "user@exa mple.com",
            "user@[300.1.1.1]",
            "user@example..com",
            "\"unterminated@example.com",
        ] {
            assert_eq!(mailbox(a), Err(AddressError::Syntax), "{a}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert_eq!(mailbox(&long), Err(AddressError::Syntax));
    }

    #[test]
    fn utf8_needs_smtputf8() {
        assert_eq!(
            mailbox("jöran@example.com"),
            Err(AddressError::NeedsSmtpUtf8)
        );
        assert!(parse_mailbox("jöran@exämple.com", true).is_ok());
    }

    #[test]
    fn split_path_finds_the_closing_bracket_outside_quotes() {
        assert_eq!(split_path("<a@b> SIZE=10"), Ok(("a@b", " SIZE=10")));
        assert_eq!(split_path("<\"x>y\"@b>"), Ok(("\"x>y\"@b", "")));
        assert_eq!(split_path("<>"), Ok(("", "")));
        assert_eq!(split_path("a@b"), Err(AddressError::Syntax));
        assert_eq!(split_path("<a@b"), Err(AddressError::Syntax));
    }
}
