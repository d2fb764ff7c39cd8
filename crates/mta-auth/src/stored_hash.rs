//! The hash field of a users file line: which schemes we accept, how we
//! recognise them, and checking a password against one.
//!
//! Accepted, with or without Dovecot's `{SCHEME}` prefix (as `doveadm pw`
//! prints them; `{CRYPT}` and no prefix both mean "a crypt(3) string,
//! recognised by its `$id$`"):
//!
//! | scheme | prefix | string |
//! |---|---|---|
//! | argon2id, argon2i, argon2d | `{ARGON2ID}`, `{ARGON2I}` | PHC: `$argon2id$v=19$m=..,t=..,p=..$salt$hash` |
//! | sha512-crypt | `{SHA512-CRYPT}` | `$6$[rounds=N$]salt$hash` |
//! | sha256-crypt | `{SHA256-CRYPT}` | `$5$[rounds=N$]salt$hash` |
//! | yescrypt | `{CRYPT}` | `$y$params$salt$hash` |
//! | bcrypt | `{BLF-CRYPT}` | `$2y$NN$...`, `$2b$`, `$2a$` |
//!
//! Everything else is refused: the plain-text and unsalted or fast digest
//! schemes (`{PLAIN}`, `{MD5}`, `{SHA256}`, `{SSHA512}`, `{MD5-CRYPT}` or
//! `$1$`, DES crypt, ...) as weak, others (`{PBKDF2}`, `{SCRAM-SHA-256}`,
//! scrypt `$7$`, ...) as unknown to this crate. A hash whose parameters
//! would make one check cost more than a small machine should spend on it
//! ([`MAX_ARGON2_M_KIB`] and friends) is refused too: one typo in the file
//! must not let each AUTH attempt take seconds or gigabytes.
//!
//! The algorithms are RustCrypto's (`argon2`, `sha-crypt`, `yescrypt`)
//! and the `bcrypt` crate; each compares the result in constant time.

use std::fmt;
use std::str::FromStr;

use password_hash::PasswordVerifier;

/// The most memory an argon2 hash may ask for, in KiB (256 MiB).
pub const MAX_ARGON2_M_KIB: u32 = 256 * 1024;
/// The most passes an argon2 hash may ask for.
pub const MAX_ARGON2_T: u32 = 16;
/// The most lanes an argon2 hash may ask for (they run one after the
/// other here: the crate is built without its `parallel` feature).
pub const MAX_ARGON2_P: u32 = 16;
/// The most rounds a sha-crypt hash may ask for (the default is 5,000).
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
/// The highest bcrypt cost accepted (each step doubles the time; 10 to 12
/// is usual).
pub const MAX_BCRYPT_COST: u32 = 16;
/// The most memory a yescrypt hash may ask for (128·N·r·p bytes): 256 MiB.
pub const MAX_YESCRYPT_BYTES: u64 = 256 * 1024 * 1024;

/// The hash schemes a users file may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Argon2id (RFC 9106), as a PHC string.
    Argon2id,
    /// Argon2i, as a PHC string.
    Argon2i,
    /// Argon2d, as a PHC string.
    Argon2d,
    /// SHA-512 crypt, `$6$`.
    Sha512Crypt,
    /// SHA-256 crypt, `$5$`.
    Sha256Crypt,
    /// yescrypt, `$y$`.
    Yescrypt,
    /// bcrypt, `$2b$`, `$2y$` or `$2a$` (Dovecot's BLF-CRYPT).
    Bcrypt,
}

impl Scheme {
    /// The name Dovecot gives it (its `{SCHEME}` prefix).
    pub fn dovecot_name(self) -> &'static str {
        match self {
            Scheme::Argon2id => "ARGON2ID",
            Scheme::Argon2i => "ARGON2I",
            Scheme::Argon2d => "ARGON2D",
            Scheme::Sha512Crypt => "SHA512-CRYPT",
            Scheme::Sha256Crypt => "SHA256-CRYPT",
            Scheme::Yescrypt => "YESCRYPT",
            Scheme::Bcrypt => "BLF-CRYPT",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Argon2id => "argon2id",
            Scheme::Argon2i => "argon2i",
            Scheme::Argon2d => "argon2d",
            Scheme::Sha512Crypt => "sha512-crypt",
            Scheme::Sha256Crypt => "sha256-crypt",
            Scheme::Yescrypt => "yescrypt",
            Scheme::Bcrypt => "bcrypt",
        })
    }
}

/// Why a hash field is not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashProblem {
    /// No hash at all: the user could never log in (or, to Dovecot with
    /// `nopassword`, with any password; we do not do that).
    Empty,
    /// A scheme too weak to keep (plain text, unsalted or fast digests,
    /// MD5 crypt, DES crypt); the name says which.
    Weak(String),
    /// A scheme this crate does not verify; the name says which.
    Unknown(String),
    /// The `{SCHEME}` prefix names another scheme than the string is.
    Mismatch {
        /// The prefix, e.g. `SHA512-CRYPT`.
        prefix: String,
        /// What the string looks like, e.g. `sha256-crypt`.
        found: String,
    },
    /// The string is of a known scheme but does not parse.
    Malformed(Scheme, String),
    /// The parameters would make each check too costly.
    TooCostly(Scheme, String),
}

impl fmt::Display for HashProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashProblem::Empty => f.write_str("no password hash"),
            HashProblem::Weak(s) => write!(
                f,
                "weak password scheme {s}; set a new password (new hashes are argon2id)"
            ),
            HashProblem::Unknown(s) => write!(f, "unsupported password scheme {s}"),
            HashProblem::Mismatch { prefix, found } => {
                write!(f, "the prefix says {{{prefix}}} but the hash is {found}")
            }
            HashProblem::Malformed(s, why) => write!(f, "malformed {s} hash: {why}"),
            HashProblem::TooCostly(s, why) => write!(f, "{s} hash too costly to check: {why}"),
        }
    }
}

/// Dovecot's schemes that we refuse as weak: plain text, unsalted or
/// salted fast digests, challenge-response secrets, MD5 and DES crypt.
const WEAK: &[&str] = &[
    "PLAIN",
    "CLEAR",
    "CLEARTEXT",
    "PLAIN-TRUNC",
    "PLAIN-MD4",
    "PLAIN-MD5",
    "LDAP-MD5",
    "MD5",
    "SMD5",
    "MD5-CRYPT",
    "DES-CRYPT",
    "SHA",
    "SHA1",
    "SSHA",
    "SHA256",
    "SSHA256",
    "SHA512",
    "SSHA512",
    "CRAM-MD5",
    "HMAC-MD5",
    "DIGEST-MD5",
    "LANMAN",
    "NTLM",
    "OTP",
    "SKEY",
    "RPA",
];

/// A password hash from the file, checked at load and ready to verify.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash {
    scheme: Scheme,
    /// The string without its `{SCHEME}` prefix.
    text: String,
    /// The part that fixes the cost (scheme and parameters, no salt):
    /// users whose hashes share it cost the same to check.
    cost_class: String,
}

/// Never the hash itself in logs.
impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoredHash({})", self.cost_class)
    }
}

impl StoredHash {
    /// Reads the hash field of a line.
    pub fn parse(field: &str) -> Result<StoredHash, HashProblem> {
        if field.is_empty() {
            return Err(HashProblem::Empty);
        }
        let (prefix, body) = match field.strip_prefix('{').and_then(|r| r.split_once('}')) {
            Some((prefix, body)) => (Some(prefix.to_ascii_uppercase()), body),
            None => (None, field),
        };
        let found = match prefix.as_deref() {
            // Dovecot's passwd-file takes an unprefixed hash as CRYPT.
            None | Some("CRYPT") => crypt_scheme(body)?,
            Some(p) => {
                let want: &[Scheme] = match p {
                    "ARGON2ID" => &[Scheme::Argon2id],
                    "ARGON2I" => &[Scheme::Argon2i],
                    "SHA512-CRYPT" => &[Scheme::Sha512Crypt],
                    "SHA256-CRYPT" => &[Scheme::Sha256Crypt],
                    "BLF-CRYPT" => &[Scheme::Bcrypt],
                    _ if WEAK.contains(&p.split('.').next().unwrap_or(p)) => {
                        return Err(HashProblem::Weak(format!("{{{p}}}")));
                    }
                    _ => return Err(HashProblem::Unknown(format!("{{{p}}}"))),
                };
                let found = crypt_scheme(body).map_err(|problem| match problem {
                    HashProblem::Weak(s) | HashProblem::Unknown(s) => HashProblem::Mismatch {
                        prefix: p.to_owned(),
                        found: s,
                    },
                    other => other,
                })?;
                if !want.contains(&found) {
                    return Err(HashProblem::Mismatch {
                        prefix: p.to_owned(),
                        found: found.to_string(),
                    });
                }
                found
            }
        };
        let cost_class = check(found, body)?;
        Ok(StoredHash {
            scheme: found,
            text: body.to_owned(),
            cost_class,
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The scheme and its cost parameters without the salt, e.g.
    /// `$argon2id$v=19$m=19456,t=2,p=1` or `$6$rounds=5000`: two hashes
    /// with the same class cost the same to check.
    pub fn cost_class(&self) -> &str {
        &self.cost_class
    }

    /// Whether `password` is the one this hash was made from. Constant
    /// time in the password's content (each crate compares in constant
    /// time); the cost is set by the hash's parameters.
    pub fn verify(&self, password: &[u8]) -> bool {
        let outcome = match self.scheme {
            Scheme::Argon2id | Scheme::Argon2i | Scheme::Argon2d => {
                argon2::PasswordHash::new(&self.text)
                    .map_err(password_hash::Error::from)
                    .and_then(|hash| argon2::Argon2::default().verify_password(password, &hash))
            }
            Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
                sha_crypt::ShaCrypt::default().verify_password(password, self.text.as_str())
            }
            Scheme::Yescrypt => {
                yescrypt::Yescrypt::default().verify_password(password, self.text.as_str())
            }
            Scheme::Bcrypt => {
                return bcrypt::verify(password, &self.text).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "bcrypt hash failed to verify");
                    false
                });
            }
        };
        match outcome {
            Ok(()) => true,
            Err(password_hash::Error::PasswordInvalid) => false,
            // Checked at load, so not expected: log it, refuse the password.
            Err(e) => {
                tracing::warn!(scheme = %self.scheme, error = %e, "password hash failed to verify");
                false
            }
        }
    }
}

/// The scheme of a crypt(3) or PHC string, by its `$id$`.
fn crypt_scheme(body: &str) -> Result<Scheme, HashProblem> {
    let Some(rest) = body.strip_prefix('$') else {
        // Traditional DES crypt is 13 characters of the crypt alphabet;
        // BSDi's extended DES starts with '_'.
        let crypt_alphabet = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
        if body.len() == 13 && body.chars().all(crypt_alphabet) {
            return Err(HashProblem::Weak("DES crypt".into()));
        }
        if body.starts_with('_') && body.len() == 20 {
            return Err(HashProblem::Weak("BSDi DES crypt".into()));
        }
        return Err(HashProblem::Unknown(
            "(not a crypt or PHC string; plain text?)".into(),
        ));
    };
    let id = rest.split('$').next().unwrap_or("");
    Ok(match id {
        "argon2id" => Scheme::Argon2id,
        "argon2i" => Scheme::Argon2i,
        "argon2d" => Scheme::Argon2d,
        "6" => Scheme::Sha512Crypt,
        "5" => Scheme::Sha256Crypt,
        "y" => Scheme::Yescrypt,
        "2b" | "2y" | "2a" => Scheme::Bcrypt,
        "1" => return Err(HashProblem::Weak("MD5 crypt ($1$)".into())),
        "md5" => return Err(HashProblem::Weak("Sun MD5 crypt ($md5$)".into())),
        _ if id.starts_with("md5,") => {
            return Err(HashProblem::Weak("Sun MD5 crypt ($md5$)".into()))
        }
        "sha1" => return Err(HashProblem::Weak("NetBSD SHA-1 crypt ($sha1$)".into())),
        "3" => return Err(HashProblem::Weak("NT hash ($3$)".into())),
        // $2x$ is the output of a known-broken bcrypt (CVE-2011-2483).
        "2x" => return Err(HashProblem::Weak("bcrypt $2x$ (CVE-2011-2483)".into())),
        other => return Err(HashProblem::Unknown(format!("${other}$"))),
    })
}

/// Checks that `body` parses as `scheme` with affordable parameters, and
/// returns its cost class.
fn check(scheme: Scheme, body: &str) -> Result<String, HashProblem> {
    let malformed = |why: &dyn fmt::Display| HashProblem::Malformed(scheme, why.to_string());
    let costly = |why: String| HashProblem::TooCostly(scheme, why);
    match scheme {
        Scheme::Argon2id | Scheme::Argon2i | Scheme::Argon2d => {
            let hash = argon2::PasswordHash::new(body).map_err(|e| malformed(&e))?;
            if hash.salt.is_none() || hash.hash.is_none() {
                return Err(malformed(&"no salt or no hash"));
            }
            let params = argon2::Params::try_from(&hash).map_err(|e| malformed(&e))?;
            if params.m_cost() > MAX_ARGON2_M_KIB {
                return Err(costly(format!(
                    "m={} KiB, at most {MAX_ARGON2_M_KIB}",
                    params.m_cost()
                )));
            }
            if params.t_cost() > MAX_ARGON2_T {
                return Err(costly(format!(
                    "t={}, at most {MAX_ARGON2_T}",
                    params.t_cost()
                )));
            }
            if params.p_cost() > MAX_ARGON2_P {
                return Err(costly(format!(
                    "p={}, at most {MAX_ARGON2_P}",
                    params.p_cost()
                )));
            }
            let version = hash.version.map(|v| format!("$v={v}")).unwrap_or_default();
            Ok(format!(
                "${}{version}$m={},t={},p={}",
                hash.algorithm,
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            ))
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            let (id, hash_len) = if scheme == Scheme::Sha512Crypt {
                ("6", 86)
            } else {
                ("5", 43)
            };
            let mut fields = body[id.len() + 2..].split('$');
            let mut field = fields.next().unwrap_or("");
            let mut class = format!("${id}$");
            if let Some(rounds) = field.strip_prefix("rounds=") {
                let rounds: u32 = rounds.parse().map_err(|_| malformed(&"bad rounds="))?;
                let params = sha_crypt::Params::new(rounds).map_err(|e| malformed(&e))?;
                if rounds > MAX_SHA_CRYPT_ROUNDS {
                    return Err(costly(format!(
                        "rounds={rounds}, at most {MAX_SHA_CRYPT_ROUNDS}"
                    )));
                }
                class = format!("${id}${params}");
                field = fields.next().unwrap_or("");
            }
            let salt = field;
            let hash = fields.next().ok_or_else(|| malformed(&"no hash"))?;
            if salt.len() > 16 || fields.next().is_some() {
                return Err(malformed(&"too many fields or a salt over 16 characters"));
            }
            if hash.len() != hash_len || !hash.chars().all(is_crypt_b64) {
                return Err(malformed(&format!(
                    "the hash is not {hash_len} characters of the crypt alphabet"
                )));
            }
            Ok(class)
        }
        Scheme::Yescrypt => {
            let mut fields = body[3..].split('$');
            let params_text = fields.next().unwrap_or("");
            let params = yescrypt::Params::from_str(params_text).map_err(|e| malformed(&e))?;
            let (salt, hash) = (fields.next(), fields.next());
            if salt.is_none_or(str::is_empty) || hash.is_none_or(str::is_empty) {
                return Err(malformed(&"no salt or no hash"));
            }
            if fields.next().is_some() {
                return Err(malformed(&"too many fields"));
            }
            let bytes = 128u64
                .saturating_mul(params.n())
                .saturating_mul(u64::from(params.r()))
                .saturating_mul(u64::from(params.p()));
            if bytes > MAX_YESCRYPT_BYTES {
                return Err(costly(format!(
                    "{} MiB, at most {}",
                    bytes >> 20,
                    MAX_YESCRYPT_BYTES >> 20
                )));
            }
            Ok(format!("$y${params_text}"))
        }
        Scheme::Bcrypt => {
            let parts = bcrypt::HashParts::from_str(body).map_err(|e| malformed(&e))?;
            if parts.get_cost() > MAX_BCRYPT_COST {
                return Err(costly(format!(
                    "cost {}, at most {MAX_BCRYPT_COST}",
                    parts.get_cost()
                )));
            }
            Ok(body[..6].to_owned())
        }
    }
}

/// The alphabet of crypt(3)'s base 64.
fn is_crypt_b64(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '/'
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl passwd -6 -salt abcdefgh secret` and `-5`.
    const SHA512: &str = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";
    const SHA256: &str = "$5$d8ZnBaDEMVFAKw/8$/rVxo7jxb.sqWHf7ktr9GEHHOPT.A76SlvORWwHdEN7";
    // `mkpasswd -m yescrypt secret`, `mkpasswd -m bcrypt secret`.
    const YESCRYPT: &str =
        "$y$j9T$RpfXIRkJOJMcvCYZaphWY0$X5yqWNEmm/Og5bRwNlxw67rqjlC6WEcUGYcmFmsq0J/";
    const BCRYPT: &str = "$2b$05$tucDlsHDWVcNme87uT2rOeBlS53TLcQrEI.sncZalVUJRS/bI/uda";
    // `doveadm pw -s ARGON2I -p secret` (small enough for a debug build).
    const ARGON2I: &str = "$argon2i$v=19$m=32768,t=4,p=1$Tq2t4DJOZA3WKJ3LCyEwFQ$osaGUib9kyrbvT+dBsQ/dqnXcFYcG2O4w9lyxoQJlfU";

    #[test]
    fn accepted_table() {
        let table: Vec<(String, Scheme, &str)> = vec![
            (SHA512.into(), Scheme::Sha512Crypt, "$6$"),
            (
                format!("{{SHA512-CRYPT}}{SHA512}"),
                Scheme::Sha512Crypt,
                "$6$",
            ),
            (format!("{{CRYPT}}{SHA512}"), Scheme::Sha512Crypt, "$6$"),
            (
                format!("{{sha512-crypt}}{SHA512}"),
                Scheme::Sha512Crypt,
                "$6$",
            ),
            (SHA256.into(), Scheme::Sha256Crypt, "$5$"),
            (
                format!("{{SHA256-CRYPT}}{SHA256}"),
                Scheme::Sha256Crypt,
                "$5$",
            ),
            (YESCRYPT.into(), Scheme::Yescrypt, "$y$j9T"),
            (format!("{{CRYPT}}{YESCRYPT}"), Scheme::Yescrypt, "$y$j9T"),
            (BCRYPT.into(), Scheme::Bcrypt, "$2b$05"),
            (format!("{{BLF-CRYPT}}{BCRYPT}"), Scheme::Bcrypt, "$2b$05"),
            (
                format!("{{ARGON2I}}{ARGON2I}"),
                Scheme::Argon2i,
                "$argon2i$v=19$m=32768,t=4,p=1",
            ),
            (
                "$6$rounds=7000$abcdefgh$".to_owned() + &"a".repeat(86),
                Scheme::Sha512Crypt,
                "$6$rounds=7000",
            ),
        ];
        for (field, scheme, class) in table {
            let hash = StoredHash::parse(&field).unwrap_or_else(|e| panic!("{field}: {e}"));
            assert_eq!(hash.scheme(), scheme, "{field}");
            assert_eq!(hash.cost_class(), class, "{field}");
        }
    }

    #[test]
    fn refused_table() {
        use HashProblem::*;
        let weak = |s: &str| Weak(s.to_owned());
        let unknown = |s: &str| Unknown(s.to_owned());
        let table: Vec<(String, HashProblem)> = vec![
            ("".into(), Empty),
            ("{PLAIN}secret".into(), weak("{PLAIN}")),
            ("{plain}secret".into(), weak("{PLAIN}")),
            ("{CLEAR}secret".into(), weak("{CLEAR}")),
            ("{MD5}Xr4ilOzQ4PCOq3aQ0qbuaQ==".into(), weak("{MD5}")),
            (
                "{SHA256.b64}K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=".into(),
                weak("{SHA256.B64}"),
            ),
            ("{SSHA512}abc".into(), weak("{SSHA512}")),
            ("{MD5-CRYPT}$1$abc$def".into(), weak("{MD5-CRYPT}")),
            (
                "$1$abcdefgh$abcdefghijklmnopqrstuv".into(),
                weak("MD5 crypt ($1$)"),
            ),
            (
                "{CRYPT}$1$abcdefgh$abcdefghijklmnopqrstuv".into(),
                weak("MD5 crypt ($1$)"),
            ),
            ("abJnggxhB/yWI".into(), weak("DES crypt")),
            ("{CRYPT}abJnggxhB/yWI".into(), weak("DES crypt")),
            ("_J9..rasmBYk8r9AiWNc".into(), weak("BSDi DES crypt")),
            (
                "$md5,rounds=38118$UZO0kT81$$kRvlU8lqpVJPP.wQsSwEn.".into(),
                weak("Sun MD5 crypt ($md5$)"),
            ),
            (
                "$3$$4ddbe2840c46b36f2fdf8cd70517dda2".into(),
                weak("NT hash ($3$)"),
            ),
            (
                "$2x$05$tucDlsHDWVcNme87uT2rOeBlS53TLcQrEI.sncZalVUJRS/bI/uda".into(),
                weak("bcrypt $2x$ (CVE-2011-2483)"),
            ),
            ("{PBKDF2}$1$abc$1000$def".into(), unknown("{PBKDF2}")),
            (
                "{SCRAM-SHA-256}4096,abc,def".into(),
                unknown("{SCRAM-SHA-256}"),
            ),
            ("$7$CU..../....abc$def".into(), unknown("$7$")),
            ("$gy$j9T$abc$def".into(), unknown("$gy$")),
            (
                "secret".into(),
                unknown("(not a crypt or PHC string; plain text?)"),
            ),
            (
                format!("{{SHA512-CRYPT}}{SHA256}"),
                Mismatch {
                    prefix: "SHA512-CRYPT".into(),
                    found: "sha256-crypt".into(),
                },
            ),
            (
                format!("{{ARGON2ID}}{ARGON2I}"),
                Mismatch {
                    prefix: "ARGON2ID".into(),
                    found: "argon2i".into(),
                },
            ),
            (
                "{BLF-CRYPT}$1$abcdefgh$abcdefghijklmnopqrstuv".into(),
                Mismatch {
                    prefix: "BLF-CRYPT".into(),
                    found: "MD5 crypt ($1$)".into(),
                },
            ),
        ];
        for (field, want) in table {
            assert_eq!(StoredHash::parse(&field), Err(want), "{field}");
        }
    }

    #[test]
    fn malformed_and_costly_table() {
        let table: Vec<(String, Scheme, bool)> = vec![
            // (field, scheme, true: too costly, false: malformed)
            ("$6$abcdefgh$short".into(), Scheme::Sha512Crypt, false),
            (format!("$6$abcdefgh${}$extra", &SHA512[12..]), Scheme::Sha512Crypt, false),
            (format!("$6$rounds=x${}", &SHA512[3..]), Scheme::Sha512Crypt, false),
            (format!("$6$rounds=999${}", &SHA512[3..]), Scheme::Sha512Crypt, false),
            (format!("$6$rounds=1000001${}", &SHA512[3..]), Scheme::Sha512Crypt, true),
            (format!("$6$abcdefghijklmnopq${}", &SHA512[12..]), Scheme::Sha512Crypt, false),
            ("$5$abc".into(), Scheme::Sha256Crypt, false),
            ("$y$j9T$abc".into(), Scheme::Yescrypt, false),
            ("$y$!!$abc$def".into(), Scheme::Yescrypt, false),
            // N = 2^24, r = 32: 64 GiB.
            ("$y$jOT$RpfXIRkJOJMcvCYZaphWY0$X5yqWNEmm/Og5bRwNlxw67rqjlC6WEcUGYcmFmsq0J/".into(), Scheme::Yescrypt, true),
            ("$2b$05$tooshort".into(), Scheme::Bcrypt, false),
            ("$2b$17$tucDlsHDWVcNme87uT2rOeBlS53TLcQrEI.sncZalVUJRS/bI/uda".into(), Scheme::Bcrypt, true),
            ("$argon2id$v=19$m=65536,t=3,p=1".into(), Scheme::Argon2id, false),
            ("$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHQ".into(), Scheme::Argon2id, false),
            ("$argon2id$v=19$m=4194304,t=3,p=1$Tq2t4DJOZA3WKJ3LCyEwFQ$osaGUib9kyrbvT+dBsQ/dqnXcFYcG2O4w9lyxoQJlfU".into(), Scheme::Argon2id, true),
            ("$argon2id$v=19$m=65536,t=17,p=1$Tq2t4DJOZA3WKJ3LCyEwFQ$osaGUib9kyrbvT+dBsQ/dqnXcFYcG2O4w9lyxoQJlfU".into(), Scheme::Argon2id, true),
            ("$argon2id$v=19$m=65536,t=1,p=17$Tq2t4DJOZA3WKJ3LCyEwFQ$osaGUib9kyrbvT+dBsQ/dqnXcFYcG2O4w9lyxoQJlfU".into(), Scheme::Argon2id, true),
        ];
        for (field, scheme, costly) in table {
            match StoredHash::parse(&field) {
                Err(HashProblem::TooCostly(s, _)) if costly => assert_eq!(s, scheme, "{field}"),
                Err(HashProblem::Malformed(s, _)) if !costly => assert_eq!(s, scheme, "{field}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn verify_table() {
        for field in [SHA512, SHA256, YESCRYPT, BCRYPT, ARGON2I] {
            let hash = StoredHash::parse(field).unwrap();
            assert!(hash.verify(b"secret"), "{field}");
            for wrong in [&b"Secret"[..], b"secret ", b"secre", b"", b"secret\0"] {
                assert!(!hash.verify(wrong), "{field} with {wrong:?}");
            }
        }
    }

    #[test]
    fn debug_hides_the_hash() {
        let shown = format!("{:?}", StoredHash::parse(SHA512).unwrap());
        assert_eq!(shown, "StoredHash($6$)");
    }
}
