//! Who may use the admin HTTP server, decided before any route runs.
//!
//! The queue API reads, holds and deletes mail, so it must be no easier
//! to reach than the control socket that file permissions guard. Four
//! doors, checked in this order:
//!
//! - `Host` must name this server: an address it was reached on (with
//!   that port), `localhost` on loopback, or a name in `[http]
//!   allowed_hosts`. Else 421: a page on `evil.example` whose name was
//!   re-pointed at 127.0.0.1 (DNS rebinding) reaches the port, but
//!   its requests still say `Host: evil.example`.
//! - `Origin`, when present, must name this server too, else 403: a
//!   browser sends it with a cross-site request, and a foreign page has
//!   no business here. curl and Prometheus send none.
//! - The token: with `[http] token` every request needs it (401);
//!   without, `/api/` is off (403) and only `/status` and `/metrics` are
//!   served.
//! - A request that changes something (POST) must say its body is JSON,
//!   else 415: an HTML form can post `text/plain` or a form type across
//!   sites without asking, but not `application/json`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::connect_info::Connected;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Method, Uri};
use axum::serve::IncomingStream;
use mta_config::HttpConfig;
use tokio::net::TcpListener;

/// The address a client reached the server on (its connection's local
/// address, so `0.0.0.0` and port 0 resolve to what was really used).
#[derive(Clone, Copy, Debug)]
pub struct Reached(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Reached {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        // A connection whose address cannot be read names nothing, so
        // every Host but an allowed name is refused.
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Reached(stream.io().local_addr().unwrap_or(unspecified))
    }
}

/// Why a request is turned away.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 421: the `Host` names another server.
    ForeignHost(String),
    /// 403: the `Origin` is another site.
    ForeignOrigin(String),
    /// 403: `/api/` without a configured token.
    ApiDisabled,
    /// 401: the token is missing or wrong.
    Unauthorized,
    /// 415: a POST whose body is not declared JSON.
    NotJson,
}

impl Refusal {
    /// The `{"error"}` text, naming the setting that decides.
    pub fn message(&self) -> String {
        match self {
            Refusal::ForeignHost(host) => format!(
                "Host {host:?} is not a name of this server: use its address, or add the name to [http] allowed_hosts"
            ),
            Refusal::ForeignOrigin(origin) => format!(
                "cross-site request refused: Origin {origin:?} is not this server (see [http] allowed_hosts)"
            ),
            Refusal::ApiDisabled => {
                "the queue API is disabled: set [http] token to use /api/ (only /status and /metrics are served without it)".into()
            }
            Refusal::Unauthorized => {
                "a bearer token is required (Authorization: Bearer <[http] token>)".into()
            }
            Refusal::NotJson => "a POST needs Content-Type: application/json".into(),
        }
    }
}

/// Checks one request against `[http]`, as reached at `reached`.
pub fn check(
    config: &HttpConfig,
    reached: SocketAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    };
    // No Host at all is HTTP/1.0 from a script; browsers always send one.
    if let Some(host) = text(HOST) {
        if !host_is_ours(&host, config, reached) {
            return Err(Refusal::ForeignHost(host.into_owned()));
        }
    }
    if let Some(origin) = text(ORIGIN) {
        if !origin_is_ours(&origin, config, reached) {
            return Err(Refusal::ForeignOrigin(origin.into_owned()));
        }
    }
    match config.token.as_deref() {
        Some(token) => {
            let given = headers
                .get(AUTHORIZATION)
                .and_then(|v| bearer(v.to_str().ok()?));
            if !given.is_some_and(|given| same_token(given, token)) {
                return Err(Refusal::Unauthorized);
            }
        }
        None if path == "/api" || path.starts_with("/api/") => return Err(Refusal::ApiDisabled),
        None => {}
    }
    if *method != Method::GET && *method != Method::HEAD && !is_json(text(CONTENT_TYPE).as_deref())
    {
        return Err(Refusal::NotJson);
    }
    Ok(())
}

/// `Host: name[:port]` (port 80 when absent: the server speaks plain HTTP).
fn host_is_ours(host: &str, config: &HttpConfig, reached: SocketAddr) -> bool {
    match host.parse::<Authority>() {
        Ok(a) if !host.contains('@') => {
            names_us(a.host(), a.port_u16().unwrap_or(80), config, reached)
        }
        _ => false,
    }
}

/// `Origin: scheme://name[:port]`; `null` (a sandboxed or local page) is
/// no site of ours.
fn origin_is_ours(origin: &str, config: &HttpConfig, reached: SocketAddr) -> bool {
    let Ok(uri) = origin.parse::<Uri>() else {
        return false;
    };
    let default_port = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => 80,
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        _ => return false,
    };
    match uri.authority() {
        Some(a) if !a.as_str().contains('@') => names_us(
            a.host(),
            a.port_u16().unwrap_or(default_port),
            config,
            reached,
        ),
        _ => false,
    }
}

/// True when `host` on `port` is this server reached at `reached`: that
/// address and port, `localhost` with that port on loopback, or an
/// allowed name (any port unless the entry gives one).
fn names_us(host: &str, port: u16, config: &HttpConfig, reached: SocketAddr) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    let ip = reached.ip().to_canonical();
    let own_port = port == reached.port();
    if let Ok(addr) = host.parse::<IpAddr>() {
        if own_port && addr.to_canonical() == ip {
            return true;
        }
    } else if host.eq_ignore_ascii_case("localhost") && own_port && ip.is_loopback() {
        return true;
    }
    config.allowed_hosts.iter().any(|entry| {
        let Ok(allowed) = entry.parse::<Authority>() else {
            return false;
        };
        let name = allowed.host().trim_start_matches('[').trim_end_matches(']');
        name.eq_ignore_ascii_case(host) && allowed.port_u16().is_none_or(|p| p == port)
    })
}

/// The credentials of `Authorization: Bearer <token>`: the scheme in any
/// case (RFC 7235 section 2.1), then one or more spaces.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_matches(' '))
}

/// Compares SHA-256 digests rather than the tokens: the time taken says
/// nothing about the token's length or its first wrong byte.
fn same_token(given: &str, token: &str) -> bool {
    use ring::digest::{digest, SHA256};
    let (a, b) = (
        digest(&SHA256, given.as_bytes()),
        digest(&SHA256, token.as_bytes()),
    );
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// `application/json`, with or without parameters such as `charset`.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-token";

    fn config(token: Option<&str>, allowed: &[&str]) -> HttpConfig {
        HttpConfig {
            listen: vec![],
            token: token.map(str::to_owned),
            allowed_hosts: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn run(
        config: &HttpConfig,
        reached: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(), Refusal> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        check(config, reached.parse().unwrap(), &method, path, &map)
    }

    #[test]
    fn hosts_are_the_address_reached_localhost_on_loopback_or_allowed_names() {
        let c = config(
            None,
            &["mta.example.net", "other.example:8443", "[2001:db8::5]"],
        );
        let ok = |reached, host| run(&c, reached, Method::GET, "/status", &[("Host", host)]);
        for (reached, host) in [
            ("127.0.0.1:8025", "127.0.0.1:8025"),
            ("127.0.0.1:8025", "localhost:8025"),
            ("127.0.0.1:8025", "LOCALHOST.:8025"),
            ("[::1]:8025", "[::1]:8025"),
            ("[::1]:8025", "localhost:8025"),
            ("[::ffff:127.0.0.1]:8025", "127.0.0.1:8025"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("192.0.2.7:8025", "mta.example.net"),
            ("192.0.2.7:8025", "Mta.Example.Net:1234"),
            ("192.0.2.7:8025", "other.example:8443"),
            ("192.0.2.7:8025", "[2001:db8::5]:9"),
        ] {
            assert_eq!(ok(reached, host), Ok(()), "{reached} {host}");
        }
        for (reached, host) in [
            ("127.0.0.1:8025", "127.0.0.1"),
            ("127.0.0.1:8025", "127.0.0.2:8025"),
            ("127.0.0.1:8025", "localhost:8026"),
            ("192.0.2.7:8025", "localhost:8025"),
            ("192.0.2.7:8025", "evil.example:8025"),
            ("192.0.2.7:8025", "other.example"),
            ("192.0.2.7:8025", "mta.example.net.evil.example"),
            ("192.0.2.7:8025", "user@mta.example.net"),
            ("192.0.2.7:8025", ""),
        ] {
            assert!(
                matches!(ok(reached, host), Err(Refusal::ForeignHost(_))),
                "{reached} {host}"
            );
        }
    }

    #[test]
    fn origins_are_checked_like_hosts_with_the_schemes_default_port() {
        let c = config(None, &["mta.example.net:443"]);
        let ok = |origin| {
            run(
                &c,
                "127.0.0.1:8025",
                Method::GET,
                "/status",
                &[("Origin", origin)],
            )
        };
        for origin in [
            "http://127.0.0.1:8025",
            "http://localhost:8025",
            "https://mta.example.net",
        ] {
            assert_eq!(ok(origin), Ok(()), "{origin}");
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1",
            "http://mta.example.net",
            "file://",
            "ftp://127.0.0.1:8025",
        ] {
            assert!(
                matches!(ok(origin), Err(Refusal::ForeignOrigin(_))),
                "{origin}"
            );
        }
    }

    #[test]
    fn without_a_token_only_status_and_metrics_are_served() {
        let c = config(None, &[]);
        for path in ["/status", "/metrics", "/nothing"] {
            assert_eq!(run(&c, "127.0.0.1:8025", Method::GET, path, &[]), Ok(()));
        }
        for path in ["/api", "/api/", "/api/queue", "/api/pause/injection"] {
            assert_eq!(
                run(&c, "127.0.0.1:8025", Method::GET, path, &[]),
                Err(Refusal::ApiDisabled),
                "{path}"
            );
        }
    }

    #[test]
    fn the_token_takes_the_bearer_scheme_in_any_case_and_must_match_exactly() {
        let c = config(Some(TOKEN), &[]);
        let auth = |value: &str| {
            run(
                &c,
                "127.0.0.1:8025",
                Method::GET,
                "/status",
                &[("Authorization", value)],
            )
        };
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(auth(&format!("{scheme} {TOKEN}")), Ok(()));
            assert_eq!(auth(&format!("{scheme}   {TOKEN}")), Ok(()));
        }
        let short = &TOKEN[..TOKEN.len() - 1];
        for wrong in [
            format!("Bearer {short}"),
            format!("Bearer {TOKEN}0"),
            format!("Bearer {}", TOKEN.to_uppercase()),
            format!("Basic {TOKEN}"),
            format!("Bearer{TOKEN}"),
            "Bearer ".to_owned(),
        ] {
            assert_eq!(auth(&wrong), Err(Refusal::Unauthorized), "{wrong}");
        }
        assert_eq!(
            run(&c, "127.0.0.1:8025", Method::GET, "/metrics", &[]),
            Err(Refusal::Unauthorized)
        );
    }

    #[test]
    fn a_post_must_declare_json() {
        let c = config(Some(TOKEN), &[]);
        let bearer = format!("Bearer {TOKEN}");
        let post = |content_type: Option<&str>| {
            let mut headers = vec![("Authorization", bearer.as_str())];
            headers.extend(content_type.map(|t| ("Content-Type", t)));
            run(
                &c,
                "127.0.0.1:8025",
                Method::POST,
                "/api/queue/hold",
                &headers,
            )
        };
        assert_eq!(post(Some("application/json")), Ok(()));
        assert_eq!(post(Some("Application/JSON; charset=utf-8")), Ok(()));
        for t in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            assert_eq!(post(t), Err(Refusal::NotJson), "{t:?}");
        }
    }
}
