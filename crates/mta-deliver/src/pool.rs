//! Connection reuse: a finished connection waits here, keyed by its
//! destination key, for the next message to the same destination (as
//! Postfix's connection cache does). Connections are never shared between
//! keys.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::limits::Slot;
use crate::session::Session;

/// A session and the connection slots it occupies.
pub(crate) struct Conn {
    pub session: Session,
    /// The target host, normalized: what `mx:` rules match.
    pub host: String,
    /// Its place among the connections to its destination key.
    pub permit: Slot,
    /// Its place among the connections to its host, under an `mx:` rule.
    pub host_permit: Option<Slot>,
}

impl Conn {
    /// QUIT and close, then give the slots back.
    pub async fn close(self) {
        let Conn {
            session,
            permit,
            host_permit,
            ..
        } = self;
        session.quit().await;
        drop((permit, host_permit));
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
        let mut idle = self.idle.lock();
        // Stamped under the lock, so each list stays in parking order.
        let parked = Idle {
            conn,
            since: Instant::now(),
        };
        match idle.get_mut(key) {
            Some(list) => list.push(parked),
            None => {
                idle.insert(key.to_owned(), vec![parked]);
            }
        }
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
        let mut idle = self.idle.lock();
        let Some(list) = idle.get_mut(key) else {
            return (None, Vec::new());
        };
        let stale = take_expired(list, |i| i.since, Instant::now(), self.timeout);
        let stale: Vec<Conn> = stale.into_iter().map(|i| i.conn).collect();
        let found = list.pop().map(|i| i.conn);
        if list.is_empty() {
            idle.remove(key);
        }
        (found, stale)
    }

    /// One idle connection to `host` (normalized), whatever its key: to
    /// close it when another destination needs its place under an `mx:`
    /// rule. The one idle longest.
    pub fn take_to_host(&self, host: &str) -> Option<Conn> {
        let mut idle = self.idle.lock();
        let (key, index) = idle
            .iter()
            .flat_map(|(key, list)| {
                list.iter()
                    .enumerate()
                    .filter(|(_, i)| i.conn.host == host)
                    .map(move |(n, i)| (i.since, key, n))
            })
            .min_by_key(|(since, _, _)| *since)
            .map(|(_, key, n)| (key.clone(), n))?;
        let list = idle.get_mut(&key)?;
        let found = list.remove(index).conn;
        if list.is_empty() {
            idle.remove(&key);
        }
        Some(found)
    }

    /// Every connection idle for longer than the timeout, taken out.
    pub fn expired(&self) -> Vec<Conn> {
        let mut idle = self.idle.lock();
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
        let mut idle = self.idle.lock();
        idle.drain()
            .flat_map(|(_, list)| list.into_iter().map(|i| i.conn))
            .collect()
    }

    /// How many connections are idle.
    pub fn len(&self) -> usize {
        let idle = self.idle.lock();
        idle.values().map(Vec::len).sum()
    }
}

/// Takes the expired items out of `list`, which is in parking order
/// (`put` stamps under the lock), so they are the first few: nothing is
/// moved or allocated when none has expired.
fn take_expired<T>(
    list: &mut Vec<T>,
    since: impl Fn(&T) -> Instant,
    now: Instant,
    timeout: Duration,
) -> Vec<T> {
    let expired = list.partition_point(|i| now.duration_since(since(i)) >= timeout);
    list.drain(..expired).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expired_are_taken_from_the_front_and_the_rest_stay_in_order() {
        let start = Instant::now();
        let at = |ms| (start + Duration::from_millis(ms), ms);
        let mut list = vec![at(0), at(10), at(20), at(30)];
        let now = start + Duration::from_millis(45);
        let timeout = Duration::from_millis(25);
        let stale = take_expired(&mut list, |i| i.0, now, timeout);
        assert_eq!(stale.iter().map(|i| i.1).collect::<Vec<_>>(), [0, 10, 20]);
        assert_eq!(list.iter().map(|i| i.1).collect::<Vec<_>>(), [30]);
        // None expired: nothing taken, nothing moved.
        let stale = take_expired(&mut list, |i| i.0, now, Duration::from_secs(1));
        assert!(stale.is_empty() && stale.capacity() == 0);
        assert_eq!(list.len(), 1);
        // All expired.
        let stale = take_expired(&mut list, |i| i.0, now, Duration::ZERO);
        assert_eq!(stale.len(), 1);
        assert!(list.is_empty());
    }
}
