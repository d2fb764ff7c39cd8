//! Which addresses an authenticated user may send as (`[auth] senders`):
//! the MAIL FROM address and the From: header's.
//!
//! Each user may be given a list of addresses (`joe@example.com`) and
//! whole domains (`@example.com`, any local part there, no subdomains).
//! A user without an entry may use its own name when the name is an
//! address, and nothing else; an entry replaces that default (list the
//! user's own address in it to keep it). A local part compares exactly, a
//! domain without case (RFC 5321 section 2.4), as user names do
//! ([`name_key`]).
//!
//! The null reverse-path (`<>`, given as `""` or `"<>"`) is allowed to
//! every user, as Postfix's `reject_sender_login_mismatch` allows it: it
//! names nobody, so it cannot impersonate anyone, and an authenticated
//! user's own agents send with it (a Sieve reject or vacation reply,
//! RFC 3834). The From: header of such a message is still checked.

use std::collections::HashMap;

use crate::error::AuthError;
use crate::name::name_key;

/// One entry of a user's list.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    /// An address, as [`name_key`] writes it.
    Address(String),
    /// `@domain`: the domain, lower-cased.
    Domain(String),
}

/// The sender rules of `[auth] senders`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderRules {
    /// By user, as [`name_key`] writes names.
    rules: HashMap<String, Vec<Pattern>>,
}

impl SenderRules {
    /// Rules from (user, entries) pairs; an entry that is neither
    /// `local@domain` nor `@domain` is an error. A user listed twice gets
    /// both lists.
    pub fn new<U, E>(
        entries: impl IntoIterator<Item = (U, Vec<E>)>,
    ) -> Result<SenderRules, AuthError>
    where
        U: AsRef<str>,
        E: AsRef<str>,
    {
        let mut rules: HashMap<String, Vec<Pattern>> = HashMap::new();
        for (user, list) in entries {
            let user = user.as_ref();
            let patterns = rules.entry(name_key(user).into_owned()).or_default();
            for entry in list {
                let entry = entry.as_ref();
                let bad = || AuthError::BadSender {
                    user: user.to_owned(),
                    entry: entry.to_owned(),
                };
                let Some((local, domain)) = entry.rsplit_once('@') else {
                    return Err(bad());
                };
                if domain.is_empty() || entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(bad());
                }
                patterns.push(if local.is_empty() {
                    Pattern::Domain(domain.to_lowercase())
                } else {
                    Pattern::Address(name_key(entry).into_owned())
                });
            }
        }
        Ok(SenderRules { rules })
    }

    /// Whether `user` (the name a check accepted) may send as `address`
    /// (a MAIL FROM path without its brackets, or a From: address).
    pub fn may_send_as(&self, user: &str, address: &str) -> bool {
        if address.is_empty() || address == "<>" {
            return true;
        }
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let address = name_key(address);
        match self.rules.get(&*name_key(user)) {
            Some(patterns) => patterns.iter().any(|p| match p {
                Pattern::Address(a) => *a == address,
                Pattern::Domain(d) => *d == domain.to_lowercase(),
            }),
            None => user.contains('@') && name_key(user) == address,
        }
    }
}

impl SenderRules {
    /// Whether the domain of `address` (a From: or Sender: header
    /// address) is one `user` owns: the domain of one of the addresses
    /// or `@domain`s it may send as (with no entry, of its own name when
    /// that is an address). The header may name another mailbox of the
    /// user's own domain (a shared `team@` alias); only the envelope
    /// sender must be one of its own addresses.
    pub fn may_use_domain_of(&self, user: &str, address: &str) -> bool {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return false;
        };
        let same = |d: &str| d.eq_ignore_ascii_case(domain);
        match self.rules.get(&*name_key(user)) {
            Some(patterns) => patterns.iter().any(|p| match p {
                Pattern::Address(a) => a.rsplit_once('@').is_some_and(|(_, d)| same(d)),
                Pattern::Domain(d) => same(d),
            }),
            None => user.rsplit_once('@').is_some_and(|(_, d)| same(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_domains_a_user_owns() {
        let rules = SenderRules::new([
            ("joe@example.com", vec!["joe@example.com"]),
            ("admin", vec!["@example.org"]),
        ])
        .unwrap();
        for (user, address, owned) in [
            ("joe@example.com", "team@example.com", true),
            ("joe@example.com", "team@EXAMPLE.COM", true),
            ("joe@example.com", "joe@example.net", false),
            ("admin", "x@example.org", true),
            ("admin", "x@sub.example.org", false),
            // No entry: the domain of its own address.
            ("bob@example.net", "sales@example.net", true),
            ("bob@example.net", "sales@example.com", false),
            ("bob", "bob@example.com", false),
            ("joe@example.com", "not-an-address", false),
        ] {
            assert_eq!(
                rules.may_use_domain_of(user, address),
                owned,
                "{user} as {address}"
            );
        }
    }

    #[test]
    fn may_send_as_table() {
        let rules = SenderRules::new([
            (
                "joe@example.com",
                vec!["joe@example.com", "sales@Example.COM"],
            ),
            ("admin", vec!["@example.org", "root@example.net"]),
            ("Ann@Example.com", vec!["ann.smith@example.com"]),
            ("nobody", vec![]),
        ])
        .unwrap();
        let table = [
            // Listed addresses: local part exact, domain in any case.
            ("joe@example.com", "joe@example.com", true),
            ("joe@example.com", "joe@EXAMPLE.com", true),
            ("joe@example.com", "Joe@example.com", false),
            ("joe@example.com", "sales@example.com", true),
            ("joe@example.com", "sales@example.org", false),
            ("joe@EXAMPLE.COM", "sales@example.com", true),
            // @domain: any local part, that domain only.
            ("admin", "anything@example.org", true),
            ("admin", "x@EXAMPLE.ORG", true),
            ("admin", "x@sub.example.org", false),
            ("admin", "root@example.net", true),
            ("admin", "admin", false),
            // An entry replaces the default.
            ("Ann@example.com", "Ann@example.com", false),
            ("Ann@example.com", "ann.smith@example.com", true),
            // No entry: its own name when it is an address.
            ("bob@example.com", "bob@example.com", true),
            ("bob@example.com", "bob@Example.Com", true),
            ("bob@example.com", "Bob@example.com", false),
            ("bob@example.com", "alice@example.com", false),
            ("bob", "bob", false),
            ("bob", "bob@example.com", false),
            ("nobody", "nobody@example.com", false),
            // The null sender, for everyone.
            ("bob", "", true),
            ("nobody", "<>", true),
            // Not an address.
            ("joe@example.com", "joe", false),
        ];
        for (user, address, want) in table {
            assert_eq!(
                rules.may_send_as(user, address),
                want,
                "{user} as {address:?}"
            );
        }
    }

    #[test]
    fn bad_entries_table() {
        for entry in ["joe", "joe@", "@", "", "a b@example.com", "a@exa\nmple.com"] {
            let err = SenderRules::new([("u", vec![entry])]).unwrap_err();
            assert!(
                matches!(&err, AuthError::BadSender { user, entry: e } if user == "u" && e == entry),
                "{entry:?}: {err}"
            );
        }
    }

    #[test]
    fn a_user_listed_twice_gets_both_lists() {
        let rules = SenderRules::new([
            ("joe@example.com", vec!["a@example.com"]),
            ("joe@EXAMPLE.com", vec!["b@example.com"]),
        ])
        .unwrap();
        assert!(rules.may_send_as("joe@example.com", "a@example.com"));
        assert!(rules.may_send_as("joe@example.com", "b@example.com"));
    }
}
