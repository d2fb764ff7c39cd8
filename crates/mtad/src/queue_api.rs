//! The queue commands, for the control socket and the HTTP API alike:
//! list, show, summary, flush, hold, release, delete, and paused domains.
//! Index walks run on the blocking pool, never on the async threads that
//! accept and deliver mail.

use std::sync::Arc;

use mta_control::{ActionReport, Request, Response};
use mta_queue::Operator;
use mta_queue::SteerError;
use tracing::info;

use crate::queue_rows as rows;
use crate::server::Context;

/// Answers a queue request; `None` when `request` is not one.
pub async fn handle(ctx: &Arc<Context>, request: Request) -> Option<Response> {
    let queue: Operator = ctx.queue().operator();
    let response = match request {
        Request::QueueList {
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
        Request::QueueShow { id, body } => {
            blocking(move || queue.show(mta_queue::parse_id(&id)?, body))
                .await
                .map(|m| Response::Message(Box::new(rows::detail(m))))
        }
        Request::QueueSummary { filter } => {
            blocking(move || queue.summary(&rows::filter(&filter)?))
                .await
                .map(|s| Response::Summary(rows::summary(s)))
        }
        Request::QueueAct {
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
        Request::PauseDomain { domain } => {
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
        Request::ResumeDomain { domain } => queue
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
        _ => return None,
    };
    Some(response.unwrap_or_else(rows::error))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SteerError> + Send + 'static,
) -> Result<T, SteerError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SteerError::Internal(format!("the request failed: {e}"))))
}
