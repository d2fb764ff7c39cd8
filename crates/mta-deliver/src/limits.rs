//! Connections at once, counted by name: one [`Gate`] per destination key
//! (Postfix's `default_destination_concurrency_limit`) and one per
//! throttled MX host. A connection holds its [`Slot`] from connect until
//! it is closed, busy and idle alike.
//!
//! Unlike a semaphore, a gate has no size of its own: each caller brings
//! its limit. Two domains with different rules may share a relay key, and
//! a reload may change a rule while connections are open; both just work,
//! and the count survives the reload because the gates live in the
//! `Throttles` that client generations share.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use tokio::sync::Notify;

/// Connections open to one name.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    in_use: Mutex<usize>,
    /// Wakes the waiters when a slot is given back or the limits change.
    freed: Notify,
}

/// One connection's place in a [`Gate`]; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Slot {
    gate: Arc<Gate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut in_use = self.gate.in_use.lock();
        *in_use = in_use.saturating_sub(1);
        drop(in_use);
        self.gate.freed.notify_waiters();
    }
}

impl Gate {
    /// A slot when fewer than `limit` are taken (0 is taken as 1).
    pub fn try_acquire(self: &Arc<Self>, limit: usize) -> Option<Slot> {
        let mut in_use = self.in_use.lock();
        if *in_use >= limit.max(1) {
            return None;
        }
        *in_use += 1;
        Some(Slot { gate: self.clone() })
    }

    /// Waits for a slot; `limit` is asked again at every wake-up, so a new
    /// configuration applies to those already waiting.
    pub async fn acquire(self: &Arc<Self>, limit: impl Fn() -> usize) -> Slot {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(slot) = self.try_acquire(limit()) {
                return slot;
            }
            freed.await;
        }
    }

    /// A future that completes when a slot is given back or the limits
    /// change; enable it before trying.
    pub fn freed(&self) -> tokio::sync::futures::Notified<'_> {
        self.freed.notified()
    }

    /// Slots taken now, for tests.
    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        *self.in_use.lock()
    }
}

/// One gate per name, made on first use.
#[derive(Debug, Default)]
pub(crate) struct Gates {
    gates: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Gates {
    /// The gate of `name`.
    pub fn get(&self, name: &str) -> Arc<Gate> {
        let mut gates = self.gates.lock();
        if let Some(gate) = gates.get(name) {
            return gate.clone();
        }
        let gate = Arc::new(Gate::default());
        gates.insert(name.to_owned(), gate.clone());
        gate
    }

    /// Forgets the gates no one holds: no slot out, no one waiting. A slot
    /// keeps its gate alive, so a name with a connection open is never
    /// forgotten (which would let a second gate exceed the limit).
    pub fn prune(&self) {
        let mut gates = self.gates.lock();
        gates.retain(|_, gate| Arc::strong_count(gate) > 1);
    }

    /// Wakes every waiter to look at its limit again.
    pub fn wake_all(&self) {
        let gates = self.gates.lock();
        for gate in gates.values() {
            gate.freed.notify_waiters();
        }
    }

    /// Names with a gate, for tests.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.gates.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_slot_keeps_its_gate() {
        let gates = Gates::default();
        let slot = gates.get("mx:a.test").try_acquire(2).unwrap();
        gates.get("mx:b.test");
        gates.prune();
        assert_eq!(gates.len(), 1);
        assert_eq!(gates.get("mx:a.test").in_use(), 1);
        drop(slot);
        gates.prune();
        assert_eq!(gates.len(), 0);
    }

    #[test]
    fn each_caller_brings_its_limit() {
        let gate = Arc::new(Gate::default());
        let one = gate.try_acquire(2).unwrap();
        let _two = gate.try_acquire(2).unwrap();
        assert!(gate.try_acquire(2).is_none());
        assert!(gate.try_acquire(1).is_none());
        let _three = gate.try_acquire(3).unwrap();
        drop(one);
        assert!(
            gate.try_acquire(2).is_none(),
            "three minus one is still two"
        );
        assert!(gate.try_acquire(0).is_none(), "0 is taken as 1");
    }

    #[tokio::test]
    async fn a_waiter_gets_the_slot_given_back() {
        let gate = Arc::new(Gate::default());
        let held = gate.try_acquire(1).unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(|| 1).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let slot = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(gate.in_use(), 1);
        drop(slot);
        assert_eq!(gate.in_use(), 0);
    }
}
