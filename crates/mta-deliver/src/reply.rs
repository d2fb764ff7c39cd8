//! Server replies as the client reads them: multi-line replies (RFC 5321
//! section 4.2.1) and enhanced status codes (RFC 2034, RFC 3463).

use std::fmt;

/// The longest reply line accepted, CRLF included. RFC 5321 section
/// 4.5.3.1.5 says 512; real servers send longer text, so allow more.
pub(crate) const MAX_LINE: usize = 4096;

/// The most lines in one reply (an EHLO reply has one per extension).
pub(crate) const MAX_LINES: usize = 256;

/// One reply, possibly of several lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code of the first line, e.g. `5.1.1`, when the
    /// server gave one whose class matches the reply code (RFC 2034).
    pub enhanced: Option<String>,
    /// The text of each line, after the code and separator; the enhanced
    /// code is left in place.
    pub lines: Vec<String>,
}

/// A reply line that is not `ddd`, `ddd text` or `ddd-text`, or whose code
/// differs from the first line's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply line: {0:?}")]
pub(crate) struct MalformedReply(pub String);

/// Builds a reply line by line.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Takes one line without its CRLF. Returns the whole reply when the
    /// line was its last (`ddd` followed by a space or nothing).
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, MalformedReply> {
        let text = String::from_utf8_lossy(line);
        let bad = || MalformedReply(text.chars().take(120).collect());
        if line.len() < 3
            || !line[..3].iter().all(u8::is_ascii_digit)
            || !(b'2'..=b'5').contains(&line[0])
        {
            return Err(bad());
        }
        let code = u16::from(line[0] - b'0') * 100
            + u16::from(line[1] - b'0') * 10
            + u16::from(line[2] - b'0');
        if self.code.is_some_and(|c| c != code) {
            return Err(bad());
        }
        self.code = Some(code);
        let (last, rest) = match line.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &text[4..]),
            Some(b'-') => (false, &text[4..]),
            Some(_) => return Err(bad()),
        };
        if self.lines.len() >= MAX_LINES {
            return Err(bad());
        }
        // Control characters from the server never reach logs or DSNs.
        let clean: String = rest
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.lines.push(clean.trim_end().to_owned());
        if !last {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        let enhanced = enhanced_code(code, &lines[0]).map(str::to_owned);
        Ok(Some(Reply {
            code,
            enhanced,
            lines,
        }))
    }
}

/// The enhanced status code at the start of `text`, when its class is the
/// first digit of `code` (RFC 2034 section 4; RFC 3463 section 2 for the
/// syntax: class "." 1*3digit "." 1*3digit).
pub fn enhanced_code(code: u16, text: &str) -> Option<&str> {
    let word = text.split(' ').next()?;
    let mut parts = word.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let class_ok = class.len() == 1 && class.as_bytes()[0] == b'0' + (code / 100) as u8;
    (class_ok && digits(subject, 3) && digits(detail, 3)).then_some(word)
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The enhanced status code: the server's, else `X.0.0` from the class
    /// of the reply code (RFC 3463 section 3.1).
    pub fn status(&self) -> String {
        match &self.enhanced {
            Some(s) => s.clone(),
            None => format!("{}.0.0", self.code / 100),
        }
    }

    /// The status with its class forced to 4: for a permanent error that is
    /// nonetheless only a reason to try later or elsewhere (a 5xx greeting).
    pub fn transient_status(&self) -> String {
        let status = self.status();
        format!("4{}", &status[1..])
    }

    /// The EHLO extension lines: every line but the first (RFC 5321
    /// section 4.1.1.1).
    pub fn extension_lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().skip(1).map(String::as_str)
    }
}

impl fmt::Display for Reply {
    /// The reply on one line, as it goes in a reason or after a DSN's
    /// `Diagnostic-Code: smtp;`: `550 5.1.1 no such user`; the lines of a
    /// multi-line reply joined by spaces, each with its code and
    /// separator, as Postfix quotes them: `550-5.1.1 first 550 5.1.1 last`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let separator = if i == last { ' ' } else { '-' };
            if line.is_empty() && i == last {
                write!(f, "{}", self.code)?;
            } else {
                write!(f, "{}{separator}{line}", self.code)?;
            }
        }
        if self.lines.is_empty() {
            write!(f, "{}", self.code)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Reply {
        let mut p = ReplyParser::default();
        let (last, first) = lines.split_last().unwrap();
        for l in first {
            assert_eq!(p.push(l.as_bytes()).unwrap(), None);
        }
        p.push(last.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn one_line_with_enhanced_code() {
        let r = parse(&["550 5.1.1 <a@b>: no such user"]);
        assert_eq!(r.code, 550);
        assert_eq!(r.status(), "5.1.1");
        assert_eq!(r.to_string(), "550 5.1.1 <a@b>: no such user");
        assert!(!r.is_success() && !r.is_transient());
    }

    #[test]
    fn status_derived_from_class_when_absent_or_mismatched() {
        assert_eq!(parse(&["451 try later"]).status(), "4.0.0");
        assert_eq!(parse(&["451 5.1.1 wrong class"]).status(), "4.0.0");
        assert_eq!(parse(&["250"]).status(), "2.0.0");
        assert_eq!(parse(&["250 2.1234.0 too long"]).status(), "2.0.0");
    }

    #[test]
    fn multi_line_reply() {
        let r = parse(&["250-mx.test hello", "250-PIPELINING", "250 SIZE 1000"]);
        assert_eq!(r.code, 250);
        assert_eq!(
            r.to_string(),
            "250-mx.test hello 250-PIPELINING 250 SIZE 1000",
            "joined as Postfix quotes a reply"
        );
        assert_eq!(parse(&["250"]).to_string(), "250");
        assert_eq!(
            parse(&["550-", "550 5.1.1 no"]).to_string(),
            "550- 550 5.1.1 no"
        );
        assert_eq!(
            r.extension_lines().collect::<Vec<_>>(),
            ["PIPELINING", "SIZE 1000"]
        );
    }

    #[test]
    fn transient_status_forces_class_four() {
        assert_eq!(parse(&["554 5.7.1 go away"]).transient_status(), "4.7.1");
        assert_eq!(parse(&["554 go away"]).transient_status(), "4.0.0");
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in ["", "25", "abc hello", "250xhello", "650 nope", "199 no"] {
            assert!(
                ReplyParser::default().push(bad.as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        let mut p = ReplyParser::default();
        p.push(b"250-one").unwrap();
        assert!(p.push(b"251 two").is_err());
    }

    #[test]
    fn control_characters_are_blanked() {
        let r = parse(&["250 ok\x1b[31m"]);
        assert_eq!(r.lines[0], "ok [31m");
    }
}
