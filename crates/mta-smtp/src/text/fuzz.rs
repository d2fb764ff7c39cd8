//! Fuzz targets for the DATA and BDAT decoders, against a model.
//!
//! The model is RFC 5321 read the slow, obvious way: the text starts at a
//! line start and ends at the first `CRLF.CRLF`; a dot opening a line is
//! removed; a LF not after CR, a CR not before LF, a NUL, too long a line
//! or too much text make it refused. The decoders must agree with it on
//! any bytes, split into reads anyhow: that is "only CRLF.CRLF ends DATA,
//! at a line start", and chunking-independence, checked on every case.
//! Budget: `MTA_FUZZ_SECS` per target (see `mta_testkit::fuzz`).

use bytes::BytesMut;
use mta_testkit::{fuzz, regressions};
use proptest::prelude::*;

use super::{DataDecoder, LineChecker, TextError};

/// What DATA text must decode to: the bytes used (terminator included)
/// and the content or the error; None when the end is not there yet.
fn model_data(
    wire: &[u8],
    max_line: usize,
    max_size: usize,
) -> Option<(usize, Result<Vec<u8>, TextError>)> {
    let framed = [b"\r\n", wire].concat();
    let end = framed.windows(5).position(|w| w == b"\r\n.\r\n")?;
    // The text, with the CRLF before the final dot.
    let raw = &framed[2..end + 2];
    let used = end + 3;
    let mut content = Vec::new();
    let mut line_start = true;
    for (i, &b) in raw.iter().enumerate() {
        if !(line_start && b == b'.') {
            content.push(b);
        }
        line_start = b == b'\n' && i > 0 && raw[i - 1] == b'\r';
    }
    Some((
        used,
        model_errors(raw, max_line, content.len() > max_size).map(|()| content),
    ))
}

/// The first problem of raw text, in the decoders' order of gravity.
fn model_errors(raw: &[u8], max_line: usize, too_big: bool) -> Result<(), TextError> {
    let bare_lf = raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'));
    let bare_cr = raw
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && raw.get(i + 1) != Some(&b'\n'));
    let segments: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
    let (last, ended) = segments.split_last().expect("split yields one at least");
    let too_long = ended.iter().any(|s| s.len() + 1 > max_line) || last.len() > max_line;
    if bare_lf {
        Err(TextError::BareLf)
    } else if bare_cr {
        Err(TextError::BareCr)
    } else if raw.contains(&0) {
        Err(TextError::Nul)
    } else if too_big {
        Err(TextError::TooBig)
    } else if too_long {
        Err(TextError::LineTooLong)
    } else {
        Ok(())
    }
}

/// Bytes rich in what matters to the framing.
fn wire() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => Just(b'\r'),
        4 => Just(b'\n'),
        4 => Just(b'.'),
        4 => Just(b'a'),
        1 => Just(0u8),
        2 => any::<u8>(),
    ];
    let piece = prop_oneof![
        6 => prop::collection::vec(byte, 1..8),
        1 => Just(b"\r\n.\r\n".to_vec()),
        1 => Just(b"\r\n..\r\n".to_vec()),
        1 => Just(b"\n.\n".to_vec()),
        1 => Just(b"\r\n.\r".to_vec()),
        1 => Just(b"\r\n".to_vec()),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..16)
}

/// `wire` split at `cuts` (offsets taken modulo its length), in order.
fn pieces<'a>(wire: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    points.push(0);
    points.push(wire.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &wire[w[0]..w[1]]).collect()
}

#[test]
fn data_decoder_matches_the_model_in_any_chunking() {
    fuzz::check(
        regressions!("data_decoder"),
        (wire(), cuts(), 1..80usize, 0..200usize),
        |(wire, cuts, max_line, max_size)| {
            let mut d = DataDecoder::new(max_line, max_size, max_size);
            let mut used = 0;
            let mut done = false;
            for piece in pieces(&wire, &cuts) {
                let (n, end) = d.feed(piece);
                prop_assert!(n <= piece.len());
                used += n;
                if end {
                    done = true;
                    break;
                }
                prop_assert_eq!(n, piece.len(), "all of a piece is used until the end");
            }
            match model_data(&wire, max_line, max_size) {
                Some((model_used, model_result)) => {
                    prop_assert!(done, "the end at {} was missed", model_used);
                    prop_assert_eq!(used, model_used);
                    prop_assert_eq!(d.finish(), model_result);
                }
                None => {
                    prop_assert!(!done, "ended after {} bytes without CRLF.CRLF", used);
                    prop_assert_eq!(used, wire.len());
                }
            }
            Ok(())
        },
    );
}

/// The same, with each read put straight after the content in the
/// decoder's own buffer and decoded in place, as mtad reads text: what
/// followed the end comes back whole for the commands after it.
#[test]
fn data_decoder_in_place_matches_the_model_in_any_chunking() {
    fuzz::check(
        regressions!("data_decoder_in_place"),
        (wire(), cuts(), 1..80usize, 0..200usize),
        |(wire, cuts, max_line, max_size)| {
            let mut d = DataDecoder::new(max_line, max_size, max_size);
            let mut rest = BytesMut::new();
            let mut offset = 0;
            let mut ended_at = None;
            for piece in pieces(&wire, &cuts) {
                let room = d.room().expect("room until the end is read");
                let start = room.len();
                room.extend_from_slice(piece);
                d.appended(start, &mut rest);
                offset += piece.len();
                if d.ended() {
                    prop_assert!(d.room().is_none(), "no room after the end");
                    ended_at = Some(offset);
                    break;
                }
                prop_assert!(rest.is_empty(), "nothing comes back before the end");
            }
            match model_data(&wire, max_line, max_size) {
                Some((model_used, model_result)) => {
                    let Some(piece_end) = ended_at else {
                        return Err(TestCaseError::fail(format!(
                            "the end at {model_used} was missed"
                        )));
                    };
                    prop_assert_eq!(&rest[..], &wire[model_used..piece_end]);
                    prop_assert_eq!(d.finish(), model_result);
                }
                None => prop_assert!(ended_at.is_none(), "ended without CRLF.CRLF"),
            }
            Ok(())
        },
    );
}

#[test]
fn line_checker_matches_the_model_in_any_chunking() {
    fuzz::check(
        regressions!("line_checker"),
        (wire(), cuts(), 1..80usize, any::<bool>()),
        |(wire, cuts, max_line, too_big)| {
            let mut c = LineChecker::new(max_line);
            for piece in pieces(&wire, &cuts) {
                c.push_all(piece);
            }
            // (A CR at the very end is bare too: the model sees nothing
            // after it.)
            prop_assert_eq!(c.finish(too_big), model_errors(&wire, max_line, too_big));
            Ok(())
        },
    );
}
