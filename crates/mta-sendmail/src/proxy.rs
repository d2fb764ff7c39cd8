//! `-bs`: SMTP on standard input and output, as Postfix runs its
//! stand-alone `smtpd` there. The bytes go both ways to mtad's local
//! socket unchanged, so the session is mtad's own, with its checks and
//! deadlines, and its peer is this process: the user.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use mta_sendmail::Exit;

/// Relays standard input to the socket and the socket to standard output
/// until the server closes the connection.
pub fn run(socket: &Path) -> Exit {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            // There is no session to relay: the client hears what a
            // server that cannot serve says instead of its banner (RFC
            // 5321 section 3.1), and tries again later.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(b"421 4.3.2 local mail system unavailable, try again later\r\n");
            let _ = out.flush();
            eprintln!("mta-sendmail: cannot connect to {}: {e}", socket.display());
            return Exit::TempFail;
        }
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
