//! The result of a run and its text and JSON forms.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use crate::options::Options;

/// Distinct failure texts kept (later ones are only counted).
const MAX_DISTINCT: usize = 32;
/// Distinct failure texts printed.
const SHOWN: usize = 5;

/// Failure texts, counted, in the order first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureLog {
    events: u64,
    distinct: Vec<(String, u64)>,
}

impl FailureLog {
    /// Records one failure.
    pub fn record(&mut self, text: String) {
        self.record_n(text, 1);
    }

    fn record_n(&mut self, text: String, n: u64) {
        self.events += n;
        if let Some(entry) = self.distinct.iter_mut().find(|(t, _)| *t == text) {
            entry.1 += n;
        } else if self.distinct.len() < MAX_DISTINCT {
            self.distinct.push((text, n));
        }
    }

    /// Adds another log's counts.
    pub fn merge(&mut self, other: FailureLog) {
        let kept: u64 = other.distinct.iter().map(|(_, n)| n).sum();
        self.events += other.events - kept;
        for (text, n) in other.distinct {
            self.record_n(text, n);
        }
    }

    /// How many failures were recorded (a failed message may record
    /// several, e.g. one per refused RCPT).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Distinct texts with their counts, first seen first (at most 32).
    pub fn distinct(&self) -> &[(String, u64)] {
        &self.distinct
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The options of the run.
    pub options: Options,
    /// Messages whose every reply, down to the one to the end of the data,
    /// was the expected success.
    pub accepted: u64,
    /// Messages that got a refusal or were lost with their connection.
    pub failed: u64,
    /// Messages not sent (or not finished) when the --timeout struck.
    pub unsent: u64,
    /// The run stopped at --timeout.
    pub timed_out: bool,
    /// TCP connections opened.
    pub connections: u64,
    /// Connection attempts that failed before a message could be sent
    /// (refused connect, bad greeting or EHLO).
    pub connect_failures: u64,
    /// What went wrong.
    pub failures: FailureLog,
    /// From the first connect to the last reply.
    pub wall: Duration,
    /// The whole call, setup included.
    pub elapsed: Duration,
    /// Latencies of the replies to the end of the message data (after the
    /// final `.` CRLF, or after the BDAT chunk), sorted.
    pub latencies: Vec<Duration>,
    /// Per connection that got that far, from starting to connect to
    /// being ready for MAIL (greeting, EHLO, TLS handshake, AUTH), sorted.
    pub setup_latencies: Vec<Duration>,
    /// From sending AUTH to reading its reply, sorted.
    pub auth_latencies: Vec<Duration>,
    /// AUTH replies by code (235, 535, 454, ...).
    pub auth_replies: BTreeMap<u16, u64>,
    /// Open loop: session starts that had to wait for a free session
    /// (the cap `--sessions` was reached), so the offered rate fell short.
    pub late_starts: u64,
    /// Open loop: the latest any session started after its due time.
    pub max_start_delay: Duration,
}

impl Report {
    /// Accepted messages per second of wall time (0 when nothing was timed).
    pub fn rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.accepted as f64 / secs
        } else {
            0.0
        }
    }

    /// The nearest-rank `p`-th percentile (1..=100) of the latencies.
    pub fn percentile(&self, p: u32) -> Option<Duration> {
        percentile(&self.latencies, p)
    }

    /// 0 if every message was accepted and nothing went wrong, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        let clean = self.failed == 0
            && self.unsent == 0
            && !self.timed_out
            && self.failures.events() == 0
            && self.accepted == self.options.messages;
        if clean {
            0
        } else {
            1
        }
    }

    /// The result lines of the text output (without the first line, which
    /// is [`Options::describe`]).
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "accepted {}  failed {}  wall {:.3} s  rate {:.1} msg/s",
            self.accepted,
            self.failed,
            self.wall.as_secs_f64(),
            self.rate()
        );
        match (
            self.percentile(50),
            self.percentile(99),
            self.percentile(100),
        ) {
            (Some(p50), Some(p99), Some(max)) => {
                let _ = writeln!(
                    s,
                    "end-of-data reply latency: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
                    ms(p50),
                    ms(p99),
                    ms(max)
                );
            }
            _ => s.push_str("end-of-data reply latency: no samples\n"),
        }
        let _ = writeln!(
            s,
            "connections {}  connect failures {}",
            self.connections, self.connect_failures
        );
        let o = &self.options;
        if o.tls.is_tls() || o.auth.is_some() || o.setup_only {
            let _ = writeln!(
                s,
                "session set-up (connect to ready for MAIL): {}",
                spread(&self.setup_latencies)
            );
        }
        if o.auth.is_some() {
            let codes: Vec<String> = self
                .auth_replies
                .iter()
                .map(|(code, n)| format!("{n}x {code}"))
                .collect();
            let _ = writeln!(
                s,
                "AUTH replies: {}; latency {}",
                if codes.is_empty() {
                    "none".to_string()
                } else {
                    codes.join(", ")
                },
                spread(&self.auth_latencies)
            );
        }
        if let Some(rate) = o.rate {
            let _ = writeln!(
                s,
                "open loop at {rate} sessions/s: {} starts waited for a free session (at most {} open); latest start {:.2} ms after its time",
                self.late_starts,
                o.sessions,
                ms(self.max_start_delay)
            );
        }
        if self.timed_out {
            let _ = writeln!(
                s,
                "timed out: stopped at --timeout {:.3} s with {} messages unsent",
                self.options.timeout.as_secs_f64(),
                self.unsent
            );
        }
        if self.failures.events() > 0 {
            let distinct = self.failures.distinct();
            let _ = writeln!(
                s,
                "failures: {} (first {} distinct):",
                self.failures.events(),
                distinct.len().min(SHOWN)
            );
            for (text, n) in distinct.iter().take(SHOWN) {
                let _ = writeln!(s, "  {n}x {text}");
            }
        }
        s
    }

    /// The report as one JSON object.
    pub fn json(&self) -> Value {
        let o = &self.options;
        let lat = |p| self.percentile(p).map(|d| round(ms(d), 2));
        let tls = match o.tls {
            crate::tls::TlsMode::None => "none",
            crate::tls::TlsMode::StartTls => "starttls",
            crate::tls::TlsMode::Implicit => "implicit",
        };
        let auth_replies: serde_json::Map<String, Value> = self
            .auth_replies
            .iter()
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        json!({
            "server": o.server.to_string(),
            "messages": o.messages,
            "size": o.size,
            "rcpts": o.rcpts,
            "sessions": o.sessions,
            "per_connection": o.per_connection,
            "pipelining": o.pipelining,
            "bdat": o.bdat,
            "timeout_s": o.timeout.as_secs_f64(),
            "accepted": self.accepted,
            "failed": self.failed,
            "unsent": self.unsent,
            "timed_out": self.timed_out,
            "connections": self.connections,
            "connect_failures": self.connect_failures,
            "wall_s": round(self.wall.as_secs_f64(), 6),
            "rate_msg_s": round(self.rate(), 2),
            "latency_ms": {
                "samples": self.latencies.len(),
                "p50": lat(50),
                "p99": lat(99),
                "max": lat(100),
            },
            "tls": tls,
            "auth_user": o.auth.as_ref().map(|l| l.user.clone()),
            "rate_s": o.rate,
            "sources": o.sources.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "setup_only": o.setup_only,
            "setup_ms": spread_json(&self.setup_latencies),
            "auth": {
                "attempts": self.auth_replies.values().sum::<u64>(),
                "replies": auth_replies,
                "latency_ms": spread_json(&self.auth_latencies),
            },
            "late_starts": self.late_starts,
            "max_start_delay_ms": round(ms(self.max_start_delay), 2),
            "failure_events": self.failures.events(),
            "failures": self.failures.distinct().iter()
                .map(|(text, n)| json!({"count": n, "text": text}))
                .collect::<Vec<_>>(),
            "exit_code": self.exit_code(),
        })
    }
}

/// Nearest-rank percentile of sorted samples: the smallest sample such that
/// at least `p` percent of the samples are at or below it.
pub fn percentile(sorted: &[Duration], p: u32) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p.clamp(1, 100)) * n).div_ceil(100).max(1);
    Some(sorted[(rank - 1) as usize])
}

/// `p50 1.00 ms  p99 2.00 ms  max 3.00 ms` of sorted samples, or `no
/// samples`.
fn spread(sorted: &[Duration]) -> String {
    match (
        percentile(sorted, 50),
        percentile(sorted, 99),
        percentile(sorted, 100),
    ) {
        (Some(p50), Some(p99), Some(max)) => format!(
            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(p50),
            ms(p99),
            ms(max)
        ),
        _ => "no samples".to_string(),
    }
}

/// `{"samples": n, "p50": .., "p99": .., "max": ..}` in milliseconds
/// (null when there are no samples).
fn spread_json(sorted: &[Duration]) -> Value {
    let at = |p| percentile(sorted, p).map(|d| round(ms(d), 2));
    json!({
        "samples": sorted.len(),
        "p50": at(50),
        "p99": at(99),
        "max": at(100),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Login;
    use crate::tls::TlsMode;

    fn ms_vec(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank() {
        let v = ms_vec(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100), Some(Duration::from_millis(100)));
        let v = ms_vec(&[15, 20, 35, 40, 50]);
        assert_eq!(percentile(&v, 30), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&v, 40), Some(Duration::from_millis(20)));
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(35)));
        assert_eq!(percentile(&v, 99), Some(Duration::from_millis(50)));
        let v = ms_vec(&[7]);
        assert_eq!(percentile(&v, 50), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    fn report() -> Report {
        Report {
            options: Options {
                messages: 4,
                ..Options::default()
            },
            accepted: 3,
            failed: 1,
            unsent: 0,
            timed_out: false,
            connections: 10,
            connect_failures: 0,
            failures: FailureLog::default(),
            wall: Duration::from_millis(1234),
            elapsed: Duration::from_millis(1300),
            latencies: vec![
                Duration::from_micros(4100),
                Duration::from_micros(4100),
                Duration::from_micros(12_300),
                Duration::from_millis(20),
            ],
            setup_latencies: vec![],
            auth_latencies: vec![],
            auth_replies: BTreeMap::new(),
            late_starts: 0,
            max_start_delay: Duration::ZERO,
        }
    }

    #[test]
    fn text_and_json() {
        let mut r = report();
        for _ in 0..7 {
            r.failures.record("RCPT: 550 5.1.1 no such user".into());
        }
        r.failures.record("MAIL: 451 try later".into());
        let text = r.text();
        assert_eq!(
            text,
            "accepted 3  failed 1  wall 1.234 s  rate 2.4 msg/s\n\
             end-of-data reply latency: p50 4.10 ms  p99 20.00 ms  max 20.00 ms\n\
             connections 10  connect failures 0\n\
             failures: 8 (first 2 distinct):\n  7x RCPT: 550 5.1.1 no such user\n  \
             1x MAIL: 451 try later\n"
        );
        assert_eq!(r.exit_code(), 1);
        let j = r.json();
        assert_eq!(j["accepted"], 3);
        assert_eq!(j["latency_ms"]["p50"], 4.1);
        assert_eq!(j["latency_ms"]["max"], 20.0);
        assert_eq!(j["failures"][0]["count"], 7);
        assert_eq!(j["exit_code"], 1);
        assert_eq!(j["wall_s"], 1.234);
    }

    #[test]
    fn clean_run_exits_zero() {
        let r = Report {
            accepted: 4,
            failed: 0,
            ..report()
        };
        assert_eq!(r.exit_code(), 0);
        let r = Report {
            accepted: 0,
            failed: 0,
            unsent: 4,
            timed_out: true,
            latencies: vec![],
            wall: Duration::ZERO,
            ..report()
        };
        assert_eq!(r.exit_code(), 1);
        assert_eq!(r.rate(), 0.0);
        assert!(r.text().contains("latency: no samples"));
        assert!(r.text().contains("4 messages unsent"));
        assert!(r.json()["latency_ms"]["p50"].is_null());
    }

    #[test]
    fn tls_auth_and_open_loop_lines() {
        let ms_ = Duration::from_millis;
        let r = Report {
            options: Options {
                tls: TlsMode::StartTls,
                auth: Some(Login {
                    user: "u@x.test".into(),
                    password: "secret-pw".into(),
                }),
                rate: Some(50.0),
                sessions: 20,
                ..Options::default()
            },
            setup_latencies: vec![ms_(3), ms_(5)],
            auth_latencies: vec![ms_(1), ms_(2)],
            auth_replies: [(235, 3), (535, 1)].into(),
            late_starts: 2,
            max_start_delay: Duration::from_micros(1500),
            ..report()
        };
        let text = r.text();
        assert!(
            text.contains(
                "\nsession set-up (connect to ready for MAIL): p50 3.00 ms  p99 5.00 ms  max 5.00 ms\n\
                 AUTH replies: 3x 235, 1x 535; latency p50 1.00 ms  p99 2.00 ms  max 2.00 ms\n\
                 open loop at 50 sessions/s: 2 starts waited for a free session (at most 20 open); \
                 latest start 1.50 ms after its time\n"
            ),
            "{text}"
        );
        let j = r.json();
        assert_eq!(j["tls"], "starttls");
        assert_eq!(j["auth_user"], "u@x.test");
        assert_eq!(j["auth"]["attempts"], 4);
        assert_eq!(j["auth"]["replies"]["535"], 1);
        assert_eq!(j["auth"]["latency_ms"]["p99"], 2.0);
        assert_eq!(j["setup_ms"]["p50"], 3.0);
        assert_eq!(j["rate_s"], 50.0);
        assert_eq!(j["late_starts"], 2);
        assert_eq!(j["max_start_delay_ms"], 1.5);
        // The password is never shown.
        assert!(!text.contains("secret-pw") && !j.to_string().contains("secret-pw"));
        assert!(!format!("{:?}", r.options).contains("secret-pw"));
        // Without TLS, AUTH or a rate, none of those lines.
        let plain = report().text();
        assert!(
            !plain.contains("set-up") && !plain.contains("AUTH") && !plain.contains("open loop")
        );
        assert_eq!(report().json()["tls"], "none");
        assert!(report().json()["auth_user"].is_null());
    }

    #[test]
    fn failure_log_merges_and_caps() {
        let mut a = FailureLog::default();
        for i in 0..40 {
            a.record(format!("text {i}"));
        }
        assert_eq!(a.events(), 40);
        assert_eq!(a.distinct().len(), MAX_DISTINCT);
        let mut b = FailureLog::default();
        b.record("text 0".into());
        b.record("other".into());
        b.merge(a);
        assert_eq!(b.events(), 42);
        assert_eq!(b.distinct()[0], ("text 0".to_string(), 2));
        assert_eq!(b.distinct().len(), MAX_DISTINCT);
    }
}
