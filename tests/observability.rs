//! The admin endpoint against real traffic: `/metrics` parses as
//! Prometheus text and its counters move by the right amounts on the right
//! labels; `/health` turns degraded and unhealthy as nodes stop; `/ready`,
//! `/live`, pause and resume, and the JSON views.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    admin_get, admin_post, connect, proxy_config, spawn_watched_proxy, with_cluster, RunningProxy,
};
use pgsplit::config::{FailoverMode, LoadBalance};

/// The tests stop nodes: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn proxy() -> RunningProxy {
    let mut config = proxy_config("");
    config.monitor.as_mut().unwrap().interval = Duration::from_millis(100);
    config.failover.mode = FailoverMode::Manual;
    config.routing.load_balance = LoadBalance::RoundRobin;
    spawn_watched_proxy(config)
}

/// Samples by metric name and sorted labels.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// `/metrics`, parsed.
fn scrape(proxy: &RunningProxy) -> Samples {
    let (status, body) = admin_get(proxy.admin, "/metrics");
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    parsed
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<(String, String)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            Some(((sample.metric, labels), value))
        })
        .collect()
}

/// The sum of `name` over the samples whose labels include all of `having`.
fn total(metrics: &Samples, name: &str, having: &[(&str, &str)]) -> f64 {
    metrics
        .iter()
        .filter(|((metric, labels), _)| {
            metric == name
                && having
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, value)| value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_on_the_right_labels() {
    let _serial = SERIAL.lock().await;
    let proxy = proxy();
    with_cluster(|c| {
        c.psql(
            c.primary(),
            pgsplit::cluster::APP_DATABASE,
            "CREATE TABLE IF NOT EXISTS observed (v int); GRANT ALL ON observed TO app",
        )
        .unwrap()
    });
    let client = connect(proxy.addr).await;
    let before = scrape(&proxy);
    for _ in 0..30 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    for v in 0..7 {
        client
            .simple_query(&format!("INSERT INTO observed VALUES ({v})"))
            .await
            .unwrap();
    }
    let after = scrape(&proxy);
    let delta = |name: &str, having: &[(&str, &str)]| {
        total(&after, name, having) - total(&before, name, having)
    };
    assert_eq!(
        delta(
            "pgsplit_queries_total",
            &[("role", "replica"), ("type", "read")]
        ),
        30.0
    );
    assert_eq!(
        delta(
            "pgsplit_queries_total",
            &[("node", "pg1"), ("role", "primary"), ("type", "write")]
        ),
        7.0
    );
    assert_eq!(
        delta(
            "pgsplit_queries_total",
            &[("role", "primary"), ("type", "read")]
        ),
        0.0
    );
    assert_eq!(
        delta("pgsplit_transactions_total", &[("role", "replica")]),
        30.0
    );
    assert_eq!(
        delta("pgsplit_transactions_total", &[("role", "primary")]),
        7.0
    );
    assert_eq!(
        delta(
            "pgsplit_query_duration_seconds_count",
            &[("role", "replica")]
        ),
        30.0
    );
    assert_eq!(
        delta(
            "pgsplit_query_duration_seconds_count",
            &[("role", "primary")]
        ),
        7.0
    );
    assert_eq!(
        total(&after, "pgsplit_client_connections", &[("state", "idle")]),
        1.0
    );
    assert_eq!(
        total(
            &after,
            "pgsplit_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(
        total(
            &after,
            "pgsplit_node_state",
            &[("node", "pg2"), ("state", "up")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &after,
            "pgsplit_node_up",
            &[("node", "pg1"), ("role", "primary")]
        ),
        1.0
    );
    assert_eq!(total(&after, "pgsplit_split_brain", &[]), 0.0);
    assert!(total(&after, "pgsplit_server_connections", &[("node", "pg1")]) >= 1.0);
    // Text the histogram parser reads too.
    let (_, body) = admin_get(proxy.admin, "/metrics");
    assert!(body.contains("pgsplit_query_duration_seconds_bucket{role=\"replica\",le=\"+Inf\"} "));

    let (status, clients) = admin_get(proxy.admin, "/api/clients");
    assert_eq!(status, 200);
    let clients: serde_json::Value = serde_json::from_str(&clients).unwrap();
    assert_eq!(clients[0]["user"], "app");
    assert_eq!(clients[0]["state"], "idle");
    let (_, pools) = admin_get(proxy.admin, "/api/pools");
    let pools: serde_json::Value = serde_json::from_str(&pools).unwrap();
    assert!(pools
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["node"] == "pg1")));
    let (_, config) = admin_get(proxy.admin, "/api/config");
    assert!(
        config.contains("<redacted>") && !config.contains("\"password\":\"app\""),
        "{config}"
    );
}

/// Polls `/health` until its status is `want`; returns the HTTP status and body.
async fn wait_for_health(proxy: &RunningProxy, want: &str) -> (u16, serde_json::Value) {
    let start = Instant::now();
    loop {
        let (status, body) = admin_get(proxy.admin, "/health");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        if report["status"] == want {
            return (status, report);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "health never {want}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_nodes_and_pause_holds_transactions() {
    let _serial = SERIAL.lock().await;
    let proxy = proxy();
    let (status, report) = wait_for_health(&proxy, "healthy").await;
    assert_eq!(status, 200);
    assert_eq!(report["primary"]["node"], "pg1");
    assert_eq!(report["replicas"].as_array().map(Vec::len), Some(2));
    assert_eq!(admin_get(proxy.admin, "/live").0, 200);
    assert_eq!(admin_get(proxy.admin, "/ready").0, 200);

    let (primary, replica) = with_cluster(|c| (c.primary().clone(), c.replicas()[0].clone()));
    with_cluster(|c| c.stop_node(&replica).unwrap());
    let (status, report) = wait_for_health(&proxy, "degraded").await;
    assert_eq!(status, 200);
    assert!(
        report["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["status"] == "down"),
        "{report}"
    );
    with_cluster(|c| c.start_node(&replica).unwrap());
    wait_for_health(&proxy, "healthy").await;

    with_cluster(|c| c.stop_node(&primary).unwrap());
    let (status, _) = wait_for_health(&proxy, "unhealthy").await;
    assert_eq!(status, 503);
    with_cluster(|c| c.start_node(&primary).unwrap());
    wait_for_health(&proxy, "healthy").await;

    // PAUSE holds new transactions until RESUME.
    let client = connect(proxy.addr).await;
    assert_eq!(admin_post(proxy.admin, "/api/pause", "").0, 200);
    let held = tokio::spawn(async move { client.simple_query("SELECT 1").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!held.is_finished(), "a transaction ran while paused");
    let (_, body) = admin_get(proxy.admin, "/metrics");
    assert!(body.contains("pgsplit_paused 1"));
    assert!(
        body.contains("pgsplit_client_connections{state=\"waiting\"} 1"),
        "{body}"
    );
    assert_eq!(admin_post(proxy.admin, "/api/resume", "").0, 200);
    tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("released by RESUME")
        .unwrap()
        .unwrap();
}

/// Runs console commands with psql as `user`; returns (success, stdout, stderr).
fn console(
    proxy: &RunningProxy,
    user: &str,
    password: &str,
    commands: &str,
) -> (bool, String, String) {
    let url = common::url(proxy.addr, user, password, "pgsplit");
    let out = common::run_tool(
        "psql",
        &["-X", "-A", "-F", "|", "-c", commands, &url],
        password,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_console_answers_psql() {
    let _serial = SERIAL.lock().await;
    let proxy = proxy();
    let client = connect(proxy.addr).await;
    client.simple_query("SELECT 1").await.unwrap();
    let (user, password) = (
        pgsplit::cluster::SUPERUSER,
        pgsplit::cluster::SUPERUSER_PASSWORD,
    );

    let (ok, nodes, err) = console(&proxy, user, password, "SHOW NODES");
    assert!(ok, "{err}");
    assert!(nodes.starts_with("node|role|state|host|port|"), "{nodes}");
    assert!(nodes.contains("pg1|primary|up|127.0.0.1|"), "{nodes}");
    assert!(nodes.contains("(3 rows)"), "{nodes}");
    let (ok, pools, _) = console(&proxy, user, password, "SHOW POOLS");
    assert!(ok && pools.contains("|app|app|"), "{pools}");
    let (ok, clients, _) = console(&proxy, user, password, "SHOW CLIENTS");
    assert!(ok && clients.contains("|app|app|"), "{clients}");
    let (ok, servers, _) = console(&proxy, user, password, "SHOW SERVERS");
    assert!(ok && servers.contains("|idle|"), "{servers}");
    let (ok, stats, _) = console(&proxy, user, password, "SHOW STATS");
    assert!(ok && stats.contains("|replica|1|0|1"), "{stats}");
    let (ok, config, _) = console(&proxy, user, password, "SHOW CONFIG");
    assert!(
        ok && config.contains("users[0].password|<redacted>"),
        "{config}"
    );
    assert!(
        config.contains("routing.consistency|read_your_writes"),
        "{config}"
    );

    let (ok, _, err) = console(&proxy, user, password, "PAUSE");
    assert!(ok, "{err}");
    assert!(proxy.shared.is_paused());
    let (ok, _, _) = console(&proxy, user, password, "RESUME");
    assert!(ok && !proxy.shared.is_paused());
    let (ok, _, err) = console(&proxy, user, password, "SWITCHOVER pg9");
    assert!(!ok && err.contains("no node named"), "{err}");
    let (ok, _, err) = console(&proxy, user, password, "DROP TABLE x");
    assert!(
        !ok && err.contains("unknown admin console command"),
        "{err}"
    );

    // The console is for admins only.
    let (ok, _, err) = console(&proxy, "app", "app", "SHOW NODES");
    assert!(
        !ok && err.contains("may not use the pgsplit admin console"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_admin_token_when_one_is_set() {
    let mut config = proxy_config("");
    config.admin.token = Some("s3cret".into());
    let proxy = spawn_watched_proxy(config);
    let (status, body) = admin_post(proxy.admin, "/api/pause", "");
    assert_eq!(status, 401, "{body}");
    assert!(!proxy.shared.is_paused());
    let (status, _) =
        common::admin_request_with(proxy.admin, "POST", "/api/pause", "", Some("wrong"));
    assert_eq!(status, 401);
    let (status, body) =
        common::admin_request_with(proxy.admin, "POST", "/api/pause", "", Some("s3cret"));
    assert_eq!(status, 200, "{body}");
    assert!(proxy.shared.is_paused());
    proxy.shared.set_paused(false);
    // Reading needs no token.
    assert_eq!(admin_get(proxy.admin, "/api/nodes").0, 200);
}
