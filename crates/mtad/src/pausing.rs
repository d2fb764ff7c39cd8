//! Pausing and resuming delivery per runner (`pause delivery [--runner]`),
//! for the control socket and the HTTP API alike. A runner runs only while
//! nothing holds it: not down (`svc`), not paused, the spool not down.

use std::sync::atomic::Ordering;

use mta_control::{Response, Runner};
use tracing::info;

use crate::context::Context;
use crate::service_table::{index, queue_of, State, RUNNERS};

/// Pauses or resumes one runner, or all three.
pub async fn pause_delivery(ctx: &Context, runner: Option<Runner>, paused: bool) -> Response {
    let queues = match runner {
        None => RUNNERS.to_vec(),
        Some(r) => vec![queue_of(r)],
    };
    {
        let _one_at_a_time = ctx.services.changing.lock().await;
        for &q in &queues {
            ctx.services.runner_paused[index(q)].store(paused, Ordering::Relaxed);
        }
        apply_runners(ctx);
    }
    info!(
        runner = runner.map_or("all", Runner::as_str),
        paused,
        "delivery {}",
        if paused { "paused" } else { "resumed" }
    );
    Response::Ok
}

/// Makes each runner's pause switch match the states that hold it.
pub fn apply_runners(ctx: &Context) {
    let queue = ctx.queue();
    for q in RUNNERS {
        if ctx.services.runner_state(q) == State::Up {
            queue.resume(q);
        } else {
            queue.pause(q);
        }
    }
}

/// Pauses or resumes injection: new connections get `421 4.3.2` while
/// paused.
pub fn pause_injection(ctx: &Context, paused: bool) -> Response {
    ctx.services.set_injection_paused(paused);
    Response::Ok
}
