//! `mta-init start`: start mtad in the background and wait until it is
//! ready, or report why it is not.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mta_config::Config;

use crate::process::{probe, Daemon};

/// Starts the daemon; returns its PID once it answers on the control socket.
pub fn run(
    config: &Config,
    config_path: Option<&Path>,
    mtad: &Path,
    wait: Duration,
) -> Result<i32> {
    let pid_file = config.pid_file();
    match probe(config) {
        Daemon::Answering(status) => bail!(
            "mtad is already running (pid {}, control socket {}); not starting a second one",
            status.pid,
            config.control_socket().display()
        ),
        Daemon::Silent { pid, .. } => bail!(
            "mtad is already running (pid {pid}, PID file {}); not starting a second one",
            pid_file.display()
        ),
        // Never remove the PID file of a daemon we may not see.
        Daemon::NotPermitted(e) => return Err(e.into()),
        Daemon::Dead(pid) => {
            println!(
                "removing stale PID file {} (pid {pid} is gone)",
                pid_file.display()
            );
            std::fs::remove_file(&pid_file)
                .with_context(|| format!("removing stale PID file {}", pid_file.display()))?;
        }
        Daemon::NotRunning => {}
    }
    // Private from the start (mtad sets the queue directory's final mode
    // and owner itself); its parents are the operator's.
    if let Some(parent) = config
        .queue_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating directory {}", parent.display()))?;
    }
    if let Err(e) = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&config.queue_dir)
    {
        if !config.queue_dir.is_dir() {
            return Err(e).with_context(|| {
                format!("creating queue directory {}", config.queue_dir.display())
            });
        }
    }
    let log_path = config.daemon_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        // mtad's output names senders and recipients (mtad makes it
        // exactly 0640 when it opens it in turn).
        .mode(0o640)
        .open(&log_path)
        .with_context(|| format!("opening daemon log {}", log_path.display()))?;

    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);

    let mut command = Command::new(mtad);
    if let Some(path) = config_path {
        command.arg("--config").arg(path);
    }
    // mtad reopens it itself on `reopen-logs` and graceful restarts; the
    // redirection below catches what it prints before it gets that far.
    command.arg("--log-file").arg(&log_path);
    command
        .env_remove("MTA_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("daemon log")?)
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe; it detaches the daemon from our
    // terminal and process group so a closing shell does not signal it.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {}", mtad.display()))?;
    let pid = child.id() as i32;
    println!("starting mtad (pid {pid}), log in {}", log_path.display());

    let began = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().context("waiting for mtad")? {
            let output = read_from(&log_path, log_start);
            bail!("mtad failed to start ({exit}):\n{}", output.trim_end());
        }
        if crate::status::query(config).is_ok() {
            return Ok(pid);
        }
        if began.elapsed() > wait {
            bail!(
                "mtad (pid {pid}) did not become ready within {:?}; see {}",
                wait,
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.seek(SeekFrom::Start(offset));
        let _ = f.read_to_string(&mut text);
    }
    text
}
