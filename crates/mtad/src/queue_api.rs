//! The queue commands, for the control socket and the HTTP API alike:
//! list, show, summary, flush, hold, release, delete, and paused domains.
//! Index walks run on the blocking pool, never on the async threads that
//! accept and deliver mail.

use std::sync::Arc;

use mta_control::{ActionReport, QueueRequest, Response};
use mta_queue::Operator;
use mta_queue::SteerError;
use tracing::info;

use crate::context::Context;
use crate::queue_rows as rows;

/// Answers a queue request.
pub async fn handle(ctx: &Arc<Context>, request: QueueRequest) -> Response {
    let queue: Operator = ctx.queue().operator();
    let response = match request {
        QueueRequest::List {
            filter,
            after,
            limit,
        } => blocking(move || {
            let filter = rows::filter(&filter)?;
            let after = after.as_deref().map(mta_queue::parse_id).transpose()?;
            queue.list(&filter, after, limit)
        })
        .await
        .map(|p| Response::QueuePage(rows::page(p))),
        QueueRequest::Show { id, body } => {
            blocking(move || queue.show(mta_queue::parse_id(&id)?, body))
                .await
                .map(|m| Response::Message(Box::new(rows::detail(m))))
        }
        QueueRequest::Summary { filter } => {
            blocking(move || queue.summary(&rows::filter(&filter)?))
                .await
                .map(|s| Response::Summary(rows::summary(s)))
        }
        QueueRequest::Act {
            action,
            selection,
            bounce,
        } => {
            let report = match rows::selection(&selection) {
                Ok(chosen) => queue
                    .act(rows::action(action), &chosen, bounce)
                    .await
                    .map(rows::report),
                Err(e) => Err(e),
            };
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
            report.map(Response::Acted)
        }
        QueueRequest::PauseDomain { domain } => {
            queue
                .pause_domain(&domain)
                .await
                .map(|added| Response::Done {
                    message: if added {
                        format!("delivery to {domain} paused")
                    } else {
                        format!("delivery to {domain} was paused already")
                    },
                })
        }
        QueueRequest::ResumeDomain { domain } => queue
            .resume_domain(&domain)
            .await
            .map(|(was, report)| (was, rows::report(report)))
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
            }),
    };
    response.unwrap_or_else(rows::error)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SteerError> + Send + 'static,
) -> Result<T, SteerError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SteerError::Internal(format!("the request failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use mta_control::ErrorKind;
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
        let not_found = rows::error(SteerError::NotFound("1".into()));
        assert!(
            matches!(not_found, Response::NotFound { .. }),
            "{not_found:?}"
        );
        let invalid = rows::error(SteerError::Invalid("bad id".into()));
        assert_eq!(kind(&invalid), Some(ErrorKind::Invalid));
        let conflict = rows::error(SteerError::Conflict("unreadable".into()));
        assert_eq!(kind(&conflict), Some(ErrorKind::Conflict));
        let io = SpoolError::Io {
            op: "fdatasync",
            path: PathBuf::from("/q/msg/1"),
            source: std::io::ErrorKind::StorageFull.into(),
        };
        let spool = rows::error(SteerError::Spool(io));
        assert_eq!(kind(&spool), Some(ErrorKind::Unavailable));
        let panicked = blocking(|| -> Result<(), SteerError> { panic!("a bug") })
            .await
            .unwrap_err();
        let internal = rows::error(panicked);
        assert_eq!(kind(&internal), Some(ErrorKind::Internal), "{internal:?}");
    }
}
