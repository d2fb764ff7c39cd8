//! What an attempt's outcomes mean for the message: a pure decision.
//!
//! [`settle`] takes the message's index entry and envelope, one result
//! per recipient attempted, the settings, the time and the schedule's
//! jitter draw, and returns a [`Settlement`]: the new index entry (or the
//! removal, or the setting aside of a corrupt file), the history and log
//! records, the DSNs owed, the counters, and what to do instead if a DSN
//! cannot be queued. It does no I/O; `commit.rs` carries it out.
//!
//! Per recipient: delivered and failed recipients are done; deferred ones
//! wait for the next attempt on the quadratic schedule (`schedule.rs`),
//! until the lifetime runs out (then they fail with 4.4.7, the last error
//! as the diagnostic). Time spent held does not count against the
//! lifetime or the delay notice (`IndexEntry::effective_arrival`).
//! Reports go to the sender as NOTIFY asks (RFC 3461, `mta_dsn::wants_dsn`);
//! failures of a message from `<>` go to the postmaster instead, unless
//! the failed copy was the postmaster's own.

use mta_deliver::{Delivery, Outcome};
use mta_dsn::{Action, Diagnostic, RecipientReport};
use mta_envelope::{Envelope, Mailbox, ReversePath};
use mta_spool::{HistoryRecord, IndexEntry, QueueName, RecipientError, RecipientState};

use crate::dsn::{diagnostic_of, double_bounce, report, DoubleBounce};
use crate::log::Event;
use crate::outcome::RecipientResult;
use crate::schedule::Next;
use crate::settings::Settings;

/// The message an attempt was made on, as `settle` needs it.
#[derive(Clone, Copy)]
pub(crate) struct Attempted<'a> {
    /// Its index entry before the attempt.
    pub entry: &'a IndexEntry,
    pub envelope: &'a Envelope,
    /// Its spool file is corrupt (`unreadable.rs`): once every recipient
    /// is reported, the file goes aside instead of being removed.
    pub corrupt: Option<&'a str>,
}

/// Recipients counted per verdict, for the runner's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub delivered: u64,
    pub deferred: u64,
    pub failed: u64,
}

/// One delivery-log line about one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub event: Event,
    pub recipient: String,
    pub status: String,
    pub remote: Option<String>,
    pub reply: String,
    pub tls: Option<mta_deliver::TlsInfo>,
}

/// A DSN owed: who to, and the recipients it reports on (of the message
/// the settlement is about).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DsnRequest {
    pub to: Mailbox,
    pub reports: Vec<RecipientReport>,
}

/// What becomes of the message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fate {
    /// Every recipient is done: its spool file (if any) is removed.
    Remove,
    /// Every recipient is done and its spool file is corrupt: the file is
    /// set aside in `corrupt/`, with this reason.
    SetAside(String),
    /// Recipients remain: this is its new index entry.
    Keep(IndexEntry),
}

/// The decision about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settlement {
    /// The attempt's number (1 for the first).
    pub attempt: u32,
    pub counts: Counts,
    /// In order: one per result, then one per recipient expired.
    pub log: Vec<LogLine>,
    pub history: Vec<HistoryRecord>,
    /// At most one in practice: to the sender, or (for `<>` mail) to the
    /// postmaster.
    pub dsns: Vec<DsnRequest>,
    /// A report on `<>` mail that no one can be told of.
    pub dropped: Option<DoubleBounce>,
    /// Recipients still pending after the attempt (before any expired).
    pub pending: usize,
    /// The message's fate once its DSNs are queued.
    pub fate: Fate,
    /// Its fate if a DSN cannot be queued (a full disk?): the recipients
    /// that failed now stay pending and the message is due again after
    /// the schedule's base, so the next attempt fails them again and
    /// makes the DSN then. A failure report is never silently lost. None
    /// when no DSN is owed.
    pub if_dsn_fails: Option<Fate>,
}

/// Decides what the attempt of `message` that ended at `now`, with
/// `results`, means. `random` in [0, 1) is the schedule's jitter draw.
pub(crate) fn settle(
    message: Attempted<'_>,
    results: &[RecipientResult],
    settings: &Settings,
    now: u64,
    random: f64,
) -> Settlement {
    let envelope = message.envelope;
    let mut entry = message.entry.clone();
    entry.attempts += 1;
    let attempt = entry.attempts;
    // Reports for the sender (as NOTIFY asks), and every failure (for the
    // postmaster when the sender is <>).
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    let mut failed_now = Vec::new();
    let mut history = Vec::with_capacity(results.len());
    let mut log = Vec::with_capacity(results.len());
    let mut counts = Counts::default();

    for r in results {
        let recipient = &envelope.recipients[r.index];
        // The server whose reply decided it (a refused greeting has no
        // transaction's remote), else the one the attempt talked to.
        let remote = r
            .outcome
            .server_reply()
            .map(|said| said.remote.clone())
            .or_else(|| r.remote.clone());
        let (event, status, reply) = match &r.outcome {
            Outcome::Delivered { reply, .. } => {
                counts.delivered += 1;
                entry.recipients[r.index] = RecipientState::Delivered;
                entry.last_errors.remove(&r.index);
                (Event::Delivered, "2.0.0", reply.as_str())
            }
            Outcome::Failed { status, reason, .. } => {
                counts.failed += 1;
                failed_now.push(r.index);
                entry.recipients[r.index] = RecipientState::Failed;
                entry.last_errors.remove(&r.index);
                (Event::Failed, status.as_str(), reason.as_str())
            }
            Outcome::Deferred {
                status,
                reason,
                reply,
            } => {
                counts.deferred += 1;
                entry.last_errors.insert(
                    r.index,
                    RecipientError {
                        status: status.clone(),
                        reason: reason.clone(),
                        remote: remote.clone(),
                        reply: reply.as_ref().map(|said| said.text.clone()),
                    },
                );
                (Event::Deferred, status.as_str(), reason.as_str())
            }
        };
        log.push(LogLine {
            event,
            recipient: recipient.address.to_string(),
            status: status.to_owned(),
            remote: remote.clone(),
            reply: reply.to_owned(),
            tls: r.tls.clone(),
        });
        history.push(HistoryRecord {
            time: now,
            attempt,
            recipient: r.index,
            event: event.as_str().to_owned(),
            status: status.to_owned(),
            reply: reply.to_owned(),
            remote: remote.clone(),
        });

        // What a DSN says of it (RFC 3464 section 2.3). The reply of a
        // local delivery says where the file went: never shown to the
        // sender.
        let (action, diagnostic) = match &r.outcome {
            Outcome::Delivered { delivery, reply } => match delivery {
                Delivery::Mailbox => (Action::Delivered, None),
                Delivery::Relayed => (Action::Relayed, Some(Diagnostic::Smtp(reply.clone()))),
                // RFC 3461 section 5.2.1: the next hop has the NOTIFY
                // request and reports; a notice from us would be a second
                // one, and "delivered" would not be true.
                Delivery::RelayedWithDsn => continue,
            },
            Outcome::Failed { reason, reply, .. } => (
                Action::Failed,
                Some(diagnostic_of(
                    reason,
                    reply.as_ref().map(|said| said.text.as_str()),
                )),
            ),
            Outcome::Deferred { .. } => continue,
        };
        let report = report(
            recipient,
            action,
            status,
            remote.as_deref(),
            diagnostic,
            now,
        );
        if action == Action::Failed {
            failures.push(report.clone());
        }
        if mta_dsn::wants_dsn(envelope, recipient, action) {
            reports.push(report);
        }
    }

    let pending: Vec<usize> = (0..entry.recipients.len())
        .filter(|&i| entry.recipients[i] == RecipientState::Pending)
        .collect();
    if !pending.is_empty() {
        // Time spent held does not count against the lifetime.
        let arrival = entry.effective_arrival();
        match settings.schedule.next(arrival, entry.attempts, now, random) {
            Next::Expire => {
                for &i in &pending {
                    let recipient = &envelope.recipients[i];
                    entry.recipients[i] = RecipientState::Failed;
                    failed_now.push(i);
                    let last = entry.last_errors.get(&i).cloned();
                    let why = last
                        .as_ref()
                        .map(|e| e.reason.as_str())
                        .unwrap_or("no attempt succeeded");
                    let reason = format!("delivery time expired; last error: {why}");
                    let remote = last.as_ref().and_then(|e| e.remote.as_deref());
                    log.push(LogLine {
                        event: Event::Expired,
                        recipient: recipient.address.to_string(),
                        status: "4.4.7".to_owned(),
                        remote: None,
                        reply: reason.clone(),
                        tls: None,
                    });
                    history.push(HistoryRecord {
                        time: now,
                        attempt,
                        recipient: i,
                        event: Event::Expired.as_str().to_owned(),
                        status: "4.4.7".to_owned(),
                        reply: reason.clone(),
                        remote: None,
                    });
                    // RFC 3463 X.4.7: delivery time expired. The last
                    // error is the diagnostic: the server's reply, if one
                    // was the cause.
                    let report = RecipientReport {
                        note: Some("Delivery time expired.".to_owned()),
                        ..report(
                            recipient,
                            Action::Failed,
                            "4.4.7",
                            remote,
                            last.as_ref()
                                .map(|e| diagnostic_of(&e.reason, e.reply.as_deref())),
                            now,
                        )
                    };
                    failures.push(report.clone());
                    if mta_dsn::wants_dsn(envelope, recipient, Action::Failed) {
                        reports.push(report);
                    }
                }
            }
            Next::RetryAt(at) => {
                entry.next_attempt = at;
                entry.queue = QueueName::Disk;
                let due_notice = settings
                    .delay_notice_after
                    .is_some_and(|after| now >= arrival.saturating_add(after.as_secs()));
                // Once per message (RFC 3464 leaves the timing to us; one
                // notice, not one per attempt).
                if due_notice && !entry.delay_notified {
                    entry.delay_notified = true;
                    let until = arrival.saturating_add(settings.schedule.lifetime.as_secs());
                    for &i in &pending {
                        let recipient = &envelope.recipients[i];
                        if !mta_dsn::wants_dsn(envelope, recipient, Action::Delayed) {
                            continue;
                        }
                        let last = entry.last_errors.get(&i);
                        let status = last.map(|e| e.status.as_str()).unwrap_or("4.0.0");
                        let diagnostic = match last {
                            Some(e) => diagnostic_of(&e.reason, e.reply.as_deref()),
                            None => Diagnostic::Local("not yet delivered".to_owned()),
                        };
                        let remote = last.and_then(|e| e.remote.as_deref());
                        reports.push(RecipientReport {
                            will_retry_until: Some(until),
                            ..report(
                                recipient,
                                Action::Delayed,
                                status,
                                remote,
                                Some(diagnostic),
                                now,
                            )
                        });
                    }
                }
            }
        }
    }

    let mut dsns = Vec::new();
    let mut dropped = None;
    if !reports.is_empty() {
        if let ReversePath::Mailbox(sender) = &envelope.sender {
            dsns.push(DsnRequest {
                to: sender.clone(),
                reports,
            });
        }
    }
    if envelope.sender == ReversePath::Null && !failures.is_empty() {
        match double_bounce(envelope, &settings.postmaster) {
            DoubleBounce::To(postmaster) => dsns.push(DsnRequest {
                to: postmaster,
                reports: failures,
            }),
            nobody => dropped = Some(nobody),
        }
    }

    let if_dsn_fails = (!dsns.is_empty()).then(|| {
        let mut kept = entry.clone();
        for &i in &failed_now {
            kept.recipients[i] = RecipientState::Pending;
        }
        kept.queue = QueueName::Disk;
        kept.next_attempt = now + settings.schedule.base.as_secs().max(1);
        fate_of(kept, message.corrupt)
    });
    for i in &failed_now {
        entry.last_errors.remove(i);
    }
    Settlement {
        attempt,
        counts,
        log,
        history,
        dsns,
        dropped,
        pending: pending.len(),
        fate: fate_of(entry, message.corrupt),
        if_dsn_fails,
    }
}

/// Done when no recipient is pending: removed, or set aside if corrupt.
fn fate_of(entry: IndexEntry, corrupt: Option<&str>) -> Fate {
    let done = entry
        .recipients
        .iter()
        .all(|s| *s != RecipientState::Pending);
    match (done, corrupt) {
        (true, Some(reason)) => Fate::SetAside(reason.to_owned()),
        (true, None) => Fate::Remove,
        (false, _) => Fate::Keep(entry),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use mta_deliver::ServerReply;
    use mta_envelope::{BodyType, Notify, Recipient, Ret};

    use super::*;
    use crate::origin::local_origin;
    use crate::schedule::Schedule;
    use crate::unreadable::Unreadable;

    /// Arrival of every test message.
    const T0: u64 = 1_700_000_000;
    const DAY: u64 = 86_400;
    /// The delay notice is due this long after arrival.
    const NOTICE: u64 = 4 * 3600;

    fn settings() -> Settings {
        Settings {
            hostname: "mx.test".into(),
            postmaster: "postmaster@mx.test".into(),
            dsn_from: "mailer-daemon@mx.test".into(),
            port: 25,
            maildir_root: PathBuf::from("/nonexistent"),
            schedule: Schedule {
                base: Duration::from_secs(20),
                jitter: 0.0,
                lifetime: Duration::from_secs(DAY),
            },
            delay_notice_after: Some(Duration::from_secs(NOTICE)),
            volatile: false,
            poll_interval: Duration::from_secs(1),
            dkim: Default::default(),
        }
    }

    fn mailbox(address: &str) -> Mailbox {
        crate::dsn::mailbox(address).expect("a test address")
    }

    /// A message from `sender` ("" for `<>`) to `rcpts`, each with its
    /// NOTIFY.
    fn envelope(sender: &str, rcpts: &[(&str, Option<Notify>)], ret: Option<Ret>) -> Envelope {
        Envelope {
            sender: match sender {
                "" => ReversePath::Null,
                s => ReversePath::Mailbox(mailbox(s)),
            },
            recipients: rcpts
                .iter()
                .map(|&(a, notify)| Recipient {
                    address: mailbox(a),
                    notify,
                    orcpt: None,
                })
                .collect(),
            body: BodyType::SevenBit,
            smtputf8: false,
            ret,
            envid: None,
            origin: local_origin("mx.test"),
            arrival: T0,
        }
    }

    fn to(rcpts: &[&str]) -> Envelope {
        let rcpts: Vec<(&str, Option<Notify>)> = rcpts.iter().map(|&r| (r, None)).collect();
        envelope("alice@a.test", &rcpts, None)
    }

    fn on(success: bool, failure: bool, delay: bool) -> Option<Notify> {
        Some(Notify::On {
            success,
            failure,
            delay,
        })
    }

    /// What one recipient's attempt came to.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum V {
        /// Into a local mailbox.
        Mailbox,
        /// To a next hop without DSN.
        Relayed,
        /// To a next hop that took the DSN request.
        RelayedWithDsn,
        /// 4xx from a server.
        Deferred,
        /// 5xx from a server.
        Failed,
    }

    const REMOTE: &str = "mx1.b.test[127.0.0.2]:25";

    fn said(text: &str) -> Option<ServerReply> {
        Some(ServerReply {
            remote: REMOTE.into(),
            text: text.into(),
        })
    }

    fn result(index: usize, v: V) -> RecipientResult {
        let outcome = match v {
            V::Mailbox => Outcome::Delivered {
                reply: "delivered to maildir /var/mail/x".into(),
                delivery: Delivery::Mailbox,
            },
            V::Relayed | V::RelayedWithDsn => Outcome::Delivered {
                reply: "250 2.0.0 Ok: queued".into(),
                delivery: if v == V::Relayed {
                    Delivery::Relayed
                } else {
                    Delivery::RelayedWithDsn
                },
            },
            V::Deferred => Outcome::Deferred {
                status: "4.2.0".into(),
                reason: "host mx1.b.test said: 451 4.2.0 busy".into(),
                reply: said("451 4.2.0 busy"),
            },
            V::Failed => Outcome::Failed {
                status: "5.1.1".into(),
                reason: "host mx1.b.test said: 550 5.1.1 no such user".into(),
                reply: said("550 5.1.1 no such user"),
            },
        };
        RecipientResult {
            index,
            outcome,
            remote: Some(if v == V::Mailbox {
                crate::outcome::LOCAL_REMOTE.into()
            } else {
                REMOTE.into()
            }),
            tls: None,
        }
    }

    fn results(vs: &[V]) -> Vec<RecipientResult> {
        vs.iter().enumerate().map(|(i, &v)| result(i, v)).collect()
    }

    fn entry(envelope: &Envelope) -> IndexEntry {
        IndexEntry::arrived(envelope, 100)
    }

    fn run(
        envelope: &Envelope,
        entry: &IndexEntry,
        rs: &[RecipientResult],
        now: u64,
    ) -> Settlement {
        run_with(&settings(), envelope, entry, rs, now)
    }

    fn run_with(
        settings: &Settings,
        envelope: &Envelope,
        entry: &IndexEntry,
        rs: &[RecipientResult],
        now: u64,
    ) -> Settlement {
        let message = Attempted {
            entry,
            envelope,
            corrupt: None,
        };
        settle(message, rs, settings, now, 0.0)
    }

    fn kept(s: &Settlement) -> &IndexEntry {
        match &s.fate {
            Fate::Keep(entry) => entry,
            other => panic!("kept expected, got {other:?}"),
        }
    }

    /// The (recipient, action, status) of each report of each DSN.
    fn reported(s: &Settlement) -> Vec<(String, String, Action, String)> {
        s.dsns
            .iter()
            .flat_map(|d| {
                d.reports.iter().map(|r| {
                    (
                        d.to.to_string(),
                        r.recipient.to_string(),
                        r.action,
                        r.status.clone(),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn every_mix_of_delivered_deferred_and_failed() {
        use RecipientState::{Delivered, Failed, Pending};
        let rcpts = ["x@b.test", "y@b.test", "z@b.test"];
        let env = to(&rcpts);
        let verdicts = [V::Mailbox, V::Deferred, V::Failed];
        for a in verdicts {
            for b in verdicts {
                for c in verdicts {
                    let mix = [a, b, c];
                    let s = run(&env, &entry(&env), &results(&mix), T0);
                    let count = |v: V| mix.iter().filter(|&&m| m == v).count() as u64;
                    assert_eq!(
                        s.counts,
                        Counts {
                            delivered: count(V::Mailbox),
                            deferred: count(V::Deferred),
                            failed: count(V::Failed),
                        },
                        "{mix:?}"
                    );
                    assert_eq!(s.attempt, 1);
                    let events: Vec<Event> = s.log.iter().map(|l| l.event).collect();
                    let want: Vec<Event> = mix
                        .iter()
                        .map(|v| match v {
                            V::Mailbox => Event::Delivered,
                            V::Deferred => Event::Deferred,
                            _ => Event::Failed,
                        })
                        .collect();
                    assert_eq!(events, want, "{mix:?}");
                    assert_eq!(s.history.len(), 3);
                    assert!(s.history.iter().all(|h| h.time == T0 && h.attempt == 1));
                    assert_eq!(s.pending as u64, count(V::Deferred));
                    // Without NOTIFY, failures are reported, successes not.
                    let failed: Vec<_> = (0..3).filter(|&i| mix[i] == V::Failed).collect();
                    let want: Vec<_> = failed
                        .iter()
                        .map(|&i| {
                            (
                                "alice@a.test".to_owned(),
                                rcpts[i].to_owned(),
                                Action::Failed,
                                "5.1.1".to_owned(),
                            )
                        })
                        .collect();
                    assert_eq!(reported(&s), want, "{mix:?}");
                    assert_eq!(s.dropped, None);
                    let state = |v: V| match v {
                        V::Mailbox => Delivered,
                        V::Failed => Failed,
                        _ => Pending,
                    };
                    if count(V::Deferred) == 0 {
                        assert_eq!(s.fate, Fate::Remove, "{mix:?}");
                    } else {
                        let e = kept(&s);
                        assert_eq!(e.recipients, mix.map(state).to_vec(), "{mix:?}");
                        assert_eq!(e.attempts, 1);
                        assert_eq!(e.queue, QueueName::Disk);
                        // qmail's schedule: the second attempt 400 s after arrival.
                        assert_eq!(e.next_attempt, T0 + 400);
                        let errors: Vec<usize> = e.last_errors.keys().copied().collect();
                        let deferred: Vec<usize> =
                            (0..3).filter(|&i| mix[i] == V::Deferred).collect();
                        assert_eq!(errors, deferred, "only deferred ones keep an error");
                        assert_eq!(e.last_errors[&deferred[0]].status, "4.2.0");
                        assert_eq!(
                            e.last_errors[&deferred[0]].reply.as_deref(),
                            Some("451 4.2.0 busy")
                        );
                        assert!(!e.delay_notified);
                    }
                    match &s.if_dsn_fails {
                        None => assert!(failed.is_empty(), "{mix:?}"),
                        Some(instead) => {
                            // The failed ones wait as pending, due after the base.
                            let Fate::Keep(e) = instead else {
                                panic!("{mix:?}: {instead:?}")
                            };
                            let back = mix.map(|v| match v {
                                V::Mailbox => Delivered,
                                _ => Pending,
                            });
                            assert_eq!(e.recipients, back.to_vec(), "{mix:?}");
                            assert_eq!(e.next_attempt, T0 + 20);
                            assert_eq!(e.queue, QueueName::Disk);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn notify_and_the_kind_of_delivery_decide_the_notice() {
        let never = Some(Notify::Never);
        let success = on(true, false, false);
        let failure = on(false, true, false);
        let all = on(true, true, true);
        // (NOTIFY, verdict, the action reported if any)
        let table: &[(Option<Notify>, V, Option<Action>)] = &[
            (None, V::Mailbox, None),
            (None, V::Relayed, None),
            (None, V::Failed, Some(Action::Failed)),
            (None, V::Deferred, None),
            (never, V::Failed, None),
            (never, V::Mailbox, None),
            (success, V::Mailbox, Some(Action::Delivered)),
            (success, V::Relayed, Some(Action::Relayed)),
            // RFC 3461 section 5.2.1: the next hop reports from now on.
            (success, V::RelayedWithDsn, None),
            (all, V::RelayedWithDsn, None),
            (success, V::Failed, None),
            (failure, V::Failed, Some(Action::Failed)),
            (failure, V::Mailbox, None),
            (all, V::Mailbox, Some(Action::Delivered)),
            (all, V::Failed, Some(Action::Failed)),
            // A first deferral is not yet a delay notice.
            (all, V::Deferred, None),
        ];
        for &(notify, v, want) in table {
            // RET shapes what a DSN returns of the message (mta-dsn), not
            // who hears of what.
            for ret in [None, Some(Ret::Full), Some(Ret::Hdrs)] {
                let env = envelope("alice@a.test", &[("x@b.test", notify)], ret);
                let s = run(&env, &entry(&env), &[result(0, v)], T0);
                let got: Vec<Action> = s
                    .dsns
                    .iter()
                    .flat_map(|d| d.reports.iter().map(|r| r.action))
                    .collect();
                assert_eq!(
                    got,
                    want.into_iter().collect::<Vec<_>>(),
                    "{notify:?} {v:?} {ret:?}"
                );
                if let Some(d) = s.dsns.first() {
                    assert_eq!(d.to.to_string(), "alice@a.test");
                }
                assert_eq!(s.if_dsn_fails.is_some(), want.is_some());
            }
        }
    }

    #[test]
    fn a_report_quotes_the_server_and_never_the_mailbox_file() {
        let env = envelope(
            "alice@a.test",
            &[
                ("x@b.test", on(true, true, false)),
                ("y@c.test", on(true, true, false)),
            ],
            None,
        );
        let s = run(&env, &entry(&env), &results(&[V::Mailbox, V::Relayed]), T0);
        let r = &s.dsns[0].reports;
        assert_eq!(r[0].action, Action::Delivered);
        assert_eq!(r[0].remote_mta, None, "maildir is no remote MTA");
        assert_eq!(
            r[0].diagnostic, None,
            "the file's path is not for the sender"
        );
        assert_eq!(r[1].action, Action::Relayed);
        assert_eq!(r[1].remote_mta.as_deref(), Some("mx1.b.test"));
        assert_eq!(
            r[1].diagnostic,
            Some(Diagnostic::Smtp("250 2.0.0 Ok: queued".into()))
        );
        assert!(r.iter().all(|r| r.last_attempt == Some(T0)));
        // Everything delivered: if the success notice cannot be queued,
        // there is nothing to try again.
        assert_eq!(s.fate, Fate::Remove);
        assert_eq!(s.if_dsn_fails, Some(Fate::Remove));
    }

    #[test]
    fn the_server_that_replied_is_the_remote() {
        let env = to(&["x@b.test"]);
        let mut r = result(0, V::Failed);
        r.remote = Some("mx9.b.test[127.0.0.9]:25".into());
        r.tls = Some(mta_deliver::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            verified: mta_deliver::Verification::MtaSts,
        });
        let s = run(&env, &entry(&env), &[r], T0);
        assert_eq!(s.log[0].remote.as_deref(), Some(REMOTE));
        assert_eq!(s.log[0].tls.as_ref().unwrap().version, "TLSv1.3");
        assert_eq!(s.log[0].status, "5.1.1");
        assert_eq!(s.history[0].remote.as_deref(), Some(REMOTE));
        let report = &s.dsns[0].reports[0];
        assert_eq!(report.remote_mta.as_deref(), Some("mx1.b.test"));
        assert_eq!(
            report.diagnostic,
            Some(Diagnostic::Smtp("550 5.1.1 no such user".into()))
        );
        // A local cause (no server reply) is quoted in our own words.
        let mut local = result(0, V::Failed);
        local.outcome = Outcome::failed("5.1.2", "no such domain");
        local.remote = None;
        let s = run(&env, &entry(&env), &[local], T0);
        assert_eq!(s.log[0].remote, None);
        assert_eq!(
            s.dsns[0].reports[0].diagnostic,
            Some(Diagnostic::Local("no such domain".into()))
        );
    }

    #[test]
    fn the_delay_notice_is_sent_once() {
        let env = envelope(
            "alice@a.test",
            &[("x@b.test", None), ("y@b.test", on(false, true, false))],
            None,
        );
        let first = entry(&env);
        // Before the notice is due: none.
        let s = run(
            &env,
            &first,
            &results(&[V::Deferred, V::Deferred]),
            T0 + NOTICE - 1,
        );
        assert!(s.dsns.is_empty());
        assert!(!kept(&s).delay_notified);
        // Due: x asked for delays (by default), y did not.
        let s = run(
            &env,
            &first,
            &results(&[V::Deferred, V::Deferred]),
            T0 + NOTICE,
        );
        assert_eq!(
            reported(&s),
            [(
                "alice@a.test".to_owned(),
                "x@b.test".to_owned(),
                Action::Delayed,
                "4.2.0".to_owned()
            )]
        );
        let report = &s.dsns[0].reports[0];
        assert_eq!(report.will_retry_until, Some(T0 + DAY));
        assert_eq!(
            report.diagnostic,
            Some(Diagnostic::Smtp("451 4.2.0 busy".into()))
        );
        assert_eq!(report.remote_mta.as_deref(), Some("mx1.b.test"));
        let after = kept(&s).clone();
        assert!(after.delay_notified);
        // A delay notice is no failure: if it cannot be queued, nothing
        // goes back to pending, but the next attempt is after the base.
        assert_eq!(
            s.if_dsn_fails.as_ref().map(|f| match f {
                Fate::Keep(e) => (e.recipients.clone(), e.next_attempt),
                other => panic!("{other:?}"),
            }),
            Some((after.recipients.clone(), T0 + NOTICE + 20))
        );
        // Later attempts: no second notice.
        let s = run(
            &env,
            &after,
            &results(&[V::Deferred, V::Deferred]),
            T0 + NOTICE + 3600,
        );
        assert!(s.dsns.is_empty());
        assert!(kept(&s).delay_notified);
        // Without a notice configured, never.
        let quiet = Settings {
            delay_notice_after: None,
            ..settings()
        };
        let s = run_with(
            &quiet,
            &env,
            &first,
            &results(&[V::Deferred, V::Deferred]),
            T0 + DAY - 1,
        );
        assert!(s.dsns.is_empty());
        assert!(!kept(&s).delay_notified);
    }

    #[test]
    fn a_delay_notice_without_a_last_error_says_not_yet_delivered() {
        let env = to(&["x@b.test", "y@b.test"]);
        // y was not attempted this time (its task failed): no error known.
        let s = run(&env, &entry(&env), &[result(0, V::Mailbox)], T0 + NOTICE);
        let r = &s.dsns[0].reports;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].recipient.to_string(), "y@b.test");
        assert_eq!(r[0].status, "4.0.0");
        assert_eq!(
            r[0].diagnostic,
            Some(Diagnostic::Local("not yet delivered".into()))
        );
        assert_eq!(r[0].remote_mta, None);
    }

    #[test]
    fn the_lifetime_ends_with_a_last_attempt_then_expiry() {
        let env = to(&["x@b.test", "y@b.test"]);
        let mut before = entry(&env);
        // Attempt 21 would be due (20 x 20)² s after arrival: past the end.
        before.attempts = 20;
        // Just before the lifetime ends: the last attempt is set at its end.
        let s = run(
            &env,
            &before,
            &results(&[V::Deferred, V::Mailbox]),
            T0 + DAY - 100,
        );
        assert_eq!(kept(&s).next_attempt, T0 + DAY);
        // That last attempt defers too: the message fails with 4.4.7.
        let s = run(
            &env,
            &before,
            &results(&[V::Deferred, V::Mailbox]),
            T0 + DAY,
        );
        assert_eq!(s.fate, Fate::Remove);
        assert_eq!(s.attempt, 21);
        assert_eq!(s.counts.deferred, 1, "counted as the attempt's verdict");
        let expired = s.log.last().expect("a line");
        assert_eq!(expired.event, Event::Expired);
        assert_eq!(expired.status, "4.4.7");
        assert_eq!(
            expired.reply,
            "delivery time expired; last error: host mx1.b.test said: 451 4.2.0 busy"
        );
        let h = s.history.last().expect("a record");
        assert_eq!(
            (h.event.as_str(), h.status.as_str(), h.recipient),
            ("expired", "4.4.7", 0)
        );
        let r = &s.dsns[0].reports;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, "4.4.7");
        assert_eq!(r[0].action, Action::Failed);
        assert_eq!(r[0].note.as_deref(), Some("Delivery time expired."));
        // The last error is the diagnostic: the server's own reply.
        assert_eq!(
            r[0].diagnostic,
            Some(Diagnostic::Smtp("451 4.2.0 busy".into()))
        );
        assert_eq!(r[0].remote_mta.as_deref(), Some("mx1.b.test"));
        // If the DSN cannot be queued, the expired recipient waits.
        let Some(Fate::Keep(e)) = &s.if_dsn_fails else {
            panic!("{:?}", s.if_dsn_fails)
        };
        assert_eq!(e.recipients[0], RecipientState::Pending);
        assert!(e.last_errors.contains_key(&0), "kept for the next report");
    }

    #[test]
    fn expiry_quotes_an_earlier_attempt_when_this_one_said_nothing() {
        let env = to(&["x@b.test"]);
        let mut before = entry(&env);
        before.attempts = 3;
        before.last_errors.insert(
            0,
            RecipientError {
                status: "4.4.1".into(),
                reason: "connection refused".into(),
                remote: None,
                reply: None,
            },
        );
        let s = run(&env, &before, &[], T0 + DAY);
        let r = &s.dsns[0].reports[0];
        assert_eq!(
            r.diagnostic,
            Some(Diagnostic::Local("connection refused".into()))
        );
        assert_eq!(r.remote_mta, None);
        assert_eq!(
            s.log[0].reply,
            "delivery time expired; last error: connection refused"
        );
        // Nothing known at all.
        let s = run(&env, &entry(&env), &[], T0 + DAY);
        assert_eq!(
            s.log[0].reply,
            "delivery time expired; last error: no attempt succeeded"
        );
        assert_eq!(s.dsns[0].reports[0].diagnostic, None);
    }

    #[test]
    fn held_time_extends_the_lifetime_and_delays_the_notice() {
        let env = to(&["x@b.test"]);
        let mut held = entry(&env);
        held.attempts = 20;
        held.held_secs = 3600;
        let s = run(&env, &held, &[result(0, V::Deferred)], T0 + DAY);
        assert_eq!(
            kept(&s).next_attempt,
            T0 + DAY + 3600,
            "the last attempt, later"
        );
        let s = run(&env, &held, &[result(0, V::Deferred)], T0 + DAY + 3600);
        assert_eq!(s.fate, Fate::Remove, "expired at last");
        let s = run(&env, &held, &[result(0, V::Deferred)], T0 + NOTICE);
        assert!(
            s.dsns.is_empty(),
            "the notice counts from the effective arrival"
        );
        let s = run(&env, &held, &[result(0, V::Deferred)], T0 + NOTICE + 3600);
        assert_eq!(s.dsns.len(), 1);
        assert_eq!(s.dsns[0].reports[0].will_retry_until, Some(T0 + DAY + 3600));
    }

    #[test]
    fn the_schedule_draws_its_jitter_from_the_caller() {
        let env = to(&["x@b.test"]);
        let jittery = Settings {
            schedule: Schedule {
                jitter: 0.5,
                ..settings().schedule
            },
            ..settings()
        };
        let message = Attempted {
            entry: &entry(&env),
            envelope: &env,
            corrupt: None,
        };
        let next = |random| {
            let s = settle(message, &[result(0, V::Deferred)], &jittery, T0, random);
            kept(&s).next_attempt
        };
        assert_eq!(next(0.0), T0 + 400);
        assert_eq!(next(0.5), T0 + 500);
    }

    #[test]
    fn failures_of_null_sender_mail_go_to_the_postmaster() {
        let env = envelope(
            "",
            &[("x@b.test", None), ("y@b.test", on(true, true, true))],
            None,
        );
        let s = run(&env, &entry(&env), &results(&[V::Failed, V::Mailbox]), T0);
        // Never to <> (RFC 3461 section 6.2), whatever NOTIFY says; the
        // postmaster hears of every failure.
        assert_eq!(
            reported(&s),
            [(
                "postmaster@mx.test".to_owned(),
                "x@b.test".to_owned(),
                Action::Failed,
                "5.1.1".to_owned()
            )]
        );
        assert_eq!(s.dropped, None);
        // Expiry too.
        let s = run(
            &env,
            &entry(&env),
            &results(&[V::Deferred, V::Mailbox]),
            T0 + DAY,
        );
        assert_eq!(reported(&s)[0].0, "postmaster@mx.test");
        assert_eq!(reported(&s)[0].3, "4.4.7");
        // Deferred or delivered: nobody is told.
        let s = run(
            &env,
            &entry(&env),
            &results(&[V::Deferred, V::Mailbox]),
            T0 + NOTICE,
        );
        assert!(s.dsns.is_empty());
        // The bare local postmaster is a mailbox too (RFC 5321 4.5.1).
        let bare = Settings {
            postmaster: "postmaster".into(),
            ..settings()
        };
        let s = run_with(
            &bare,
            &env,
            &entry(&env),
            &results(&[V::Failed, V::Mailbox]),
            T0,
        );
        assert_eq!(s.dsns[0].to.local, "postmaster");
        assert_eq!(s.dsns[0].to.domain, "");
    }

    #[test]
    fn the_postmasters_own_failed_copy_is_dropped_and_counted() {
        let env = envelope(
            "",
            &[("Postmaster@MX.test", None), ("x@b.test", None)],
            None,
        );
        let s = run(&env, &entry(&env), &results(&[V::Failed, V::Failed]), T0);
        assert!(s.dsns.is_empty(), "a report about it would loop");
        assert_eq!(s.dropped, Some(DoubleBounce::PostmasterCopy));
        assert_eq!(s.if_dsn_fails, None);
        assert_eq!(s.fate, Fate::Remove);
        let bad = Settings {
            postmaster: "not an address".into(),
            ..settings()
        };
        let env = envelope("", &[("x@b.test", None)], None);
        let s = run_with(&bad, &env, &entry(&env), &results(&[V::Failed]), T0);
        assert_eq!(s.dropped, Some(DoubleBounce::BadPostmaster));
        assert!(s.dsns.is_empty());
        // Nothing failed: nothing dropped.
        let s = run(&env, &entry(&env), &results(&[V::Mailbox]), T0);
        assert_eq!(s.dropped, None);
    }

    #[test]
    fn a_paused_domain_defers_with_4_3_2_and_keeps_the_message() {
        let env = to(&["x@b.test"]);
        let paused = RecipientResult {
            index: 0,
            outcome: Outcome::deferred("4.3.2", "delivery to b.test is paused by the operator"),
            remote: None,
            tls: None,
        };
        let s = run(&env, &entry(&env), &[paused], T0);
        assert!(s.dsns.is_empty());
        assert_eq!(s.counts.deferred, 1);
        let e = kept(&s);
        assert_eq!(e.recipients, [RecipientState::Pending]);
        assert_eq!(e.last_errors[&0].status, "4.3.2");
        assert_eq!(e.last_errors[&0].remote, None);
        assert_eq!(s.log[0].status, "4.3.2");
    }

    #[test]
    fn a_corrupt_file_is_reported_then_set_aside() {
        let env = to(&["x@b.test", "y@b.test"]);
        let mut before = entry(&env);
        before.recipients[1] = RecipientState::Delivered;
        let corrupt = Unreadable::Corrupt("bad magic".into());
        let rs = corrupt.results([0].into_iter());
        let message = Attempted {
            entry: &before,
            envelope: &env,
            corrupt: Some("bad magic"),
        };
        let s = settle(message, &rs, &settings(), T0, 0.0);
        assert_eq!(s.fate, Fate::SetAside("bad magic".into()));
        assert_eq!(
            reported(&s),
            [(
                "alice@a.test".to_owned(),
                "x@b.test".to_owned(),
                Action::Failed,
                "5.3.0".to_owned()
            )]
        );
        // If the DSN cannot be queued, the file stays, due again soon.
        let Some(Fate::Keep(e)) = &s.if_dsn_fails else {
            panic!("{:?}", s.if_dsn_fails)
        };
        assert_eq!(e.recipients[0], RecipientState::Pending);
        assert_eq!(e.next_attempt, T0 + 20);
        // A read error that may pass defers, on the schedule.
        let failed = Unreadable::Failed("EIO".into()).results([0].into_iter());
        let message = Attempted {
            corrupt: None,
            ..message
        };
        let s = settle(message, &failed, &settings(), T0, 0.0);
        assert_eq!(kept(&s).last_errors[&0].status, "4.3.0");
        assert!(s.dsns.is_empty());
    }

    #[test]
    fn attempts_are_numbered_on_from_the_entry() {
        let env = to(&["x@b.test"]);
        let mut before = entry(&env);
        before.attempts = 2;
        let s = run(&env, &before, &[result(0, V::Deferred)], T0 + 400);
        assert_eq!(s.attempt, 3);
        assert_eq!(kept(&s).attempts, 3);
        assert!(s.history.iter().all(|h| h.attempt == 3));
        // qmail: attempt 4 is due (3 x 20)² = 3600 s after arrival.
        assert_eq!(kept(&s).next_attempt, T0 + 3600);
    }
}
