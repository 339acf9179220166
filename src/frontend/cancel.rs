//! Cancel requests: each client gets pgsplit's own backend key, and a
//! cancel quoting it is forwarded to whichever server connection is
//! running that client's query at the moment. A client whose query still
//! waits for a server connection is woken instead, so the query fails
//! with `57014` as if the server had cancelled it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::net::send_once;
use crate::protocol::messages;
use crate::sync::lock;

/// The server-side key of the connection a client is currently using.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    /// `host:port` or a Unix socket path; shared with the server
    /// connection, so publishing it allocates nothing.
    pub address: Arc<str>,
    /// The server's process ID, from its `BackendKeyData`.
    pub process_id: i32,
    /// The server's secret key, from its `BackendKeyData`.
    pub secret_key: i32,
}

/// Where a session shows the server connection it is using, for cancel
/// requests to read. Between transactions the target stays stored, marked
/// inactive, so ending a transaction takes no lock, and starting one takes
/// it only when the server connection differs from the last one (pools
/// hand out the most recently used connection, so a client that is alone
/// on its pool gets the same one back every time).
#[derive(Default)]
struct CancelSlot {
    active: AtomicBool,
    target: Mutex<Option<CancelTarget>>,
    /// The session's query waits for a server connection.
    waiting: AtomicBool,
    /// Wakes that wait when a cancel request arrives.
    wake: Notify,
}

/// What a cancel request for one client finds.
enum Found {
    /// A server connection runs the client's query: forward the request.
    Running(CancelTarget),
    /// The query waits for a server connection: it was woken.
    Woken,
    /// Nothing to cancel.
    Nothing,
}

impl CancelSlot {
    /// Acts on a cancel request for this client: wakes a waiting query, or
    /// says which server connection the request should go to.
    fn cancel(&self) -> Found {
        if self.active.load(Ordering::Acquire) {
            if let Some(target) = lock(&self.target).clone() {
                return Found::Running(target);
            }
        }
        if self.waiting.load(Ordering::Acquire) {
            self.wake.notify_waiters();
            return Found::Woken;
        }
        Found::Nothing
    }
}

/// Clears the waiting mark when the wait ends, however it ends.
struct WaitingMark<'a>(&'a AtomicBool);

impl Drop for WaitingMark<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// All live client keys.
#[derive(Default)]
pub struct CancelRegistry {
    keys: Mutex<HashMap<i32, (i32, Arc<CancelSlot>)>>,
}

/// A registered client key; unregisters itself when dropped. Its session
/// publishes the server connection it uses here.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    /// The process ID pgsplit told the client (unique among live clients).
    pub process_id: i32,
    /// The secret a cancel request must quote along with `process_id`.
    pub secret_key: i32,
    slot: Arc<CancelSlot>,
    /// What the slot holds, as only this key writes it: compared without
    /// the lock.
    stored: Option<CancelTarget>,
}

impl CancelKey {
    /// Cancel requests go to the server connection with this key from now on.
    pub fn publish(&mut self, address: &Arc<str>, process_id: i32, secret_key: i32) {
        let unchanged = self.stored.as_ref().is_some_and(|stored| {
            stored.process_id == process_id
                && stored.secret_key == secret_key
                && stored.address == *address
        });
        if !unchanged {
            let target = CancelTarget {
                address: address.clone(),
                process_id,
                secret_key,
            };
            *lock(&self.slot.target) = Some(target.clone());
            self.stored = Some(target);
        }
        self.slot.active.store(true, Ordering::Release);
    }

    /// The session uses no server connection now: cancel requests are ignored.
    pub fn withdraw(&self) {
        self.slot.active.store(false, Ordering::Release);
    }

    /// Resolves when a cancel request for this client arrives; meanwhile
    /// the client counts as waiting for a server connection. Meant to race
    /// that wait: it costs nothing until first polled, so a checkout that
    /// completes at once never arms it.
    pub async fn cancelled_while_waiting(&self) {
        let woken = self.slot.wake.notified();
        tokio::pin!(woken);
        // Registered before the mark is set, so no request falls in between.
        woken.as_mut().enable();
        self.slot.waiting.store(true, Ordering::Release);
        let _mark = WaitingMark(&self.slot.waiting);
        woken.await;
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        lock(&self.registry.keys).remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// Hands out a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let slot = Arc::new(CancelSlot::default());
        let mut keys = lock(&self.keys);
        let process_id = loop {
            let candidate = rand::random::<i32>() & 0x7fff_ffff;
            if candidate != 0 && !keys.contains_key(&candidate) {
                break candidate;
            }
        };
        let secret_key = rand::random::<i32>();
        keys.insert(process_id, (secret_key, slot.clone()));
        CancelKey {
            registry: self.clone(),
            process_id,
            secret_key,
            slot,
            stored: None,
        }
    }

    /// Forwards a client's cancel request if its key matches, or wakes its
    /// query if that waits for a server connection; an unknown or wrong
    /// key is ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) {
        let found = {
            let keys = lock(&self.keys);
            match keys.get(&process_id) {
                Some((secret, slot)) if *secret == secret_key => slot.cancel(),
                _ => Found::Nothing,
            }
        };
        let target = match found {
            Found::Running(target) => target,
            Found::Woken => {
                tracing::debug!(
                    process_id,
                    "cancel request ended a wait for a server connection"
                );
                return;
            }
            Found::Nothing => {
                tracing::debug!(
                    process_id,
                    "cancel request with unknown key or idle client ignored"
                );
                return;
            }
        };
        let request = messages::cancel_request(target.process_id, target.secret_key);
        if let Err(error) = send_once(&target.address, &request).await {
            tracing::warn!(%error, address = %target.address, "could not forward cancel request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(registry: &CancelRegistry, key: &CancelKey) -> Option<CancelTarget> {
        let keys = lock(&registry.keys);
        match keys.get(&key.process_id).map(|(_, slot)| slot.cancel()) {
            Some(Found::Running(target)) => Some(target),
            _ => None,
        }
    }

    #[test]
    fn a_withdrawn_target_is_not_cancelled_and_a_new_one_replaces_it() {
        let registry = Arc::new(CancelRegistry::default());
        let mut key = registry.register();
        let address: Arc<str> = Arc::from("127.0.0.1:5432");
        assert_eq!(current(&registry, &key), None);
        key.publish(&address, 7, 70);
        assert_eq!(current(&registry, &key).map(|t| t.process_id), Some(7));
        key.withdraw();
        assert_eq!(current(&registry, &key), None, "between transactions");
        key.publish(&address, 7, 70);
        assert_eq!(current(&registry, &key).map(|t| t.process_id), Some(7));
        key.publish(&address, 8, 80);
        let target = current(&registry, &key);
        assert_eq!(target.map(|t| (t.process_id, t.secret_key)), Some((8, 80)));
        drop(key);
        assert!(lock(&registry.keys).is_empty());
    }

    #[tokio::test]
    async fn a_cancel_wakes_a_query_waiting_for_a_server_connection() {
        use std::time::Duration;
        let registry = Arc::new(CancelRegistry::default());
        let key = registry.register();
        let (process_id, secret_key) = (key.process_id, key.secret_key);
        // A cancel while nothing waits is not kept for a later wait.
        registry.cancel(process_id, secret_key).await;
        let wait = Duration::from_millis(50);
        let later = tokio::time::timeout(wait, key.cancelled_while_waiting()).await;
        assert!(later.is_err(), "an old cancel ended a new wait");
        // A wrong secret wakes nothing.
        let wrong = async {
            tokio::task::yield_now().await;
            registry
                .cancel(process_id, secret_key.wrapping_add(1))
                .await;
            std::future::pending::<()>().await;
        };
        let woken = tokio::time::timeout(wait, async {
            tokio::select! {
                () = key.cancelled_while_waiting() => true,
                () = wrong => false,
            }
        });
        assert!(woken.await.is_err(), "a wrong key ended the wait");
        // The right one does, and the client no longer counts as waiting.
        let right = async {
            tokio::task::yield_now().await;
            registry.cancel(process_id, secret_key).await;
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(key.cancelled_while_waiting(), right)
        })
        .await
        .expect("the cancel ends the wait");
        assert!(!key.slot.waiting.load(Ordering::Acquire));
    }
}
