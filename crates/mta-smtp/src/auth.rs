//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms:
//! the policy a listener offers, the credentials the session hands to its
//! caller, the caller's verdict, and the decoding of the exchange.
//!
//! The session frames the lines; this module turns the AUTH command's
//! initial response and each continuation line into the next challenge,
//! a failure reply, or [`Credentials`]. It never checks a password: that
//! is the caller's (the daemon asks its user database), which answers with
//! an [`AuthVerdict`].
//!
//! A password lives in a [`Password`], which wipes its memory when dropped
//! and never shows in `Debug` output; every buffer the decoding goes
//! through is wiped too.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::reply::Reply;

/// The longest SASL response line taken, without its CRLF: RFC 4954
/// section 4 names 12288 octets as enough for every deployed mechanism
/// (Postfix's `smtpd_sasl_response_limit` has the same default).
pub const RESPONSE_LIMIT: usize = 12_288;

/// A SASL mechanism the session can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616): `[authzid] NUL authcid NUL password`, in one
    /// response.
    Plain,
    /// `LOGIN` (draft-murchison-sasl-login): the user name, then the
    /// password, each asked for with its own challenge.
    Login,
}

impl Mechanism {
    /// The name as EHLO and AUTH spell it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mechanism name this crate does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown SASL mechanism {0:?}: the mechanisms are PLAIN and LOGIN")]
pub struct UnknownMechanism(pub String);

impl FromStr for Mechanism {
    type Err = UnknownMechanism;

    /// Parses a name without regard to case (RFC 4954 section 4).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("PLAIN") {
            Ok(Mechanism::Plain)
        } else if s.eq_ignore_ascii_case("LOGIN") {
            Ok(Mechanism::Login)
        } else {
            Err(UnknownMechanism(s.to_owned()))
        }
    }
}

/// Whether and how a listener offers AUTH: `SessionConfig::auth`. Without
/// one (the MX role on port 25) AUTH is neither advertised nor accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPolicy {
    /// The mechanisms offered, in the order EHLO lists them; none offered
    /// is the same as no policy.
    pub mechanisms: Vec<Mechanism>,
    /// AUTH only under TLS (as Postfix's `smtpd_tls_auth_only`): before
    /// TLS, EHLO does not list the mechanisms and AUTH gets `538 5.7.11`;
    /// a loopback client is exempt (it sends no password over a network).
    pub require_tls: bool,
    /// The submission role (RFC 6409): MAIL before a successful AUTH gets
    /// `530 5.7.0 Authentication required`.
    pub required_for_mail: bool,
}

impl AuthPolicy {
    /// The submission role's policy (ports 587 and 465): PLAIN and LOGIN,
    /// under TLS only, and required before MAIL.
    pub fn submission() -> AuthPolicy {
        AuthPolicy {
            mechanisms: vec![Mechanism::Plain, Mechanism::Login],
            require_tls: true,
            required_for_mail: true,
        }
    }
}

/// A password from an AUTH exchange: its memory is wiped when it is
/// dropped, and `Debug` never shows it.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(password: String) -> Password {
        Password(Zeroizing::new(password))
    }

    /// The password, for the check that verifies it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// What a client gave to authenticate, for the caller to verify; then it
/// calls `Session::authenticated` with the verdict. Drop it as soon as
/// it is checked: that wipes the password.
pub struct Credentials {
    /// The mechanism the client chose.
    pub mechanism: Mechanism,
    /// The authentication identity (the user name the client typed): UTF-8,
    /// not empty, no control character.
    pub authcid: String,
    /// The password: UTF-8, not empty.
    pub password: Password,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The caller's answer to `Step::Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// The password is right: `235 2.7.0`, and the session is
    /// authenticated as `user` (the canonical name, which goes into the
    /// envelope's origin; it must hold no control character, or the
    /// session answers as for [`AuthVerdict::Unavailable`]).
    Accepted {
        /// The authenticated user.
        user: String,
    },
    /// Wrong user name or password: `535 5.7.8`.
    Rejected,
    /// The check could not be made (the user database is unreachable):
    /// `454 4.7.0`.
    Unavailable,
    /// Too many failures from this client or for this user: `421 4.7.0`,
    /// and the session is closed.
    LockedOut,
}

/// Where an AUTH exchange stands while the session waits for the
/// client's next response line.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// PLAIN without an initial response: `334 ` was sent.
    Plain,
    /// LOGIN: `334 VXNlcm5hbWU6` ("Username:") was sent.
    LoginUser,
    /// LOGIN: `334 UGFzc3dvcmQ6` ("Password:") was sent.
    LoginPassword {
        /// The user name already given.
        authcid: String,
    },
}

/// What one step of an exchange comes to.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Send this `334` challenge and read the next response line.
    Challenge(Reply, Exchange),
    /// The exchange is complete: the caller verifies these.
    Done(Credentials),
    /// The exchange failed with this reply.
    Failed(Reply),
}

/// Starts an exchange after AUTH was accepted; `initial` is the initial
/// response argument (RFC 4954 section 4), still in base64, `=` for an
/// empty one.
pub(crate) fn start(mechanism: Mechanism, initial: Option<&str>) -> Progress {
    let Some(initial) = initial else {
        return match mechanism {
            // RFC 4954 section 4: an empty challenge is "334 " alone.
            Mechanism::Plain => Progress::Challenge(Reply::plain(334, ""), Exchange::Plain),
            Mechanism::Login => Progress::Challenge(username_challenge(), Exchange::LoginUser),
        };
    };
    let decoded = if initial == "=" {
        Ok(Zeroizing::new(Vec::new()))
    } else {
        decode(initial.as_bytes())
    };
    let data = match decoded {
        Ok(data) => data,
        Err(reply) => return Progress::Failed(reply),
    };
    match mechanism {
        Mechanism::Plain => plain(&data),
        // The draft lets a LOGIN client send the user name up front.
        Mechanism::Login => login_user(&data),
    }
}

/// Takes the client's next response line (without its CRLF).
pub(crate) fn respond(exchange: Exchange, line: &[u8]) -> Progress {
    // RFC 4954 section 4: a lone `*` cancels, and gets 501.
    if line == b"*" {
        return Progress::Failed(Reply::new(501, "5.0.0", "Authentication cancelled"));
    }
    let data = match decode(line) {
        Ok(data) => data,
        Err(reply) => return Progress::Failed(reply),
    };
    match exchange {
        Exchange::Plain => plain(&data),
        Exchange::LoginUser => login_user(&data),
        Exchange::LoginPassword { authcid } => match utf8(&data) {
            Ok(password) if !password.is_empty() => Progress::Done(Credentials {
                mechanism: Mechanism::Login,
                authcid,
                password: Password::new(password.to_owned()),
            }),
            Ok(_) => Progress::Failed(malformed("empty password")),
            Err(reply) => Progress::Failed(reply),
        },
    }
}

fn username_challenge() -> Reply {
    // base64 of "Username:".
    Reply::plain(334, "VXNlcm5hbWU6")
}

fn password_challenge() -> Reply {
    // base64 of "Password:".
    Reply::plain(334, "UGFzc3dvcmQ6")
}

/// Decodes base64 strictly: RFC 4954 section 4 says a server MUST reject
/// characters outside the alphabet and padding anywhere but at the end.
fn decode(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, Reply> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
    match STANDARD.decode_vec(text, &mut out) {
        Ok(()) => Ok(out),
        Err(_) => Err(Reply::new(
            501,
            "5.5.2",
            "Cannot decode response: not base64 (RFC 4954 section 4)",
        )),
    }
}

fn utf8(data: &[u8]) -> Result<&str, Reply> {
    std::str::from_utf8(data).map_err(|_| {
        Reply::new(
            501,
            "5.5.2",
            "Invalid authentication data: not UTF-8 (RFC 4616)",
        )
    })
}

fn malformed(why: &str) -> Reply {
    Reply::new(501, "5.5.2", format!("Invalid authentication data: {why}"))
}

/// A user name that may go into an envelope: not empty, and without
/// control characters (the envelope's invariant).
fn identity(data: &[u8]) -> Result<&str, Reply> {
    let name = utf8(data)?;
    if name.is_empty() {
        return Err(malformed("empty user name"));
    }
    if name.chars().any(char::is_control) {
        return Err(malformed("control character in user name"));
    }
    Ok(name)
}

fn login_user(data: &[u8]) -> Progress {
    match identity(data) {
        Ok(name) => Progress::Challenge(
            password_challenge(),
            Exchange::LoginPassword {
                authcid: name.to_owned(),
            },
        ),
        Err(reply) => Progress::Failed(reply),
    }
}

/// A PLAIN message (RFC 4616 section 2): `[authzid] NUL authcid NUL passwd`.
///
/// An authorization identity other than the authentication identity asks
/// to act as another user, which nothing here grants: it is refused with
/// `535 5.7.8` before any password check, so it is never a login as
/// someone else and never a way to test a password.
fn plain(data: &[u8]) -> Progress {
    let mut fields = data.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Progress::Failed(malformed(
            "PLAIN needs three NUL-separated fields (RFC 4616)",
        ));
    };
    if password.contains(&0) {
        return Progress::Failed(malformed(
            "PLAIN needs three NUL-separated fields (RFC 4616)",
        ));
    }
    let authcid = match identity(authcid) {
        Ok(name) => name,
        Err(reply) => return Progress::Failed(reply),
    };
    let password = match utf8(password) {
        Ok(p) if !p.is_empty() => p,
        Ok(_) => return Progress::Failed(malformed("empty password")),
        Err(reply) => return Progress::Failed(reply),
    };
    if !authzid.is_empty() && authzid != authcid.as_bytes() {
        return Progress::Failed(Reply::new(
            535,
            "5.7.8",
            "Authentication credentials invalid: the authorization identity must be empty or the authentication identity",
        ));
    }
    Progress::Done(Credentials {
        mechanism: Mechanism::Plain,
        authcid: authcid.to_owned(),
        password: Password::new(password.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

    fn done(p: Progress) -> Credentials {
        match p {
            Progress::Done(c) => c,
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    fn failed(p: Progress) -> String {
        match p {
            Progress::Failed(r) => r.to_string(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn plain_in_the_initial_response() {
        let c = done(start(Mechanism::Plain, Some(&b64(b"\0alice\0s3cret"))));
        assert_eq!(
            (c.mechanism, c.authcid.as_str()),
            (Mechanism::Plain, "alice")
        );
        assert_eq!(c.password.expose(), "s3cret");
        // The same authorization identity is the same login.
        let c = done(start(Mechanism::Plain, Some(&b64(b"alice\0alice\0pw"))));
        assert_eq!(c.authcid, "alice");
        // A NUL-free password keeps every other octet, spaces included.
        let c = done(start(
            Mechanism::Plain,
            Some(&b64("\0bob\0p w ü".as_bytes())),
        ));
        assert_eq!(c.password.expose(), "p w ü");
    }

    #[test]
    fn plain_after_an_empty_challenge() {
        let Progress::Challenge(reply, exchange) = start(Mechanism::Plain, None) else {
            panic!("expected a challenge");
        };
        assert_eq!(reply.to_string(), "334");
        let mut wire = Vec::new();
        reply.write_to(&mut wire);
        assert_eq!(wire, b"334 \r\n");
        let c = done(respond(exchange, b64(b"\0u\0p").as_bytes()));
        assert_eq!((c.authcid.as_str(), c.password.expose()), ("u", "p"));
    }

    #[test]
    fn login_in_two_steps() {
        let Progress::Challenge(reply, exchange) = start(Mechanism::Login, None) else {
            panic!("expected a challenge");
        };
        assert_eq!(reply.to_string(), "334 VXNlcm5hbWU6");
        let Progress::Challenge(reply, exchange) = respond(exchange, b64(b"alice").as_bytes())
        else {
            panic!("expected a challenge");
        };
        assert_eq!(reply.to_string(), "334 UGFzc3dvcmQ6");
        let c = done(respond(exchange, b64(b"pw").as_bytes()));
        assert_eq!(c.mechanism, Mechanism::Login);
        assert_eq!((c.authcid.as_str(), c.password.expose()), ("alice", "pw"));
        // The user name may come as the initial response.
        let Progress::Challenge(reply, _) = start(Mechanism::Login, Some(&b64(b"alice"))) else {
            panic!("expected a challenge");
        };
        assert_eq!(reply.to_string(), "334 UGFzc3dvcmQ6");
    }

    #[test]
    fn refusals() {
        let plain = |data: &[u8]| failed(start(Mechanism::Plain, Some(&b64(data))));
        assert!(plain(b"other\0alice\0pw").starts_with("535 5.7.8"));
        assert!(plain(b"\0alice").starts_with("501 5.5.2"));
        assert!(plain(b"\0alice\0pw\0x").starts_with("501 5.5.2"));
        assert!(plain(b"\0\0pw").starts_with("501 5.5.2"));
        assert!(plain(b"\0alice\0").starts_with("501 5.5.2"));
        assert!(plain(b"\0al\rice\0pw").starts_with("501 5.5.2"));
        assert!(plain(b"\0alice\0\xff\xfe").starts_with("501 5.5.2"));
        assert!(plain(b"\0\xc3\0pw").starts_with("501 5.5.2"));
        // `=` is an empty response, which PLAIN cannot use.
        assert!(failed(start(Mechanism::Plain, Some("="))).starts_with("501 5.5.2"));
        for bad in ["!!!!", "AHU", "AHU=AHU=", "=AAA", "AH U", "AHUAcA==="] {
            assert!(
                failed(start(Mechanism::Plain, Some(bad))).starts_with("501 5.5.2"),
                "{bad}"
            );
        }
        assert_eq!(
            failed(respond(Exchange::LoginUser, b"*")),
            "501 5.0.0 Authentication cancelled"
        );
        assert!(failed(respond(Exchange::Plain, b"*x")).starts_with("501 5.5.2"));
        let password = || Exchange::LoginPassword {
            authcid: "a".into(),
        };
        assert!(failed(respond(password(), b"")).starts_with("501 5.5.2"));
        assert!(failed(respond(password(), b64(b"\xff").as_bytes())).starts_with("501 5.5.2"));
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let c = done(start(Mechanism::Plain, Some(&b64(b"\0alice\0hunter2"))));
        let debug = format!("{c:?} {:?} {c:#?}", c.password);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("alice") && debug.contains("redacted"),
            "{debug}"
        );
    }

    #[test]
    fn mechanism_names_ignore_case() {
        assert_eq!("plain".parse::<Mechanism>(), Ok(Mechanism::Plain));
        assert_eq!("Login".parse::<Mechanism>(), Ok(Mechanism::Login));
        assert!("CRAM-MD5".parse::<Mechanism>().is_err());
        assert_eq!(Mechanism::Login.to_string(), "LOGIN");
    }
}
