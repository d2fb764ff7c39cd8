//! Who a submitting user is: SMTP AUTH's password check (RFC 4954) and
//! what an authenticated user may then do.
//!
//! The SASL exchange itself (the AUTH command, PLAIN and LOGIN decoding,
//! the 334 challenges) is the SMTP session's; it hands this crate an
//! authentication identity and a password, and gets a [`Verdict`].
//!
//! - [`UsersFile`]: `[auth] users_file`, one `name:hash` line per user in
//!   Dovecot's passwd-file format (further `:` fields ignored, `#`
//!   comments and blank lines allowed). [`UsersFile::load`] reads it, at
//!   start and again at each `graceful`; a line that cannot be used is a
//!   [`Warning`] and the rest loads.
//! - [`UsersEditor`]: `mta-init user add|passwd|del|list`: under a lock
//!   (flock on `<file>.lock`), atomically replaced (temporary file in the
//!   same directory, fsync, rename, fsync of the directory), mode 0640
//!   whatever the umask, owner and group kept or given.
//! - [`Verifier`]: the async check, on a [`Backend`]: the users file
//!   (hashes on tokio's blocking pool, [`VerifierSettings::max_checks`] at
//!   once) or a Dovecot's `auth-client` socket. Swapped at reload.
//! - [`FailureLimiter`]: brute-force limits per client and per user name.
//! - [`SenderRules`]: which MAIL FROM and From: addresses a user may use.
//! - [`MessageRate`]: messages per sliding hour per user.
//!
//! # Use
//!
//! What an SMTP session does with an AUTH PLAIN or LOGIN it has decoded
//! (the replies are RFC 4954's):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use std::time::Instant;
//! use mta_auth::*;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("users");
//! # let small = HashParams { m_kib: 64, t: 1, p: 1 };
//! # UsersEditor::new(&path).with_hash_params(small).add("joe@example.com", b"secret").unwrap();
//! let (file, warnings) = UsersFile::load(&path).unwrap();
//! for w in &warnings {
//!     eprintln!("{w}"); // e.g. "/etc/mta/users:3: user \"bob\" refused: weak password scheme {PLAIN}; ..."
//! }
//! let verifier = Verifier::new(Backend::UsersFile(Arc::new(file)), VerifierSettings::default());
//! let limiter = FailureLimiter::new(&LimiterSettings::default());
//! let senders = SenderRules::default();
//!
//! let (client, secured) = ("192.0.2.1".parse().unwrap(), true);
//! let (authcid, password) = ("joe@example.com", b"secret");
//! if limiter.check(client, authcid, Instant::now()).is_some() {
//!     return; // 421 4.7.0, close
//! }
//! match verifier.verify(authcid, password, client, secured).await {
//!     Verdict::Accepted { user } => {
//!         limiter.record_success(client, authcid, Instant::now());
//!         assert!(senders.may_send_as(&user, "joe@example.com")); // 235 2.7.0
//!     }
//!     Verdict::Rejected => {
//!         let penalty = limiter.record_failure(client, authcid, Instant::now());
//!         // Sleep penalty.delay, then 535 5.7.8; or 421 4.7.0 and close
//!         // when penalty.lockout is Some.
//!         let _ = (penalty.delay, penalty.lockout);
//!     }
//!     Verdict::Unavailable(_why) => {} // 454 4.7.0
//! }
//! # }
//! ```
//!
//! # Hash schemes
//!
//! Accepted in the users file, bare or with Dovecot's `{SCHEME}` prefix as
//! `doveadm pw` prints them: argon2id, argon2i and argon2d PHC strings
//! (`{ARGON2ID}`, `{ARGON2I}`), sha512-crypt `$6$` (`{SHA512-CRYPT}`),
//! sha256-crypt `$5$` (`{SHA256-CRYPT}`), yescrypt `$y$` and bcrypt
//! `$2y$`/`$2b$`/`$2a$` (`{BLF-CRYPT}`); `{CRYPT}` or no prefix means a
//! crypt string recognised by its `$id$`.
//!
//! **Weak or unknown schemes are refused at load**, with a warning naming
//! the file, line and user, while the rest of the file loads: plain text
//! (`{PLAIN}`, `{CLEAR}`), fast digests salted or not (`{MD5}`, `{SHA}`,
//! `{SHA256}`, `{SSHA512}`, ...), MD5 crypt (`$1$`, `{MD5-CRYPT}`), DES
//! crypt (bare 13 characters, `{DES-CRYPT}`), bcrypt's buggy `$2x$`, and
//! schemes this crate does not implement (`{PBKDF2}`, `{SCRAM-SHA-256}`,
//! scrypt `$7$`, ...). Such a user cannot log in until `passwd` gives it a
//! new hash. So are hashes too costly to check (argon2 over 256 MiB or
//! t > 16, sha-crypt over 1,000,000 rounds, bcrypt cost over 16, yescrypt
//! over 256 MiB), which would let each AUTH attempt cost seconds.
//!
//! # New hashes
//!
//! argon2id, m = 19456 KiB, t = 2, p = 1 ([`HashParams::default`]):
//! OWASP's minimum argon2id configuration. On a small MTA (two cores),
//! each check costs about 19 MiB and a few tens of milliseconds, so an
//! AUTH flood stays bounded while a stolen file still costs an offline
//! guesser what OWASP considers enough. Written as
//! `{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`, which Dovecot
//! reads too.
//!
//! # User names
//!
//! No `:`, whitespace or control characters, not empty, not starting with
//! `#`, at most 254 bytes. Names compare case-sensitively, except that the
//! domain of an address-form name (after its last `@`) compares without
//! case: `joe@Example.com` is `joe@example.com`, not `Joe@example.com`.
//!
//! # Limiter defaults
//!
//! Per client (IPv4 address or IPv6 /64): from the 3rd failure in 15
//! minutes each failure's reply is delayed 2 s; the 10th locks the client
//! out for 15 minutes (421 4.7.0 and close). Per user name: delayed from
//! the 5th, locked out at the 30th for 5 minutes. At most 10,000 clients
//! and 10,000 names remembered. See [`LimiterSettings`].
//!
//! # Timing
//!
//! A name not in the file costs what a wrong password costs: the password
//! is checked against a hash of the file's most common scheme and
//! parameters, and the result thrown away.
#![deny(missing_docs)]

mod dovecot;
mod edit;
mod error;
mod hashers;
mod limiter;
mod name;
mod new_hash;
mod rate;
mod replace;
mod senders;
mod stored_hash;
mod users_file;
mod verifier;

pub use edit::UsersEditor;
pub use error::AuthError;
pub use limiter::{
    ClientKey, FailureLimiter, LimiterCounts, LimiterSettings, Locked, Lockout, Penalty, Thresholds,
};
pub use name::{check_name, name_key, NameProblem, MAX_NAME_LEN};
pub use new_hash::{check_password, hash_password, HashParams, MAX_PASSWORD_LEN};
pub use rate::{MessageRate, RateLimited, RateSettings};
pub use replace::FILE_MODE;
pub use senders::SenderRules;
pub use stored_hash::{
    HashProblem, Scheme, StoredHash, MAX_ARGON2_M_KIB, MAX_ARGON2_P, MAX_ARGON2_T, MAX_BCRYPT_COST,
    MAX_SHA_CRYPT_ROUNDS, MAX_YESCRYPT_BYTES,
};
pub use users_file::{ListedUser, UsersFile, Warning, WarningKind};
pub use verifier::{Backend, Verdict, Verifier, VerifierCounts, VerifierSettings};
