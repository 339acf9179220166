//! Routing: which node serves a transaction.
//!
//! The session asks once per transaction (the unit of transaction pooling),
//! saying whether the transaction needs the primary or may be served by a
//! replica; the router applies the session's route, tags, the
//! `primary_reads` policy and load balancing.

pub mod classify;
pub mod functions;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

use crate::config::{Config, LoadBalance, PrimaryReads, Route, RoutingConfig};
use crate::monitor::{NodeState, SharedTopology, Topology};
use crate::protocol::error::{PgError, SqlState};

/// How long a node that refused a connection is left out of read routing
/// (until the replication monitor tracks node health).
const FAILED_NODE_BACKOFF: Duration = Duration::from_secs(2);

/// Candidate nodes for one read. Clusters have a handful of nodes, so the
/// list stays on the stack: a read is routed per transaction.
type Candidates = SmallVec<[usize; 8]>;

/// What a unit of work needs from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// It writes, locks, or could not be classified.
    Primary,
    /// A replica may serve it.
    Read,
}

/// A session's routing preferences: from config rules, then `SET pgsplit.route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRoute {
    /// Where the session's transactions go.
    pub route: Route,
    /// Reads go only to replicas carrying this tag.
    pub tag: Option<String>,
}

/// The node for a unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Index of the node in `config.nodes`.
    pub node: usize,
    /// A replica not yet known to have replayed this WAL position, which the
    /// client's read must see: check on the connection before using it.
    pub verify_lsn: Option<u64>,
}

impl Pick {
    fn at(node: usize) -> Pick {
        Pick {
            node,
            verify_lsn: None,
        }
    }
}

/// Why no node can take a unit of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoNode {
    /// Several nodes claim to be primary; writes wait until one steps down.
    SplitBrain(Vec<String>),
    /// No node is primary right now.
    NoPrimary,
    /// A failover or switchover is moving the primary role.
    ChangingPrimary,
    /// No replica can serve the read and `primary_reads` is `never`.
    NoReplica,
}

impl NoNode {
    /// Whether waiting may help: a new primary may be on its way.
    pub fn is_transient(&self) -> bool {
        matches!(self, NoNode::NoPrimary | NoNode::ChangingPrimary)
    }

    /// What the client is told.
    pub fn to_error(&self) -> PgError {
        let message = match self {
            NoNode::SplitBrain(nodes) => format!(
                "pgsplit: nodes {} all claim to be primary (split brain); writes are refused until only one does",
                nodes.join(", ")
            ),
            NoNode::NoPrimary => "pgsplit: no primary is available right now".to_owned(),
            NoNode::ChangingPrimary => {
                "pgsplit: the primary is being replaced (failover or switchover)".to_owned()
            }
            NoNode::NoReplica => {
                "pgsplit: no replica can serve this read and routing.primary_reads is never"
                    .to_owned()
            }
        };
        PgError::error(SqlState::CONNECTION_FAILURE, message)
    }
}

/// Per-node routing state that changes on the data path and survives
/// reloads.
#[derive(Debug, Default)]
struct NodeActivity {
    in_flight: AtomicUsize,
    /// Milliseconds since the router started until which the node is skipped.
    skip_until_ms: AtomicU64,
    /// The highest replay position seen on the node by a session's own
    /// check, which may be newer than the monitor's.
    replay_lsn_seen: AtomicU64,
}

/// A node as routing sees it.
struct NodeLoad {
    name: String,
    weight: u64,
    tags: Vec<String>,
    activity: Arc<NodeActivity>,
}

/// The routing settings and nodes in force; a reload replaces them whole.
struct Plan {
    routing: Arc<RoutingConfig>,
    /// Indexed like the config's nodes (removed nodes keep their place).
    nodes: Vec<NodeLoad>,
}

impl Plan {
    /// The plan for `config`, keeping the activity of nodes `previous` had.
    fn new(config: &Config, previous: Option<&Plan>) -> Plan {
        let nodes = config
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| NodeLoad {
                name: node.name.clone(),
                weight: u64::from(node.weight.max(1)),
                tags: node.tags.clone(),
                activity: previous
                    .and_then(|p| p.nodes.get(index))
                    .map(|n| n.activity.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Plan {
            routing: Arc::new(config.routing.clone()),
            nodes,
        }
    }

    fn weight(&self, node: usize) -> u64 {
        self.nodes.get(node).map_or(1, |n| n.weight)
    }

    fn in_flight(&self, node: usize) -> u64 {
        self.nodes
            .get(node)
            .map_or(0, |n| n.activity.in_flight.load(Ordering::Relaxed) as u64)
    }
}

/// Routing events worth an operator's attention, counted since start.
#[derive(Debug, Default)]
pub struct RoutingCounters {
    /// Units sent to the primary because a statement could not be classified.
    pub unparsed: AtomicU64,
    /// Reads that went elsewhere because their replica gave no connection.
    pub replica_unavailable: AtomicU64,
    /// Reads sent to the primary because no replica had replayed the
    /// client's last write (read-your-writes).
    pub replica_behind: AtomicU64,
    /// Reads sent to the primary because no replica could serve them at all.
    pub no_replica: AtomicU64,
}

impl RoutingCounters {
    /// The fallback counters with their `reason` label.
    pub fn fallbacks(&self) -> [(&'static str, u64); 3] {
        [
            ("replica_unavailable", &self.replica_unavailable),
            ("replica_behind", &self.replica_behind),
            ("no_replica", &self.no_replica),
        ]
        .map(|(reason, counter)| (reason, counter.load(Ordering::Relaxed)))
    }
}

/// Chooses the node for each transaction.
pub struct Router {
    /// What routing had to work around.
    pub counters: RoutingCounters,
    plan: ArcSwap<Plan>,
    /// Roles and health, from the monitor.
    topology: SharedTopology,
    round_robin: AtomicU64,
    started: Instant,
}

/// Counts a transaction as in flight on a node while it lives.
pub struct InFlight {
    activity: Arc<NodeActivity>,
    node: usize,
}

impl InFlight {
    /// The node the transaction runs on.
    pub fn node(&self) -> usize {
        self.node
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Router {
    /// Routes by `topology`, which starts from the configured roles.
    pub fn new(config: &Config, topology: SharedTopology) -> Router {
        Router {
            plan: ArcSwap::from_pointee(Plan::new(config, None)),
            topology,
            round_robin: AtomicU64::new(0),
            started: Instant::now(),
            counters: RoutingCounters::default(),
        }
    }

    /// Takes on a reloaded configuration (whose nodes keep their places).
    pub fn reload(&self, config: &Config) {
        let plan = Plan::new(config, Some(&self.plan.load()));
        self.plan.store(Arc::new(plan));
    }

    /// The node that takes writes right now, if any.
    pub fn primary(&self) -> Option<usize> {
        self.topology.load().primary
    }

    /// The routing settings in force, for the session's consistency and
    /// sticky window.
    pub fn settings(&self) -> Arc<RoutingConfig> {
        self.plan.load().routing.clone()
    }

    /// A node's name, for logs.
    pub fn node_name(&self, node: usize) -> String {
        self.plan
            .load()
            .nodes
            .get(node)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// The default route of a session, from the first matching rule.
    pub fn session_route(&self, user: &str, application_name: Option<&str>) -> SessionRoute {
        let routing = self.settings();
        let rule = routing.rules.iter().find(|rule| {
            rule.user.as_deref().is_none_or(|u| u == user)
                && rule
                    .application_name
                    .as_deref()
                    .is_none_or(|a| Some(a) == application_name)
        });
        match rule {
            Some(rule) => SessionRoute {
                route: rule.route,
                tag: rule.tag.clone(),
            },
            None => SessionRoute {
                route: routing.route,
                tag: None,
            },
        }
    }

    /// Picks the node for a unit of work. `excluded` holds nodes that
    /// already failed for this unit; `min_lsn` is the WAL position a read
    /// must see (the client's last commit, under `read_your_writes`).
    pub fn choose(
        &self,
        need: Need,
        session: &SessionRoute,
        excluded: &[usize],
        min_lsn: Option<u64>,
    ) -> Result<Pick, NoNode> {
        let topology = self.topology.load();
        if need == Need::Primary || session.route == Route::Primary {
            return primary_of(&topology).map(Pick::at);
        }
        let plan = self.plan.load();
        // The clock is read only if some node is being skipped.
        let mut now_ms = None;
        let replicas: Candidates = (0..topology.nodes.len().min(plan.nodes.len()))
            .filter(|&index| {
                let node = &plan.nodes[index];
                topology.is_readable_replica(index)
                    && !excluded.contains(&index)
                    && self.is_not_skipped(node, &mut now_ms)
                    && session
                        .tag
                        .as_ref()
                        .is_none_or(|tag| node.tags.contains(tag))
            })
            .collect();
        let fresh: Candidates = match min_lsn {
            Some(lsn) => replicas
                .iter()
                .copied()
                .filter(|&index| replay_lsn(&plan, &topology, index) >= lsn)
                .collect(),
            None => replicas.clone(),
        };
        let primary = topology
            .primary
            .filter(|&p| !excluded.contains(&p) && topology.nodes[p].state == NodeState::Up);
        let mut candidates = fresh;
        match (plan.routing.primary_reads, primary) {
            (PrimaryReads::Always, Some(p)) if session.tag.is_none() => candidates.push(p),
            (PrimaryReads::Fallback, Some(p)) if candidates.is_empty() && replicas.is_empty() => {
                self.counters.no_replica.fetch_add(1, Ordering::Relaxed);
                return Ok(Pick::at(p));
            }
            _ => {}
        }
        if let Some(node) = self.balance(&plan, &candidates) {
            return Ok(Pick::at(node));
        }
        if min_lsn.is_some() {
            // No replica is known to have the client's writes: check one, or
            // read from the primary whatever `primary_reads` says, since a
            // read must never go back in time.
            return match self.balance(&plan, &replicas) {
                Some(node) => Ok(Pick {
                    node,
                    verify_lsn: min_lsn,
                }),
                None => {
                    self.counters.no_replica.fetch_add(1, Ordering::Relaxed);
                    primary_of(&topology).map(Pick::at)
                }
            };
        }
        Err(NoNode::NoReplica)
    }

    /// Whether `node` is not left out of read routing after a failure;
    /// `now_ms` caches the clock reading across the nodes of one choice.
    fn is_not_skipped(&self, node: &NodeLoad, now_ms: &mut Option<u64>) -> bool {
        let skip_until = node.activity.skip_until_ms.load(Ordering::Relaxed);
        skip_until == 0 || skip_until <= *now_ms.get_or_insert_with(|| self.now_ms())
    }

    /// Notes a replay position a session saw on `node` itself.
    pub fn saw_replay_lsn(&self, node: usize, lsn: u64) {
        if let Some(n) = self.plan.load().nodes.get(node) {
            n.activity.replay_lsn_seen.fetch_max(lsn, Ordering::Relaxed);
        }
    }

    fn balance(&self, plan: &Plan, candidates: &[usize]) -> Option<usize> {
        match candidates {
            [] => None,
            [only] => Some(*only),
            _ => Some(match plan.routing.load_balance {
                LoadBalance::LeastConnections => *candidates.iter().min_by(|&&a, &&b| {
                    // in_flight / weight, compared without division.
                    (plan.in_flight(a) * plan.weight(b)).cmp(&(plan.in_flight(b) * plan.weight(a)))
                })?,
                LoadBalance::RoundRobin => {
                    let ticket = self.round_robin.fetch_add(1, Ordering::Relaxed);
                    weighted_pick(plan, candidates, ticket)
                }
                LoadBalance::Random => weighted_pick(plan, candidates, rand::random::<u64>()),
            }),
        }
    }

    /// Marks a transaction as running on `node` until the guard drops.
    /// A transaction bound for the primary must check the topology's
    /// `changing_primary` after this: a switchover waits for these counts to drop to zero after
    /// announcing itself, so one of the two always sees the other.
    pub fn start_transaction(&self, node: usize) -> InFlight {
        let activity = self
            .plan
            .load()
            .nodes
            .get(node)
            .map(|n| n.activity.clone())
            .unwrap_or_default();
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        InFlight { activity, node }
    }

    /// Transactions running on `node` (or about to).
    pub fn in_flight(&self, node: usize) -> usize {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.plan
            .load()
            .nodes
            .get(node)
            .map_or(0, |n| n.activity.in_flight.load(Ordering::SeqCst))
    }

    /// Leaves a node that could not give a connection out of read routing
    /// for a moment, so every read does not pay for the same failure.
    pub fn node_failed(&self, node: usize) {
        self.counters
            .replica_unavailable
            .fetch_add(1, Ordering::Relaxed);
        let until = self.now_ms() + FAILED_NODE_BACKOFF.as_millis() as u64;
        if let Some(n) = self.plan.load().nodes.get(node) {
            n.activity.skip_until_ms.store(until, Ordering::Relaxed);
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// The candidate that `ticket` lands on when each takes `weight` slots.
fn weighted_pick(plan: &Plan, candidates: &[usize], ticket: u64) -> usize {
    let total: u64 = candidates.iter().map(|&n| plan.weight(n)).sum();
    let mut slot = ticket % total.max(1);
    for &node in candidates {
        let weight = plan.weight(node);
        if slot < weight {
            return node;
        }
        slot -= weight;
    }
    candidates[0]
}

/// The newest replay position known for `node`: the monitor's, or a
/// newer one a session saw on the node itself.
fn replay_lsn(plan: &Plan, topology: &Topology, node: usize) -> u64 {
    let monitored = topology.nodes[node].replay_lsn.unwrap_or(0);
    let seen = plan
        .nodes
        .get(node)
        .map_or(0, |n| n.activity.replay_lsn_seen.load(Ordering::Relaxed));
    monitored.max(seen)
}

/// The primary, or why there is none.
fn primary_of(topology: &Topology) -> Result<usize, NoNode> {
    if topology.changing_primary {
        return Err(NoNode::ChangingPrimary);
    }
    match topology.primary {
        // A primary the monitor cannot reach may still be reachable from
        // here; if not, the write waits for it or its replacement.
        Some(p) => Ok(p),
        None if topology.split_brain() => Err(NoNode::SplitBrain(
            topology
                .competing_primaries
                .iter()
                .map(|&i| topology.nodes[i].name.clone())
                .collect(),
        )),
        None => Err(NoNode::NoPrimary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use arc_swap::ArcSwap;

    /// A router and the topology it follows, for tests that change it.
    fn router_with_topology(extra: &str) -> (Router, SharedTopology) {
        let yaml = format!(
            "nodes:\n  - {{ name: p, host: h, role: primary }}\n  - {{ name: r1, host: h, role: replica }}\n  - {{ name: r2, host: h, role: replica }}\nusers: [{{ name: u, password: p }}]\n{extra}"
        );
        let config = Config::from_yaml(&yaml, &|_| None).unwrap();
        let topology = Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
        (Router::new(&config, topology.clone()), topology)
    }

    fn change(topology: &SharedTopology, edit: impl FnOnce(&mut Topology)) {
        let mut next = (**topology.load()).clone();
        edit(&mut next);
        topology.store(Arc::new(next));
    }

    fn router(extra: &str) -> Router {
        let yaml = format!(
            "nodes:\n  - {{ name: p, host: h, role: primary }}\n  - {{ name: r1, host: h, role: replica, weight: 3 }}\n  - {{ name: r2, host: h, role: replica, tags: [analytics] }}\nusers: [{{ name: u, password: p }}]\n{extra}"
        );
        let config = Config::from_yaml(&yaml, &|_| None).unwrap();
        let topology = Arc::new(ArcSwap::from_pointee(Topology::from_config(&config)));
        Router::new(&config, topology)
    }

    /// The chosen node, when there is one and it needs no check.
    fn pick(r: &Router, need: Need, session: &SessionRoute, excluded: &[usize]) -> Option<usize> {
        r.choose(need, session, excluded, None).ok().map(|p| p.node)
    }

    fn auto() -> SessionRoute {
        SessionRoute {
            route: Route::Auto,
            tag: None,
        }
    }

    #[test]
    fn writes_and_primary_sessions_go_to_the_primary() {
        let r = router("");
        assert_eq!(pick(&r, Need::Primary, &auto(), &[]), Some(0));
        let primary = SessionRoute {
            route: Route::Primary,
            tag: None,
        };
        assert_eq!(pick(&r, Need::Read, &primary, &[]), Some(0));
    }

    #[test]
    fn reads_prefer_the_least_loaded_replica_by_weight() {
        let r = Arc::new(router(""));
        let first = pick(&r, Need::Read, &auto(), &[]).unwrap();
        assert_ne!(first, 0);
        let _busy: Vec<InFlight> = (0..2).map(|_| r.start_transaction(1)).collect();
        // r1 has 2 in flight at weight 3 (0.67), r2 none: r2 wins.
        assert_eq!(pick(&r, Need::Read, &auto(), &[]), Some(2));
        let _more = r.start_transaction(2);
        // r1 2/3 against r2 1/1: r1 wins.
        assert_eq!(pick(&r, Need::Read, &auto(), &[]), Some(1));
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let r = router("routing: { load_balance: round_robin }\n");
        let picks: Vec<usize> = (0..8)
            .filter_map(|_| pick(&r, Need::Read, &auto(), &[]))
            .collect();
        assert_eq!(picks.iter().filter(|&&n| n == 1).count(), 6);
        assert_eq!(picks.iter().filter(|&&n| n == 2).count(), 2);
    }

    #[test]
    fn primary_reads_policy_and_exclusions() {
        let r = router("");
        assert_eq!(pick(&r, Need::Read, &auto(), &[1, 2]), Some(0));
        let never = router("routing: { primary_reads: never }\n");
        assert_eq!(pick(&never, Need::Read, &auto(), &[1, 2]), None);
        let always = router("routing: { primary_reads: always, load_balance: round_robin }\n");
        let picks: Vec<usize> = (0..5)
            .filter_map(|_| pick(&always, Need::Read, &auto(), &[]))
            .collect();
        assert!(picks.contains(&0));
    }

    #[test]
    fn failed_nodes_are_skipped_for_a_while() {
        let r = router("");
        r.node_failed(1);
        r.node_failed(2);
        assert_eq!(pick(&r, Need::Read, &auto(), &[]), Some(0));
    }

    #[test]
    fn rules_give_sessions_their_route_and_tag() {
        let r = router(
            "routing:\n  rules:\n    - { user: u, application_name: report, route: replica, tag: analytics }\n    - { user: admin, route: primary }\n",
        );
        let session = r.session_route("u", Some("report"));
        assert_eq!(session.tag.as_deref(), Some("analytics"));
        assert_eq!(pick(&r, Need::Read, &session, &[]), Some(2));
        assert_eq!(r.session_route("u", Some("web")), auto());
        assert_eq!(r.session_route("admin", None).route, Route::Primary);
    }

    #[test]
    fn down_and_lagging_replicas_get_no_reads() {
        let (r, topology) = router_with_topology("");
        change(&topology, |t| t.nodes[1].state = NodeState::Lagging);
        assert_eq!(pick(&r, Need::Read, &auto(), &[]), Some(2));
        change(&topology, |t| t.nodes[2].state = NodeState::Down);
        // No replica left: the primary serves the read (fallback).
        assert_eq!(pick(&r, Need::Read, &auto(), &[]), Some(0));
    }

    #[test]
    fn reads_that_must_see_a_position_use_replicas_known_to_have_it() {
        let (r, topology) = router_with_topology("");
        change(&topology, |t| {
            t.nodes[1].replay_lsn = Some(100);
            t.nodes[2].replay_lsn = Some(200);
        });
        let fresh = r.choose(Need::Read, &auto(), &[], Some(150)).unwrap();
        assert_eq!(
            fresh,
            Pick {
                node: 2,
                verify_lsn: None
            }
        );
        // Nobody is known to have it: check a replica on its connection.
        let unknown = r.choose(Need::Read, &auto(), &[], Some(300)).unwrap();
        assert_eq!(unknown.verify_lsn, Some(300));
        // What a session saw on the replica itself counts too.
        r.saw_replay_lsn(1, 300);
        let seen = r.choose(Need::Read, &auto(), &[], Some(300)).unwrap();
        assert_eq!(
            seen,
            Pick {
                node: 1,
                verify_lsn: None
            }
        );
        // No replica at all: the primary, even when it takes no reads otherwise.
        let never = router("routing: { primary_reads: never }\n");
        let pick = never.choose(Need::Read, &auto(), &[1, 2], Some(1)).unwrap();
        assert_eq!(pick.node, 0);
    }

    #[test]
    fn writes_follow_the_discovered_primary_and_stop_during_split_brain() {
        let (r, topology) = router_with_topology("");
        change(&topology, |t| {
            t.nodes[0].role = Role::Replica;
            t.nodes[2].role = Role::Primary;
            t.primary = Some(2);
        });
        assert_eq!(pick(&r, Need::Primary, &auto(), &[]), Some(2));
        let reads: Vec<usize> = (0..4)
            .filter_map(|_| pick(&r, Need::Read, &auto(), &[]))
            .collect();
        assert!(reads.iter().all(|&n| n != 2), "{reads:?}");
        change(&topology, |t| {
            t.primary = None;
            t.competing_primaries = vec![0, 2];
        });
        let error = r.choose(Need::Primary, &auto(), &[], None).unwrap_err();
        assert_eq!(error, NoNode::SplitBrain(vec!["p".into(), "r2".into()]));
        assert!(error.to_error().message.contains("split brain"));
        change(&topology, |t| t.competing_primaries.clear());
        assert_eq!(
            r.choose(Need::Primary, &auto(), &[], None).unwrap_err(),
            NoNode::NoPrimary
        );
    }
}
