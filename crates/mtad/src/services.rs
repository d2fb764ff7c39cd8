//! Per-service control, as daemontools' `svc -d|-u|-t`: the SMTP
//! listener, the HTTP server, the spool and each queue runner can be taken
//! down and brought up while the rest runs, and injection and delivery
//! paused.
//!
//! Dependencies, as GreenArrow's database manager knows them: the
//! listener and the runners depend on the spool. Taking the spool down
//! pauses injection (new connections get `421 4.3.2`, a message already
//! on its way gets `451 4.3.0`) and the runners (attempts under way
//! finish, none starts); bringing it up resumes whatever the operator had
//! not taken down or paused separately.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mta_config::Role;
use mta_control::{Runner, Service};
use mta_spool::QueueName;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::context::Context;
use crate::pausing::apply_runners;
use crate::service_table::{index, queue_of, Loops, RUNNERS};
use crate::shutdown::Shutdown;
use crate::sockets::Kind;

/// Starts the SMTP accept loops of every role on the registered sockets.
pub fn start_smtp(ctx: &Arc<Context>, shutdown: &Shutdown, sessions: &TaskTracker) -> Result<()> {
    *ctx.services.smtp_with.lock() = Some((shutdown.clone(), sessions.clone()));
    for role in Role::ALL {
        spawn_smtp(ctx, role)?;
    }
    Ok(())
}

fn spawn_smtp(ctx: &Arc<Context>, role: Role) -> Result<()> {
    let Some((shutdown, sessions)) = ctx.services.smtp_with.lock().clone() else {
        bail!("the listener was never started");
    };
    let down = CancellationToken::new();
    let tasks = ctx
        .sockets
        .duplicates(Kind::Smtp(role))?
        .into_iter()
        .map(|l| {
            tokio::spawn(crate::listener::accept_loop(
                l,
                role,
                ctx.clone(),
                shutdown.clone(),
                sessions.clone(),
                down.clone(),
            ))
        })
        .collect();
    *ctx.services.smtp[role.index()].lock() = Some(Loops { down, tasks });
    Ok(())
}

/// Starts the HTTP server on the registered sockets.
pub fn start_http(ctx: &Arc<Context>, shutdown: &Shutdown) -> Result<()> {
    *ctx.services.http_with.lock() = Some(shutdown.clone());
    spawn_http(ctx)
}

fn spawn_http(ctx: &Arc<Context>) -> Result<()> {
    let Some(shutdown) = ctx.services.http_with.lock().clone() else {
        bail!("the HTTP server was never started");
    };
    let down = CancellationToken::new();
    let tasks = ctx
        .sockets
        .duplicates(Kind::Http)?
        .into_iter()
        .map(|l| {
            tokio::spawn(crate::http::serve(
                l,
                ctx.clone(),
                shutdown.clone(),
                down.clone(),
            ))
        })
        .collect();
    *ctx.services.http.lock() = Some(Loops { down, tasks });
    Ok(())
}

/// At the end of a stop: waits for the accept loops (they end with
/// the stop) and stops the HTTP server.
pub async fn stop_listeners(ctx: &Context) {
    for role in Role::ALL {
        let smtp = ctx.services.smtp[role.index()].lock().take();
        if let Some(loops) = smtp {
            for task in loops.tasks {
                let _ = task.await;
            }
        }
    }
    let http = ctx.services.http.lock().take();
    if let Some(loops) = http {
        loops.stop().await;
    }
}

/// `svc down|up|restart SERVICE`; returns what was done.
pub async fn svc(
    ctx: &Arc<Context>,
    action: mta_control::SvcAction,
    service: Service,
) -> Result<String> {
    use mta_control::SvcAction::*;
    let _one_at_a_time = ctx.services.changing.lock().await;
    match action {
        Down => down(ctx, service).await,
        Up => up(ctx, service),
        Restart => {
            let down = down(ctx, service).await?;
            let up = up(ctx, service)?;
            Ok(format!("{down}; {up}"))
        }
    }
}

async fn down(ctx: &Arc<Context>, service: Service) -> Result<String> {
    match service {
        Service::Smtp => Ok(listener_down(ctx, Role::Mx).await),
        Service::Submission => Ok(listener_down(ctx, Role::Submission).await),
        Service::Submissions => Ok(listener_down(ctx, Role::Submissions).await),
        Service::Http => {
            let loops = ctx.services.http.lock().take();
            if let Some(loops) = loops {
                loops.stop().await;
            }
            ctx.sockets.close(Kind::Http);
            ctx.services.http_down.store(true, Ordering::Relaxed);
            info!("svc: http down");
            Ok("http down".into())
        }
        Service::Spool => {
            ctx.services.spool_down.store(true, Ordering::Relaxed);
            apply_runners(ctx);
            let drained = wait_idle(ctx, &RUNNERS).await;
            let spool = ctx.spool.clone();
            tokio::task::spawn_blocking(move || spool.flush())
                .await
                .context("flushing the queue index")?
                .context("flushing the queue index")?;
            info!(
                drained,
                "svc: spool down (injection and delivery paused, index flushed)"
            );
            Ok(format!(
                "spool down: new mail gets 421 4.3.2, runners paused ({}), queue index flushed",
                if drained {
                    "no attempt in flight"
                } else {
                    "attempts still finishing"
                }
            ))
        }
        Service::Ram => Ok(runner_down(ctx, Runner::Ram).await),
        Service::Bounce => Ok(runner_down(ctx, Runner::Bounce).await),
        Service::Disk => Ok(runner_down(ctx, Runner::Disk).await),
    }
}

fn up(ctx: &Arc<Context>, service: Service) -> Result<String> {
    match service {
        Service::Smtp => listener_up(ctx, Role::Mx),
        Service::Submission => listener_up(ctx, Role::Submission),
        Service::Submissions => listener_up(ctx, Role::Submissions),
        Service::Http => {
            if ctx.services.http.lock().is_some() {
                return Ok("http already up".into());
            }
            ctx.sockets.reopen(Kind::Http, &ctx.http_listen)?;
            spawn_http(ctx)?;
            ctx.services.http_down.store(false, Ordering::Relaxed);
            info!("svc: http up");
            Ok(format!("http up: listening on {}", join(&ctx.http_listen)))
        }
        Service::Spool => {
            ctx.services.spool_down.store(false, Ordering::Relaxed);
            apply_runners(ctx);
            info!("svc: spool up");
            Ok("spool up: injection and delivery resumed".into())
        }
        Service::Ram => Ok(runner_up(ctx, Runner::Ram)),
        Service::Bounce => Ok(runner_up(ctx, Runner::Bounce)),
        Service::Disk => Ok(runner_up(ctx, Runner::Disk)),
    }
}

/// `svc down` of one SMTP role's listener: it stops accepting and
/// closes its sockets; open sessions go on.
async fn listener_down(ctx: &Context, role: Role) -> String {
    let name = role.name();
    let loops = ctx.services.smtp[role.index()].lock().take();
    if let Some(loops) = loops {
        loops.stop().await;
    }
    ctx.sockets.close(Kind::Smtp(role));
    ctx.services.smtp_down[role.index()].store(true, Ordering::Relaxed);
    info!("svc: {name} down (not listening; open sessions go on)");
    format!("{name} down: not listening; open sessions go on")
}

/// `svc up` of one SMTP role's listener: its addresses bound again.
fn listener_up(ctx: &Arc<Context>, role: Role) -> Result<String> {
    let name = role.name();
    if ctx.services.smtp[role.index()].lock().is_some() {
        return Ok(format!("{name} already up"));
    }
    let listen = ctx.listen(role);
    if listen.is_empty() {
        bail!("{name} has no address to listen on (`[{name}] listen` is empty)");
    }
    ctx.sockets.reopen(Kind::Smtp(role), listen)?;
    spawn_smtp(ctx, role)?;
    ctx.services.smtp_down[role.index()].store(false, Ordering::Relaxed);
    info!("svc: {name} up");
    Ok(format!("{name} up: listening on {}", join(listen)))
}

/// `svc down` of one runner: it finishes the attempts under way (until
/// `shutdown.drain_timeout`) and starts none.
async fn runner_down(ctx: &Context, runner: Runner) -> String {
    let q = queue_of(runner);
    let name = runner.as_str();
    ctx.services.runner_down[index(q)].store(true, Ordering::Relaxed);
    apply_runners(ctx);
    let drained = wait_idle(ctx, &[q]).await;
    info!(runner = name, drained, "svc: runner down");
    format!(
        "{name} runner down{}",
        if drained {
            ""
        } else {
            " (attempts still finishing)"
        }
    )
}

/// `svc up` of one runner.
fn runner_up(ctx: &Context, runner: Runner) -> String {
    let q = queue_of(runner);
    let name = runner.as_str();
    ctx.services.runner_down[index(q)].store(false, Ordering::Relaxed);
    apply_runners(ctx);
    info!(runner = name, "svc: runner up");
    if ctx.services.spool_down() {
        format!("{name} runner up; it starts once the spool is up")
    } else {
        format!("{name} runner up")
    }
}

/// Waits (at most `shutdown.drain_timeout`) until the runners have no
/// attempt in flight; true when they got there.
async fn wait_idle(ctx: &Context, runners: &[QueueName]) -> bool {
    let limit = ctx.settings().config.shutdown.drain_timeout;
    let began = Instant::now();
    loop {
        let busy: u64 = ctx
            .generations
            .status()
            .iter()
            .filter(|r| runners.iter().any(|q| q.as_str() == r.name))
            .map(|r| r.in_flight)
            .sum();
        if busy == 0 {
            return true;
        }
        if began.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
