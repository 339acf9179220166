//! Shared harness for integration tests: one real PostgreSQL primary with
//! two streaming replicas per test binary, and pgsplit instances in front
//! of it, each on its own runtime thread so they outlive any one test.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use pgsplit::cluster::{LocalCluster, APP_DATABASE, APP_PASSWORD, APP_USER};
use pgsplit::config::Config;
use pgsplit::proxy::Proxy;
use pgsplit::proxy::Shared;
use std::sync::Arc;

static CLUSTER: OnceLock<Mutex<Option<LocalCluster>>> = OnceLock::new();
static DEFAULT_PROXY: OnceLock<SocketAddr> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(cell) = CLUSTER.get() {
        if let Ok(mut guard) = cell.lock() {
            if let Some(mut cluster) = guard.take() {
                cluster.stop();
            }
        }
    }
}

/// Runs `f` with the shared cluster, starting it on first use. Static
/// values are never dropped, so an `atexit` hook stops the servers.
pub fn with_cluster<T>(f: impl FnOnce(&LocalCluster) -> T) -> T {
    let cell = CLUSTER.get_or_init(|| {
        let cluster = LocalCluster::start(2).expect("start the test cluster");
        // SAFETY: registering a plain extern "C" function is always sound.
        unsafe {
            libc::atexit(stop_cluster);
        }
        Mutex::new(Some(cluster))
    });
    let guard = cell.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.as_ref().expect("cluster already stopped"))
}

/// Starts a pgsplit in front of the shared cluster with extra top-level
/// YAML (e.g. `pool: { mode: session }`) and returns its address.
pub fn start_proxy(extra_yaml: &str) -> SocketAddr {
    spawn_proxy(proxy_config(extra_yaml))
}

/// A pgsplit running on its own runtime thread, as tests see it.
pub struct RunningProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Where the admin API listens.
    pub admin: SocketAddr,
    /// The state it shares: the topology its monitor publishes, its
    /// monitor handle, fault injection.
    pub shared: Arc<Shared>,
}

/// Runs a pgsplit with `config` on its own runtime thread; returns its address.
pub fn spawn_proxy(config: Config) -> SocketAddr {
    spawn_watched_proxy(config).addr
}

/// Like [`spawn_proxy`], also giving access to what pgsplit believes about
/// the nodes and to its admin API.
pub fn spawn_watched_proxy(config: Config) -> RunningProxy {
    spawn_proxy_with_source(config, None)
}

/// Runs a pgsplit with the config file at `path`, which a reload reads again.
pub fn spawn_proxy_from_file(path: &std::path::Path) -> RunningProxy {
    let config = Config::load(path).expect("valid test config file");
    spawn_proxy_with_source(config, Some(path.to_path_buf()))
}

fn spawn_proxy_with_source(config: Config, path: Option<std::path::PathBuf>) -> RunningProxy {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let proxy = Proxy::bind_with_source(config, path)
                .await
                .expect("bind proxy");
            let running = RunningProxy {
                addr: proxy.local_addr().expect("local addr"),
                admin: proxy.admin_addr().expect("admin addr"),
                shared: proxy.shared(),
            };
            tx.send(running).expect("report address");
            proxy.run(std::future::pending()).await.expect("proxy runs");
        });
    });
    rx.recv().expect("proxy started")
}

/// A POST to the admin API with a JSON body; returns the status code and body.
pub fn admin_post(admin: SocketAddr, path: &str, body: &str) -> (u16, String) {
    admin_request(admin, "POST", path, body)
}

/// A GET from the admin API; returns the status code and body.
pub fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    admin_request(admin, "GET", path, "")
}

/// One HTTP/1.1 request to the admin API (no client library needed).
fn admin_request(admin: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    admin_request_with(admin, method, path, body, None)
}

/// One HTTP/1.1 request to the admin API, with a bearer token if given.
pub fn admin_request_with(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).expect("connect to the admin API");
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: pgsplit\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A pgsplit config for the shared cluster with `extra` top-level YAML,
/// for tests that adjust it further before starting the proxy.
pub fn proxy_config(extra_yaml: &str) -> Config {
    let yaml = with_cluster(|c| pgsplit::demo::config_yaml(c, "127.0.0.1:0", extra_yaml));
    Config::from_yaml(&yaml, &|_| None).expect("valid test config")
}

/// The transaction-pooling pgsplit shared by the tests of one binary.
pub fn proxy() -> SocketAddr {
    *DEFAULT_PROXY.get_or_init(|| start_proxy(""))
}

/// A libpq connection string for `addr`.
pub fn url(addr: SocketAddr, user: &str, password: &str, database: &str) -> String {
    format!("postgresql://{user}:{password}@{addr}/{database}?sslmode=disable")
}

/// The app user's connection string through `addr`.
pub fn app_url(addr: SocketAddr) -> String {
    url(addr, APP_USER, APP_PASSWORD, APP_DATABASE)
}

/// The first column of the first row of a simple query's result.
pub fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<String> {
    messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    })
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn connect(addr: SocketAddr) -> tokio_postgres::Client {
    try_connect(&app_url(addr))
        .await
        .expect("connect through pgsplit")
}

/// Connects with tokio-postgres, returning the error instead of panicking.
pub async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs a PostgreSQL client tool (psql, pgbench) from the cluster's bin dir.
pub fn run_tool(tool: &str, args: &[&str], password: &str) -> Output {
    let bin = with_cluster(|c| c.bin(tool));
    Command::new(bin)
        .args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// Runs SQL directly on the primary as the superuser (bypassing pgsplit).
pub fn primary_sql(sql: &str) -> String {
    with_cluster(|c| {
        c.psql(c.primary(), APP_DATABASE, sql)
            .expect("run SQL on the primary")
    })
}

/// Path of the primary's unix socket, where every role logs in without a
/// password (trust), so tests can compare pgsplit with PostgreSQL itself.
pub fn primary_socket() -> std::path::PathBuf {
    with_cluster(|c| {
        c.socket_dir()
            .join(format!(".s.PGSQL.{}", c.primary().port))
    })
}

/// Runs SQL directly on the primary as the superuser in `database`.
pub fn primary_sql_in(database: &str, sql: &str) -> String {
    with_cluster(|c| {
        c.psql(c.primary(), database, sql)
            .expect("run SQL on the primary")
    })
}
pub mod bank;
