//! Hashing a new password: argon2id with parameters chosen for an MTA on
//! a small machine.
//!
//! [`HashParams::default`] is m = 19456 KiB (19 MiB), t = 2, p = 1:
//! OWASP's Password Storage Cheat Sheet's first (least memory-hungry)
//! argon2id configuration, and the argon2 crate's own default. Why the
//! minimum and not more: every AUTH attempt, a guessing bot's included,
//! costs one check on the machine that also relays the mail; on two
//! cores, about 20 MiB and a few tens of milliseconds per check (release
//! build) keeps a flood bounded (see the Verifier's concurrency limit)
//! while still costing an offline attacker with a stolen file what OWASP
//! deems enough. One lane (p = 1): the crate runs lanes one after the
//! other anyway, so more lanes would cost us time without making an
//! attacker's GPU any slower.
//!
//! The string written is `{ARGON2ID}$argon2id$v=19$m=19456,t=2,p=1$...`:
//! with Dovecot's prefix, the same file serves as a Dovecot passwd-file
//! whatever its default scheme (`doveadm pw -t` accepts it).

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};

use crate::error::AuthError;

/// The longest password accepted, in bytes. Longer ones are refused when
/// set and rejected without hashing when tried: sha-crypt's cost grows
/// with the square of the length, and no person types more.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The argon2id parameters of new hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB (`m`); default 19456.
    pub m_kib: u32,
    /// Passes over the memory (`t`); default 2.
    pub t: u32,
    /// Lanes (`p`); default 1.
    pub p: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        HashParams {
            m_kib: 19456,
            t: 2,
            p: 1,
        }
    }
}

/// Refuses a password that could never be used: empty, holding NUL (SASL
/// PLAIN, RFC 4616, separates its fields with NUL, so no client could
/// send it), or over [`MAX_PASSWORD_LEN`] bytes.
pub fn check_password(password: &[u8]) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::BadPassword("empty"));
    }
    if password.contains(&0) {
        return Err(AuthError::BadPassword("holds a NUL byte"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AuthError::BadPassword("longer than 1024 bytes"));
    }
    Ok(())
}

/// Hashes `password` with argon2id and a fresh 16-byte salt from the
/// system's random source, as `{ARGON2ID}$argon2id$v=19$...`.
pub fn hash_password(password: &[u8], params: HashParams) -> Result<String, AuthError> {
    check_password(password)?;
    let params = Params::new(params.m_kib, params.t, params.p, None)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(format!("{{ARGON2ID}}{hash}"))
}

/// Small parameters for the tests that are not about the cost.
#[cfg(test)]
pub(crate) const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored_hash::{Scheme, StoredHash};

    #[test]
    fn a_new_hash_verifies_and_has_its_params() {
        let text = hash_password(b"correct horse", FAST).unwrap();
        assert!(
            text.starts_with("{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$"),
            "{text}"
        );
        let hash = StoredHash::parse(&text).unwrap();
        assert_eq!(hash.scheme(), Scheme::Argon2id);
        assert!(hash.verify(b"correct horse"));
        assert!(!hash.verify(b"correct horse "));
        // A fresh salt each time.
        assert_ne!(text, hash_password(b"correct horse", FAST).unwrap());
    }

    #[test]
    fn the_default_params_are_the_documented_ones() {
        let text = hash_password(b"pw", HashParams::default()).unwrap();
        assert_eq!(
            StoredHash::parse(&text).unwrap().cost_class(),
            "$argon2id$v=19$m=19456,t=2,p=1"
        );
    }

    #[test]
    fn passwords_table() {
        let long = vec![b'a'; MAX_PASSWORD_LEN + 1];
        let longest = vec![b'a'; MAX_PASSWORD_LEN];
        let table: &[(&[u8], bool)] = &[
            (b"secret", true),
            (b"with space and \xc3\xa9", true),
            (&longest, true),
            (b"", false),
            (b"nul\0inside", false),
            (&long, false),
        ];
        for (password, ok) in table {
            assert_eq!(check_password(password).is_ok(), *ok, "{password:?}");
            assert_eq!(hash_password(password, FAST).is_ok(), *ok, "{password:?}");
        }
    }

    #[test]
    fn params_argon2_refuses_are_errors() {
        let bad = HashParams {
            m_kib: 1,
            t: 1,
            p: 1,
        };
        assert!(matches!(hash_password(b"pw", bad), Err(AuthError::Hash(_))));
    }
}
