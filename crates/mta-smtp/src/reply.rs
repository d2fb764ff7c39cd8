//! SMTP replies: a code, an enhanced status code (RFC 3463) and text.

use std::fmt;

/// One server reply, possibly of several lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, e.g. `2.0.0` (RFC 2034), if any.
    pub status: Option<&'static str>,
    /// The text lines; never empty.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A one-line reply without an enhanced status code (banner, HELO, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: None,
            lines: vec![text.into()],
        }
    }

    /// A reply with several lines; the enhanced code, when given, goes on
    /// every line as RFC 2034 section 4 asks.
    pub fn multiline(code: u16, status: Option<&'static str>, lines: Vec<String>) -> Reply {
        debug_assert!(!lines.is_empty());
        Reply {
            code,
            status,
            lines,
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 4xx or 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form, CRLF-terminated lines, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let last = self.lines.len() - 1;
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Writing to a Vec cannot fail.
            let _ = match self.status {
                Some(status) if !line.is_empty() => {
                    write!(out, "{}{sep}{status} {line}\r\n", self.code)
                }
                _ => write!(out, "{}{sep}{line}\r\n", self.code),
            };
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line() {
        let mut out = Vec::new();
        Reply::new(250, "2.0.0", "Ok").write_to(&mut out);
        assert_eq!(out, b"250 2.0.0 Ok\r\n");
    }

    #[test]
    fn several_lines_use_dash_until_the_last() {
        let mut out = Vec::new();
        Reply::multiline(250, None, vec!["host".into(), "SIZE 10".into()]).write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250 SIZE 10\r\n");
    }
}
