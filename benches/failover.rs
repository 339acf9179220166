//! How long writes stop when the primary crashes: time from `pg_ctl stop -m
//! immediate` on the primary to the first write acknowledged through
//! pgsplit, with the default failover settings (`monitor.interval` 500ms,
//! `failover.timeout` 3s), over a few rounds on fresh clusters.
//!
//!     cargo bench --bench failover            # ROUNDS=3 by default
//!
//! Under `cargo test` it only says how to run it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgsplit::cluster::{LocalCluster, APP_DATABASE, APP_PASSWORD, APP_USER};
use pgsplit::config::Config;
use pgsplit::proxy::Proxy;

const CLIENTS: usize = 4;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("failover benchmark: run it with `cargo bench --bench failover`");
        return;
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut times = Vec::new();
    for round in 1..=rounds {
        let (outage, promoted) = runtime.block_on(one_round());
        println!(
            "round {round}: new primary in place {:.2} s after the kill, first write acknowledged after {:.2} s",
            promoted.as_secs_f64(),
            outage.as_secs_f64()
        );
        times.push(outage);
    }
    times.sort();
    println!(
        "median time from killing the primary to the first acknowledged write: {:.2} s",
        times[times.len() / 2].as_secs_f64()
    );
}

/// One cluster, one proxy with default failover settings, one crash.
async fn one_round() -> (Duration, Duration) {
    let cluster = tokio::task::spawn_blocking(|| LocalCluster::start(2))
        .await
        .expect("start task")
        .expect("cluster");
    cluster
        .psql(
            cluster.primary(),
            APP_DATABASE,
            "CREATE TABLE outage (id serial PRIMARY KEY, at timestamptz DEFAULT now()); \
             GRANT ALL ON outage, outage_id_seq TO app",
        )
        .expect("create table");
    let yaml = pgsplit::demo::config_yaml(&cluster, "127.0.0.1:0", "");
    let config = Config::from_yaml(&yaml, &|_| None).expect("config");
    let proxy = Proxy::bind(config).await.expect("bind");
    let addr = proxy.local_addr().expect("address");
    let shared = proxy.shared();
    tokio::spawn(proxy.run(std::future::pending()));

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let url = format!("postgresql://{APP_USER}:{APP_PASSWORD}@{addr}/{APP_DATABASE}");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, commits, url) = (stop.clone(), commits.clone(), url.clone());
            tokio::spawn(async move {
                let mut client = None;
                while !stop.load(Ordering::Relaxed) {
                    let Some(db) = client
                        .as_ref()
                        .filter(|c: &&tokio_postgres::Client| !c.is_closed())
                    else {
                        client = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                            Ok((db, connection)) => {
                                tokio::spawn(connection);
                                Some(db)
                            }
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                None
                            }
                        };
                        continue;
                    };
                    if db
                        .batch_execute("INSERT INTO outage DEFAULT VALUES")
                        .await
                        .is_ok()
                    {
                        commits
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Instant::now());
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let primary = cluster.primary().clone();
    tokio::task::block_in_place(|| cluster.kill_node(&primary)).expect("kill the primary");
    // Measured from when the stop command returned: the server is gone.
    let killed = Instant::now();
    let killed_at = std::time::SystemTime::now();
    let (first_write, failed_over) = loop {
        let first = commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .find(|&t| t > killed);
        if let (Some(first), Some(report)) = (first, shared.topology.load().last_failover.clone()) {
            let finished = report
                .finished_at
                .duration_since(killed_at)
                .unwrap_or_default();
            break (first - killed, finished);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no failover within a minute"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    (first_write, failed_over)
}
