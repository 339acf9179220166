//! What failover and switchover do on the servers, each over a fresh
//! connection with the monitor's credentials: promote a replica, point a
//! replica at a new primary, wait for WAL positions, end client sessions.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use super::conninfo;
use crate::backend::query_client::{self, QueryTarget};
use crate::sql::quote_literal;

/// How long to connect to a node for an action.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often positions and receiver states are polled.
const POLL: Duration = Duration::from_millis(50);

async fn connect(target: &QueryTarget) -> anyhow::Result<Client> {
    query_client::connect(target, CONNECT_TIMEOUT)
        .await
        .with_context(|| format!("connecting to {}", target.node_name))
}

async fn lsn(client: &Client, sql: &str) -> anyhow::Result<Option<u64>> {
    let row = client.query_one(sql, &[]).await?;
    Ok(row.try_get::<_, Option<PgLsn>>(0)?.map(u64::from))
}

/// Promotes `target`: lets it replay what it received (up to `replay_wait`;
/// promotion replays the rest anyway), runs `pg_promote(wait => true)`, and
/// checks it left recovery.
pub async fn promote(target: &QueryTarget, replay_wait: Duration) -> anyhow::Result<()> {
    let client = connect(target).await?;
    let deadline = Instant::now() + replay_wait;
    loop {
        let received = lsn(&client, "SELECT pg_last_wal_receive_lsn()").await?;
        let replayed = lsn(&client, "SELECT pg_last_wal_replay_lsn()").await?;
        if replayed >= received || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let row = client
        .query_one("SELECT pg_promote(wait => true, wait_seconds => 60)", &[])
        .await
        .with_context(|| format!("pg_promote() on {}", target.node_name))?;
    if !row.try_get::<_, bool>(0)? {
        bail!(
            "pg_promote() on {} did not finish within 60 s",
            target.node_name
        );
    }
    if in_recovery(target).await? {
        bail!(
            "{} is still in recovery after pg_promote()",
            target.node_name
        );
    }
    Ok(())
}

/// Whether the node is a replica (in recovery).
pub async fn in_recovery(target: &QueryTarget) -> anyhow::Result<bool> {
    let client = connect(target).await?;
    Ok(client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await?
        .try_get(0)?)
}

/// The primary's current WAL position.
pub async fn current_wal_lsn(target: &QueryTarget) -> anyhow::Result<u64> {
    let client = connect(target).await?;
    lsn(&client, "SELECT pg_current_wal_lsn()")
        .await?
        .context("no WAL position")
}

/// Waits until the replica has replayed `position`.
pub async fn wait_replayed(
    target: &QueryTarget,
    position: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = connect(target).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let replayed = lsn(&client, "SELECT pg_last_wal_replay_lsn()").await?;
        if replayed.is_some_and(|r| r >= position) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} replayed only up to {} of {} within {timeout:?}",
                target.node_name,
                crate::lsn::format(replayed.unwrap_or(0)),
                crate::lsn::format(position)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends every client session on the node (not its WAL senders), so nothing
/// keeps writing to a primary being replaced. Returns how many ended.
pub async fn terminate_clients(target: &QueryTarget) -> anyhow::Result<i64> {
    let client = connect(target).await?;
    let row = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// Points a replica at a new primary (`primary_conninfo` with the new host
/// and port, the same replication slot created there first) and waits
/// until it streams from it. An error means it could not follow.
pub async fn follow(
    replica: &QueryTarget,
    primary: &QueryTarget,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = connect(replica).await?;
    let row = client
        .query_one(
            "SELECT current_setting('primary_conninfo'), current_setting('primary_slot_name')",
            &[],
        )
        .await?;
    let old: String = row.try_get(0)?;
    let slot: String = row.try_get(1)?;
    if !slot.is_empty() {
        let upstream = connect(primary).await?;
        upstream
            .execute(
                "SELECT pg_create_physical_replication_slot($1) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .with_context(|| format!("creating slot {slot} on {}", primary.node_name))?;
    }
    let new = conninfo::with_upstream(&old, &primary.host, primary.port)
        .context("primary_conninfo is not in key=value form")?;
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET primary_conninfo = {}",
            quote_literal(&new)
        ))
        .await?;
    client.execute("SELECT pg_reload_conf()", &[]).await?;
    let deadline = Instant::now() + timeout;
    loop {
        let row = client
            .query_opt(
                "SELECT status, sender_host, sender_port FROM pg_stat_wal_receiver",
                &[],
            )
            .await?;
        // The receiver reports the host as written in the conninfo pgsplit set.
        let streaming_from_new = row.is_some_and(|row| {
            let text = |i| row.try_get::<_, Option<String>>(i).ok().flatten();
            text(0).as_deref() == Some("streaming")
                && text(1).as_deref() == Some(primary.host.as_str())
                && row.try_get::<_, Option<i32>>(2).ok().flatten() == Some(i32::from(primary.port))
        });
        if streaming_from_new {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "{} does not stream from {} within {timeout:?} (it may have WAL past the promotion point)",
                replica.node_name,
                primary.node_name
            );
        }
        tokio::time::sleep(POLL).await;
    }
}
