//! ESMTP parameters of MAIL and RCPT: SIZE (RFC 1870), BODY (RFC 6152),
//! SMTPUTF8 (RFC 6531), and the DSN parameters RET, ENVID, NOTIFY and ORCPT
//! (RFC 3461), and AUTH (RFC 4954 section 5) where AUTH is offered.

use mta_envelope::{BodyType, Notify, Ret};

use crate::reply::Reply;

/// The parameters of one MAIL command.
#[derive(Debug, Default)]
pub(crate) struct MailParams {
    pub size: Option<u64>,
    pub body: BodyType,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
}

type Params = Vec<(String, Option<String>)>;

fn unsupported(key: &str) -> Reply {
    Reply::new(555, "5.5.4", format!("Unsupported parameter {key}"))
}

fn bad_value(key: &str) -> Reply {
    Reply::new(501, "5.5.4", format!("Bad value for parameter {key}"))
}

fn once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), Reply> {
    if slot.is_some() {
        return Err(Reply::new(
            501,
            "5.5.4",
            format!("Parameter {key} given twice"),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// The parameters of MAIL; `auth_offered` when this session offers AUTH,
/// which is when the AUTH parameter may be sent.
pub(crate) fn mail_params(params: Params, auth_offered: bool) -> Result<MailParams, Reply> {
    let mut p = MailParams::default();
    let mut body = None;
    let mut smtputf8 = None;
    let mut auth = None;
    for (key, value) in params {
        match (key.as_str(), value) {
            // RFC 4954 section 5: the identity that submitted the message
            // at an earlier hop, `<>` when unknown. It proves nothing (it
            // does not authenticate this client), so it is checked as
            // xtext and dropped, which section 5 allows ("parse and
            // discard").
            ("AUTH", Some(v)) if auth_offered => {
                let identity = xtext_decode(&v)
                    .filter(|i| !i.is_empty() && i.len() <= 500)
                    .ok_or_else(|| bad_value(&key))?;
                once(&mut auth, &key, identity)?;
            }
            ("AUTH", None) if auth_offered => return Err(bad_value(&key)),
            ("SIZE", Some(v)) => {
                let size = v
                    .parse::<u64>()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| bad_value(&key))?;
                once(&mut p.size, &key, size)?;
            }
            ("BODY", Some(v)) => {
                let kind = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => BodyType::SevenBit,
                    "8BITMIME" => BodyType::EightBitMime,
                    _ => return Err(bad_value(&key)),
                };
                once(&mut body, &key, kind)?;
            }
            ("SMTPUTF8", None) => once(&mut smtputf8, &key, true)?,
            ("RET", Some(v)) => {
                let ret = match v.to_ascii_uppercase().as_str() {
                    "FULL" => Ret::Full,
                    "HDRS" => Ret::Hdrs,
                    _ => return Err(bad_value(&key)),
                };
                once(&mut p.ret, &key, ret)?;
            }
            ("ENVID", Some(v)) => {
                let envid = xtext_decode(&v)
                    .filter(|e| e.len() <= 100)
                    .ok_or_else(|| bad_value(&key))?;
                once(&mut p.envid, &key, envid)?;
            }
            ("SIZE" | "BODY" | "RET" | "ENVID", None) | ("SMTPUTF8", Some(_)) => {
                return Err(bad_value(&key))
            }
            _ => return Err(unsupported(&key)),
        }
    }
    p.body = body.unwrap_or_default();
    p.smtputf8 = smtputf8.unwrap_or(false);
    Ok(p)
}

/// NOTIFY and ORCPT of one RCPT command.
pub(crate) fn rcpt_params(params: Params) -> Result<(Option<Notify>, Option<String>), Reply> {
    let mut notify = None;
    let mut orcpt = None;
    for (key, value) in params {
        match (key.as_str(), value) {
            ("NOTIFY", Some(v)) => {
                let parsed = parse_notify(&v).ok_or_else(|| bad_value(&key))?;
                once(&mut notify, &key, parsed)?;
            }
            ("ORCPT", Some(v)) => {
                let parsed = parse_orcpt(&v).map_err(|_| bad_value(&key))?;
                once(&mut orcpt, &key, parsed)?;
            }
            ("NOTIFY" | "ORCPT", None) => return Err(bad_value(&key)),
            _ => return Err(unsupported(&key)),
        }
    }
    Ok((notify, orcpt))
}

/// Why an ORCPT value (RFC 3461 section 4.2) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrcptError {
    /// No `;` between the address type and the address.
    NoAddrType,
    /// The address type is empty, or not letters, digits and hyphens.
    BadAddrType,
    /// Nothing after the `;`.
    Empty,
    /// The address is over 500 octets (decoded).
    TooLong,
    /// The address is not xtext, or decodes to a control character.
    NotXtext,
    /// The address (decoded) holds a control character.
    Control,
}

impl OrcptError {
    /// Why, in words: fixed text, so that a caller that keeps only
    /// `&'static str` reasons (the drop file's check) can keep it.
    pub fn reason(self) -> &'static str {
        match self {
            OrcptError::NoAddrType => "an ORCPT has no addr-type \";\" before its address",
            OrcptError::BadAddrType => {
                "an ORCPT's addr-type is empty, or not letters, digits and hyphens"
            }
            OrcptError::Empty => "an ORCPT's address is empty",
            OrcptError::TooLong => "an ORCPT's address is over 500 octets",
            OrcptError::NotXtext => {
                "an ORCPT's address is not xtext, or decodes to a control character"
            }
            OrcptError::Control => "an ORCPT's address holds a control character",
        }
    }
}

impl std::fmt::Display for OrcptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for OrcptError {}

/// The value of an ORCPT parameter as RCPT gives it, `addr-type ";"
/// xtext` (RFC 3461 section 4.2), in the form an envelope keeps it: the
/// address decoded (`rfc822;a@b.test` for `rfc822;a+40b.test`), then
/// checked as [`check_orcpt`] checks one.
pub fn parse_orcpt(value: &str) -> Result<String, OrcptError> {
    let (kind, addr) = value.split_once(';').ok_or(OrcptError::NoAddrType)?;
    let addr = xtext_decode(addr).ok_or(OrcptError::NotXtext)?;
    let decoded = format!("{kind};{addr}");
    check_orcpt(&decoded)?;
    Ok(decoded)
}

/// Checks an ORCPT in the form an envelope keeps it (decoded): an
/// addr-type of letters, digits and hyphens (`rfc822`, `utf-8`, `x400`),
/// `;`, then an address that is not empty, holds no control character
/// and is within RFC 3461's 500 characters (counted in octets). For one
/// that did not come from a RCPT command (a drop file, written by a
/// user): what passes is what a session would have taken, once
/// xtext-encoded again.
pub fn check_orcpt(decoded: &str) -> Result<(), OrcptError> {
    let (kind, addr) = decoded.split_once(';').ok_or(OrcptError::NoAddrType)?;
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(OrcptError::BadAddrType);
    }
    if addr.is_empty() {
        return Err(OrcptError::Empty);
    }
    // What xtext_decode refuses to produce.
    if addr.chars().any(char::is_control) {
        return Err(OrcptError::Control);
    }
    if addr.len() > 500 {
        return Err(OrcptError::TooLong);
    }
    Ok(())
}

fn parse_notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify::Never);
    }
    let (mut success, mut failure, mut delay) = (false, false, false);
    for word in v.split(',') {
        let flag = match word.to_ascii_uppercase().as_str() {
            "SUCCESS" => &mut success,
            "FAILURE" => &mut failure,
            "DELAY" => &mut delay,
            _ => return None,
        };
        if *flag {
            return None;
        }
        *flag = true;
    }
    Some(Notify::On {
        success,
        failure,
        delay,
    })
}

/// Decodes xtext (RFC 3461 section 4): `+XX` is the octet with hex value XX.
/// Returns None for bad syntax, and for a result holding a control
/// character: a CR or LF smuggled in as `+0D` or `+0A` must never reach a
/// spool record or, later, a DSN header.
pub(crate) fn xtext_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => {
                let hi = bytes.next()?;
                let lo = bytes.next()?;
                let hex = |c: u8| match c {
                    b'0'..=b'9' => Some(c - b'0'),
                    b'A'..=b'F' => Some(c - b'A' + 10),
                    _ => None,
                };
                out.push(hex(hi)? << 4 | hex(lo)?);
            }
            b'!'..=b'~' if b != b'=' => out.push(b),
            // Raw UTF-8 is allowed by RFC 6533 (utf-8-addr-xtext).
            0x80.. => out.push(b),
            _ => return None,
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.chars().any(char::is_control)).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[(&str, Option<&str>)]) -> Params {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb").as_deref(), Some("a+b"));
        assert_eq!(
            xtext_decode("user+40example.com").as_deref(),
            Some("user@example.com")
        );
        assert_eq!(xtext_decode("a+0Db"), None, "CR must not decode");
        assert_eq!(xtext_decode("a+0A"), None, "LF must not decode");
        assert_eq!(xtext_decode("a+2"), None);
        assert_eq!(xtext_decode("a+zz"), None);
        assert_eq!(xtext_decode("a=b"), None);
    }

    #[test]
    fn mail_dsn_params() {
        let m = mail_params(
            p(&[
                ("RET", Some("hdrs")),
                ("ENVID", Some("QQ+2B1")),
                ("BODY", Some("8BITMIME")),
                ("SIZE", Some("42")),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(m.ret, Some(Ret::Hdrs));
        assert_eq!(m.envid.as_deref(), Some("QQ+1"));
        assert_eq!(m.body, BodyType::EightBitMime);
        assert_eq!(m.size, Some(42));
        assert_eq!(
            mail_params(p(&[("FOO", None)]), false).unwrap_err().code,
            555
        );
        assert_eq!(
            mail_params(p(&[("RET", Some("X"))]), false)
                .unwrap_err()
                .code,
            501
        );
        assert_eq!(
            mail_params(p(&[("SIZE", Some("1")), ("SIZE", Some("2"))]), false)
                .unwrap_err()
                .code,
            501
        );
        assert_eq!(
            mail_params(p(&[("BODY", Some("BINARYMIME"))]), false)
                .unwrap_err()
                .code,
            501
        );
    }

    /// RFC 4954 section 5: AUTH= is taken as xtext and dropped where AUTH
    /// is offered, and unknown (555) where it is not.
    #[test]
    fn mail_auth_param() {
        for ok in ["<>", "alice+40example.test", "e+3Dmc2"] {
            assert!(mail_params(p(&[("AUTH", Some(ok))]), true).is_ok(), "{ok}");
        }
        for bad in [Some("a+0Db"), Some("a=b"), Some(""), None] {
            assert_eq!(
                mail_params(p(&[("AUTH", bad)]), true).unwrap_err().code,
                501,
                "{bad:?}"
            );
        }
        let twice = p(&[("AUTH", Some("<>")), ("AUTH", Some("<>"))]);
        assert_eq!(mail_params(twice, true).unwrap_err().code, 501);
        assert_eq!(
            mail_params(p(&[("AUTH", Some("<>"))]), false)
                .unwrap_err()
                .code,
            555
        );
    }

    #[test]
    fn rcpt_dsn_params() {
        let (n, o) = rcpt_params(p(&[
            ("NOTIFY", Some("SUCCESS,FAILURE")),
            ("ORCPT", Some("rfc822;a+40b.test")),
        ]))
        .unwrap();
        assert_eq!(
            n,
            Some(Notify::On {
                success: true,
                failure: true,
                delay: false
            })
        );
        assert_eq!(o.as_deref(), Some("rfc822;a@b.test"));
        assert_eq!(
            rcpt_params(p(&[("NOTIFY", Some("NEVER"))])).unwrap().0,
            Some(Notify::Never)
        );
        assert!(rcpt_params(p(&[("NOTIFY", Some("NEVER,SUCCESS"))])).is_err());
        assert!(rcpt_params(p(&[("ORCPT", Some("rfc822;a+0D+0Ab"))])).is_err());
        assert!(rcpt_params(p(&[("ORCPT", Some("noaddrtype"))])).is_err());
    }

    /// ORCPT, as RCPT gives it and as an envelope keeps it: each way of
    /// being wrong has its own reason, and what `check_orcpt` takes is
    /// what `parse_orcpt` gives.
    #[test]
    fn orcpt_values() {
        assert_eq!(
            parse_orcpt("rfc822;a+2Bb+40c.test").as_deref(),
            Ok("rfc822;a+b@c.test")
        );
        assert_eq!(
            parse_orcpt("utf-8;\u{7528}@d.test").as_deref(),
            Ok("utf-8;\u{7528}@d.test")
        );
        let long = format!("rfc822;{}", "a".repeat(500));
        assert!(parse_orcpt(&long).is_ok() && check_orcpt(&long).is_ok());
        let too_long = format!("rfc822;{}", "a".repeat(501));
        for (value, why) in [
            ("noaddrtype", OrcptError::NoAddrType),
            (";a@b.test", OrcptError::BadAddrType),
            ("rfc 822;a@b.test", OrcptError::BadAddrType),
            ("rfc822;", OrcptError::Empty),
            (too_long.as_str(), OrcptError::TooLong),
        ] {
            assert_eq!(parse_orcpt(value), Err(why), "{value}");
            assert_eq!(check_orcpt(value), Err(why), "{value}");
        }
        assert_eq!(parse_orcpt("rfc822;a+0Ab"), Err(OrcptError::NotXtext));
        assert_eq!(parse_orcpt("rfc822;a=b"), Err(OrcptError::NotXtext));
        assert_eq!(check_orcpt("rfc822;a\nb"), Err(OrcptError::Control));
        // Decoded, `+` and `=` are just characters.
        assert_eq!(check_orcpt("rfc822;a+b=c@d.test"), Ok(()));
        for good in ["rfc822;a+2Bb+40c.test", "x-1;+7E"] {
            assert_eq!(check_orcpt(&parse_orcpt(good).unwrap()), Ok(()), "{good}");
        }
    }
}
