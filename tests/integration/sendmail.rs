//! The sendmail command (issue 13): `mta-sendmail` against the real
//! mtad, with its local socket and drop directory in the test's own
//! directory. What cron and PHP do (`-t -i`), mtad down (the drop
//! directory and its import), another user (run as `nobody`, with the
//! command installed set-group-id as docs/sendmail.md says), `-bs`, and
//! the options and exit statuses Postfix's sendmail has.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::*;

const WAIT: Duration = Duration::from_secs(30);

/// `nobody` on Debian-like systems (and in CI).
const NOBODY: u32 = 65534;

/// A work directory with mtad's configuration: local domains
/// `local.test` and `mx.test` (the host name, so that bare names are
/// delivered here), the socket `run/mta/submit.sock`, the drop directory
/// `spool/maildrop/`, scanned every 100 ms; mtad makes the directories.
/// The work directory is 0755 so that another user gets through.
struct Setup {
    work: Workdir,
}

impl Setup {
    fn new(drop_group: &str) -> Setup {
        Setup::with(drop_group, "", "")
    }

    /// [`Setup::new`] with more keys for `[smtp]` and for `[sendmail]`.
    fn with(drop_group: &str, smtp: &str, sendmail: &str) -> Setup {
        let work = Workdir::new();
        std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let extra =
            format!(
            "[smtp]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"local.test\", \"mx.test\"]\n{smtp}\
             [sendmail]\nsocket = {:?}\ndrop_dir = {:?}\ndrop_group = {drop_group:?}\n\
             drop_scan_interval = \"100ms\"\n{sendmail}",
            work.path().join("run/mta/submit.sock").display().to_string(),
            work.path().join("spool/maildrop").display().to_string(),
        );
        work.write_config("", &extra);
        std::fs::set_permissions(work.config_path(), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        Setup { work }
    }

    fn socket(&self) -> PathBuf {
        self.work.path().join("run/mta/submit.sock")
    }

    fn drop_dir(&self) -> PathBuf {
        self.work.path().join("spool/maildrop")
    }

    /// `mta-sendmail -C <config> ARGS` as this process's user, `input` on
    /// standard input.
    fn sendmail(&self, args: &[&str], input: &str) -> Output {
        self.sendmail_with(&bin("mta-sendmail"), args, input, |_| {})
    }

    fn sendmail_with(
        &self,
        program: &Path,
        args: &[&str],
        input: &str,
        adjust: impl FnOnce(&mut Command),
    ) -> Output {
        let mut command = Command::new(program);
        command
            .arg("-C")
            .arg(self.work.config_path())
            .args(args)
            .env_remove("MTA_CONFIG")
            .env_remove("NAME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        adjust(&mut command);
        let mut child = command.spawn().expect("run mta-sendmail");
        let mut stdin = child.stdin.take().expect("stdin");
        // The command may exit before it reads (a usage error).
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().expect("mta-sendmail output")
    }

    /// The directory of the new mail of `user@domain`.
    fn maildir(&self, domain: &str, user: &str) -> PathBuf {
        self.work
            .path()
            .join(format!("maildir/{domain}/{user}/Maildir/new"))
    }

    /// How many messages `user@domain` got (none while it has no Maildir).
    fn maildir_count(&self, domain: &str, user: &str) -> usize {
        std::fs::read_dir(self.maildir(domain, user)).map_or(0, |d| d.count())
    }

    /// The files delivered to `user@domain`, once there are `n`.
    fn wait_maildir(&self, domain: &str, user: &str, n: usize) -> Vec<String> {
        let dir = self.maildir(domain, user);
        wait_until(&format!("{n} message(s) for {user}@{domain}"), WAIT, || {
            self.maildir_count(domain, user) >= n
        });
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect()
    }

    /// The names of the drop files waiting in the drop directory.
    fn drops(&self) -> Vec<String> {
        self.in_drop_dir("drop-")
    }

    /// The names in the drop directory that start with `prefix`, sorted.
    fn in_drop_dir(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.drop_dir())
            .expect("the drop directory")
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        names
    }
}

/// The test's own user, as mtad records it.
fn me() -> (u32, String) {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .unwrap()
        .map_or_else(|| uid.to_string(), |u| u.name);
    (uid.as_raw(), name)
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("an exit status")
}

const CRON: &str = "From: root (Cron Daemon)\n\
    To: alice@local.test\n\
    Cc: archive@remote.test\n\
    Bcc: bob@local.test\n\
    Subject: Cron <root@host> /usr/local/bin/backup\n\
    Content-Type: text/plain; charset=UTF-8\n\
    \n\
    backup done\n\
    .\n\
    ..two dots\n\
    the end\n";

/// cron's `sendmail -t -i` with mtad up: delivered to the Maildir with
/// its lone `.` line, `Bcc:` gone, each recipient's copy for that
/// recipient, and the submitting user, as the kernel named them, in the
/// envelope and the `Received:` field.
#[test]
fn cron_mail_with_mtad_up_is_delivered_with_the_user_recorded() {
    let s = Setup::new("mail");
    let mtad = Mtad::start(&s.work);
    let o = s.sendmail(&["-t", "-i"], CRON);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
    let (uid, name) = me();
    let alice = &s.wait_maildir("local.test", "alice", 1)[0];
    let bob = &s.wait_maildir("local.test", "bob", 1)[0];
    for (copy, rcpt) in [(alice, "alice@local.test"), (bob, "bob@local.test")] {
        assert!(
            copy.starts_with(&format!(
                "Return-Path: <{name}@mx.test>\nDelivered-To: {rcpt}\nReceived: from local user {name} (uid {uid})\n\tby mx.test (mtad) with local-esmtp id "
            )),
            "{copy}"
        );
        assert!(
            !copy.contains("Bcc:") && !copy.contains("bob@local.test\n\n"),
            "{copy}"
        );
        assert!(
            copy.contains("\nFrom: root@mx.test (Cron Daemon)\nTo: alice@local.test\n"),
            "{copy}"
        );
        assert!(
            copy.contains("\nDate: ") && copy.contains("\nMessage-ID: <"),
            "{copy}"
        );
        assert!(
            copy.ends_with("\n\nbackup done\n.\n..two dots\nthe end\n"),
            "{copy}"
        );
    }
    // The remote copy keeps the message queued: its envelope (all three
    // recipients, the Bcc one included) records the user.
    mtad.terminate();
    let queued = spool_contents(&s.work.queue());
    assert_eq!(queued.len(), 1, "{queued:?}");
    let (_, envelope, content) = &queued[0];
    let recipients: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert_eq!(
        recipients,
        ["alice@local.test", "archive@remote.test", "bob@local.test"]
    );
    assert_eq!(envelope.sender.to_string(), format!("{name}@mx.test"));
    assert_eq!(
        envelope.origin.auth.as_deref(),
        Some(format!("local:{uid}:{name}").as_str())
    );
    assert_eq!(envelope.origin.protocol, "local-esmtp");
    assert!(!String::from_utf8_lossy(content).contains("Bcc"));
}

/// mtad down: the message goes to the drop directory and the command
/// exits 0; the next start imports it and delivers it once.
#[test]
fn with_mtad_down_the_message_is_dropped_then_imported_once() {
    let s = Setup::new("mail");
    // A first start makes the socket's directory and the drop directory.
    Mtad::start(&s.work).terminate();
    assert!(!s.socket().exists(), "a stop removes the socket");
    let o = s.sendmail(&["-t", "-i"], CRON);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let drops = s.drops();
    assert_eq!(drops.len(), 1, "{drops:?}");
    let drop = s.drop_dir().join(&drops[0]);
    let meta = std::fs::metadata(&drop).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o444);
    assert_eq!(meta.uid(), me().0, "the drop file is its writer's");
    let raw = std::fs::read_to_string(&drop).unwrap();
    assert!(
        raw.starts_with("MTA-DROP 1\n") && !raw.contains("Bcc:"),
        "{raw}"
    );

    let mtad = Mtad::start(&s.work);
    let (uid, name) = me();
    let alice = s.wait_maildir("local.test", "alice", 1);
    s.wait_maildir("local.test", "bob", 1);
    assert!(
        alice[0].contains(&format!("\nReceived: from local user {name} (uid {uid})\n")),
        "{}",
        alice[0]
    );
    wait_until("the drop file removed", WAIT, || s.drops().is_empty());
    mtad.terminate();
    // Once: one copy each, and nothing left to import again.
    assert_eq!(s.wait_maildir("local.test", "alice", 1).len(), 1);
    assert_eq!(s.wait_maildir("local.test", "bob", 1).len(), 1);
    let left = s.in_drop_dir("");
    assert!(left.is_empty(), "{left:?}");
    let queued = spool_contents(&s.work.queue());
    assert_eq!(
        queued.len(),
        1,
        "only the message of the remote copy waits: {queued:?}"
    );
    assert_eq!(
        queued[0].1.origin.auth.as_deref(),
        Some(format!("local:{uid}:{name}").as_str())
    );
}

/// mtad down: a user's drop files wait up to `drop_max_per_user`; the
/// next message is refused with EX_TEMPFAIL (75), saying why, and leaves
/// nothing behind. Once mtad imported them the user may drop again.
#[test]
fn a_user_drops_at_most_drop_max_per_user_messages() {
    let s = Setup::with("mail", "", "drop_max_per_user = 2\n");
    Mtad::start(&s.work).terminate();
    for n in 0..2 {
        let o = s.sendmail(&["-i", "alice@local.test"], &format!("Subject: {n}\n\nx\n"));
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    let (uid, _) = me();
    assert_eq!(
        s.drops(),
        [format!("drop-{uid}-0"), format!("drop-{uid}-1")]
    );
    let o = s.sendmail(&["-i", "alice@local.test"], "Subject: 2\n\nx\n");
    assert_eq!(code(&o), 75, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("message NOT sent to alice@local.test")
            && err.contains("2 messages of this user already wait")
            && err.contains("sendmail.drop_max_per_user"),
        "{err}"
    );
    let all = s.in_drop_dir("");
    assert_eq!(all.len(), 2, "no temporary file left: {all:?}");

    let mtad = Mtad::start(&s.work);
    let got = s.wait_maildir("local.test", "alice", 2);
    assert!(got[0].contains("Subject: ") && got[1].contains("Subject: "));
    wait_until("the drop files imported", WAIT, || s.drops().is_empty());
    mtad.terminate();
    let o = s.sendmail(&["-i", "alice@local.test"], "Subject: 3\n\nx\n");
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(s.drops(), [format!("drop-{uid}-0")]);
}

/// mtad down, and one recipient of a dropped message unknown: at the
/// import the local session refuses it (`550 5.1.1`), the others get the
/// message, and the sender gets a DSN naming it (RFC 3464), as a
/// delivery failure would give; the drop file is done with. With every
/// recipient refused and NOTIFY=NEVER no DSN is owed, and the file is
/// done with too.
#[test]
fn recipients_refused_at_import_are_bounced_to_the_sender() {
    let s = Setup::with(
        "mail",
        "local_recipients = [\"alice\", \"bob\", \"carol\"]\n",
        "",
    );
    Mtad::start(&s.work).terminate();
    let o = s.sendmail(
        &[
            "-i",
            "-f",
            "alice@local.test",
            "nosuch@local.test",
            "bob@local.test",
        ],
        "Subject: for two\n\nhello\n",
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = s.sendmail(
        &[
            "-i",
            "-f",
            "carol@local.test",
            "-N",
            "never",
            "ghost@local.test",
        ],
        "Subject: for no one\n\nhello\n",
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(s.drops().len(), 2);

    let mtad = Mtad::start(&s.work);
    let bob = s.wait_maildir("local.test", "bob", 1);
    assert!(bob[0].contains("Subject: for two"), "{}", bob[0]);
    let alice = s.wait_maildir("local.test", "alice", 1);
    let dsn = &alice[0];
    for want in [
        "Content-Type: multipart/report; report-type=delivery-status;",
        "Final-Recipient: rfc822; nosuch@local.test",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1",
        "Subject: for two",
    ] {
        assert!(dsn.contains(want), "{want:?} not in the DSN:\n{dsn}");
    }
    assert!(!dsn.contains("bob@local.test\nAction"), "{dsn}");
    wait_until("both drop files done with", WAIT, || s.drops().is_empty());
    mtad.terminate();
    assert_eq!(s.wait_maildir("local.test", "alice", 1).len(), 1, "one DSN");
    assert_eq!(
        s.maildir_count("local.test", "carol"),
        0,
        "NOTIFY=NEVER: no DSN for carol"
    );
    let aside = s.in_drop_dir("");
    assert!(aside.is_empty(), "nothing set aside: {aside:?}");
}

/// mtad down, and a message dropped that is bigger than mtad takes: at
/// the import its sender gets a DSN (`5.3.4`), whether the file is a
/// little too big (the session's SIZE refuses it) or far too big to be
/// read whole (only its envelope and header are read); no one gets the
/// message, and nothing is left or set aside.
#[test]
fn a_dropped_message_too_big_is_bounced_to_its_sender() {
    let s = Setup::with("mail", "max_message_size = \"4KiB\"\n", "");
    Mtad::start(&s.work).terminate();
    for (subject, lines) in [("a little too big", 200), ("far too big", 60_000)] {
        let message = format!(
            "Subject: {subject}\n\n{}",
            "0123456789012345678901234567890123456\n".repeat(lines)
        );
        let o = s.sendmail(
            &["-i", "-f", "alice@local.test", "bob@local.test"],
            &message,
        );
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    assert_eq!(s.drops().len(), 2);

    let mtad = Mtad::start(&s.work);
    let dsns = s.wait_maildir("local.test", "alice", 2);
    for subject in ["a little too big", "far too big"] {
        let dsn = dsns
            .iter()
            .find(|d| d.contains(&format!("Subject: {subject}")))
            .unwrap_or_else(|| panic!("no DSN for {subject:?}: {dsns:?}"));
        for want in [
            "Final-Recipient: rfc822; bob@local.test",
            "Action: failed",
            "Status: 5.3.4",
            "Diagnostic-Code: smtp; 552 5.3.4 Message size exceeds",
        ] {
            assert!(dsn.contains(want), "{want:?} not in the DSN:\n{dsn}");
        }
    }
    wait_until("both drop files done with", WAIT, || s.drops().is_empty());
    mtad.terminate();
    assert_eq!(s.maildir_count("local.test", "bob"), 0, "bob got nothing");
    let left = s.in_drop_dir("");
    assert!(left.is_empty(), "nothing set aside: {left:?}");
}

/// A drop file mtad cannot use is set aside under its name and the
/// time, so a second one under the same name (names are taken again)
/// does not replace the first; the good file beside them is imported.
#[test]
fn drop_files_set_aside_under_one_name_are_all_kept() {
    let s = Setup::new("mail");
    Mtad::start(&s.work).terminate();
    let junk = s.drop_dir().join("drop-0-0");
    std::fs::write(&junk, "not a drop file").unwrap();
    let mtad = Mtad::start(&s.work);
    let set_aside = || s.in_drop_dir("bad-drop-0-0.");
    wait_until("the first junk file set aside", WAIT, || {
        set_aside().len() == 1
    });
    std::fs::write(&junk, "not a drop file either").unwrap();
    wait_until("the second junk file set aside", WAIT, || {
        set_aside().len() == 2
    });
    let kept: Vec<String> = set_aside()
        .iter()
        .map(|n| std::fs::read_to_string(s.drop_dir().join(n)).unwrap())
        .collect();
    assert!(
        kept.contains(&"not a drop file".to_owned())
            && kept.contains(&"not a drop file either".to_owned()),
        "{kept:?}"
    );
    assert!(s.drops().is_empty(), "{:?}", s.drops());
    mtad.terminate();
}

/// mtad down and the drop directory's file system short of the reserve
/// `drop_min_free_space` keeps: refused with EX_TEMPFAIL (75), nothing
/// written.
#[test]
fn a_drop_never_eats_into_the_free_space_reserve() {
    let s = Setup::with("mail", "", "drop_min_free_space = \"1000000GiB\"\n");
    Mtad::start(&s.work).terminate();
    let o = s.sendmail(&["-i", "alice@local.test"], "Subject: s\n\nx\n");
    assert_eq!(code(&o), 75, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("message NOT sent to alice@local.test")
            && err.contains("must stay free (sendmail.drop_min_free_space)"),
        "{err}"
    );
    let all = s.in_drop_dir("");
    assert!(all.is_empty(), "{all:?}");
}

/// No socket and no drop directory: nothing can keep the message, so
/// the command says so and exits EX_CANTCREAT (73).
#[test]
fn with_nowhere_to_leave_it_the_message_is_not_lost_silently() {
    let s = Setup::new("mail");
    let o = s.sendmail(&["-i", "alice@local.test"], "Subject: s\n\nx\n");
    assert_eq!(code(&o), 73, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("message NOT sent to alice@local.test") && err.contains("cannot connect"),
        "{err}"
    );
}

/// A group `nobody` is not in, for the drop directory.
fn drop_group_for_nobody() -> Option<(String, u32)> {
    ["mail", "daemon", "sys", "adm"].iter().find_map(|name| {
        let group = nix::unistd::Group::from_name(name).ok().flatten()?;
        let member = group.mem.iter().any(|m| m == "nobody") || group.gid.as_raw() == NOBODY;
        (!member).then(|| (name.to_string(), group.gid.as_raw()))
    })
}

/// True when the test may go on as root; with CI set, not being root
/// fails it.
fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root, and CI runs the suite as root"
    );
    eprintln!("SKIPPED {test}: needs root (CI runs the suite as root)");
    false
}

/// Another user: `nobody` runs the command installed set-group-id to
/// the drop group. mtad records nobody (not root, whatever `-f` says),
/// the socket and the directories have their modes, and nobody cannot
/// read the drop files, its own or another user's.
#[test]
fn another_user_is_recorded_as_the_kernel_names_them() {
    if !root_or_skip("another_user_is_recorded_as_the_kernel_names_them") {
        return;
    }
    let Some((group, gid)) = drop_group_for_nobody() else {
        eprintln!("SKIPPED: no group to make the drop group here");
        return;
    };
    let s = Setup::new(&group);
    // Installed as docs/sendmail.md says: root:<drop group>, 2755.
    let installed = s.work.path().join("bin/sendmail");
    std::fs::create_dir(s.work.path().join("bin")).unwrap();
    std::fs::set_permissions(
        s.work.path().join("bin"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::copy(bin("mta-sendmail"), &installed).unwrap();
    nix::unistd::chown(&installed, Some(0.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o2755)).unwrap();
    let as_nobody = |c: &mut Command| {
        c.uid(NOBODY).gid(NOBODY);
    };
    let as_nobody_run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .expect("run as nobody")
    };

    let mtad = Mtad::start(&s.work);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(mode(&s.socket()), 0o666, "any user may connect");
    // Made by mtad, whose umask is 077: opened to all explicitly.
    for dir in ["run", "run/mta", "spool"] {
        assert_eq!(mode(&s.work.path().join(dir)), 0o755, "{dir}");
    }
    assert_eq!(mode(&s.drop_dir()), 0o1730);
    assert_eq!(std::fs::metadata(s.drop_dir()).unwrap().gid(), gid);

    let o = s.sendmail_with(
        &installed,
        &[
            "-i",
            "-f",
            "root@mx.test",
            "carol@local.test",
            "far@remote.test",
        ],
        "From: root@mx.test\nSubject: pretending\n\nI am root.\n",
        as_nobody,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let carol = &s.wait_maildir("local.test", "carol", 1)[0];
    assert!(
        carol.starts_with(
            "Return-Path: <root@mx.test>\nDelivered-To: carol@local.test\nReceived: from local user nobody (uid 65534)\n"
        ),
        "{carol}"
    );
    assert!(!carol.contains("local user root"), "{carol}");
    mtad.terminate();
    let queued = spool_contents(&s.work.queue());
    assert_eq!(
        queued[0].1.origin.auth.as_deref(),
        Some("local:65534:nobody")
    );

    // mtad down: nobody's message is dropped, as nobody's, in the group.
    let o = s.sendmail_with(
        &installed,
        &["-i", "dave@local.test"],
        "Subject: s\n\nx\n",
        as_nobody,
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    // And one of root's (this test's user), through the same command.
    let o = s.sendmail_with(
        &installed,
        &["-i", "erin@local.test"],
        "Subject: s\n\ny\n",
        |_| {},
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let drops = s.drops();
    assert_eq!(drops.len(), 2, "{drops:?}");
    let owners: Vec<(u32, u32)> = drops
        .iter()
        .map(|d| {
            let m = std::fs::metadata(s.drop_dir().join(d)).unwrap();
            (m.uid(), m.gid())
        })
        .collect();
    assert!(owners.contains(&(NOBODY, gid)), "{owners:?}");
    assert!(owners.contains(&(0, gid)), "{owners:?}");
    for d in &drops {
        let path = s.drop_dir().join(d);
        let o = as_nobody_run("cat", &[path.to_str().unwrap()]);
        assert!(!o.status.success(), "nobody read {d}: {}", text(&o));
        assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    }
    let o = as_nobody_run("ls", &[s.drop_dir().to_str().unwrap()]);
    assert!(!o.status.success(), "nobody listed the drop directory");

    // Imported as their owners.
    let mtad = Mtad::start(&s.work);
    let dave = &s.wait_maildir("local.test", "dave", 1)[0];
    assert!(
        dave.contains("\nReceived: from local user nobody (uid 65534)\n"),
        "{dave}"
    );
    let erin = &s.wait_maildir("local.test", "erin", 1)[0];
    assert!(
        erin.contains("\nReceived: from local user root (uid 0)\n"),
        "{erin}"
    );
    wait_until("the drops imported", WAIT, || s.drops().is_empty());
    drop(mtad);
}

/// `-bs`: an SMTP session on standard input and output, mtad's own
/// (no AUTH offered, relaying allowed), recorded as the user.
#[test]
fn bs_speaks_smtp_on_standard_input_and_output() {
    let s = Setup::new("mail");
    let _mtad = Mtad::start(&s.work);
    let mut child = Command::new(bin("mta-sendmail"))
        .arg("-C")
        .arg(s.work.config_path())
        .arg("-bs")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "EOF after {all:?}"
            );
            all.push_str(&line);
            if line.as_bytes().get(3) == Some(&b' ') {
                return all;
            }
        }
    };
    let mut say = |line: &str| {
        stdin.write_all(line.as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    assert!(reply().starts_with("220 mx.test ESMTP"));
    say("EHLO client\r\n");
    let ehlo = reply();
    assert!(
        ehlo.contains("250-PIPELINING") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    say("MAIL FROM:<someone@elsewhere.test>\r\n");
    assert!(reply().starts_with("250 2.1.0"));
    say("RCPT TO:<frank@local.test>\r\n");
    assert!(reply().starts_with("250 2.1.5"));
    say("RCPT TO:<far@remote.test>\r\n");
    assert!(reply().starts_with("250 2.1.5"), "a local user may relay");
    say("DATA\r\n");
    assert!(reply().starts_with("354"));
    say("Subject: bs\r\n\r\n..dot\r\n.\r\n");
    assert!(reply().starts_with("250 2.0.0 Ok: queued as "));
    say("QUIT\r\n");
    assert!(reply().starts_with("221"));
    drop(stdin);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let frank = &s.wait_maildir("local.test", "frank", 1)[0];
    let (uid, name) = me();
    assert!(
        frank.contains(&format!("Received: from local user {name} (uid {uid})\n")),
        "{frank}"
    );
    assert!(frank.ends_with("\n\n.dot\n"), "{frank}");
}

/// `-bs` with the whole dialogue written at once (the session takes it
/// a command at a time); standard output and the exit status.
fn bs_dialogue(s: &Setup, lines: &str) -> Output {
    s.sendmail(&["-bs"], lines)
}

/// `-bs` with mtad down: a stand-alone session takes the message, as
/// Postfix's own `smtpd` would, and leaves it in the drop directory; the
/// next start imports and delivers it. With no drop directory to leave
/// it in, the end of the data gets `452 4.3.1` and nothing is lost
/// silently.
#[test]
fn bs_with_mtad_down_leaves_the_message_in_the_drop_directory() {
    let s = Setup::new("mail");
    let dialogue = "EHLO client\r\nMAIL FROM:<someone@elsewhere.test>\r\n\
                    RCPT TO:<frank@local.test>\r\nRCPT TO:<far@remote.test> NOTIFY=NEVER\r\n\
                    DATA\r\nSubject: bs down\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    // No drop directory yet (mtad never started).
    let o = bs_dialogue(&s, dialogue);
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(said.contains("\r\n452 4.3.1 "), "{said}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not left for later"),
        "{}",
        text(&o)
    );

    Mtad::start(&s.work).terminate();
    let o = bs_dialogue(&s, dialogue);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    let replies: Vec<&str> = said
        .split("\r\n")
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .collect();
    assert!(
        replies[0].starts_with("220 ") && replies[0].contains(" ESMTP"),
        "{said}"
    );
    assert!(
        !said.contains("AUTH") && !said.contains("STARTTLS"),
        "{said}"
    );
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "250", "354", "250", "221"],
        "{said}"
    );
    assert!(
        said.contains("250 2.0.0 Ok: left for mtad in the drop directory"),
        "{said}"
    );
    // One file per NOTIFY value.
    let (uid, name) = me();
    assert_eq!(
        s.drops(),
        [format!("drop-{uid}-0"), format!("drop-{uid}-1")]
    );

    let mtad = Mtad::start(&s.work);
    let frank = &s.wait_maildir("local.test", "frank", 1)[0];
    assert!(
        frank.contains(&format!("Received: from local user {name} (uid {uid})\n")),
        "{frank}"
    );
    assert!(
        frank.contains("Subject: bs down") && frank.ends_with("\n\n.dot\n"),
        "{frank}"
    );
    wait_until("the drop files imported", WAIT, || s.drops().is_empty());
    mtad.terminate();
    let queued = spool_contents(&s.work.queue());
    assert_eq!(queued.len(), 1, "the remote copy waits: {queued:?}");
    assert_eq!(
        queued[0].1.sender.to_string(),
        "someone@elsewhere.test",
        "the envelope sender kept"
    );
}

/// `-bs` with mtad down keeps each recipient's ORCPT (RFC 3461 section
/// 4.2, xtext-decoded) in the drop files: once imported, the queued
/// envelope has it as if the client had sent its RCPT to mtad, and the
/// DSN for a recipient the import refused gives it as
/// `Original-Recipient:`.
#[test]
fn bs_with_mtad_down_keeps_each_recipients_orcpt() {
    let s = Setup::with("mail", "local_recipients = [\"alice\", \"frank\"]\n", "");
    Mtad::start(&s.work).terminate();
    let dialogue = "EHLO client\r\nMAIL FROM:<alice@local.test>\r\n\
        RCPT TO:<far@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;original+2Bfar@example.test\r\n\
        RCPT TO:<ghost@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ghost+40old.test\r\n\
        RCPT TO:<frank@local.test>\r\n\
        DATA\r\nSubject: bs orcpt\r\n\r\nhello\r\n.\r\nQUIT\r\n";
    let o = bs_dialogue(&s, dialogue);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        said.contains("250 2.0.0 Ok: left for mtad in the drop directory"),
        "{said}"
    );
    let (uid, _) = me();
    assert_eq!(
        s.drops(),
        [format!("drop-{uid}-0"), format!("drop-{uid}-1")],
        "one file per NOTIFY value"
    );

    let mtad = Mtad::start(&s.work);
    let frank = &s.wait_maildir("local.test", "frank", 1)[0];
    assert!(frank.contains("Subject: bs orcpt"), "{frank}");
    let dsn = &s.wait_maildir("local.test", "alice", 1)[0];
    for want in [
        "Final-Recipient: rfc822; ghost@local.test",
        "Original-Recipient: rfc822;ghost@old.test",
        "Status: 5.1.1",
    ] {
        assert!(dsn.contains(want), "{want:?} not in the DSN:\n{dsn}");
    }
    wait_until("the drop files imported", WAIT, || s.drops().is_empty());
    mtad.terminate();
    let queued = spool_contents(&s.work.queue());
    let far = queued
        .iter()
        .flat_map(|(_, envelope, _)| &envelope.recipients)
        .find(|r| r.address.to_string() == "far@remote.test")
        .unwrap_or_else(|| panic!("far@remote.test is not queued: {queued:?}"));
    assert_eq!(
        far.orcpt.as_deref(),
        Some("rfc822;original+far@example.test"),
        "{far:?}"
    );
    assert_eq!(
        far.notify.map(|n| n.value()).as_deref(),
        Some("SUCCESS,FAILURE")
    );
}

/// `-f` sets the envelope sender; `-F` names the sender in the `From:`
/// a message without one gets; bare names are qualified with mtad's
/// host name; recipients come from the arguments, comma lists too.
#[test]
fn f_and_f_and_recipients_as_arguments() {
    let s = Setup::new("mail");
    let _mtad = Mtad::start(&s.work);
    let o = s.sendmail(
        &[
            "-i",
            "-f",
            "reports@local.test",
            "-F",
            "Nightly Reports",
            "gina@local.test, Hal <hal@local.test>",
            "ivan",
        ],
        "Subject: report\n\nall good\n",
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    let gina = &s.wait_maildir("local.test", "gina", 1)[0];
    s.wait_maildir("local.test", "hal", 1);
    let ivan = &s.wait_maildir("mx.test", "ivan", 1)[0];
    for copy in [gina, ivan] {
        assert!(
            copy.starts_with("Return-Path: <reports@local.test>\n"),
            "{copy}"
        );
        assert!(
            copy.contains("\nSubject: report\nFrom: \"Nightly Reports\" <reports@local.test>\n"),
            "{copy}"
        );
    }
    assert!(ivan.contains("\nDelivered-To: ivan@mx.test\n"), "{ivan}");
    // Without -F, the user database's full name (or none) and the
    // user's own address.
    let o = s.sendmail(&["judy@local.test"], "Subject: plain\n\nx\n");
    assert_eq!(code(&o), 0, "{}", text(&o));
    let judy = &s.wait_maildir("local.test", "judy", 1)[0];
    let (_, name) = me();
    assert!(
        judy.starts_with(&format!("Return-Path: <{name}@mx.test>\n")),
        "{judy}"
    );
    assert!(
        judy.contains(&format!("<{name}@mx.test>\n"))
            || judy.contains(&format!("From: {name}@mx.test\n")),
        "{judy}"
    );
}

/// A line holding only `.` ends the message unless `-i` (or `-oi`)
/// says it is text.
#[test]
fn a_lone_dot_ends_the_message_only_without_i() {
    let s = Setup::new("mail");
    let _mtad = Mtad::start(&s.work);
    let message = "Subject: dots\n\nbefore\n.\nafter\n";
    let o = s.sendmail(&["kim@local.test"], message);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = s.sendmail(&["-oi", "lee@local.test"], message);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let kim = &s.wait_maildir("local.test", "kim", 1)[0];
    let lee = &s.wait_maildir("local.test", "lee", 1)[0];
    assert!(kim.ends_with("\n\nbefore\n"), "{kim}");
    assert!(lee.ends_with("\n\nbefore\n.\nafter\n"), "{lee}");
}

/// Usage errors exit EX_USAGE (64) before anything is sent, with
/// Postfix's words for a missing recipient.
#[test]
fn usage_errors_exit_64() {
    let s = Setup::new("mail");
    let mtad = Mtad::start(&s.work);
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["-k", "mia@local.test"],
            "Subject: s\n\nx\n",
            "unknown option -k",
        ),
        (
            &["-i"],
            "Subject: s\n\nx\n",
            "Recipient addresses must be specified on the command line or via the -t option",
        ),
        (
            &["-t", "-i"],
            "Subject: no recipient\n\nx\n",
            "No recipient addresses found in message header",
        ),
        (&["-bs", "mia@local.test"], "", "takes no recipient"),
    ];
    for (args, input, says) in cases {
        let o = s.sendmail(args, input);
        assert_eq!(code(&o), 64, "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{args:?}: {}",
            text(&o)
        );
    }
    // Harmless Sendmail options are accepted.
    let o = s.sendmail(
        &[
            "-oem",
            "-odi",
            "-odb",
            "-oQ/var/spool/mqueue",
            "-v",
            "-U",
            "-i",
            "mia@local.test",
        ],
        "Subject: s\n\nx\n",
    );
    assert_eq!(code(&o), 0, "{}", text(&o));
    s.wait_maildir("local.test", "mia", 1);
    mtad.terminate();
    // Only that one: the refused command lines sent nothing.
    assert_eq!(s.wait_maildir("local.test", "mia", 1).len(), 1);
}

/// A restart (SIGHUP) re-creates the socket in the new image, a
/// graceful restart (SIGUSR1) keeps it: mail goes through the socket
/// after each, never to the drop directory.
#[test]
fn the_socket_survives_restart_and_graceful() {
    let s = Setup::new("mail");
    let mut mtad = Mtad::start(&s.work);
    let send = |to: &str| {
        let o = s.sendmail(&["-i", to], "Subject: s\n\nx\n");
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert!(s.drops().is_empty(), "{to} was dropped, not handed over");
    };
    send("nina@local.test");
    signal(mtad.pid(), nix::sys::signal::Signal::SIGHUP);
    mtad.await_ready_again();
    assert!(s.socket().exists(), "the new image binds the socket again");
    send("omar@local.test");
    signal(mtad.pid(), nix::sys::signal::Signal::SIGUSR1);
    send("pia@local.test");
    for user in ["nina", "omar", "pia"] {
        let copy = &s.wait_maildir("local.test", user, 1)[0];
        assert!(copy.contains("\nReceived: from local user "), "{copy}");
    }
    mtad.terminate();
}
