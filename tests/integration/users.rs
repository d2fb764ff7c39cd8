//! `mta-init user add|passwd|del|list`: the users file of SMTP AUTH, as
//! an operator edits it. The password goes in on standard input and
//! never shows on a command line or in the output; Dovecot's own
//! `doveadm pw -t` checks the hashes written; each refusal has its exit
//! code and leaves the file as it was.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::util::{bin, init, init_for_nobody, init_with_input, text, SpawnDetached, Workdir};

const DOVEADM: &str = "/usr/bin/doveadm";

/// nobody, as on most systems.
const NOBODY: u32 = 65534;

/// A workdir whose configuration names `users` in it as the users file,
/// with `top` before any table (`group = ...`).
fn workdir(top: &str) -> (Workdir, PathBuf) {
    let work = Workdir::new();
    let users = work.path().join("users");
    let extra = format!("[auth]\nusers_file = {:?}\n", users.display().to_string());
    work.write_config(top, &extra);
    (work, users)
}

/// `mta-init user ARGS`, with `stdin` as its standard input (none: an
/// empty one); without a controlling terminal, so a prompt can never
/// wait for a person.
fn user(work: &Workdir, args: &[&str], stdin: Option<&str>) -> Output {
    let mut all = vec!["user"];
    all.extend_from_slice(args);
    init_with_input(work, &all, stdin.unwrap_or(""))
}

/// The hash field of `name`'s line.
fn hash_of(users: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(users).expect("the users file");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|rest| rest.split(':').next().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Whether Dovecot takes `password` for `hash`; None (with a note) when
/// doveadm is missing outside CI.
fn dovecot_accepts(hash: &str, password: &str) -> Option<bool> {
    if !Path::new(DOVEADM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{DOVEADM} is missing in CI: tests/install-peers.sh installs it"
        );
        eprintln!("NOTE: no {DOVEADM} (dovecot-core): Dovecot's check skipped");
        return None;
    }
    let o = Command::new(DOVEADM)
        .args(["pw", "-t", hash, "-p", password])
        .output()
        .expect("run doveadm pw -t");
    Some(o.status.success())
}

fn assert_ok(o: &Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", text(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn add_list_passwd_del_with_password_stdin() {
    let (work, users) = workdir("");
    let first = "first Secret 1";
    let out = assert_ok(
        &user(
            &work,
            &["add", "alice@example.test", "--password-stdin"],
            Some(&format!("{first}\n")),
        ),
        "add alice",
    );
    assert!(out.contains("alice@example.test"), "{out}");
    assert!(out.contains("mta-init graceful"), "{out}");
    let meta = std::fs::metadata(&users).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    let alice = hash_of(&users, "alice@example.test");
    assert!(alice.starts_with("{ARGON2ID}$argon2id$v=19$"), "{alice}");
    // The newline ended the password; it is not part of it.
    if let Some(ok) = dovecot_accepts(&alice, first) {
        assert!(ok, "doveadm refused {alice} for {first:?}");
        assert_eq!(dovecot_accepts(&alice, &format!("{first}\n")), Some(false));
        assert_eq!(dovecot_accepts(&alice, "first secret 1"), Some(false));
    }
    // A CRLF ends a line too; a last line without one is taken whole.
    assert_ok(
        &user(
            &work,
            &["add", "bob", "--password-stdin"],
            Some("bob's pass 2\r\n"),
        ),
        "add bob",
    );
    assert_ok(
        &user(
            &work,
            &["add", "carol", "--password-stdin"],
            Some("carolina 3"),
        ),
        "add carol",
    );
    if dovecot_accepts(&hash_of(&users, "bob"), "bob's pass 2").is_some() {
        assert_eq!(
            dovecot_accepts(&hash_of(&users, "bob"), "bob's pass 2"),
            Some(true)
        );
        assert_eq!(
            dovecot_accepts(&hash_of(&users, "carol"), "carolina 3"),
            Some(true)
        );
    }

    let o = user(&work, &["list"], None);
    let listed = assert_ok(&o, "list");
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["alice@example.test", "ARGON2ID"],
            ["bob", "ARGON2ID"],
            ["carol", "ARGON2ID"]
        ],
        "{listed}"
    );
    assert!(
        !text(&o).contains("argon2id$"),
        "a hash shown: {}",
        text(&o)
    );

    // passwd: the old password no longer works, the new one does, and the
    // line's other fields are kept.
    let before = std::fs::read_to_string(&users).unwrap();
    let with_fields = before.replace(
        &format!("carol:{}", hash_of(&users, "carol")),
        &format!("carol:{}:1000:1000::/home/carol", hash_of(&users, "carol")),
    );
    std::fs::write(&users, &with_fields).unwrap();
    let second = "second Secret 2";
    assert_ok(
        &user(
            &work,
            &["passwd", "alice@EXAMPLE.test", "--password-stdin"],
            Some(&format!("{second}\n")),
        ),
        "passwd alice",
    );
    assert_ok(
        &user(
            &work,
            &["passwd", "carol", "--password-stdin"],
            Some("new carolina"),
        ),
        "passwd carol",
    );
    let alice = hash_of(&users, "alice@example.test");
    if let Some(ok) = dovecot_accepts(&alice, second) {
        assert!(ok, "doveadm refused the new password");
        assert_eq!(dovecot_accepts(&alice, first), Some(false));
    }
    let after = std::fs::read_to_string(&users).unwrap();
    assert!(after.contains(":1000:1000::/home/carol\n"), "{after}");
    assert_eq!(
        std::fs::metadata(&users).unwrap().mode() & 0o7777,
        0o640,
        "mode after a change"
    );

    let out = assert_ok(&user(&work, &["del", "bob"], None), "del bob");
    assert!(
        out.contains("bob") && out.contains("mta-init graceful"),
        "{out}"
    );
    let listed = assert_ok(&user(&work, &["list"], None), "list");
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["alice@example.test", "carol"], "{listed}");

    // A line we refuse (a weak scheme) is listed as a warning, never
    // with its hash, and `passwd` brings its user back.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&users)
        .unwrap();
    file.write_all(b"dave:{PLAIN}dave-plain-pw\n").unwrap();
    drop(file);
    let o = user(&work, &["list"], None);
    assert_ok(&o, "list with a weak line");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning") && stderr.contains("dave") && stderr.contains(":3:"),
        "{stderr}"
    );
    assert!(!text(&o).contains("dave-plain-pw"), "{}", text(&o));
    assert_ok(
        &user(
            &work,
            &["passwd", "dave", "--password-stdin"],
            Some("dave's new one"),
        ),
        "passwd dave",
    );
    let o = user(&work, &["list"], None);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("dave"),
        "{}",
        text(&o)
    );
    assert!(o.stderr.is_empty(), "{}", text(&o));
}

/// The password reaches mta-init on standard input only: its command
/// line (what `ps` shows) never holds it, no option takes it, and neither
/// the output nor the file shows it.
#[test]
fn the_password_is_never_on_the_command_line_or_in_the_output() {
    let (work, users) = workdir("");
    let password = "Tr0ub4dor&3 never shown";
    let mut child = Command::new(bin("mta-init"))
        .arg("--config")
        .arg(work.config_path())
        .args(["user", "add", "erin", "--password-stdin"])
        .env_remove("MTA_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_detached()
        .expect("run mta-init");
    // It waits for its standard input: what `ps` shows of it meanwhile.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(args.iter().any(|a| a == "--password-stdin"), "{args:?}");
    assert!(!args.iter().any(|a| a.contains("Tr0ub4dor")), "{args:?}");
    let mut input = child.stdin.take().unwrap();
    input.write_all(password.as_bytes()).unwrap();
    input.write_all(b"\n").unwrap();
    drop(input);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("Tr0ub4dor"), "{}", text(&o));
    let file = std::fs::read_to_string(&users).unwrap();
    assert!(!file.contains("Tr0ub4dor"), "{file}");
    if let Some(ok) = dovecot_accepts(&hash_of(&users, "erin"), password) {
        assert!(ok);
    }

    // No option or argument takes a password: a usage error (2), and
    // nothing is written.
    for args in [
        &["add", "frank", "--password", password][..],
        &["add", "frank", password],
        &["passwd", "erin", "--password=x"],
    ] {
        let o = user(&work, args, Some("frank's password\n"));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    assert_eq!(std::fs::read_to_string(&users).unwrap(), file);
}

#[test]
fn errors_have_their_exit_codes_and_change_nothing() {
    let (work, users) = workdir("");
    assert_ok(
        &user(
            &work,
            &["add", "alice", "--password-stdin"],
            Some("alice pass 1\n"),
        ),
        "add alice",
    );
    let file = std::fs::read(&users).unwrap();
    let table: &[(&[&str], Option<&str>, i32, &str)] = &[
        // The name is taken, whatever the case of an address's domain.
        (
            &["add", "alice", "--password-stdin"],
            Some("another one 1\n"),
            9,
            "already exists",
        ),
        (
            &["passwd", "nobody-here", "--password-stdin"],
            Some("another one 1\n"),
            3,
            "no user",
        ),
        (&["del", "nobody-here"], None, 3, "no user"),
        // Weak or empty passwords, and names that cannot be written.
        (
            &["add", "bob", "--password-stdin"],
            Some("short\n"),
            65,
            "fewer than 8",
        ),
        (&["add", "bob", "--password-stdin"], Some("\n"), 65, "empty"),
        (&["add", "bob", "--password-stdin"], None, 65, "empty"),
        (
            &["add", "bob", "--password-stdin"],
            Some("bob\n"),
            65,
            "refused",
        ),
        (
            &["add", "bob", "--password-stdin"],
            Some("line one is\nline two\n"),
            65,
            "one line",
        ),
        (
            &["add", "bo:b", "--password-stdin"],
            Some("good enough 1\n"),
            65,
            "holds ':'",
        ),
        (
            &["add", "#bob", "--password-stdin"],
            Some("good enough 1\n"),
            65,
            "starts with '#'",
        ),
        // No terminal to ask on and no --password-stdin.
        (&["add", "bob"], None, 1, "--password-stdin"),
    ];
    for (args, stdin, code, words) in table {
        let o = user(&work, args, *stdin);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(words), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o));
        assert_eq!(
            std::fs::read(&users).unwrap(),
            file,
            "{args:?} changed the file"
        );
    }

    // No users file in the configuration: exit 78, as a bad configuration.
    let bare = Workdir::new();
    bare.write_config("", "");
    let o = init(&bare, &["user", "list"]);
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(text(&o).contains("users_file"), "{}", text(&o));
}

/// As root, the file goes to root and mtad's group; a user who may not
/// write it (or read it) is told so with exit 4, and nothing changes.
#[test]
fn owner_group_and_permission_denied() {
    let probe = Workdir::new();
    if std::fs::metadata(probe.path()).unwrap().uid() != 0 {
        eprintln!("SKIPPED: chown and a switch to uid {NOBODY} need root");
        return;
    }
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(NOBODY))
        .unwrap()
        .expect("a group with gid 65534 (nogroup)");
    let (work, users) = workdir(&format!("group = {:?}", group.name));
    assert_ok(
        &user(
            &work,
            &["add", "alice", "--password-stdin"],
            Some("alice pass 1\n"),
        ),
        "add alice as root",
    );
    let meta = std::fs::metadata(&users).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, NOBODY, 0o640)
    );
    // Without `group` or `user`, a change keeps the file's group.
    let (plain, plain_users) = workdir("");
    assert_ok(
        &user(
            &plain,
            &["add", "bob", "--password-stdin"],
            Some("bob pass 12\n"),
        ),
        "add bob",
    );
    assert_eq!(std::fs::metadata(&plain_users).unwrap().gid(), 0);
    std::os::unix::fs::chown(&plain_users, None, Some(NOBODY)).unwrap();
    assert_ok(
        &user(
            &plain,
            &["passwd", "bob", "--password-stdin"],
            Some("bob pass 13\n"),
        ),
        "passwd bob",
    );
    let meta = std::fs::metadata(&plain_users).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, NOBODY));

    // nobody, in the file's group or not, may not change it: the
    // directory is root's.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(work.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let program = init_for_nobody(&work);
    let file = std::fs::read(&users).unwrap();
    let as_nobody = |args: &[&str], gid: u32| {
        let mut child = Command::new(&program)
            .arg("--config")
            .arg(work.config_path())
            .arg("user")
            .args(args)
            .env_remove("MTA_CONFIG")
            .current_dir(work.path())
            .uid(NOBODY)
            .gid(gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_detached()
            .expect("run mta-init as nobody");
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(b"some password 1\n");
        drop(input);
        child.wait_with_output().unwrap()
    };
    for args in [
        &["add", "mallory", "--password-stdin"][..],
        &["passwd", "alice", "--password-stdin"],
        &["del", "alice"],
    ] {
        let o = as_nobody(args, NOBODY);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("Permission denied"),
            "{args:?}: {}",
            text(&o)
        );
    }
    // Not in the group: not even a listing.
    let o = as_nobody(&["list"], NOBODY - 1);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // In the group (as mtad is): it may read.
    let o = as_nobody(&["list"], NOBODY);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&users).unwrap(), file);
}
