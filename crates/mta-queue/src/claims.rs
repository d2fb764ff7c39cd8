//! The claim set: which messages are in flight, and the operator's
//! actions waiting for them.
//!
//! A message is claimed by at most one attempt (or one operator action)
//! at a time. A hold or delete of a claimed message does not wait on a
//! lock: it is noted beside the claim, and whoever lets go of the claim
//! gets the notes back, keeps the claim, and carries them out in the
//! order they were given (`job.rs`'s `Claim` drop; `steer.rs`). A later
//! hold must not undo an earlier delete: the order is the operator's.

use std::collections::{HashMap, HashSet};

use mta_envelope::QueueId;
use parking_lot::Mutex;

/// An operator's action waiting for an attempt under way to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waiting {
    Hold,
    Delete {
        bounce: bool,
        domain: Option<String>,
    },
}

/// The in-flight set and the actions waiting on its members.
#[derive(Default)]
pub(crate) struct ClaimSet {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    inflight: HashSet<QueueId>,
    /// In the order given.
    waiting: HashMap<QueueId, Vec<Waiting>>,
}

impl ClaimSet {
    /// Claims `id`; false when an attempt (or an operator) has it.
    pub fn claim(&self, id: QueueId) -> bool {
        self.claim_or_wait(id, None)
    }

    /// Claims `id`, or, when it is in flight, leaves `waiting` to be done
    /// when it is let go. True when claimed.
    pub fn claim_or_wait(&self, id: QueueId, waiting: Option<Waiting>) -> bool {
        let mut state = self.state.lock();
        if state.inflight.insert(id) {
            return true;
        }
        if let Some(waiting) = waiting {
            state.waiting.entry(id).or_default().push(waiting);
        }
        false
    }

    /// Lets go of `id`, unless actions wait for it: then the claim is
    /// kept and the actions returned, for the caller to carry out in order.
    pub fn release(&self, id: QueueId) -> Option<Vec<Waiting>> {
        let mut state = self.state.lock();
        match state.waiting.remove(&id) {
            Some(waiting) => Some(waiting),
            None => {
                state.inflight.remove(&id);
                None
            }
        }
    }

    /// Messages claimed now.
    #[cfg(test)]
    pub fn claimed(&self) -> usize {
        self.state.lock().inflight.len()
    }

    /// Whether `id` is claimed now.
    pub fn is_claimed(&self, id: QueueId) -> bool {
        self.state.lock().inflight.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> QueueId {
        QueueId::new(n)
    }

    fn delete() -> Waiting {
        Waiting::Delete {
            bounce: false,
            domain: None,
        }
    }

    #[test]
    fn is_claimed_follows_claim_and_release() {
        let set = ClaimSet::default();
        assert!(!set.is_claimed(id(7)));
        assert!(set.claim(id(7)));
        assert!(set.is_claimed(id(7)));
        assert!(!set.is_claimed(id(8)));
        assert_eq!(set.release(id(7)), None);
        assert!(!set.is_claimed(id(7)));
    }

    #[test]
    fn a_message_is_claimed_once() {
        let set = ClaimSet::default();
        assert!(set.claim(id(1)));
        assert!(!set.claim(id(1)), "held by the first");
        assert!(set.claim(id(2)), "another message is free");
        assert_eq!(set.claimed(), 2);
        assert_eq!(set.release(id(1)), None);
        assert_eq!(set.claimed(), 1);
        assert!(set.claim(id(1)), "free again once let go");
    }

    #[test]
    fn release_without_waiting_lets_go() {
        let set = ClaimSet::default();
        assert!(set.claim(id(1)));
        assert_eq!(set.release(id(1)), None);
        assert_eq!(set.claimed(), 0);
        // A flush or release waits for nothing: nothing is noted.
        assert!(set.claim(id(1)));
        assert!(!set.claim_or_wait(id(1), None));
        assert_eq!(set.release(id(1)), None);
        assert_eq!(set.claimed(), 0);
    }

    #[test]
    fn a_free_message_is_claimed_not_noted() {
        let set = ClaimSet::default();
        assert!(set.claim_or_wait(id(1), Some(Waiting::Hold)));
        assert_eq!(set.release(id(1)), None, "the action ran at once");
    }

    #[test]
    fn waiting_actions_keep_the_claim_and_come_back_in_order() {
        let set = ClaimSet::default();
        assert!(set.claim(id(1)));
        assert!(!set.claim_or_wait(id(1), Some(delete())));
        // A hold after a waiting delete must not undo it: it comes after.
        assert!(!set.claim_or_wait(id(1), Some(Waiting::Hold)));
        assert_eq!(set.release(id(1)), Some(vec![delete(), Waiting::Hold]));
        // The claim is kept for the one who carries them out ...
        assert!(!set.claim(id(1)), "still claimed while they run");
        assert_eq!(set.claimed(), 1);
        // ... and nothing is carried out twice.
        assert_eq!(set.release(id(1)), None);
        assert_eq!(set.claimed(), 0);
    }

    #[test]
    fn actions_noted_while_the_waiting_ones_run_come_next() {
        let set = ClaimSet::default();
        assert!(set.claim(id(1)));
        assert!(!set.claim_or_wait(id(1), Some(Waiting::Hold)));
        assert_eq!(set.release(id(1)), Some(vec![Waiting::Hold]));
        assert!(!set.claim_or_wait(id(1), Some(delete())));
        assert_eq!(set.release(id(1)), Some(vec![delete()]));
        assert_eq!(set.release(id(1)), None);
        assert_eq!(set.claimed(), 0);
    }
}
