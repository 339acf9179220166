//! `pgsplit demo`: a throwaway primary and two streaming replicas with the
//! proxy in front, so a newcomer can try pgsplit with one command.

use std::future::Future;

use anyhow::Context as _;

use crate::cluster::{
    LocalCluster, APP_DATABASE, APP_MD5_PASSWORD, APP_MD5_USER, APP_PASSWORD, APP_USER, SUPERUSER,
    SUPERUSER_PASSWORD,
};
use crate::config::Config;
use crate::proxy::Proxy;

/// A pgsplit config for `cluster`, listening on `listen`, with `extra`
/// appended as further top-level YAML keys (for example `pool: {mode: session}`).
pub fn config_yaml(cluster: &LocalCluster, listen: &str, extra: &str) -> String {
    let mut yaml = format!("listen: \"{listen}\"\nadmin_listen: \"127.0.0.1:0\"\nnodes:\n");
    for (index, node) in cluster.nodes().enumerate() {
        let role = if index == 0 { "primary" } else { "replica" };
        yaml.push_str(&format!(
            "  - {{ name: {}, host: 127.0.0.1, port: {}, role: {role} }}\n",
            node.name, node.port
        ));
    }
    yaml.push_str(&format!(
        "users:\n  - {{ name: {APP_USER}, password: \"{APP_PASSWORD}\" }}\n  - {{ name: {APP_MD5_USER}, password: \"{APP_MD5_PASSWORD}\" }}\n  - {{ name: {SUPERUSER}, password: \"{SUPERUSER_PASSWORD}\" }}\nmonitor: {{ user: {SUPERUSER}, password: \"{SUPERUSER_PASSWORD}\" }}\n"
    ));
    yaml.push_str(extra);
    yaml
}

/// Starts the cluster and the proxy, prints how to connect, and runs until
/// `shutdown` completes; the cluster is stopped and deleted afterwards.
pub async fn run(listen: &str, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    println!("starting a PostgreSQL primary and two streaming replicas...");
    let cluster = tokio::task::spawn_blocking(|| LocalCluster::start(2))
        .await
        .context("cluster start-up task failed")??;
    let yaml = config_yaml(&cluster, listen, "");
    let config = Config::from_yaml(&yaml, &|_| None)?;
    let proxy = Proxy::bind(config).await?;
    let address = proxy.local_addr()?;
    println!();
    for node in cluster.nodes() {
        println!(
            "  {:<4} PostgreSQL on 127.0.0.1:{} ({})",
            node.name,
            node.port,
            node.data_dir.display()
        );
    }
    println!("  pgsplit on {address}\n");
    println!("Connect with:\n\n  psql \"postgresql://{APP_USER}:{APP_PASSWORD}@{address}/{APP_DATABASE}\"\n");
    println!("Press Ctrl-C to stop; everything is removed on exit.");
    let result = proxy.run(shutdown).await;
    drop(cluster);
    result
}
