//! Reloading the configuration while clients stay connected: a replica
//! added by a reload receives reads, a removed one gets no more traffic
//! and its clients keep working, a new user can log in, and a broken file
//! is refused with the field named while the old configuration stays.

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
