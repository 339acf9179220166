//! Reloading the configuration while clients stay connected: a replica
//! added by a reload receives reads, a removed one gets no more traffic
//! and its clients keep working, a new user can log in, and a broken file
//! is refused with the field named while the old configuration stays.
//! Pools are resized and take new timeouts in place.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{admin_get, admin_post, connect, spawn_proxy_from_file, try_connect, with_cluster};
use pgsplit::cluster::{
    APP_MD5_PASSWORD, APP_MD5_USER, APP_PASSWORD, APP_USER, SUPERUSER, SUPERUSER_PASSWORD,
};

/// A config with the given nodes (`pg1` is the primary) and users.
fn config_text(listen: &str, nodes: &[&str], users: &[(&str, &str)], extra: &str) -> String {
    with_cluster(|c| {
        let mut yaml = format!("listen: \"{listen}\"\nadmin_listen: \"127.0.0.1:0\"\nnodes:\n");
        for node in c.nodes().filter(|n| nodes.contains(&n.name.as_str())) {
            let role = if node.name == "pg1" {
                "primary"
            } else {
                "replica"
            };
            yaml.push_str(&format!(
                "  - {{ name: {}, host: 127.0.0.1, port: {}, role: {role} }}\n",
                node.name, node.port
            ));
        }
        yaml.push_str("users:\n");
        for (name, password) in users {
            yaml.push_str(&format!(
                "  - {{ name: {name}, password: \"{password}\" }}\n"
            ));
        }
        yaml.push_str(&format!(
            "monitor: {{ user: {SUPERUSER}, password: \"{SUPERUSER_PASSWORD}\", interval: 100ms }}\nrouting: {{ load_balance: round_robin }}\n{extra}"
        ));
        yaml
    })
}

fn write(path: &std::path::Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// The ports that served `count` reads.
async fn read_ports(client: &tokio_postgres::Client, count: usize) -> HashSet<String> {
    let mut ports = HashSet::new();
    for _ in 0..count {
        let rows = client.simple_query("SHOW port").await.unwrap();
        ports.extend(common::first_value(&rows));
    }
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_nodes_and_users_without_dropping_clients() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgsplit.yaml");
    let listen = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };
    let app = [(APP_USER, APP_PASSWORD)];
    write(&path, &config_text(&listen, &["pg1", "pg2"], &app, ""));
    let proxy = spawn_proxy_from_file(&path);
    let (pg2, pg3) = with_cluster(|c| {
        (
            c.replicas()[0].port.to_string(),
            c.replicas()[1].port.to_string(),
        )
    });
    let client = connect(proxy.addr).await;
    assert_eq!(read_ports(&client, 6).await, HashSet::from([pg2.clone()]));
    let md5_url = common::url(proxy.addr, APP_MD5_USER, APP_MD5_PASSWORD, "app");
    assert!(
        try_connect(&md5_url).await.is_err(),
        "app_md5 is not configured yet"
    );

    // Add pg3 and a user.
    let both = [(APP_USER, APP_PASSWORD), (APP_MD5_USER, APP_MD5_PASSWORD)];
    write(
        &path,
        &config_text(&listen, &["pg1", "pg2", "pg3"], &both, ""),
    );
    let (status, body) = admin_post(proxy.admin, "/api/reload", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 nodes added"), "{body}");
    let start = Instant::now();
    loop {
        let ports = read_ports(&client, 6).await;
        if ports.contains(&pg3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "pg3 gets no reads: {ports:?}"
        );
    }
    let md5 = try_connect(&md5_url)
        .await
        .expect("a user added by reload logs in");
    md5.simple_query("SELECT 1").await.unwrap();

    // Remove pg2 (through the console's RELOAD this time): connected
    // clients keep working, pg2 gets nothing.
    write(&path, &config_text(&listen, &["pg1", "pg3"], &both, ""));
    let console = common::url(proxy.addr, SUPERUSER, SUPERUSER_PASSWORD, "pgsplit");
    let out = common::run_tool(
        "psql",
        &["-X", "-c", "RELOAD", &console],
        SUPERUSER_PASSWORD,
    );
    let notice = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && notice.contains("1 removed"),
        "{notice}"
    );
    let ports = read_ports(&client, 10).await;
    assert!(!ports.contains(&pg2), "{ports:?}");
    assert!(ports.contains(&pg3), "{ports:?}");
    md5.simple_query("SELECT 1").await.unwrap();
    let (_, health) = admin_get(proxy.admin, "/health");
    assert!(!health.contains("\"pg2\""), "{health}");

    // A broken file is refused, naming the field; nothing changes.
    write(
        &path,
        &config_text(
            &listen,
            &["pg1", "pg3"],
            &both,
            "pool: { mode: sometimes }\n",
        ),
    );
    let (status, body) = admin_post(proxy.admin, "/api/reload", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("pool.mode"), "{body}");
    // So is a change pgsplit cannot make while running.
    let moved = config_text("127.0.0.1:1", &["pg1", "pg3"], &both, "");
    write(&path, &moved);
    let (status, body) = admin_post(proxy.admin, "/api/reload", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("listen"), "{body}");
    assert_eq!(read_ports(&client, 4).await, HashSet::from([pg3.clone()]));
    let (_, config) = admin_get(proxy.admin, "/api/config");
    assert!(config.contains(&format!("\"{APP_MD5_USER}\"")), "{config}");
}

/// The server process that serves `client`'s next statement.
async fn backend_pid(client: &tokio_postgres::Client) -> String {
    let rows = client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap();
    common::first_value(&rows).unwrap()
}

/// Whether the primary still has a server process `pid`.
fn primary_has_backend(pid: &str) -> bool {
    common::primary_sql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"
    )) == "1"
}

/// Waits until the primary's process `pid` has exited.
async fn wait_until_gone(pid: &str) {
    let start = Instant::now();
    while primary_has_backend(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server process {pid} is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reloads `text` through the admin API, which must accept it.
fn reload_with(path: &std::path::Path, admin: std::net::SocketAddr, text: &str) {
    write(path, text);
    let (status, body) = admin_post(admin, "/api/reload", "");
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_resizes_pools_and_changes_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgsplit.yaml");
    let listen = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().to_string()
    };
    let app = [(APP_USER, APP_PASSWORD)];
    // The primary alone serves everything, from a pool of `size`.
    let pool = |settings: &str| {
        config_text(
            &listen,
            &["pg1"],
            &app,
            &format!("query_wait_timeout: 20s\npool: {{ {settings} }}\n"),
        )
    };
    write(&path, &pool("size: 1"));
    let proxy = spawn_proxy_from_file(&path);
    let a = connect(proxy.addr).await;
    let b = connect(proxy.addr).await;

    // Size 1: while a holds the connection, b waits; growing the pool to 2
    // lets b in on a second server connection.
    a.batch_execute("BEGIN").await.unwrap();
    let pid_a = backend_pid(&a).await;
    let waiting = tokio::spawn(async move {
        let pid = backend_pid(&b).await;
        (b, pid)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "b ran beside a in a pool of 1");
    reload_with(&path, proxy.admin, &pool("size: 2"));
    let (b, pid_b) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("b gets a connection once the pool grows")
        .unwrap();
    assert_ne!(pid_a, pid_b);
    let (_, pools) = admin_get(proxy.admin, "/api/pools");
    assert!(pools.contains("\"size\":2"), "{pools}");

    // Both connections lent out, shrink to 1: the first to come back is
    // closed, and from then on one server process serves both clients.
    b.batch_execute("BEGIN").await.unwrap();
    assert_eq!(backend_pid(&b).await, pid_b);
    reload_with(&path, proxy.admin, &pool("size: 1"));
    a.batch_execute("COMMIT").await.unwrap();
    wait_until_gone(&pid_a).await;
    b.batch_execute("COMMIT").await.unwrap();
    for client in [&a, &b, &a, &b] {
        assert_eq!(backend_pid(client).await, pid_b);
    }
    assert!(primary_has_backend(&pid_b));
    let (_, pools) = admin_get(proxy.admin, "/api/pools");
    assert!(
        pools.contains("\"size\":1") && pools.contains("\"active\":0"),
        "{pools}"
    );

    // Grow to 2 with one idle connection, then shrink to 1 with a holding
    // one and b's idle: the idle one is closed at once.
    reload_with(&path, proxy.admin, &pool("size: 2"));
    a.batch_execute("BEGIN").await.unwrap();
    let held = backend_pid(&a).await;
    let idle = backend_pid(&b).await;
    assert_ne!(held, idle);
    reload_with(&path, proxy.admin, &pool("size: 1"));
    wait_until_gone(&idle).await;
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(backend_pid(&b).await, held);

    // A shorter idle timeout applies to the connection already idle.
    reload_with(&path, proxy.admin, &pool("size: 1, idle_timeout: 100ms"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = backend_pid(&a).await;
    assert_ne!(fresh, held, "an expired idle connection was handed out");
    wait_until_gone(&held).await;
}
