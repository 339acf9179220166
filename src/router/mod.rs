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
use std::time::{Duration, Instant};

use crate::config::{Config, LoadBalance, PrimaryReads, Role, Route, RoutingConfig};

/// How long a node that refused a connection is left out of read routing
/// (until the replication monitor tracks node health).
const FAILED_NODE_BACKOFF: Duration = Duration::from_secs(2);

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
    pub route: Route,
    /// Reads go only to replicas carrying this tag.
    pub tag: Option<String>,
}

struct NodeState {
    name: String,
    role: Role,
    weight: u64,
    tags: Vec<String>,
    in_flight: AtomicUsize,
    /// Milliseconds since the router started until which the node is skipped.
    skip_until_ms: AtomicU64,
}

/// Routing events worth an operator's attention, counted since start.
#[derive(Debug, Default)]
pub struct RoutingCounters {
    /// Units sent to the primary because a statement could not be classified.
    pub unparsed: AtomicU64,
    /// Reads that went elsewhere because their replica gave no connection.
    pub replica_fallbacks: AtomicU64,
}

/// Chooses the node for each transaction.
pub struct Router {
    /// What routing had to work around.
    pub counters: RoutingCounters,
    routing: RoutingConfig,
    nodes: Vec<NodeState>,
    primary: usize,
    round_robin: AtomicU64,
    started: Instant,
}

/// Counts a transaction as in flight on a node while it lives.
pub struct InFlight {
    router: Arc<Router>,
    node: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.router.nodes[self.node]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Router {
    /// Starts from the configured roles.
    pub fn new(config: &Config) -> Router {
        Router {
            routing: config.routing.clone(),
            nodes: config
                .nodes
                .iter()
                .map(|node| NodeState {
                    name: node.name.clone(),
                    role: node.role,
                    weight: u64::from(node.weight.max(1)),
                    tags: node.tags.clone(),
                    in_flight: AtomicUsize::new(0),
                    skip_until_ms: AtomicU64::new(0),
                })
                .collect(),
            primary: config.primary_index(),
            round_robin: AtomicU64::new(0),
            started: Instant::now(),
            counters: RoutingCounters::default(),
        }
    }

    /// The node that takes writes.
    pub fn primary(&self) -> usize {
        self.primary
    }

    /// The routing settings, for the session's sticky window and function lists.
    pub fn settings(&self) -> &RoutingConfig {
        &self.routing
    }

    /// A node's name, for logs.
    pub fn node_name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// The default route of a session, from the first matching rule.
    pub fn session_route(&self, user: &str, application_name: Option<&str>) -> SessionRoute {
        let rule = self.routing.rules.iter().find(|rule| {
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
                route: self.routing.route,
                tag: None,
            },
        }
    }

    /// Picks the node for a unit of work; `None` when a read has nowhere to
    /// go (`primary_reads: never` and no usable replica). `excluded` holds
    /// nodes that already failed for this unit.
    pub fn choose(&self, need: Need, session: &SessionRoute, excluded: &[usize]) -> Option<usize> {
        if need == Need::Primary || session.route == Route::Primary {
            return Some(self.primary);
        }
        let now_ms = self.now_ms();
        let usable = |index: usize, node: &NodeState| {
            !excluded.contains(&index) && node.skip_until_ms.load(Ordering::Relaxed) <= now_ms
        };
        let mut candidates: Vec<usize> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(index, node)| {
                node.role == Role::Replica
                    && usable(*index, node)
                    && session
                        .tag
                        .as_ref()
                        .is_none_or(|tag| node.tags.contains(tag))
            })
            .map(|(index, _)| index)
            .collect();
        let primary_usable = !excluded.contains(&self.primary);
        match self.routing.primary_reads {
            PrimaryReads::Always if primary_usable && session.tag.is_none() => {
                candidates.push(self.primary)
            }
            PrimaryReads::Fallback if candidates.is_empty() && primary_usable => {
                return Some(self.primary)
            }
            _ => {}
        }
        self.balance(&candidates)
    }

    fn balance(&self, candidates: &[usize]) -> Option<usize> {
        match candidates {
            [] => None,
            [only] => Some(*only),
            _ => Some(match self.routing.load_balance {
                LoadBalance::LeastConnections => *candidates.iter().min_by(|&&a, &&b| {
                    // in_flight / weight, compared without division.
                    let load = |n: usize| self.nodes[n].in_flight.load(Ordering::Relaxed) as u64;
                    (load(a) * self.nodes[b].weight).cmp(&(load(b) * self.nodes[a].weight))
                })?,
                LoadBalance::RoundRobin => {
                    let ticket = self.round_robin.fetch_add(1, Ordering::Relaxed);
                    self.weighted_pick(candidates, ticket)
                }
                LoadBalance::Random => self.weighted_pick(candidates, rand::random::<u64>()),
            }),
        }
    }

    /// The candidate that `ticket` lands on when each takes `weight` slots.
    fn weighted_pick(&self, candidates: &[usize], ticket: u64) -> usize {
        let total: u64 = candidates.iter().map(|&n| self.nodes[n].weight).sum();
        let mut slot = ticket % total.max(1);
        for &node in candidates {
            let weight = self.nodes[node].weight;
            if slot < weight {
                return node;
            }
            slot -= weight;
        }
        candidates[0]
    }

    /// Marks a transaction as running on `node` until the guard drops.
    pub fn start_transaction(self: &Arc<Self>, node: usize) -> InFlight {
        self.nodes[node].in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            router: self.clone(),
            node,
        }
    }

    /// Leaves a node that could not give a connection out of read routing
    /// for a moment, so every read does not pay for the same failure.
    pub fn node_failed(&self, node: usize) {
        self.counters
            .replica_fallbacks
            .fetch_add(1, Ordering::Relaxed);
        let until = self.now_ms() + FAILED_NODE_BACKOFF.as_millis() as u64;
        self.nodes[node]
            .skip_until_ms
            .store(until, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(extra: &str) -> Router {
        let yaml = format!(
            "nodes:\n  - {{ name: p, host: h, role: primary }}\n  - {{ name: r1, host: h, role: replica, weight: 3 }}\n  - {{ name: r2, host: h, role: replica, tags: [analytics] }}\nusers: [{{ name: u, password: p }}]\n{extra}"
        );
        Router::new(&Config::from_yaml(&yaml, &|_| None).unwrap())
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
        assert_eq!(r.choose(Need::Primary, &auto(), &[]), Some(0));
        let primary = SessionRoute {
            route: Route::Primary,
            tag: None,
        };
        assert_eq!(r.choose(Need::Read, &primary, &[]), Some(0));
    }

    #[test]
    fn reads_prefer_the_least_loaded_replica_by_weight() {
        let r = Arc::new(router(""));
        let first = r.choose(Need::Read, &auto(), &[]).unwrap();
        assert_ne!(first, 0);
        let _busy: Vec<InFlight> = (0..2).map(|_| r.start_transaction(1)).collect();
        // r1 has 2 in flight at weight 3 (0.67), r2 none: r2 wins.
        assert_eq!(r.choose(Need::Read, &auto(), &[]), Some(2));
        let _more = r.start_transaction(2);
        // r1 2/3 against r2 1/1: r1 wins.
        assert_eq!(r.choose(Need::Read, &auto(), &[]), Some(1));
    }

    #[test]
    fn weighted_round_robin_follows_weights() {
        let r = router("routing: { load_balance: round_robin }\n");
        let picks: Vec<usize> = (0..8)
            .filter_map(|_| r.choose(Need::Read, &auto(), &[]))
            .collect();
        assert_eq!(picks.iter().filter(|&&n| n == 1).count(), 6);
        assert_eq!(picks.iter().filter(|&&n| n == 2).count(), 2);
    }

    #[test]
    fn primary_reads_policy_and_exclusions() {
        let r = router("");
        assert_eq!(r.choose(Need::Read, &auto(), &[1, 2]), Some(0));
        let never = router("routing: { primary_reads: never }\n");
        assert_eq!(never.choose(Need::Read, &auto(), &[1, 2]), None);
        let always = router("routing: { primary_reads: always, load_balance: round_robin }\n");
        let picks: Vec<usize> = (0..5)
            .filter_map(|_| always.choose(Need::Read, &auto(), &[]))
            .collect();
        assert!(picks.contains(&0));
    }

    #[test]
    fn failed_nodes_are_skipped_for_a_while() {
        let r = router("");
        r.node_failed(1);
        r.node_failed(2);
        assert_eq!(r.choose(Need::Read, &auto(), &[]), Some(0));
    }

    #[test]
    fn rules_give_sessions_their_route_and_tag() {
        let r = router(
            "routing:\n  rules:\n    - { user: u, application_name: report, route: replica, tag: analytics }\n    - { user: admin, route: primary }\n",
        );
        let session = r.session_route("u", Some("report"));
        assert_eq!(session.tag.as_deref(), Some("analytics"));
        assert_eq!(r.choose(Need::Read, &session, &[]), Some(2));
        assert_eq!(r.session_route("u", Some("web")), auto());
        assert_eq!(r.session_route("admin", None).route, Route::Primary);
    }
}
