//! What `mta-init` (or the HTTP API) asks of mtad: [`Request`], with the
//! queue requests nested as [`QueueRequest`] and the names typed. On the
//! wire it stays the one flat object tagged by `cmd` that the control
//! socket has always spoken: a queue request is written untagged, with
//! its own `cmd`, and read by that name.

use serde::{Deserialize, Serialize};

use crate::names::{Runner, Service};
use crate::queue::{QueueAction, QueueFilter, Selection};

/// What the client asks. On the wire a JSON object whose `cmd` names the
/// request (`{"cmd":"queue_list",...}`), the queue requests included:
/// nesting them as [`Request::Queue`] changes nothing there.
///
/// The derived (de)serializer (`remote = "Self"`: inherent functions, not
/// the traits) covers every request but [`Request::Queue`]; the trait
/// impls below send that one to [`QueueRequest`], whose names are its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon's status.
    Status,
    /// Begin a clean stop; the answer ([`Response::Ok`]) comes at once,
    /// the stop goes on. A client that keeps the connection open and reads
    /// on gets a second line, [`Response::Stopped`], once the queue is
    /// saved: the figures of the whole stop, which polling `status` can
    /// miss when the stop is quick.
    Stop,
    /// Pause delivery: one runner or all three. Attempts under way
    /// finish; no new one starts.
    Pause {
        /// The runner; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<Runner>,
    },
    /// Resume paused delivery.
    Resume {
        /// The runner; all when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<Runner>,
    },
    /// Look into the queue or steer it.
    #[serde(skip)]
    Queue(QueueRequest),
    /// Pause injection: new connections get `421 4.3.2`; sessions already
    /// open may finish.
    PauseInjection,
    /// Resume paused injection.
    ResumeInjection,
    /// A graceful stop (SIGWINCH): sessions are not cut short and
    /// deliveries may finish, up to `shutdown.graceful_timeout`. Answered
    /// as [`Request::Stop`], the second line included.
    GracefulStop,
    /// Stop and start again in the same process (a re-exec), handing the
    /// listening sockets over: no connection is refused. With `now`, as
    /// SIGHUP: sessions get 421 at once and attempts are cut short.
    /// Refused (with an error, the server untouched) when the
    /// configuration does not load.
    Restart {
        /// Stop now rather than with the usual deadlines.
        #[serde(default)]
        now: bool,
    },
    /// Graceful restart (SIGUSR1): re-read the configuration and reopen
    /// the logs; sessions and deliveries in progress go on, new work uses
    /// the new settings. Answered once done; refused on a bad
    /// configuration.
    Reload,
    /// Reopen the log files (after rotation).
    ReopenLogs,
    /// daemontools' `svc`: take one service down, bring it up, or restart
    /// it.
    Svc {
        /// What to do.
        action: SvcAction,
        /// To which service.
        service: Service,
    },
}

/// The queue requests: the same for the control socket and the HTTP API.
/// On the wire each is tagged by its own `cmd` (`queue_list`, ...,
/// `pause_domain`), as the control socket has always spoken them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum QueueRequest {
    /// One page of the queue listing.
    #[serde(rename = "queue_list")]
    List {
        /// Which messages.
        #[serde(default)]
        filter: QueueFilter,
        /// Start after this queue id (the `next` of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// Messages per page (at most 1000).
        #[serde(default = "default_page")]
        limit: usize,
    },
    /// One message in full.
    #[serde(rename = "queue_show")]
    Show {
        /// Its queue id.
        id: String,
        /// Include the body.
        #[serde(default)]
        body: bool,
    },
    /// Messages per domain and age.
    #[serde(rename = "queue_summary")]
    Summary {
        /// Which messages.
        #[serde(default)]
        filter: QueueFilter,
    },
    /// Flush, hold, release or delete.
    #[serde(rename = "queue_act")]
    Act {
        /// What to do.
        action: QueueAction,
        /// To which messages.
        selection: Selection,
        /// With a delete: send the sender a DSN for each recipient
        /// deleted.
        #[serde(default)]
        bounce: bool,
    },
    /// Pause delivery to one destination domain: its mail stays queued
    /// (deferred without a connection), its lifetime still counts. Kept
    /// across restarts.
    PauseDomain {
        /// The recipient domain.
        domain: String,
    },
    /// Resume delivery to a paused domain; its messages are due at once.
    ResumeDomain {
        /// The recipient domain.
        domain: String,
    },
}

impl QueueRequest {
    /// The `cmd` of each queue request on the wire.
    const NAMES: [&'static str; 6] = [
        "queue_list",
        "queue_show",
        "queue_summary",
        "queue_act",
        "pause_domain",
        "resume_domain",
    ];

    /// True for listing, showing and summing up: the requests that only
    /// read.
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            QueueRequest::List { .. } | QueueRequest::Show { .. } | QueueRequest::Summary { .. }
        )
    }
}

impl Request {
    /// True for the requests that only read (status, and listing, showing
    /// and summing up the queue): the ones the daemon answers for members
    /// of its group. Everything else changes something, and only root and
    /// mtad's own user may ask for it.
    pub fn is_read_only(&self) -> bool {
        match self {
            Request::Status => true,
            Request::Queue(q) => q.is_read_only(),
            _ => false,
        }
    }
}

/// What `svc` does to a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SvcAction {
    /// Stop it; its dependants are paused.
    Down,
    /// Start it; its dependants resume.
    Up,
    /// Down, then up.
    Restart,
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            // Untagged: the queue request writes its own `cmd`.
            Request::Queue(q) => q.serialize(s),
            other => Request::serialize(other, s),
        }
    }
}

impl<'de> Deserialize<'de> for Request {
    /// Read as one object, then by its `cmd`: a queue request's name
    /// reads a [`QueueRequest`], any other a request of the daemon. Each
    /// side keeps serde's own errors (the known names listed).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        let cmd = value.get("cmd").and_then(serde_json::Value::as_str);
        let read = if cmd.is_some_and(|c| QueueRequest::NAMES.contains(&c)) {
            QueueRequest::deserialize(value).map(Request::Queue)
        } else {
            Request::deserialize(value)
        };
        read.map_err(D::Error::custom)
    }
}

fn default_page() -> usize {
    100
}

#[cfg(test)]
mod tests {
    //! Every request as the control socket spoke it before the names were
    //! typed and the queue requests nested: the JSON literals are the
    //! encoding of the earlier, flat `Request` with string names, copied
    //! from its output.

    use super::*;
    use crate::names::Queue;

    fn both_ways(request: Request, json: &str) {
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            json,
            "{request:?}"
        );
        let read: Request = serde_json::from_str(json).unwrap();
        assert_eq!(read, request, "{json}");
    }

    fn q(request: QueueRequest) -> Request {
        Request::Queue(request)
    }

    #[test]
    fn every_request_keeps_its_wire_form() {
        let id = || "0000000000000001".to_owned();
        let domain = || "example.com".to_owned();
        let cases = [
            (Request::Status, r#"{"cmd":"status"}"#),
            (Request::Stop, r#"{"cmd":"stop"}"#),
            (Request::Pause { runner: None }, r#"{"cmd":"pause"}"#),
            (
                Request::Pause {
                    runner: Some(Runner::Ram),
                },
                r#"{"cmd":"pause","runner":"ram"}"#,
            ),
            (Request::Resume { runner: None }, r#"{"cmd":"resume"}"#),
            (
                Request::Resume {
                    runner: Some(Runner::Disk),
                },
                r#"{"cmd":"resume","runner":"disk"}"#,
            ),
            (
                q(QueueRequest::PauseDomain { domain: domain() }),
                r#"{"cmd":"pause_domain","domain":"example.com"}"#,
            ),
            (
                q(QueueRequest::ResumeDomain { domain: domain() }),
                r#"{"cmd":"resume_domain","domain":"example.com"}"#,
            ),
            (
                q(QueueRequest::List {
                    filter: QueueFilter::default(),
                    after: None,
                    limit: 100,
                }),
                r#"{"cmd":"queue_list","filter":{},"limit":100}"#,
            ),
            (
                q(QueueRequest::List {
                    filter: QueueFilter {
                        queue: Some(Queue::Held),
                        domain: Some(domain()),
                        sender: Some("<>".into()),
                        older_than_secs: Some(3600),
                        status: Some("deferred".into()),
                    },
                    after: Some(id()),
                    limit: 5,
                }),
                r#"{"cmd":"queue_list","filter":{"queue":"held","domain":"example.com","sender":"<>","older_than_secs":3600,"status":"deferred"},"after":"0000000000000001","limit":5}"#,
            ),
            (
                q(QueueRequest::Show {
                    id: id(),
                    body: true,
                }),
                r#"{"cmd":"queue_show","id":"0000000000000001","body":true}"#,
            ),
            (
                q(QueueRequest::Summary {
                    filter: QueueFilter {
                        queue: Some(Queue::Disk),
                        ..QueueFilter::default()
                    },
                }),
                r#"{"cmd":"queue_summary","filter":{"queue":"disk"}}"#,
            ),
            (
                q(QueueRequest::Act {
                    action: QueueAction::Flush,
                    selection: Selection::All,
                    bounce: false,
                }),
                r#"{"cmd":"queue_act","action":"flush","selection":{"all":true},"bounce":false}"#,
            ),
            (
                q(QueueRequest::Act {
                    action: QueueAction::Delete,
                    selection: Selection::Id(id()),
                    bounce: true,
                }),
                r#"{"cmd":"queue_act","action":"delete","selection":{"id":"0000000000000001"},"bounce":true}"#,
            ),
            (
                q(QueueRequest::Act {
                    action: QueueAction::Hold,
                    selection: Selection::Domain(domain()),
                    bounce: false,
                }),
                r#"{"cmd":"queue_act","action":"hold","selection":{"domain":"example.com"},"bounce":false}"#,
            ),
            (Request::PauseInjection, r#"{"cmd":"pause_injection"}"#),
            (Request::ResumeInjection, r#"{"cmd":"resume_injection"}"#),
            (Request::GracefulStop, r#"{"cmd":"graceful_stop"}"#),
            (
                Request::Restart { now: true },
                r#"{"cmd":"restart","now":true}"#,
            ),
            (
                Request::Restart { now: false },
                r#"{"cmd":"restart","now":false}"#,
            ),
            (Request::Reload, r#"{"cmd":"reload"}"#),
            (Request::ReopenLogs, r#"{"cmd":"reopen_logs"}"#),
            (
                Request::Svc {
                    action: SvcAction::Restart,
                    service: Service::Spool,
                },
                r#"{"cmd":"svc","action":"restart","service":"spool"}"#,
            ),
            (
                Request::Svc {
                    action: SvcAction::Down,
                    service: Service::Bounce,
                },
                r#"{"cmd":"svc","action":"down","service":"bounce"}"#,
            ),
        ];
        for (request, json) in cases {
            both_ways(request, json);
        }
    }

    #[test]
    fn defaults_fill_what_an_older_client_leaves_out() {
        let read: Request = serde_json::from_str(r#"{"cmd":"queue_list"}"#).unwrap();
        assert_eq!(
            read,
            q(QueueRequest::List {
                filter: QueueFilter::default(),
                after: None,
                limit: 100
            })
        );
        let read: Request =
            serde_json::from_str(r#"{"cmd":"queue_act","action":"delete","selection":{"id":"1"}}"#)
                .unwrap();
        assert_eq!(
            read,
            q(QueueRequest::Act {
                action: QueueAction::Delete,
                selection: Selection::Id("1".into()),
                bounce: false
            })
        );
        let read: Request = serde_json::from_str(r#"{"cmd":"restart"}"#).unwrap();
        assert_eq!(read, Request::Restart { now: false });
        let read: Request =
            serde_json::from_str(r#"{"cmd":"svc","action":"up","service":"ram-runner"}"#).unwrap();
        assert_eq!(
            read,
            Request::Svc {
                action: SvcAction::Up,
                service: Service::Ram
            }
        );
    }

    #[test]
    fn a_selection_is_exactly_one_of_three() {
        for (json, want) in [
            (r#"{"all":true}"#, Some(Selection::All)),
            (r#"{"id":"x"}"#, Some(Selection::Id("x".into()))),
            (r#"{"domain":"d"}"#, Some(Selection::Domain("d".into()))),
            (r#"{"id":"x","all":false}"#, Some(Selection::Id("x".into()))),
            (r#"{}"#, None),
            (r#"{"all":false}"#, None),
            (r#"{"id":"x","all":true}"#, None),
            (r#"{"id":"x","domain":"d"}"#, None),
            (r#"{"ids":"x"}"#, None),
        ] {
            let read = serde_json::from_str::<Selection>(json);
            match want {
                Some(s) => assert_eq!(read.unwrap(), s, "{json}"),
                None => assert!(read.is_err(), "{json}: {read:?}"),
            }
        }
        let e = serde_json::from_str::<Selection>("{}").unwrap_err();
        assert!(e.to_string().starts_with("say which messages"), "{e}");
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        for (json, expected) in [
            (
                r#"{"cmd":"pause","runner":"nope"}"#,
                "`ram`, `bounce`, `disk`",
            ),
            (
                r#"{"cmd":"svc","action":"down","service":"nonesuch"}"#,
                "`smtp`, `submission`, `submissions`, `http`, `spool`, `ram`, `ram-runner`, `bounce`",
            ),
            (
                r#"{"cmd":"queue_list","filter":{"queue":"nowhere"}}"#,
                "`ram`, `bounce`, `disk`, `held`",
            ),
        ] {
            let e = serde_json::from_str::<Request>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{json}: {e}");
        }
    }
}
