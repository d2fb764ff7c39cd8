//! The queue commands, for the control socket and the HTTP API alike:
//! list, show, summary, flush, hold, release, delete, and paused domains.
//! Index walks run on the blocking pool, never on the async threads that
//! accept and deliver mail.

use std::sync::Arc;

use mta_control::{ActionReport, QueueRequest, Response};
use mta_queue::SteerError;
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
            report.map(Response::Acted)
        }
        QueueRequest::PauseDomain { domain } => {
            queue.pause_domain(&domain).map(|added| Response::Done {
                message: if added {
                    format!("delivery to {domain} paused")
                } else {
                    format!("delivery to {domain} was paused already")
                },
            })
        }
        QueueRequest::ResumeDomain { domain } => {
            queue
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
        }
    };
    response.unwrap_or_else(|e| match e {
        SteerError::NotFound(_) => Response::NotFound {
            message: e.to_string(),
        },
        e => Response::Error {
            message: e.to_string(),
        },
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SteerError> + Send + 'static,
) -> Result<T, SteerError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SteerError::Invalid(format!("the request failed: {e}"))))
}
