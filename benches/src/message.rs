//! Test messages: a small header section and a body of printable ASCII
//! lines, padded to an exact size.

use std::time::{SystemTime, UNIX_EPOCH};

/// Longest body line, without its CRLF (RFC 5322 recommends 78).
pub const MAX_LINE: usize = 78;

/// Characters of the body lines: no dots, so no line ever starts with '.'.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The alphabet and then its first [`MAX_LINE`] characters again, so that a
/// body line (at most `MAX_LINE` characters from any starting point in the
/// alphabet, wrapping round) is one slice of it.
const CYCLE: [u8; ALPHABET.len() + MAX_LINE] = {
    let mut cycle = [0; ALPHABET.len() + MAX_LINE];
    let mut i = 0;
    while i < cycle.len() {
        cycle[i] = ALPHABET[i % ALPHABET.len()];
        i += 1;
    }
    cycle
};

/// What every message of a run shares.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    /// From: address.
    pub from: String,
    /// Recipient domain: recipients are `rcpt1@domain` .. `rcptN@domain`.
    pub to_domain: String,
    /// Number of recipients.
    pub rcpts: u32,
    /// Total size in bytes, headers included.
    pub size: usize,
    /// Date: header value.
    pub date: String,
    /// Right-hand side of the Message-ID.
    pub id_domain: String,
    /// Makes Message-IDs unique across runs (e.g. pid and start time).
    pub id_tag: String,
}

/// The `k`-th recipient (1-based).
pub fn rcpt_address(domain: &str, k: u32) -> String {
    format!("rcpt{k}@{domain}")
}

impl MessageSpec {
    /// Writes message number `seq` into `out` (cleared first). The message
    /// is exactly `size` bytes unless the headers alone are larger, ends
    /// with CRLF, has lines of at most 78 characters in its body and no line
    /// starting with '.'.
    pub fn build(&self, out: &mut Vec<u8>, seq: u64) {
        out.clear();
        out.reserve(self.size.max(512));
        self.headers(out, seq, false);
        let mut remaining = self.size.saturating_sub(out.len() + 2);
        if remaining == 1 {
            // A body can't be one byte (lines end with CRLF): make the
            // header section one byte longer instead.
            out.clear();
            self.headers(out, seq, true);
            remaining = self.size.saturating_sub(out.len() + 2);
        }
        out.extend_from_slice(b"\r\n");
        let mut line_no = seq as usize;
        while remaining > 0 {
            let mut total = remaining.min(MAX_LINE + 2);
            if remaining - total == 1 {
                total -= 1;
            }
            let len = total - 2;
            let start = line_no % ALPHABET.len();
            out.extend_from_slice(&CYCLE[start..start + len]);
            out.extend_from_slice(b"\r\n");
            remaining -= total;
            line_no += 1;
        }
    }

    fn headers(&self, out: &mut Vec<u8>, seq: u64, pad: bool) {
        use std::io::Write;
        let _ = write!(out, "From: {}\r\nTo: ", self.from);
        for k in 1..=self.rcpts {
            if k > 1 {
                out.extend_from_slice(b",\r\n ");
            }
            out.extend_from_slice(rcpt_address(&self.to_domain, k).as_bytes());
        }
        let hash = if pad { "#" } else { "" };
        let _ = write!(
            out,
            "\r\nSubject: mta-loadgen message {hash}{seq}\r\n\
             Message-ID: <{seq}.{}@{}>\r\nDate: {}\r\n",
            self.id_tag, self.id_domain, self.date
        );
    }
}

/// Appends `msg` to `out` dot-stuffed for DATA (RFC 5321 4.5.2), followed by
/// the `.` CRLF terminator (after a CRLF when `msg` does not end with one).
/// The MTA's own outbound code, which copies the text between the dots
/// to double in whole pieces: the load generator should cost its machine
/// as little as it can, as it shares it with the server it measures.
pub fn dot_stuff_into(out: &mut Vec<u8>, msg: &[u8]) {
    mta_deliver::data::wire_form(msg, out);
}

/// An RFC 5322 date in UTC, e.g. `Thu, 1 Jan 1970 00:00:00 +0000`; the
/// same formatter the MTA uses for its `Received:` headers.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    mta_smtp::rfc5322_date(secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spec(size: usize, rcpts: u32) -> MessageSpec {
        MessageSpec {
            from: "sender@example.test".into(),
            to_domain: "example.test".into(),
            rcpts,
            size,
            date: rfc5322_date(UNIX_EPOCH),
            id_domain: "loadgen.test".into(),
            id_tag: "1.2".into(),
        }
    }

    fn check_shape(msg: &[u8]) {
        assert!(msg.ends_with(b"\r\n"));
        let text = std::str::from_utf8(msg).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("From: sender@example.test\r\n"));
        for line in text.split_terminator("\r\n") {
            assert!(!line.starts_with('.'), "{line:?}");
            assert!(!line.contains('\n') && !line.contains('\r'));
            assert!(line.bytes().all(|b| (b' '..=b'~').contains(&b)));
        }
        for line in body.split_terminator("\r\n") {
            assert!(line.len() <= MAX_LINE, "{}", line.len());
        }
    }

    #[test]
    fn exact_sizes() {
        let mut buf = Vec::new();
        for rcpts in [1, 3] {
            let head_len = {
                spec(0, rcpts).build(&mut buf, 7);
                buf.len()
            };
            for size in head_len..head_len + 400 {
                spec(size, rcpts).build(&mut buf, 7);
                assert_eq!(buf.len(), size, "rcpts {rcpts}");
                check_shape(&buf);
            }
        }
        for size in [4096, 102_400, 1_048_576] {
            spec(size, 1).build(&mut buf, 123_456);
            assert_eq!(buf.len(), size);
            check_shape(&buf);
        }
    }

    /// Body line `n` is the alphabet's characters from `n` on, wrapping
    /// round: the same text the generator always wrote.
    #[test]
    fn body_lines_follow_the_alphabet() {
        let mut buf = Vec::new();
        for seq in [0, 1, 61, 62, 1_000_003] {
            spec(10_000, 2).build(&mut buf, seq);
            let text = std::str::from_utf8(&buf).unwrap();
            let body = text.split_once("\r\n\r\n").unwrap().1;
            for (k, line) in body.split_terminator("\r\n").enumerate() {
                let start = (seq as usize + k) % ALPHABET.len();
                let want: Vec<u8> = (0..line.len())
                    .map(|i| ALPHABET[(start + i) % ALPHABET.len()])
                    .collect();
                assert_eq!(line.as_bytes(), &want[..], "seq {seq} line {k}");
            }
        }
    }

    #[test]
    fn headers() {
        let mut buf = Vec::new();
        spec(4096, 3).build(&mut buf, 42);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains(
            "To: rcpt1@example.test,\r\n rcpt2@example.test,\r\n rcpt3@example.test\r\n"
        ));
        assert!(text.contains("\r\nSubject: mta-loadgen message 42\r\n"));
        assert!(text.contains("\r\nMessage-ID: <42.1.2@loadgen.test>\r\n"));
        assert!(text.contains("\r\nDate: Thu, 1 Jan 1970 00:00:00 +0000\r\n"));
    }

    #[test]
    fn too_small_size_gives_headers_only() {
        let mut buf = Vec::new();
        spec(10, 1).build(&mut buf, 1);
        assert!(buf.len() > 10);
        assert!(buf.ends_with(b"\r\n\r\n"));
    }

    #[test]
    fn dot_stuffing() {
        let mut out = Vec::new();
        dot_stuff_into(&mut out, b".a\r\nb.\r\n..\r\n");
        assert_eq!(out, b"..a\r\nb.\r\n...\r\n.\r\n");
        out.clear();
        dot_stuff_into(&mut out, b"x");
        assert_eq!(out, b"x\r\n.\r\n");
        out.clear();
        dot_stuff_into(&mut out, b"");
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 1 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723); // 2000-02-29 01:02:03
        assert_eq!(rfc5322_date(t), "Tue, 29 Feb 2000 01:02:03 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31 23:59:59
        assert_eq!(rfc5322_date(t), "Tue, 31 Dec 2024 23:59:59 +0000");
    }
}
