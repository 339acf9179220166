//! Node events: each is logged and, with `failover.notify_command`, handed
//! to the operator's script (in the background: a slow script must not
//! hold up monitoring).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::hooks::{self, NodeRef};
use super::topology::{NodeState, Topology};
use crate::config::NodeConfig;

/// How many times each node event happened, for metrics.
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl EventCounts {
    fn add(&self, event: &'static str) {
        *crate::sync::lock(&self.counts).entry(event).or_default() += 1;
    }

    /// Every event seen so far with its count.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        crate::sync::lock(&self.counts)
            .iter()
            .map(|(event, count)| (*event, *count))
            .collect()
    }
}

/// Counts one event and runs an operator's command (notify, demote) for
/// it in the background, if one is configured.
pub(super) fn notify(
    counts: &EventCounts,
    command: Option<&str>,
    event: &'static str,
    node: &NodeConfig,
    primary: Option<&NodeConfig>,
    detail: String,
) {
    counts.add(event);
    let Some(command) = command.map(str::to_owned) else {
        return;
    };
    let node = node.clone();
    let primary = primary.cloned();
    tokio::spawn(async move {
        let primary_ref = primary.as_ref().map(NodeRef::from);
        if let Err(error) = hooks::run(
            &command,
            event,
            &NodeRef::from(&node),
            primary_ref.as_ref(),
            &detail,
        )
        .await
        {
            tracing::warn!(%error, event, node = %node.name, "command failed");
        }
    });
}

/// Logs and notifies what changed between two published topologies.
pub(super) fn report_changes(
    counts: &EventCounts,
    before: &Topology,
    after: &Topology,
    command: Option<&str>,
    nodes: &[NodeConfig],
) {
    let primary = after.primary.and_then(|p| nodes.get(p));
    for ((old, new), node) in before.nodes.iter().zip(&after.nodes).zip(nodes) {
        if old.state != new.state {
            let detail = match new.state {
                NodeState::Down => {
                    let error = new.last_error.clone().unwrap_or_default();
                    tracing::warn!(node = %new.name, %error, "node is down");
                    error
                }
                NodeState::Lagging => {
                    tracing::warn!(node = %new.name, lag_bytes = new.lag_bytes, lag_seconds = new.lag_seconds, "replica is lagging; it gets no reads");
                    format!("lag {} bytes", new.lag_bytes.unwrap_or(0))
                }
                NodeState::Up => {
                    tracing::info!(node = %new.name, was = old.state.as_str(), "node is up");
                    format!("was {}", old.state.as_str())
                }
                NodeState::Fenced => {
                    tracing::warn!(node = %new.name, "node is fenced: no traffic until it is rejoined");
                    String::new()
                }
                NodeState::Removed => {
                    tracing::info!(node = %new.name, "node removed from the configuration");
                    String::new()
                }
                NodeState::NeedsRejoin => {
                    tracing::warn!(node = %new.name, "replica cannot follow the primary: no reads until it is rejoined");
                    String::new()
                }
            };
            notify(counts, command, new.state.as_str(), node, primary, detail);
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
        if let Some(node) = primary {
            notify(
                counts,
                command,
                "primary_changed",
                node,
                primary,
                String::new(),
            );
        }
    }
    if after.split_brain() && !before.split_brain() {
        let names: Vec<&str> = after
            .competing_primaries
            .iter()
            .map(|&i| after.nodes[i].name.as_str())
            .collect();
        tracing::error!(nodes = ?names, "split brain: several nodes claim to be primary; writes are refused");
        for &index in &after.competing_primaries {
            notify(
                counts,
                command,
                "split_brain",
                &nodes[index],
                None,
                names.join(","),
            );
        }
    }
}
