//! Storage failures: the free-space floor and a full disk, on a real
//! (small) tmpfs. A full disk answers 452 4.3.1 and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{message, spool_contents, wait_until, Mtad, Workdir};

#[test]
fn below_the_free_space_floor_mail_gets_452() {
    let work = Workdir::new();
    work.write_config("", "");
    // More free space than any disk has.
    let text = std::fs::read_to_string(work.config_path())
        .unwrap()
        .replace("min_free_space = 0", "min_free_space = \"1000000GiB\"");
    std::fs::write(work.config_path(), text).unwrap();
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "452 4.3.1");
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub(crate) struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounting needs root, as in CI; elsewhere the test says it skipped.
fn tmpfs_queue(work: &Workdir, size: &str) -> Option<Tmpfs> {
    tmpfs(&work.queue(), size)
}

/// A tmpfs of `size` mounted on `dir` (created), or None with a visible
/// note when this user cannot mount one (CI runs as root and must).
pub(crate) fn tmpfs(dir: &Path, size: &str) -> Option<Tmpfs> {
    let mounted = Tmpfs::mount(dir.to_owned(), size);
    if mounted.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root and must be able to mount tmpfs"
        );
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
    }
    mounted
}

#[test]
fn disk_full_answers_452_and_leaves_nothing_behind() {
    let work = Workdir::new();
    let Some(_fs) = tmpfs_queue(&work, "8m") else {
        return;
    };
    work.write_config(
        "",
        "[smtp]\nlisten = [\"127.0.0.1:0\"]\nmax_message_size = \"64MiB\"\n",
    );
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    // 12 MB does not fit in 8 MB.
    let line = format!("{}\r\n", "x".repeat(98));
    let big = format!(
        "Subject: too big for the disk\r\n\r\n{}",
        line.repeat(120_000)
    );
    let r = c.send_message("a@b.test", &["x@remote.test"], &big);
    assert_eq!(r.head(), "452 4.3.1", "{}", r.text());
    let leftovers: Vec<_> = std::fs::read_dir(work.queue().join("tmp"))
        .unwrap()
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-written files left in tmp/: {leftovers:?}"
    );
    // Space is there for small mail, which still goes through.
    assert_eq!(
        c.send_message("a@b.test", &["x@remote.test"], &message("small"))
            .head(),
        "250 2.0.0"
    );
    c.cmd("QUIT", "221");
    drop(mtad);
    let stored = spool_contents(&work.queue());
    assert_eq!(stored.len(), 1, "only the small message is in the spool");
}

#[test]
fn mail_is_refused_until_space_returns() {
    let work = Workdir::new();
    let Some(_fs) = tmpfs_queue(&work, "16m") else {
        return;
    };
    work.write_config("", "");
    let text = std::fs::read_to_string(work.config_path())
        .unwrap()
        .replace(
            "min_free_space = 0",
            "min_free_space = \"4MiB\"\nfree_space_check_interval = \"50ms\"",
        );
    std::fs::write(work.config_path(), text).unwrap();
    let mtad = Mtad::start(&work);
    let mut c = mtad.connect();
    c.cmd("EHLO client.test", "250");
    c.cmd("MAIL FROM:<a@b.test>", "250");
    c.cmd("RSET", "250");
    // Fill the file system until less than the floor is left.
    let filler = work.queue().join("filler");
    std::fs::write(&filler, vec![0u8; 13 << 20]).unwrap();
    wait_until("MAIL to be refused", Duration::from_secs(10), || {
        c.send(b"MAIL FROM:<a@b.test>\r\n");
        let r = c.reply();
        if r.code == 250 {
            c.cmd("RSET", "250");
        }
        r.head() == "452 4.3.1"
    });
    std::fs::remove_file(&filler).unwrap();
    wait_until("MAIL to be accepted again", Duration::from_secs(10), || {
        c.send(b"MAIL FROM:<a@b.test>\r\n");
        c.reply().code == 250
    });
}
