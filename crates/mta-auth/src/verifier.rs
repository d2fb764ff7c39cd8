//! The password check the SMTP session calls once SASL has given it a
//! user name (authcid) and a password: [`Verifier::verify`].
//!
//! Two backends ([`Backend`]): our own users file, where the check is a
//! password hash run on threads of its own (`hashers.rs`), at most
//! [`VerifierSettings::max_checks`] at once; or a Dovecot, asked over its
//! `auth-client` socket (see `dovecot.rs`), where the hashing is
//! Dovecot's. A graceful restart hands in a new backend with
//! [`Verifier::reload`]; checks already running finish on the old one.
//!
//! Why a limit of concurrent hash checks, default one per two cores (so
//! one on a 2-core machine): each check of a users-file hash is tens of
//! milliseconds of a core and, for argon2, its memory. An AUTH flood from
//! many connections must not take every core (the relaying, the queue
//! runners and the TLS handshakes of honest clients need them), nor
//! stall the runtime's threads (the hashes run on threads of their own,
//! not on a worker). Checks beyond the limit wait for their turn, first come
//! first served, for at most [`VerifierSettings::max_wait`] (1 s by
//! default); one that cannot start by then is "unavailable" (the SMTP
//! layer says 454 4.7.0, try later). The wait is short on purpose: under
//! a flood the line would otherwise grow until each waiter spent the
//! whole `timeout` in it, holding its connection, and a check that got
//! its turn near the end would be hashed for a session that had already
//! answered 454. With the wait well inside the timeout, every check that
//! starts is one its session still waits for. The permit goes with the
//! hash onto its thread, so a client that hangs up mid-check
//! does not free its slot before its hash is done.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Semaphore;

use crate::dovecot::{authenticate, Answer};
use crate::hashers::{Closed, Hashers};
use crate::new_hash::MAX_PASSWORD_LEN;
use crate::users_file::UsersFile;

/// Where passwords are checked.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Our users file, loaded.
    UsersFile(Arc<UsersFile>),
    /// A Dovecot's authentication service, at its `auth-client` socket.
    Dovecot {
        /// The Unix socket, e.g. `/run/dovecot/auth-client`.
        socket: PathBuf,
    },
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right.
    Accepted {
        /// Who the user is: the name as the users file writes it, or as
        /// Dovecot returns it.
        user: String,
    },
    /// A wrong password or an unknown user (not told apart on purpose).
    Rejected,
    /// The check could not be made now (busy, Dovecot down or slow): a
    /// temporary failure, 454 4.7.0 in SMTP (RFC 4954 section 6).
    Unavailable(String),
}

/// How checks are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierSettings {
    /// Users-file hash checks at once; default: half the cores, at least
    /// one (see the module documentation). 0 is taken as 1.
    pub max_checks: usize,
    /// The longest a check may take, waiting for its turn included; past
    /// it the verdict is [`Verdict::Unavailable`]. Default 10 s: above
    /// Dovecot's 2 s failure delay and a few queued checks, below the
    /// patience of a mail client (RFC 5321 section 4.5.3.2's shortest
    /// client timeout is 2 minutes, but users are less patient).
    pub timeout: Duration,
    /// The longest a users-file check waits for its turn (capped by
    /// `timeout`); past it the verdict is [`Verdict::Unavailable`] at
    /// once. Default 1 s: dozens of checks' time even with argon2id,
    /// which an honest burst of logins does not exceed.
    pub max_wait: Duration,
    /// Users-file hashes run under `SCHED_IDLE` (see `hashers.rs`);
    /// false (the default): at the priority of the rest of the process.
    pub idle_priority: bool,
}

impl Default for VerifierSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        VerifierSettings {
            max_checks: (cores / 2).max(1),
            timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(1),
            idle_priority: false,
        }
    }
}

/// Counts of verdicts, for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifierCounts {
    /// [`Verdict::Accepted`].
    pub accepted: u64,
    /// [`Verdict::Rejected`].
    pub rejected: u64,
    /// [`Verdict::Unavailable`].
    pub unavailable: u64,
}

/// What one configuration generation checks with.
#[derive(Debug)]
struct Generation {
    backend: Backend,
    settings: VerifierSettings,
    permits: Arc<Semaphore>,
    /// Where users-file hashes run (none for Dovecot).
    hashers: Option<Hashers>,
    /// Hashes running now, and the most seen at once (for the tests).
    #[cfg(test)]
    running: AtomicU64,
    #[cfg(test)]
    peak: AtomicU64,
}

/// Checks passwords; shared by every SMTP session, swapped at reload.
#[derive(Debug)]
pub struct Verifier {
    current: RwLock<Arc<Generation>>,
    request_ids: AtomicU32,
    accepted: AtomicU64,
    rejected: AtomicU64,
    unavailable: AtomicU64,
}

impl Verifier {
    /// A verifier with this backend and these settings.
    pub fn new(backend: Backend, settings: VerifierSettings) -> Self {
        Verifier {
            current: RwLock::new(Arc::new(Generation::new(backend, settings))),
            request_ids: AtomicU32::new(1),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        }
    }

    /// Uses a new backend and settings from now on (a graceful restart
    /// with a reloaded users file); checks under way finish with the old
    /// ones, and their hashes still count against the old limit only.
    pub fn reload(&self, backend: Backend, settings: VerifierSettings) {
        *self.current.write() = Arc::new(Generation::new(backend, settings));
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.current.read().backend.clone()
    }

    /// The verdicts so far.
    pub fn counts(&self) -> VerifierCounts {
        VerifierCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
        }
    }

    /// Checks `password` for `authcid` (the SASL authentication identity)
    /// from `client`; `secured`: the session is under TLS. Never longer
    /// than the settings' timeout.
    pub async fn verify(
        &self,
        authcid: &str,
        password: &[u8],
        client: IpAddr,
        secured: bool,
    ) -> Verdict {
        let generation = self.current.read().clone();
        let verdict = tokio::time::timeout(
            generation.settings.timeout,
            self.check(&generation, authcid, password, client, secured),
        )
        .await
        .unwrap_or_else(|_| Verdict::Unavailable("the check timed out".into()));
        let counter = match verdict {
            Verdict::Accepted { .. } => &self.accepted,
            Verdict::Rejected => &self.rejected,
            Verdict::Unavailable(_) => &self.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        verdict
    }

    async fn check(
        &self,
        generation: &Arc<Generation>,
        authcid: &str,
        password: &[u8],
        client: IpAddr,
        secured: bool,
    ) -> Verdict {
        // No right password is this long (none can be set), and no
        // authcid or password holds NUL (RFC 4616 separates with it):
        // refused before any work, whoever the user.
        if password.len() > MAX_PASSWORD_LEN || authcid.contains('\0') || password.contains(&0) {
            return Verdict::Rejected;
        }
        match &generation.backend {
            Backend::UsersFile(file) => {
                let wait = generation.settings.max_wait;
                let permit =
                    match tokio::time::timeout(wait, generation.permits.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) => return Verdict::Unavailable("the verifier is closed".into()),
                        Err(_) => {
                            return Verdict::Unavailable(format!(
                                "no turn to check within {} ms (busy)",
                                wait.as_millis()
                            ))
                        }
                    };
                let Some(hashers) = &generation.hashers else {
                    return Verdict::Unavailable("no hashing threads".into());
                };
                let file = Arc::clone(file);
                let authcid = authcid.to_owned();
                let password = password.to_vec();
                #[cfg(test)]
                let generation = Arc::clone(generation);
                let checked = hashers
                    .run(move || {
                        let _permit = permit;
                        #[cfg(test)]
                        {
                            let now = generation.running.fetch_add(1, Ordering::SeqCst) + 1;
                            generation.peak.fetch_max(now, Ordering::SeqCst);
                        }
                        let user = file.verify(&authcid, &password).map(str::to_owned);
                        #[cfg(test)]
                        generation.running.fetch_sub(1, Ordering::SeqCst);
                        user
                    })
                    .await;
                match checked {
                    Ok(Some(user)) => Verdict::Accepted { user },
                    Ok(None) => Verdict::Rejected,
                    Err(Closed) => Verdict::Unavailable("the hashing threads are gone".into()),
                }
            }
            Backend::Dovecot { socket } => {
                let id = self.request_ids.fetch_add(1, Ordering::Relaxed);
                match authenticate(socket, id, authcid, password, client, secured).await {
                    Answer::Ok(user) => Verdict::Accepted { user },
                    Answer::Fail => Verdict::Rejected,
                    Answer::Unavailable(why) => Verdict::Unavailable(why),
                }
            }
        }
    }
}

impl Generation {
    fn new(backend: Backend, settings: VerifierSettings) -> Self {
        let permits = Arc::new(Semaphore::new(settings.max_checks.max(1)));
        let hashers = match backend {
            Backend::UsersFile(_) => {
                Some(Hashers::start(settings.max_checks, settings.idle_priority))
            }
            Backend::Dovecot { .. } => None,
        };
        Generation {
            backend,
            hashers,
            settings,
            permits,
            #[cfg(test)]
            running: AtomicU64::new(0),
            #[cfg(test)]
            peak: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_hash::{hash_password, FAST};
    use std::path::Path;

    fn file(text: &str) -> Backend {
        let (file, warnings) = UsersFile::parse(Path::new("users"), text.as_bytes());
        assert!(warnings.is_empty(), "{warnings:?}");
        Backend::UsersFile(Arc::new(file))
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn users_file_verdicts() {
        let joe = hash_password(b"secret", FAST).unwrap();
        let verifier = Verifier::new(
            file(&format!("joe@Example.com:{joe}\n")),
            VerifierSettings::default(),
        );
        let accepted = Verdict::Accepted {
            user: "joe@Example.com".into(),
        };
        let table: &[(&str, &[u8], Verdict)] = &[
            ("joe@Example.com", b"secret", accepted.clone()),
            ("joe@example.com", b"secret", accepted),
            ("joe@example.com", b"Secret", Verdict::Rejected),
            ("Joe@example.com", b"secret", Verdict::Rejected),
            ("nobody", b"secret", Verdict::Rejected),
            ("joe@example.com", b"secret\0", Verdict::Rejected),
            ("joe@example.com\0", b"secret", Verdict::Rejected),
        ];
        for (name, password, want) in table {
            let got = verifier.verify(name, password, LOCAL, true).await;
            assert_eq!(got, *want, "{name:?} {password:?}");
        }
        assert_eq!(
            verifier.counts(),
            VerifierCounts {
                accepted: 2,
                rejected: 5,
                unavailable: 0
            }
        );
    }

    #[tokio::test]
    async fn reload_swaps_the_users() {
        let one = hash_password(b"one", FAST).unwrap();
        let two = hash_password(b"two", FAST).unwrap();
        let verifier = Verifier::new(file(&format!("joe:{one}\n")), VerifierSettings::default());
        assert!(matches!(
            verifier.verify("joe", b"one", LOCAL, true).await,
            Verdict::Accepted { .. }
        ));
        verifier.reload(file(&format!("joe:{two}\n")), VerifierSettings::default());
        assert_eq!(
            verifier.verify("joe", b"one", LOCAL, true).await,
            Verdict::Rejected
        );
        assert!(matches!(
            verifier.verify("joe", b"two", LOCAL, true).await,
            Verdict::Accepted { .. }
        ));
    }

    /// With one check at once and the permit taken, a check waits; past
    /// the timeout it is unavailable, not rejected.
    #[tokio::test]
    async fn a_check_that_cannot_start_in_time_is_unavailable() {
        let joe = hash_password(b"secret", FAST).unwrap();
        let settings = VerifierSettings {
            max_checks: 1,
            timeout: Duration::from_millis(50),
            max_wait: Duration::from_secs(60),
            ..VerifierSettings::default()
        };
        let verifier = Verifier::new(file(&format!("joe:{joe}\n")), settings);
        let generation = verifier.current.read().clone();
        let held = generation.permits.clone().acquire_owned().await.unwrap();
        let verdict = verifier.verify("joe", b"secret", LOCAL, true).await;
        assert_eq!(verdict, Verdict::Unavailable("the check timed out".into()));
        assert_eq!(verifier.counts().unavailable, 1);
        drop(held);
        assert_eq!(generation.permits.available_permits(), 1);
    }

    /// A check that cannot get its turn within `max_wait` is
    /// unavailable then, long before the timeout, and the check behind a
    /// held permit never runs: once the permit is free, the next check
    /// starts at once.
    #[tokio::test]
    async fn a_check_waits_for_its_turn_at_most_max_wait() {
        let joe = hash_password(b"secret", FAST).unwrap();
        let settings = VerifierSettings {
            max_checks: 1,
            timeout: Duration::from_secs(60),
            max_wait: Duration::from_millis(100),
            ..VerifierSettings::default()
        };
        let verifier = Verifier::new(file(&format!("joe:{joe}\n")), settings);
        let generation = verifier.current.read().clone();
        let held = generation.permits.clone().acquire_owned().await.unwrap();
        let started = std::time::Instant::now();
        let verdict = verifier.verify("joe", b"secret", LOCAL, true).await;
        let waited = started.elapsed();
        assert_eq!(
            verdict,
            Verdict::Unavailable("no turn to check within 100 ms (busy)".into())
        );
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(30), "{waited:?}");
        assert_eq!(generation.peak.load(Ordering::SeqCst), 0, "no hash ran");
        drop(held);
        assert!(matches!(
            verifier.verify("joe", b"secret", LOCAL, true).await,
            Verdict::Accepted { .. }
        ));
    }

    /// 8 checks race with a limit of 2: never more than 2 hashes run at
    /// once (the semaphore lets no more than that many jobs in).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_checks_hash_at_once() {
        // Slow enough (a few ms) that checks overlap when allowed to.
        let params = crate::new_hash::HashParams {
            m_kib: 4096,
            t: 1,
            p: 1,
        };
        let joe = hash_password(b"secret", params).unwrap();
        let settings = VerifierSettings {
            max_checks: 2,
            timeout: Duration::from_secs(60),
            max_wait: Duration::from_secs(60),
            ..VerifierSettings::default()
        };
        let verifier = Arc::new(Verifier::new(file(&format!("joe:{joe}\n")), settings));
        let generation = verifier.current.read().clone();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let v = Arc::clone(&verifier);
                tokio::spawn(async move { v.verify("joe", b"secret", LOCAL, true).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Verdict::Accepted { .. }));
        }
        let peak = generation.peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} hashes at once");
        assert_eq!(generation.permits.available_permits(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_dovecot_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let verifier = Verifier::new(
            Backend::Dovecot {
                socket: dir.path().join("auth-client"),
            },
            VerifierSettings::default(),
        );
        match verifier.verify("joe", b"pw", LOCAL, true).await {
            Verdict::Unavailable(why) => assert!(why.contains("connecting to"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A socket that takes the connection and never answers: the
    /// caller's timeout ends the check as unavailable.
    #[tokio::test]
    async fn a_silent_socket_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("auth-client");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let held = tokio::spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(conn);
        });
        let settings = VerifierSettings {
            max_checks: 1,
            timeout: Duration::from_millis(200),
            max_wait: Duration::from_millis(200),
            ..VerifierSettings::default()
        };
        let verifier = Verifier::new(Backend::Dovecot { socket }, settings);
        assert_eq!(
            verifier.verify("joe", b"pw", LOCAL, true).await,
            Verdict::Unavailable("the check timed out".into())
        );
        held.abort();
    }

    /// A socket that hangs up after the handshake starts: unavailable.
    #[tokio::test]
    async fn a_socket_that_hangs_up_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("auth-client");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut conn, _) = listener.accept().await.unwrap();
            // Reads the whole hello first, so the close is a clean end of
            // stream rather than a reset over unread data.
            let mut hello = Vec::new();
            let mut buf = [0u8; 256];
            while !hello.ends_with(b"\n") || !hello.windows(4).any(|w| w == b"CPID") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client hung up first");
                hello.extend_from_slice(&buf[..n]);
            }
            drop(conn);
        });
        let verifier = Verifier::new(Backend::Dovecot { socket }, VerifierSettings::default());
        assert_eq!(
            verifier.verify("joe", b"pw", LOCAL, true).await,
            Verdict::Unavailable("Dovecot closed the connection".into())
        );
    }

    #[test]
    fn default_settings() {
        let s = VerifierSettings::default();
        assert!(s.max_checks >= 1);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(s.max_wait, Duration::from_secs(1));
    }
}
