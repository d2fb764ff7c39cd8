//! mta-floor (benches/floor.sh's yardstick) relays what it is sent, and
//! keeps its files the way it says: the load generator sends through it
//! to a small sink here, and every message arrives whole, `msg/` ends
//! empty and the files stay in `tmp/` for the next messages; with its
//! threads and on its event loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use mta_bench::{run, Options};

/// A sink that takes pipelined MAIL, RCPT and DATA and keeps each
/// message's text (dot-stuffing undone).
fn sink() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let kept = messages.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let kept = kept.clone();
            thread::spawn(move || serve_sink(stream, &kept));
        }
    });
    (addr, messages)
}

fn serve_sink(stream: TcpStream, messages: &Mutex<Vec<Vec<u8>>>) {
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 sink\r\n").unwrap();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or(&line).to_ascii_uppercase();
        let reply: &[u8] = match &verb[..] {
            b"EHLO" => b"250-sink\r\n250 PIPELINING\r\n",
            b"DATA" => {
                out.write_all(b"354 go\r\n").unwrap();
                let mut text = Vec::new();
                loop {
                    line.clear();
                    reader.read_until(b'\n', &mut line).unwrap();
                    if line == b".\r\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
                    text.extend_from_slice(unstuffed);
                }
                messages.lock().unwrap().push(text);
                b"250 taken\r\n"
            }
            b"QUIT" => {
                let _ = out.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"250 ok\r\n",
        };
        out.write_all(reply).unwrap();
    }
}

struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn floor(sink: SocketAddr, dir: &std::path::Path, more: &[&str]) -> Floor {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mta-floor"))
        .args([
            "--sink",
            &sink.to_string(),
            "--relays",
            "3",
            "--sessions",
            "8",
        ])
        .arg("--dir")
        .arg(dir)
        .args(more)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("mta-floor: listening on ")
        .unwrap_or_else(|| panic!("mta-floor said {first:?}"))
        .parse()
        .unwrap();
    Floor { child, addr }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_relayed_whole_and_its_file_kept_for_the_next() {
    relays_whole_and_keeps_files(&[]).await;
}

/// The same on its event loop (`--event-loop`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_event_loop_too() {
    relays_whole_and_keeps_files(&["--event-loop"]).await;
}

async fn relays_whole_and_keeps_files(mode: &[&str]) {
    let (sink_addr, messages) = sink();
    let dir = tempfile::tempdir().unwrap();
    let floor = floor(sink_addr, dir.path(), mode);
    let o = Options {
        server: floor.addr,
        sessions: 4,
        messages: 60,
        size: 20_000,
        per_connection: 1,
        timeout: Duration::from_secs(60),
        ..Options::default()
    };
    let report = run(&o).await.unwrap();
    assert_eq!(report.accepted, 60, "{report:?}");

    // The 250 comes before the relay: wait (bounded) for the sink.
    for _ in 0..600 {
        if messages.lock().unwrap().len() == 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = messages.lock().unwrap().clone();
    assert_eq!(got.len(), 60);
    for m in &got {
        assert_eq!(m.len(), 20_000);
        assert!(m.starts_with(format!("From: {}", o.from).as_bytes()));
    }

    // Relayed messages lose their msg/ name (after the sink's 250, which
    // came before the sink kept the text, so wait for it too).
    let in_msg = || std::fs::read_dir(dir.path().join("msg")).unwrap().count();
    for _ in 0..600 {
        if in_msg() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(in_msg(), 0);
    let kept = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert!((1..60).contains(&kept), "{kept} files in tmp/");

    // A kept file starts with its text's length.
    let any = std::fs::read_dir(dir.path().join("tmp"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut head = String::new();
    std::fs::File::open(any)
        .unwrap()
        .take(16)
        .read_to_string(&mut head)
        .unwrap();
    let length: usize = head.trim().parse().unwrap();
    assert!(length > 20_000, "{head:?}");
    drop(floor);
}
