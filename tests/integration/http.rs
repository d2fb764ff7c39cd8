//! The admin HTTP server: GET /status and GET /metrics, and who may use
//! the queue API (token, Host, Origin, content type).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use crate::util::{init, message, status_json, text, Client, Mtad, Workdir, IO_TIMEOUT};

/// A plain GET; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, None, None)
}

/// A plain HTTP/1.1 request (with `Host: <addr>`, as curl sends it), an
/// optional bearer token and JSON body; returns the status code and the
/// body.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    if json.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    raw(addr, method, path, &headers, json)
}

/// An HTTP/1.1 request with exactly these headers besides `Host` (the
/// server's address unless `headers` has one), `Content-Length` and
/// `Connection: close`; returns the status code and the body.
fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(h, _)| h.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[test]
fn status_and_metrics() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let http = mtad.http.expect("an http address is announced");
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &message("counted"))
            .head(),
        "250 2.0.0"
    );

    let (code, body) = get(http, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["accepted_total"], 1);
    assert_eq!(status["pid"], mtad.pid());
    let runners: Vec<&str> = status["runners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(runners, ["ram", "bounce", "disk"]);

    let (code, body) = get(http, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE mta_accepted_total counter\nmta_accepted_total 1\n"),
        "{body}"
    );
    assert!(body.contains("mta_queued_messages 1"), "{body}");
    assert!(body.contains("mta_in_flight{runner=\"disk\"}"), "{body}");
    assert!(
        body.contains("mta_recipients_total{runner=\"ram\",outcome=\"deferred\"}"),
        "{body}"
    );

    assert_eq!(get(http, "/nothing").0, 404);
}

/// Queues one message (it stays queued: its route is a closed port and
/// the next retry is an hour away); returns its queue id.
fn queue_one(mtad: &Mtad, subject: &str) -> String {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("a@b.test", &["x@remote.test"], &message(subject));
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    r.text()
        .rsplit(' ')
        .next()
        .expect("250 2.0.0 Ok: queued as ID")
        .to_owned()
}

/// The message is still queued and not held, and neither injection nor
/// delivery is paused: no request changed anything.
fn nothing_changed(work: &Workdir, mtad: &Mtad, id: &str) {
    let (code, status) = status_json(work);
    assert_eq!(code, 0, "{status}");
    let daemon = &status["daemon"];
    assert_eq!(daemon["queued"], 1, "{status}");
    assert_eq!(daemon["held"], 0, "{status}");
    for service in daemon["services"].as_array().unwrap() {
        assert_eq!(service["state"], "up", "{status}");
    }
    for runner in daemon["runners"].as_array().unwrap() {
        assert_eq!(runner["paused"], false, "{status}");
    }
    let o = init(work, &["queue", "list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], id);
    assert_ne!(rows[0]["queue"], "held", "{rows:?}");
    assert_eq!(Client::connect(mtad.addr).banner.code, 220);
}

/// Issue 10, point 7: without `[http] token`, any local user could hold
/// or delete the queue and read message bodies over HTTP, bypassing the
/// control socket's permissions. Now only /status and /metrics are served.
#[test]
fn without_a_token_the_queue_api_is_refused_and_the_queue_untouched() {
    let work = Workdir::new();
    work.write_config("", "");
    let mtad = Mtad::start(&work);
    let http = mtad.http.expect("an http address is announced");
    let id = queue_one(&mtad, "private");

    assert_eq!(get(http, "/status").0, 200);
    assert_eq!(get(http, "/metrics").0, 200);

    let show = format!("/api/queue/{id}?body=true");
    let json = Some("application/json");
    let form = Some("application/x-www-form-urlencoded");
    let refused: [(&str, &str, Option<&str>, Option<&str>); 11] = [
        ("GET", "/api/queue", None, None),
        ("GET", "/api/queue?limit=10", None, None),
        ("GET", &show, None, None),
        ("GET", "/api/queue/summary", None, None),
        ("GET", "/api/elsewhere", None, None),
        // curl -d '{"all":true}': a form content type.
        ("POST", "/api/queue/hold", form, Some(r#"{"all":true}"#)),
        ("POST", "/api/queue/hold", json, Some(r#"{"all":true}"#)),
        ("POST", "/api/queue/delete", json, Some(r#"{"all":true}"#)),
        ("POST", "/api/pause/injection", None, None),
        ("POST", "/api/pause/injection", json, Some("{}")),
        ("POST", "/api/pause/delivery", json, Some("{}")),
    ];
    for (method, path, content_type, body) in refused {
        let mut headers = Vec::new();
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        let (code, answer) = raw(http, method, path, &headers, body);
        assert_eq!(code, 403, "{method} {path}: {answer}");
        assert!(answer.contains("[http] token"), "{method} {path}: {answer}");
        assert!(!answer.contains("Hello."), "{method} {path}: {answer}");
    }
    nothing_changed(&work, &mtad, &id);
}

const TOKEN: &str = "s3cret-token-for-tests";

/// Issue 10, point 7: the token is compared whatever the case of the
/// `Bearer` scheme (RFC 7235) and whatever its length; a POST needs a
/// JSON body and no foreign Origin (cross-site requests), and a foreign
/// Host is refused (DNS rebinding).
#[test]
fn with_a_token_the_api_checks_scheme_token_content_type_origin_and_host() {
    let work = Workdir::new();
    work.write_config(
        "",
        &format!(
            "[http]\nlisten = [\"127.0.0.1:0\"]\ntoken = \"{TOKEN}\"\n\
             allowed_hosts = [\"mta.example.net\"]\n"
        ),
    );
    let mtad = Mtad::start(&work);
    let http = mtad.http.expect("an http address is announced");
    let port = http.port();
    let id = queue_one(&mtad, "private");

    // The scheme in any case, one or more spaces.
    let lower = format!("bearer {TOKEN}");
    let upper = format!("BEARER   {TOKEN}");
    let mixed = format!("BeArEr {TOKEN}");
    for auth in [&lower, &upper, &mixed] {
        let (code, body) = raw(http, "GET", "/api/queue", &[("Authorization", auth)], None);
        assert_eq!(code, 200, "{auth}: {body}");
        assert!(body.contains(&id), "{body}");
    }
    // Wrong tokens: same length, a prefix, longer, another scheme, none.
    let same_length = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for auth in [same_length.as_str(), &prefix, &longer, &basic, "Bearer", ""] {
        for path in ["/api/queue", "/status", "/metrics"] {
            let headers = if auth.is_empty() {
                vec![]
            } else {
                vec![("Authorization", auth)]
            };
            let (code, body) = raw(http, "GET", path, &headers, None);
            assert_eq!(code, 401, "{auth:?} {path}: {body}");
        }
    }

    let bearer = format!("Bearer {TOKEN}");
    let auth = ("Authorization", bearer.as_str());
    let hold = Some(r#"{"all":true}"#);
    // A POST must say it carries JSON: a form or text body is what a
    // cross-site HTML form can send.
    for content_type in [
        None,
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
    ] {
        let mut headers = vec![auth];
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        let (code, body) = raw(http, "POST", "/api/queue/hold", &headers, hold);
        assert_eq!(code, 415, "{content_type:?}: {body}");
        assert!(body.contains("application/json"), "{body}");
    }
    // A foreign Origin is refused, even with the token.
    let json = ("Content-Type", "application/json");
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let (code, body) = raw(
            http,
            "POST",
            "/api/pause/injection",
            &[auth, json, ("Origin", origin)],
            Some("{}"),
        );
        assert_eq!(code, 403, "{origin}: {body}");
        assert!(body.contains("Origin"), "{body}");
    }
    // A foreign Host (DNS rebinding: evil.example resolving to us).
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        "127.0.0.1".to_owned(),
        format!("127.0.0.2:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
    ] {
        for path in ["/api/queue", "/status"] {
            let (code, body) = raw(http, "GET", path, &[auth, ("Host", &host)], None);
            assert_eq!(code, 421, "{host} {path}: {body}");
            assert!(body.contains("allowed_hosts"), "{body}");
        }
    }
    nothing_changed(&work, &mtad, &id);

    // The server's own names are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        "mta.example.net".to_owned(),
        "MTA.example.net:8443".to_owned(),
    ] {
        let (code, body) = raw(http, "GET", "/api/queue", &[auth, ("Host", &host)], None);
        assert_eq!(code, 200, "{host}: {body}");
    }
    // A same-origin POST with JSON works.
    let own = format!("http://127.0.0.1:{port}");
    let (code, body) = raw(
        http,
        "POST",
        "/api/queue/hold",
        &[
            auth,
            ("Content-Type", "application/json; charset=utf-8"),
            ("Origin", &own),
        ],
        hold,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(status_json(&work).1["daemon"]["held"], 1);
    let (code, body) = raw(http, "POST", "/api/pause/injection", &[auth, json], None);
    assert_eq!(code, 200, "an empty JSON body is no body: {body}");
    let (code, body) = raw(
        http,
        "POST",
        "/api/resume/injection",
        &[auth, json],
        Some(""),
    );
    assert_eq!(code, 200, "{body}");
}
