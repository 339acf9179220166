//! `/health`, `/live` and `/ready`: the cluster as a load balancer or
//! Kubernetes wants to see it.

use serde::Serialize;

use crate::config::Role;
use crate::monitor::{NodeState, NodeStatus, Topology};

/// The overall verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A primary and every replica in service.
    Healthy,
    /// A primary, but some replica is down, lagging or out of service.
    Degraded,
    /// No usable primary.
    Unhealthy,
}

/// One node in the report.
#[derive(Debug, Serialize)]
pub struct NodeHealth {
    /// The node's name from the config.
    pub node: String,
    /// `ok`, or the node's state (`down`, `lagging`, `fenced`, `needs_rejoin`).
    pub status: &'static str,
    /// How long the last check took, in milliseconds; `None` before the
    /// first check or after a failed one.
    pub latency_ms: Option<f64>,
    /// WAL the replica has yet to replay; left out when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// How far behind the replica is in time; left out when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

/// The `/health` document.
#[derive(Debug, Serialize)]
pub struct Health {
    /// The verdict a load balancer acts on.
    pub status: Status,
    /// The node taking writes; `None` when there is none to trust.
    pub primary: Option<NodeHealth>,
    /// Every replica, plus fenced former primaries; removed nodes are left out.
    pub replicas: Vec<NodeHealth>,
    /// Several reachable nodes claim to be primary, so writes are held back.
    pub split_brain: bool,
    /// Failovers and switchovers pgsplit carried out since it started.
    pub failovers: u64,
}

fn node_health(node: &NodeStatus) -> NodeHealth {
    NodeHealth {
        node: node.name.clone(),
        status: match node.state {
            NodeState::Up => "ok",
            other => other.as_str(),
        },
        latency_ms: node.check_latency.map(|d| d.as_secs_f64() * 1000.0),
        lag_bytes: node.lag_bytes,
        lag_seconds: node.lag_seconds,
    }
}

/// Judges the cluster from the monitor's snapshot.
pub fn health(topology: &Topology) -> Health {
    let primary = topology.primary.map(|p| &topology.nodes[p]);
    let others: Vec<&NodeStatus> = topology
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| Some(*i) != topology.primary && n.state != NodeState::Removed)
        .map(|(_, n)| n)
        .collect();
    let status = match primary {
        Some(p) if p.state == NodeState::Up && !topology.changing_primary => {
            if others.iter().all(|n| n.state == NodeState::Up) {
                Status::Healthy
            } else {
                Status::Degraded
            }
        }
        _ => Status::Unhealthy,
    };
    Health {
        status,
        primary: primary.map(node_health),
        replicas: others
            .iter()
            .filter(|n| n.role == Role::Replica || n.state == NodeState::Fenced)
            .map(|n| node_health(n))
            .collect(),
        split_brain: topology.split_brain(),
        failovers: topology.failovers,
    }
}

/// Ready for traffic: the config is loaded (it is, once this runs) and a
/// primary is known.
pub fn ready(topology: &Topology) -> bool {
    topology.primary.is_some() && !topology.changing_primary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn topology() -> Topology {
        let config = Config::from_yaml(
            "nodes:\n  - { name: p, host: h, role: primary }\n  - { name: r, host: h, role: replica }\nusers: [{ name: u, password: p }]\n",
            &|_| None,
        )
        .unwrap();
        Topology::from_config(&config)
    }

    #[test]
    fn verdicts_follow_the_primary_and_the_replicas() {
        let mut t = topology();
        assert_eq!(health(&t).status, Status::Healthy);
        t.nodes[1].state = NodeState::Lagging;
        let report = health(&t);
        assert_eq!(report.status, Status::Degraded);
        assert_eq!(report.replicas[0].status, "lagging");
        t.nodes[0].state = NodeState::Down;
        assert_eq!(health(&t).status, Status::Unhealthy);
        assert!(ready(&t));
        t.primary = None;
        assert!(!ready(&t));
        assert_eq!(health(&t).status, Status::Unhealthy);
    }
}
