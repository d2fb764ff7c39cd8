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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use mta_spool::QueueName;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::server::{Context, Shutdown};
use crate::sockets::Kind;

const RUNNERS: [QueueName; 3] = [QueueName::Ram, QueueName::Bounce, QueueName::Disk];

/// The accept loops (or HTTP server tasks) of one service.
struct Loops {
    down: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Loops {
    async fn stop(self) {
        self.down.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[derive(Default)]
pub struct Services {
    injection_paused: AtomicBool,
    smtp_down: AtomicBool,
    http_down: AtomicBool,
    spool_down: AtomicBool,
    /// `svc down` per runner, ram, bounce, disk.
    runner_down: [AtomicBool; 3],
    /// `pause delivery` per runner.
    runner_paused: [AtomicBool; 3],
    smtp: Mutex<Option<Loops>>,
    http: Mutex<Option<Loops>>,
    /// What restarting the listener needs.
    smtp_with: Mutex<Option<(Shutdown, TaskTracker)>>,
    http_with: Mutex<Option<Shutdown>>,
    /// One change at a time (svc, pause, reload).
    pub changing: tokio::sync::Mutex<()>,
}

/// A service's state for the status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Paused,
    /// Running, short of what it needs.
    Degraded,
}

/// Why the spool is degraded, if it is: its index is out of service
/// (a write to it failed; it is reopened once space is back), or free
/// space is below `spool.min_free_space`. Either way new mail gets
/// `452 4.3.1`.
pub fn spool_trouble(ctx: &Context) -> Option<String> {
    if let Some(failed) = ctx.spool.index_health().failed {
        let secs = crate::server::unix_now().saturating_sub(failed.since_unix_ms / 1000);
        return Some(format!(
            "queue index out of service for {secs} s ({}): new mail gets 452 4.3.1 and the disk queue waits; it is reopened {}",
            failed.cause,
            if failed.no_space {
                "once space is back"
            } else {
                "at the next free-space check"
            }
        ));
    }
    if !ctx.admission.storage_ok() {
        return Some("free space below spool.min_free_space: new mail gets 452 4.3.1".into());
    }
    None
}

impl Services {
    /// New connections are turned away with 421.
    pub fn injection_blocked(&self) -> bool {
        self.injection_paused.load(Ordering::Relaxed) || self.spool_down()
    }

    pub fn spool_down(&self) -> bool {
        self.spool_down.load(Ordering::Relaxed)
    }

    pub fn smtp_state(&self) -> State {
        if self.smtp_down.load(Ordering::Relaxed) {
            State::Down
        } else if self.injection_blocked() {
            State::Paused
        } else {
            State::Up
        }
    }

    pub fn http_state(&self) -> State {
        if self.http_down.load(Ordering::Relaxed) {
            State::Down
        } else {
            State::Up
        }
    }

    pub fn spool_state(&self, ctx: &Context) -> State {
        if self.spool_down() {
            State::Down
        } else if spool_trouble(ctx).is_some() {
            State::Degraded
        } else {
            State::Up
        }
    }

    pub fn runner_state(&self, queue: QueueName) -> State {
        let i = index(queue);
        if self.runner_down[i].load(Ordering::Relaxed) || self.spool_down() {
            State::Down
        } else if self.runner_paused[i].load(Ordering::Relaxed) {
            State::Paused
        } else {
            State::Up
        }
    }

    /// Starts the SMTP accept loops on the registered sockets.
    pub fn start_smtp(
        &self,
        ctx: &Arc<Context>,
        shutdown: &Shutdown,
        sessions: &TaskTracker,
    ) -> Result<()> {
        *lock(&self.smtp_with) = Some((shutdown.clone(), sessions.clone()));
        self.spawn_smtp(ctx)
    }

    fn spawn_smtp(&self, ctx: &Arc<Context>) -> Result<()> {
        let Some((shutdown, sessions)) = lock(&self.smtp_with).clone() else {
            bail!("the listener was never started");
        };
        let down = CancellationToken::new();
        let tasks = ctx
            .sockets
            .duplicates(Kind::Smtp)?
            .into_iter()
            .map(|l| {
                tokio::spawn(crate::listener::accept_loop(
                    l,
                    ctx.clone(),
                    shutdown.clone(),
                    sessions.clone(),
                    down.clone(),
                ))
            })
            .collect();
        *lock(&self.smtp) = Some(Loops { down, tasks });
        Ok(())
    }

    /// Starts the HTTP server on the registered sockets.
    pub fn start_http(&self, ctx: &Arc<Context>, shutdown: &Shutdown) -> Result<()> {
        *lock(&self.http_with) = Some(shutdown.clone());
        self.spawn_http(ctx)
    }

    fn spawn_http(&self, ctx: &Arc<Context>) -> Result<()> {
        let Some(shutdown) = lock(&self.http_with).clone() else {
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
        *lock(&self.http) = Some(Loops { down, tasks });
        Ok(())
    }

    /// At the end of a stop: waits for the accept loops (they end with
    /// the stop) and stops the HTTP server.
    pub async fn stop_listeners(&self) {
        let smtp = lock(&self.smtp).take();
        if let Some(loops) = smtp {
            for task in loops.tasks {
                let _ = task.await;
            }
        }
        let http = lock(&self.http).take();
        if let Some(loops) = http {
            loops.stop().await;
        }
    }

    /// `pause injection` / `resume injection`.
    pub fn set_injection_paused(&self, paused: bool) {
        self.injection_paused.store(paused, Ordering::Relaxed);
        info!(
            paused,
            "injection {}",
            if paused { "paused" } else { "resumed" }
        );
    }

    /// `pause delivery` / `resume delivery` for some runners.
    pub fn set_delivery_paused(&self, ctx: &Context, runners: &[QueueName], paused: bool) {
        for &q in runners {
            self.runner_paused[index(q)].store(paused, Ordering::Relaxed);
        }
        self.apply_runners(ctx);
    }

    /// Makes each runner's pause switch match the states that hold it.
    fn apply_runners(&self, ctx: &Context) {
        let queue = ctx.queue();
        for q in RUNNERS {
            if self.runner_state(q) == State::Up {
                queue.resume(q);
            } else {
                queue.pause(q);
            }
        }
    }

    /// `svc down|up|restart SERVICE`; returns what was done.
    pub async fn svc(
        &self,
        ctx: &Arc<Context>,
        action: mta_control::SvcAction,
        service: &str,
    ) -> Result<String> {
        use mta_control::SvcAction::*;
        let _one_at_a_time = self.changing.lock().await;
        match action {
            Down => self.down(ctx, service).await,
            Up => self.up(ctx, service),
            Restart => {
                let down = self.down(ctx, service).await?;
                let up = self.up(ctx, service)?;
                Ok(format!("{down}; {up}"))
            }
        }
    }

    async fn down(&self, ctx: &Arc<Context>, service: &str) -> Result<String> {
        match service {
            "smtp" => {
                let loops = lock(&self.smtp).take();
                if let Some(loops) = loops {
                    loops.stop().await;
                }
                ctx.sockets.close(Kind::Smtp);
                self.smtp_down.store(true, Ordering::Relaxed);
                info!("svc: smtp down (not listening; open sessions go on)");
                Ok("smtp down: not listening; open sessions go on".into())
            }
            "http" => {
                let loops = lock(&self.http).take();
                if let Some(loops) = loops {
                    loops.stop().await;
                }
                ctx.sockets.close(Kind::Http);
                self.http_down.store(true, Ordering::Relaxed);
                info!("svc: http down");
                Ok("http down".into())
            }
            "spool" => {
                self.spool_down.store(true, Ordering::Relaxed);
                self.apply_runners(ctx);
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
            name => {
                let q = runner(name)?;
                let name = q.as_str();
                self.runner_down[index(q)].store(true, Ordering::Relaxed);
                self.apply_runners(ctx);
                let drained = wait_idle(ctx, &[q]).await;
                info!(runner = name, drained, "svc: runner down");
                Ok(format!(
                    "{name} runner down{}",
                    if drained {
                        ""
                    } else {
                        " (attempts still finishing)"
                    }
                ))
            }
        }
    }

    fn up(&self, ctx: &Arc<Context>, service: &str) -> Result<String> {
        match service {
            "smtp" => {
                if lock(&self.smtp).is_some() {
                    return Ok("smtp already up".into());
                }
                ctx.sockets.reopen(Kind::Smtp, &ctx.listen)?;
                self.spawn_smtp(ctx)?;
                self.smtp_down.store(false, Ordering::Relaxed);
                info!("svc: smtp up");
                Ok(format!("smtp up: listening on {}", join(&ctx.listen)))
            }
            "http" => {
                if lock(&self.http).is_some() {
                    return Ok("http already up".into());
                }
                ctx.sockets.reopen(Kind::Http, &ctx.http_listen)?;
                self.spawn_http(ctx)?;
                self.http_down.store(false, Ordering::Relaxed);
                info!("svc: http up");
                Ok(format!("http up: listening on {}", join(&ctx.http_listen)))
            }
            "spool" => {
                self.spool_down.store(false, Ordering::Relaxed);
                self.apply_runners(ctx);
                info!("svc: spool up");
                Ok("spool up: injection and delivery resumed".into())
            }
            name => {
                let q = runner(name)?;
                let name = q.as_str();
                self.runner_down[index(q)].store(false, Ordering::Relaxed);
                self.apply_runners(ctx);
                info!(runner = name, "svc: runner up");
                Ok(if self.spool_down() {
                    format!("{name} runner up; it starts once the spool is up")
                } else {
                    format!("{name} runner up")
                })
            }
        }
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

/// The runner a service name means.
pub fn runner(name: &str) -> Result<QueueName> {
    Ok(match name.strip_suffix("-runner").unwrap_or(name) {
        "ram" => QueueName::Ram,
        "bounce" => QueueName::Bounce,
        "disk" => QueueName::Disk,
        other => {
            bail!("no service {other:?}: the services are smtp, http, spool, ram, bounce and disk")
        }
    })
}

fn index(q: QueueName) -> usize {
    match q {
        QueueName::Ram => 0,
        QueueName::Bounce => 1,
        // Held messages have no runner: released, the disk runner takes
        // them.
        QueueName::Disk | QueueName::Held => 2,
    }
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
