//! The open loop (`--rate`): session `i` (0-based) is due at `start + i /
//! rate`, whatever happened to the earlier ones, and sends one message.
//!
//! A closed loop slows down with the server, so a slow server is offered
//! less load and its latency looks better than a client at a fixed
//! arrival rate would see ("coordinated omission"). Here the starts keep
//! to the clock; only the cap on open sessions (`--sessions`) can hold
//! one back, and each start that had to wait for a free session is
//! counted (`late_starts`), with the latest any start came after its due
//! time (`max_start_delay`), so a report shows when the offered load was
//! not what was asked.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::session::{session, SessionStats, Shared};

/// When session `i` is due, `rate` sessions per second from `start`.
pub fn due(start: Instant, rate: f64, i: u64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// Runs `opts.messages` one-message sessions at `opts.rate` a second.
pub(crate) async fn run(shared: Arc<Shared>) -> SessionStats {
    let opts = &shared.opts;
    let rate = opts.rate.expect("open loop needs a rate");
    let deadline = shared.deadline;
    let open = Arc::new(Semaphore::new(opts.sessions as usize));
    let mut tasks = JoinSet::new();
    let mut total = SessionStats::default();
    let start = Instant::now();
    for i in 0..opts.messages {
        let due = due(start, rate, i);
        if due >= deadline {
            total.timed_out = true;
            total.unsent += opts.messages - i;
            break;
        }
        sleep_until(due).await;
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                total.late_starts += 1;
                match timeout_at(deadline, open.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        total.timed_out = true;
                        total.unsent += opts.messages - i;
                        break;
                    }
                }
            }
        };
        total.max_start_delay = total
            .max_start_delay
            .max(Instant::now().saturating_duration_since(due));
        let shared = shared.clone();
        tasks.spawn(async move {
            let stats = session(shared, i + 1, 1).await;
            drop(permit);
            stats
        });
        // Fold in the finished ones as we go: memory stays flat however
        // long the run.
        while let Some(done) = tasks.try_join_next() {
            fold(&mut total, done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        fold(&mut total, done);
    }
    total
}

fn fold(total: &mut SessionStats, done: Result<SessionStats, tokio::task::JoinError>) {
    match done {
        Ok(stats) => total.merge(stats),
        Err(e) => total.lost_task(1, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_keep_to_the_clock() {
        let start = Instant::now();
        assert_eq!(due(start, 50.0, 0), start);
        assert_eq!(due(start, 50.0, 1), start + Duration::from_millis(20));
        assert_eq!(due(start, 50.0, 150), start + Duration::from_secs(3));
        assert_eq!(due(start, 0.5, 3), start + Duration::from_secs(6));
    }
}
