//! Per-destination concurrency: at most `max_per_destination` connections
//! to one destination key at once, busy and idle alike (Postfix's
//! `default_destination_concurrency_limit`). A connection holds its slot
//! (a semaphore permit) from connect until it is closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

/// One semaphore per destination key.
#[derive(Debug)]
pub(crate) struct Limits {
    max: usize,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Limits {
    /// `max` connections per key; 0 is taken as 1.
    pub fn new(max: usize) -> Limits {
        Limits {
            max: max.max(1),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `key`, made on first use.
    pub fn semaphore(&self, key: &str) -> Arc<Semaphore> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sem) = slots.get(key) {
            return sem.clone();
        }
        let sem = Arc::new(Semaphore::new(self.max));
        slots.insert(key.to_owned(), sem.clone());
        sem
    }

    /// Forgets the semaphores no one holds: no permit out, no one waiting.
    /// A permit keeps its semaphore alive, so a key with a connection open
    /// is never forgotten (which would let a second semaphore exceed the
    /// limit).
    pub fn prune(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, sem| Arc::strong_count(sem) > 1);
    }

    /// Keys with a semaphore, for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_permit_keeps_its_key() {
        let limits = Limits::new(2);
        let permit = limits.semaphore("mx:a.test").try_acquire_owned().unwrap();
        limits.semaphore("mx:b.test");
        limits.prune();
        assert_eq!(limits.len(), 1);
        assert_eq!(limits.semaphore("mx:a.test").available_permits(), 1);
        drop(permit);
        limits.prune();
        assert_eq!(limits.len(), 0);
    }
}
