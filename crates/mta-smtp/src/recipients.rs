//! The mailboxes of the local domains, looked up at RCPT.
//!
//! Which local recipients exist is decided when the client names them, not
//! at delivery: a recipient refused at RCPT is the client's to report,
//! while one accepted and then bounced becomes a DSN to a sender nobody
//! verified (backscatter). Names are compared in the form
//! [`mta_envelope::mailbox_name`] gives them, the form local delivery
//! uses for the Maildir, so "listed" and "has this Maildir" agree.

use std::collections::HashSet;
use std::fmt;

use mta_envelope::Mailbox;

/// A list of local mailboxes: names valid at every local domain, and
/// names valid at one.
#[derive(Clone, Default)]
pub struct LocalRecipients {
    everywhere: HashSet<String>,
    /// `(name, domain)`, the domain lower-cased.
    at_domain: HashSet<(String, String)>,
}

impl LocalRecipients {
    /// An empty list: only postmaster is taken.
    pub fn new() -> LocalRecipients {
        LocalRecipients::default()
    }

    /// Adds a mailbox: `name` as [`mta_envelope::mailbox_name`] makes it;
    /// `domain` None for every local domain.
    pub fn insert(&mut self, name: String, domain: Option<String>) {
        match domain {
            None => {
                self.everywhere.insert(name);
            }
            Some(domain) => {
                self.at_domain.insert((name, domain.to_ascii_lowercase()));
            }
        }
    }

    /// True when the mailbox `name` exists at `domain` (ASCII case ignored).
    pub fn contains(&self, name: &str, domain: &str) -> bool {
        self.everywhere.contains(name)
            || self
                .at_domain
                .contains(&(name.to_owned(), domain.to_ascii_lowercase()))
    }

    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.everywhere.len() + self.at_domain.len()
    }

    /// True for a list with no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for LocalRecipients {
    // A list may hold many thousand names; the count is what helps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalRecipients({} entries)", self.len())
    }
}

/// What RCPT does with a recipient at a local domain.
pub(crate) enum LocalCheck {
    /// Taken.
    Known,
    /// The local part cannot name a mailbox (`550 5.1.3`).
    BadName,
    /// Not in the list (`550 5.1.1`).
    Unknown,
}

/// Checks a recipient of a local domain, or the bare `postmaster`.
/// Postmaster is always taken (RFC 5321 section 4.5.1), at any local
/// domain and in any case.
pub(crate) fn check_local(address: &Mailbox, list: Option<&LocalRecipients>) -> LocalCheck {
    let Some(name) = mta_envelope::mailbox_name(&address.local) else {
        return LocalCheck::BadName;
    };
    if name == "postmaster" {
        return LocalCheck::Known;
    }
    match list {
        Some(list) if !list.contains(&name, &address.domain) => LocalCheck::Unknown,
        _ => LocalCheck::Known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_at_every_domain_or_at_theirs() {
        let mut list = LocalRecipients::new();
        list.insert("alice".into(), None);
        list.insert("bob".into(), Some("Local.Test".into()));
        assert!(list.contains("alice", "other.test"));
        assert!(list.contains("bob", "LOCAL.test"));
        assert!(!list.contains("bob", "other.test"));
        assert_eq!(list.len(), 2);
        assert_eq!(format!("{list:?}"), "LocalRecipients(2 entries)");
    }

    #[test]
    fn postmaster_is_always_known_and_bad_names_are_bad_with_or_without_a_list() {
        let empty = LocalRecipients::new();
        for list in [None, Some(&empty)] {
            for pm in ["postmaster", "PostMaster", "\"postmaster\""] {
                assert!(matches!(
                    check_local(&Mailbox::new(pm, "local.test"), list),
                    LocalCheck::Known
                ));
            }
            assert!(matches!(
                check_local(&Mailbox::new("\"../x\"", "local.test"), list),
                LocalCheck::BadName
            ));
        }
        assert!(matches!(
            check_local(&Mailbox::new("Alice", "local.test"), None),
            LocalCheck::Known
        ));
        assert!(matches!(
            check_local(&Mailbox::new("Alice", "local.test"), Some(&empty)),
            LocalCheck::Unknown
        ));
    }
}
