//! Start-up and stop: the order in which the parts come up and go down.
//!
//! Up: spool (recovering after a crash), TLS, listening sockets, control
//! socket, PID file, then the `ready` announcement. Down (a clean stop):
//! stop listening, let open sessions finish their transaction until the
//! deadline, tell the rest `421`, close the spool (index flushed, clean
//! marker written), remove the PID file and the control socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use mta_config::Config;
use mta_queue::Queue;
use mta_smtp::{Admission, SessionConfig};
use mta_spool::{OpenReport, Spool, SpoolConfig};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::control::ControlSocket;
use crate::pidfile::PidFile;
use crate::stats::Stats;

/// What every session and the control socket share.
pub struct Context {
    pub hostname: String,
    pub session_config: Arc<SessionConfig>,
    pub admission: Arc<Admission>,
    pub spool: Spool,
    pub spool_report: OpenReport,
    pub queue: Queue,
    pub stats: Stats,
    pub idle_timeout: Duration,
    pub tls: Option<TlsAcceptor>,
    pub connection_slots: Arc<Semaphore>,
    pub listen: Vec<SocketAddr>,
    pub control_path: PathBuf,
}

/// The stop, passed to every task rather than kept in a global.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Someone asked for a stop (signal or control socket).
    pub requested: CancellationToken,
    /// The stop has begun: no new connections; idle sessions get 421.
    pub stopping: CancellationToken,
    /// The deadline passed: every session gets 421 now.
    pub deadline: CancellationToken,
    /// The sessions are done: the listening sockets close.
    pub listeners_closed: CancellationToken,
}

/// Runs the daemon until it is stopped.
pub fn run(config: Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    std::fs::create_dir_all(&config.queue_dir)
        .with_context(|| format!("creating queue directory {}", config.queue_dir.display()))?;
    let spool_config = SpoolConfig {
        dir: config.queue_dir.clone(),
        min_free_space: config.spool.min_free_space.bytes(),
        max_batch: config.spool.max_batch,
    };
    let (spool, report) = tokio::task::spawn_blocking(move || Spool::open(spool_config))
        .await
        .context("opening the spool")?
        .with_context(|| format!("opening the spool in {}", config.queue_dir.display()))?;
    info!(
        clean = report.clean,
        rescanned = report.rescanned,
        removed_tmp = report.removed_tmp,
        messages = report.messages,
        "spool open"
    );

    let tls = match (&config.tls.certificate, &config.tls.key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(crate::tls::server_config(cert, key)?)),
        _ => None,
    };

    let mut listeners = Vec::new();
    let mut listen = Vec::new();
    for addr in &config.smtp.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        listen.push(listener.local_addr().context("listening address")?);
        listeners.push(listener);
    }

    let mut http_listeners = Vec::new();
    let mut http_listen = Vec::new();
    for addr in &config.http.listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (http)"))?;
        http_listen.push(listener.local_addr().context("listening address")?);
        http_listeners.push(listener);
    }

    let control_path = config.control_socket();
    let control = ControlSocket::bind(&control_path)?;
    let pid_file = PidFile::write(&config.pid_file())?;

    let queue = Queue::start(&config, spool.clone()).context("starting the queue runners")?;
    let admission = Arc::new(Admission::default());
    admission.set_storage_ok(spool.has_free_space().unwrap_or(true));
    let ctx = Arc::new(Context {
        hostname: config.hostname.clone(),
        session_config: Arc::new(SessionConfig {
            hostname: config.hostname.clone(),
            max_message_size: config.smtp.max_message_size.bytes() as usize,
            max_recipients: config.smtp.max_recipients,
            max_command_line: config.smtp.max_command_line,
            max_line_length: config.smtp.max_line_length,
            max_errors: config.smtp.max_errors,
            tls_available: tls.is_some(),
            local_domains: config.smtp.local_domains.clone(),
            relay_networks: config.smtp.relay_networks.clone(),
        }),
        admission,
        spool,
        spool_report: report,
        queue,
        stats: Stats::new(),
        idle_timeout: config.smtp.idle_timeout,
        tls,
        connection_slots: Arc::new(Semaphore::new(config.smtp.max_connections)),
        listen: listen.clone(),
        control_path,
    });

    let shutdown = Shutdown::default();
    let sessions = TaskTracker::new();
    let mut acceptors = Vec::new();
    for listener in listeners {
        acceptors.push(tokio::spawn(crate::listener::accept_loop(
            listener,
            ctx.clone(),
            shutdown.clone(),
            sessions.clone(),
        )));
    }
    let control_task = {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { control.serve(ctx, shutdown).await })
    };
    let monitor = tokio::spawn(watch_free_space(
        ctx.clone(),
        config.spool.free_space_check_interval,
    ));

    // Signal handlers go in before the announcement: a TERM sent the
    // moment we say ready must still mean a clean stop.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut winch = signal(SignalKind::window_change()).context("SIGWINCH handler")?;
    let http_tasks: Vec<_> = http_listeners
        .into_iter()
        .map(|l| tokio::spawn(crate::http::serve(l, ctx.clone(), shutdown.clone())))
        .collect();
    for addr in &listen {
        println!("mtad: smtp listening on {addr}");
    }
    for addr in &http_listen {
        println!("mtad: http listening on {addr}");
    }
    println!("mtad: ready (pid {})", std::process::id());
    info!(listen = ?listen, "ready");

    // Apache httpd's discipline: TERM (and INT, Ctrl-C) stop now; WINCH,
    // like `mta-init stop`, stops gracefully. Either way nothing accepted
    // is lost and every retry schedule is on disk.
    let now = tokio::select! {
        _ = term.recv() => { info!("SIGTERM received: stopping now"); true }
        _ = int.recv() => { info!("SIGINT received: stopping now"); true }
        _ = winch.recv() => { info!("SIGWINCH received: stopping gracefully"); false }
        () = shutdown.requested.cancelled() => false,
    };

    // The stop, step by step. Stopping now is the same with no time given:
    // sessions hear 421 at once, attempts in flight are cut short and
    // count as deferred.
    let (deadline, drain) = if now {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (config.shutdown.timeout, config.shutdown.drain_timeout)
    };
    ctx.stats.begin_stop(deadline);
    info!(
        sessions = ctx.stats.sessions_open(),
        deadline_secs = deadline.as_secs_f64(),
        "stopping: new connections get 421"
    );
    shutdown.stopping.cancel();
    sessions.close();
    if tokio::time::timeout(deadline, sessions.wait())
        .await
        .is_err()
    {
        warn!(
            sessions = ctx.stats.sessions_open(),
            "stop deadline passed: closing the remaining sessions with 421"
        );
        shutdown.deadline.cancel();
        sessions.wait().await;
    }
    // The sessions are done: stop turning new connections away with 421
    // and close the listening sockets.
    shutdown.listeners_closed.cancel();
    for acceptor in acceptors {
        let _ = acceptor.await;
    }
    for task in http_tasks {
        let _ = task.await;
    }
    info!(
        in_flight = ctx.queue.in_flight(),
        "draining deliveries in flight"
    );
    ctx.queue.shutdown(drain).await;
    monitor.abort();
    let spool = ctx.spool.clone();
    tokio::task::spawn_blocking(move || spool.close())
        .await
        .context("closing the spool")?
        .context("closing the spool")?;
    control_task.abort();
    let _ = control_task.await;
    drop(pid_file);
    info!(accepted = ctx.stats.accepted_total(), "stopped cleanly");
    Ok(())
}

/// Keeps the free-space floor up to date: below it, MAIL gets `452 4.3.1`
/// until space returns.
async fn watch_free_space(ctx: Arc<Context>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let spool = ctx.spool.clone();
        let ok = tokio::task::spawn_blocking(move || spool.has_free_space())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(true);
        if ok != ctx.admission.storage_ok() {
            if ok {
                info!("free space is back above the floor: accepting mail again");
            } else {
                warn!("free space below spool.min_free_space: MAIL gets 452 4.3.1");
            }
        }
        ctx.admission.set_storage_ok(ok);
    }
}
