//! The admin HTTP server: GET /status and GET /metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::util::{message, Mtad, Workdir, IO_TIMEOUT};

/// A plain HTTP/1.0 GET; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, None, None)
}

/// A plain HTTP/1.0 request with an optional bearer token and JSON body;
/// returns the status code and the body.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: mta\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = json.unwrap_or("");
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
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
