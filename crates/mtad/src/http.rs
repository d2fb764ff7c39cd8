//! The admin HTTP server: `GET /status` (the same JSON as `mta-init status
//! --json` shows under `daemon`), `GET /metrics` (Prometheus text), and
//! the queue API under `/api/` (the same operations as `mta-init queue`
//! and `pause`/`resume`, JSON in and out; see docs/operations.md). With
//! `http.token` set, every request needs `Authorization: Bearer <token>`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use mta_control::{QueueAction, QueueFilter, Request, Response, Selection};
use serde::Deserialize;
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
    let state = App { ctx, shutdown };
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/api/queue", get(list))
        .route("/api/queue/summary", get(summary))
        // GET a message by id, POST an action by name.
        .route("/api/queue/{key}", get(show).post(act))
        .route("/api/pause/{what}", post(pause))
        .route("/api/resume/{what}", post(resume))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
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

/// Refuses a request without the configured bearer token (read per
/// request, so a reload that sets or changes it applies at once).
async fn authorize(State(app): State<App>, request: HttpRequest, next: Next) -> HttpResponse {
    let settings = app.ctx.settings();
    let Some(token) = settings.config.http.token.as_deref() else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let mut response = refusal(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required (Authorization: Bearer <http.token>)".into(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `?queue=&domain=&sender=&older_than=&status=&after=&limit=`
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    queue: Option<String>,
    domain: Option<String>,
    sender: Option<String>,
    /// Seconds, or a duration such as `2h`.
    older_than: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

impl ListQuery {
    fn filter(&self) -> Result<QueueFilter, String> {
        let older_than_secs = match self.older_than.as_deref() {
            None => None,
            Some(t) => Some(match t.parse::<u64>() {
                Ok(secs) => secs,
                Err(_) => humantime::parse_duration(t)
                    .map_err(|e| format!("older_than {t:?}: {e}"))?
                    .as_secs(),
            }),
        };
        Ok(QueueFilter {
            queue: self.queue.clone(),
            domain: self.domain.clone(),
            sender: self.sender.clone(),
            older_than_secs,
            status: self.status.clone(),
        })
    }
}

async fn list(State(app): State<App>, query: Query<ListQuery>) -> HttpResponse {
    let filter = match query.filter() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    ask(
        &app,
        Request::QueueList {
            filter,
            after: query.after.clone(),
            limit: query.limit.unwrap_or(100),
        },
    )
    .await
}

async fn summary(State(app): State<App>, query: Query<ListQuery>) -> HttpResponse {
    let filter = match query.filter() {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    ask(&app, Request::QueueSummary { filter }).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ShowQuery {
    body: bool,
}

async fn show(
    State(app): State<App>,
    Path(id): Path<String>,
    query: Query<ShowQuery>,
) -> HttpResponse {
    ask(
        &app,
        Request::QueueShow {
            id,
            body: query.body,
        },
    )
    .await
}

/// The body of `POST /api/queue/{flush,hold,release,delete}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ActBody {
    id: Option<String>,
    domain: Option<String>,
    all: bool,
    bounce: bool,
}

async fn act(
    State(app): State<App>,
    Path(action): Path<String>,
    body: Option<Json<ActBody>>,
) -> HttpResponse {
    let action = match action.as_str() {
        "flush" => QueueAction::Flush,
        "hold" => QueueAction::Hold,
        "release" => QueueAction::Release,
        "delete" => QueueAction::Delete,
        other => {
            return refusal(
                StatusCode::NOT_FOUND,
                format!("no queue action {other:?}: flush, hold, release or delete"),
            )
        }
    };
    let Json(body) = body.unwrap_or_default();
    ask(
        &app,
        Request::QueueAct {
            action,
            selection: Selection {
                id: body.id,
                domain: body.domain,
                all: body.all,
            },
            bounce: body.bounce,
        },
    )
    .await
}

/// The body of `POST /api/{pause,resume}/{delivery,injection}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PauseBody {
    /// A destination domain (delivery only).
    domain: Option<String>,
    /// One runner: ram, bounce or disk (delivery only).
    runner: Option<String>,
}

async fn pause(
    State(app): State<App>,
    Path(what): Path<String>,
    body: Option<Json<PauseBody>>,
) -> HttpResponse {
    pause_or_resume(&app, &what, body.map(|b| b.0).unwrap_or_default(), true).await
}

async fn resume(
    State(app): State<App>,
    Path(what): Path<String>,
    body: Option<Json<PauseBody>>,
) -> HttpResponse {
    pause_or_resume(&app, &what, body.map(|b| b.0).unwrap_or_default(), false).await
}

async fn pause_or_resume(app: &App, what: &str, body: PauseBody, pause: bool) -> HttpResponse {
    let request = match (what, body.domain, body.runner) {
        ("injection", None, None) if pause => Request::PauseInjection,
        ("injection", None, None) => Request::ResumeInjection,
        ("delivery", Some(_), Some(_)) => {
            return bad_request("give a domain or a runner, not both".into())
        }
        ("delivery", Some(domain), None) if pause => Request::PauseDomain { domain },
        ("delivery", Some(domain), None) => Request::ResumeDomain { domain },
        ("delivery", None, runner) if pause => Request::Pause { runner },
        ("delivery", None, runner) => Request::Resume { runner },
        ("injection", _, _) => return bad_request("injection takes no domain or runner".into()),
        (other, _, _) => {
            return refusal(
                StatusCode::NOT_FOUND,
                format!("nothing called {other:?} to pause: delivery or injection"),
            )
        }
    };
    ask(app, request).await
}

fn bad_request(message: String) -> HttpResponse {
    refusal(StatusCode::BAD_REQUEST, message)
}

/// `{"error": message}` with `status`.
fn refusal(status: StatusCode, message: String) -> HttpResponse {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Runs a request as the control socket would, and turns the answer
/// into HTTP: the payload itself with 200, 404 for an unknown message, 400
/// with `{"error": ...}` for a refusal.
async fn ask(app: &App, request: Request) -> HttpResponse {
    let response = crate::control::handle(request, &app.ctx, &app.shutdown).await;
    match response {
        Response::QueuePage(page) => Json(page).into_response(),
        Response::Message(m) => Json(m).into_response(),
        Response::Summary(s) => Json(s).into_response(),
        Response::Acted(r) => Json(r).into_response(),
        Response::Status(s) => Json(s).into_response(),
        Response::Ok => Json(serde_json::json!({ "result": "ok" })).into_response(),
        Response::Done { message } => {
            Json(serde_json::json!({ "result": "ok", "message": message })).into_response()
        }
        Response::NotFound { message } => refusal(StatusCode::NOT_FOUND, message),
        Response::Error { message } => bad_request(message),
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
        .map(|q| (format!("{{queue=\"{}\"}}", q.queue.as_str()), q.messages))
        .collect();
    metric(
        "mta_queue_messages",
        "gauge",
        "Messages in each queue (ram, bounce, disk, held).",
        &per_queue,
    );
    let throttles = ctx.queue().throttles();
    metric(
        "mta_destinations_backed_off",
        "gauge",
        "Destinations backed off now (after 421 or a burst of 4xx replies).",
        &plain(throttles.backoffs.len() as u64),
    );
    metric(
        "mta_paused_domains",
        "gauge",
        "Destination domains whose delivery the operator paused.",
        &plain(ctx.queue().paused_domains().len() as u64),
    );
    let index = ctx.spool.index_health();
    metric(
        "mta_spool_degraded",
        "gauge",
        "1 while the spool is degraded: its index out of service, or free space below spool.min_free_space (new mail gets 452 4.3.1).",
        &plain(u64::from(crate::services::spool_trouble(ctx).is_some())),
    );
    metric(
        "mta_spool_index_failed",
        "gauge",
        "1 while the queue index is out of service (a write to it failed); it is reopened once space is back.",
        &plain(u64::from(index.failed.is_some())),
    );
    metric(
        "mta_spool_index_failures_total",
        "counter",
        "Times the queue index failed (a write did not reach the disk) since start.",
        &plain(index.failures),
    );
    metric(
        "mta_spool_index_recoveries_total",
        "counter",
        "Times a failed queue index was reopened since start.",
        &plain(index.recoveries),
    );
    metric(
        "mta_delivery_log_dropped_total",
        "counter",
        "Delivery-log lines that could not be written (a full disk).",
        &plain(ctx.generations.delivery_log_dropped()),
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
