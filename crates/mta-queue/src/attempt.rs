//! One delivery attempt of one message: every pending recipient, grouped
//! by route, delivered at once; the outcomes go to `settle.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use mta_deliver::{Delivery, Destination, OutboundMessage, Outcome, Published, ResolveError};
use mta_spool::RecipientState;
use tokio::task::JoinSet;

use crate::inner::Inner;
use crate::job::Job;
use crate::maildir::MaildirError;
use crate::outcome::{RecipientResult, LOCAL_REMOTE};
use crate::route::Route;

/// Delivers `job` to every pending recipient, and returns one result
/// per recipient attempted. A message whose spool file could not be read
/// makes no connection: the read error is the outcome for every pending
/// recipient. A stop's abort cuts the attempt short.
pub(crate) async fn deliver(inner: &Arc<Inner>, job: &Arc<Job>) -> Vec<RecipientResult> {
    match &job.unreadable {
        Some(unreadable) => unreadable.results(pending(job)),
        None => tokio::select! {
            results = deliver_routes(inner, job) => results,
            () = inner.abort.cancelled() => aborted(job),
        },
    }
}

/// Every pending recipient deferred: the stop cut the attempt short. The
/// remote side may have taken the message already; then it is delivered
/// twice, never zero times.
fn aborted(job: &Job) -> Vec<RecipientResult> {
    pending(job)
        .map(|index| RecipientResult {
            index,
            outcome: Outcome::deferred("4.3.2", "attempt cut short by a stop of the MTA"),
            remote: None,
            tls: None,
        })
        .collect()
}

fn pending(job: &Job) -> impl Iterator<Item = usize> + '_ {
    job.entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == RecipientState::Pending)
        .map(|(i, _)| i)
}

async fn deliver_routes(inner: &Arc<Inner>, job: &Arc<Job>) -> Vec<RecipientResult> {
    let mut routes: BTreeMap<Route, Vec<usize>> = BTreeMap::new();
    let mut results = Vec::new();
    for index in pending(job) {
        let domain = &job.envelope.recipients[index].address.domain;
        if inner.steering.is_paused(domain) {
            // Kept queued without a connection; the lifetime still runs.
            results.push(RecipientResult {
                index,
                outcome: Outcome::deferred(
                    "4.3.2",
                    format!(
                        "delivery to {} is paused by the operator",
                        domain.to_ascii_lowercase()
                    ),
                ),
                remote: None,
                tls: None,
            });
            continue;
        }
        routes
            .entry(inner.router.route(domain))
            .or_default()
            .push(index);
    }
    let mut set = JoinSet::new();
    for (route, indexes) in routes {
        let inner = inner.clone();
        let job = job.clone();
        set.spawn(async move {
            match route {
                Route::Local => deliver_local(&inner, &job, &indexes).await,
                route => deliver_remote(&inner, &job, route, &indexes).await,
            }
        });
    }
    while let Some(done) = set.join_next().await {
        match done {
            Ok(mut r) => results.append(&mut r),
            Err(e) => tracing::error!(queue_id = %job.id, error = %e, "a delivery task failed"),
        }
    }
    results
}

async fn deliver_local(
    inner: &Arc<Inner>,
    job: &Arc<Job>,
    indexes: &[usize],
) -> Vec<RecipientResult> {
    let inner = inner.clone();
    let job = job.clone();
    let indexes = indexes.to_vec();
    let run = tokio::task::spawn_blocking(move || {
        let s = &inner.settings;
        indexes
            .into_iter()
            .map(|index| {
                let rcpt = &job.envelope.recipients[index].address;
                let outcome = crate::maildir::maildir_of(&s.maildir_root, rcpt, &s.hostname)
                    .and_then(|dir| {
                        crate::maildir::deliver(
                            &dir,
                            &job.envelope.sender,
                            rcpt,
                            &job.content,
                            &s.hostname,
                        )
                    });
                let outcome = match outcome {
                    // The path is for the operator's log; a DSN never
                    // shows it (settle.rs).
                    Ok(path) => Outcome::Delivered {
                        reply: format!("delivered to maildir {}", path.display()),
                        delivery: Delivery::Mailbox,
                    },
                    Err(e) => {
                        // The reason may reach the sender in a DSN: the
                        // path only goes to the daemon's log.
                        tracing::warn!(queue_id = %job.id, recipient = %rcpt, error = %e, "local delivery failed");
                        let reason = public_reason(&e);
                        if e.is_permanent() {
                            Outcome::failed(e.status(), reason)
                        } else {
                            Outcome::deferred(e.status(), reason)
                        }
                    }
                };
                RecipientResult {
                    index,
                    outcome,
                    remote: Some(LOCAL_REMOTE.into()),
                    tls: None,
                }
            })
            .collect::<Vec<_>>()
    });
    run.await.unwrap_or_default()
}

/// A local delivery failure in words the sender may read in a DSN: the
/// system's error, never the path (the daemon's log has it).
fn public_reason(e: &MaildirError) -> String {
    match e {
        MaildirError::BadName(_) => e.to_string(),
        MaildirError::Io { op, source, .. } => {
            format!("cannot write to the recipient's mailbox ({op}): {source}")
        }
    }
}

async fn deliver_remote(
    inner: &Arc<Inner>,
    job: &Arc<Job>,
    route: Route,
    indexes: &[usize],
) -> Vec<RecipientResult> {
    let port = inner.settings.port;
    let (key, domain, targets) = match &route {
        Route::Relay { host, port } => {
            let domain = job.envelope.recipients[indexes[0]]
                .address
                .domain
                .to_ascii_lowercase();
            let target = inner
                .resolver
                .host_target(host, *port)
                .await
                .map(|t| vec![t]);
            (format!("relay:{host}:{port}"), domain, target)
        }
        Route::Mx { domain } => (
            format!("mx:{domain}"),
            domain.clone(),
            inner.resolver.mx_targets(domain, port).await,
        ),
        Route::Local => unreachable!("local routes are delivered to Maildir"),
    };
    let targets = match targets {
        Ok(t) => t,
        Err(e) => return resolve_failed(indexes, &domain, &e),
    };
    // RFC 8461 and RFC 7672 protect delivery to a domain's MX hosts; a
    // fixed route is the operator's own choice of host.
    let published = match &route {
        Route::Mx { domain } => {
            let sts = async {
                match &inner.sts {
                    Some(sts) => sts.policy(domain).await,
                    None => None,
                }
            };
            let dane = async {
                match &inner.dane {
                    Some(dane) => dane.policy(domain, &targets).await,
                    None => None,
                }
            };
            let (mta_sts, dane) = tokio::join!(sts, dane);
            Published { mta_sts, dane }
        }
        _ => Published::default(),
    };
    let dest = Destination {
        key,
        domain,
        targets,
        published,
    };
    let mut results = Vec::with_capacity(indexes.len());
    // RFC 5321 section 4.5.3.1.8: servers must take 100 recipients per
    // transaction, not more; larger lists go in several transactions.
    for chunk in indexes.chunks(MAX_RCPTS_PER_TRANSACTION) {
        let attempt = inner
            .client
            .deliver(
                &dest,
                OutboundMessage {
                    envelope: &job.envelope,
                    recipients: chunk,
                    content: &job.content,
                },
            )
            .await;
        results.extend(
            attempt
                .outcomes
                .into_iter()
                .map(|(index, outcome)| RecipientResult {
                    index,
                    outcome,
                    remote: attempt.remote.clone(),
                    tls: attempt.tls.clone(),
                }),
        );
    }
    results
}

/// Recipients in one outbound transaction.
const MAX_RCPTS_PER_TRANSACTION: usize = 100;

fn resolve_failed(indexes: &[usize], domain: &str, e: &ResolveError) -> Vec<RecipientResult> {
    let reason = format!("{domain}: {e}");
    indexes
        .iter()
        .map(|&index| RecipientResult {
            index,
            outcome: if e.is_permanent() {
                Outcome::failed(e.status(), reason.clone())
            } else {
                Outcome::deferred(e.status(), reason.clone())
            },
            remote: None,
            tls: None,
        })
        .collect()
}
