//! One node's check: a long-lived query client with the monitor's
//! credentials (reopened when it breaks) and the queries that tell the
//! node's role and WAL positions.

use std::time::{Duration, Instant};

use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Row, Statement};

use super::topology::{ReplicationRow, WalReceiver};
use crate::backend::query_client::{self, QueryTarget};

/// Role and positions in one round trip, on a primary or a replica.
const STATUS_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END, \
     pg_last_wal_replay_lsn(), \
     EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8";

/// The primary's view of its streaming replicas.
const REPLICATION_SQL: &str = "SELECT application_name, client_addr::text, state, \
     sent_lsn, write_lsn, flush_lsn, replay_lsn, \
     EXTRACT(EPOCH FROM write_lag)::float8, EXTRACT(EPOCH FROM flush_lag)::float8, \
     EXTRACT(EPOCH FROM replay_lag)::float8, sync_state \
     FROM pg_stat_replication ORDER BY application_name";

/// A replica's WAL receiver and its timeout; one row even without a receiver.
const RECEIVER_SQL: &str = "SELECT r.status, \
     EXTRACT(EPOCH FROM now() - r.last_msg_receipt_time)::float8, r.sender_host, r.sender_port, \
     (SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'wal_receiver_timeout') \
     FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// What one successful check saw.
#[derive(Debug, Clone)]
pub struct Observation {
    /// `pg_is_in_recovery()`: the node is a replica.
    pub in_recovery: bool,
    /// Primary: current WAL position; replica: last received position.
    pub wal_lsn: Option<u64>,
    /// Replica: last replayed position (`pg_last_wal_replay_lsn()`).
    pub replay_lsn: Option<u64>,
    /// Replica: seconds since the last replayed transaction committed on the primary.
    pub last_replayed_commit_age: Option<f64>,
    /// Primary: its `pg_stat_replication`; empty on a replica.
    pub replication: Vec<ReplicationRow>,
    /// Replica: its WAL receiver; `None` on a primary.
    pub receiver: Option<WalReceiver>,
    /// How long the whole check took, connecting included.
    pub latency: Duration,
    /// When the check finished (for lag in time).
    pub at: Instant,
}

/// An open monitor connection with its statements prepared once.
struct Connected {
    client: Client,
    status: Statement,
    replication: Statement,
    receiver: Statement,
}

/// Checks one node, keeping its connection between rounds.
pub struct Probe {
    target: QueryTarget,
    connected: Option<Connected>,
}

impl Probe {
    /// A probe for `target`; it connects on its first check.
    pub fn new(target: QueryTarget) -> Probe {
        Probe {
            target,
            connected: None,
        }
    }

    /// Runs the checks within `timeout`; on any failure the connection is
    /// dropped so the next round starts afresh.
    pub async fn check(&mut self, timeout: Duration) -> anyhow::Result<Observation> {
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, self.run(timeout)).await;
        let result = match result {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("no answer within {timeout:?}")),
        };
        match result {
            Ok(mut observation) => {
                observation.latency = started.elapsed();
                Ok(observation)
            }
            Err(error) => {
                self.connected = None;
                Err(error)
            }
        }
    }

    async fn run(&mut self, timeout: Duration) -> anyhow::Result<Observation> {
        if self.connected.as_ref().is_none_or(|c| c.client.is_closed()) {
            let client = query_client::connect(&self.target, timeout).await?;
            self.connected = Some(Connected {
                status: client.prepare(STATUS_SQL).await?,
                replication: client.prepare(REPLICATION_SQL).await?,
                receiver: client.prepare(RECEIVER_SQL).await?,
                client,
            });
        }
        let Some(Connected {
            client,
            status,
            replication,
            receiver,
        }) = self.connected.as_ref()
        else {
            anyhow::bail!("no connection");
        };
        let row = client.query_one(status, &[]).await?;
        let in_recovery: bool = row.try_get(0)?;
        let (replication, receiver) = if in_recovery {
            let row = client.query_one(receiver, &[]).await?;
            (Vec::new(), Some(wal_receiver(&row)?))
        } else {
            let rows = client.query(replication, &[]).await?;
            let rows = rows.iter().map(replication_row).collect::<Result<_, _>>()?;
            (rows, None)
        };
        Ok(Observation {
            in_recovery,
            wal_lsn: lsn(&row, 1)?,
            replay_lsn: lsn(&row, 2)?,
            last_replayed_commit_age: row.try_get(3)?,
            replication,
            receiver,
            latency: Duration::ZERO,
            at: Instant::now(),
        })
    }
}

fn lsn(row: &Row, index: usize) -> Result<Option<u64>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<PgLsn>>(index)?.map(u64::from))
}

fn wal_receiver(row: &Row) -> Result<WalReceiver, tokio_postgres::Error> {
    Ok(WalReceiver {
        status: row.try_get(0)?,
        silence_seconds: row.try_get(1)?,
        sender_host: row.try_get(2)?,
        sender_port: row.try_get(3)?,
        timeout_seconds: row.try_get::<_, Option<f64>>(4)?.unwrap_or(60.0),
    })
}

fn replication_row(row: &Row) -> Result<ReplicationRow, tokio_postgres::Error> {
    Ok(ReplicationRow {
        application_name: row.try_get(0)?,
        client_addr: row.try_get(1)?,
        state: row.try_get(2)?,
        sent_lsn: lsn(row, 3)?,
        write_lsn: lsn(row, 4)?,
        flush_lsn: lsn(row, 5)?,
        replay_lsn: lsn(row, 6)?,
        write_lag_seconds: row.try_get(7)?,
        flush_lag_seconds: row.try_get(8)?,
        replay_lag_seconds: row.try_get(9)?,
        sync_state: row.try_get(10)?,
    })
}
