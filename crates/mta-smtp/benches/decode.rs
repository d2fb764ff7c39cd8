//! How fast a session takes message text: EHLO, MAIL, RCPT, DATA and the
//! text of a 4 KiB and a 100 KiB message, in reads of 16 KiB as a socket
//! gives them, many times over; prints MB/s per size.
//!
//!     cargo bench -p mta-smtp --bench decode
//!
//! A before/after measure of the DATA decoder, not a test: it asserts only
//! that every message was stored.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use mta_smtp::{Admission, Session, SessionConfig, Step};

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        max_message_size: 1 << 20,
        max_recipients: 100,
        recipient_overshoot_limit: 200,
        max_command_line: 512,
        max_line_length: 1000,
        max_errors: 5,
        tls_available: false,
        local_domains: vec!["local.test".into()],
        local_recipients: None,
        relay_networks: vec!["127.0.0.0/8".parse().unwrap()],
        auth: None,
        sender_policy: None,
    }
}

/// A message of `size` octets in 78-octet lines, as mta-loadgen sends.
fn wire(size: usize) -> Vec<u8> {
    let mut text = b"From: a@b.test\r\nTo: x@local.test\r\nSubject: bench\r\n\r\n".to_vec();
    let line = format!("{}\r\n", "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2));
    while text.len() < size {
        text.extend_from_slice(line.as_bytes());
    }
    let mut all = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@local.test>\r\nDATA\r\n".to_vec();
    all.extend_from_slice(&text);
    all.extend_from_slice(b".\r\n");
    all
}

fn run(size: usize, messages: usize) -> f64 {
    let config = Arc::new(config());
    let one = wire(size);
    let mut session = Session::new(
        config,
        Arc::new(Admission::default()),
        "127.0.0.1".parse().unwrap(),
    );
    let mut input = BytesMut::from(&b"EHLO c\r\n"[..]);
    let _ = session.poll(&mut input);
    let began = Instant::now();
    let mut stored = 0;
    for _ in 0..messages {
        for chunk in one.chunks(16 * 1024) {
            input.extend_from_slice(chunk);
            loop {
                match session.poll(&mut input) {
                    Step::NeedInput => break,
                    Step::Store(m) => {
                        stored += 1;
                        std::hint::black_box(&m.content);
                        let _ = session.stored(Ok(mta_envelope::QueueId::new(stored as u64)));
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(stored, messages);
    let secs = began.elapsed().as_secs_f64();
    (one.len() * messages) as f64 / secs / 1e6
}

fn main() {
    for (size, messages) in [(4 * 1024, 20_000), (100 * 1024, 2_000)] {
        let best = (0..5).map(|_| run(size, messages)).fold(0.0, f64::max);
        println!("{:>4} KiB: {best:.0} MB/s (best of 5)", size / 1024);
    }
}
