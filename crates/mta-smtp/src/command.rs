//! Parsing one command line (RFC 5321 section 4.1) into a [`Command`].
//!
//! The line given here has already passed the framing checks in
//! `session.rs`: it is UTF-8, holds no CR or LF, and its CRLF is removed.

use zeroize::Zeroizing;

use crate::address::{split_path, AddressError};

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`.
    Ehlo(String),
    /// `HELO domain`.
    Helo(String),
    /// `MAIL FROM:<path> params`; the path is the text between the brackets.
    Mail {
        /// The reverse path, without brackets; empty for `<>`.
        path: String,
        /// ESMTP parameters as `(KEY, value)`, the key upper-cased.
        params: Vec<(String, Option<String>)>,
    },
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// The forward path, without brackets.
        path: String,
        /// ESMTP parameters as `(KEY, value)`, the key upper-cased.
        params: Vec<(String, Option<String>)>,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030).
    Bdat {
        /// Octets in the chunk that follows the command line.
        size: u64,
        /// This chunk ends the message.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY`.
    Vrfy,
    /// `EXPN`.
    Expn,
    /// `HELP`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth {
        /// The SASL mechanism's name, upper-cased (not checked against the
        /// ones we know: that is the session's 504).
        mechanism: String,
        /// The initial response, still base64 (`=` for an empty one). It
        /// may hold a password: wiped when dropped, hidden from `Debug`.
        initial_response: Option<Zeroizing<String>>,
    },
}

/// Why a line is not a command we can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The verb is not one we know.
    Unknown,
    /// The verb is known but its arguments are wrong; holds the usage.
    Syntax(&'static str),
    /// MAIL or RCPT with a bad path.
    Path(AddressError),
}

impl Command {
    /// Parses a command line without its CRLF.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let (verb, arg) = match line.find(' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, ""),
        };
        let no_arg = |cmd: Command, usage: &'static str| {
            if arg.trim().is_empty() {
                Ok(cmd)
            } else {
                Err(CommandError::Syntax(usage))
            }
        };
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => domain_arg(arg, "EHLO hostname").map(Command::Ehlo),
            "HELO" => domain_arg(arg, "HELO hostname").map(Command::Helo),
            "MAIL" => {
                let rest = strip_prefix_ignore_case(arg, "FROM:")
                    .ok_or(CommandError::Syntax("MAIL FROM:<address> [parameters]"))?;
                let (path, params) = split_path(rest).map_err(CommandError::Path)?;
                Ok(Command::Mail {
                    path: path.to_owned(),
                    params: parse_params(params)?,
                })
            }
            "RCPT" => {
                let rest = strip_prefix_ignore_case(arg, "TO:")
                    .ok_or(CommandError::Syntax("RCPT TO:<address> [parameters]"))?;
                let (path, params) = split_path(rest).map_err(CommandError::Path)?;
                if path.is_empty() {
                    return Err(CommandError::Path(AddressError::Syntax));
                }
                Ok(Command::Rcpt {
                    path: path.to_owned(),
                    params: parse_params(params)?,
                })
            }
            "DATA" => no_arg(Command::Data, "DATA"),
            "BDAT" => parse_bdat(arg),
            "RSET" => no_arg(Command::Rset, "RSET"),
            // RFC 5321 section 4.1.1.9: NOOP may carry a string, ignored.
            "NOOP" => Ok(Command::Noop),
            "QUIT" => no_arg(Command::Quit, "QUIT"),
            "VRFY" => Ok(Command::Vrfy),
            "EXPN" => Ok(Command::Expn),
            "HELP" => Ok(Command::Help),
            "STARTTLS" => no_arg(Command::StartTls, "STARTTLS"),
            "AUTH" => parse_auth(arg),
            _ => Err(CommandError::Unknown),
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s[prefix.len()..].trim_start_matches(' '))
}

fn domain_arg(arg: &str, usage: &'static str) -> Result<String, CommandError> {
    let arg = arg.trim();
    if arg.is_empty() || arg.contains(' ') {
        return Err(CommandError::Syntax(usage));
    }
    Ok(arg.to_owned())
}

fn parse_params(text: &str) -> Result<Vec<(String, Option<String>)>, CommandError> {
    if !text.is_empty() && !text.starts_with(' ') {
        // Text glued to the closing bracket, as in `<a@b>x`.
        return Err(CommandError::Path(AddressError::Syntax));
    }
    text.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v.to_owned())),
                None => (p, None),
            };
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(CommandError::Syntax("parameters are KEYWORD[=value]"));
            }
            Ok((key.to_ascii_uppercase(), value))
        })
        .collect()
}

fn parse_bdat(arg: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "BDAT chunk-size [LAST]";
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(CommandError::Syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

/// `AUTH mechanism [initial-response]`: the mechanism is a SASL name
/// (RFC 4422 section 3.1: 1 to 20 of A-Z, 0-9, `-`, `_`), the response
/// one word of base64 or `=` (decoded by the session).
fn parse_auth(arg: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "AUTH mechanism [initial-response]";
    let mut words = arg.split(' ').filter(|w| !w.is_empty());
    let mechanism = words
        .next()
        .filter(|m| {
            m.len() <= 20
                && m.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or(CommandError::Syntax(USAGE))?;
    let initial_response = words.next().map(|w| Zeroizing::new(w.to_owned()));
    if words.next().is_some() {
        return Err(CommandError::Syntax(USAGE));
    }
    Ok(Command::Auth {
        mechanism: mechanism.to_ascii_uppercase(),
        initial_response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            Command::parse("ehlo client.test"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(Command::parse("QuIt"), Ok(Command::Quit));
        assert_eq!(Command::parse("NOOP anything"), Ok(Command::Noop));
    }

    #[test]
    fn mail_with_params() {
        let cmd = Command::parse("MAIL FROM:<a@b.test> size=100 BODY=8BITMIME SMTPUTF8").unwrap();
        assert_eq!(
            cmd,
            Command::Mail {
                path: "a@b.test".into(),
                params: vec![
                    ("SIZE".into(), Some("100".into())),
                    ("BODY".into(), Some("8BITMIME".into())),
                    ("SMTPUTF8".into(), None),
                ],
            }
        );
        assert!(matches!(
            Command::parse("MAIL FROM: <>"),
            Ok(Command::Mail { path, .. }) if path.is_empty()
        ));
    }

    #[test]
    fn malformed_commands() {
        assert_eq!(Command::parse("FOO"), Err(CommandError::Unknown));
        assert!(matches!(
            Command::parse("MAIL TO:<a@b>"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            Command::parse("RCPT TO:a@b"),
            Err(CommandError::Path(_))
        ));
        assert!(matches!(
            Command::parse("RCPT TO:<>"),
            Err(CommandError::Path(_))
        ));
        assert!(matches!(
            Command::parse("RCPT TO:<a@b>x"),
            Err(CommandError::Path(_))
        ));
        assert!(matches!(
            Command::parse("EHLO"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            Command::parse("DATA now"),
            Err(CommandError::Syntax(_))
        ));
    }

    #[test]
    fn bdat() {
        assert_eq!(
            Command::parse("BDAT 10"),
            Ok(Command::Bdat {
                size: 10,
                last: false
            })
        );
        assert_eq!(
            Command::parse("BDAT 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert!(Command::parse("BDAT -1").is_err());
        assert!(Command::parse("BDAT 1 LAST x").is_err());
        assert!(Command::parse("BDAT 99999999999999999999").is_err());
    }

    #[test]
    fn auth() {
        assert_eq!(
            Command::parse("auth plain"),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: None
            })
        );
        let Ok(Command::Auth {
            mechanism,
            initial_response: Some(initial),
        }) = Command::parse("AUTH LOGIN dXNlcg==")
        else {
            panic!("expected AUTH with an initial response");
        };
        assert_eq!(
            (mechanism.as_str(), initial.as_str()),
            ("LOGIN", "dXNlcg==")
        );
        // Unknown mechanisms parse (504 is the session's); bad names do not.
        assert!(Command::parse("AUTH X-NEW_1").is_ok());
        for bad in [
            "AUTH",
            "AUTH  ",
            "AUTH P+AIN",
            "AUTH PLAIN a b",
            "AUTH ABCDEFGHIJKLMNOPQRSTU",
        ] {
            assert!(
                matches!(Command::parse(bad), Err(CommandError::Syntax(_))),
                "{bad}"
            );
        }
        // The initial response never shows in Debug output.
        let debug = format!("{:?}", Command::parse("AUTH PLAIN AGEAc2VjcmV0").unwrap());
        assert!(!debug.contains("AGEAc2VjcmV0"), "{debug}");
    }
}
