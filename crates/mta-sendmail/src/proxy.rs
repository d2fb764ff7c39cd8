//! `-bs`: SMTP on standard input and output, as Postfix runs its
//! stand-alone `smtpd` there. The bytes go both ways to mtad's local
//! socket unchanged, so the session is mtad's own, with its checks and
//! deadlines, and its peer is this process: the user. With mtad down,
//! the session is this process's own, and its messages go to the drop
//! directory (`standalone.rs`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use mta_config::sendmail::SendmailConfig;
use mta_sendmail::Exit;

use crate::identity::{DropGroup, Me};

/// Relays standard input to the socket and the socket to standard output
/// until the server closes the connection; with no server to connect
/// to, runs a stand-alone session.
pub fn run(config: &SendmailConfig, group: &DropGroup) -> Exit {
    let stream = match UnixStream::connect(&config.socket) {
        Ok(s) => s,
        Err(_) => return crate::standalone::run(config, group, &Me::current()),
    };
    let Ok(mut to_server) = stream.try_clone() else {
        return Exit::OsErr;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let mut from_server = stream;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from_server.read(&mut buf) {
            Ok(0) => return Exit::Ok,
            Ok(n) => {
                // Flushed at once: the client waits for each reply.
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    return Exit::Ok;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("mta-sendmail: the connection to mtad failed: {e}");
                return Exit::TempFail;
            }
        }
    }
}
