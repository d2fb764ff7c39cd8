//! The signatures a stored message carries: the `DKIM-Signature:` fields
//! on top of it, which are the ones mtad added (a signature made
//! upstream sits below mtad's `Received:`). For the delivery log.

use crate::signers::SignedBy;

/// `d=` and `s=` of each `DKIM-Signature:` field above the first other
/// header field.
pub fn signatures_on_top(message: &[u8]) -> Vec<SignedBy> {
    let mut found = Vec::new();
    let mut rest = message;
    loop {
        let Some(field) = next_field(rest) else {
            return found;
        };
        rest = &rest[field.len()..];
        let Some((name, value)) = split_field(field) else {
            return found;
        };
        if !name.eq_ignore_ascii_case(b"DKIM-Signature") {
            return found;
        }
        let value = String::from_utf8_lossy(value);
        let tag = |wanted: &str| {
            value.split(';').find_map(|t| {
                let (k, v) = t.split_once('=')?;
                (k.trim() == wanted).then(|| v.split_whitespace().collect::<String>())
            })
        };
        if let (Some(domain), Some(selector)) = (tag("d"), tag("s")) {
            found.push(SignedBy { domain, selector });
        }
    }
}

/// One header field with its continuation lines and final CRLF; `None`
/// at the end of the header.
fn next_field(input: &[u8]) -> Option<&[u8]> {
    if input.is_empty() || input.starts_with(b"\r\n") {
        return None;
    }
    let mut end = 0;
    loop {
        let line_end = memchr_crlf(&input[end..])? + end + 2;
        end = line_end;
        match input.get(end) {
            Some(b' ' | b'\t') => continue,
            _ => return Some(&input[..end]),
        }
    }
}

fn memchr_crlf(input: &[u8]) -> Option<usize> {
    input.windows(2).position(|w| w == b"\r\n")
}

fn split_field(field: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = field.iter().position(|&b| b == b':')?;
    Some((field[..colon].trim_ascii(), &field[colon + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fields_on_top() {
        let m = b"DKIM-Signature: v=1; a=rsa-sha256; s=r1;\r\n\td=example.com; b=abc\r\n\
                  dkim-signature: v=1; d=example.com; s=e1; b=x\r\n\
                  Received: from x\r\n\
                  DKIM-Signature: v=1; d=upstream.test; s=u; b=y\r\n\
                  From: a@example.com\r\n\r\nbody\r\n";
        let found: Vec<String> = signatures_on_top(m)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["example.com:r1", "example.com:e1"]);
    }

    #[test]
    fn none_when_unsigned_or_empty() {
        assert!(signatures_on_top(b"Received: x\r\n\r\n").is_empty());
        assert!(signatures_on_top(b"").is_empty());
        assert!(signatures_on_top(b"DKIM-Signature: v=1; d=a; s=b").is_empty());
    }
}
