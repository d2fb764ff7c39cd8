//! The DSNs this MTA makes (RFC 3464), for the attempts (`settle.rs`
//! decides which are owed, `commit.rs` queues them) and for the
//! operator's delete with bounce (`steer.rs`).
//!
//! Building a recipient's report and choosing who gets a notice are pure;
//! [`send`] makes a DSN durable in the bounce queue and hands it to the
//! bounce runner.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mta_dsn::{Action, Diagnostic, DsnInput, RecipientReport};
use mta_envelope::{unix_now, Envelope, Mailbox, QueueId, Recipient, ReversePath};
use mta_spool::QueueName;
use tracing::error;

use crate::inner::Inner;
use crate::job::Job;
use crate::log::{Event, Record};
use crate::origin::local_origin;
use crate::outcome::LOCAL_REMOTE;

/// One recipient's report. `remote` is the server as outcomes name it
/// (`mx1.test[127.0.0.2]:2525`, or `maildir`).
pub(crate) fn report(
    recipient: &Recipient,
    action: Action,
    status: &str,
    remote: Option<&str>,
    diagnostic: Option<Diagnostic>,
    now: u64,
) -> RecipientReport {
    // "mx1.test[127.0.0.2]:2525" -> "mx1.test" for Remote-MTA (RFC 3464
    // section 2.3.5: the host's name; the address is not needed).
    let remote_mta = remote
        .filter(|r| *r != LOCAL_REMOTE)
        .map(|r| r.split('[').next().unwrap_or(r).to_owned());
    RecipientReport {
        recipient: recipient.address.clone(),
        orcpt: recipient.orcpt.clone(),
        action,
        status: status.to_owned(),
        remote_mta,
        diagnostic,
        note: None,
        last_attempt: Some(now),
        will_retry_until: None,
    }
}

/// The Diagnostic-Code of a failure or deferral: the server's reply when
/// one was the cause (`smtp;`), else our own words (`X-Local;`), which
/// outcomes keep free of file paths.
pub(crate) fn diagnostic_of(reason: &str, reply: Option<&str>) -> Diagnostic {
    match reply {
        Some(reply) => Diagnostic::Smtp(reply.to_owned()),
        None => Diagnostic::Local(reason.to_owned()),
    }
}

/// Who hears of failures in a message from `<>` (double bounces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DoubleBounce {
    /// The postmaster does.
    To(Mailbox),
    /// No one: the failed message was the postmaster's own copy, and a
    /// report about it would loop for ever.
    PostmasterCopy,
    /// No one: the configured postmaster is not an address.
    BadPostmaster,
}

/// A DSN about a message from `<>` goes to the postmaster, unless it is
/// the postmaster's copy that failed: then it is dropped (and the commit
/// logs and counts it, `Queue::dsns_dropped`), as a bounce loop would
/// never end.
pub(crate) fn double_bounce(envelope: &Envelope, postmaster: &str) -> DoubleBounce {
    let to_postmaster = envelope
        .recipients
        .iter()
        .any(|r| r.address.to_string().eq_ignore_ascii_case(postmaster));
    if to_postmaster {
        return DoubleBounce::PostmasterCopy;
    }
    match mailbox(postmaster) {
        Some(pm) => DoubleBounce::To(pm),
        None => DoubleBounce::BadPostmaster,
    }
}

/// The postmaster address as a mailbox: `local@domain`, or the bare
/// `postmaster` (RFC 5321 section 4.5.1: every server takes it; it is
/// local, delivered under the host name like `RCPT TO:<postmaster>`).
pub(crate) fn mailbox(address: &str) -> Option<Mailbox> {
    match address.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Some(Mailbox {
            local: local.to_owned(),
            domain: domain.to_owned(),
        }),
        None if address.eq_ignore_ascii_case("postmaster") => Some(Mailbox {
            local: address.to_owned(),
            domain: String::new(),
        }),
        _ => None,
    }
}

/// The reports owed to the sender for recipients the operator deleted
/// (as NOTIFY allows; a message from `<>` gets none): who to, and what.
pub(crate) fn deleted_reports(
    envelope: &Envelope,
    indexes: &[usize],
    now: u64,
) -> Option<(Mailbox, Vec<RecipientReport>)> {
    let failed = indexes.iter().filter_map(|&i| {
        let diagnostic = Diagnostic::Local("deleted from the queue by the operator".to_owned());
        Some((envelope.recipients.get(i)?, "5.0.0", diagnostic))
    });
    failure_reports(envelope, failed, now)
}

/// The reports owed to the sender for `failed` recipients of `envelope`,
/// each with its status and diagnostic, as NOTIFY allows: who to, and
/// what; None when none is owed (a message from `<>` gets none).
fn failure_reports<'a>(
    envelope: &'a Envelope,
    failed: impl Iterator<Item = (&'a Recipient, &'a str, Diagnostic)>,
    now: u64,
) -> Option<(Mailbox, Vec<RecipientReport>)> {
    let ReversePath::Mailbox(sender) = &envelope.sender else {
        return None;
    };
    let reports: Vec<RecipientReport> = failed
        .filter(|(r, _, _)| mta_dsn::wants_dsn(envelope, r, Action::Failed))
        .map(|(r, status, diagnostic)| {
            report(r, Action::Failed, status, None, Some(diagnostic), now)
        })
        .collect();
    (!reports.is_empty()).then(|| (sender.clone(), reports))
}

/// What became of a DSN for recipients that will never be delivered
/// (deleted by the operator, refused before their message was queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounced {
    /// Queued (durable in the bounce queue).
    Queued,
    /// None is owed: the sender is `<>`, or NOTIFY says never.
    NotWanted,
    /// It could not be queued (no space?): whatever would drop the
    /// recipients must not go on.
    Failed,
}

/// Sends the sender a DSN for recipients the operator deleted.
pub(crate) async fn bounce_deleted(
    inner: &Arc<Inner>,
    id: QueueId,
    envelope: &Envelope,
    content: &[u8],
    indexes: &[usize],
) -> Bounced {
    let owed = deleted_reports(envelope, indexes, unix_now());
    send_owed(inner, id, envelope, content, owed).await
}

/// The reports owed to the sender for recipients refused before their
/// message was queued (`replies[i]` is the reply `envelope.recipients[i]`
/// got), as NOTIFY allows; a message from `<>` gets none.
pub(crate) fn refused_reports(
    envelope: &Envelope,
    replies: &[String],
    now: u64,
) -> Option<(Mailbox, Vec<RecipientReport>)> {
    let failed = envelope.recipients.iter().zip(replies).map(|(r, reply)| {
        let status = enhanced_status(reply).unwrap_or("5.0.0");
        (r, status, Diagnostic::Smtp(reply.clone()))
    });
    failure_reports(envelope, failed, now)
}

/// The enhanced status code (RFC 3463) of a failure reply, `550 5.1.1
/// ...` -> `5.1.1`, when its class is the reply code's and it is 5.
fn enhanced_status(reply: &str) -> Option<&str> {
    let (code, text) = reply.split_once(' ')?;
    let code: u16 = code.parse().ok().filter(|c| (500..600).contains(c))?;
    mta_deliver::enhanced_code(code, text)
}

/// Sends the sender a DSN for recipients refused before their message
/// was queued.
pub(crate) async fn bounce_refused(
    inner: &Arc<Inner>,
    id: QueueId,
    envelope: &Envelope,
    content: &[u8],
    replies: &[String],
) -> Bounced {
    let owed = refused_reports(envelope, replies, unix_now());
    send_owed(inner, id, envelope, content, owed).await
}

/// Sends the DSN `owed` (who to, and the reports), if any, about message
/// `id`.
async fn send_owed(
    inner: &Arc<Inner>,
    id: QueueId,
    envelope: &Envelope,
    content: &[u8],
    owed: Option<(Mailbox, Vec<RecipientReport>)>,
) -> Bounced {
    let Some((sender, reports)) = owed else {
        return Bounced::NotWanted;
    };
    let source = Source {
        id,
        envelope,
        content,
    };
    if send(inner, &source, reports, sender).await {
        Bounced::Queued
    } else {
        Bounced::Failed
    }
}

/// What a DSN reports on.
pub(crate) struct Source<'a> {
    pub id: QueueId,
    pub envelope: &'a Envelope,
    pub content: &'a [u8],
}

impl<'a> Source<'a> {
    /// The message of an attempt.
    pub fn of(job: &'a Job) -> Source<'a> {
        Source {
            id: job.id,
            envelope: &job.envelope,
            content: &job.content,
        }
    }
}

/// Builds a DSN, makes it durable in the bounce queue, and hands it to the
/// bounce runner; false when it could not be queued.
pub(crate) async fn send(
    inner: &Arc<Inner>,
    source: &Source<'_>,
    reports: Vec<RecipientReport>,
    to: Mailbox,
) -> bool {
    let s = &inner.settings;
    let now = unix_now();
    let id = inner.store.next_id();
    let content = mta_dsn::build(&DsnInput {
        reporting_mta: &s.hostname,
        original_id: source.id,
        original: source.envelope,
        original_content: source.content,
        recipients: &reports,
        now,
        postmaster: &s.dsn_from,
        boundary_seed: id.value(),
    });
    let Some(content) = signed(&s.dkim, content).await else {
        error!(queue_id = %source.id, "cannot sign a DSN: not queued");
        return false;
    };
    let content = Arc::new(content);
    let envelope = Envelope {
        sender: ReversePath::Null,
        recipients: vec![Recipient {
            address: to,
            notify: None,
            orcpt: None,
        }],
        body: mta_envelope::BodyType::EightBitMime,
        smtputf8: source.envelope.smtputf8,
        ret: None,
        envid: None,
        origin: local_origin(&s.hostname),
        arrival: now,
    };
    let Some(claim) = inner.claim(id) else {
        return false;
    };
    if let Err(e) = inner
        .store
        .store_in(QueueName::Bounce, id, &envelope, content.clone())
        .await
    {
        error!(queue_id = %source.id, error = %e, "cannot queue a DSN");
        return false;
    }
    inner.dsns.fetch_add(1, Ordering::Relaxed);
    let mut record = Record::new(Event::Bounced, source.id, QueueName::Bounce.as_str());
    record.recipient = Some(envelope.recipients[0].address.to_string());
    record.dsn_id = Some(id.to_string());
    record.auth = source.envelope.origin.auth.as_deref();
    // The DSN's own signatures.
    let dkim = crate::log::dkim_of(&content);
    record.dkim = dkim.as_deref();
    inner.log.write(&record);
    let size = content.len() as u64;
    let entry = mta_spool::IndexEntry {
        queue: QueueName::Bounce,
        ..mta_spool::IndexEntry::arrived(&envelope, size)
    };
    inner.submit_bounce(Job {
        id,
        envelope,
        content,
        entry,
        on_disk: true,
        unreadable: None,
        claim,
    });
    true
}

/// A DSN with the DKIM signatures of its From: domain on top, when a key
/// is for it (signed on the blocking pool, as accepted mail is); `None`
/// when signing failed: never an unsigned DSN where a key exists.
async fn signed(signers: &Arc<mta_dkim::Signers>, content: Vec<u8>) -> Option<Vec<u8>> {
    let Some(domain) = mta_dkim::from_domain(&content) else {
        return Some(content);
    };
    if !signers.signs_for(&domain) {
        return Some(content);
    }
    let signers = signers.clone();
    tokio::task::spawn_blocking(move || match signers.sign(&domain, &[&content]) {
        Ok(Some(s)) => {
            let mut out = s.fields.into_bytes();
            out.extend_from_slice(&content);
            Some(out)
        }
        Ok(None) => Some(content),
        Err(e) => {
            error!(error = %e, "DKIM signing of a DSN failed");
            None
        }
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use mta_envelope::Notify;

    use super::*;
    use crate::fixtures::{self, recipient};

    fn envelope(sender: Option<&str>, rcpts: &[(&str, Option<Notify>)]) -> Envelope {
        let sender = match sender {
            Some(s) => ReversePath::Mailbox(mailbox(s).expect("an address")),
            None => ReversePath::Null,
        };
        let recipients = rcpts
            .iter()
            .map(|&(a, notify)| recipient(a, notify))
            .collect();
        fixtures::envelope(sender, recipients, 1_700_000_000)
    }

    #[test]
    fn the_postmaster_is_an_address_or_the_bare_local_name() {
        let pm = mailbox("pm@mx.test").expect("an address");
        assert_eq!((pm.local.as_str(), pm.domain.as_str()), ("pm", "mx.test"));
        let bare = mailbox("Postmaster").expect("RFC 5321 4.5.1");
        assert_eq!(
            (bare.local.as_str(), bare.domain.as_str()),
            ("Postmaster", "")
        );
        for bad in ["@mx.test", "pm@", "@", "someone", ""] {
            assert_eq!(mailbox(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_delete_reports_to_the_sender_as_notify_allows() {
        let never = Some(Notify::Never);
        let e = envelope(
            Some("alice@a.test"),
            &[("x@b.test", None), ("y@b.test", never), ("z@b.test", None)],
        );
        let (to, reports) = deleted_reports(&e, &[0, 1, 2], 5).expect("owed");
        assert_eq!(to.to_string(), "alice@a.test");
        let who: Vec<String> = reports.iter().map(|r| r.recipient.to_string()).collect();
        assert_eq!(who, ["x@b.test", "z@b.test"], "NOTIFY=NEVER is not told");
        assert!(reports.iter().all(|r| r.action == Action::Failed
            && r.status == "5.0.0"
            && r.last_attempt == Some(5)
            && r.diagnostic
                == Some(Diagnostic::Local(
                    "deleted from the queue by the operator".into()
                ))));
        // Only the recipients deleted.
        let (_, one) = deleted_reports(&e, &[2], 5).expect("owed");
        assert_eq!(one.len(), 1);
        // None owed: everyone said never, or the sender is <>.
        assert_eq!(deleted_reports(&e, &[1], 5), None);
        let null = envelope(None, &[("x@b.test", None)]);
        assert_eq!(deleted_reports(&null, &[0], 5), None);
    }

    /// Each refused recipient is reported with its reply as the
    /// diagnostic and the reply's enhanced code as the status (5.0.0
    /// when it has none); NOTIFY and `<>` as for any failure.
    #[test]
    fn a_refusal_reports_each_reply_to_the_sender() {
        let never = Some(Notify::Never);
        let e = envelope(
            Some("alice@a.test"),
            &[("x@b.test", None), ("y@b.test", never), ("z@b.test", None)],
        );
        let replies = [
            "550 5.1.1 <x@b.test>: no such user".to_owned(),
            "550 5.1.1 <y@b.test>: no such user".to_owned(),
            "554 Transaction failed".to_owned(),
        ];
        let (to, reports) = refused_reports(&e, &replies, 5).expect("owed");
        assert_eq!(to.to_string(), "alice@a.test");
        let seen: Vec<(String, &str, Option<Diagnostic>)> = reports
            .iter()
            .map(|r| {
                (
                    r.recipient.to_string(),
                    r.status.as_str(),
                    r.diagnostic.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "x@b.test".to_owned(),
                    "5.1.1",
                    Some(Diagnostic::Smtp(replies[0].clone()))
                ),
                (
                    "z@b.test".to_owned(),
                    "5.0.0",
                    Some(Diagnostic::Smtp(replies[2].clone()))
                ),
            ]
        );
        assert!(reports.iter().all(|r| r.action == Action::Failed));
        let null = envelope(None, &[("x@b.test", None)]);
        assert_eq!(refused_reports(&null, &replies[..1], 5), None);
        for (reply, status) in [
            ("550 5.7.1 denied", Some("5.7.1")),
            ("552 5.3.4 too big", Some("5.3.4")),
            ("550 4.1.1 odd", None),
            ("550 5.1 short", None),
            ("550 5.1.1000 long", None),
            ("550", None),
        ] {
            assert_eq!(enhanced_status(reply), status, "{reply}");
        }
    }
}
