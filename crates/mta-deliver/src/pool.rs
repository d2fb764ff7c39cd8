//! Connection reuse: a finished connection waits here, keyed by its
//! destination key, for the next message to the same destination (as
//! Postfix's connection cache does). Connections are never shared between
//! keys.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::futures::Notified;
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::session::Session;

/// A session and the destination slot it occupies.
pub(crate) struct Conn {
    pub session: Session,
    pub permit: OwnedSemaphorePermit,
}

impl Conn {
    /// QUIT and close, then give the slot back.
    pub async fn close(self) {
        let Conn { session, permit } = self;
        session.quit().await;
        drop(permit);
    }

    /// Closes in the background (the caller does not wait for QUIT).
    pub fn close_later(self) {
        tokio::spawn(self.close());
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle connections by destination key.
pub(crate) struct Pool {
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    /// Wakes whoever waits for a slot when a connection comes back.
    returned: Notify,
    timeout: Duration,
}

impl Pool {
    /// A pool whose connections expire after `timeout` idle.
    pub fn new(timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(HashMap::new()),
            returned: Notify::new(),
            timeout,
        }
    }

    /// Parks a connection for `key`.
    pub fn put(&self, key: &str, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.entry(key.to_owned()).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
        drop(idle);
        self.returned.notify_waiters();
    }

    /// A future that completes at the next [`put`](Pool::put); enable it
    /// before looking in the pool so that no return is missed.
    pub fn returned(&self) -> Notified<'_> {
        self.returned.notified()
    }

    /// The most recently parked connection for `key` that has not expired,
    /// and the expired ones found on the way (for the caller to close).
    pub fn take(&self, key: &str) -> (Option<Conn>, Vec<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(list) = idle.get_mut(key) else {
            return (None, Vec::new());
        };
        let now = Instant::now();
        let (fresh, stale): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
            .into_iter()
            .partition(|i| now.duration_since(i.since) < self.timeout);
        *list = fresh;
        let found = list.pop().map(|i| i.conn);
        if list.is_empty() {
            idle.remove(key);
        }
        (found, stale.into_iter().map(|i| i.conn).collect())
    }

    /// Every connection idle for longer than the timeout, taken out.
    pub fn expired(&self) -> Vec<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let mut out = Vec::new();
        idle.retain(|_, list| {
            let (fresh, stale): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                .into_iter()
                .partition(|i| now.duration_since(i.since) < self.timeout);
            *list = fresh;
            out.extend(stale.into_iter().map(|i| i.conn));
            !list.is_empty()
        });
        out
    }

    /// Every idle connection, taken out.
    pub fn drain(&self) -> Vec<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.drain()
            .flat_map(|(_, list)| list.into_iter().map(|i| i.conn))
            .collect()
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.values().map(Vec::len).sum()
    }
}
