//! The threads that compute users-file password hashes: [`Hashers`].
//!
//! Not tokio's blocking pool: that pool does the spool's file work,
//! which must not wait behind a hash, and a hash is tens of milliseconds
//! of pure CPU (argon2id, on purpose), on a thread that can be given a
//! priority of its own.
//!
//! By default the threads run at mtad's own priority, as Dovecot's auth
//! processes do beside Postfix. With `[auth] hash_priority = "idle"`
//! they run under Linux's `SCHED_IDLE` policy: when any other thread of
//! the machine is ready to run (an SMTP session, the spool's flush, the
//! queue runners), it takes the CPU from a hash at once instead of
//! waiting out the hash's time slice. The price: on a machine whose
//! CPUs are busy with other work, a hash only gets the scraps (Linux
//! still gives an idle-policy thread a little time, so it never
//! starves), and a check may not get its turn in time (454 4.7.0, try
//! again): authentication yields to mail.
//!
//! There is one thread per check allowed at once (`[auth] max_checks`);
//! the verifier's semaphore decides who may hand a job in, so jobs never
//! queue here. The threads end when the [`Hashers`] is dropped (a
//! graceful restart with new settings) and their last jobs are done.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tracing::warn;

/// A hash to compute; it sends its own result.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of low-priority threads computing password hashes.
#[derive(Debug)]
pub(crate) struct Hashers {
    jobs: mpsc::Sender<Job>,
}

/// The job could not be handed in: the threads are gone.
#[derive(Debug)]
pub(crate) struct Closed;

impl Hashers {
    /// Starts `threads` threads (at least one), under `SCHED_IDLE` when
    /// `idle`.
    pub(crate) fn start(threads: usize, idle: bool) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("mta-auth-hash-{n}"))
                .spawn(move || {
                    if idle {
                        lowest_priority();
                    }
                    loop {
                        // The lock is held only while waiting for the
                        // next job, never while running one.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(mpsc::RecvError) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                warn!(error = %e, "could not start a password hashing thread");
            }
        }
        Hashers { jobs }
    }

    /// Runs `hash` on one of the threads and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        hash: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Closed> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The session may have given up; the hash is done anyway.
            let _ = done.send(hash());
        });
        self.jobs.send(job).map_err(|_| Closed)?;
        result.await.map_err(|_| Closed)
    }
}

/// Puts the calling thread under `SCHED_IDLE` (Linux); elsewhere, or if
/// refused, at the lowest nice value the process may take. Neither needs
/// a privilege: a thread may always lower its own priority.
fn lowest_priority() {
    #[cfg(target_os = "linux")]
    {
        use nix::libc;
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param for the call; pid 0 is
        // the calling thread, whose policy alone changes.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return;
        }
        warn!(
            error = %std::io::Error::last_os_error(),
            "could not put a password hashing thread under SCHED_IDLE; it runs at nice 19"
        );
    }
    // SAFETY: setpriority with PRIO_PROCESS and who 0 changes the
    // calling thread's nice value on Linux (the process's elsewhere).
    let _ = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_returns_their_results() {
        let hashers = Hashers::start(2, true);
        let (a, b) = tokio::join!(hashers.run(|| 2 + 2), hashers.run(|| "b"));
        assert_eq!(a.unwrap(), 4);
        assert_eq!(b.unwrap(), "b");
    }

    /// The threads run under SCHED_IDLE (Linux lets any thread lower its
    /// own priority, so this holds unprivileged too).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_threads_run_at_idle_priority() {
        let hashers = Hashers::start(1, true);
        let policy = hashers
            .run(|| unsafe { nix::libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, nix::libc::SCHED_IDLE);
        let normal = Hashers::start(1, false);
        let policy = normal
            .run(|| unsafe { nix::libc::sched_getscheduler(0) })
            .await
            .unwrap();
        assert_eq!(policy, nix::libc::SCHED_OTHER);
        // The caller's own thread is untouched.
        assert_eq!(
            unsafe { nix::libc::sched_getscheduler(0) },
            nix::libc::SCHED_OTHER
        );
    }
}
