//! A private Dovecot as a SASL backend, for tests: no mail protocols,
//! only the `auth-client` socket Postfix and mtad use, on a config,
//! socket and users file in a directory of the test's own. Needs root
//! (Dovecot's processes run as root in this set-up) and Debian's
//! `dovecot-core` (tests/install-peers.sh). Stopped on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where Debian installs it.
pub const DOVECOT: &str = "/usr/sbin/dovecot";

/// A private Dovecot, stopped on drop.
pub struct Dovecot {
    dir: PathBuf,
    pid: u32,
}

impl Dovecot {
    /// Starts one in `dir` (its config, sockets, state and log go
    /// there), with `users` as its passwd-file (`name:{SCHEME}hash` lines,
    /// `CRYPT` the default scheme); waits (at most 10 s) for its
    /// `auth-client` socket.
    pub fn start(dir: &Path, users: &Path) -> Dovecot {
        for sub in ["run", "state", "home"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        let config = format!(
            "base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             log_path = {d}/dovecot.log\n\
             protocols =\n\
             ssl = no\n\
             default_internal_user = root\n\
             default_login_user = root\n\
             default_internal_group = root\n\
             auth_mechanisms = plain login\n\
             # Logs each failure with the user and the rip we sent.\n\
             auth_verbose = yes\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=CRYPT {users}\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home\n}}\n\
             service auth {{\n  unix_listener auth-client {{\n    path = {d}/auth-client\n    mode = 0600\n  }}\n}}\n",
            users = users.display()
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config).unwrap();
        let status = std::process::Command::new(DOVECOT)
            .arg("-c")
            .arg(&conf)
            .status()
            .expect("run dovecot");
        assert!(status.success(), "dovecot -c {}: {status}", conf.display());
        // It forks into the background; its socket shows it is ready.
        let pid_file = dir.join("run/master.pid");
        for _ in 0..400 {
            if dir.join("auth-client").exists() && pid_file.exists() {
                let pid = std::fs::read_to_string(&pid_file).unwrap();
                if let Ok(pid) = pid.trim().parse() {
                    return Dovecot {
                        dir: dir.to_owned(),
                        pid,
                    };
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "dovecot did not come up in 10 s; its log: {}",
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
    }

    /// Its `auth-client` socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("auth-client")
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// SIGTERM to the master, then wait (bounded) for it to be gone.
    pub fn stop(&mut self) {
        if self.pid == 0 {
            return;
        }
        let _ = std::process::Command::new("kill")
            .arg(self.pid.to_string())
            .status();
        for _ in 0..400 {
            if !Path::new(&format!("/proc/{}", self.pid)).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.pid = 0;
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
