//! The message on standard input, as local programs write it: LF line
//! ends (or CRLF), maybe a leading mbox `From ` line, maybe a lone `.`
//! meant to end it, lines of any length. What comes out is what SMTP
//! carries (RFC 5321 section 2.3.8, RFC 5322 section 2.1.1): CRLF line
//! ends only, no NUL, no line over 998 octets.

use std::io::BufRead;

/// The longest line, without its CRLF (RFC 5322 section 2.1.1).
pub const MAX_LINE: usize = 998;

/// Reads a message to its end: end of input, or a line holding only `.`
/// when `dot_ends` (Sendmail's default, off with `-i`).
///
/// Line by line, as Postfix's `sendmail` does: a line ends at LF, and
/// CRs before it go; leading `From ` lines (also `>From `) are mbox
/// separators, not header fields, and go too. A CR anywhere else ends a
/// line too (bare CR is not allowed in SMTP text, and a progress meter's
/// CRs read best as line breaks); NUL octets are dropped (RFC 5322 has
/// no place for them). A line over [`MAX_LINE`] octets is broken, on a
/// UTF-8 character boundary when there is one near: in the header, with
/// a space after the break, so that the rest stays in the same field
/// (folding, RFC 5322 section 2.2.3).
pub fn read_message(mut input: impl BufRead, dot_ends: bool) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut first = true;
    let mut in_header = true;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        if first {
            let unquoted = &line[line.iter().take_while(|&&b| b == b'>').count()..];
            if unquoted.starts_with(b"From ") {
                continue;
            }
            first = false;
        }
        if dot_ends && line == b"." {
            break;
        }
        line.retain(|&b| b != 0);
        for piece in line.split(|&b| b == b'\r') {
            if piece.is_empty() {
                in_header = false;
            }
            push_line(&mut out, piece, in_header);
        }
    }
    Ok(out)
}

/// Appends one line and its CRLF, broken where it is too long.
fn push_line(out: &mut Vec<u8>, mut line: &[u8], in_header: bool) {
    while line.len() > MAX_LINE {
        let mut cut = if in_header { MAX_LINE - 1 } else { MAX_LINE };
        // Not inside a UTF-8 sequence: back up over continuation octets
        // (at most three).
        let mut back = 0;
        while back < 3 && cut > 1 && (line[cut] & 0xC0) == 0x80 {
            cut -= 1;
            back += 1;
        }
        out.extend_from_slice(&line[..cut]);
        out.extend_from_slice(b"\r\n");
        if in_header {
            out.push(b' ');
        }
        line = &line[cut..];
    }
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8], dot_ends: bool) -> Vec<u8> {
        read_message(text, dot_ends).unwrap()
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(read(b"A: b\n\nbody\n", true), b"A: b\r\n\r\nbody\r\n");
        assert_eq!(read(b"A: b\r\n\r\nbody\r\n", true), b"A: b\r\n\r\nbody\r\n");
        assert_eq!(
            read(b"A: b\n\nno final newline", true),
            b"A: b\r\n\r\nno final newline\r\n"
        );
        assert_eq!(
            read(b"A: b\n\n10%\r20%\r\n", true),
            b"A: b\r\n\r\n10%\r\n20%\r\n"
        );
        assert_eq!(read(b"A: b\n\nn\0ul\n", true), b"A: b\r\n\r\nnul\r\n");
        assert_eq!(read(b"", true), b"");
    }

    #[test]
    fn a_lone_dot_ends_the_message_unless_told_otherwise() {
        let text = b"A: b\n\none\n.\ntwo\n";
        assert_eq!(read(text, true), b"A: b\r\n\r\none\r\n");
        assert_eq!(read(text, false), b"A: b\r\n\r\none\r\n.\r\ntwo\r\n");
        // Only a line of exactly one dot.
        assert_eq!(read(b"A: b\n\n..\n. \n", true), b"A: b\r\n\r\n..\r\n. \r\n");
        assert_eq!(read(b"A: b\n\n.\r\nafter\n", true), b"A: b\r\n\r\n");
    }

    #[test]
    fn leading_from_lines_are_dropped() {
        assert_eq!(
            read(b"From root Mon Jan 1\n>From x\nA: b\n\nFrom here\n", true),
            b"A: b\r\n\r\nFrom here\r\n"
        );
    }

    #[test]
    fn long_lines_are_broken() {
        let mut text = b"Subject: ".to_vec();
        text.extend(std::iter::repeat_n(b'x', 1500));
        text.extend_from_slice(b"\n\n");
        text.extend(std::iter::repeat_n(b'y', 2000));
        text.push(b'\n');
        let out = read(&text, true);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert!(lines.iter().all(|l| l.len() <= MAX_LINE + 1), "CR included");
        assert!(lines[1].starts_with(b" x"), "header continued by folding");
        assert_eq!(lines[2], b"\r");
        assert!(lines[3].starts_with(b"y") && lines[4].starts_with(b"y"));
        let ys: usize = out.iter().filter(|&&b| b == b'y').count();
        assert_eq!(ys, 2000, "nothing lost in the body");
        // A break never splits a UTF-8 character.
        let mut body = b"A: b\n\n".to_vec();
        body.extend(std::iter::repeat_n("é".as_bytes(), 600).flatten());
        body.push(b'\n');
        let out = read(&body, true);
        for line in out.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(std::str::from_utf8(line).is_ok());
        }
    }
}
