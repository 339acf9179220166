//! The proxy as a whole: the listener, the state shared by all sessions,
//! and orderly shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tracing::{Instrument as _, Span};

use crate::admin::console::{self, ADMIN_DATABASE};
use crate::admin::AdminServer;
use crate::auth::{AuthQuery, Credentials, LoginFailures, LookedUp};
use crate::backend::connection::LoginTarget;
use crate::backend::tls::ServerTls;
use crate::backend::{Pool, PoolKey, PoolSettings, Pools};
use crate::config::Config;
use crate::frontend::cancel::CancelRegistry;
use crate::frontend::clients::ClientRegistry;
use crate::frontend::login::{login, LoginOutcome};
use crate::frontend::session::Session;
use crate::frontend::settings::SettingsInterner;
use crate::frontend::statements::StatementNames;
use crate::frontend::tls::ClientTls;
use crate::metrics::Metrics;
use crate::monitor::events::EventCounts;
use crate::monitor::faults::ProbeFaults;
use crate::monitor::{Monitor, MonitorHandle, SharedTopology, Topology};
use crate::protocol::PgError;
use crate::router::classify::ClassificationCache;
use crate::router::functions::FunctionCatalog;
use crate::router::Router;
use crate::workers::Workers;

/// How often idle server connections are checked against their timeouts.
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);
/// Distinct statement texts whose classification is kept.
const CLASSIFICATION_CACHE_SIZE: usize = 10_000;

/// The pools' settings from `config`: at start-up and on every reload.
pub fn pool_settings(config: &Config, tls: Option<ServerTls>) -> PoolSettings {
    PoolSettings {
        size: config.pool.size as usize,
        connect_timeout: config.server_connect_timeout,
        idle_timeout: config.pool.idle_timeout,
        max_lifetime: config.pool.max_lifetime,
        max_message_size: config.max_message_size,
        tcp_user_timeout: config.server_tcp_user_timeout,
        tls,
    }
}

/// Client-facing TLS from the files `tls.cert` and `tls.key` name, if set.
pub fn client_tls(config: &Config) -> anyhow::Result<Option<ClientTls>> {
    match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Ok(Some(ClientTls::load(cert, key)?)),
        _ => Ok(None),
    }
}

/// A configured user's credentials and the configured secret they were
/// derived from, so that a reload can tell whether they still hold.
struct ConfiguredCredentials {
    secret: String,
    credentials: Arc<Credentials>,
}

/// The configured users' credentials. A reload passes the ones in force as
/// `previous` and keeps those whose secret did not change: deriving SCRAM
/// keys from a password costs thousands of hash rounds per user, and a
/// burst of SIGHUPs would pay them for every user every time.
fn credentials_of(
    config: &Config,
    previous: Option<&HashMap<String, ConfiguredCredentials>>,
) -> HashMap<String, ConfiguredCredentials> {
    config
        .users
        .iter()
        .filter_map(|user| {
            let kept = previous
                .and_then(|old| old.get(&user.name))
                .filter(|old| old.secret == user.password)
                .map(|old| old.credentials.clone());
            let credentials = match kept {
                Some(credentials) => credentials,
                None => match Credentials::from_secret(&user.name, &user.password) {
                    Ok(credentials) => Arc::new(credentials),
                    Err(problem) => {
                        // Validation refuses such configs; never expected here.
                        tracing::error!(user = %user.name, problem, "unusable password");
                        return None;
                    }
                },
            };
            let entry = ConfiguredCredentials {
                secret: user.password.clone(),
                credentials,
            };
            Some((user.name.clone(), entry))
        })
        .collect()
}

/// State every session can see.
pub struct Shared {
    /// The configuration in force; replaced whole by a reload.
    config: ArcSwap<Config>,
    /// Where it was read from (`None`: the environment, or built in code).
    config_path: Option<std::path::PathBuf>,
    /// The users' credentials; a reload replaces them.
    credentials: ArcSwap<HashMap<String, ConfiguredCredentials>>,
    /// The `monitor` user, who may use the admin console.
    monitor_credentials: Option<(String, Arc<Credentials>)>,
    /// Looks up users the config does not list (`auth_query`).
    auth_query: AuthQuery,
    /// Failed logins by source address (`auth_failure_limit`).
    pub login_failures: LoginFailures,
    /// The server connection pools, one per (node, database, user).
    pub pools: Pools,
    /// The clients' cancel keys, so cancel requests reach the right server.
    pub cancels: Arc<CancelRegistry>,
    /// Server names of pooled prepared statements, shared by all clients.
    pub statement_names: StatementNames,
    /// Client-facing TLS, loaded again by every reload (rotated certificates).
    pub tls: ArcSwapOption<ClientTls>,
    /// TLS towards the nodes; a reload re-reads its CA file.
    pub server_tls: Option<ServerTls>,
    /// Chooses the node for each transaction.
    pub router: Arc<Router>,
    /// Read/write classification of statement texts, cached.
    pub classifier: ClassificationCache,
    /// Which functions may run on a replica, per database.
    pub functions: FunctionCatalog,
    /// Node roles, health and lag, as the monitor last saw them.
    pub topology: SharedTopology,
    /// Switchover, promotion and rejoin requests go to the monitor here.
    pub monitor: MonitorHandle,
    /// Checks made to fail on purpose (tests of the failure rule).
    pub faults: ProbeFaults,
    /// What the data path counts.
    pub metrics: Metrics,
    /// Node events (down, promoted, fenced, ...) counted.
    pub events: EventCounts,
    /// `PAUSE`: new transactions wait while this is `true`.
    paused: AtomicBool,
    /// Wakes the transactions `PAUSE` held.
    resumed: Notify,
    /// The logged-in clients.
    pub clients: Arc<ClientRegistry>,
    /// Startup settings shared by clients that start alike.
    pub startup_settings: SettingsInterner,
    connections: AtomicUsize,
    /// Held by a reload from reading the file to applying it: a SIGHUP and
    /// an admin request at the same moment take turns, so neither applies
    /// a node arrangement the other has already changed.
    pub(crate) reloading: tokio::sync::Mutex<()>,
}

impl Shared {
    /// The configuration in force (a reload may replace it at any time,
    /// so hold it only as long as needed).
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The file the configuration came from, if any (reload reads it again).
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// Puts a reloaded configuration in force, with its users' credentials.
    pub(crate) fn replace_config(&self, config: Arc<Config>) {
        let credentials = credentials_of(&config, Some(&self.credentials.load()));
        self.credentials.store(Arc::new(credentials));
        self.config.store(config);
    }

    /// The credentials of `user`: configured, or last looked up with
    /// `auth_query`.
    pub fn credentials(&self, user: &str) -> Option<Arc<Credentials>> {
        self.credentials
            .load()
            .get(user)
            .map(|entry| entry.credentials.clone())
            .or_else(|| self.auth_query.known(user))
    }

    /// The credentials a login as `user` is checked against: the
    /// configured ones, else a fresh `auth_query` lookup. `Ok(None)`: no
    /// such user.
    pub async fn login_credentials(&self, user: &str) -> Result<Option<LookedUp>, PgError> {
        if let Some(entry) = self.credentials.load().get(user) {
            return Ok(Some(LookedUp {
                credentials: entry.credentials.clone(),
                expired: false,
            }));
        }
        let config = self.config();
        self.auth_query.lookup(&config, user).await
    }

    /// A client proved `user`'s password with SCRAM: for a verifier-only
    /// entry its `ClientKey` now logs the user's pools in to the nodes
    /// (for a password entry nothing changes).
    pub fn learn_client_key(&self, user: &str, credentials: &Credentials, client_key: [u8; 32]) {
        if credentials.learn(client_key) {
            self.pools.set_secret(user, credentials.server_secret());
        }
    }

    /// The credentials of `user` for the admin console: the `monitor`
    /// user's, or those of a user listed in `admin.users`.
    pub fn admin_credentials(&self, user: &str) -> Option<Arc<Credentials>> {
        match &self.monitor_credentials {
            Some((name, credentials)) if name == user => Some(credentials.clone()),
            _ if self.config().admin.users.iter().any(|u| u == user) => self.credentials(user),
            _ => None,
        }
    }

    /// The pool of (`node`, `database`, `user`), created on first use;
    /// `None` for a node the configuration does not have.
    pub fn pool_for(&self, node: usize, database: &str, user: &str) -> Option<Arc<Pool>> {
        let config = self.config();
        let node_config = config.nodes.get(node)?;
        let key = PoolKey {
            node,
            database: database.to_owned(),
            user: user.to_owned(),
        };
        Some(self.pools.get_or_create(key, || LoginTarget {
            node_name: node_config.name.clone(),
            host: node_config.host.clone(),
            port: node_config.port,
            database: database.to_owned(),
            user: user.to_owned(),
            secret: self.credentials(user).and_then(|c| c.server_secret()),
        }))
    }

    /// Holds new transactions (`true`) or lets them go again, like
    /// PgBouncer's `PAUSE` and `RESUME`; running transactions carry on.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if !paused {
            self.resumed.notify_waiters();
        }
        tracing::info!(
            paused,
            "new transactions {}",
            if paused { "held" } else { "released" }
        );
    }

    /// Whether new transactions are held.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Returns once new transactions may start.
    pub async fn wait_while_paused(&self) {
        loop {
            // Registered before the check, so a RESUME in between is not missed.
            let resumed = self.resumed.notified();
            if !self.paused.load(Ordering::SeqCst) {
                return;
            }
            resumed.await;
        }
    }

    /// Client connections open right now, logged in or not.
    pub fn client_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Counts a client connection for as long as it lives.
struct ClientGuard(Arc<Shared>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bound, not yet running proxy.
pub struct Proxy {
    listener: TcpListener,
    /// Where client sessions run.
    workers: Workers,
    shared: Arc<Shared>,
    monitor: Option<Monitor>,
    admin: Option<AdminServer>,
}

impl Proxy {
    /// Binds the client port and prepares shared state (TLS, verifiers).
    pub async fn bind(config: Config) -> anyhow::Result<Proxy> {
        Proxy::bind_with_source(config, None).await
    }

    /// Like [`Proxy::bind`], remembering the file `config` came from, which
    /// a reload reads again.
    pub async fn bind_with_source(
        config: Config,
        config_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Proxy> {
        let tls = ArcSwapOption::from(client_tls(&config)?.map(Arc::new));
        let server_tls = crate::backend::tls::from_config(&config.server_tls)?;
        let pools = Pools::new(pool_settings(&config, server_tls.clone()));
        let topology: SharedTopology =
            Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
        let (monitor_handle, monitor_requests) = MonitorHandle::channel();
        if config.monitor.is_none() {
            tracing::warn!("no monitor credentials: node roles, health and lag are not checked, and there is no failover");
        }
        let listener = TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        let auth_query = AuthQuery::new(server_tls.clone(), topology.clone());
        let shared = Shared {
            router: Arc::new(Router::new(&config, topology.clone())),
            classifier: ClassificationCache::new(CLASSIFICATION_CACHE_SIZE),
            functions: FunctionCatalog::new(&config, server_tls.clone(), topology.clone()),
            topology,
            monitor: monitor_handle,
            faults: ProbeFaults::new(config.nodes.len()),
            metrics: Metrics::new(config.nodes.len()),
            events: EventCounts::default(),
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
            clients: Arc::new(ClientRegistry::default()),
            startup_settings: SettingsInterner::default(),
            credentials: ArcSwap::from_pointee(credentials_of(&config, None)),
            monitor_credentials: config.monitor.as_ref().and_then(|m| {
                let credentials = Credentials::from_secret(&m.user, &m.password).ok()?;
                Some((m.user.clone(), Arc::new(credentials)))
            }),
            auth_query,
            login_failures: LoginFailures::default(),
            pools,
            cancels: Arc::new(CancelRegistry::default()),
            statement_names: StatementNames::default(),
            tls,
            server_tls: server_tls.clone(),
            connections: AtomicUsize::new(0),
            reloading: tokio::sync::Mutex::new(()),
            config: ArcSwap::from_pointee(config),
            config_path,
        };
        let shared = Arc::new(shared);
        let monitor = Monitor::new(shared.clone(), server_tls, monitor_requests);
        let admin = AdminServer::bind(shared.clone()).await?;
        let workers = Workers::start(shared.config().workers)
            .context("workers: cannot start the worker threads")?;
        Ok(Proxy {
            listener,
            workers,
            shared,
            monitor,
            admin: Some(admin),
        })
    }

    /// The state every session shares (for tests and the admin side).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// The admin endpoint's address (useful when `admin_listen` used port 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr().ok())
    }

    /// The address clients connect to (useful when `listen` used port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves clients until `shutdown` completes, then stops accepting,
    /// lets transactions in progress finish (up to a grace period) and
    /// closes idle clients with `57P01`, as PostgreSQL's smart shutdown does.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let pruner = tokio::spawn(prune_idle_connections(self.shared.clone()));
        let monitor = self
            .monitor
            .take()
            .map(|monitor| tokio::spawn(monitor.run()));
        let admin = self.admin.take().map(|admin| tokio::spawn(admin.run()));
        let reloader = tokio::spawn(reload_on_hangup(self.shared.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        self.shared.connections.fetch_add(1, Ordering::Relaxed);
                        let guard = ClientGuard(self.shared.clone());
                        let span = tracing::info_span!(
                            "client",
                            %peer,
                            user = tracing::field::Empty,
                            database = tracing::field::Empty,
                            application_name = tracing::field::Empty,
                        );
                        // Moved to the worker's I/O driver, on the worker's side.
                        match socket.into_std() {
                            Ok(socket) => self.workers.spawn(move || {
                                let socket = TcpStream::from_std(socket);
                                async move {
                                    match socket {
                                        Ok(socket) => serve_client(guard, socket, peer, span).await,
                                        Err(error) => tracing::warn!(parent: &span, %error, "cannot hand over a client"),
                                    }
                                }
                            }),
                            Err(error) => tracing::warn!(%error, %peer, "cannot hand over a client"),
                        }
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!(clients = self.shared.client_count(), "shutting down");
        self.shared.clients.stop_all();
        let deadline = tokio::time::Instant::now() + self.shared.config().shutdown_timeout;
        while self.shared.client_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pruner.abort();
        reloader.abort();
        for task in [monitor, admin].into_iter().flatten() {
            task.abort();
        }
        let counters = &self.shared.router.counters;
        tracing::info!(
            unparsed_statements = counters.unparsed.load(Ordering::Relaxed),
            fallbacks = ?counters.fallbacks(),
            "stopped"
        );
        Ok(())
    }
}

async fn serve_client(guard: ClientGuard, socket: TcpStream, peer: SocketAddr, span: Span) {
    let shared = guard.0.clone();
    if let Err(error) = socket.set_nodelay(true) {
        tracing::debug!(parent: &span, %error, "could not set TCP_NODELAY");
    }
    let login_timeout = shared.config().client_login_timeout;
    let outcome = tokio::time::timeout(login_timeout, login(&shared, socket))
        .instrument(span.clone())
        .await;
    if let Ok(LoginOutcome::Authenticated(client)) = &outcome {
        // Every line this client's task logs from now on says who it is.
        let request = &client.request;
        span.record("user", request.user.as_str());
        span.record("database", request.database.as_str());
        if let Some((_, name)) = request
            .parameters
            .iter()
            .find(|(k, _)| k == "application_name")
        {
            span.record("application_name", name.as_str());
        }
    }
    match outcome {
        Ok(LoginOutcome::Authenticated(client)) if client.request.database == ADMIN_DATABASE => {
            console::run(shared, client).instrument(span).await
        }
        // The session names its span as the parent of what it logs rather
        // than entering it on every poll (see `Session::span`).
        Ok(LoginOutcome::Authenticated(client)) => Session::run(shared, client, peer, span).await,
        Ok(LoginOutcome::Cancelled | LoginOutcome::Closed) => {}
        Err(_) => tracing::info!(
            parent: &span,
            "client did not finish logging in within client_login_timeout"
        ),
    }
    drop(guard);
}

/// Reloads the configuration on every `SIGHUP`, as PostgreSQL and
/// PgBouncer do.
async fn reload_on_hangup(shared: Arc<Shared>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload through the admin API");
            return;
        };
        while hangups.recv().await.is_some() {
            if let Err(error) = crate::reload::reload(&shared).await {
                tracing::error!(%error, "reload refused");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = shared;
}

async fn prune_idle_connections(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        interval.tick().await;
        for (_, pool) in shared.pools.all() {
            pool.prune();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_credentials_of_users_whose_secret_did_not_change() {
        let config = |bob: &str| {
            let yaml = format!(
                "nodes:\n  - {{ name: pg1, host: 127.0.0.1, port: 5432, role: primary }}\nusers:\n  - {{ name: alice, password: a }}\n  - {{ name: bob, password: {bob} }}\n"
            );
            Config::from_yaml(&yaml, &|_| None).expect("valid config")
        };
        let before = credentials_of(&config("b1"), None);
        let after = credentials_of(&config("b2"), Some(&before));
        assert!(Arc::ptr_eq(
            &before["alice"].credentials,
            &after["alice"].credentials
        ));
        assert!(!Arc::ptr_eq(
            &before["bob"].credentials,
            &after["bob"].credentials
        ));
        assert_eq!(
            after["bob"].credentials.md5(),
            Some(&crate::protocol::md5::Md5Hash::of_password("bob", "b2"))
        );
    }
}
