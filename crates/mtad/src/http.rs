//! The admin HTTP server: `GET /status` (the same JSON as `mta-init status
//! --json` shows under `daemon`) and `GET /metrics` (Prometheus text).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::server::{Context, Shutdown};

#[derive(Clone)]
struct App {
    ctx: Arc<Context>,
    shutdown: Shutdown,
}

/// Serves until the listeners close at the end of a stop, or the service
/// is taken down (`down`).
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    down: tokio_util::sync::CancellationToken,
) {
    let closed = shutdown.listeners_closed.clone();
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(App { ctx, shutdown });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                () = closed.cancelled() => {}
                () = down.cancelled() => {}
            }
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "HTTP server stopped");
    }
}

async fn status(State(app): State<App>) -> Json<mta_control::Status> {
    Json(crate::control::status(&app.ctx, &app.shutdown))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&app.ctx),
    )
}

/// The Prometheus text exposition of the counters and gauges.
fn render(ctx: &Context) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let plain = |v: u64| vec![(String::new(), v)];
    metric(
        "mta_accepted_total",
        "counter",
        "Messages accepted (answered 250) since start.",
        &plain(ctx.stats.accepted_total()),
    );
    let runners = ctx.generations.status();
    let mut outcomes = Vec::new();
    for r in &runners {
        for (outcome, v) in [
            ("delivered", r.delivered),
            ("deferred", r.deferred),
            ("failed", r.failed),
        ] {
            outcomes.push((
                format!("{{runner=\"{}\",outcome=\"{outcome}\"}}", r.name),
                v,
            ));
        }
    }
    metric(
        "mta_recipients_total",
        "counter",
        "Recipient outcomes since start, by runner.",
        &outcomes,
    );
    metric(
        "mta_bounces_total",
        "counter",
        "DSNs queued since start.",
        &plain(ctx.generations.dsns_queued()),
    );
    let attempts: Vec<_> = runners
        .iter()
        .map(|r| (format!("{{runner=\"{}\"}}", r.name), r.attempts))
        .collect();
    metric(
        "mta_attempts_total",
        "counter",
        "Delivery attempts started since start.",
        &attempts,
    );
    let in_flight: Vec<_> = runners
        .iter()
        .map(|r| (format!("{{runner=\"{}\"}}", r.name), r.in_flight))
        .collect();
    metric(
        "mta_in_flight",
        "gauge",
        "Delivery attempts running now.",
        &in_flight,
    );
    metric(
        "mta_queued_messages",
        "gauge",
        "Messages in the queue (spool index).",
        &plain(ctx.spool.len() as u64),
    );
    metric(
        "mta_sessions_open",
        "gauge",
        "SMTP sessions open now.",
        &plain(ctx.stats.sessions_open()),
    );
    let per_queue: Vec<_> = ctx
        .spool
        .queue_stats()
        .iter()
        .map(|q| {
            (
                format!("{{queue=\"{}\"}}", crate::control::runner_name(q.queue)),
                q.messages,
            )
        })
        .collect();
    metric(
        "mta_queue_messages",
        "gauge",
        "Messages in each queue (ram, bounce, disk).",
        &per_queue,
    );
    let rescan = ctx.spool.rescan_progress();
    metric(
        "mta_rescan_running",
        "gauge",
        "1 while the rescan of the spool files after an unclean stop runs.",
        &plain(u64::from(rescan.as_ref().is_some_and(|p| p.running))),
    );
    metric(
        "mta_rescan_files_total",
        "gauge",
        "Spool files the rescan of this start has to read (0 when the index was trusted).",
        &plain(rescan.as_ref().map_or(0, |p| p.files_total)),
    );
    metric(
        "mta_rescan_files_done",
        "gauge",
        "Spool files the rescan of this start has read.",
        &plain(rescan.as_ref().map_or(0, |p| p.files_done)),
    );
    out
}
