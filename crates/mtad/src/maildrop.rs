//! Imports the drop directory: messages `mta-sendmail` left while mtad
//! was down, restarting or out of space (Postfix's pickup).
//!
//! At start and then every `[sendmail] drop_scan_interval`, each
//! `drop-` file is checked (a regular file with one link, not too big,
//! the drop format: `mta_sendmail::dropfile::decode`) and handed to a
//! local session over a socket pair, by the same client `mta-sendmail`
//! uses, as its owner: the uid of the file is the user who wrote it,
//! which the set-group-id command cannot fake. Once the session said
//! 250 the file is removed; a temporary refusal leaves it for the next
//! scan; a file that can never be used is renamed `bad-...` and logged.
//! A crash between the 250 and the removal imports it again (a
//! duplicate, never a loss).
//!
//! One mtad imports a directory at a time: the scan holds a `flock` on
//! it, as the spool does on the queue directory.

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mta_envelope::{unix_now, Origin, QueueId};
use mta_queue::Bounced;
use mta_sendmail::client::{self, Report};
use mta_sendmail::dropfile::{self, BAD_PREFIX, DROP_PREFIX, TMP_PREFIX};
use mta_sendmail::{Prepared, Submission};
use mta_smtp::LocalUser;
use nix::fcntl::{Flock, FlockArg};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::context::Context;
use crate::local_session::{local_user, Local};
use crate::shutdown::Shutdown;

/// A `tmp-` file this old was left by a crash: the command writes one
/// within a moment of creating it.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// How long the local session may take to answer the importing client.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Scans the drop directory now and then every `every`, until the stop.
pub async fn import_loop(
    dir: PathBuf,
    every: Duration,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
    local: Arc<Local>,
) {
    let mut importer = Importer {
        dir,
        lock: None,
        warned: HashSet::new(),
        lock_warned: false,
        ctx,
        shutdown,
        sessions,
        local,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = importer.shutdown.listen_end.cancelled() => break,
            _ = tick.tick() => {}
        }
        importer.scan(SystemTime::now()).await;
    }
}

/// The import's state.
struct Importer {
    dir: PathBuf,
    /// The directory's lock, once held.
    lock: Option<Flock<File>>,
    /// Files whose temporary failure was already logged.
    warned: HashSet<String>,
    /// The lock's failure was logged.
    lock_warned: bool,
    ctx: Arc<Context>,
    shutdown: Shutdown,
    sessions: TaskTracker,
    local: Arc<Local>,
}

/// What became of one drop file.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// It went away meanwhile (another mtad had it, or its writer's
    /// crash left nothing whole).
    Gone,
    /// Queued (and perhaps some recipients refused): the file goes.
    Imported,
    /// Not now: the file stays for the next scan.
    Later(String),
    /// Never: the file is set aside.
    Bad(String),
}

impl Importer {
    async fn scan(&mut self, now: SystemTime) {
        if self.lock.is_none() {
            match lock(&self.dir) {
                Ok(l) => self.lock = Some(l),
                Err(e) => {
                    if !std::mem::replace(&mut self.lock_warned, true) {
                        warn!(dir = %self.dir.display(), error = %e, "cannot lock the drop directory (another mtad imports it?); trying again at each scan");
                    }
                    return;
                }
            }
        }
        let names = match names(&self.dir, now) {
            Ok(n) => n,
            Err(e) => {
                debug!(dir = %self.dir.display(), error = %e, "cannot list the drop directory");
                return;
            }
        };
        self.warned.retain(|n| names.contains(n));
        for name in names {
            if self.shutdown.listen_end.is_cancelled() {
                return;
            }
            let path = self.dir.join(&name);
            match self.import(&path).await {
                Fate::Gone => {}
                Fate::Imported => {
                    self.warned.remove(&name);
                    if let Err(e) = std::fs::remove_file(&path) {
                        // It would be imported again: say so loudly.
                        error!(file = %path.display(), error = %e, "imported, but the drop file cannot be removed");
                    }
                }
                Fate::Later(why) => {
                    if self.warned.insert(name) {
                        warn!(file = %path.display(), why, "drop file not imported yet; trying again at each scan");
                    }
                }
                Fate::Bad(why) => {
                    let aside = self.dir.join(set_aside_name(&name, now));
                    error!(file = %path.display(), why, set_aside = %aside.display(), "drop file cannot be imported; set aside");
                    if let Err(e) = std::fs::rename(&path, &aside) {
                        error!(file = %path.display(), error = %e, "cannot set the drop file aside");
                    }
                }
            }
        }
    }

    /// Reads one drop file and hands it to a local session as its owner.
    async fn import(&self, path: &Path) -> Fate {
        let settings = self.ctx.settings();
        let config = self.local.session_config(&settings);
        // The envelope line and some slack beyond the largest message.
        let limit = config.max_message_size as u64 + (2 << 20);
        let read = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || read(&path, limit)).await
        };
        let (uid, submission) = match read {
            Ok(Ok(Found::Whole(uid, submission))) => (uid, submission),
            Ok(Ok(Found::TooBig { uid, head, size })) => {
                return self.bounce_too_big(path, uid, head, size, &settings).await;
            }
            Ok(Ok(Found::Gone)) => return Fate::Gone,
            Ok(Err(why)) => return Fate::Bad(why),
            Err(e) => return Fate::Later(e.to_string()),
        };
        let user = local_user(uid).await;
        let Some(_slot) = self.local.slot().await else {
            return Fate::Later("stopping".into());
        };
        let report = match self.hand_over(&user, submission, config, settings).await {
            Ok(r) => r,
            Err(e) => return Fate::Later(e),
        };
        let bounced = self.bounce_refused(path, &user, &report).await;
        judge(path, &user, &report, bounced)
    }

    /// A drop file too big for any message: its sender is told, in a DSN
    /// for every recipient (`552 5.3.4`, as the session would refuse it),
    /// and the file is done with; set aside when no DSN can be made.
    async fn bounce_too_big(
        &self,
        path: &Path,
        uid: u32,
        head: Submission,
        size: u64,
        settings: &crate::settings::Settings,
    ) -> Fate {
        let user = local_user(uid).await;
        let why = format!("{size} octets, more than a message may be");
        let Ok(p) = head.complete(&settings.hostname, &user.name) else {
            return Fate::Bad(why);
        };
        let reply = format!(
            "552 5.3.4 Message size exceeds fixed maximum message size ({size} octets in the drop file)"
        );
        let refused: Vec<(String, String)> = p
            .recipients
            .iter()
            .map(|rcpt| (rcpt.clone(), reply.clone()))
            .collect();
        let bounced = self.bounce(path, &user, &p, &refused, None).await;
        let file = path.display();
        match bounced {
            Some(Bounced::Queued) => {
                warn!(%file, user = %user.name, uid, size, "drop file too big: not delivered; the sender gets a DSN");
                Fate::Imported
            }
            Some(Bounced::NotWanted) => {
                warn!(%file, user = %user.name, uid, size, "drop file too big: not delivered; no DSN (the sender is <> or NOTIFY says not)");
                Fate::Imported
            }
            Some(Bounced::Failed) => {
                Fate::Later("too big, and the DSN for it could not be queued".into())
            }
            None => Fate::Bad(why),
        }
    }

    /// Tells the sender of the recipients the session refused for good,
    /// in a DSN, as a delivery failure would (no one else can: the
    /// command that dropped the file has long exited). None when none
    /// was refused, or no DSN could be made of them.
    async fn bounce_refused(
        &self,
        path: &Path,
        user: &LocalUser,
        report: &Report,
    ) -> Option<Bounced> {
        if report.refused.is_empty() {
            return None;
        }
        // Recipients are only refused once the submission is prepared.
        let p = report.prepared.as_ref()?;
        let refused: Vec<(String, String)> = report
            .refused
            .iter()
            .map(|(rcpt, reply)| (rcpt.clone(), reply.text()))
            .collect();
        let id = report
            .queued
            .first()
            .and_then(|(id, _)| id.parse::<QueueId>().ok());
        self.bounce(path, user, p, &refused, id).await
    }

    /// A DSN to the sender of `p` for `refused` (each recipient with its
    /// reply), naming the message `id` (else a new one).
    async fn bounce(
        &self,
        path: &Path,
        user: &LocalUser,
        p: &Prepared,
        refused: &[(String, String)],
        id: Option<QueueId>,
    ) -> Option<Bounced> {
        let rcpts: Vec<String> = refused
            .iter()
            .map(|(rcpt, _)| client::rcpt_line(p, rcpt))
            .collect();
        let replies: Vec<String> = refused.iter().map(|(_, r)| r.clone()).collect();
        let origin = Origin {
            client_ip: Ipv4Addr::LOCALHOST.into(),
            helo: "localhost".into(),
            protocol: "local-esmtp".into(),
            tls: None,
            auth: Some(user.auth_name()),
        };
        let envelope = match mta_smtp::envelope_of_commands(
            &client::mail_line(p),
            &rcpts,
            origin,
            unix_now(),
        ) {
            Ok(e) => e,
            Err(why) => {
                // Never the case for what the client sends; were it, no
                // later scan would do better, so no DSN is tried (None).
                error!(file = %path.display(), why, "cannot tell the sender of the refused recipients of a drop file");
                return None;
            }
        };
        Some(
            self.ctx
                .queue()
                .bounce_refused(id, &envelope, &p.content, &replies)
                .await,
        )
    }

    /// Runs a local session for `user` over a socket pair, and the
    /// client on the other end.
    async fn hand_over(
        &self,
        user: &LocalUser,
        submission: Submission,
        config: Arc<mta_smtp::SessionConfig>,
        settings: Arc<crate::settings::Settings>,
    ) -> Result<Report, String> {
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
        theirs
            .set_nonblocking(true)
            .map_err(|e| format!("socket pair: {e}"))?;
        let theirs =
            tokio::net::UnixStream::from_std(theirs).map_err(|e| format!("socket pair: {e}"))?;
        {
            let ctx = self.ctx.clone();
            let shutdown = self.shutdown.clone();
            let user = user.clone();
            self.sessions.spawn(async move {
                crate::connection::serve_local(theirs, user, config, &ctx, &settings, &shutdown)
                    .await;
            });
        }
        let login = user.name.clone();
        tokio::task::spawn_blocking(move || {
            let _ = ours.set_read_timeout(Some(REPLY_TIMEOUT));
            let _ = ours.set_write_timeout(Some(REPLY_TIMEOUT));
            client::submit(ours, &submission, &login)
        })
        .await
        .map_err(|e| e.to_string())
    }
}

/// What the report of an import means for its file, logged; `bounced`
/// is what became of the DSN for its refused recipients.
fn judge(path: &Path, user: &LocalUser, report: &Report, bounced: Option<Bounced>) -> Fate {
    let file = path.display();
    for (id, recipients) in &report.queued {
        info!(%file, user = %user.name, uid = user.uid, queue_id = %id, recipients = recipients.len(), "drop file imported");
    }
    for (rcpt, reply) in &report.refused {
        let reply = reply.text();
        match bounced {
            Some(Bounced::Queued) => {
                warn!(%file, user = %user.name, uid = user.uid, recipient = %rcpt, reply, "recipient of a drop file refused: not delivered; the sender gets a DSN");
            }
            Some(Bounced::NotWanted) => {
                warn!(%file, user = %user.name, uid = user.uid, recipient = %rcpt, reply, "recipient of a drop file refused: not delivered; no DSN (the sender is <> or NOTIFY says not)");
            }
            _ => {
                error!(%file, user = %user.name, uid = user.uid, recipient = %rcpt, reply, "recipient of a drop file refused: not delivered, and no DSN could be queued");
            }
        }
    }
    if bounced == Some(Bounced::Failed) && report.queued.is_empty() {
        // Nothing went: the next scan tries the whole file again, its DSN
        // with it.
        return Fate::Later("the DSN for its refused recipients could not be queued".into());
    }
    if let Some((_, why)) = &report.failed {
        // Refused as a whole with nothing queued: done with once its
        // sender was told (or need not be), else set aside.
        let told = matches!(bounced, Some(Bounced::Queued | Bounced::NotWanted));
        if report.queued.is_empty() && !told {
            return Fate::Bad(why.clone());
        }
    }
    if !report.pending.is_empty() {
        let why = report.pending_why.clone().unwrap_or_default();
        if report.queued.is_empty() {
            return Fate::Later(why);
        }
        // Some went: the rest would come again with them. Rare (a stop
        // between two transactions); a duplicate beats a loss.
        warn!(%file, pending = report.pending.len(), why, "drop file partly imported; the rest is tried again with it");
        return Fate::Later(why);
    }
    Fate::Imported
}

/// The name a drop file that cannot be imported is given: its own with
/// the scan's time after it, as a user's drop names are taken again once
/// free (`drop-<uid>-<n>`) and an earlier file set aside must stay.
fn set_aside_name(name: &str, scan: SystemTime) -> String {
    let at = scan
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{BAD_PREFIX}{name}.{at}")
}

/// Takes the directory's lock (exclusive, without waiting).
fn lock(dir: &Path) -> std::io::Result<Flock<File>> {
    let f = File::open(dir)?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e.into())
}

/// The drop files to import, oldest first (by modification time, then
/// name: a user's files are named by the first number free, not by
/// age); `tmp-` files left by a crash long ago are removed on the way.
fn names(dir: &Path, now: SystemTime) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with(DROP_PREFIX) {
            // One gone meanwhile (imported by another scan) sorts first
            // and is then found gone.
            let written = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((written, name));
        } else if name.starts_with(TMP_PREFIX) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TMP));
            if old {
                let _ = std::fs::remove_file(entry.path());
                info!(file = %entry.path().display(), "removed a drop file a crash left half written");
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// What a look at a drop file found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Gone meanwhile.
    Gone,
    /// The file and its owner.
    Whole(u32, Submission),
    /// A file too big for any message: its envelope and header section
    /// (`dropfile::decode_head`), its owner and its size.
    TooBig {
        uid: u32,
        head: Submission,
        size: u64,
    },
}

/// Reads a drop file and its owner: Ok(None) when it is gone; Err when
/// it can never be used. Opened without following a link and checked
/// on the open file: a regular file with one link (not a link to some
/// other file), no bigger than `limit`.
fn read(path: &Path, limit: u64) -> Result<Found, String> {
    use std::io::Read;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Gone),
        Err(e) => return Err(format!("cannot open: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err("not a regular file with one link".into());
    }
    if meta.len() > limit {
        let mut head = Vec::with_capacity(dropfile::HEAD_LEN);
        file.take(dropfile::HEAD_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| format!("cannot read: {e}"))?;
        let head = dropfile::decode_head(&head).map_err(|e| e.to_string())?;
        return Ok(Found::TooBig {
            uid: meta.uid(),
            head,
            size: meta.len(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    let submission = dropfile::decode(&bytes).map_err(|e| e.to_string())?;
    Ok(Found::Whole(meta.uid(), submission))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Submission {
        Submission {
            sender: None,
            full_name: None,
            recipients: vec!["a@local.test".into()],
            notify: None,
            orcpt: Default::default(),
            ret: None,
            envid: None,
            eight_bit: false,
            time: 1,
            token: "t".into(),
            content: b"Subject: s\r\n\r\nx\r\n".to_vec(),
        }
    }

    const ROOMY: dropfile::Quota = dropfile::Quota {
        per_user: 100,
        min_free_space: 0,
    };

    #[test]
    fn files_set_aside_under_one_name_twice_keep_both() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = set_aside_name("drop-7-0", t);
        assert_eq!(first, "bad-drop-7-0.1800000000000000000");
        assert_ne!(
            set_aside_name("drop-7-0", t + Duration::from_millis(100)),
            first
        );
        assert!(!first.starts_with(DROP_PREFIX) && !first.starts_with(TMP_PREFIX));
    }

    /// What an import's report means for its file, with the DSN for its
    /// refused recipients: done with once they went or their sender was
    /// told; tried again when a DSN owed could not be queued and nothing
    /// went; set aside when refused as a whole and no one can be told.
    #[test]
    fn the_fate_of_a_drop_file_with_refused_recipients() {
        use mta_sendmail::client::Reply;
        let user = LocalUser::new(1000, Some("alice"));
        let path = Path::new("/drop/drop-1000-0");
        let reply = |code: u16, text: &str| Reply {
            code,
            lines: vec![text.to_owned()],
        };
        let some_refused = Report {
            queued: vec![("000000000000002a".into(), vec!["bob@local.test".into()])],
            refused: vec![("x@local.test".into(), reply(550, "5.1.1 no such user"))],
            ..Report::default()
        };
        let all_refused = Report {
            refused: vec![("x@local.test".into(), reply(550, "5.1.1 no such user"))],
            ..Report::default()
        };
        let whole = Report {
            failed: Some((mta_sendmail::Exit::Unavailable, "554 5.7.1 no".into())),
            refused: vec![("x@local.test".into(), reply(554, "5.7.1 no"))],
            ..Report::default()
        };
        let unsendable = Report {
            failed: Some((mta_sendmail::Exit::DataErr, "bad address".into())),
            ..Report::default()
        };
        let fate = |r: &Report, b| judge(path, &user, r, b);
        assert_eq!(fate(&some_refused, Some(Bounced::Queued)), Fate::Imported);
        assert_eq!(fate(&some_refused, Some(Bounced::Failed)), Fate::Imported);
        assert_eq!(fate(&all_refused, Some(Bounced::Queued)), Fate::Imported);
        assert_eq!(fate(&all_refused, Some(Bounced::NotWanted)), Fate::Imported);
        assert!(matches!(
            fate(&all_refused, Some(Bounced::Failed)),
            Fate::Later(_)
        ));
        assert_eq!(fate(&whole, Some(Bounced::Queued)), Fate::Imported);
        assert!(matches!(
            fate(&whole, Some(Bounced::Failed)),
            Fate::Later(_)
        ));
        assert_eq!(fate(&whole, None), Fate::Bad("554 5.7.1 no".into()));
        assert_eq!(fate(&unsendable, None), Fate::Bad("bad address".into()));
    }

    /// Oldest first by the time written, whatever the names say.
    #[test]
    fn drop_files_are_listed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (name, age) in [("drop-7-0", 10), ("drop-7-1", 30), ("drop-9-0", 20)] {
            let f = File::create(dir.path().join(name)).unwrap();
            f.set_modified(now - Duration::from_secs(age)).unwrap();
        }
        assert_eq!(
            names(dir.path(), now).unwrap(),
            ["drop-7-1", "drop-9-0", "drop-7-0"]
        );
    }

    #[test]
    fn only_whole_drop_files_are_listed_and_old_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let written = dropfile::write(dir.path(), &sample(), &ROOMY).unwrap();
        std::fs::write(dir.path().join("tmp-fresh"), "x").unwrap();
        std::fs::write(dir.path().join("tmp-old"), "x").unwrap();
        std::fs::write(dir.path().join("bad-drop-1"), "x").unwrap();
        let later = SystemTime::now() + Duration::from_secs(2 * 3600);
        // Both temporaries are "old" two hours from now.
        let listed = names(dir.path(), SystemTime::now()).unwrap();
        assert_eq!(listed, [written.file_name().unwrap().to_str().unwrap()]);
        assert!(dir.path().join("tmp-old").exists(), "not old yet");
        names(dir.path(), later).unwrap();
        assert!(!dir.path().join("tmp-old").exists() && !dir.path().join("tmp-fresh").exists());
        assert!(dir.path().join("bad-drop-1").exists());
    }

    #[test]
    fn read_checks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dropfile::write(dir.path(), &sample(), &ROOMY).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        assert_eq!(read(&path, 1 << 20), Ok(Found::Whole(uid, sample())));
        // Too big for any message: its envelope and header section.
        let Ok(Found::TooBig {
            uid: owner,
            head,
            size,
        }) = read(&path, 10)
        else {
            panic!("not found too big");
        };
        assert_eq!(
            (owner, size),
            (uid, std::fs::metadata(&path).unwrap().len())
        );
        assert_eq!(head.recipients, sample().recipients);
        assert_eq!(head.content, b"Subject: s\r\n\r\n");
        assert_eq!(
            read(&dir.path().join("drop-gone"), 1 << 20),
            Ok(Found::Gone)
        );
        let link = dir.path().join("drop-link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read(&link, 1 << 20).is_err(), "a symbolic link");
        let hard = dir.path().join("drop-hard");
        std::fs::hard_link(&path, &hard).unwrap();
        assert!(read(&hard, 1 << 20).is_err(), "two links");
        let junk = dir.path().join("drop-junk");
        std::fs::write(&junk, "hello").unwrap();
        assert!(read(&junk, 1 << 20).is_err());
        assert!(read(&junk, 2).is_err(), "junk too big is still junk");
    }
}
