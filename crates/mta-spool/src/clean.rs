//! The clean-stop marker.
//!
//! `close()` writes it after everything else is on disk; `open()` removes
//! it before accepting anything. So its presence at open proves the last
//! run stopped cleanly, with the index flushed and every spool file
//! indexed; its absence means a crash (or a stop while a rescan was still
//! running), and the index may lag behind the spool files, which calls for
//! a rescan.
//!
//! Trusting the index must not cost a walk of it (a million queued
//! messages would make every start slow), so the check is O(1): `close()`
//! draws a random token, stores it in the index's `meta` tree before the
//! final flush, and writes it here too. An index that was replaced,
//! emptied or restored from elsewhere while the spool was stopped does
//! not hold this marker's token, and gets a rescan. The marker also
//! records the per-queue message counts (the counters of the next run
//! start from them) and the last queue id handed out.
//!
//! ```text
//! MTA-SPOOL-CLEAN 3
//! token <16 hex digits>
//! ram <decimal count>
//! bounce <decimal count>
//! disk <decimal count>
//! held <decimal count>
//! last-id <16 hex digits>
//! ```
//!
//! Format 2 is format 3 without the `held` line (there was no held queue
//! then): it is read as 0 held.
//!
//! A marker cut short by a crash during close fails to parse and counts as
//! no marker: the safe direction. So does a marker of the older format 1
//! (`messages` and `last-id` only, checked by counting the index).

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;

use mta_envelope::QueueId;

use crate::error::SpoolError;
use crate::layout::{fsync_dir, Layout};

const FIRST_LINE: &str = "MTA-SPOOL-CLEAN 3";
const V2_FIRST_LINE: &str = "MTA-SPOOL-CLEAN 2";
const OLD_FIRST_LINE: &str = "MTA-SPOOL-CLEAN 1";

/// What a clean marker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanMarker {
    /// The token stored in the index at this close.
    pub token: u64,
    /// Messages per queue at close: ram, bounce, disk, held.
    pub counts: [u64; 4],
    /// The last queue id handed out before close.
    pub last_id: QueueId,
}

impl CleanMarker {
    /// Messages in all queues.
    pub fn messages(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn render(&self) -> String {
        let [ram, bounce, disk, held] = self.counts;
        format!(
            "{FIRST_LINE}\ntoken {:016x}\nram {ram}\nbounce {bounce}\ndisk {disk}\nheld {held}\nlast-id {}\n",
            self.token, self.last_id
        )
    }

    fn parse(text: &str) -> Option<CleanMarker> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        let v2 = match lines.next()? {
            FIRST_LINE => false,
            V2_FIRST_LINE => true,
            _ => return None,
        };
        let mut field = |name: &str| -> Option<&str> { lines.next()?.strip_prefix(name) };
        let token = field("token ").filter(|t| t.len() == 16)?;
        let token = u64::from_str_radix(token, 16).ok()?;
        let ram = field("ram ")?.parse().ok()?;
        let bounce = field("bounce ")?.parse().ok()?;
        let disk = field("disk ")?.parse().ok()?;
        let held = if v2 { 0 } else { field("held ")?.parse().ok()? };
        let last_id = field("last-id ")?.parse().ok()?;
        if lines.next().is_some() {
            return None;
        }
        Some(CleanMarker {
            token,
            counts: [ram, bounce, disk, held],
            last_id,
        })
    }
}

/// A new token for a clean close: random enough that two closes, of this
/// spool or another, do not draw the same one.
pub(crate) fn new_token() -> u64 {
    // RandomState is seeded from the operating system's randomness; the
    // clock and the process id make two tokens of one process differ too.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(crate::ids::unix_micros());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Reads the marker: `None` when absent or unreadable (a warning is
/// logged for the latter).
pub(crate) fn read(layout: &Layout) -> Option<CleanMarker> {
    match fs::read_to_string(&layout.clean) {
        Ok(text) => {
            let marker = CleanMarker::parse(&text);
            if marker.is_none() {
                if text.starts_with(OLD_FIRST_LINE) {
                    tracing::info!(path = %layout.clean.display(), "clean marker of an older format; rescanning the spool files");
                } else {
                    tracing::warn!(path = %layout.clean.display(), "clean marker unreadable; treating the last stop as a crash");
                }
            }
            marker
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %layout.clean.display(), error = %e, "clean marker unreadable; treating the last stop as a crash");
            None
        }
    }
}

/// Writes the marker durably: write, fsync the file, then fsync the
/// directory, or the marker's directory entry may not survive a crash.
pub(crate) fn write(layout: &Layout, marker: CleanMarker) -> Result<(), SpoolError> {
    let path = &layout.clean;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(layout.modes.file)
        .open(path)
        .map_err(|e| SpoolError::io("create", path, e))?;
    file.write_all(marker.render().as_bytes())
        .map_err(|e| SpoolError::io("write", path, e))?;
    file.sync_all()
        .map_err(|e| SpoolError::io("fsync", path, e))?;
    fsync_dir(&layout.root)
}

/// Removes the marker and fsyncs the directory, so that from here on a
/// crash is detected at the next open.
pub(crate) fn remove(layout: &Layout) -> Result<(), SpoolError> {
    match fs::remove_file(&layout.clean) {
        Ok(()) => fsync_dir(&layout.root),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SpoolError::io("remove", &layout.clean, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_rejects_truncation() {
        let m = CleanMarker {
            token: 0x0123_4567_89ab_cdef,
            counts: [1, 2, 42, 7],
            last_id: QueueId::new(0xabc),
        };
        let text = m.render();
        assert_eq!(CleanMarker::parse(&text), Some(m));
        assert_eq!(m.messages(), 52);
        for cut in 0..text.len() {
            assert_eq!(CleanMarker::parse(&text[..cut]), None, "cut at {cut}");
        }
    }

    #[test]
    fn format_2_reads_as_none_held() {
        let v2 = "MTA-SPOOL-CLEAN 2\ntoken 0123456789abcdef\nram 1\nbounce 2\ndisk 3\nlast-id 0000000000000abc\n";
        let m = CleanMarker::parse(v2).expect("format 2 is read");
        assert_eq!(m.counts, [1, 2, 3, 0]);
    }

    #[test]
    fn old_format_is_no_marker() {
        let old = "MTA-SPOOL-CLEAN 1\nmessages 3\nlast-id 0000000000000abc\n";
        assert_eq!(CleanMarker::parse(old), None);
    }

    #[test]
    fn tokens_differ() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
    }
}
