//! The client side of Dovecot's authentication protocol (version 1.2, as
//! Postfix's `smtpd_sasl_type = dovecot` speaks it) on Dovecot's
//! `auth-client` Unix socket: one connection per check.
//!
//! ```text
//! C: VERSION 1 1 / CPID <pid>
//! S: VERSION 1 2 / MECH PLAIN plaintext / ... / SPID, CUID, COOKIE / DONE
//! C: AUTH <id> PLAIN service=smtp nologin [secured] rip=<client> resp=<base64>
//! S: OK <id> user=<name> ...        the password is right
//!    FAIL <id> [reason=...] [temp]   wrong (after Dovecot's failure delay,
//!                                    about 2 s); with `temp`: it could not
//!                                    tell (a passdb is down)
//! ```
//!
//! (fields separated by tabs). `resp` is the SASL PLAIN message (RFC 4616:
//! empty authzid, NUL, authcid, NUL, password) in base64. `nologin` says
//! that this is an authentication only, not a login (Postfix sends it
//! too); `secured` that the client's connection is under TLS, without
//! which Dovecot refuses plain-text mechanisms from clients that are not
//! local (`disable_plaintext_auth`). Values in Dovecot's replies are
//! escaped with `\x01` (`\x01t` a tab, `\x01n` an LF, ...).
//!
//! Anything else, a socket we cannot reach, or a reply that does not come
//! within the caller's timeout, is "unavailable": a temporary failure.

use std::net::IpAddr;
use std::path::Path;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// A Dovecot check's outcome.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `OK`: the user Dovecot names (its `user=`, else the authcid).
    Ok(String),
    /// `FAIL` without `temp`.
    Fail,
    /// Why Dovecot could not tell.
    Unavailable(String),
}

/// Longest reply line we read; Dovecot's are short.
const MAX_LINE: usize = 16 * 1024;

/// Checks `authcid` and `password` with the Dovecot at `socket`. The
/// caller bounds the time.
pub(crate) async fn authenticate(
    socket: &Path,
    request_id: u32,
    authcid: &str,
    password: &[u8],
    client: IpAddr,
    secured: bool,
) -> Answer {
    match exchange(socket, request_id, authcid, password, client, secured).await {
        Ok(answer) => answer,
        Err(why) => Answer::Unavailable(why),
    }
}

async fn exchange(
    socket: &Path,
    request_id: u32,
    authcid: &str,
    password: &[u8],
    client: IpAddr,
    secured: bool,
) -> Result<Answer, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let hello = format!("VERSION\t1\t1\nCPID\t{}\n", std::process::id());
    write
        .write_all(hello.as_bytes())
        .await
        .map_err(|e| format!("writing to Dovecot: {e}"))?;

    // The handshake: its version, then the mechanisms up to DONE.
    let mut plain = false;
    let mut version_seen = false;
    loop {
        let line = read_line(&mut read).await?;
        let mut fields = line.split('\t');
        match fields.next() {
            Some("VERSION") => {
                // A different major version is a different protocol.
                if fields.next() != Some("1") {
                    return Err(format!("Dovecot speaks another protocol: {line:?}"));
                }
                version_seen = true;
            }
            Some("MECH") => plain |= fields.next() == Some("PLAIN"),
            Some("DONE") => break,
            // SPID, CUID, COOKIE and anything newer: not for us.
            _ => {}
        }
    }
    if !version_seen {
        return Err("Dovecot sent no VERSION".into());
    }
    if !plain {
        return Err("Dovecot does not offer PLAIN (auth_mechanisms)".into());
    }

    let mut message = Vec::with_capacity(authcid.len() + password.len() + 2);
    message.push(0);
    message.extend_from_slice(authcid.as_bytes());
    message.push(0);
    message.extend_from_slice(password);
    let resp = base64::engine::general_purpose::STANDARD.encode(&message);
    let mut request = format!("AUTH\t{request_id}\tPLAIN\tservice=smtp\tnologin");
    if secured {
        request.push_str("\tsecured");
    }
    request.push_str(&format!("\trip={client}\tresp={resp}\n"));
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("writing to Dovecot: {e}"))?;

    let line = read_line(&mut read).await?;
    Ok(answer(&line, request_id, authcid))
}

/// What one reply line to our AUTH says.
pub(crate) fn answer(line: &str, request_id: u32, authcid: &str) -> Answer {
    let mut fields = line.split('\t');
    let verb = fields.next().unwrap_or("");
    let id = fields.next().and_then(|id| id.parse::<u32>().ok());
    if id != Some(request_id) {
        return Answer::Unavailable(format!("Dovecot answered another request: {line:?}"));
    }
    let params: Vec<&str> = fields.collect();
    match verb {
        "OK" => {
            let user = params
                .iter()
                .find_map(|p| p.strip_prefix("user="))
                .map(unescape)
                .unwrap_or_else(|| authcid.to_owned());
            Answer::Ok(user)
        }
        "FAIL" if params.contains(&"temp") => {
            let reason = params
                .iter()
                .find_map(|p| p.strip_prefix("reason="))
                .map(unescape)
                .unwrap_or_else(|| "temporary failure".into());
            Answer::Unavailable(format!("Dovecot: {reason}"))
        }
        "FAIL" => Answer::Fail,
        // CONT would ask for more SASL data; PLAIN with an initial
        // response never needs it.
        _ => Answer::Unavailable(format!("unexpected reply from Dovecot: {line:?}")),
    }
}

/// Reverses Dovecot's tab-escaping: `\x01` followed by `1`, `t`, `r`,
/// `n` or `0` stands for `\x01`, tab, CR, LF, NUL.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// One line from Dovecot, without its LF; an end of stream or an
/// overlong line is an error.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let buf = read
            .fill_buf()
            .await
            .map_err(|e| format!("reading from Dovecot: {e}"))?;
        if buf.is_empty() {
            return Err("Dovecot closed the connection".into());
        }
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..end]);
            read.consume(end + 1);
            break;
        }
        let n = buf.len();
        line.extend_from_slice(buf);
        read.consume(n);
        if line.len() > MAX_LINE {
            return Err("overlong line from Dovecot".into());
        }
    }
    String::from_utf8(line).map_err(|_| "a reply from Dovecot is not UTF-8".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_table() {
        let table: &[(&str, Answer)] = &[
            ("OK\t7\tuser=joe", Answer::Ok("joe".into())),
            (
                "OK\t7\tuser=joe@example.com\tnologin",
                Answer::Ok("joe@example.com".into()),
            ),
            ("OK\t7", Answer::Ok("authcid".into())),
            ("OK\t7\tuser=a\u{1}tb", Answer::Ok("a\tb".into())),
            ("FAIL\t7", Answer::Fail),
            ("FAIL\t7\tuser=joe\treason=Password mismatch", Answer::Fail),
            (
                "FAIL\t7\ttemp\treason=passdb down",
                Answer::Unavailable("Dovecot: passdb down".into()),
            ),
            (
                "OK\t8\tuser=joe",
                Answer::Unavailable(
                    "Dovecot answered another request: \"OK\\t8\\tuser=joe\"".into(),
                ),
            ),
            (
                "CONT\t7\t",
                Answer::Unavailable("unexpected reply from Dovecot: \"CONT\\t7\\t\"".into()),
            ),
            (
                "",
                Answer::Unavailable("Dovecot answered another request: \"\"".into()),
            ),
        ];
        for (line, want) in table {
            assert_eq!(answer(line, 7, "authcid"), *want, "{line:?}");
        }
    }

    #[test]
    fn unescape_table() {
        let table = [
            ("plain", "plain"),
            ("a\u{1}1b", "a\u{1}b"),
            ("\u{1}t\u{1}r\u{1}n\u{1}0", "\t\r\n\0"),
            ("trailing\u{1}", "trailing"),
        ];
        for (escaped, want) in table {
            assert_eq!(unescape(escaped), want, "{escaped:?}");
        }
    }

    #[tokio::test]
    async fn read_line_ends_at_lf_and_refuses_an_early_end() {
        let mut input: &[u8] = b"VERSION\t1\t2\nDONE\nhalf";
        assert_eq!(read_line(&mut input).await.unwrap(), "VERSION\t1\t2");
        assert_eq!(read_line(&mut input).await.unwrap(), "DONE");
        assert!(read_line(&mut input).await.is_err());
        let long = vec![b'a'; MAX_LINE + 10];
        let mut input: &[u8] = &long;
        assert_eq!(
            read_line(&mut input).await.unwrap_err(),
            "overlong line from Dovecot"
        );
    }
}
