//! The queue's own request and row types (mta-queue knows no wire
//! format) mapped to and from the control socket's and HTTP API's types
//! (`mta_control`), and the queue's errors to a response, in one place.

use mta_control as wire;
use mta_control::Response;
use mta_queue::{self as queue, ErrorKind, SteerError};
use mta_spool::QueueName;

/// A listing filter from the wire: names checked and parsed.
pub fn filter(f: &wire::QueueFilter) -> Result<queue::Filter, SteerError> {
    Ok(queue::Filter {
        queue: f.queue.map(queue_name),
        status: f.status.as_deref().map(str::parse).transpose()?,
        domain: f.domain.as_deref().map(queue::domain).transpose()?,
        sender: f.sender.clone(),
        older_than_secs: f.older_than_secs,
    })
}

/// The action asked for.
pub fn action(a: wire::QueueAction) -> queue::Action {
    match a {
        wire::QueueAction::Flush => queue::Action::Flush,
        wire::QueueAction::Hold => queue::Action::Hold,
        wire::QueueAction::Release => queue::Action::Release,
        wire::QueueAction::Delete => queue::Action::Delete,
    }
}

/// A queue by its wire name.
fn queue_name(q: wire::Queue) -> QueueName {
    match q {
        wire::Queue::Ram => QueueName::Ram,
        wire::Queue::Bounce => QueueName::Bounce,
        wire::Queue::Disk => QueueName::Disk,
        wire::Queue::Held => QueueName::Held,
    }
}

/// Which messages: one by id, a domain's, or all.
pub fn selection(s: &wire::Selection) -> Result<queue::Selection, SteerError> {
    Ok(match s {
        wire::Selection::Id(id) => queue::Selection::Id(queue::parse_id(id)?),
        wire::Selection::Domain(domain) => queue::Selection::Domain(domain.clone()),
        wire::Selection::All => queue::Selection::All,
    })
}

/// What an action did.
pub fn report(r: queue::ActionReport) -> wire::ActionReport {
    wire::ActionReport {
        matched: r.matched,
        done: r.done,
        in_flight: r.in_flight,
        unchanged: r.unchanged,
        recipients_deleted: r.recipients_deleted,
        dsns: r.dsns,
    }
}

fn message(m: queue::MessageRow) -> wire::MessageRow {
    wire::MessageRow {
        id: m.id.to_string(),
        queue: m.queue.as_str().to_owned(),
        size: m.size,
        arrival: m.arrival,
        sender: m.sender,
        attempts: m.attempts,
        next_attempt: m.next_attempt,
        recipients: m
            .recipients
            .into_iter()
            .map(|r| wire::RecipientRow {
                address: r.address,
                status: r.status.as_str().to_owned(),
                attempts: r.attempts,
                last_reply: r.last_reply,
            })
            .collect(),
        in_memory: m.in_memory,
        auth: m.auth,
    }
}

/// One page of the listing.
pub fn page(p: queue::Page) -> wire::QueuePage {
    wire::QueuePage {
        messages: p.messages.into_iter().map(message).collect(),
        next: p.next.map(|id| id.to_string()),
    }
}

/// One message in full.
pub fn detail(d: queue::Detail) -> wire::MessageDetail {
    let history = d
        .history
        .iter()
        .map(|h| wire::HistoryRow {
            time: h.time,
            attempt: h.attempt,
            recipient: d.recipient(h),
            event: h.event.clone(),
            status: h.status.clone(),
            reply: h.reply.clone(),
            remote: h.remote.clone(),
        })
        .collect();
    wire::MessageDetail {
        message: message(d.message),
        envelope: serde_json::to_value(&d.envelope).unwrap_or_default(),
        history,
        headers: d.headers,
        body: d.body,
    }
}

fn summary_row(r: queue::SummaryRow) -> wire::SummaryRow {
    wire::SummaryRow {
        domain: r.domain,
        messages: r.messages,
        buckets: r.buckets,
    }
}

/// The qshape summary.
pub fn summary(s: queue::Summary) -> wire::QueueSummary {
    wire::QueueSummary {
        bucket_minutes: s.bucket_minutes,
        total: summary_row(s.total),
        domains: s.domains.into_iter().map(summary_row).collect(),
    }
}

/// A queue error as a response, by its kind. Only "not found" has a
/// response of its own on the wire today; every other kind is an error.
pub fn error(e: SteerError) -> Response {
    let kind = match e.kind() {
        ErrorKind::NotFound => {
            return Response::NotFound {
                message: e.to_string(),
            }
        }
        ErrorKind::Invalid => wire::ErrorKind::Invalid,
        ErrorKind::Conflict => wire::ErrorKind::Conflict,
        ErrorKind::Unavailable => wire::ErrorKind::Unavailable,
        ErrorKind::Internal => wire::ErrorKind::Internal,
    };
    Response::error(kind, e.to_string())
}
