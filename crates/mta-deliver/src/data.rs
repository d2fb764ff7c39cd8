//! Message text on the wire after DATA: dot-stuffing (RFC 5321 section
//! 4.5.2) and the end-of-data line.

use std::borrow::Cow;

/// How much message text goes in one write (each write has its own
/// `data_block` timeout, RFC 5321 section 4.5.3.2.5).
pub(crate) const BLOCK: usize = 64 * 1024;

/// Appends `content[start..end]` to `out`, doubling a `.` that begins a
/// line. A line begins at the start of the content and after every LF.
/// The text between two dots to double is found with `memmem` (an LF
/// followed by a dot) and copied whole.
pub(crate) fn stuff(content: &[u8], start: usize, end: usize, out: &mut Vec<u8>) {
    let mut from = start;
    if start < end && content[start] == b'.' && (start == 0 || content[start - 1] == b'\n') {
        out.push(b'.');
    }
    for at in memchr::memmem::find_iter(&content[start..end], b"\n.") {
        // The dot's index; `find_iter` only reports a pair wholly inside
        // the range, so it is below `end`.
        let dot = start + at + 1;
        out.extend_from_slice(&content[from..dot]);
        out.push(b'.');
        from = dot;
    }
    out.extend_from_slice(&content[from..end]);
}

/// What follows the content: a CRLF when the content does not end with
/// one (the terminator must start a line), then `.` CRLF.
pub(crate) fn terminator(content: &[u8]) -> &'static [u8] {
    if content.is_empty() || content.ends_with(b"\r\n") {
        b".\r\n"
    } else if content.ends_with(b"\r") {
        b"\n.\r\n"
    } else {
        b"\r\n.\r\n"
    }
}

/// Appends the whole wire form of `content` to `out`: the content
/// dot-stuffed, then the end of the data (a CRLF first when the content
/// does not end with one).
pub fn wire_form(content: &[u8], out: &mut Vec<u8>) {
    let after = terminator(content);
    out.reserve(content.len() + after.len());
    stuff(content, 0, content.len(), out);
    out.extend_from_slice(after);
}

/// Whether `content[start..end]` holds a dot to double.
fn has_dot_to_double(content: &[u8], start: usize, end: usize) -> bool {
    (start < end && content[start] == b'.' && (start == 0 || content[start - 1] == b'\n'))
        || memchr::memmem::find(&content[start..end], b"\n.").is_some()
}

/// The whole wire form, in blocks of about [`BLOCK`] bytes, each with
/// what goes right after it (the terminator after the last, nothing
/// after the others). A block with no dot to double is the content
/// itself, not a copy.
pub(crate) fn blocks(content: &[u8]) -> impl Iterator<Item = (Cow<'_, [u8]>, &'static [u8])> + '_ {
    let count = content.len().div_ceil(BLOCK).max(1);
    (0..count).map(move |n| {
        let start = n * BLOCK;
        let end = ((n + 1) * BLOCK).min(content.len());
        let block = if has_dot_to_double(content, start, end) {
            let mut out = Vec::with_capacity(end - start + 64);
            stuff(content, start, end, &mut out);
            Cow::Owned(out)
        } else {
            Cow::Borrowed(&content[start..end])
        };
        let after = if n + 1 == count {
            terminator(content)
        } else {
            b""
        };
        (block, after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(content: &[u8]) -> Vec<u8> {
        blocks(content)
            .flat_map(|(block, after)| [block.into_owned(), after.to_vec()])
            .flatten()
            .collect()
    }

    /// The wire form in one piece is the blocks' wire form.
    #[test]
    fn wire_form_is_the_blocks_joined() {
        let mut big = b"a\r\n.b\r\n".repeat(BLOCK / 4);
        big.extend_from_slice(b".end");
        for content in [&b""[..], b".", b"x\r", b"..\r\n.\r\n", &big] {
            let mut out = b"kept".to_vec();
            wire_form(content, &mut out);
            assert_eq!(&out[..4], b"kept");
            assert_eq!(
                out[4..],
                wire(content)[..],
                "{:?}",
                &content[..content.len().min(20)]
            );
        }
    }

    #[test]
    fn leading_dots_are_doubled() {
        assert_eq!(
            wire(b".hidden\r\nmid.dle\r\n..two\r\n.\r\n"),
            b"..hidden\r\nmid.dle\r\n...two\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn missing_final_crlf_is_added() {
        assert_eq!(wire(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(wire(b"half\r"), b"half\r\n.\r\n");
        assert_eq!(wire(b""), b".\r\n");
    }

    /// Against the definition, octet by octet, on text full of dots and
    /// line ends, in ranges that start and end anywhere.
    #[test]
    fn stuffing_matches_the_octet_by_octet_rule() {
        fn slow(content: &[u8], start: usize, end: usize) -> Vec<u8> {
            let mut out = Vec::new();
            for i in start..end {
                if content[i] == b'.' && (i == 0 || content[i - 1] == b'\n') {
                    out.push(b'.');
                }
                out.push(content[i]);
            }
            out
        }
        let alphabet = b".\r\nx";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let content: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 60)) as usize + i) % alphabet.len()])
                .collect();
            let start = (seed >> 8) as usize % (len + 1);
            let end = start + (seed >> 16) as usize % (len - start + 1);
            let mut out = Vec::new();
            stuff(&content, start, end, &mut out);
            assert_eq!(
                out,
                slow(&content, start, end),
                "{content:?} {start}..{end}"
            );
        }
    }

    /// A block with no dot to double goes out as the content itself; one
    /// with a dot (also one starting a block) is a stuffed copy.
    #[test]
    fn only_blocks_with_a_dot_to_double_are_copied() {
        let mut content = vec![b'a'; BLOCK - 2];
        content.extend_from_slice(b"\r\n.x\r\n");
        content.extend_from_slice(&vec![b'b'; BLOCK]);
        content.extend_from_slice(b"\r\nend\r\n");
        let kinds: Vec<_> = blocks(&content)
            .map(|(block, after)| (matches!(block, Cow::Borrowed(_)), after))
            .collect();
        assert_eq!(
            kinds,
            [(true, &b""[..]), (false, &b""[..]), (true, &b".\r\n"[..])]
        );
        let mut clean = b"x\r\n".repeat(10);
        clean.extend_from_slice(b"y");
        let (block, after) = blocks(&clean).next().unwrap();
        assert!(matches!(block, Cow::Borrowed(b) if b == &clean[..]));
        assert_eq!(after, b"\r\n.\r\n");
    }

    #[test]
    fn a_dot_at_a_block_boundary_is_stuffed() {
        let mut content = vec![b'a'; BLOCK - 2];
        content.extend_from_slice(b"\r\n.x\r\n");
        let out = wire(&content);
        assert!(out.ends_with(b"\r\n..x\r\n.\r\n"));
        assert_eq!(blocks(&content).count(), 2);
    }
}
