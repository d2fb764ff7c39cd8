//! Local users: who may read the queue and delivered mail, and who may
//! steer the daemon (issue 10, point 6).
//!
//! These run as root in CI: they start mtad under a umask of 000, let it
//! switch to `nobody`, and run mta-init as other uids. Without root they
//! are skipped with a note on standard error.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::*;

/// `nobody` and `nogroup` on Debian-like systems (and in CI).
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// A uid with no account and no business with mtad.
const STRANGER: u32 = 12345;

const WAIT: Duration = Duration::from_secs(30);

/// A work directory other users can get through (0755), and mtad and
/// mta-init where they can run them: a daemon that has switched to
/// `nobody` re-executes itself on a restart, and the tests run mta-init
/// as other uids. The programs are used where they were built when every
/// directory above them lets others through, else copied into the work
/// directory (a checkout under /root, say).
struct Shared {
    work: Workdir,
    bin: PathBuf,
}

impl Shared {
    /// None, with a note on standard error, when the test cannot run
    /// here: not root, or a temporary directory others cannot reach.
    fn new(test: &str) -> Option<Shared> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED {test}: needs root (CI runs the suite as root)");
            return None;
        }
        let work = Workdir::new();
        chmod(work.path(), 0o755);
        if let Some(closed) = closed_to_others(work.path()) {
            eprintln!(
                "SKIPPED {test}: other users cannot reach the temporary directory ({} is closed)",
                closed.display()
            );
            return None;
        }
        let built = bin("mtad").parent().expect("bin dir").to_owned();
        let bin = if closed_to_others(&built).is_none() {
            built
        } else {
            let copy = work.path().join("bin");
            std::fs::create_dir(&copy).unwrap();
            chmod(&copy, 0o755);
            for name in ["mtad", "mta-init"] {
                std::fs::copy(bin(name), copy.join(name)).expect("copy a program");
                chmod(&copy.join(name), 0o755);
            }
            copy
        };
        Some(Shared { work, bin })
    }

    fn start(&self, adjust: impl FnOnce(&mut Command)) -> Mtad {
        Mtad::try_start_from(&self.bin.join("mtad"), &self.work, adjust)
            .unwrap_or_else(|e| panic!("mtad did not start: {e}"))
    }

    /// `mta-init --config <the workdir's config> ARGS` as root.
    fn init(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mta-init")
    }

    /// The same as another uid and gid (no supplementary groups).
    fn init_as(&self, uid: u32, gid: u32, args: &[&str]) -> Output {
        self.command(args)
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run mta-init")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.bin.join("mta-init"));
        command
            .arg("--config")
            .arg(self.work.config_path())
            .args(args)
            .env_remove("MTA_CONFIG");
        command
    }
}

/// The first of `path` and the directories above it that others cannot
/// search, if any.
fn closed_to_others(path: &Path) -> Option<PathBuf> {
    let path = std::fs::canonicalize(path).expect("canonical path");
    path.ancestors()
        .find(|p| std::fs::metadata(p).expect("stat").permissions().mode() & 0o001 == 0)
        .map(Path::to_owned)
}

/// Sets a umask of 000 in the child, as from a careless shell or unit.
fn umask_000(command: &mut Command) {
    // SAFETY: umask is async-signal-safe and touches nothing else.
    unsafe {
        command.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            Ok(())
        });
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// Every path under `dir` (not `dir` itself).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if std::fs::symlink_metadata(&path).expect("stat").is_dir() {
                todo.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sends one message; it must be accepted.
fn send(mtad: &Mtad, to: &str, subject: &str) {
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("alice@client.test", &[to], &message(subject));
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
}

fn spool_files(work: &Workdir) -> Vec<PathBuf> {
    walk(&work.queue().join("msg"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect()
}

fn maildir_files(work: &Workdir, user: &str) -> Vec<PathBuf> {
    let new = work
        .path()
        .join("maildir/local.test")
        .join(user)
        .join("Maildir/new");
    std::fs::read_dir(new)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

/// The daemon's `queued` and `held` counts, asked as root.
fn queued_and_held(work: &Workdir) -> (u64, u64) {
    let (code, status) = status_json(work);
    assert_eq!(code, 0, "{status}");
    let daemon = &status["daemon"];
    assert_eq!(daemon["state"], "running", "{status}");
    (
        daemon["queued"].as_u64().expect("queued"),
        daemon["held"].as_u64().expect("held"),
    )
}

/// Under umask 000 mtad used to leave everything world-readable and
/// world-writable (the control socket included): the modes are now
/// explicit. A queue directory an earlier version left 0755 is tightened.
#[test]
fn under_umask_000_queue_index_socket_logs_and_maildirs_stay_private() {
    let work = Workdir::new();
    for dir in [work.queue(), work.queue().join("msg")] {
        std::fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
    }
    work.write_config(
        "",
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n",
    );
    let mtad = Mtad::try_start_with(&work, umask_000)
        .unwrap_or_else(|e| panic!("mtad did not start: {e}"));
    send(&mtad, "x@remote.test", "stays queued");
    send(&mtad, "carol@local.test", "to a maildir");
    wait_until("the Maildir delivery", WAIT, || {
        !maildir_files(&work, "carol").is_empty()
    });
    // The delivery log line follows the Maildir write.
    let log = work.queue().join("delivery.log");
    wait_until("the delivery log", WAIT, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"delivered\""))
    });

    let queue = work.queue();
    assert_eq!(mode(&queue), 0o700, "queue directory");
    let spool = spool_files(&work);
    assert_eq!(spool.len(), 1, "{spool:?}");
    for path in walk(&queue) {
        let m = mode(&path);
        let name = path.strip_prefix(&queue).unwrap().display().to_string();
        if path.is_dir() {
            assert_eq!(m, 0o700, "directory {name}");
        }
        if path.starts_with(queue.join("msg")) && path.is_file() {
            assert_eq!(m, 0o600, "spool file {name}");
        }
        if path.starts_with(queue.join("index")) {
            assert_eq!(m & 0o077, 0, "index entry {name} is {m:o}");
        }
    }
    assert_eq!(mode(&queue.join("control.sock")), 0o600, "control socket");
    assert_eq!(mode(&log), 0o640, "delivery log");
    assert_eq!(mode(&queue.join("mtad.pid")), 0o644, "PID file");

    let maildir = work.path().join("maildir");
    assert_eq!(mode(&maildir), 0o700, "Maildir root");
    for path in walk(&maildir) {
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    assert!(mtad.terminate().success());
}

/// Started as root with `user = "nobody"`, mtad binds, reads its TLS key,
/// then runs as nobody for good: mail is still accepted and delivered, a
/// restart (a re-exec of the unprivileged image) keeps serving on the
/// inherited socket, and a graceful reload still reads a key that is
/// root's, readable by the group alone.
#[test]
fn started_as_root_mtad_runs_as_its_user_across_restart_and_reload() {
    let test = "started_as_root_mtad_runs_as_its_user_across_restart_and_reload";
    let Some(shared) = Shared::new(test) else {
        return;
    };
    let work = &shared.work;
    let (tls, cert) = tls_files(work.path());
    let key = work.path().join("key.pem");
    nix::unistd::chown(&key, Some(0.into()), Some(NOGROUP.into())).unwrap();
    chmod(&key, 0o640);
    work.write_config(
        "user = \"nobody\"\ngroup = \"nogroup\"\n",
        &format!("[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\"]\n{tls}"),
    );
    chmod(&work.config_path(), 0o644);
    let mut mtad = shared.start(|_| {});
    let pid = mtad.pid();

    let assert_dropped = |when: &str| {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
            let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
            let field = |name: &str| -> Vec<u32> {
                let line = status
                    .lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or_else(|| panic!("{name} in {status}"));
                line[name.len()..]
                    .split_whitespace()
                    .map(|n| n.parse().unwrap())
                    .collect()
            };
            // Real, effective, saved and file-system ids: with the saved
            // uid gone too, there is no way back to root.
            assert_eq!(field("Uid:"), [NOBODY; 4], "{when}: {status}");
            assert_eq!(field("Gid:"), [NOGROUP; 4], "{when}: {status}");
            assert!(!field("Groups:").contains(&0), "{when}: {status}");
        }
    };
    assert_dropped("after start");

    // STARTTLS works with the key read before the switch.
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let mut c = c.starttls(&cert);
    c.cmd("EHLO client.test", "250");
    let r = c.send_message("alice@client.test", &["carol@local.test"], &message("tls"));
    assert_eq!(r.head(), "250 2.0.0", "{}", r.text());
    c.cmd("QUIT", "221");
    send(&mtad, "x@remote.test", "stays queued");
    wait_until("the Maildir delivery", WAIT, || {
        !maildir_files(work, "carol").is_empty()
    });
    let queue = work.queue();
    let mut created = vec![
        queue.clone(),
        queue.join("control.sock"),
        queue.join("delivery.log"),
        queue.join("index"),
    ];
    created.extend(spool_files(work));
    created.extend(maildir_files(work, "carol"));
    for path in &created {
        assert_eq!(owner(path), (NOBODY, NOGROUP), "{}", path.display());
    }
    // With a group configured, the group may read the queue.
    assert_eq!(mode(&queue), 0o750, "queue directory");
    for spool in spool_files(work) {
        assert_eq!(mode(&spool), 0o640, "{}", spool.display());
    }
    assert_eq!(mode(&queue.join("control.sock")), 0o660, "control socket");

    // A restart re-executes the unprivileged image with the socket it has.
    let before = mtad.addr;
    let o = shared.init(&["restart"]);
    assert!(o.status.success(), "{}", text(&o));
    let again = mtad.await_ready_again();
    assert_eq!(again, before, "the same socket");
    assert_eq!(mtad.pid(), pid);
    assert_dropped("after the restart");
    send(&mtad, "carol@local.test", "after the restart");
    wait_until("the second Maildir delivery", WAIT, || {
        maildir_files(work, "carol").len() >= 2
    });

    // A graceful reload reads the key again, as nobody in group nogroup.
    let o = shared.init(&["graceful"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    let mut c = c.starttls(&cert);
    c.cmd("EHLO client.test", "250");
    c.cmd("QUIT", "221");
    assert_dropped("after the reload");

    let o = shared.init(&["stop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(mtad.wait_exit().success());
}

/// Under umask 000 the control socket and the queue directory used to
/// let any local user delete the queue with mta-init. Now another uid
/// cannot even reach the socket (exit 4), and the queue is intact.
#[test]
fn other_users_cannot_reach_the_control_socket() {
    let test = "other_users_cannot_reach_the_control_socket";
    // Only the queue directory's own mode keeps others out.
    let Some(shared) = Shared::new(test) else {
        return;
    };
    let work = &shared.work;
    work.write_config("", "");
    let mtad = shared.start(umask_000);
    send(&mtad, "x@remote.test", "stays queued");
    assert_eq!(queued_and_held(work), (1, 0));

    for args in [
        &["queue", "delete", "--all"][..],
        &["queue", "hold", "--all"],
    ] {
        let o = shared.init_as(STRANGER, STRANGER, args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", text(&o));
    }
    let o = shared.init_as(STRANGER, STRANGER, &["stop"]);
    assert!(
        !text(&o).contains("stopping mtad"),
        "the stop was taken: {}",
        text(&o)
    );
    // Not "not running": this user cannot tell (LSB 4).
    assert_eq!(o.status.code(), Some(4), "stop: {}", text(&o));
    assert_eq!(queued_and_held(work), (1, 0), "the queue is intact");

    // Root can.
    let o = shared.init(&["queue", "hold", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(queued_and_held(work), (1, 1));
    assert!(mtad.terminate().success());
}

/// With a group configured the socket is open to its members, and the
/// daemon checks who is asking (SO_PEERCRED): a member may read (status,
/// queue list) but not change anything (exit 4); mtad's own user and
/// root may.
#[test]
fn the_control_socket_lets_only_root_and_mtads_user_change_things() {
    let test = "the_control_socket_lets_only_root_and_mtads_user_change_things";
    let Some(shared) = Shared::new(test) else {
        return;
    };
    let work = &shared.work;
    work.write_config("user = \"nobody\"\ngroup = \"nogroup\"\n", "");
    chmod(&work.config_path(), 0o644);
    let mut mtad = shared.start(|_| {});
    send(&mtad, "x@remote.test", "stays queued");

    // A member of the group, not mtad's user.
    let o = shared.init_as(STRANGER, NOGROUP, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = shared.init_as(STRANGER, NOGROUP, &["queue", "list"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("x@remote.test"), "{}", text(&o));
    for args in [
        &["queue", "delete", "--all"][..],
        &["queue", "hold", "--all"],
        &["pause", "delivery"],
        &["stop"],
    ] {
        let o = shared.init_as(STRANGER, NOGROUP, args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("not permitted"), "{args:?}: {}", text(&o));
    }
    assert_eq!(queued_and_held(work), (1, 0), "the queue is intact");

    // mtad's own user may.
    let o = shared.init_as(NOBODY, NOGROUP, &["queue", "hold", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(queued_and_held(work), (1, 1));
    // So may root.
    let o = shared.init(&["queue", "delete", "--all"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(queued_and_held(work), (0, 0));
    let o = shared.init(&["stop"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(mtad.wait_exit().success());
}

/// Stops a daemon started with `mta-init start`, even when the test fails
/// half-way.
struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.0.work.queue().join("mtad.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        if !self.0.init(&["stop", "--wait", "20"]).status.success() {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// `mta-init start` as root creates the daemon log as root; mtad hands
/// it (and the queue directory) to its user, so that the unprivileged
/// image a restart execs can open it again, and a reopen after rotation
/// creates the new file as that user, 0640.
#[test]
fn the_daemon_log_of_a_root_start_stays_writable_for_mtads_user() {
    let test = "the_daemon_log_of_a_root_start_stays_writable_for_mtads_user";
    let Some(shared) = Shared::new(test) else {
        return;
    };
    let work = &shared.work;
    work.write_config("user = \"nobody\"\n", "");
    chmod(&work.config_path(), 0o644);
    let _guard = StopOnDrop(&shared);
    let o = shared.init(&["start"]);
    assert!(o.status.success(), "{}", text(&o));
    let log = work.queue().join("mtad.log");
    assert_eq!(owner(&work.queue()), (NOBODY, NOGROUP));
    assert_eq!(owner(&log), (NOBODY, NOGROUP));
    assert_eq!(mode(&log), 0o640);

    let o = shared.init(&["restart"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::rename(&log, work.queue().join("mtad.log.1")).unwrap();
    let o = shared.init(&["reopen-logs"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(owner(&log), (NOBODY, NOGROUP));
    assert_eq!(mode(&log), 0o640);
    let o = shared.init(&["stop"]);
    assert!(o.status.success(), "{}", text(&o));

    // The next start finds the queue directory nobody's already, and a
    // daemon log that mta-init has just created as root.
    std::fs::remove_file(&log).unwrap();
    let o = shared.init(&["start"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(owner(&log), (NOBODY, NOGROUP));
    let o = shared.init(&["restart"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = shared.init(&["stop"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A restart re-executes mtad as the user it switched to: it keeps the
/// sockets it has, but a new address below port 1024 needs root, and the
/// error says so (and what to do) rather than just "permission denied".
#[test]
fn a_restart_as_mtads_user_cannot_bind_a_new_privileged_port_and_says_why() {
    let test = "a_restart_as_mtads_user_cannot_bind_a_new_privileged_port_and_says_why";
    let unprivileged_from: u16 =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(1024);
    if unprivileged_from <= 1023 {
        eprintln!("SKIPPED {test}: port 1023 needs no privilege here (ip_unprivileged_port_start = {unprivileged_from})");
        return;
    }
    let Some(shared) = Shared::new(test) else {
        return;
    };
    let work = &shared.work;
    work.write_config("user = \"nobody\"\n", "");
    chmod(&work.config_path(), 0o644);
    let stderr_path = work.path().join("mtad.stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut mtad = shared.start(|command| {
        command.stderr(stderr);
    });

    work.write_config(
        "user = \"nobody\"\n",
        "[smtp]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:1023\"]\n",
    );
    let o = shared.init(&["restart"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(!mtad.wait_exit().success());
    let said = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        said.contains("cannot listen on 127.0.0.1:1023")
            && said.contains("only root may bind a port below 1024")
            && said.contains("mta-init stop"),
        "{said}"
    );
}
