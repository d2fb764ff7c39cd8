//! The load loop. Two ways to drive it. Closed loop (the default):
//! `sessions` connections, each sending its share of the messages as fast
//! as the server answers. Open loop (`rate`, `open_loop.rs`): a new
//! connection every 1/`rate` seconds, one message each, whatever the
//! server's pace, at most `sessions` open at once; that is what a latency
//! under a fixed offered load needs. What one session does is
//! `session.rs`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::message::{rfc5322_date, MessageSpec};
use crate::options::Options;
use crate::report::Report;
use crate::session::{session, SessionStats, Shared};

/// Runs the load described by `opts` and reports. Fails only if the
/// options are invalid (e.g. a non-loopback server) or TLS cannot be set
/// up; everything that goes wrong on the wire is counted in the report.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    opts.validate().map_err(anyhow::Error::msg)?;
    let tls = if opts.tls.is_tls() {
        Some(TlsConnector::from(crate::tls::client_config()?))
    } else {
        None
    };
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let now = SystemTime::now();
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let spec = MessageSpec {
        from: opts.from.clone(),
        to_domain: opts.to_domain.clone(),
        rcpts: opts.rcpts,
        size: opts.size,
        date: rfc5322_date(now),
        id_domain: opts.ehlo.clone(),
        id_tag: format!("{}.{nanos}", std::process::id()),
    };
    let shared = Arc::new(Shared::new(opts.clone(), spec, tls, deadline));

    let total = if opts.rate.is_some() {
        crate::open_loop::run(shared).await
    } else {
        closed_loop(shared).await
    };
    Ok(total.into_report(opts, started))
}

/// `sessions` sessions, each with its share of the messages.
async fn closed_loop(shared: Arc<Shared>) -> SessionStats {
    let opts = &shared.opts;
    let mut tasks = Vec::new();
    let mut first_seq = 1;
    for i in 0..opts.sessions {
        let count = opts.share(i);
        if count == 0 {
            continue;
        }
        tasks.push((
            count,
            tokio::spawn(session(shared.clone(), first_seq, count)),
        ));
        first_seq += count;
    }

    let mut total = SessionStats::default();
    for (count, task) in tasks {
        match task.await {
            Ok(stats) => total.merge(stats),
            Err(e) => total.lost_task(count, &e),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn run_refuses_non_loopback() {
        let o = Options {
            server: "192.0.2.1:25".parse().unwrap(),
            ..Options::default()
        };
        let err = run(&o).await.unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
