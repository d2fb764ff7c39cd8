//! mta-floor's `--event-loop` mode: the same work as the threads of
//! `floor.rs`, on a tokio runtime with one worker thread per CPU, as mtad
//! runs its sessions and deliveries. A store (write, fdatasync, link,
//! shared directory fsync) runs on tokio's blocking pool; the session
//! answers 250 when it returns.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};

use super::{
    answer, data_ended, take_reply, Args, Next, Queued, Spool, ENVELOPE, GREETING, HEAD, QUEUED,
};

pub(crate) fn run(args: &Args, spool: Arc<Spool>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve_all(args, spool))
}

async fn serve_all(args: &Args, spool: Arc<Spool>) -> Result<()> {
    let (tx, rx) = mpsc::unbounded_channel::<Queued>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..args.relays {
        let (rx, spool, sink) = (rx.clone(), spool.clone(), args.sink.clone());
        tokio::spawn(async move {
            if let Err(e) = relay(&sink, &rx, &spool).await {
                eprintln!("mta-floor: relay: {e:#}");
                std::process::exit(1);
            }
        });
    }
    let listener = TcpListener::bind(&args.listen).await?;
    println!("mta-floor: listening on {}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    loop {
        let (stream, _) = listener.accept().await?;
        let (spool, tx) = (spool.clone(), tx.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(stream, spool, tx).await {
                eprintln!("mta-floor: session: {e:#}");
            }
        });
    }
}

/// One client connection: the same protocol as the threads' `serve`.
async fn serve(
    mut stream: TcpStream,
    spool: Arc<Spool>,
    tx: mpsc::UnboundedSender<Queued>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    stream.write_all(GREETING).await?;
    // What was read and not yet used: buf[start..]; read_buf fills the
    // spare room without zeroing it.
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut start = 0;
    let mut in_data = false;
    loop {
        if in_data {
            if data_ended(&buf[HEAD..]) {
                let end = buf.len();
                let store = spool.clone();
                let (full, stored) = tokio::task::spawn_blocking(move || {
                    let mut full = buf;
                    let stored = store.store(&mut full[..end]);
                    (full, stored)
                })
                .await?;
                let (slot, name) = stored?;
                stream.write_all(QUEUED).await?;
                tx.send(Queued {
                    buf: full,
                    end,
                    slot,
                    name,
                })?;
                buf = Vec::with_capacity(256 * 1024);
                (start, in_data) = (0, false);
                continue;
            }
        } else if let Some(lf) = buf[start..].iter().position(|&b| b == b'\n') {
            let (reply, next) = answer(&buf[start..start + lf]);
            start += lf + 1;
            stream.write_all(reply).await?;
            match next {
                Next::Quit => return Ok(()),
                Next::Data => {
                    // The text goes after the room for its length.
                    let rest = buf.split_off(start);
                    buf.clear();
                    buf.resize(HEAD, b' ');
                    buf.extend_from_slice(&rest);
                    (start, in_data) = (0, true);
                }
                Next::Command if start == buf.len() => {
                    buf.clear();
                    start = 0;
                }
                Next::Command => {}
            }
            continue;
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(buf.capacity());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// A relay task: one connection to the sink, a message at a time.
async fn relay(
    sink: &str,
    rx: &Mutex<mpsc::UnboundedReceiver<Queued>>,
    spool: &Spool,
) -> Result<()> {
    let mut conn = TcpStream::connect(sink)
        .await
        .with_context(|| format!("connecting to {sink}"))?;
    conn.set_nodelay(true)?;
    let mut replies = Vec::new();
    expect(&mut conn, &mut replies, 1, b"220").await?;
    conn.write_all(b"EHLO floor\r\n").await?;
    expect(&mut conn, &mut replies, 1, b"250").await?;
    loop {
        let Some(q) = rx.lock().await.recv().await else {
            return Ok(());
        };
        conn.write_all(ENVELOPE).await?;
        expect(&mut conn, &mut replies, 2, b"250").await?;
        expect(&mut conn, &mut replies, 1, b"354").await?;
        conn.write_all(&q.buf[HEAD..q.end]).await?;
        expect(&mut conn, &mut replies, 1, b"250").await?;
        // (the buffer is dropped: sessions here read into new ones)
        spool.done(q)?;
    }
}

/// Reads `n` final reply lines from the sink, each starting with `code`.
async fn expect(conn: &mut TcpStream, buf: &mut Vec<u8>, n: usize, code: &[u8]) -> Result<()> {
    let mut got = 0;
    while got < n {
        if take_reply(buf, code)? {
            got += 1;
            continue;
        }
        buf.reserve(4096);
        if conn.read_buf(buf).await? == 0 {
            bail!("the sink closed the connection");
        }
    }
    Ok(())
}
