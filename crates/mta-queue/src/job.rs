//! A message being worked on, and the claim that keeps every other
//! attempt and operator action off it.
//!
//! A [`Claim`] is an id held in the claim set (`claims.rs`); dropping it
//! lets go, unless an operator's hold or delete waits for it: then the
//! claim is handed, still held, to its owner, who carries the actions out
//! (`ClaimOwner::carry_out`). The owner is the runners' shared state,
//! seen here only through that trait, so this module needs nothing from
//! the modules that act on messages.

use std::sync::Arc;

use mta_envelope::{Envelope, QueueId};
use mta_spool::IndexEntry;

use crate::claims::Waiting;
use crate::steering::Steering;
use crate::unreadable::Unreadable;

/// Who claims are taken from and handed back to.
pub(crate) trait ClaimOwner: Send + Sync + 'static {
    /// The shared state holding the claim set.
    fn steering(&self) -> &Steering;
    /// Carries out, in order, the actions that waited for `claim`'s
    /// attempt to end; `claim` is still held.
    fn carry_out(self: Arc<Self>, claim: Claim, waiting: Vec<Waiting>);
}

/// A message id held in the in-flight set; released when dropped.
pub struct Claim {
    owner: Arc<dyn ClaimOwner>,
    id: QueueId,
}

impl Claim {
    /// Claims `id`; None when another attempt (or operator) has it.
    pub(crate) fn take(owner: Arc<dyn ClaimOwner>, id: QueueId) -> Option<Claim> {
        // Built only once claimed: a Claim dropped releases its id.
        if owner.steering().claims.claim(id) {
            Some(Claim { owner, id })
        } else {
            None
        }
    }

    /// A claim already taken in the in-flight set.
    pub(crate) fn adopt(owner: Arc<dyn ClaimOwner>, id: QueueId) -> Claim {
        Claim { owner, id }
    }

    /// The message claimed.
    pub fn id(&self) -> QueueId {
        self.id
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // An operator's hold or delete may wait for this attempt to end:
        // it keeps the claim and is carried out now.
        let Some(waiting) = self.owner.steering().claims.release(self.id) else {
            return;
        };
        let claim = Claim::adopt(self.owner.clone(), self.id);
        self.owner.clone().carry_out(claim, waiting);
    }
}

/// A message being worked on by one attempt.
pub(crate) struct Job {
    pub id: QueueId,
    pub envelope: Envelope,
    pub content: Arc<Vec<u8>>,
    pub entry: IndexEntry,
    /// The message has a spool file (false only in volatile mode, before
    /// its first attempt defers). While false, the message is registered
    /// as in memory (`Steering::remember`) until the job is dropped or
    /// written to disk.
    pub on_disk: bool,
    /// Its spool file could not be read: the attempt reports this for
    /// every pending recipient instead of delivering (`unreadable.rs`).
    pub unreadable: Option<Unreadable>,
    /// Keeps other runners off this message until the job is dropped.
    pub claim: Claim,
}

impl Drop for Job {
    fn drop(&mut self) {
        if !self.on_disk {
            // Delivered, deleted, or written to disk: no longer (only) in
            // memory. Before the claim goes, so no listing sees it twice.
            self.claim.owner.steering().forget(self.id);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use parking_lot::Mutex;

    use super::*;

    /// An owner that records what it is asked to carry out.
    #[derive(Default)]
    pub(crate) struct Owner {
        pub steering: Steering,
        carried: Mutex<Vec<(QueueId, Vec<Waiting>)>>,
    }

    impl ClaimOwner for Owner {
        fn steering(&self) -> &Steering {
            &self.steering
        }

        fn carry_out(self: Arc<Self>, claim: Claim, waiting: Vec<Waiting>) {
            self.carried.lock().push((claim.id(), waiting));
            // The claim is let go once they are done.
        }
    }

    /// Regression: a refused claim used to be built anyway and dropped,
    /// and its drop released the holder's claim, so a second attempt
    /// could start on a message in flight.
    #[test]
    fn a_refused_claim_leaves_the_holders_claim_alone() {
        let owner = Arc::new(Owner::default());
        let id = QueueId::new(1);
        let held = Claim::take(owner.clone(), id).expect("free");
        assert!(Claim::take(owner.clone(), id).is_none());
        assert!(Claim::take(owner.clone(), id).is_none(), "still held");
        assert_eq!(owner.steering.claims.claimed(), 1);
        drop(held);
        assert_eq!(owner.steering.claims.claimed(), 0);
        assert!(Claim::take(owner.clone(), id).is_some());
    }

    /// A job for message `id`, claimed from `owner`.
    pub(crate) fn job(owner: &Arc<Owner>, id: QueueId, on_disk: bool) -> Job {
        let envelope = Envelope {
            sender: mta_envelope::ReversePath::Null,
            recipients: Vec::new(),
            body: mta_envelope::BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            origin: crate::origin::local_origin("mx.test"),
            arrival: 1_700_000_000,
        };
        let entry = IndexEntry::arrived(&envelope, 1);
        owner.steering.remember(
            id,
            crate::steering::InMemory {
                entry: entry.clone(),
                envelope: envelope.clone(),
                content: Arc::default(),
            },
        );
        Job {
            id,
            envelope,
            content: Arc::default(),
            entry,
            on_disk,
            unreadable: None,
            claim: Claim::take(owner.clone(), id).expect("free"),
        }
    }

    /// A volatile message is no longer listed as in memory once its job
    /// is gone (delivered, deleted, or written to disk); one with a spool
    /// file is not the job's to forget.
    #[test]
    fn a_volatile_job_is_forgotten_when_dropped() {
        let owner = Arc::new(Owner::default());
        drop(job(&owner, QueueId::new(3), false));
        assert_eq!(owner.steering.in_memory(), 0);
        assert_eq!(owner.steering.claims.claimed(), 0, "and let go");
        drop(job(&owner, QueueId::new(4), true));
        assert_eq!(owner.steering.in_memory(), 1);
    }

    #[test]
    fn dropping_a_claim_hands_waiting_actions_over_in_order() {
        let owner = Arc::new(Owner::default());
        let id = QueueId::new(2);
        let held = Claim::take(owner.clone(), id).expect("free");
        let delete = Waiting::Delete {
            bounce: true,
            domain: None,
        };
        assert!(!owner
            .steering
            .claims
            .claim_or_wait(id, Some(delete.clone())));
        assert!(!owner.steering.claims.claim_or_wait(id, Some(Waiting::Hold)));
        drop(held);
        assert_eq!(
            *owner.carried.lock(),
            [(id, vec![delete, Waiting::Hold])],
            "in the order asked"
        );
        // The handed-over claim was dropped in carry_out: free again.
        assert_eq!(owner.steering.claims.claimed(), 0);
    }
}
