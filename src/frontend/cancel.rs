//! Cancel requests: each client gets pgsplit's own backend key, and a
//! cancel quoting it is forwarded to whichever server connection is
//! running that client's query at the moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::protocol::messages;
use crate::sync::lock;

/// The server-side key of the connection a client is currently using.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    /// Shared with the server connection: publishing it allocates nothing.
    pub address: Arc<str>,
    pub process_id: i32,
    pub secret_key: i32,
}

/// Where a session publishes its current server connection.
pub type CancelSlot = Arc<Mutex<Option<CancelTarget>>>;

/// Sets or clears a session's cancel target.
pub fn publish(slot: &CancelSlot, target: Option<CancelTarget>) {
    *lock(slot) = target;
}

/// All live client keys.
#[derive(Default)]
pub struct CancelRegistry {
    keys: Mutex<HashMap<i32, (i32, CancelSlot)>>,
}

/// A registered client key; unregisters itself when dropped.
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pub process_id: i32,
    pub secret_key: i32,
    pub slot: CancelSlot,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        lock(&self.registry.keys).remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// Hands out a fresh random key for a new client.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let slot = CancelSlot::default();
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
        }
    }

    /// Forwards a client's cancel request if its key matches; an unknown or
    /// wrong key is ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) {
        let target = {
            let keys = lock(&self.keys);
            match keys.get(&process_id) {
                Some((secret, slot)) if *secret == secret_key => lock(slot).clone(),
                _ => None,
            }
        };
        let Some(target) = target else {
            tracing::debug!(
                process_id,
                "cancel request with unknown key or idle client ignored"
            );
            return;
        };
        let sent = async {
            let mut stream = TcpStream::connect(&*target.address).await?;
            stream
                .write_all(&messages::cancel_request(
                    target.process_id,
                    target.secret_key,
                ))
                .await
        };
        if let Err(error) = sent.await {
            tracing::warn!(%error, address = %target.address, "could not forward cancel request");
        }
    }
}
