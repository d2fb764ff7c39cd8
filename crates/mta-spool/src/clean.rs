//! The clean-stop marker.
//!
//! `close()` writes it after everything else is on disk; `open()` removes
//! it before accepting anything. So its presence at open proves the last
//! run stopped cleanly and the index was flushed; its absence means a
//! crash, and the index may lag behind the spool files, which calls for a
//! rescan. It also records the message count (checked against the index,
//! which catches an index that was replaced or emptied while the spool was
//! stopped) and the last queue id handed out.
//!
//! ```text
//! MTA-SPOOL-CLEAN 1
//! messages <decimal count>
//! last-id <16 hex digits>
//! ```
//!
//! A marker cut short by a crash during close fails to parse and counts as
//! no marker: the safe direction.

use std::fs::{self, File};
use std::io::{self, Write};

use mta_envelope::QueueId;

use crate::error::SpoolError;
use crate::layout::{fsync_dir, Layout};

const FIRST_LINE: &str = "MTA-SPOOL-CLEAN 1";

/// What a clean marker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanMarker {
    /// Messages in the index at close.
    pub messages: usize,
    /// The last queue id handed out before close.
    pub last_id: QueueId,
}

impl CleanMarker {
    fn render(&self) -> String {
        format!(
            "{FIRST_LINE}\nmessages {}\nlast-id {}\n",
            self.messages, self.last_id
        )
    }

    fn parse(text: &str) -> Option<CleanMarker> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != FIRST_LINE {
            return None;
        }
        let messages = lines.next()?.strip_prefix("messages ")?.parse().ok()?;
        let last_id = lines.next()?.strip_prefix("last-id ")?.parse().ok()?;
        if lines.next().is_some() {
            return None;
        }
        Some(CleanMarker { messages, last_id })
    }
}

/// Reads the marker: `None` when absent or unreadable (a warning is
/// logged for the latter).
pub(crate) fn read(layout: &Layout) -> Option<CleanMarker> {
    match fs::read_to_string(&layout.clean) {
        Ok(text) => {
            let marker = CleanMarker::parse(&text);
            if marker.is_none() {
                tracing::warn!(path = %layout.clean.display(), "clean marker unreadable; treating the last stop as a crash");
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
    let mut file = File::create(path).map_err(|e| SpoolError::io("create", path, e))?;
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
            messages: 42,
            last_id: QueueId::new(0xabc),
        };
        let text = m.render();
        assert_eq!(CleanMarker::parse(&text), Some(m));
        for cut in 0..text.len() {
            assert_eq!(CleanMarker::parse(&text[..cut]), None, "cut at {cut}");
        }
    }
}
