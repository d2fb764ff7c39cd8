//! The request as it travels: one flat JSON object tagged by `cmd`, as
//! the control socket has always spoken it. [`crate::Request`] nests the
//! queue requests and types the names; converting to and from this form
//! keeps the bytes on the wire as they were.

use serde::{Deserialize, Serialize};

use crate::{
    QueueAction, QueueFilter, QueueRequest, Request as Typed, Runner, Selection, Service, SvcAction,
};

/// [`Typed`], flat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Request {
    Status,
    Stop,
    Pause {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<Runner>,
    },
    Resume {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        runner: Option<Runner>,
    },
    PauseDomain {
        domain: String,
    },
    ResumeDomain {
        domain: String,
    },
    QueueList {
        #[serde(default)]
        filter: QueueFilter,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        #[serde(default = "default_page")]
        limit: usize,
    },
    QueueShow {
        id: String,
        #[serde(default)]
        body: bool,
    },
    QueueSummary {
        #[serde(default)]
        filter: QueueFilter,
    },
    QueueAct {
        action: QueueAction,
        selection: Selection,
        #[serde(default)]
        bounce: bool,
    },
    PauseInjection,
    ResumeInjection,
    GracefulStop,
    Restart {
        #[serde(default)]
        now: bool,
    },
    Reload,
    ReopenLogs,
    Svc {
        action: SvcAction,
        service: Service,
    },
}

fn default_page() -> usize {
    100
}

impl From<Request> for Typed {
    fn from(r: Request) -> Typed {
        match r {
            Request::Status => Typed::Status,
            Request::Stop => Typed::Stop,
            Request::Pause { runner } => Typed::Pause { runner },
            Request::Resume { runner } => Typed::Resume { runner },
            Request::PauseDomain { domain } => Typed::Queue(QueueRequest::PauseDomain { domain }),
            Request::ResumeDomain { domain } => Typed::Queue(QueueRequest::ResumeDomain { domain }),
            Request::QueueList {
                filter,
                after,
                limit,
            } => Typed::Queue(QueueRequest::List {
                filter,
                after,
                limit,
            }),
            Request::QueueShow { id, body } => Typed::Queue(QueueRequest::Show { id, body }),
            Request::QueueSummary { filter } => Typed::Queue(QueueRequest::Summary { filter }),
            Request::QueueAct {
                action,
                selection,
                bounce,
            } => Typed::Queue(QueueRequest::Act {
                action,
                selection,
                bounce,
            }),
            Request::PauseInjection => Typed::PauseInjection,
            Request::ResumeInjection => Typed::ResumeInjection,
            Request::GracefulStop => Typed::GracefulStop,
            Request::Restart { now } => Typed::Restart { now },
            Request::Reload => Typed::Reload,
            Request::ReopenLogs => Typed::ReopenLogs,
            Request::Svc { action, service } => Typed::Svc { action, service },
        }
    }
}

impl From<Typed> for Request {
    fn from(r: Typed) -> Request {
        match r {
            Typed::Status => Request::Status,
            Typed::Stop => Request::Stop,
            Typed::Pause { runner } => Request::Pause { runner },
            Typed::Resume { runner } => Request::Resume { runner },
            Typed::Queue(q) => match q {
                QueueRequest::List {
                    filter,
                    after,
                    limit,
                } => Request::QueueList {
                    filter,
                    after,
                    limit,
                },
                QueueRequest::Show { id, body } => Request::QueueShow { id, body },
                QueueRequest::Summary { filter } => Request::QueueSummary { filter },
                QueueRequest::Act {
                    action,
                    selection,
                    bounce,
                } => Request::QueueAct {
                    action,
                    selection,
                    bounce,
                },
                QueueRequest::PauseDomain { domain } => Request::PauseDomain { domain },
                QueueRequest::ResumeDomain { domain } => Request::ResumeDomain { domain },
            },
            Typed::PauseInjection => Request::PauseInjection,
            Typed::ResumeInjection => Request::ResumeInjection,
            Typed::GracefulStop => Request::GracefulStop,
            Typed::Restart { now } => Request::Restart { now },
            Typed::Reload => Request::Reload,
            Typed::ReopenLogs => Request::ReopenLogs,
            Typed::Svc { action, service } => Request::Svc { action, service },
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every request as the control socket spoke it before the names were
    //! typed and the queue requests nested: the JSON literals are the
    //! encoding of the earlier, flat `Request` with string names, copied
    //! from its output.

    use super::*;
    use crate::Queue;

    fn both_ways(request: Typed, json: &str) {
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            json,
            "{request:?}"
        );
        let read: Typed = serde_json::from_str(json).unwrap();
        assert_eq!(read, request, "{json}");
    }

    fn q(request: QueueRequest) -> Typed {
        Typed::Queue(request)
    }

    #[test]
    fn every_request_keeps_its_wire_form() {
        let id = || "0000000000000001".to_owned();
        let domain = || "example.com".to_owned();
        let cases = [
            (Typed::Status, r#"{"cmd":"status"}"#),
            (Typed::Stop, r#"{"cmd":"stop"}"#),
            (Typed::Pause { runner: None }, r#"{"cmd":"pause"}"#),
            (
                Typed::Pause {
                    runner: Some(Runner::Ram),
                },
                r#"{"cmd":"pause","runner":"ram"}"#,
            ),
            (Typed::Resume { runner: None }, r#"{"cmd":"resume"}"#),
            (
                Typed::Resume {
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
            (Typed::PauseInjection, r#"{"cmd":"pause_injection"}"#),
            (Typed::ResumeInjection, r#"{"cmd":"resume_injection"}"#),
            (Typed::GracefulStop, r#"{"cmd":"graceful_stop"}"#),
            (
                Typed::Restart { now: true },
                r#"{"cmd":"restart","now":true}"#,
            ),
            (
                Typed::Restart { now: false },
                r#"{"cmd":"restart","now":false}"#,
            ),
            (Typed::Reload, r#"{"cmd":"reload"}"#),
            (Typed::ReopenLogs, r#"{"cmd":"reopen_logs"}"#),
            (
                Typed::Svc {
                    action: SvcAction::Restart,
                    service: Service::Spool,
                },
                r#"{"cmd":"svc","action":"restart","service":"spool"}"#,
            ),
            (
                Typed::Svc {
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
        let read: Typed = serde_json::from_str(r#"{"cmd":"queue_list"}"#).unwrap();
        assert_eq!(
            read,
            q(QueueRequest::List {
                filter: QueueFilter::default(),
                after: None,
                limit: 100
            })
        );
        let read: Typed =
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
        let read: Typed = serde_json::from_str(r#"{"cmd":"restart"}"#).unwrap();
        assert_eq!(read, Typed::Restart { now: false });
        let read: Typed =
            serde_json::from_str(r#"{"cmd":"svc","action":"up","service":"ram-runner"}"#).unwrap();
        assert_eq!(
            read,
            Typed::Svc {
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
                "`smtp`, `http`, `spool`, `ram`, `ram-runner`, `bounce`",
            ),
            (
                r#"{"cmd":"queue_list","filter":{"queue":"nowhere"}}"#,
                "`ram`, `bounce`, `disk`, `held`",
            ),
        ] {
            let e = serde_json::from_str::<Typed>(json).unwrap_err().to_string();
            assert!(e.contains(expected), "{json}: {e}");
        }
    }
}

#[cfg(test)]
mod response_tests {
    //! Responses as they travel; the literals are what the earlier
    //! `Response` wrote, and the error's `kind` is the one new field.

    use crate::{ErrorKind, Response};

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
