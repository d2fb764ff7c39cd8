//! The delivery log: one JSON object per line, per event.
//!
//! Fields: `ts` (unix seconds, with milliseconds), `event` (received,
//! delivered, deferred, failed, bounced, expired, deleted, held, released), `queue_id`, `queue` (ram,
//! bounce, disk), and when they apply `recipient`, `attempt`, `status`,
//! `remote`, `reply`, `tls` (the TLS version, `TLSv1.3`), `cipher`,
//! `verified` (who had the server's certificate checked: `none`, `ca`,
//! `mta-sts`, `dane`), `sender`, `size`, `dsn_id`, and `auth` (the
//! user the client authenticated as, SMTP AUTH) on every line about a
//! message that has one. Lines are appended
//! with one write each (O_APPEND), so concurrent writers never interleave.
//!
//! The log never holds delivery up: a line that cannot be written (a full
//! disk) is dropped and counted ([`DeliveryLog::dropped`], shown by status
//! and `/metrics`), with one warning when lines start being dropped and
//! one when writing works again. A line a full disk cut short is ended
//! before the next one, so every complete line stays one JSON object.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Accepted from a client (or made by us, for a DSN).
    Received,
    /// Delivered to one recipient.
    Delivered,
    /// One recipient will be tried again.
    Deferred,
    /// One recipient failed permanently.
    Failed,
    /// A DSN was queued for the sender (or the postmaster).
    Bounced,
    /// The message outlived the queue lifetime.
    Expired,
    /// The operator deleted one recipient (or the whole message).
    Deleted,
    /// The operator held the message.
    Held,
    /// The operator released the message.
    Released,
}

impl Event {
    /// Its name in the log (and in a message's history).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Received => "received",
            Event::Delivered => "delivered",
            Event::Deferred => "deferred",
            Event::Failed => "failed",
            Event::Bounced => "bounced",
            Event::Expired => "expired",
            Event::Deleted => "deleted",
            Event::Held => "held",
            Event::Released => "released",
        }
    }
}

/// One log line.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// Unix time in seconds, milliseconds as the fraction.
    pub ts: f64,
    /// The event.
    pub event: Event,
    /// The message.
    pub queue_id: String,
    /// The runner's queue.
    pub queue: &'a str,
    /// The recipient, for per-recipient events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The attempt number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The enhanced status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// The remote host that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<&'a str>,
    /// Its reply, or the local cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<&'a str>,
    /// TLS version, when used: `TLSv1.3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'a str>,
    /// The TLS cipher suite, when TLS was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<&'a str>,
    /// Who had the server's certificate verified, when TLS was used:
    /// `none`, `ca` (`tls = "required"`), `mta-sts`, `dane`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<&'a str>,
    /// The envelope sender, for `received`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// The message size, for `received`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The queue id of the DSN, for `bounced`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn_id: Option<String>,
    /// The user the client authenticated as (SMTP AUTH, RFC 4954), on
    /// every line about a message that has one; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<&'a str>,
    /// The DKIM signatures mtad put on the message, `domain:selector`
    /// separated by commas; absent when it carries none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dkim: Option<&'a str>,
}

/// The `dkim` field of a message's lines: the signatures on top of it.
pub(crate) fn dkim_of(content: &[u8]) -> Option<String> {
    let found = mta_dkim::signatures_on_top(content);
    (!found.is_empty()).then(|| {
        found
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    })
}

impl<'a> Record<'a> {
    /// A record with only the always-present fields set.
    pub fn new(event: Event, queue_id: impl ToString, queue: &'a str) -> Record<'a> {
        Record {
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| (d.as_millis() as f64) / 1000.0)
                .unwrap_or(0.0),
            event,
            queue_id: queue_id.to_string(),
            queue,
            recipient: None,
            attempt: None,
            status: None,
            remote: None,
            reply: None,
            tls: None,
            cipher: None,
            verified: None,
            sender: None,
            size: None,
            dsn_id: None,
            auth: None,
            dkim: None,
        }
    }
}

/// The open log file.
#[derive(Debug)]
pub struct DeliveryLog {
    path: PathBuf,
    file: Mutex<File>,
    trouble: Trouble,
}

/// Lines that could not be written, and whether the last one was.
#[derive(Debug, Default)]
struct Trouble {
    /// Lines dropped since the log was opened.
    dropped: AtomicU64,
    /// The last write failed (warned about once, until one succeeds).
    failing: AtomicBool,
    /// The last write stopped part-way: the file does not end with a
    /// newline.
    torn: AtomicBool,
}

impl DeliveryLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<DeliveryLog> {
        Ok(DeliveryLog {
            path: path.to_owned(),
            file: Mutex::new(open_private(path)?),
            trouble: Trouble::default(),
        })
    }

    /// Opens the path again, after a rotation renamed the file.
    pub fn reopen(&self) -> std::io::Result<()> {
        let fresh = open_private(&self.path)?;
        *self.file.lock() = fresh;
        self.trouble.torn.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Appends one record. A line that cannot be written is dropped and
    /// counted, and never stops delivery.
    pub fn write(&self, record: &Record<'_>) {
        let trouble = &self.trouble;
        let mut file = self.file.lock();
        let was_torn = trouble.torn.load(Ordering::Relaxed);
        let mut line = Vec::with_capacity(256);
        if was_torn {
            // End the line a full disk cut short: it stays unreadable
            // alone, and this one stays whole.
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, record).expect("records serialize");
        line.push(b'\n');
        let mut written = 0;
        let result = loop {
            if written == line.len() {
                break Ok(());
            }
            match file.write(&line[written..]) {
                Ok(0) => break Err(std::io::Error::from(std::io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // Whether the file now ends a line: it ends with what was written.
        let ends_line = match written {
            0 => !was_torn,
            n => line[n - 1] == b'\n',
        };
        trouble.torn.store(!ends_line, Ordering::Relaxed);
        drop(file);
        match result {
            Ok(()) => {
                if trouble.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), dropped = self.dropped(), "the delivery log is written again");
                }
            }
            Err(e) => {
                trouble.dropped.fetch_add(1, Ordering::Relaxed);
                if !trouble.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write the delivery log: lines are dropped (and counted) until it can be written again");
                }
            }
        }
    }

    /// Lines that could not be written since the log was opened.
    pub fn dropped(&self) -> u64 {
        self.trouble.dropped.load(Ordering::Relaxed)
    }
}

/// Opens the log for appending, 0640 whatever the umask: it names every
/// sender and recipient, so it is for mtad's user and group only. A file
/// with looser bits (an earlier version's 0644) loses them.
fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        // A device or a pipe (/dev/stdout): not ours to change.
        return Ok(file);
    }
    let mode = meta.permissions().mode() & 0o7777;
    // A new file has 0640 less the umask; give it 0640 itself.
    let want = if meta.len() == 0 { 0o640 } else { mode & 0o640 };
    if mode != want {
        if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(want)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot set the delivery log's mode to {want:o}");
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_the_logged_ones() {
        use Event::*;
        for e in [
            Received, Delivered, Deferred, Failed, Bounced, Expired, Deleted, Held, Released,
        ] {
            assert_eq!(
                serde_json::to_string(&e).unwrap(),
                format!("\"{}\"", e.as_str())
            );
        }
    }

    #[test]
    fn one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.log");
        let log = DeliveryLog::open(&path).unwrap();
        let mut r = Record::new(Event::Deferred, "00000000000000aa", "ram");
        r.recipient = Some("a@b.test".into());
        r.reply = Some("451 4.3.0 try\nlater");
        log.write(&r);
        log.write(&Record::new(Event::Delivered, "00000000000000aa", "disk"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "deferred");
        assert_eq!(lines[0]["recipient"], "a@b.test");
        assert_eq!(lines[1]["queue"], "disk");
        assert!(lines[0].get("auth").is_none() && lines[1].get("auth").is_none());
    }

    #[test]
    fn the_authenticated_user_is_logged_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.log");
        let log = DeliveryLog::open(&path).unwrap();
        let mut r = Record::new(Event::Delivered, "00000000000000aa", "ram");
        r.auth = Some("alice@example.test");
        log.write(&r);
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim_end()).unwrap();
        assert_eq!(line["auth"], "alice@example.test");
    }

    #[test]
    fn the_log_is_0640_new_and_loses_looser_bits_when_old() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let new = dir.path().join("new.log");
        DeliveryLog::open(&new).unwrap();
        assert_eq!(mode(&new), 0o640);
        let old = dir.path().join("old.log");
        std::fs::write(&old, "earlier\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
        DeliveryLog::open(&old).unwrap();
        assert_eq!(mode(&old), 0o640);
    }

    #[test]
    fn lines_on_a_full_disk_are_dropped_and_counted() {
        // /dev/full: every write fails with ENOSPC.
        let log = DeliveryLog::open(Path::new("/dev/full")).unwrap();
        for _ in 0..3 {
            log.write(&Record::new(Event::Delivered, "00000000000000aa", "ram"));
        }
        assert_eq!(log.dropped(), 3);
    }

    #[test]
    fn a_line_cut_short_is_ended_before_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.log");
        let log = DeliveryLog::open(&path).unwrap();
        log.write(&Record::new(Event::Delivered, "00000000000000aa", "ram"));
        // What a full disk leaves: part of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\":1")
            .unwrap();
        log.trouble.torn.store(true, Ordering::Relaxed);
        log.write(&Record::new(Event::Delivered, "00000000000000bb", "ram"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(serde_json::from_str::<serde_json::Value>(lines[0]).is_ok());
        assert_eq!(lines[1], "{\"ts\":1");
        assert!(lines[2].contains("00000000000000bb"), "{text}");
        assert!(!log.trouble.torn.load(Ordering::Relaxed));
    }

    #[test]
    fn reopen_after_rotation_writes_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("delivery.log");
        let rotated = dir.path().join("delivery.log.1");
        let log = DeliveryLog::open(&path).unwrap();
        log.write(&Record::new(Event::Delivered, "00000000000000aa", "ram"));
        std::fs::rename(&path, &rotated).unwrap();
        log.write(&Record::new(Event::Delivered, "00000000000000bb", "ram"));
        log.reopen().unwrap();
        log.write(&Record::new(Event::Delivered, "00000000000000cc", "ram"));
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!(old.lines().count(), 2, "{old}");
        assert_eq!(new.lines().count(), 1, "{new}");
        assert!(new.contains("00000000000000cc"));
    }
}
