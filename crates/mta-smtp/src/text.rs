//! Message text as it arrives after DATA or in BDAT chunks.
//!
//! This is where SMTP smuggling (CVE-2023-51764 and its kin) is stopped.
//! RFC 5321 section 4.1.1.4: only `<CRLF>.<CRLF>` ends DATA. A receiver that
//! also ends it on `<LF>.<LF>` or `<CR>.<CR>` lets a sender hide a second
//! transaction inside the first, which a downstream server then splits
//! differently. Here a line starts only after a real CRLF, so no other
//! sequence can end the text, and any bare CR or bare LF (RFC 5321 section
//! 2.3.8) makes the whole message rejected once its real end is reached.

/// What was wrong with the text of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// A LF not preceded by CR.
    BareLf,
    /// A CR not followed by LF.
    BareCr,
    /// A NUL octet: RFC 6152 excludes it from 8BITMIME text, and a server
    /// that strips it could see `CRLF NUL . CRLF` as the end of the text.
    Nul,
    /// The message is bigger than the SIZE limit.
    TooBig,
    /// A line longer than the line limit, CRLF included.
    LineTooLong,
}

/// Checks line endings and line lengths of wire bytes, chunk after chunk.
#[derive(Debug)]
pub(crate) struct LineChecker {
    max_line: usize,
    line_len: usize,
    pending_cr: bool,
    bare_lf: bool,
    bare_cr: bool,
    nul: bool,
    too_long: bool,
}

impl LineChecker {
    pub(crate) fn new(max_line: usize) -> Self {
        LineChecker {
            max_line,
            line_len: 0,
            pending_cr: false,
            bare_lf: false,
            bare_cr: false,
            nul: false,
            too_long: false,
        }
    }

    /// Looks at one wire byte; returns true when it ended a line with CRLF.
    #[inline]
    pub(crate) fn push(&mut self, b: u8) -> bool {
        let crlf = b == b'\n' && self.pending_cr;
        if self.pending_cr && b != b'\n' {
            self.bare_cr = true;
        }
        if b == 0 {
            self.nul = true;
        }
        if b == b'\n' {
            if !crlf {
                self.bare_lf = true;
            }
            if self.line_len + 1 > self.max_line {
                self.too_long = true;
            }
            self.line_len = 0;
        } else {
            self.line_len += 1;
        }
        self.pending_cr = b == b'\r';
        crlf
    }

    /// Checks a whole slice (BDAT chunks): runs of ordinary octets are
    /// counted at once, the octets that matter (CR, LF, NUL) one by one.
    pub(crate) fn push_all(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if !self.pending_cr {
                let run = ordinary_run(rest);
                self.ordinary(run);
                rest = &rest[run..];
                if rest.is_empty() {
                    break;
                }
            }
            self.push(rest[0]);
            rest = &rest[1..];
        }
    }

    /// Counts `n` octets that are none of CR, LF and NUL, with no CR
    /// pending: what [`push`](Self::push) would do for each, at once.
    #[inline]
    fn ordinary(&mut self, n: usize) {
        debug_assert!(!self.pending_cr || n == 0);
        self.line_len += n;
    }

    /// The first problem seen, in order of gravity. A CR left pending at the
    /// very end is bare too.
    pub(crate) fn finish(&self, too_big: bool) -> Result<(), TextError> {
        if self.bare_lf {
            Err(TextError::BareLf)
        } else if self.bare_cr || self.pending_cr {
            Err(TextError::BareCr)
        } else if self.nul {
            Err(TextError::Nul)
        } else if too_big {
            Err(TextError::TooBig)
        } else if self.too_long || self.line_len > self.max_line {
            Err(TextError::LineTooLong)
        } else {
            Ok(())
        }
    }
}

/// How many octets at the start of `bytes` are none of CR, LF and NUL.
#[inline]
fn ordinary_run(bytes: &[u8]) -> usize {
    memchr::memchr3(b'\r', b'\n', 0, bytes).unwrap_or(bytes.len())
}

/// How many CRs `bytes` holds, counted in runs short enough for a byte
/// counter, which the compiler turns into vector compares.
fn count_cr(bytes: &[u8]) -> usize {
    bytes
        .chunks(255)
        .map(|run| {
            run.iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b == b'\r'))) as usize
        })
        .sum()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// Just after a CRLF (or at the very start).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line: LF now ends the text.
    DotCr,
    /// Anywhere else.
    Mid,
}

/// Decodes the text after DATA: finds its end, removes dot-stuffing
/// (RFC 5321 section 4.5.2) and collects the content up to the size limit.
///
/// The text is decoded in place: wire octets are put after the content
/// decoded so far, in its own buffer, and an octet is moved down only
/// when a stuffing dot before it was removed (most messages have none,
/// so nothing moves). Each wire octet gives at most one octet of
/// content, so the content never overtakes the wire text it is made
/// from. The wire text is read straight into that buffer
/// ([`room`](Self::room) and [`appended`](Self::appended)), or copied
/// there ([`feed`](Self::feed)).
#[derive(Debug)]
pub(crate) struct DataDecoder {
    state: DataState,
    checker: LineChecker,
    max_size: usize,
    too_big: bool,
    /// The CR after a dot opening a line is kept at once, and taken back
    /// when an LF follows (the end of the text); false when there was no
    /// room for it.
    held_cr: bool,
    /// The content; during a feed, the wire text being decoded follows it.
    content: Vec<u8>,
    /// During a feed, where the content ends.
    kept: usize,
    /// The end of the text was read by way of [`appended`](Self::appended).
    ended: bool,
}

impl DataDecoder {
    /// `expected` is a guess at the content's size (the session's last
    /// message): the first allocation is an eighth above it, within 8 KiB
    /// and 1 MiB, and never above `max_size`.
    pub(crate) fn new(max_line: usize, max_size: usize, expected: usize) -> Self {
        let capacity = expected.saturating_add(expected / 8).clamp(8192, 1 << 20);
        DataDecoder {
            state: DataState::LineStart,
            checker: LineChecker::new(max_line),
            max_size,
            too_big: false,
            held_cr: false,
            content: Vec::with_capacity(capacity.min(max_size)),
            kept: 0,
            ended: false,
        }
    }

    /// Consumes wire bytes; returns how many were used and whether the end
    /// of the text (`CRLF.CRLF`) was among them.
    pub(crate) fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        let start = self.content.len();
        self.content.extend_from_slice(input);
        let (used, ended) = self.decode_from(start);
        self.content.truncate(self.kept);
        (used, ended)
    }

    /// Where wire text may be read to, after the content, until the end
    /// of the text was read: saves [`feed`](Self::feed)'s copy. Then
    /// [`appended`](Self::appended) with the length it had before.
    pub(crate) fn room(&mut self) -> Option<&mut Vec<u8>> {
        (!self.ended).then_some(&mut self.content)
    }

    /// Decodes the wire text read into [`room`](Self::room) past `start`,
    /// its length before the read. What followed the end of the text (the
    /// next commands) goes to `rest`, and [`ended`](Self::ended) becomes
    /// true.
    pub(crate) fn appended(&mut self, start: usize, rest: &mut bytes::BytesMut) {
        let (used, ended) = self.decode_from(start);
        if ended {
            rest.extend_from_slice(&self.content[start + used..]);
            self.ended = true;
        }
        self.content.truncate(self.kept);
    }

    /// True once [`appended`](Self::appended) read the end of the text.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Decodes the wire text at `content[start..]`, the content decoded so
    /// far ending at `start`; returns the wire octets used and whether the
    /// text ended. The content then ends at `kept`: the caller cuts the
    /// buffer there, after taking what followed the end. Whole lines
    /// that need no decoding are taken many at once
    /// ([`lines`](Self::lines)); inside a line, a run of ordinary octets
    /// (none of CR, LF, NUL) is found with memchr and taken at once; the
    /// octets that can end a line or the text go through
    /// [`octet`](Self::octet) one by one.
    fn decode_from(&mut self, start: usize) -> (usize, bool) {
        self.kept = start;
        let wire_end = self.content.len();
        let mut i = start;
        while i < wire_end {
            let plain = match self.state {
                DataState::Mid => true,
                DataState::LineStart => self.content[i] != b'.',
                DataState::Dot | DataState::DotCr => false,
            };
            if plain && !self.checker.pending_cr {
                let taken = self.lines(i, wire_end);
                if taken > 0 {
                    i += taken;
                    continue;
                }
                let run = ordinary_run(&self.content[i..wire_end]);
                if run > 0 {
                    self.checker.ordinary(run);
                    self.keep_run(i, run);
                    self.state = DataState::Mid;
                    i += run;
                    continue;
                }
            }
            if self.octet(self.content[i]) {
                return (i + 1 - start, true);
            }
            i += 1;
        }
        (wire_end - start, false)
    }

    /// Takes the longest start of the wire text `content[from..to]` made
    /// of lines that need no decoding, at once: ordinary octets, each line
    /// ended by CRLF within the line limit and the next one not starting
    /// with a dot (the last may be unfinished). Stops before anything else
    /// (a bare CR or LF, a NUL, a CR whose LF has not come yet, too long a
    /// line, a dot opening a line), which [`octet`](Self::octet) then
    /// sees. Called with no CR pending, in the middle of a line or at the
    /// start of one that does not open with a dot; returns the octets
    /// taken.
    fn lines(&mut self, from: usize, to: usize) -> usize {
        let whole = self.whole_lines(from, to);
        if whole > 0 {
            return whole;
        }
        let input = &self.content[from..to];
        // Where the current line began in `input`, and its octets before.
        let mut line_start = 0;
        let mut before = self.checker.line_len;
        // The LF of a CRLF taken: the search finds it, and skips it.
        let mut taken_lf = None;
        let mut end = input.len();
        for at in memchr::memchr3_iter(b'\r', b'\n', 0, input) {
            if Some(at) == taken_lf {
                continue;
            }
            let crlf = input[at] == b'\r' && input.get(at + 1) == Some(&b'\n');
            if !crlf || before + (at - line_start) + 2 > self.checker.max_line {
                end = at;
                break;
            }
            taken_lf = Some(at + 1);
            line_start = at + 2;
            before = 0;
            if input.get(line_start) == Some(&b'.') {
                end = line_start;
                break;
            }
        }
        if end == 0 {
            return 0;
        }
        self.keep_run(from, end);
        if end == line_start {
            self.checker.line_len = 0;
            self.state = DataState::LineStart;
        } else {
            self.checker.line_len = before + (end - line_start);
            self.state = DataState::Mid;
        }
        end
    }

    /// The usual text's way through [`lines`](Self::lines): the whole
    /// lines at the start of `content[from..to]` found by their LFs alone
    /// (each after a CR, within the line limit, the next not opening with
    /// a dot), then checked all at once: no NUL among them, and no CR but
    /// the one before each LF. One search stop per line instead of two,
    /// and two passes that run at the speed of memory. Returns the octets
    /// taken; 0 when there is no whole line or the check fails, and
    /// `lines` then goes by the octets that matter one search at a time.
    fn whole_lines(&mut self, from: usize, to: usize) -> usize {
        let input = &self.content[from..to];
        let mut before = self.checker.line_len;
        let mut end = 0;
        let mut lines = 0;
        for lf in memchr::memchr_iter(b'\n', input) {
            let crlf = lf > 0 && input[lf - 1] == b'\r';
            if !crlf || before + (lf + 1 - end) > self.checker.max_line {
                break;
            }
            lines += 1;
            end = lf + 1;
            before = 0;
            if input.get(end) == Some(&b'.') {
                break;
            }
        }
        let taken = &input[..end];
        if lines == 0 || memchr::memchr(0, taken).is_some() || count_cr(taken) != lines {
            return 0;
        }
        self.keep_run(from, end);
        self.checker.line_len = 0;
        self.state = DataState::LineStart;
        end
    }

    /// One octet; true when it ended the text.
    #[inline]
    fn octet(&mut self, b: u8) -> bool {
        match self.state {
            DataState::LineStart if b == b'.' => {
                self.checker.push(b);
                self.state = DataState::Dot;
                return false;
            }
            DataState::Dot if b == b'\r' => {
                self.state = DataState::DotCr;
                self.held_cr = self.kept < self.max_size;
                if self.held_cr {
                    self.keep(b);
                }
                return false;
            }
            DataState::DotCr if b == b'\n' => {
                if self.held_cr {
                    self.kept -= 1;
                }
                return true;
            }
            DataState::DotCr => {
                // `.` CR then something else: the dot was stuffing and
                // the CR (kept already, if there was room) is bare.
                self.checker.push(b'\r');
                if !self.held_cr {
                    self.too_big = true;
                }
            }
            _ => {}
        }
        let line_end = self.checker.push(b);
        self.keep(b);
        self.state = if line_end {
            DataState::LineStart
        } else {
            DataState::Mid
        };
        false
    }

    /// Keeps one octet of content, the wire octet just looked at (or the
    /// CR held for it): never past the wire text still to be read.
    #[inline]
    fn keep(&mut self, b: u8) {
        if self.kept < self.max_size {
            self.content[self.kept] = b;
            self.kept += 1;
        } else {
            self.too_big = true;
        }
    }

    /// Keeps the `n` wire octets at `content[from..]`, moved down to where
    /// the content ends when a removed dot left a gap.
    #[inline]
    fn keep_run(&mut self, from: usize, n: usize) {
        let room = self.max_size.saturating_sub(self.kept);
        if n > room {
            self.too_big = true;
        }
        let n = n.min(room);
        if from != self.kept {
            self.content.copy_within(from..from + n, self.kept);
        }
        self.kept += n;
    }

    /// The content, or what was wrong with it.
    pub(crate) fn finish(self) -> Result<Vec<u8>, TextError> {
        self.checker.finish(self.too_big)?;
        Ok(self.content)
    }
}

/// The header section of a message, up to and including the CRLF that
/// ends its last field (RFC 5322 section 2.1); all of it when there is no
/// empty line, none of it when the message starts with one. Delivery
/// looks for UTF-8 there (RFC 6531); a DSN returns it for `RET=HDRS` (RFC 3461).
pub fn header_section(content: &[u8]) -> &[u8] {
    if content.starts_with(b"\r\n") {
        return &[];
    }
    match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &content[..end + 2],
        None => content,
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(wire: &[u8]) -> (Result<Vec<u8>, TextError>, usize, bool) {
        let mut d = DataDecoder::new(1000, 1 << 20, 0);
        let (used, done) = d.feed(wire);
        (d.finish(), used, done)
    }

    /// Whole lines are taken many at once and checked afterwards: a bare
    /// CR, a NUL or a bare LF among them is still found, and a dot
    /// opening a line after them still unstuffed.
    #[test]
    fn a_fault_among_many_whole_lines_is_still_found() {
        let many = b"an ordinary line of text\r\n".repeat(40);
        for (fault, error) in [
            (&b"a bare \r inside\r\n"[..], TextError::BareCr),
            (b"a \0 inside\r\n", TextError::Nul),
            (b"a bare \n inside\r\n", TextError::BareLf),
        ] {
            let wire = [&many[..], fault, &many, b".\r\n"].concat();
            let (content, used, done) = decode(&wire);
            assert!(done && used == wire.len());
            assert_eq!(content, Err(error));
        }
        let wire = [&many[..], b"..stuffed\r\n", &many, b".\r\n"].concat();
        let (content, _, done) = decode(&wire);
        assert!(done);
        assert_eq!(
            content.unwrap(),
            [&many[..], b".stuffed\r\n", &many].concat()
        );
    }

    #[test]
    fn crs_are_counted_across_runs() {
        for n in [0, 1, 254, 255, 256, 1000] {
            let bytes = [b"x\r".repeat(n), b"\n".to_vec()].concat();
            assert_eq!(count_cr(&bytes), n);
        }
    }

    #[test]
    fn the_header_section_ends_at_the_first_empty_line() {
        assert_eq!(
            header_section(b"A: b\r\nC: d\r\n\r\nbody\r\n"),
            b"A: b\r\nC: d\r\n"
        );
        assert_eq!(header_section(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_section(b"\r\nbody only\r\n"), b"");
        assert_eq!(header_section(b""), b"");
        // Only CRLF CRLF ends it: bare LFs do not.
        assert_eq!(header_section(b"A: b\n\nbody"), b"A: b\n\nbody");
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (content, used, done) = decode(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n");
        assert!(done);
        assert_eq!(used, 23);
        assert_eq!(content.unwrap(), b"Subject: x\r\n\r\nbody\r\n");
    }

    #[test]
    fn empty_text_ends_at_once() {
        let (content, used, done) = decode(b".\r\n");
        assert!(done);
        assert_eq!(used, 3);
        assert_eq!(content.unwrap(), b"");
    }

    /// Many clean lines are taken at once; what stops that (a dot opening
    /// a line, a bare LF, too long a line, the end) is decoded as before,
    /// whatever the reads' boundaries.
    #[test]
    fn whole_lines_at_once_stop_where_decoding_is_needed() {
        let clean = b"abc\r\n".repeat(50);
        type Case = (Vec<u8>, Result<Vec<u8>, TextError>);
        let cases: [Case; 3] = [
            (
                [&clean[..], b"..dot\r\nend\r\n.\r\n"].concat(),
                Ok([&clean[..], b".dot\r\nend\r\n"].concat()),
            ),
            (
                [&clean[..], b"bare\nlf\r\n.\r\n"].concat(),
                Err(TextError::BareLf),
            ),
            (
                [&clean[..], &[b'y'; 20][..], b"\r\n.\r\n"].concat(),
                Err(TextError::LineTooLong),
            ),
        ];
        for (wire, want) in cases {
            for split in 0..wire.len() {
                let mut d = DataDecoder::new(20, 1 << 20, 0);
                let (a, done) = d.feed(&wire[..split]);
                assert!(!done && a == split, "{split}");
                let (b, done) = d.feed(&wire[split..]);
                assert!(done && split + b == wire.len(), "{split}");
                assert_eq!(d.finish(), want, "split at {split}");
            }
        }
    }

    #[test]
    fn dot_stuffing_is_removed() {
        let (content, _, done) = decode(b"a\r\n..b\r\n.c\r\n.\r\n");
        assert!(done);
        assert_eq!(content.unwrap(), b"a\r\n.b\r\nc\r\n");
    }

    #[test]
    fn smuggling_sequences_never_end_the_text() {
        for seq in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r",
            b"\r\n.\n",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r\n.\r\r\n",
            b"\r\n\x00.\r\n",
        ] {
            let mut wire = b"Subject: x\r\n\r\nhi".to_vec();
            wire.extend_from_slice(seq);
            wire.extend_from_slice(b"MAIL FROM:<evil@x.test>\r\n");
            let mut d = DataDecoder::new(1000, 1 << 20, 0);
            let (used, done) = d.feed(&wire);
            assert!(!done, "{seq:?} ended the text");
            assert_eq!(used, wire.len());
            // The real end arrives; the message is then refused whole.
            let (_, done) = d.feed(b"\r\n.\r\n");
            assert!(done);
            let err = d.finish().unwrap_err();
            assert!(
                matches!(err, TextError::BareLf | TextError::BareCr | TextError::Nul),
                "{seq:?}: {err:?}"
            );
        }
    }

    #[test]
    fn end_split_across_reads() {
        let mut d = DataDecoder::new(1000, 1 << 20, 0);
        for chunk in [&b"Subject: x\r\n\r\nhi\r"[..], b"\n", b".", b"\r", b"\n"] {
            let (used, done) = d.feed(chunk);
            assert_eq!(used, chunk.len());
            if done {
                assert_eq!(d.finish().unwrap(), b"Subject: x\r\n\r\nhi\r\n");
                return;
            }
        }
        panic!("end not found");
    }

    #[test]
    fn long_line_and_size() {
        let mut wire = vec![b'a'; 999];
        wire.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode(&wire).0, Err(TextError::LineTooLong));
        let mut wire = vec![b'a'; 998];
        wire.extend_from_slice(b"\r\n.\r\n");
        assert!(decode(&wire).0.is_ok());

        let mut d = DataDecoder::new(1000, 10, 0);
        let (_, done) = d.feed(b"0123456789ab\r\n.\r\n");
        assert!(done);
        assert_eq!(d.finish(), Err(TextError::TooBig));
    }

    #[test]
    fn checker_for_chunks() {
        let mut c = LineChecker::new(1000);
        c.push_all(b"a\r");
        c.push_all(b"\nb\r\n");
        assert_eq!(c.finish(false), Ok(()));
        let mut c = LineChecker::new(1000);
        c.push_all(b"a\nb\r\n");
        assert_eq!(c.finish(false), Err(TextError::BareLf));
    }
}
