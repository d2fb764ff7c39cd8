//! Start-up and stop: the order in which the parts come up and go down.
//!
//! Up: what needs root first, when started as root: the queue directory
//! (created, its mode set, handed to mtad's user), the logs and Maildirs
//! handed over, TLS, listening sockets (bound, or taken over from the
//! image before a restart); then the switch to the configured user
//! (`privileges.rs`); then the spool (its rescan, when one is needed,
//! goes on in the background), control socket, PID file, queue runners,
//! and the `ready` announcement (and systemd's READY=1).
//!
//! Down, in the order: stop taking new work (new connections get
//! 421, or, when the stop is a restart, wait in the backlog), let open
//! sessions finish their transaction until the deadline and tell the rest
//! 421, drain the deliveries in flight until the drain deadline (volatile
//! messages spill to disk), close the spool (index flushed, clean marker
//! written), remove the control socket. A stop removes the PID file; a
//! restart keeps it and its process, and re-executes mtad with the
//! listening sockets inherited (`sockets.rs`).
//!
//! A spool that cannot save its index (a full disk) does not stop a stop
//! or a restart: the spool is closed without a clean marker, so the next
//! start rebuilds the index from the spool files; a stop then exits with
//! `EX_TEMPFAIL` (75) saying so, a restart goes on with the next image.
//! While running, the free-space check also reopens an index that failed
//! (`Spool::recover_index`) as soon as there is space for it.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use mta_config::{Config, Role};
use mta_queue::Queue;
use mta_smtp::Admission;
use mta_spool::Spool;
use parking_lot::RwLock;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::context::Context;
use crate::control::ControlSocket;
use crate::generations::Generations;
use crate::logfile::LogFile;
use crate::logging::LogLevel;
use crate::pidfile::PidFile;
use crate::service_table::Services;
use crate::settings::{Fixed, Settings, StopDeadlines};
use crate::shutdown::{Order, Shutdown, StopKind};
use crate::sockets::{Inherited, Kind, Sockets};
use crate::stats::Stats;

/// What the command line and the environment gave this process image.
pub struct Startup {
    /// When the process began (`main`'s first step): the ready line says
    /// how long the start took, and how much of it opening the spool.
    pub started: Instant,
    /// The configuration file (None: built-in defaults).
    pub config_path: Option<PathBuf>,
    /// The daemon log, when mtad writes its own (`--log-file`).
    pub log_file: Option<LogFile>,
    /// Listening sockets inherited from the image before a restart, or
    /// from systemd.
    pub inherited: Inherited,
    /// Changes the log level on a reload.
    pub log_level: LogLevel,
}

/// How `run` ended.
pub enum Exit {
    /// Stopped for good; the spool is closed, cleanly or not.
    Stopped {
        /// The queue index could not be saved (why): the next start
        /// rebuilds it from the spool files.
        index_not_saved: Option<String>,
    },
    /// Stopped for a restart: these sockets go to the next image.
    Restart(Vec<(Kind, std::net::TcpListener)>),
}

/// Runs the daemon until it is stopped or restarts.
pub fn run(config: Config, startup: Startup) -> Result<Exit> {
    let slice = config.time_slice;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || crate::time_slice::request_for_this_thread(slice))
        .build()
        .context("starting the async runtime")?;
    let exit = runtime.block_on(serve(config, startup));
    // Tasks still parked (an HTTP keep-alive, a stray control request)
    // must not hold the exit or the exec up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    exit
}

async fn serve(config: Config, startup: Startup) -> Result<Exit> {
    let Startup {
        started,
        config_path,
        log_file,
        mut inherited,
        log_level,
    } = startup;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    // While still root (when started as root): the queue directory, the
    // logs and the Maildirs become the user's to be, the TLS key is read,
    // the listening sockets are bound. Then mtad switches users for good,
    // and everything after is created as that user (`privileges.rs`).
    let identity = crate::privileges::Identity::resolve(&config)?;
    identity.prepare_files(&config, log_file.as_ref().map(LogFile::path))?;
    let local_submission = crate::local_submit::prepare(&config, &identity);

    let config = Arc::new(config);
    let (auth, auth_plan) = crate::auth::Auth::start(&config)?;
    let settings = Settings::new(config.clone(), auth_plan)?;
    let fixed = Fixed::new(&config);

    let sockets = Sockets::default();
    let mut listen: [Vec<std::net::SocketAddr>; 3] = Default::default();
    for role in Role::ALL {
        listen[role.index()] = sockets.open(
            Kind::Smtp(role),
            &fixed.smtp_listen[role.index()],
            &mut inherited,
        )?;
    }
    let http_listen = sockets.open(Kind::Http, &fixed.http_listen, &mut inherited)?;
    if inherited.len() > 0 {
        warn!(
            unclaimed = inherited.len(),
            "inherited listening sockets match no configured address; closing them"
        );
    }
    drop(inherited);

    identity.switch()?;

    let spool_config = fixed.spool.clone();
    let opening = Instant::now();
    let (spool, report) = tokio::task::spawn_blocking(move || Spool::open(spool_config))
        .await
        .context("opening the spool")?
        .with_context(|| format!("opening the spool in {}", fixed.spool.dir.display()))?;
    info!(
        clean = report.clean,
        rescan = report.rescan,
        removed_tmp = report.removed_tmp,
        messages = report.messages,
        index_unavailable = report.index_unavailable,
        "spool open"
    );
    let spool_open_ms = opening.elapsed().as_millis() as u64;

    let control_path = fixed.control_socket.clone();
    let control = ControlSocket::bind(&control_path, identity.group())?;
    let pid_file = PidFile::write(&fixed.pid_file)?;

    let queue = Queue::start(
        crate::settings::queue(&config, settings.dkim.clone()),
        spool.clone(),
    )
    .context("starting the queue runners")?;
    let admission = Arc::new(Admission::default());
    admission.set_storage_ok(
        spool.has_free_space().unwrap_or(true) && spool.index_health().failed.is_none(),
    );
    let (orders, mut order_rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        admission,
        spool,
        spool_report: report,
        stats: Stats::new(),
        client_limits: Default::default(),
        auth,
        listen: listen.clone(),
        http_listen: http_listen.clone(),
        control_path,
        config_path,
        log_file,
        log_level,
        instance: instance_name(),
        sockets,
        services: Services::default(),
        generations: Arc::new(Generations::new(queue)),
        reloads: AtomicU64::new(0),
        orders,
        settings: RwLock::new(Arc::new(settings)),
    });

    let shutdown = Shutdown::default();
    let sessions = TaskTracker::new();
    crate::services::start_smtp(&ctx, &shutdown, &sessions)
        .context("starting the SMTP listener")?;
    crate::services::start_http(&ctx, &shutdown).context("starting the HTTP server")?;
    crate::local_submit::start(&ctx, &shutdown, &sessions, local_submission);
    let control_task = {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let sessions = sessions.clone();
        tokio::spawn(async move { control.serve(ctx, shutdown, sessions).await })
    };
    let monitor = tokio::spawn(watch_free_space(
        ctx.clone(),
        fixed.free_space_check_interval,
    ));

    // Signal handlers go in before the announcement: a TERM sent the
    // moment we say ready must still mean a clean stop.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut winch = signal(SignalKind::window_change()).context("SIGWINCH handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    for role in Role::ALL {
        for addr in &listen[role.index()] {
            println!("mtad: {} listening on {addr}", role.name());
        }
    }
    for addr in &http_listen {
        println!("mtad: http listening on {addr}");
    }
    println!("mtad: ready (pid {})", std::process::id());
    info!(
        listen = ?listen,
        instance = %ctx.instance,
        startup_ms = started.elapsed().as_millis() as u64,
        spool_open_ms,
        "ready"
    );
    let _ = crate::notify::ready("accepting mail");

    // Apache httpd's discipline: TERM (and INT, Ctrl-C) stop now; WINCH
    // stops gracefully; HUP restarts now; USR1 restarts gracefully (a
    // reload in place). `mta-init` sends the same orders over the control
    // socket.
    let order = loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM received: stopping now"); break Order::Stop(StopKind::Now) }
            _ = int.recv() => { info!("SIGINT received: stopping now"); break Order::Stop(StopKind::Now) }
            _ = winch.recv() => { info!("SIGWINCH received: stopping gracefully"); break Order::Stop(StopKind::Graceful) }
            _ = hup.recv() => {
                info!("SIGHUP received: restarting now");
                match crate::reload::check_config(&ctx) {
                    Ok(_) => break Order::Restart(StopKind::Now),
                    Err(e) => error!("restart refused, still running with the old configuration: {e:#}"),
                }
            }
            _ = usr1.recv() => {
                info!("SIGUSR1 received: graceful restart");
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::reload::reload(&ctx).await {
                        error!("graceful restart refused, still running with the old configuration: {e:#}");
                    }
                });
            }
            Some(order) = order_rx.recv() => break order,
        }
    };

    let (kind, restart) = match order {
        Order::Stop(kind) => (kind, false),
        Order::Restart(kind) => (kind, true),
    };
    if restart {
        let _ = crate::notify::reloading();
        shutdown.handover.cancel();
    } else {
        let _ = crate::notify::stopping();
    }
    let index_not_saved = stop(&ctx, &shutdown, &sessions, fixed.stop, kind).await?;
    monitor.abort();
    control_task.abort();
    let _ = control_task.await;
    if restart {
        // The same process goes on: the PID file stays right.
        std::mem::forget(pid_file);
        info!(
            accepted = ctx.stats.accepted_total(),
            "stopped for a restart; handing the listening sockets over"
        );
        Ok(Exit::Restart(ctx.sockets.take_all()))
    } else {
        drop(pid_file);
        match &index_not_saved {
            None => info!(accepted = ctx.stats.accepted_total(), "stopped cleanly"),
            Some(e) => {
                warn!(accepted = ctx.stats.accepted_total(), error = %e, "stopped, but the queue index was not saved; the next start rebuilds it from the spool files")
            }
        }
        Ok(Exit::Stopped { index_not_saved })
    }
}

/// The stop, step by step. Returns why the queue index could not be
/// saved, if it could not.
async fn stop(
    ctx: &Arc<Context>,
    shutdown: &Shutdown,
    sessions: &TaskTracker,
    deadlines: StopDeadlines,
    kind: StopKind,
) -> Result<Option<String>> {
    let began = Instant::now();
    let (deadline, drain) = deadlines.for_kind(kind);
    ctx.stats.begin_stop(deadline);
    info!(
        sessions = ctx.stats.sessions_open(),
        deadline_secs = deadline.as_secs_f64(),
        ?kind,
        restart = shutdown.handover.is_cancelled(),
        "stopping: no new sessions"
    );
    // 1. Pause injection.
    shutdown.listen_end.cancel();
    if kind != StopKind::Graceful {
        shutdown.stopping.cancel();
    }
    sessions.close();
    if tokio::time::timeout(deadline, sessions.wait())
        .await
        .is_err()
    {
        warn!(
            sessions = ctx.stats.sessions_open(),
            "stop deadline passed: closing the remaining sessions with 421"
        );
        shutdown.stopping.cancel();
        shutdown.deadline.cancel();
        sessions.wait().await;
    }
    // The sessions are done: stop turning new connections away with 421
    // (a restart keeps the sockets for the next image).
    shutdown.listeners_closed.cancel();
    crate::services::stop_listeners(ctx).await;
    if !shutdown.handover.is_cancelled() {
        ctx.sockets.take_all();
    }
    // 2 and 3. Drain deliveries in flight; volatile messages spill.
    let drain = match kind {
        StopKind::Graceful => deadline.saturating_sub(began.elapsed()),
        _ => drain,
    };
    info!(
        in_flight = ctx.generations.in_flight(),
        drain_secs = drain.as_secs_f64(),
        "draining deliveries in flight"
    );
    let _ = crate::notify::status(&format!(
        "stopping: draining {} deliveries in flight",
        ctx.generations.in_flight()
    ));
    ctx.generations.shutdown(drain).await;
    // 4. Schedules are in the index as they change; closing flushes what
    // changed since the last flush and marks the stop clean. An index
    // that cannot be saved (a full disk) leaves no clean marker: the spool
    // files are the truth, and the next start rebuilds the index from
    // them. The stop (or restart) goes on either way.
    let spool = ctx.spool.clone();
    let closed = tokio::task::spawn_blocking(move || spool.close())
        .await
        .context("closing the spool")?;
    let not_saved = match closed {
        Ok(()) => {
            info!(elapsed_secs = began.elapsed().as_secs_f64(), "queue saved");
            None
        }
        Err(e) => {
            error!(error = %e, "the queue index could not be saved; the spool files are kept, and the next start rebuilds the index from them");
            Some(e.to_string())
        }
    };
    // Nothing is attempted, spilled or saved any more: the stop's figures
    // are final, for the client that asked for it.
    if let Some(mut report) = crate::status::stop_progress(ctx) {
        report.index_not_saved = not_saved.clone();
        ctx.stats
            .publish_stop_report(report, Duration::from_secs(2))
            .await;
    }
    Ok(not_saved)
}

/// A name for this process image: the pid alone does not change across a
/// restart.
fn instance_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

/// Keeps the free-space floor up to date: below it, MAIL gets `452 4.3.1`
/// until space returns. A queue index that failed (a write to it did not
/// reach a full disk) refuses mail the same way, and is reopened here as
/// soon as the free space is back above the floor.
async fn watch_free_space(ctx: Arc<Context>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let spool = ctx.spool.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let space = spool.has_free_space().unwrap_or(true);
            if space && spool.index_health().failed.is_some() {
                if let Err(e) = spool.recover_index() {
                    debug!(error = %e, "the queue index cannot be reopened yet");
                }
            }
            space && spool.index_health().failed.is_none()
        })
        .await
        .unwrap_or(true);
        if ok != ctx.admission.storage_ok() {
            if ok {
                info!("free space is back above the floor and the queue index in service: accepting mail again");
            } else {
                warn!("free space below spool.min_free_space, or the queue index out of service: MAIL gets 452 4.3.1");
            }
        }
        ctx.admission.set_storage_ok(ok);
    }
}
