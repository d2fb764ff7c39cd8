//! The spool file format: one file per message, self-describing, so the
//! queue can always be rebuilt from `msg/` alone.
//!
//! ```text
//! MTA-SPOOL 2 <length>\n        magic, format version, content length
//! {"sender":...}\n              the envelope, one line of JSON
//! <message content>             the bytes exactly as accepted
//! <anything>                    ignored: what a reused file held before
//! ```
//!
//! JSON escapes every control character inside strings and the compact
//! form puts no newline between tokens, so the envelope line holds no raw
//! LF and a reader needs only the first two lines to know the envelope:
//! a rescan never reads message bodies.
//!
//! The length is why a file can be written over a finished message's
//! (`reuse.rs`) without being cut to size: on ext4, cutting a file (or
//! changing its mode) makes its fdatasync write the inode as well, a
//! second write to the disk and a second wait for it. Version 1 files
//! (`MTA-SPOOL 1\n`, written before, content to the end of the file)
//! are read as they are.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use mta_envelope::Envelope;

use crate::error::SpoolError;

/// How the first line of every spool file begins; the version follows.
pub(crate) const MAGIC: &[u8] = b"MTA-SPOOL ";

/// Longest first line accepted: the magic, a version and a length.
const MAX_FIRST_LINE: u64 = 64;

/// Longest envelope line accepted when reading. Far above any real
/// envelope; it only stops a damaged file without a second newline from
/// being read whole as "the envelope".
const MAX_ENVELOPE_LINE: u64 = 64 * 1024 * 1024;

/// The first line (for `content_len` octets of content) and the envelope
/// line, ready to be written.
pub(crate) fn encode_header(envelope: &Envelope, content_len: usize) -> Vec<u8> {
    let json = serde_json::to_vec(envelope)
        .expect("an envelope of plain strings and numbers always serializes");
    debug_assert!(!json.contains(&b'\n'), "compact JSON holds no raw LF");
    let mut header = Vec::with_capacity(MAGIC.len() + 24 + json.len() + 1);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(format!("2 {content_len}\n").as_bytes());
    header.extend_from_slice(&json);
    header.push(b'\n');
    header
}

/// What the first two lines of a spool file say.
#[derive(Debug)]
pub(crate) struct Header {
    /// The envelope.
    pub envelope: Envelope,
    /// Bytes taken by the two header lines; the content follows.
    pub len: u64,
    /// The content's length (version 2); `None` for a version 1 file,
    /// whose content runs to the end of the file.
    pub content_len: Option<u64>,
}

impl Header {
    /// The content's length in a file of `size` bytes; `Corrupt` when the
    /// file is shorter than its first line says.
    pub fn content_len_in(&self, size: u64, path: &Path) -> Result<u64, SpoolError> {
        let room = size.saturating_sub(self.len);
        match self.content_len {
            None => Ok(room),
            Some(len) if len <= room => Ok(len),
            Some(len) => Err(short_content(path, room, len)),
        }
    }
}

/// Reads and checks the two header lines, leaving `reader` at the first
/// byte of the content.
pub(crate) fn read_header<R: BufRead>(reader: &mut R, path: &Path) -> Result<Header, SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut first = Vec::new();
    reader
        .take(MAX_FIRST_LINE)
        .read_until(b'\n', &mut first)
        .map_err(|e| SpoolError::io("read", path, e))?;
    let content_len = match first
        .strip_prefix(MAGIC)
        .and_then(|v| v.strip_suffix(b"\n"))
    {
        Some(b"1") => None,
        Some(version) => match version.strip_prefix(b"2 ").and_then(parse_length) {
            Some(len) => Some(len),
            None => {
                return Err(corrupt(format!(
                    "unknown version or bad length in the first line {:?}",
                    String::from_utf8_lossy(&first)
                )))
            }
        },
        None => {
            return Err(corrupt(format!(
                "wrong first line {:?}, expected \"MTA-SPOOL 2 <length>\"",
                String::from_utf8_lossy(&first)
            )))
        }
    };
    let mut line = Vec::new();
    reader
        .take(MAX_ENVELOPE_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| SpoolError::io("read", path, e))?;
    if line.pop() != Some(b'\n') {
        return Err(corrupt("envelope line not terminated".into()));
    }
    let envelope: Envelope =
        serde_json::from_slice(&line).map_err(|e| corrupt(format!("bad envelope JSON: {e}")))?;
    Ok(Header {
        envelope,
        len: (first.len() + line.len() + 1) as u64,
        content_len,
    })
}

/// A file with fewer content octets (`got`) than its first line says.
fn short_content(path: &Path, got: u64, len: u64) -> SpoolError {
    SpoolError::Corrupt {
        path: path.to_owned(),
        reason: format!("content of {got} octets where the file says {len}"),
    }
}

/// A length in decimal digits, no sign, no leading zero (but "0").
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Reads a whole spool file: envelope and content.
pub(crate) fn read_file(path: &Path) -> Result<(Envelope, Vec<u8>), SpoolError> {
    let file = File::open(path).map_err(|e| SpoolError::io("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let mut reader = BufReader::new(file);
    let header = read_header(&mut reader, path)?;
    let len = header.content_len_in(size, path)?;
    let mut content = Vec::with_capacity(len as usize);
    reader
        .take(len)
        .read_to_end(&mut content)
        .map_err(|e| SpoolError::io("read", path, e))?;
    if (content.len() as u64) < len {
        // Cut short since the stat: as corrupt as a short file.
        return Err(short_content(path, content.len() as u64, len));
    }
    Ok((header.envelope, content))
}

/// Reads only the header of a spool file, and the content size from the
/// file size: what a rescan needs, without touching the body.
pub(crate) fn read_header_only(path: &Path) -> Result<(Header, u64), SpoolError> {
    /// Bytes read at once: the two header lines are usually a few hundred.
    const HEAD: usize = 4096;
    thread_local! {
        // One buffer per reading thread: a rescan reads a million of
        // these, and a buffer allocated for each is allocator work (with
        // glibc's malloc in a single arena, contention for its lock).
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; HEAD]);
    }
    let mut file = File::open(path).map_err(|e| SpoolError::io("open", path, e))?;
    let size = file
        .metadata()
        .map_err(|e| SpoolError::io("stat", path, e))?
        .len();
    let in_buffer = BUF.with_borrow_mut(|buf| -> Result<Option<Header>, SpoolError> {
        let n = loop {
            match file.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SpoolError::io("read", path, e)),
            }
        };
        // Both lines whole within the bytes read, or (when they were the
        // whole file) the verdict on them; otherwise read again below.
        match read_header(&mut &buf[..n], path) {
            Ok(header) => Ok(Some(header)),
            Err(SpoolError::Corrupt { .. }) if n == buf.len() && (n as u64) < size => Ok(None),
            Err(e) => Err(e),
        }
    })?;
    let header = match in_buffer {
        Some(header) => header,
        // An envelope line longer than the buffer: from the start again.
        None => {
            let mut reader = BufReader::new(&file);
            io::Seek::rewind(&mut reader).map_err(|e| SpoolError::io("read", path, e))?;
            read_header(&mut reader, path)?
        }
    };
    let content = header.content_len_in(size, path)?;
    Ok((header, content))
}

/// Writes a message over a kept spool file (see `reuse.rs`) of `size`
/// bytes: its bytes from the start, the data made durable with
/// fdatasync. The file is neither chmodded (`reuse.rs` keeps only files
/// of the spool's mode) nor, usually, cut: the first line gives the
/// content's length, and what lies past it is ignored. Only when more
/// than [`slack`] bytes of the old file would be left over is it
/// cut to the new length, so a file holding a small message never keeps
/// a large one's blocks. On any error the file is removed, as a
/// half-written one would be.
pub(crate) fn write_over_durable(
    path: &Path,
    size: u64,
    chunks: &[&[u8]],
) -> Result<(), SpoolError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| SpoolError::io("open", path, e))?;
    removed_on_error(path, file, |file| {
        let len = write_chunks(file, chunks).map_err(|e| SpoolError::io("write", path, e))?;
        if size > len + slack(len) {
            file.set_len(len)
                .map_err(|e| SpoolError::io("truncate", path, e))?;
        }
        file.sync_data()
            .map_err(|e| SpoolError::io("fdatasync", path, e))
    })
}

/// Bytes a file written over may keep past its new message before it is
/// cut to size: a quarter of the message and a block.
pub(crate) fn slack(len: u64) -> u64 {
    len / 4 + 4096
}

/// Runs `write` on `file`, and removes the file at `path` when it fails:
/// a half-written spool file is never left behind.
fn removed_on_error(
    path: &Path,
    mut file: File,
    write: impl FnOnce(&mut File) -> Result<(), SpoolError>,
) -> Result<(), SpoolError> {
    let written = write(&mut file);
    if written.is_err() {
        drop(file);
        let _ = fs::remove_file(path);
    }
    written
}

/// Writes every chunk, in order, with as few system calls as the kernel
/// allows (one `writev` for a whole message, usually). Returns the bytes
/// written.
fn write_chunks(file: &mut File, chunks: &[&[u8]]) -> io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    let mut total = 0;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                total += n as u64;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

/// After reading a spool file: an error as if it had not been there when
/// the path is gone now. A file renamed away from `msg/` may already hold
/// the next message (`reuse.rs`), and never comes back under the same
/// name, so a path still there means what was read is its message.
pub(crate) fn still_there(path: &Path) -> Result<(), SpoolError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(e) => Err(SpoolError::io("open", path, e)),
    }
}

/// Writes a new file (which must not exist) with `mode` (0600 or 0640;
/// the umask can only take bits away) and makes its data durable with
/// fdatasync. On any error the file is removed again, so a failed write
/// never leaves a partial file behind; a file that already existed is
/// never touched.
pub(crate) fn write_new_durable(
    path: &Path,
    chunks: &[&[u8]],
    mode: u32,
) -> Result<(), SpoolError> {
    // create_new: a queue id is used once; never write over another
    // writer's file.
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| SpoolError::io("create", path, e))?;
    removed_on_error(path, file, |file| {
        write_chunks(file, chunks).map_err(|e| SpoolError::io("write", path, e))?;
        // fdatasync, not fsync: the size is data for this purpose, and the
        // timestamps are not worth a second journal write.
        file.sync_data()
            .map_err(|e| SpoolError::io("fdatasync", path, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_written_whole_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let big = vec![b'b'; 3 << 20];
        write_new_durable(&path, &[b"head\n", b"", &big, b"tail"], 0o600).unwrap();
        let written = fs::read(&path).unwrap();
        assert_eq!(written.len(), 5 + big.len() + 4);
        assert!(written.starts_with(b"head\nbbb") && written.ends_with(b"btail"));

        // Over it, much shorter: cut to the new length.
        let size = fs::metadata(&path).unwrap().len();
        write_over_durable(&path, size, &[b"x", b"y"]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"xy");

        // Over it, a little shorter: the rest is left, not cut.
        write_over_durable(&path, 2, &[b"z"]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"zy");
    }
}
