//! The control socket between `mtad` and `mta-init`.
//!
//! A Unix stream socket in the queue directory (by default). The client
//! writes one [`Request`] as a line of JSON; the daemon answers with one
//! [`Response`] line and closes. Line-delimited JSON keeps the protocol
//! readable with `socat` on a bad day, and [`Status`] is the same data that
//! `mta-init status --json` prints.
#![deny(missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod names;
mod queue;
mod request;

pub use names::{parse_name, Name, Queue, Runner, Service, UnknownName};
pub use queue::{
    ActionReport, HistoryRow, MessageDetail, MessageRow, NoSelection, QueueAction, QueueFilter,
    QueuePage, QueueSummary, RecipientRow, Selection, SummaryRow,
};
pub use request::{QueueRequest, Request, SvcAction};

/// What the daemon answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The status.
    Status(Box<Status>),
    /// The request was taken.
    Ok,
    /// The request was carried out; what was done, for the operator.
    Done {
        /// One or more lines.
        message: String,
    },
    /// The request could not be carried out.
    Error {
        /// Why.
        message: String,
        /// What kind of failure: the HTTP API's status and `mta-init`'s
        /// exit code follow it. New in this version; absent from an
        /// older daemon, where it reads as [`ErrorKind::Invalid`] (the 400
        /// such a daemon's HTTP API gave every error).
        #[serde(default)]
        kind: ErrorKind,
    },
    /// The peer on the control socket may not ask this (its uid and
    /// groups, SO_PEERCRED); `mta-init` exits 4, as LSB's "insufficient
    /// privilege".
    Forbidden {
        /// Who asked, and who may.
        message: String,
    },
    /// No such message (`queue show`, or an action on one id).
    NotFound {
        /// What was looked for.
        message: String,
    },
    /// A page of the queue listing.
    QueuePage(QueuePage),
    /// One message.
    Message(Box<MessageDetail>),
    /// The summary.
    Summary(QueueSummary),
    /// What a queue action did.
    Acted(ActionReport),
    /// The second answer to a stop: the queue is saved and the process
    /// is about to exit.
    Stopped(StopProgress),
}

/// Why a request failed, as far as its asker can act on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (a bad id, filter, name or
    /// configuration): asking again the same way fails again. HTTP 400.
    #[default]
    Invalid,
    /// What it names is not there. HTTP 404.
    NotFound,
    /// The daemon is in a state that excludes it (already stopping).
    /// HTTP 409.
    Conflict,
    /// A resource failed (the spool's disk, a socket): asking later may
    /// work. HTTP 503.
    Unavailable,
    /// A fault in the daemon (a task that panicked). HTTP 500.
    Internal,
}

impl Response {
    /// An [`Response::Error`] of this kind.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            message: message.into(),
            kind,
        }
    }
}

/// The daemon as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    /// Serving.
    Running,
    /// A stop is under way.
    Stopping,
}

/// One service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Running.
    Up,
    /// Not running.
    Down,
    /// Finishing its work before it stops.
    Draining,
    /// Held by the operator: takes no new work.
    Paused,
    /// Running, but short of what it needs (the spool: its index cannot
    /// be written, or free space is below the floor); the detail says
    /// what. New in this version: an older `mta-init` does not know it.
    Degraded,
}

/// One row of the SERVICES table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `smtp`, `spool`, `control`...
    pub name: String,
    /// Its state.
    pub state: ServiceState,
    /// A short human note: addresses, counts.
    pub detail: String,
}

/// Progress of a stop.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StopProgress {
    /// Milliseconds since the stop began.
    pub elapsed_ms: u64,
    /// The deadline for open sessions, in milliseconds since the stop began.
    pub deadline_ms: u64,
    /// Sessions still open.
    pub sessions_open: u64,
    /// Delivery attempts still running.
    #[serde(default)]
    pub deliveries_in_flight: u64,
    /// Of those, sessions in the middle of a transaction.
    pub sessions_in_transaction: u64,
    /// Volatile messages written to the disk queue so far.
    #[serde(default)]
    pub messages_spilled: u64,
    /// Messages in the queue, kept for the next start (those still in
    /// memory included, until spilled).
    #[serde(default)]
    pub queued: u64,
    /// In the stop's last report only: why the queue index could not be
    /// saved (a full disk). The spool files are kept, and the next start
    /// rebuilds the index from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_not_saved: Option<String>,
}

/// Everything `mta-init status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's process id.
    pub pid: u32,
    /// Names this process image: a restart keeps the pid (mtad re-execs
    /// itself) but changes this.
    #[serde(default)]
    pub instance: String,
    /// The configuration file the daemon reads (absent: built-in
    /// defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Graceful restarts (configuration reloads) since start.
    #[serde(default)]
    pub reloads: u64,
    /// mtad's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Running or stopping.
    pub state: DaemonState,
    /// The SMTP listening addresses of port 25's role (`[smtp]`).
    pub listen: Vec<String>,
    /// The submission role's addresses (`[submission]`, port 587).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submission_listen: Vec<String>,
    /// The implicit-TLS submission role's addresses (`[submissions]`,
    /// port 465).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submissions_listen: Vec<String>,
    /// SMTP sessions open now.
    pub sessions_open: u64,
    /// Messages accepted (answered 250) since start.
    pub accepted_total: u64,
    /// Messages in the queue now, those held in memory only included.
    pub queued: u64,
    /// Of those, volatile messages held in memory only, not yet written
    /// to the spool (a crash loses them; a stop spills them to disk).
    #[serde(default)]
    pub in_memory: u64,
    /// Spool files set aside in `corrupt/` since start because they
    /// could not be parsed (each one's recipients were failed with a DSN,
    /// except those a rescan after a crash set aside).
    #[serde(default)]
    pub corrupt_files: u64,
    /// What the spool found when it opened.
    pub spool_open: SpoolOpen,
    /// The services, in the order the table shows them.
    pub services: Vec<ServiceStatus>,
    /// The queue runners: ram, bounce, disk.
    #[serde(default)]
    pub runners: Vec<RunnerRow>,
    /// Set while stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopProgress>,
    /// Destination domains whose delivery the operator paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused_domains: Vec<String>,
    /// Messages in the held queue.
    #[serde(default)]
    pub held: u64,
    /// Destinations backed off after 421 or a burst of 4xx replies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backoffs: Vec<BackoffRow>,
    /// SMTP connections turned away and sessions cut off at a deadline
    /// since start, by cause.
    #[serde(default)]
    pub smtp_refused: SmtpRefused,
    /// Delivery-log lines that could not be written (a full disk) since
    /// start.
    #[serde(default)]
    pub delivery_log_dropped: u64,
    /// DSNs dropped since start: reports on failed mail from `<>` whose
    /// copy to the postmaster failed too (each also an ERROR line).
    #[serde(default)]
    pub dsns_dropped: u64,
}

/// SMTP connections turned away, and sessions closed at a deadline, since
/// start, by cause.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmtpRefused {
    /// `421 4.7.0` at the banner: `smtp.max_connections` sessions open.
    pub max_connections: u64,
    /// `421 4.7.0` at the banner: the client has
    /// `smtp.max_connections_per_client` sessions open.
    pub client_connections: u64,
    /// `421 4.7.0` at the banner: the client opened
    /// `smtp.max_connection_rate_per_client` sessions this minute.
    pub client_rate: u64,
    /// `421 4.3.2` at the banner: injection paused or the spool down.
    pub injection_paused: u64,
    /// `421 4.3.2` at the banner: a stop under way.
    pub stopping: u64,
    /// `accept` failed (out of descriptors...): the connection waited in
    /// the backlog.
    pub accept_error: u64,
    /// `421 4.4.2`: no complete command line (or TLS handshake, or reply
    /// read) within `smtp.idle_timeout`.
    pub command_deadline: u64,
    /// `421 4.4.2`: message text slower than `smtp.min_data_rate`.
    pub data_deadline: u64,
    /// `421 4.4.2`: the session reached `smtp.max_session_time`.
    pub session_cap: u64,
}

impl SmtpRefused {
    /// Every cause with its count, in a fixed order, as the metrics and
    /// the status table name them.
    pub fn by_cause(&self) -> [(&'static str, u64); 9] {
        [
            ("max_connections", self.max_connections),
            ("client_connections", self.client_connections),
            ("client_rate", self.client_rate),
            ("injection_paused", self.injection_paused),
            ("stopping", self.stopping),
            ("accept_error", self.accept_error),
            ("command_deadline", self.command_deadline),
            ("data_deadline", self.data_deadline),
            ("session_cap", self.session_cap),
        ]
    }

    /// All causes together.
    pub fn total(&self) -> u64 {
        self.by_cause().iter().map(|(_, n)| n).sum()
    }
}

/// A destination backed off: no connection until `until`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackoffRow {
    /// The destination key: `mx:example.com` or `relay:host:port`.
    pub key: String,
    /// When the back-off ends (unix seconds).
    pub until: u64,
    /// The reply that caused it.
    pub cause: String,
}

/// One queue runner in the QUEUE table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunnerRow {
    /// ram, bounce or disk.
    pub name: String,
    /// Its loop runs.
    pub started: bool,
    /// Paused by the operator.
    pub paused: bool,
    /// Attempts running now.
    pub in_flight: u64,
    /// Its concurrency limit.
    pub limit: u64,
    /// Attempts since start.
    pub attempts: u64,
    /// Recipients delivered since start.
    pub delivered: u64,
    /// Recipients deferred since start.
    pub deferred: u64,
    /// Recipients failed since start.
    pub failed: u64,
    /// Messages in this queue now.
    #[serde(default)]
    pub messages: u64,
    /// Age of the oldest message in this queue, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_age_secs: Option<u64>,
    /// How long ago the queue index (next-attempt times included) last
    /// reached the disk, in milliseconds; absent before the first flush.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_saved_ms_ago: Option<u64>,
    /// Schedule changes made since that flush.
    #[serde(default)]
    pub schedule_unsaved_changes: u64,
}

/// What opening the spool found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SpoolOpen {
    /// The previous stop was clean (a clean marker was there). Whether
    /// the index it saved was still there to trust is `index`.
    pub clean: bool,
    /// What the last run left: `new` (nothing: a new queue), `clean` or
    /// `not_clean`. Absent from a daemon older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stop: Option<LastStop>,
    /// Where the queue index comes from. Absent from a daemon older than
    /// this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexOrigin>,
    /// Spool files read by a full rescan (0 when the index was trusted).
    pub rescanned: u64,
    /// The rescan of this start, when one was needed; it runs while the
    /// daemon accepts and delivers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescan: Option<RescanRow>,
}

/// What the last run left, as the spool found it at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastStop {
    /// Nothing of an earlier run: a new queue directory.
    New,
    /// A clean stop.
    Clean,
    /// No clean stop: killed, crashed, or the index could not be saved.
    NotClean,
}

/// Where the queue index comes from, as the spool found it at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexOrigin {
    /// The index the last clean stop saved, trusted as it is.
    Trusted,
    /// The index of an unclean stop, checked against the spool files.
    Checked,
    /// A new, empty index for a new queue.
    Created,
    /// None was there: rebuilt from the spool files.
    Missing,
    /// Not the one the last clean stop saved: rebuilt from the spool
    /// files.
    Replaced,
    /// Could not be opened, set aside as `index.damaged-*`: rebuilt from
    /// the spool files.
    Damaged,
    /// Could not be opened for want of space: rebuilt once space is back.
    Unavailable,
}

/// Progress of the rescan of the spool files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RescanRow {
    /// Still reading files.
    pub running: bool,
    /// Spool files to read.
    pub files_total: u64,
    /// Spool files read so far.
    pub files_done: u64,
    /// Messages the rescan added to the index.
    pub messages_added: u64,
    /// Milliseconds since it began (or that it took).
    pub elapsed_ms: u64,
}

/// Talking to the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens there (no daemon, or it is gone).
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon answered something we do not understand.
    #[error("control socket {path}: bad answer: {source}")]
    Protocol {
        /// The socket.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// Sends one request and waits (at most `timeout`) for its answer.
pub fn call(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ControlError> {
    call_open(path, request, timeout).map(|(response, _)| response)
}

/// [`call`], leaving the connection open for the answers that follow the
/// first (a stop's [`Response::Stopped`]).
pub fn call_open(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<(Response, Answers), ControlError> {
    let name = path.display().to_string();
    let io = |source| ControlError::Io {
        path: name.clone(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: name.clone(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answers = Answers {
        reader: BufReader::new(stream),
        path: name,
    };
    let first = answers.read()?;
    Ok((first, answers))
}

/// The rest of the answers on an open control connection.
pub struct Answers {
    reader: BufReader<UnixStream>,
    path: String,
}

impl Answers {
    /// Waits (at most `timeout`) for the next answer line.
    pub fn next(&mut self, timeout: Duration) -> Result<Response, ControlError> {
        self.reader
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(|source| ControlError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.read()
    }

    fn read(&mut self) -> Result<Response, ControlError> {
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .map_err(|source| ControlError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Err(ControlError::Io {
                path: self.path.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&answer).map_err(|source| ControlError::Protocol {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_one_json_line() {
        assert_eq!(
            serde_json::to_string(&Request::Stop).unwrap(),
            r#"{"cmd":"stop"}"#
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
        let ok = serde_json::to_string(&Response::Ok).unwrap();
        assert_eq!(ok, r#"{"result":"ok"}"#);
    }

    #[test]
    fn only_status_and_queue_reading_are_read_only() {
        assert!(Request::Status.is_read_only());
        assert!(Request::Queue(QueueRequest::Show {
            id: "1".into(),
            body: true
        })
        .is_read_only());
        assert!(Request::Queue(QueueRequest::List {
            filter: QueueFilter::default(),
            after: None,
            limit: 1
        })
        .is_read_only());
        assert!(!Request::Stop.is_read_only());
        assert!(!Request::ReopenLogs.is_read_only());
        assert!(!Request::Queue(QueueRequest::Act {
            action: QueueAction::Hold,
            selection: Selection::All,
            bounce: false
        })
        .is_read_only());
        assert!(!Request::Queue(QueueRequest::PauseDomain {
            domain: "example.com".into()
        })
        .is_read_only());
    }
}

#[cfg(test)]
mod response_tests {
    //! Responses as they travel; the literals are what the earlier
    //! `Response` wrote, and the error's `kind` is the one new field.

    use super::{ErrorKind, Response};

    #[test]
    fn error_carries_its_kind_and_an_old_error_reads_as_invalid() {
        for (kind, word) in [
            (ErrorKind::Invalid, "invalid"),
            (ErrorKind::NotFound, "not_found"),
            (ErrorKind::Conflict, "conflict"),
            (ErrorKind::Unavailable, "unavailable"),
            (ErrorKind::Internal, "internal"),
        ] {
            let json = serde_json::to_string(&Response::error(kind, "why")).unwrap();
            assert_eq!(
                json,
                format!(r#"{{"result":"error","message":"why","kind":"{word}"}}"#)
            );
            let Response::Error {
                message,
                kind: read,
            } = serde_json::from_str(&json).unwrap()
            else {
                panic!("{json}")
            };
            assert_eq!((message.as_str(), read), ("why", kind));
        }
        // From a daemon before the kind.
        let old: Response = serde_json::from_str(r#"{"result":"error","message":"why"}"#).unwrap();
        assert!(matches!(
            old,
            Response::Error {
                kind: ErrorKind::Invalid,
                ..
            }
        ));
    }

    #[test]
    fn the_other_plain_answers_keep_their_wire_form() {
        for (response, json) in [
            (Response::Ok, r#"{"result":"ok"}"#),
            (
                Response::Done {
                    message: "done".into(),
                },
                r#"{"result":"done","message":"done"}"#,
            ),
            (
                Response::NotFound {
                    message: "no message 1".into(),
                },
                r#"{"result":"not_found","message":"no message 1"}"#,
            ),
            (
                Response::Forbidden {
                    message: "no".into(),
                },
                r#"{"result":"forbidden","message":"no"}"#,
            ),
        ] {
            assert_eq!(serde_json::to_string(&response).unwrap(), json);
            let read: Response = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&read).unwrap(), json);
        }
    }
}
