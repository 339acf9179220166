//! The replication monitor: every `monitor.interval` it checks each node
//! (reachable, in recovery or not, WAL positions, `pg_stat_replication`),
//! works out roles, health and lag, and publishes a new [`Topology`] that
//! routing reads without locks.

pub mod health;
pub mod lag;
pub mod probe;
pub mod roles;
pub mod topology;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;

use crate::backend::query_client::QueryTarget;
use crate::backend::tls::ServerTls;
use crate::config::{Config, MonitorConfig, Role};
use health::{Health, Thresholds};
use lag::WalHistory;
use probe::{Observation, Probe};
use roles::resolve_primary;
pub use topology::{NodeState, NodeStatus, ReplicationRow, Topology};

/// The primary's WAL history is kept at least this long, for lag in time.
const MIN_HISTORY: Duration = Duration::from_secs(60);

/// The topology shared between the monitor and the data path.
pub type SharedTopology = Arc<ArcSwap<Topology>>;

/// Checks the nodes and publishes what it finds.
pub struct Monitor {
    settings: MonitorConfig,
    thresholds: Thresholds,
    probes: Vec<Probe>,
    health: Vec<Health>,
    history: WalHistory,
    /// The primary whose WAL `history` records.
    history_of: Option<usize>,
    topology: SharedTopology,
}

impl Monitor {
    /// A monitor for `config`'s nodes, or `None` without `monitor:` credentials.
    pub fn new(
        config: &Config,
        tls: Option<ServerTls>,
        topology: SharedTopology,
    ) -> Option<Monitor> {
        let settings = config.monitor.clone()?;
        let probes = config
            .nodes
            .iter()
            .map(|node| {
                Probe::new(QueryTarget {
                    node_name: node.name.clone(),
                    host: node.host.clone(),
                    port: node.port,
                    user: settings.user.clone(),
                    password: settings.password.clone(),
                    database: "postgres".to_owned(),
                    application_name: "pgsplit-monitor",
                    tls: tls.clone(),
                })
            })
            .collect();
        Some(Monitor {
            thresholds: Thresholds {
                fail_after: settings.fail_after,
                recover_after: settings.recover_after,
                max_lag_bytes: config.routing.max_lag_bytes as u64,
                max_lag: config.routing.max_lag,
            },
            health: vec![Health::default(); config.nodes.len()],
            settings,
            probes,
            history: WalHistory::default(),
            history_of: None,
            topology,
        })
    }

    /// Checks every node each interval, forever; `on_down` is told when a
    /// node goes down (its pooled connections are useless now).
    pub async fn run(mut self, on_down: impl Fn(usize)) {
        let mut interval = tokio::time::interval(self.settings.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let previous = self.topology.load_full();
            let next = self.round(&previous).await;
            log_changes(&previous, &next);
            for (index, node) in next.nodes.iter().enumerate() {
                if node.state == NodeState::Down && previous.nodes[index].state != NodeState::Down {
                    on_down(index);
                }
            }
            self.topology.store(Arc::new(next));
        }
    }

    /// One round: check all nodes at once, then work out the new topology.
    async fn round(&mut self, previous: &Topology) -> Topology {
        let timeout = self.settings.timeout;
        let results =
            futures_util::future::join_all(self.probes.iter_mut().map(|p| p.check(timeout))).await;
        let reported: Vec<Option<Role>> = results
            .iter()
            .map(|r| {
                r.as_ref().ok().map(|o| {
                    if o.in_recovery {
                        Role::Replica
                    } else {
                        Role::Primary
                    }
                })
            })
            .collect();
        let decision = resolve_primary(previous.primary, &reported, None);
        self.track_primary_wal(decision.primary, &results);
        let now = Instant::now();
        let nodes = results
            .into_iter()
            .enumerate()
            .map(|(index, result)| self.node_status(index, result, &previous.nodes[index], now))
            .collect();
        Topology {
            nodes,
            primary: decision.primary,
            competing_primaries: decision.competing,
            checked_at: Some(SystemTime::now()),
        }
    }

    /// Records the primary's WAL position, starting afresh when the primary changes.
    fn track_primary_wal(
        &mut self,
        primary: Option<usize>,
        results: &[anyhow::Result<Observation>],
    ) {
        if primary != self.history_of {
            self.history.clear();
            self.history_of = primary;
        }
        let Some(p) = primary else { return };
        if let Some(Ok(Observation {
            wal_lsn: Some(lsn),
            at,
            ..
        })) = results.get(p)
        {
            self.history.record(*at, *lsn);
        }
        let keep = MIN_HISTORY.max(self.thresholds.max_lag * 4);
        self.history.trim(Instant::now(), keep);
    }

    fn node_status(
        &mut self,
        index: usize,
        result: anyhow::Result<Observation>,
        previous: &NodeStatus,
        now: Instant,
    ) -> NodeStatus {
        let health = &mut self.health[index];
        match result {
            Ok(observation) => {
                let role = if observation.in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                };
                let lag = match (role, observation.replay_lsn) {
                    (Role::Replica, Some(replay)) => self.history.lag(replay, now),
                    _ => None,
                };
                health.succeeded(lag, &self.thresholds);
                if role == Role::Primary {
                    health.clear_lag();
                }
                NodeStatus {
                    name: previous.name.clone(),
                    role,
                    state: health.state(),
                    wal_lsn: observation.wal_lsn,
                    replay_lsn: observation.replay_lsn,
                    lag_bytes: lag.map(|l| l.bytes),
                    lag_seconds: lag.map(|l| l.seconds),
                    last_replayed_commit_age: observation.last_replayed_commit_age,
                    check_latency: Some(observation.latency),
                    last_error: None,
                    replication: observation.replication,
                }
            }
            Err(error) => NodeStatus {
                state: health.failed(&self.thresholds),
                check_latency: None,
                last_error: Some(format!("{error:#}")),
                ..previous.clone()
            },
        }
    }
}

/// Logs what changed between two rounds, for operators following the log.
fn log_changes(before: &Topology, after: &Topology) {
    for (old, new) in before.nodes.iter().zip(&after.nodes) {
        if old.state != new.state {
            match new.state {
                NodeState::Down => {
                    tracing::warn!(node = %new.name, error = new.last_error.as_deref().unwrap_or(""), "node is down")
                }
                NodeState::Lagging => {
                    tracing::warn!(node = %new.name, lag_bytes = new.lag_bytes, lag_seconds = new.lag_seconds, "replica is lagging; it gets no reads")
                }
                NodeState::Up => {
                    tracing::info!(node = %new.name, was = old.state.as_str(), "node is up")
                }
            }
        }
        if old.role != new.role {
            tracing::warn!(node = %new.name, role = ?new.role, "node changed role");
        }
    }
    if before.primary != after.primary {
        let name = after.primary.map(|p| after.nodes[p].name.as_str());
        tracing::warn!(
            primary = name.unwrap_or("none"),
            "writes now go to a different primary"
        );
    }
    if after.split_brain() && !before.split_brain() {
        let names: Vec<&str> = after
            .competing_primaries
            .iter()
            .map(|&i| after.nodes[i].name.as_str())
            .collect();
        tracing::error!(nodes = ?names, "split brain: several nodes claim to be primary; writes are refused");
    }
}
