//! The replication monitor: every `monitor.interval` it checks each node
//! (reachable, in recovery or not, WAL positions, `pg_stat_replication`,
//! the WAL receiver), works out roles, health and lag, publishes a new
//! [`Topology`] that routing reads without locks, and carries out failover,
//! switchover and rejoining (see `failover`).

pub mod actions;
pub mod conninfo;
pub mod control;
pub mod events;
pub mod failover;
pub mod faults;
pub mod health;
pub mod hooks;
pub mod lag;
pub mod probe;
pub mod roles;
pub mod topology;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::backend::query_client::QueryTarget;
use crate::backend::tls::ServerTls;
use crate::config::{Config, FailoverConfig, MonitorConfig, NodeConfig, Role};
use crate::proxy::Shared;
use control::Envelope;
pub use control::{MonitorHandle, Request};
use health::{Health, Thresholds};
use lag::WalHistory;
use probe::{Observation, Probe};
use roles::resolve_primary;
pub use topology::{FailoverReport, NodeState, NodeStatus, ReplicationRow, Topology, WalReceiver};

/// The primary's WAL history is kept at least this long, for lag in time.
const MIN_HISTORY: Duration = Duration::from_secs(60);

/// The topology shared between the monitor and the data path.
pub type SharedTopology = Arc<ArcSwap<Topology>>;

/// Checks the nodes, publishes what it finds, and changes the primary
/// when it must. It alone decides roles, so nothing else needs a lock.
pub struct Monitor {
    shared: Arc<Shared>,
    settings: MonitorConfig,
    failover: FailoverConfig,
    nodes: Vec<NodeConfig>,
    /// Each node as the monitor's user, for actions (promote, follow).
    targets: Vec<QueryTarget>,
    thresholds: Thresholds,
    probes: Vec<Probe>,
    health: Vec<Health>,
    /// Since when each node has failed every check.
    unreachable_since: Vec<Option<Instant>>,
    /// Former primaries kept out until rejoined.
    fenced: Vec<bool>,
    /// Replicas that could not follow a new primary.
    needs_rejoin: Vec<bool>,
    /// The node pgsplit promoted last: it keeps the role if the old primary
    /// comes back claiming it too.
    promoted: Option<usize>,
    history: WalHistory,
    /// The primary whose WAL `history` records.
    history_of: Option<usize>,
    requests: mpsc::Receiver<Envelope>,
}

impl Monitor {
    /// A monitor for the proxy's nodes, or `None` without `monitor:` credentials.
    pub fn new(
        shared: Arc<Shared>,
        tls: Option<ServerTls>,
        requests: mpsc::Receiver<Envelope>,
    ) -> Option<Monitor> {
        let config = shared.config();
        let settings = config.monitor.clone()?;
        let targets = QueryTarget::monitor_targets(&config, tls, "postgres", "pgsplit-monitor");
        let count = targets.len();
        Some(Monitor {
            thresholds: Thresholds {
                fail_after: settings.fail_after,
                recover_after: settings.recover_after,
                max_lag_bytes: config.routing.max_lag_bytes as u64,
                max_lag: config.routing.max_lag,
            },
            probes: targets.iter().cloned().map(Probe::new).collect(),
            targets,
            health: vec![Health::default(); count],
            unreachable_since: vec![None; count],
            fenced: vec![false; count],
            needs_rejoin: vec![false; count],
            promoted: None,
            failover: config.failover.clone(),
            nodes: config.nodes.clone(),
            settings,
            history: WalHistory::default(),
            history_of: None,
            requests,
            shared,
        })
    }

    /// Checks every node each interval and serves operators' requests
    /// between rounds, forever.
    pub async fn run(mut self) {
        let mut interval = tokio::time::interval(self.settings.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {
                    let next = self.round(&self.topology()).await;
                    self.publish(next);
                    self.fail_over_if_needed().await;
                }
                Some(envelope) = self.requests.recv() => {
                    let outcome = self.handle(envelope.request).await;
                    let _ = envelope.reply.send(outcome);
                }
            }
        }
    }

    /// The topology as last published.
    fn topology(&self) -> Arc<Topology> {
        self.shared.topology.load_full()
    }

    /// Publishes `next`: logs and reports what changed, and closes the idle
    /// connections of nodes that may no longer be used.
    fn publish(&self, next: Topology) {
        let previous = self.topology();
        events::report_changes(
            &self.shared.events,
            &previous,
            &next,
            self.failover.notify_command.as_deref(),
            &self.nodes,
        );
        for (index, node) in next.nodes.iter().enumerate() {
            let usable = |state| !matches!(state, NodeState::Down | NodeState::Fenced);
            if !usable(node.state) && usable(previous.nodes[index].state) {
                self.shared.pools.close_idle(index);
            }
        }
        self.shared.topology.store(Arc::new(next));
    }

    /// Publishes the current topology changed by `edit`.
    fn publish_with(&self, edit: impl FnOnce(&mut Topology)) {
        let mut next = (*self.topology()).clone();
        edit(&mut next);
        self.publish(next);
    }

    /// One round: check all nodes at once, then work out the new topology.
    async fn round(&mut self, previous: &Topology) -> Topology {
        let timeout = self.settings.timeout;
        let faults = &self.shared.faults;
        let checks = self
            .probes
            .iter_mut()
            .enumerate()
            .map(|(index, probe)| async move {
                if faults.is_blocked(index) {
                    return Err(anyhow::anyhow!("check blocked by fault injection"));
                }
                probe.check(timeout).await
            });
        let results = futures_util::future::join_all(checks).await;
        let now = Instant::now();
        // A fenced node's claims do not count: it is out until rejoined.
        let reported: Vec<Option<Role>> = results
            .iter()
            .enumerate()
            .map(|(index, result)| match result {
                Ok(o) if !self.fenced[index] => Some(if o.in_recovery {
                    Role::Replica
                } else {
                    Role::Primary
                }),
                _ => None,
            })
            .collect();
        let decision = resolve_primary(previous.primary, &reported, self.promoted);
        self.track_primary_wal(decision.primary, &results);
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
            ..previous.clone()
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
        let mut status = match result {
            Ok(observation) => {
                self.unreachable_since[index] = None;
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
                    receiver: observation.receiver,
                }
            }
            Err(error) => {
                self.unreachable_since[index].get_or_insert(now);
                NodeStatus {
                    state: health.failed(&self.thresholds),
                    check_latency: None,
                    last_error: Some(format!("{error:#}")),
                    ..previous.clone()
                }
            }
        };
        if self.nodes[index].removed {
            status.state = NodeState::Removed;
        } else if self.fenced[index] {
            status.state = NodeState::Fenced;
        } else if self.needs_rejoin[index] {
            status.state = NodeState::NeedsRejoin;
        }
        status
    }

    /// Takes on a reloaded configuration: checks nodes it added, stops
    /// checking nodes it removed, and uses its lag and failover settings.
    fn follow_config(&mut self, config: &Config) {
        self.failover = config.failover.clone();
        self.thresholds.max_lag_bytes = config.routing.max_lag_bytes as u64;
        self.thresholds.max_lag = config.routing.max_lag;
        let tls = self.targets.first().and_then(|t| t.tls.clone());
        let targets = QueryTarget::monitor_targets(config, tls, "postgres", "pgsplit-monitor");
        for target in targets.iter().skip(self.probes.len()) {
            self.probes.push(Probe::new(target.clone()));
            self.health.push(Health::default());
            self.unreachable_since.push(None);
            self.fenced.push(false);
            self.needs_rejoin.push(false);
        }
        self.targets = targets;
        self.nodes = config.nodes.clone();
        self.publish_with(|t| t.follow_config(config));
    }

    /// How long node `index` has failed every check, if it has.
    fn unreachable_for(&self, index: usize) -> Option<Duration> {
        self.unreachable_since[index].map(|since| since.elapsed())
    }

    /// The node named `name`.
    fn node_index(&self, name: &str) -> Result<usize, String> {
        self.nodes
            .iter()
            .position(|node| node.name == name)
            .ok_or_else(|| format!("there is no node named {name:?}"))
    }
}
