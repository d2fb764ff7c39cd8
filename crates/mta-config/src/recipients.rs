//! `[smtp] local_recipients` and `local_recipients_file`: the mailboxes of
//! the local domains, as Postfix's `local_recipient_maps`.
//!
//! With a list, RCPT refuses an unknown local user (`550 5.1.1`) instead
//! of accepting the mail and bouncing it later to a sender nobody checked.
//! The entries are checked here, so that `configtest`, a start and a
//! graceful restart all refuse a list with a mistake in it (naming the
//! file and line), and put in the form the lookups use: the mailbox name
//! of [`mta_envelope::mailbox_name`], which local delivery uses too.

use std::fmt;
use std::path::Path;

use crate::smtp::SmtpConfig;

/// One mailbox of the local recipient list, in the form lookups use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRecipient {
    /// The mailbox name: unquoted and lower-cased, as
    /// [`mta_envelope::mailbox_name`] makes it.
    pub name: String,
    /// The local domain the entry is limited to (`user@domain`),
    /// lower-cased; None (`user`): every local domain.
    pub domain: Option<String>,
}

/// A mistake in the local recipient list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientProblem {
    /// The key it comes from: `smtp.local_recipients` or
    /// `smtp.local_recipients_file`.
    pub key: &'static str,
    /// What is wrong (with the file and line for the file's entries).
    pub what: String,
}

impl fmt::Display for RecipientProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.what)
    }
}

const LIST: &str = "smtp.local_recipients";
const FILE: &str = "smtp.local_recipients_file";

impl SmtpConfig {
    /// The local recipient list: the entries of `local_recipients` and
    /// those of `local_recipients_file` (read now), or None when neither
    /// key is set, and then every local part that can name a mailbox is
    /// taken. Every problem is returned, not only the first.
    pub fn local_recipient_list(
        &self,
    ) -> Result<Option<Vec<LocalRecipient>>, Vec<RecipientProblem>> {
        if self.local_recipients.is_none() && self.local_recipients_file.is_none() {
            return Ok(None);
        }
        let mut list = Vec::new();
        let mut problems = Vec::new();
        for entry in self.local_recipients.iter().flatten() {
            match self.recipient_entry(entry.trim()) {
                Ok(r) => list.push(r),
                Err(why) => problems.push(RecipientProblem {
                    key: LIST,
                    what: format!("{entry:?}: {why}"),
                }),
            }
        }
        if let Some(path) = &self.local_recipients_file {
            self.read_recipient_file(path, &mut list, &mut problems);
        }
        if problems.is_empty() {
            Ok(Some(list))
        } else {
            Err(problems)
        }
    }

    /// Reads the file: one entry a line; blank lines and lines whose first
    /// character that is not a space is `#` are skipped.
    fn read_recipient_file(
        &self,
        path: &Path,
        list: &mut Vec<LocalRecipient>,
        problems: &mut Vec<RecipientProblem>,
    ) {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(RecipientProblem {
                    key: FILE,
                    what: format!("cannot read {}: {e}", path.display()),
                });
                return;
            }
        };
        for (number, line) in text.lines().enumerate() {
            let entry = line.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            match self.recipient_entry(entry) {
                Ok(r) => list.push(r),
                Err(why) => problems.push(RecipientProblem {
                    key: FILE,
                    what: format!("{}:{}: {entry:?}: {why}", path.display(), number + 1),
                }),
            }
        }
    }

    /// `user` or `user@domain`, the domain one of `local_domains`.
    fn recipient_entry(&self, entry: &str) -> Result<LocalRecipient, String> {
        let (local, domain) = match entry.rsplit_once('@') {
            Some((local, domain)) => (local, Some(domain)),
            None => (entry, None),
        };
        if let Some(domain) = domain {
            if !self
                .local_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
            {
                return Err(format!(
                    "{domain:?} is not one of smtp.local_domains, so no mail for it is kept here"
                ));
            }
        }
        let name = mta_envelope::mailbox_name(local).ok_or_else(|| {
            "cannot name a mailbox: give one user or user@domain per entry, a dot-atom \
             without '/' (RFC 5322)"
                .to_owned()
        })?;
        Ok(LocalRecipient {
            name,
            domain: domain.map(str::to_ascii_lowercase),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smtp(list: Option<&[&str]>, file: Option<&Path>) -> SmtpConfig {
        SmtpConfig {
            local_domains: vec!["localhost".into(), "Example.Test".into()],
            local_recipients: list.map(|l| l.iter().map(|s| s.to_string()).collect()),
            local_recipients_file: file.map(Path::to_owned),
            ..SmtpConfig::default()
        }
    }

    #[test]
    fn no_list_by_default() {
        assert_eq!(SmtpConfig::default().local_recipient_list(), Ok(None));
        assert_eq!(
            smtp(Some(&[]), None).local_recipient_list(),
            Ok(Some(vec![]))
        );
    }

    #[test]
    fn entries_take_the_form_of_lookups() {
        let list = smtp(Some(&["Alice", " bob@EXAMPLE.test ", "\"carol\""]), None)
            .local_recipient_list()
            .unwrap()
            .unwrap();
        let r = |name: &str, domain: Option<&str>| LocalRecipient {
            name: name.into(),
            domain: domain.map(Into::into),
        };
        assert_eq!(
            list,
            [
                r("alice", None),
                r("bob", Some("example.test")),
                r("carol", None)
            ]
        );
    }

    #[test]
    fn the_file_has_one_entry_a_line_and_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipients");
        std::fs::write(
            &path,
            "# staff\n  alice  \n\n   # gone: bob\ndave@localhost\n",
        )
        .unwrap();
        let list = smtp(Some(&["carol"]), Some(&path))
            .local_recipient_list()
            .unwrap()
            .unwrap();
        let names: Vec<_> = list.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["carol", "alice", "dave"]);
    }

    #[test]
    fn every_bad_entry_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("recipients");
        std::fs::write(&path, "alice\n../x\nbob OK\nok@localhost\n").unwrap();
        let problems = smtp(Some(&["a/b", "x@far.test", ""]), Some(&path))
            .local_recipient_list()
            .unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("smtp.local_recipients: \"a/b\": cannot name"));
        assert!(lines[1].contains("\"far.test\" is not one of smtp.local_domains"));
        assert!(lines[2].starts_with("smtp.local_recipients: \"\": cannot name"));
        let file = path.display().to_string();
        assert!(
            lines[3].starts_with(&format!("smtp.local_recipients_file: {file}:2: \"../x\"")),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].contains(&format!("{file}:3: \"bob OK\"")),
            "{}",
            lines[4]
        );
    }

    #[test]
    fn a_missing_file_is_a_problem() {
        let problems = smtp(None, Some(Path::new("/nonexistent/recipients")))
            .local_recipient_list()
            .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "smtp.local_recipients_file");
        assert!(problems[0]
            .what
            .contains("cannot read /nonexistent/recipients"));
    }
}
