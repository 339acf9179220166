//! Pools of logged-in server connections, one per (node, database, user).
//!
//! A semaphore bounds the connections of a pool; idle ones wait in a LIFO
//! stack so the most recently used (with the warmest prepared-statement
//! cache) is handed out first. A reload may resize a pool and change its
//! timeouts while connections are lent out: a pool that shrank below what
//! is lent retires slots as connections come back.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connection::{ConnectError, LoginTarget, ServerConnection, ServerSecret};
use super::tls::ServerTls;
use crate::sync::lock;

/// Identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Index of the node in `config.nodes`.
    pub node: usize,
    /// The database the pool's connections open.
    pub database: String,
    /// The role the pool's connections log in as.
    pub user: String,
}

/// Limits and timeouts shared by all pools; a reload replaces them.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Most connections one pool may hold open (`pool.size`).
    pub size: usize,
    /// Limit on connecting and logging in to a node (`server_connect_timeout`).
    pub connect_timeout: Duration,
    /// An idle connection unused this long is closed (`pool.idle_timeout`).
    pub idle_timeout: Duration,
    /// A connection this old is closed once idle (`pool.max_lifetime`).
    pub max_lifetime: Duration,
    /// Largest message accepted from a server (`max_message_size`).
    pub max_message_size: usize,
    /// A server silent this long while owing data is given up on
    /// (`server_tcp_user_timeout`); zero: the kernel's defaults.
    pub tcp_user_timeout: Duration,
    /// TLS towards the nodes, if configured.
    pub tls: Option<ServerTls>,
}

/// Why no server connection could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The node index has no pool and none can be made (not in the config).
    #[error("node {0} is not configured")]
    NoSuchNode(usize),
    /// The pool stayed full for the whole wait (`query_wait_timeout`).
    #[error("no server connection became free within {0:?}")]
    Timeout(Duration),
    /// Opening a connection failed, or another failed less than
    /// `server_login_retry` ago.
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

/// The connections of one (node, database, user).
pub struct Pool {
    node_name: String,
    /// Where and as whom connections log in; a reload may change the password.
    target: Mutex<LoginTarget>,
    /// Idle connections and the settings in force, under one lock: every
    /// release reads the timeouts and pushes the connection.
    state: Mutex<PoolState>,
    permits: Arc<Semaphore>,
    /// Clients waiting for a free slot right now.
    waiting: AtomicUsize,
    /// The last failed connection or login, and when it happened.
    last_failure: Mutex<Option<(Instant, ConnectError)>>,
}

/// What a pool's lock guards.
struct PoolState {
    /// Boxed, so that handing a connection out or back (every transaction)
    /// moves a pointer rather than the whole connection.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConnection>>,
    settings: PoolSettings,
    /// Slots to retire as lent connections come back: a reload made the
    /// pool smaller than the number of connections lent out at the time.
    excess: usize,
}

impl PoolState {
    /// Takes one slot out of circulation if the pool is over its size.
    fn retire_slot(&mut self) -> bool {
        let retire = self.excess > 0;
        self.excess -= usize::from(retire);
        retire
    }
}

/// How long a checkout may wait, and how long a failed login stands.
#[derive(Debug, Clone, Copy)]
pub struct CheckoutLimits {
    /// For a free slot (`query_wait_timeout`).
    pub wait: Duration,
    /// After a failed connection or login, new connections fail with the
    /// same error for this long (`server_login_retry`).
    pub login_retry: Duration,
}

/// A pool's numbers, for the admin side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Most connections the pool may hold (`pool.size`).
    pub size: usize,
    /// Connections lent to clients.
    pub active: usize,
    /// Open connections waiting in the pool.
    pub idle: usize,
    /// Clients waiting for a connection.
    pub waiting: usize,
}

impl Pool {
    fn new(target: LoginTarget, settings: PoolSettings) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(settings.size)),
            node_name: target.node_name.clone(),
            target: Mutex::new(target),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                settings,
                excess: 0,
            }),
            waiting: AtomicUsize::new(0),
            last_failure: Mutex::new(None),
        }
    }

    /// The node this pool connects to, by name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// New connections log in with `secret` from now on (a reload changed
    /// the password, or a client revealed the key); open ones stay logged
    /// in. A login failure that the old secret caused no longer stands.
    pub fn set_secret(&self, secret: Option<ServerSecret>) {
        lock(&self.target).secret = secret;
        *lock(&self.last_failure) = None;
    }

    /// Hands out a connection, waiting up to `limits.wait` for a free slot;
    /// reuses a healthy idle connection or opens a new one. `now` is the
    /// caller's recent clock reading, which idle connections are judged by
    /// unless the checkout had to wait (one clock read per request serves
    /// several purposes on the hot path).
    pub async fn checkout(
        self: &Arc<Self>,
        limits: CheckoutLimits,
        now: Instant,
    ) -> Result<PooledConnection, CheckoutError> {
        let wait = limits.wait;
        // The common case, a free slot, needs no timer.
        let (permit, now) = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => (permit, now),
            Err(_) => {
                let counted = WaitCount::start(&self.waiting);
                let acquired =
                    tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await;
                drop(counted);
                let permit = acquired
                    .map_err(|_| CheckoutError::Timeout(wait))?
                    .map_err(|_| CheckoutError::Timeout(wait))?;
                (permit, Instant::now())
            }
        };
        let conn = match self.take_idle(now) {
            Some(conn) => conn,
            // Boxed: opening a connection is rare, and its state machine is
            // large enough that carrying it inline in every checkout (and in
            // every session future above it) costs copies on each query.
            None => Box::new(Box::pin(self.connect(limits.login_retry)).await?),
        };
        Ok(PooledConnection {
            conn: Some(conn),
            permit: Some(permit),
            pool: self.clone(),
        })
    }

    /// Opens a connection, unless one failed less than `retry` ago: then
    /// that failure is repeated without bothering the server.
    async fn connect(&self, retry: Duration) -> Result<ServerConnection, ConnectError> {
        if let Some((at, error)) = lock(&self.last_failure).as_ref() {
            if at.elapsed() < retry {
                return Err(error.clone());
            }
        }
        let target = lock(&self.target).clone();
        let settings = lock(&self.state).settings.clone();
        let result = ServerConnection::connect(&target, &settings).await;
        *lock(&self.last_failure) = result.as_ref().err().map(|e| (Instant::now(), e.clone()));
        result
    }

    /// Pops idle connections until a usable one turns up; stale or broken
    /// ones are dropped on the way.
    fn take_idle(&self, now: Instant) -> Option<Box<ServerConnection>> {
        loop {
            let conn = lock(&self.state).idle.pop()?;
            if conn.is_fresh_at(now) && conn.is_healthy_when_idle() {
                return Some(conn);
            }
            tracing::debug!(node = %self.node_name, "dropping stale server connection");
        }
    }

    /// Its current numbers.
    pub fn stats(&self) -> PoolStats {
        let state = lock(&self.state);
        let in_circulation = state.settings.size + state.excess;
        PoolStats {
            size: state.settings.size,
            active: in_circulation.saturating_sub(self.permits.available_permits()),
            idle: state.idle.len(),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Closes idle connections past their idle timeout or lifetime.
    pub fn prune(&self) {
        let now = Instant::now();
        lock(&self.state).idle.retain(|conn| conn.is_fresh_at(now));
    }

    /// Puts reloaded settings in force. A larger size lets waiting clients
    /// in at once; a smaller one closes idle connections beyond it and
    /// retires the slots of lent ones as they come back. Idle connections
    /// are judged by the new timeouts from now on; new connections use the
    /// new connect timeout and message limit.
    pub fn apply(&self, settings: PoolSettings) {
        let mut state = lock(&self.state);
        let (old, new) = (state.settings.size, settings.size);
        if new > old {
            let repaid = (new - old).min(state.excess);
            state.excess -= repaid;
            self.permits.add_permits(new - old - repaid);
        } else {
            let cut = old - new;
            state.excess += cut - self.permits.forget_permits(cut);
        }
        for conn in &mut state.idle {
            conn.judge_by(settings.idle_timeout, settings.max_lifetime);
        }
        state.settings = settings;
        // Idle connections hold no slot: keep no more than the free ones,
        // dropping the least recently used (the bottom of the stack).
        let keep = self
            .permits
            .available_permits()
            .saturating_sub(state.excess);
        let surplus = state.idle.len().saturating_sub(keep);
        state.idle.drain(..surplus);
    }
}

/// Counts one client in a pool's waiters until dropped, which also
/// happens when the wait is abandoned (a cancel request, shutdown).
struct WaitCount<'a>(&'a AtomicUsize);

impl<'a> WaitCount<'a> {
    fn start(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for WaitCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection lent out by a pool. `release` gives it back; dropping it
/// closes it, which is the safe default when its state is unknown.
pub struct PooledConnection {
    conn: Option<Box<ServerConnection>>,
    /// Taken by `release` or `drop`, which give the slot back (or retire it).
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<Pool>,
}

impl PooledConnection {
    /// Returns a clean connection (idle, no transaction) to its pool.
    pub fn release(self) {
        self.release_at(Instant::now());
    }

    /// [`release`](Self::release) for a caller that has just read the
    /// clock: `now` counts as the connection's last use.
    pub fn release_at(mut self, now: Instant) {
        let (Some(mut conn), Some(permit)) = (self.conn.take(), self.permit.take()) else {
            return;
        };
        let mut state = lock(&self.pool.state);
        if state.retire_slot() {
            drop(state);
            permit.forget();
            tracing::debug!(node = %self.pool.node_name, "closing a server connection: the pool shrank");
            return;
        }
        conn.touch(
            now,
            state.settings.idle_timeout,
            state.settings.max_lifetime,
        );
        state.idle.push(conn);
        drop(state);
        // After the push, so that the client this wakes finds the connection.
        drop(permit);
    }

    /// The pool this connection belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for PooledConnection {
    /// The connection was not released (it closes with this): its slot goes
    /// back, unless the pool is over its size.
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            if lock(&self.pool.state).retire_slot() {
                permit.forget();
            }
        }
    }
}

impl Deref for PooledConnection {
    type Target = ServerConnection;
    fn deref(&self) -> &ServerConnection {
        // `conn` is only taken by `release`, which consumes `self`.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl DerefMut for PooledConnection {
    fn deref_mut(&mut self) -> &mut ServerConnection {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

/// All pools, created on first use of a (node, database, user).
pub struct Pools {
    /// For pools created from now on; `apply` changes it.
    settings: Mutex<PoolSettings>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// An empty set of pools sharing `settings`.
    pub fn new(settings: PoolSettings) -> Pools {
        Pools {
            settings: Mutex::new(settings),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for `key`, created with `target` if it does not exist yet.
    pub fn get_or_create(&self, key: PoolKey, target: impl FnOnce() -> LoginTarget) -> Arc<Pool> {
        lock(&self.pools)
            .entry(key)
            .or_insert_with(|| Arc::new(Pool::new(target(), lock(&self.settings).clone())))
            .clone()
    }

    /// Puts reloaded settings in force in every pool and for new ones.
    pub fn apply(&self, settings: PoolSettings) {
        *lock(&self.settings) = settings.clone();
        for (_, pool) in self.all() {
            pool.apply(settings.clone());
        }
    }

    /// Points every pool of `user` at a new secret.
    pub fn set_secret(&self, user: &str, secret: Option<ServerSecret>) {
        for (key, pool) in self.all() {
            if key.user == user {
                pool.set_secret(secret.clone());
            }
        }
    }

    /// Closes the idle connections to `node` (it went down: they are dead
    /// or soon will be).
    pub fn close_idle(&self, node: usize) {
        for (key, pool) in self.all() {
            if key.node == node {
                lock(&pool.state).idle.clear();
            }
        }
    }

    /// Every pool with its key, for pruning and stats.
    pub fn all(&self) -> Vec<(PoolKey, Arc<Pool>)> {
        lock(&self.pools)
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect()
    }
}
