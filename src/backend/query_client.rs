//! Query-level connections (`tokio-postgres`) for pgsplit's own queries:
//! health checks, replication positions, the function catalog. They travel
//! over the same TCP and TLS set-up as pooled connections, so `server_tls`
//! applies to them too.

use std::time::Duration;

use super::connection::open_stream;
use super::tls::ServerTls;
use crate::config::Config;

/// Where and as whom to open a query client.
#[derive(Clone)]
pub struct QueryTarget {
    /// The node's name from the config, for errors and logs.
    pub node_name: String,
    /// Host name or IP address to connect to.
    pub host: String,
    /// TCP port to connect to.
    pub port: u16,
    /// The role to log in as (the `monitor` user, say).
    pub user: String,
    /// That role's password, in clear text.
    pub password: String,
    /// The database to connect to.
    pub database: String,
    /// Shown in `pg_stat_activity`, so operators can tell pgsplit's queries apart.
    pub application_name: &'static str,
    /// TLS towards the node, as for pooled connections (`server_tls`).
    pub tls: Option<ServerTls>,
}

impl QueryTarget {
    /// Every node of `config`, as the `monitor` user (none without one).
    pub fn monitor_targets(
        config: &Config,
        tls: Option<ServerTls>,
        database: &str,
        application_name: &'static str,
    ) -> Vec<QueryTarget> {
        let Some(monitor) = &config.monitor else {
            return Vec::new();
        };
        config
            .nodes
            .iter()
            .map(|node| QueryTarget {
                node_name: node.name.clone(),
                host: node.host.clone(),
                port: node.port,
                user: monitor.user.clone(),
                password: monitor.password.clone(),
                database: database.to_owned(),
                application_name,
                tls: tls.clone(),
            })
            .collect()
    }
}

/// Opens a client within `timeout`; the connection's I/O runs on its own task.
pub async fn connect(
    target: &QueryTarget,
    timeout: Duration,
) -> anyhow::Result<tokio_postgres::Client> {
    let opening = async {
        let stream = open_stream(
            &target.host,
            target.port,
            &target.node_name,
            target.tls.as_ref(),
            // Every query of pgsplit's own runs under its own timeout.
            Duration::ZERO,
        )
        .await?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(&target.user)
            .password(&target.password)
            .dbname(&target.database)
            .application_name(target.application_name)
            // TLS, if any, is already in place on `stream`.
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        let (client, connection) = config.connect_raw(stream, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "query client connection ended");
            }
        });
        anyhow::Ok(client)
    };
    tokio::time::timeout(timeout, opening)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {timeout:?}"))?
}
