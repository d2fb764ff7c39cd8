//! The admin HTTP server: `GET /status` (the same JSON as `mta-init status
//! --json` shows under `daemon`), `GET /metrics` (Prometheus text), and
//! the queue API under `/api/` (the same operations as `mta-init queue`
//! and `pause`/`resume`, JSON in and out; see docs/operations.md). Who
//! may ask what (the token, `Host`, `Origin`, the content type) is
//! `http_access.rs`: without `[http] token` the queue API is off.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request as HttpRequest, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use mta_config::Role;
use mta_control::{ErrorKind, QueueAction, QueueFilter, QueueRequest, Response, Runner, Selection};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::context::Context;
use crate::http_access::{self, Reached, Refusal};
use crate::pausing;
use crate::shutdown::Shutdown;

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
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    let app = app.into_make_service_with_connect_info::<Reached>();
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

/// Lets a request through only if `http_access::check` does (the
/// configuration is read per request, so a reload that sets or changes
/// the token or the allowed names applies at once).
async fn authorize(
    State(app): State<App>,
    ConnectInfo(Reached(reached)): ConnectInfo<Reached>,
    request: HttpRequest,
    next: Next,
) -> HttpResponse {
    let settings = app.ctx.settings();
    let verdict = http_access::check(
        &settings.config.http,
        reached,
        request.method(),
        request.uri().path(),
        request.headers(),
    );
    let refused = match verdict {
        Ok(()) => return next.run(request).await,
        Err(r) => r,
    };
    tracing::info!(
        method = %request.method(),
        path = request.uri().path(),
        why = ?refused,
        "HTTP request refused"
    );
    let status = match refused {
        Refusal::ForeignHost(_) => StatusCode::MISDIRECTED_REQUEST,
        Refusal::ForeignOrigin(_) | Refusal::ApiDisabled => StatusCode::FORBIDDEN,
        Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
        Refusal::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
    };
    let mut response = refusal(status, refused.message());
    if refused == Refusal::Unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

async fn not_found() -> HttpResponse {
    refusal(StatusCode::NOT_FOUND, "no such path".into())
}

/// A POST body: empty means `{}`; 400 when it is not JSON, 422 when it is
/// JSON of the wrong shape (an unknown field, a wrong type).
fn json_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        (status, format!("the body is not the JSON expected: {e}"))
    })
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
        let queue = self
            .queue
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: mta_control::UnknownName| e.to_string())?;
        Ok(QueueFilter {
            queue,
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
        QueueRequest::List {
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
    ask(&app, QueueRequest::Summary { filter }).await
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
        QueueRequest::Show {
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

async fn act(State(app): State<App>, Path(action): Path<String>, body: Bytes) -> HttpResponse {
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
    let body: ActBody = match json_body(&body) {
        Ok(b) => b,
        Err((status, message)) => return refusal(status, message),
    };
    let selection = match Selection::from_fields(body.id, body.domain, body.all) {
        Ok(s) => s,
        Err(e) => return bad_request(e.to_string()),
    };
    ask(
        &app,
        QueueRequest::Act {
            action,
            selection,
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

async fn pause(State(app): State<App>, Path(what): Path<String>, body: Bytes) -> HttpResponse {
    pause_or_resume(&app, &what, &body, true).await
}

async fn resume(State(app): State<App>, Path(what): Path<String>, body: Bytes) -> HttpResponse {
    pause_or_resume(&app, &what, &body, false).await
}

async fn pause_or_resume(app: &App, what: &str, body: &[u8], pause: bool) -> HttpResponse {
    let body: PauseBody = match json_body(body) {
        Ok(b) => b,
        Err((status, message)) => return refusal(status, message),
    };
    let ctx = &app.ctx;
    let response = match (what, body.domain, body.runner) {
        ("injection", None, None) => pausing::pause_injection(ctx, pause),
        ("delivery", Some(_), Some(_)) => {
            return bad_request("give a domain or a runner, not both".into())
        }
        ("delivery", Some(domain), None) if pause => {
            crate::queue_api::handle(ctx, QueueRequest::PauseDomain { domain }).await
        }
        ("delivery", Some(domain), None) => {
            crate::queue_api::handle(ctx, QueueRequest::ResumeDomain { domain }).await
        }
        ("delivery", None, runner) => {
            let runner = match runner.as_deref().map(str::parse::<Runner>).transpose() {
                Ok(r) => r,
                Err(e) => return bad_request(e.to_string()),
            };
            pausing::pause_delivery(ctx, runner, pause).await
        }
        ("injection", _, _) => return bad_request("injection takes no domain or runner".into()),
        (other, _, _) => {
            return refusal(
                StatusCode::NOT_FOUND,
                format!("nothing called {other:?} to pause: delivery or injection"),
            )
        }
    };
    reply(response)
}

fn bad_request(message: String) -> HttpResponse {
    refusal(StatusCode::BAD_REQUEST, message)
}

/// `{"error": message}` with `status`.
fn refusal(status: StatusCode, message: String) -> HttpResponse {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Runs a queue request as the control socket would, and turns the
/// answer into HTTP.
async fn ask(app: &App, request: QueueRequest) -> HttpResponse {
    reply(crate::queue_api::handle(&app.ctx, request).await)
}

/// The answer as HTTP: the payload itself with 200; a failure as
/// `{"error": ...}` with the status of its kind (400, 404, 409, 503, 500),
/// 404 for an unknown message.
fn reply(response: Response) -> HttpResponse {
    match response {
        Response::QueuePage(page) => Json(page).into_response(),
        Response::Message(m) => Json(m).into_response(),
        Response::Summary(s) => Json(s).into_response(),
        Response::Acted(r) => Json(r).into_response(),
        Response::Status(s) => Json(s).into_response(),
        Response::Stopped(s) => Json(s).into_response(),
        Response::Ok => Json(serde_json::json!({ "result": "ok" })).into_response(),
        Response::Done { message } => {
            Json(serde_json::json!({ "result": "ok", "message": message })).into_response()
        }
        Response::NotFound { message } => refusal(StatusCode::NOT_FOUND, message),
        Response::Forbidden { message } => refusal(StatusCode::FORBIDDEN, message),
        Response::Error { message, kind } => refusal(status_of(kind), message),
    }
}

/// The HTTP status of a failed request's kind.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn status(State(app): State<App>) -> Json<mta_control::Status> {
    Json(crate::status::status(&app.ctx, &app.shutdown))
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
    let (waits, micros) = ctx.stats.in_flow();
    metric(
        "mta_in_flow_waits_total",
        "counter",
        "MAIL commands held by the in-flow control (smtp.in_flow_delay) since start.",
        &plain(waits),
    );
    metric(
        "mta_in_flow_wait_microseconds_total",
        "counter",
        "Time those MAIL commands were held, in all.",
        &plain(micros),
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
    metric(
        "mta_dsns_dropped_total",
        "counter",
        "DSNs dropped since start: reports on failed mail from <> that the postmaster could not be sent either.",
        &plain(ctx.generations.dsns_dropped()),
    );
    let tls = ctx.generations.tls_counts();
    let mut by_tls: Vec<(String, u64)> = tls
        .delivered
        .iter()
        .map(|((verified, version), n)| {
            (format!("{{verified=\"{verified}\",tls=\"{version}\"}}"), *n)
        })
        .collect();
    if by_tls.is_empty() {
        by_tls.push(("{verified=\"none\",tls=\"none\"}".to_owned(), 0));
    }
    metric(
        "mta_deliveries_by_tls_total",
        "counter",
        "Recipients delivered to other MTAs since start, by TLS version (none: plaintext) and who had the certificate verified (none, ca, mta-sts, dane).",
        &by_tls,
    );
    metric(
        "mta_tls_policy_failures_total",
        "counter",
        "Deliveries a published TLS policy deferred (enforce), or would have (testing), since start.",
        &[
            (
                "{policy=\"mta-sts\",mode=\"enforce\"}".to_owned(),
                tls.mta_sts_failures,
            ),
            (
                "{policy=\"mta-sts\",mode=\"testing\"}".to_owned(),
                tls.mta_sts_testing_failures,
            ),
            (
                "{policy=\"dane\",mode=\"enforce\"}".to_owned(),
                tls.dane_failures,
            ),
        ],
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
    // One series per SMTP role that listens (port 25's always).
    let roles: Vec<Role> = Role::ALL
        .into_iter()
        .filter(|&role| role == Role::Mx || !ctx.listen(role).is_empty())
        .collect();
    let by_role = |value: &dyn Fn(Role) -> u64| -> Vec<(String, u64)> {
        roles
            .iter()
            .map(|&role| (format!("{{role=\"{}\"}}", role.name()), value(role)))
            .collect()
    };
    metric(
        "mta_listener_sessions_open",
        "gauge",
        "SMTP sessions open now, by role (smtp, submission, submissions).",
        &by_role(&|role| ctx.stats.sessions_open_on(role)),
    );
    metric(
        "mta_listener_up",
        "gauge",
        "1 when the role's listener accepts connections (not taken down with svc).",
        &by_role(&|role| {
            u64::from(ctx.services.smtp_state(role) != crate::service_table::State::Down)
        }),
    );
    let refused: Vec<_> = ctx
        .stats
        .smtp_refused()
        .by_cause()
        .into_iter()
        .map(|(cause, n)| (format!("{{cause=\"{cause}\"}}"), n))
        .collect();
    metric(
        "mta_smtp_refused_total",
        "counter",
        "SMTP connections turned away at the banner, and sessions closed at a deadline, since start, by cause.",
        &refused,
    );
    let auth = ctx.auth.counts();
    metric(
        "mta_auth_checks_total",
        "counter",
        "SMTP AUTH password checks since start, by result (unavailable: 454 4.7.0).",
        &[
            ("{result=\"accepted\"}".to_owned(), auth.accepted),
            ("{result=\"rejected\"}".to_owned(), auth.rejected),
            ("{result=\"unavailable\"}".to_owned(), auth.unavailable),
        ],
    );
    metric(
        "mta_auth_lockouts_total",
        "counter",
        "Clients and user names locked out after too many failed AUTHs, since start.",
        &plain(auth.lockouts),
    );
    metric(
        "mta_auth_refused_locked_total",
        "counter",
        "AUTH attempts refused (421 4.7.0) because the client or user was locked out.",
        &plain(auth.refused_locked),
    );
    metric(
        "mta_smtp_clients_tracked",
        "gauge",
        "Clients the per-client connection limits remember now.",
        &plain(ctx.client_limits.iter().map(|c| c.tracked() as u64).sum()),
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
    metric(
        "mta_queued_in_memory",
        "gauge",
        "Volatile messages held in memory only, not yet in the spool.",
        &plain(ctx.queue().in_memory()),
    );
    metric(
        "mta_corrupt_spool_files_total",
        "counter",
        "Unparsable spool files set aside in corrupt/ since start.",
        &plain(ctx.spool.corrupt_set_aside()),
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
        &plain(ctx.queue().operator().paused_domains().len() as u64),
    );
    let index = ctx.spool.index_health();
    metric(
        "mta_spool_degraded",
        "gauge",
        "1 while the spool is degraded: its index out of service, or free space below spool.min_free_space (new mail gets 452 4.3.1).",
        &plain(u64::from(ctx.spool_trouble().is_some())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_status() {
        for (kind, status) in [
            (ErrorKind::Invalid, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
        ] {
            assert_eq!(status_of(kind).as_u16(), status, "{kind:?}");
            let answer = reply(Response::error(kind, "why"));
            assert_eq!(answer.status().as_u16(), status, "{kind:?}");
        }
        let gone = reply(Response::NotFound {
            message: "no message 1".into(),
        });
        assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    }
}
