//! The queue commands, for the control socket and the HTTP API alike:
//! list, show, summary, flush, hold, release, delete, and paused domains.
//! Index walks run on the blocking pool, never on the async threads that
//! accept and deliver mail.

use std::sync::Arc;

use mta_control::{ActionReport, ErrorKind, QueueRequest, Response};
use mta_queue::SteerError;
use tokio::task::JoinError;
use tracing::info;

use crate::context::Context;

/// Answers a queue request.
pub async fn handle(ctx: &Arc<Context>, request: QueueRequest) -> Response {
    let queue = ctx.queue();
    let response = match request {
        QueueRequest::List {
            filter,
            after,
            limit,
        } => blocking(move || queue.list(&filter, after.as_deref(), limit))
            .await
            .map(Response::QueuePage),
        QueueRequest::Show { id, body } => blocking(move || queue.show(&id, body))
            .await
            .map(|m| Response::Message(Box::new(m))),
        QueueRequest::Summary { filter } => blocking(move || queue.summary(&filter))
            .await
            .map(Response::Summary),
        QueueRequest::Act {
            action,
            selection,
            bounce,
        } => {
            let report = queue.act(action, &selection, bounce).await;
            if let Ok(r) = &report {
                info!(
                    ?action,
                    ?selection,
                    bounce,
                    matched = r.matched,
                    done = r.done,
                    in_flight = r.in_flight,
                    "queue action"
                );
            }
            report.map(Response::Acted).map_err(Failure::Steer)
        }
        QueueRequest::PauseDomain { domain } => queue
            .pause_domain(&domain)
            .map(|added| Response::Done {
                message: if added {
                    format!("delivery to {domain} paused")
                } else {
                    format!("delivery to {domain} was paused already")
                },
            })
            .map_err(Failure::Steer),
        QueueRequest::ResumeDomain { domain } => queue
            .resume_domain(&domain)
            .await
            .map(|(was, report): (bool, ActionReport)| Response::Done {
                message: if was {
                    format!(
                        "delivery to {domain} resumed; {} {} due now",
                        report.done,
                        if report.done == 1 {
                            "message"
                        } else {
                            "messages"
                        }
                    )
                } else {
                    format!("delivery to {domain} was not paused")
                },
            })
            .map_err(Failure::Steer),
    };
    response.unwrap_or_else(failed)
}

/// Why a queue request failed: the queue refused it, or the blocking task
/// that ran it did not finish (it panicked).
#[derive(Debug)]
enum Failure {
    Steer(SteerError),
    Task(JoinError),
}

impl From<SteerError> for Failure {
    fn from(e: SteerError) -> Failure {
        Failure::Steer(e)
    }
}

/// The one place a failed queue request gets its kind: what the control
/// socket carries and the HTTP API's status follows.
fn failed(failure: Failure) -> Response {
    match failure {
        Failure::Steer(e @ SteerError::NotFound(_)) => Response::NotFound {
            message: e.to_string(),
        },
        Failure::Steer(e @ SteerError::Invalid(_)) => {
            Response::error(ErrorKind::Invalid, e.to_string())
        }
        Failure::Steer(e @ SteerError::Spool(_)) => {
            Response::error(ErrorKind::Unavailable, e.to_string())
        }
        Failure::Task(e) => {
            Response::error(ErrorKind::Internal, format!("the request failed: {e}"))
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SteerError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(Failure::Task(e)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use mta_spool::SpoolError;

    use super::*;

    fn kind(response: &Response) -> Option<ErrorKind> {
        match response {
            Response::Error { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    #[tokio::test]
    async fn each_failure_keeps_its_kind() {
        let not_found = failed(Failure::Steer(SteerError::NotFound("1".into())));
        assert!(
            matches!(not_found, Response::NotFound { .. }),
            "{not_found:?}"
        );
        let invalid = failed(Failure::Steer(SteerError::Invalid("bad id".into())));
        assert_eq!(kind(&invalid), Some(ErrorKind::Invalid));
        let io = SpoolError::Io {
            op: "fdatasync",
            path: PathBuf::from("/q/msg/1"),
            source: std::io::ErrorKind::StorageFull.into(),
        };
        let spool = failed(Failure::Steer(SteerError::Spool(io)));
        assert_eq!(kind(&spool), Some(ErrorKind::Unavailable));
        let panicked = blocking(|| -> Result<(), SteerError> { panic!("a bug") })
            .await
            .unwrap_err();
        let internal = failed(panicked);
        assert_eq!(kind(&internal), Some(ErrorKind::Internal), "{internal:?}");
    }
}
