//! Pools of logged-in server connections, one per (node, database, user).
//!
//! A semaphore bounds the connections of a pool; idle ones wait in a LIFO
//! stack so the most recently used (with the warmest prepared-statement
//! cache) is handed out first.

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

/// Limits and timeouts shared by all pools.
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
    settings: PoolSettings,
    /// Boxed, so that handing a connection out or back (every transaction)
    /// moves a pointer rather than the whole connection.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<ServerConnection>>>,
    permits: Arc<Semaphore>,
    /// Clients waiting for a free slot right now.
    waiting: AtomicUsize,
    /// The last failed connection or login, and when it happened.
    last_failure: Mutex<Option<(Instant, ConnectError)>>,
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
            settings,
            idle: Mutex::new(Vec::new()),
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
            _permit: permit,
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
        let result = ServerConnection::connect(&target, &self.settings).await;
        *lock(&self.last_failure) = result.as_ref().err().map(|e| (Instant::now(), e.clone()));
        result
    }

    /// Pops idle connections until a usable one turns up; stale or broken
    /// ones are dropped on the way.
    fn take_idle(&self, now: Instant) -> Option<Box<ServerConnection>> {
        loop {
            let conn = lock(&self.idle).pop()?;
            if conn.is_fresh_at(now) && conn.is_healthy_when_idle() {
                return Some(conn);
            }
            tracing::debug!(node = %self.node_name, "dropping stale server connection");
        }
    }

    /// Its current numbers.
    pub fn stats(&self) -> PoolStats {
        let size = self.settings.size;
        PoolStats {
            size,
            active: size.saturating_sub(self.permits.available_permits()),
            idle: lock(&self.idle).len(),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Closes idle connections past their idle timeout or lifetime.
    pub fn prune(&self) {
        let now = Instant::now();
        lock(&self.idle).retain(|conn| conn.is_fresh_at(now));
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
    _permit: OwnedSemaphorePermit,
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
        if let Some(mut conn) = self.conn.take() {
            let settings = &self.pool.settings;
            conn.touch(now, settings.idle_timeout, settings.max_lifetime);
            lock(&self.pool.idle).push(conn);
        }
    }

    /// The pool this connection belongs to.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
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
    settings: PoolSettings,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// An empty set of pools sharing `settings`.
    pub fn new(settings: PoolSettings) -> Pools {
        Pools {
            settings,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for `key`, created with `target` if it does not exist yet.
    pub fn get_or_create(&self, key: PoolKey, target: impl FnOnce() -> LoginTarget) -> Arc<Pool> {
        lock(&self.pools)
            .entry(key)
            .or_insert_with(|| Arc::new(Pool::new(target(), self.settings.clone())))
            .clone()
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
                lock(&pool.idle).clear();
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
