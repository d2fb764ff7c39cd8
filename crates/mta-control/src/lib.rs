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

/// What the client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's status.
    Status,
    /// Begin a clean stop; the answer comes at once, the stop goes on.
    Stop,
    /// Pause delivery: one runner (`ram`, `bounce`, `disk`) or all three.
    /// Attempts under way finish; no new one starts.
    Pause {
        /// The runner; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<String>,
    },
    /// Resume paused delivery.
    Resume {
        /// The runner; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<String>,
    },
}

/// What the daemon answers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The status.
    Status(Status),
    /// The request was taken.
    Ok,
    /// The request could not be carried out.
    Error {
        /// Why.
        message: String,
    },
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
}

/// Everything `mta-init status` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The daemon's process id.
    pub pid: u32,
    /// mtad's version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Running or stopping.
    pub state: DaemonState,
    /// The SMTP listening addresses.
    pub listen: Vec<String>,
    /// SMTP sessions open now.
    pub sessions_open: u64,
    /// Messages accepted (answered 250) since start.
    pub accepted_total: u64,
    /// Messages in the queue now.
    pub queued: u64,
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
}

/// What opening the spool found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SpoolOpen {
    /// The previous stop was clean.
    pub clean: bool,
    /// Spool files read by a full rescan (0 when the index was trusted).
    pub rescanned: u64,
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
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(|source| ControlError::Protocol {
        path: name.clone(),
        source,
    })
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
}
