//! The logged-in clients, for the admin API, the console and metrics: who
//! they are and what each is doing right now. Registering takes a lock
//! (once per login); state changes on the data path are atomic stores.
//! The registry also tells every session when pgsplit shuts down.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::SystemTime;

use futures_util::task::AtomicWaker;
use serde::Serialize;

use crate::sync::lock;

/// What a client is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientState {
    /// Between transactions, holding no server connection.
    Idle,
    /// Holding a server connection.
    Active,
    /// Waiting for a server connection (pool full, failover, pause).
    Waiting,
}

impl ClientState {
    /// All states, for metrics that list each.
    pub const ALL: [ClientState; 3] =
        [ClientState::Idle, ClientState::Active, ClientState::Waiting];

    /// The label used in metrics and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Active => "active",
            ClientState::Waiting => "waiting",
        }
    }
}

/// No server node attached.
const NO_NODE: usize = usize::MAX;

/// One logged-in client.
#[derive(Debug)]
pub struct ClientEntry {
    /// Numbers clients in login order, for the admin side; never reused.
    pub id: u64,
    /// The address the client connected from.
    pub peer: SocketAddr,
    /// The role it logged in as.
    pub user: String,
    /// The database it asked for.
    pub database: String,
    /// Its startup `application_name`; empty when it sent none.
    pub application_name: String,
    /// When it logged in.
    pub connected_at: SystemTime,
    state: AtomicU8,
    node: AtomicUsize,
    /// The session waiting for shutdown, woken by [`ClientRegistry::stop_all`].
    stop_waker: AtomicWaker,
}

impl ClientEntry {
    /// Records what the client does now (and on which node, if any).
    pub fn set(&self, state: ClientState, node: Option<usize>) {
        self.state.store(state as u8, Ordering::Relaxed);
        self.node.store(node.unwrap_or(NO_NODE), Ordering::Relaxed);
    }

    /// What the client does now, as last [`set`](Self::set).
    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Active,
            2 => ClientState::Waiting,
            _ => ClientState::Idle,
        }
    }

    /// The node of the server connection it holds.
    pub fn node(&self) -> Option<usize> {
        Some(self.node.load(Ordering::Relaxed)).filter(|&n| n != NO_NODE)
    }
}

/// Every logged-in client.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    next_id: AtomicU64,
    clients: Mutex<HashMap<u64, Arc<ClientEntry>>>,
    /// pgsplit is shutting down.
    stopping: AtomicBool,
}

/// Keeps a client registered while it lives.
pub struct Registration {
    registry: Arc<ClientRegistry>,
    /// The client's entry, where its session records what it does.
    pub entry: Arc<ClientEntry>,
}

impl Registration {
    /// Whether pgsplit is shutting down.
    pub fn stop_requested(&self) -> bool {
        self.registry.stopping.load(Ordering::SeqCst)
    }

    /// Completes once pgsplit shuts down. A session waits on this each
    /// time it waits for its client or server, twice per transaction:
    /// registering a waker costs a few atomics, where a watch channel's
    /// `changed()` takes a lock on every poll.
    pub fn stopped(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(|cx| {
            self.entry.stop_waker.register(cx.waker());
            if self.stop_requested() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.entry.id);
    }
}

impl ClientRegistry {
    /// Registers a client that just logged in; `None` when its user already
    /// has `user_limit` clients (checked and counted under one lock, so
    /// simultaneous logins cannot overshoot).
    pub fn register(
        self: &Arc<Self>,
        peer: SocketAddr,
        user: &str,
        database: &str,
        application_name: &str,
        user_limit: Option<usize>,
    ) -> Option<Registration> {
        let entry = Arc::new(ClientEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            peer,
            user: user.to_owned(),
            database: database.to_owned(),
            application_name: application_name.to_owned(),
            connected_at: SystemTime::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            node: AtomicUsize::new(NO_NODE),
            stop_waker: AtomicWaker::new(),
        });
        let mut clients = lock(&self.clients);
        if let Some(limit) = user_limit {
            if clients.values().filter(|c| c.user == user).count() >= limit {
                return None;
            }
        }
        clients.insert(entry.id, entry.clone());
        drop(clients);
        Some(Registration {
            registry: self.clone(),
            entry,
        })
    }

    /// Tells every session, and every one that logs in from now on, that
    /// pgsplit is shutting down. The flag is set before the sessions are
    /// woken, and a session registers its waker before it reads the flag,
    /// so none can miss it.
    pub fn stop_all(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for entry in lock(&self.clients).values() {
            entry.stop_waker.wake();
        }
    }

    /// The clients, oldest first.
    pub fn list(&self) -> Vec<Arc<ClientEntry>> {
        let mut clients: Vec<_> = lock(&self.clients).values().cloned().collect();
        clients.sort_by_key(|c| c.id);
        clients
    }
}
