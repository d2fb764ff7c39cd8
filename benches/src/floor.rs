//! mta-floor: the least work a relay does that makes each message durable
//! before its 250, for `benches/floor.sh` to measure beside mtad.
//!
//! It is not an MTA. It answers any command with 250 (DATA with 354),
//! keeps the message's wire text as it came (no unstuffing, no headers
//! added, the end found only at the end of what was read), and relays it
//! to one sink. What it keeps of mtad's durable path, no less: the text
//! written over a kept file (or a new one), fdatasynced, linked into
//! `msg/`, that directory fsynced (one fsync shared by every link made
//! before it started: group commit) before the 250; then a relay thread
//! sends it to the sink over a connection it keeps, and on the sink's
//! 250 unlinks the `msg/` name and gives the file back for the next
//! message. Blocking threads, one per client connection (from a pool
//! that accepts in turn) and a fixed pool of relay threads.
//!
//! So the rate a relay can reach on this machine with this durability,
//! whatever its parser, queue and scheduler cost, is measured rather
//! than argued.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use anyhow::{bail, Context, Result};
use clap::Parser;

#[path = "floor/event_loop.rs"]
mod event_loop;

#[derive(Parser)]
#[command(about = "The least a relay that fsyncs before 250 does (a benchmark's yardstick)")]
struct Args {
    /// Address to listen on; the bound one is printed.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// The sink every message goes to.
    #[arg(long)]
    sink: String,
    /// Directory for `tmp/` and `msg/` (created).
    #[arg(long)]
    dir: PathBuf,
    /// Client connections served at once.
    #[arg(long, default_value_t = 64)]
    sessions: usize,
    /// Connections to the sink (one thread each).
    #[arg(long, default_value_t = 20)]
    relays: usize,
    /// Neither fdatasync nor directory fsync: what durability costs,
    /// measured (the files are still written, linked and unlinked).
    #[arg(long)]
    no_fsync: bool,
    /// Make the written files durable with one syncfs(2) of the spool's
    /// file system shared by every store waiting, instead of an
    /// fdatasync each.
    #[arg(long)]
    syncfs: bool,
    /// Serve the sessions and the relay on a tokio runtime of one worker
    /// thread per CPU (as mtad does) instead of a thread per connection;
    /// the stores then run on tokio's blocking pool.
    #[arg(long)]
    event_loop: bool,
}

/// A message made durable, on its way to the sink: its buffer holds the
/// length field, then the wire text up to `end`.
struct Queued {
    buf: Vec<u8>,
    end: usize,
    slot: PathBuf,
    name: PathBuf,
}

/// Room before the wire text for its length, written into the file with
/// it in one write.
const HEAD: usize = 16;

/// Buffers a message is read into and relayed from, zeroed once and then
/// reused: the text goes from the socket into one and is not copied again
/// in user space.
#[derive(Default)]
struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    fn take(&self) -> Vec<u8> {
        let kept = self.0.lock().unwrap().pop();
        kept.unwrap_or_else(|| vec![0; 256 * 1024])
    }

    fn give(&self, buf: Vec<u8>) {
        self.0.lock().unwrap().push(buf);
    }
}

/// A flush shared by the stores that came before it started: the
/// directory's fsync, or the file system's syncfs.
struct SharedFlush {
    file: File,
    flush: fn(&File) -> io::Result<()>,
    state: Mutex<FlushState>,
    done: Condvar,
}

#[derive(Default)]
struct FlushState {
    started: u64,
    finished: u64,
    running: bool,
}

impl SharedFlush {
    fn new(file: File, flush: fn(&File) -> io::Result<()>) -> SharedFlush {
        SharedFlush {
            file,
            flush,
            state: Mutex::default(),
            done: Condvar::new(),
        }
    }

    /// Returns once a flush that started after the call began has
    /// finished (the caller's, or one it waited for).
    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let ticket = st.started + 1;
        while st.finished < ticket {
            if st.running {
                st = self.done.wait(st).unwrap();
                continue;
            }
            st.running = true;
            st.started += 1;
            let generation = st.started;
            drop(st);
            let result = (self.flush)(&self.file);
            st = self.state.lock().unwrap();
            st.running = false;
            st.finished = generation;
            self.done.notify_all();
            result?;
        }
        Ok(())
    }
}

fn syncfs(file: &File) -> io::Result<()> {
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(file)).map_err(io::Error::from)
}

/// How a store makes its file durable before the link.
enum Durability {
    /// An fdatasync of the file; the link then waits for the directory's
    /// shared fsync.
    Fsync,
    /// One syncfs shared by the stores waiting; then the directory's
    /// shared fsync.
    Syncfs(SharedFlush),
    /// Neither fsync (what durability costs, measured).
    None,
}

struct Spool {
    tmp: PathBuf,
    msg: PathBuf,
    free: Mutex<Vec<PathBuf>>,
    next: AtomicU64,
    dir_sync: SharedFlush,
    durability: Durability,
    buffers: Buffers,
}

impl Spool {
    /// Writes `buf` (the wire text after its length's [`HEAD`] bytes, put
    /// there now) over a kept file or a new one, fdatasyncs it, links it
    /// into `msg/` and waits for that directory's fsync. Returns the
    /// file's two names.
    fn store(&self, buf: &mut [u8]) -> io::Result<(PathBuf, PathBuf)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = self.free.lock().unwrap().pop();
        let slot = slot.unwrap_or_else(|| self.tmp.join(format!("free.{n}")));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&slot)?;
        let field = format!("{:>w$}\n", buf.len() - HEAD, w = HEAD - 1);
        buf[..HEAD].copy_from_slice(field.as_bytes());
        file.write_all_at(buf, 0)?;
        match &self.durability {
            Durability::Fsync => file.sync_data()?,
            Durability::Syncfs(fs) => fs.sync()?,
            Durability::None => {}
        }
        drop(file);
        let name = self.msg.join(format!("m{n}"));
        fs::hard_link(&slot, &name)?;
        if !matches!(self.durability, Durability::None) {
            self.dir_sync.sync()?;
        }
        Ok((slot, name))
    }

    /// The sink took `q`: its `msg/` name goes and its file is kept.
    /// Returns its buffer.
    fn done(&self, q: Queued) -> io::Result<Vec<u8>> {
        fs::remove_file(&q.name)?;
        self.free.lock().unwrap().push(q.slot);
        Ok(q.buf)
    }
}

/// What follows a command.
enum Next {
    Command,
    Data,
    Quit,
}

/// The floor's answer to a command line (any command but DATA and QUIT
/// gets 250), and what follows it.
fn answer(line: &[u8]) -> (&'static [u8], Next) {
    match &line.get(..4).unwrap_or(line).to_ascii_uppercase()[..] {
        b"QUIT" => (b"221 2.0.0 bye\r\n", Next::Quit),
        b"DATA" => (b"354 go ahead\r\n", Next::Data),
        b"EHLO" => (b"250-floor\r\n250 PIPELINING\r\n", Next::Command),
        _ => (b"250 2.0.0 ok\r\n", Next::Command),
    }
}

const GREETING: &[u8] = b"220 floor ESMTP\r\n";
const QUEUED: &[u8] = b"250 2.0.0 queued\r\n";
/// Every message's envelope on the way to the sink, pipelined.
const ENVELOPE: &[u8] =
    b"MAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n";

/// Whether the wire text read so far (the client sends nothing after it
/// before the reply) ends the data.
fn data_ended(text: &[u8]) -> bool {
    text.ends_with(b"\r\n.\r\n") || text == b".\r\n"
}

/// Takes reply lines off the front of `buf` up to a final one, which
/// must start with `code`: true when one was taken, false when no whole
/// final line is there yet.
fn take_reply(buf: &mut Vec<u8>, code: &[u8]) -> Result<bool> {
    while let Some(lf) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=lf).collect();
        if line.get(3) == Some(&b'-') {
            continue;
        }
        if !line.starts_with(code) {
            bail!(
                "the sink said {:?}, {} expected",
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(code)
            );
        }
        return Ok(true);
    }
    Ok(false)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let tmp = args.dir.join("tmp");
    let msg = args.dir.join("msg");
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(&msg)?;
    let durability = if args.no_fsync {
        Durability::None
    } else if args.syncfs {
        Durability::Syncfs(SharedFlush::new(File::open(&tmp)?, syncfs))
    } else {
        Durability::Fsync
    };
    let spool = Arc::new(Spool {
        dir_sync: SharedFlush::new(File::open(&msg).context("opening msg/")?, File::sync_all),
        durability,
        tmp,
        msg,
        free: Mutex::default(),
        next: AtomicU64::new(0),
        buffers: Buffers::default(),
    });

    if args.event_loop {
        return event_loop::run(&args, spool);
    }

    let (tx, rx) = mpsc::channel::<Queued>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..args.relays {
        let (rx, spool, sink) = (rx.clone(), spool.clone(), args.sink.clone());
        thread::spawn(move || {
            if let Err(e) = relay(&sink, &rx, &spool) {
                eprintln!("mta-floor: relay: {e:#}");
                std::process::exit(1);
            }
        });
    }

    let listener = TcpListener::bind(&args.listen)?;
    println!("mta-floor: listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let listener = Arc::new(listener);
    let workers: Vec<_> = (0..args.sessions)
        .map(|_| {
            let (listener, spool, tx) = (listener.clone(), spool.clone(), tx.clone());
            thread::spawn(move || loop {
                let Ok((stream, _)) = listener.accept() else {
                    continue;
                };
                if let Err(e) = serve(stream, &spool, &tx) {
                    eprintln!("mta-floor: session: {e:#}");
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

/// One client connection.
fn serve(mut stream: TcpStream, spool: &Spool, tx: &mpsc::Sender<Queued>) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(GREETING)?;
    let mut buf = spool.buffers.take();
    // What was read and not yet used: buf[start..end].
    let (mut start, mut end) = (0, 0);
    let mut in_data = false;
    loop {
        if in_data {
            if data_ended(&buf[HEAD..end]) {
                let (slot, name) = spool.store(&mut buf[..end])?;
                stream.write_all(QUEUED)?;
                let full = std::mem::replace(&mut buf, spool.buffers.take());
                tx.send(Queued {
                    buf: full,
                    end,
                    slot,
                    name,
                })?;
                (start, end, in_data) = (0, 0, false);
                continue;
            }
        } else if let Some(lf) = buf[start..end].iter().position(|&b| b == b'\n') {
            let (reply, next) = answer(&buf[start..start + lf]);
            start += lf + 1;
            stream.write_all(reply)?;
            match next {
                Next::Quit => {
                    spool.buffers.give(buf);
                    return Ok(());
                }
                Next::Data => {
                    // The text goes after the room for its length.
                    buf.copy_within(start..end, HEAD);
                    (end, in_data) = (HEAD + end - start, true);
                }
                Next::Command if start == end => (start, end) = (0, 0),
                Next::Command => {}
            }
            continue;
        }
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = stream.read(&mut buf[end..])?;
        if n == 0 {
            spool.buffers.give(buf);
            return Ok(());
        }
        end += n;
    }
}

/// A relay thread: one connection to the sink, a message at a time.
fn relay(sink: &str, rx: &Mutex<mpsc::Receiver<Queued>>, spool: &Spool) -> Result<()> {
    let mut conn = TcpStream::connect(sink).with_context(|| format!("connecting to {sink}"))?;
    conn.set_nodelay(true)?;
    let mut replies = Vec::new();
    expect(&mut conn, &mut replies, 1, b"220")?;
    conn.write_all(b"EHLO floor\r\n")?;
    expect(&mut conn, &mut replies, 1, b"250")?;
    loop {
        let q = match rx.lock().unwrap().recv() {
            Ok(q) => q,
            Err(_) => return Ok(()),
        };
        conn.write_all(ENVELOPE)?;
        expect(&mut conn, &mut replies, 2, b"250")?;
        expect(&mut conn, &mut replies, 1, b"354")?;
        conn.write_all(&q.buf[HEAD..q.end])?;
        expect(&mut conn, &mut replies, 1, b"250")?;
        let buf = spool.done(q)?;
        spool.buffers.give(buf);
    }
}

/// Reads `n` final reply lines from the sink, each starting with `code`.
fn expect(conn: &mut TcpStream, buf: &mut Vec<u8>, n: usize, code: &[u8]) -> Result<()> {
    let mut got = 0;
    let mut chunk = [0u8; 4096];
    while got < n {
        if take_reply(buf, code)? {
            got += 1;
            continue;
        }
        let r = conn.read(&mut chunk)?;
        if r == 0 {
            bail!("the sink closed the connection");
        }
        buf.extend_from_slice(&chunk[..r]);
    }
    Ok(())
}
