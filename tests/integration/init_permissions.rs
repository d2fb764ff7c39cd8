//! mta-init run by a user who may not see or signal the daemon: it must
//! say so (LSB exit 4) and change nothing, never take a live mtad for a
//! dead one. And mta-init finds the daemon by its control socket first,
//! so a lost PID file does not hide it. Tests that switch users need
//! root and skip with a note otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::util::{eventually, init, init_for_nobody, status_json, text, Mtad, Workdir};

/// nobody, as on most systems.
const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// A workdir another user can traverse and whose config it can read.
/// None (with a note) when the tests do not run as root.
fn shared_workdir(extra: &str) -> Option<Workdir> {
    let work = Workdir::new();
    if std::fs::metadata(work.path()).unwrap().uid() != 0 {
        eprintln!("SKIPPED: this test switches to uid {NOBODY}, which needs root");
        return None;
    }
    work.write_config("", extra);
    chmod(work.path(), 0o755);
    chmod(&work.config_path(), 0o644);
    Some(work)
}

/// `mta-init ARGS` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(work: &Workdir, args: &[&str]) -> Output {
    Command::new(init_for_nobody(work))
        .arg("--config")
        .arg(work.config_path())
        .args(args)
        .env_remove("MTA_CONFIG")
        .current_dir(work.path())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run mta-init as nobody")
}

/// mtad still runs: not reaped, not a zombie.
fn still_running(mtad: &mut Mtad) -> bool {
    matches!(mtad.child.try_wait(), Ok(None))
}

/// Every command that looks at the daemon, run as nobody, ends with exit
/// 4 and `words` in its message, and leaves mtad and its PID file alone.
fn nobody_is_refused_everywhere(work: &Workdir, mtad: &mut Mtad, words: &[&str]) {
    let pid_file = work.queue().join("mtad.pid");
    let pid = std::fs::read_to_string(&pid_file).expect("PID file");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["stop", "--wait", "5"],
        &["start", "--wait", "5"],
        &["restart", "--wait", "5"],
        &["graceful"],
        &["graceful-stop", "--wait", "5"],
        &["reopen-logs"],
        &["pause", "delivery"],
        &["queue", "list"],
    ] {
        let o = as_nobody(work, args);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {t}");
        for word in words {
            assert!(t.contains(word), "{args:?} lacks {word:?}: {t}");
        }
        for wrong in ["dead", "stale", "not running", "starting"] {
            assert!(!t.contains(wrong), "{args:?} says {wrong:?}: {t}");
        }
        assert_eq!(
            std::fs::read_to_string(&pid_file).ok().as_ref(),
            Some(&pid),
            "{args:?} touched the PID file: {t}"
        );
        assert!(still_running(mtad), "{args:?} stopped mtad: {t}");
    }
    let (code, v) = {
        let o = as_nobody(work, &["status", "--json"]);
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        (o.status.code(), v)
    };
    assert_eq!(code, Some(4), "{v}");
    assert_eq!(v["overall"], "unknown", "{v}");
}

/// Root, who may, still sees and controls the daemon afterwards.
fn root_sees_it_running_and_stops_it(work: &Workdir, mut mtad: Mtad) {
    let o = init(work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("OVERALL STATUS: up"), "{}", text(&o));
    let o = init(work, &["stop", "--wait", "30"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("mtad stopped"), "{}", text(&o));
    assert!(
        eventually(Duration::from_secs(30), || !still_running(&mut mtad)),
        "mtad did not stop"
    );
}

/// Issue 10, point 8: as another user, `status` said "mtad is dead but
/// PID file exists" and `stop` removed the PID file while mtad ran. Here
/// the queue directory is 0700 (as mtad makes it): the PID file cannot be
/// read (EACCES) nor the control socket reached.
#[test]
fn a_user_who_cannot_see_the_queue_directory_is_told_so_and_changes_nothing() {
    let Some(work) = shared_workdir("") else {
        return;
    };
    let mut mtad = Mtad::start(&work);
    chmod(&work.queue(), 0o700);
    nobody_is_refused_everywhere(&work, &mut mtad, &["permission denied"]);
    let o = as_nobody(&work, &["status"]);
    assert!(text(&o).contains("cannot tell"), "{}", text(&o));
    root_sees_it_running_and_stops_it(&work, mtad);
}

/// Issue 10, point 8, the EPERM case: the PID file can be read, but
/// kill(pid, 0) says EPERM (the process is someone else's, so it is
/// alive) and the control socket (0600) refuses the connection. The queue
/// directory is world-writable, as it was under umask 000, so a `stop`
/// that took the daemon for dead could remove its PID file.
#[test]
fn a_daemon_another_user_may_not_signal_is_running_not_dead() {
    let Some(work) = shared_workdir("") else {
        return;
    };
    let mut mtad = Mtad::start(&work);
    chmod(&work.queue(), 0o777);
    chmod(&work.queue().join("mtad.pid"), 0o644);
    chmod(&work.queue().join("control.sock"), 0o600);
    nobody_is_refused_everywhere(&work, &mut mtad, &["not permitted"]);
    let o = as_nobody(&work, &["status"]);
    assert!(
        text(&o).contains(&format!("running (pid {})", mtad.pid())),
        "{}",
        text(&o)
    );
    let o = as_nobody(&work, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pid"], mtad.pid(), "{v}");
    assert_eq!(v["running"], true, "{v}");
    root_sees_it_running_and_stops_it(&work, mtad);
}

/// Issue 10, point 8: once the PID file was gone, root's `status` and
/// `stop` said "not running" while the control socket answered. The
/// socket is asked first.
#[test]
fn a_daemon_whose_pid_file_is_gone_is_found_by_its_control_socket() {
    let work = Workdir::new();
    work.write_config("", "");
    let mut mtad = Mtad::start(&work);
    std::fs::remove_file(work.queue().join("mtad.pid")).unwrap();

    let o = init(&work, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("OVERALL STATUS: up"), "{}", text(&o));
    let (code, v) = status_json(&work);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["pid"], mtad.pid(), "{v}");
    let o = init(&work, &["start", "--wait", "5"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already running"), "{}", text(&o));
    assert!(still_running(&mut mtad));

    let o = init(&work, &["stop", "--wait", "30"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("mtad stopped"), "{}", text(&o));
    let status = mtad.wait_exit();
    assert!(status.success(), "{status:?}");
    assert_eq!(init(&work, &["status"]).status.code(), Some(3));
}
