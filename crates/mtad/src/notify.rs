//! systemd's readiness protocol (`sd_notify(3)`), without libsystemd.
//!
//! Under `Type=notify`, systemd names a Unix datagram socket in
//! `NOTIFY_SOCKET` (a path, or `@name` for the Linux abstract namespace);
//! the service sends it newline-separated `KEY=VALUE` assignments, one
//! datagram per message. Elsewhere the variable is unset and every call
//! here does nothing.
//!
//! The variable is left in the environment on purpose: a restart
//! re-executes mtad in the same process (same PID, so systemd's
//! `MainPID` and `NotifyAccess=main` stay right), and the new image must
//! be able to say `READY=1` too.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (such as `"READY=1\nSTATUS=accepting mail"`) to the
/// socket in `NOTIFY_SOCKET`. `Ok(false)`: not run under systemd
/// (variable unset or empty), nothing sent; `Ok(true)`: sent.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) if !target.is_empty() => send(&target, state).map(|()| true),
        _ => Ok(false),
    }
}

/// The service is ready (startup done, or a reload or restart done);
/// `status` is shown by `systemctl status`.
pub fn ready(status: &str) -> io::Result<bool> {
    notify(&format!("READY=1\nSTATUS={status}"))
}

/// A reload or restart begins; `READY=1` ends it. `MONOTONIC_USEC` (the
/// time of the request on `CLOCK_MONOTONIC`) is what `Type=notify-reload`
/// needs to tell this reload from an earlier one.
pub fn reloading() -> io::Result<bool> {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        monotonic_usec()?
    ))
}

/// The service is stopping.
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// A free-form status line for `systemctl status`.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&format!("STATUS={text}"))
}

/// Sends one datagram to `target`: an absolute path, or `@name` in the
/// abstract namespace.
fn send(target: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;
    let bytes = target.as_bytes();
    let addr = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(target)?,
        #[cfg(target_os = "linux")]
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..])?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {target:?}: not an absolute path or @abstract name"),
            ))
        }
    };
    let socket = UnixDatagram::unbound()?;
    // systemd reads its socket at once; never hang a stop on it.
    socket.set_write_timeout(Some(Duration::from_secs(1)))?;
    let sent = socket.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("NOTIFY_SOCKET: sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` now, in microseconds (what systemd compares with).
fn monotonic_usec() -> io::Result<u64> {
    use nix::libc;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Never negative for this clock.
    let secs = u64::try_from(now.tv_sec).unwrap_or_default();
    let nanos = u64::try_from(now.tv_nsec).unwrap_or_default();
    Ok(secs * 1_000_000 + nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fresh directory under the system's temporary directory.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir =
                std::env::temp_dir().join(format!("mtad-{tag}-{}-{nanos:x}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Every assertion that touches `NOTIFY_SOCKET` is here: the
    /// environment is shared by the test threads.
    #[test]
    fn notify_follows_notify_socket() {
        let saved = std::env::var_os("NOTIFY_SOCKET");

        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap(), "unset: nothing sent");
        std::env::set_var("NOTIFY_SOCKET", "");
        assert!(!ready("x").unwrap(), "empty: nothing sent");

        let dir = TempDir::new("notify");
        let path = dir.0.join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);

        assert!(notify("READY=1\nSTATUS=accepting mail\nMAINPID=123").unwrap());
        assert_eq!(
            receive(&systemd),
            "READY=1\nSTATUS=accepting mail\nMAINPID=123"
        );

        assert!(ready("accepting mail").unwrap());
        assert_eq!(receive(&systemd), "READY=1\nSTATUS=accepting mail");

        let before = monotonic_usec().unwrap();
        assert!(reloading().unwrap());
        let after = monotonic_usec().unwrap();
        let got = receive(&systemd);
        let usec: u64 = got
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("unexpected: {got:?}"))
            .parse()
            .unwrap();
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );

        assert!(stopping().unwrap());
        assert_eq!(receive(&systemd), "STOPPING=1");

        assert!(status("3 sessions open").unwrap());
        assert_eq!(receive(&systemd), "STATUS=3 sessions open");

        // Left in place for the image a restart executes.
        assert_eq!(std::env::var_os("NOTIFY_SOCKET"), Some(path.clone().into()));

        // Nobody listening: an error, for the caller to ignore or log.
        drop(systemd);
        std::fs::remove_file(&path).unwrap();
        assert!(ready("x").is_err());

        // Neither a path nor an abstract name.
        std::env::set_var("NOTIFY_SOCKET", "relative.sock");
        assert_eq!(ready("x").unwrap_err().kind(), io::ErrorKind::InvalidInput);

        match saved {
            Some(v) => std::env::set_var("NOTIFY_SOCKET", v),
            None => std::env::remove_var("NOTIFY_SOCKET"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_work() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!(
            "mtad-notify-test-{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let systemd =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1\nSTATUS=abstract").unwrap();
        assert_eq!(receive(&systemd), "READY=1\nSTATUS=abstract");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec().unwrap();
        assert!(b >= a + 1_000, "{a} then {b}");
    }
}
