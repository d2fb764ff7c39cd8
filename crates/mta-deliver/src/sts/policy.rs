//! The policy file (RFC 8461 section 3.2) and which MX hosts it allows
//! (section 4.1).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest `max_age` (section 3.2: 31557600 seconds, about a year).
pub const MAX_AGE_LIMIT: u32 = 31_557_600;

/// What a policy asks of senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Deliver only to matching MX hosts, over TLS with a valid
    /// certificate for the host's name; otherwise do not deliver.
    Enforce,
    /// Deliver as without a policy, and report what would have failed.
    Testing,
    /// No policy (a domain stepping back from MTA-STS publishes this).
    None,
}

impl Mode {
    /// Its word in the policy file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `mode`.
    pub mode: Mode,
    /// `max_age`: how long, in seconds, the policy may be cached.
    pub max_age: u32,
    /// `mx`: the host patterns, lower case, without a trailing dot.
    pub mx: Vec<String>,
}

/// Why a policy file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `version: STSv1` is missing or another version.
    #[error("no \"version: STSv1\" line")]
    Version,
    /// A required field is missing.
    #[error("no {0:?} field")]
    Missing(&'static str),
    /// A field's value is not one section 3.2 allows.
    #[error("bad {field:?} value {value:?}")]
    Bad {
        /// The field.
        field: &'static str,
        /// What it said.
        value: String,
    },
    /// The body is not UTF-8 text.
    #[error("the policy is not text")]
    NotText,
}

impl Policy {
    /// Parses a policy body: `key: value` lines ended by LF or CRLF;
    /// the first of a repeated field counts, except `mx`, which may
    /// repeat; unknown fields are ignored (section 3.2).
    pub fn parse(body: &[u8]) -> Result<Policy, PolicyError> {
        let text = std::str::from_utf8(body).map_err(|_| PolicyError::NotText)?;
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim_matches([' ', '\t']);
            match key.trim_matches([' ', '\t']) {
                "version" => {
                    version.get_or_insert(value);
                }
                "mode" => {
                    mode.get_or_insert(value);
                }
                "max_age" => {
                    max_age.get_or_insert(value);
                }
                "mx" => mx.push(value),
                _ => {}
            }
        }
        if version != Some("STSv1") {
            return Err(PolicyError::Version);
        }
        let mode = match mode.ok_or(PolicyError::Missing("mode"))? {
            "enforce" => Mode::Enforce,
            "testing" => Mode::Testing,
            "none" => Mode::None,
            other => {
                return Err(PolicyError::Bad {
                    field: "mode",
                    value: other.to_owned(),
                })
            }
        };
        let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
        let max_age = max_age
            .parse::<u64>()
            .ok()
            .filter(|_| max_age.len() <= 10 && max_age.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| PolicyError::Bad {
                field: "max_age",
                value: max_age.to_owned(),
            })?;
        // Section 3.2: at most 31557600; a larger value is taken as that.
        let max_age = u32::try_from(max_age.min(u64::from(MAX_AGE_LIMIT))).unwrap_or(MAX_AGE_LIMIT);
        let mut patterns = Vec::with_capacity(mx.len());
        for pattern in mx {
            let normal = pattern.trim_end_matches('.').to_ascii_lowercase();
            if !is_pattern(&normal) {
                return Err(PolicyError::Bad {
                    field: "mx",
                    value: pattern.to_owned(),
                });
            }
            patterns.push(normal);
        }
        if patterns.is_empty() && mode != Mode::None {
            return Err(PolicyError::Missing("mx"));
        }
        Ok(Policy {
            mode,
            max_age,
            mx: patterns,
        })
    }

    /// True when `host` (an MX host name, any case, a trailing dot or
    /// not) matches one of the policy's `mx` patterns.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.mx.iter().any(|pattern| mx_matches(pattern, host))
    }
}

/// Section 4.1: a pattern is a host name, or `*.` and a domain, where the
/// `*` stands for exactly one label, the left-most: `*.example.com`
/// matches `mx1.example.com`, not `example.com` nor `a.b.example.com`.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// A host name, or `*.` and a host name: letters, digits, `-` and `_`
/// in non-empty labels.
fn is_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_of_rfc_8461() {
        let body = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n\
                     mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";
        assert_eq!(
            Policy::parse(body),
            Ok(Policy {
                mode: Mode::Enforce,
                max_age: 604_800,
                mx: vec![
                    "mail.example.com".into(),
                    "*.example.net".into(),
                    "backupmx.example.com".into()
                ],
            })
        );
    }

    #[test]
    fn lf_line_ends_unknown_fields_and_repeats() {
        let body = b"version: STSv1\nmode: testing\nmode: enforce\nfoo: bar\nmx: MX.Example.COM.\nmax_age:86400";
        let policy = Policy::parse(body).unwrap();
        assert_eq!(policy.mode, Mode::Testing);
        assert_eq!(policy.max_age, 86_400);
        assert_eq!(policy.mx, ["mx.example.com"]);
        let none = Policy::parse(b"version: STSv1\nmode: none\nmax_age: 1\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        assert!(none.mx.is_empty());
    }

    #[test]
    fn max_age_is_capped_at_a_year() {
        let body = b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 99999999\n";
        assert_eq!(Policy::parse(body).unwrap().max_age, MAX_AGE_LIMIT);
    }

    #[test]
    fn bad_policies() {
        let cases: [(&[u8], PolicyError); 7] = [
            (
                b"mode: enforce\nmx: a.test\nmax_age: 1\n",
                PolicyError::Version,
            ),
            (
                b"version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
                PolicyError::Version,
            ),
            (
                b"version: STSv1\nmx: a.test\nmax_age: 1\n",
                PolicyError::Missing("mode"),
            ),
            (
                b"version: STSv1\nmode: enforce\nmax_age: 1\n",
                PolicyError::Missing("mx"),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.test\n",
                PolicyError::Missing("max_age"),
            ),
            (
                b"version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
                PolicyError::Bad {
                    field: "mode",
                    value: "strict".into(),
                },
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
                PolicyError::Bad {
                    field: "max_age",
                    value: "-1".into(),
                },
            ),
        ];
        for (body, error) in cases {
            assert_eq!(
                Policy::parse(body),
                Err(error),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(Policy::parse(b"version: STSv1\nmode: enforce\nmx: a b\nmax_age: 1\n").is_err());
        assert_eq!(Policy::parse(b"\xff\xfe"), Err(PolicyError::NotText));
    }

    #[test]
    fn wildcards_match_one_left_most_label() {
        assert!(mx_matches("*.example.net", "mx1.example.net"));
        assert!(mx_matches("*.example.net", "MX1.Example.NET"));
        assert!(!mx_matches("*.example.net", "example.net"));
        assert!(!mx_matches("*.example.net", "a.b.example.net"));
        assert!(!mx_matches("*.example.net", ".example.net"));
        assert!(!mx_matches("*.example.net", "mx1.example.net.evil"));
        assert!(mx_matches("mail.example.com", "Mail.Example.com"));
        assert!(!mx_matches("mail.example.com", "mail2.example.com"));
        let policy = Policy {
            mode: Mode::Enforce,
            max_age: 1,
            mx: vec!["mail.example.com".into(), "*.example.net".into()],
        };
        assert!(policy.allows("mail.example.com."));
        assert!(policy.allows("x.example.net"));
        assert!(!policy.allows("mx.attacker.test"));
    }
}
