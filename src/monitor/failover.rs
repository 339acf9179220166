//! Failover, switchover and rejoining.
//!
//! **Detection** (`auto` mode): the primary has failed every check for
//! `failover.timeout`, and every replica pgsplit can reach has lost it too:
//! its WAL receiver is not streaming, or has heard nothing from the primary
//! for longer than both `failover.timeout` and its own
//! `wal_receiver_timeout` (an idle primary sends nothing for up to half of
//! that, so a shorter silence proves nothing). A network problem between
//! pgsplit and the primary alone therefore promotes nobody.
//!
//! **Promotion**: among reachable replicas that may be promoted, the one
//! with the highest received WAL position (then `priority`, then name)
//! replays what it received and is promoted with `pg_promote()`. The old
//! primary is fenced, the other replicas are pointed at the new primary,
//! and those that cannot follow are marked `needs_rejoin`.

use std::cmp::Reverse;
use std::time::{Duration, Instant, SystemTime};

use super::actions;
use super::control::Request;
use super::events::notify;
use super::hooks::{self, NodeRef};
use super::topology::{FailoverReport, NodeState, NodeStatus, WalReceiver};
use super::Monitor;
use crate::config::{FailoverMode, NodeConfig, Role};

/// How long a replica about to be promoted may take to replay what it received.
const REPLAY_WAIT: Duration = Duration::from_secs(10);
/// How often a switchover checks whether the primary's transactions ended.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Whether a replica's WAL receiver has lost its primary.
pub fn receiver_lost(receiver: Option<&WalReceiver>, timeout: Duration) -> bool {
    match receiver {
        None => true,
        Some(receiver) => {
            let patience = timeout.as_secs_f64().max(receiver.timeout_seconds);
            receiver.status.as_deref() != Some("streaming")
                || receiver.silence_seconds.is_some_and(|s| s > patience)
        }
    }
}

/// The failure rule: unreachable for `timeout`, and every reachable
/// replica agrees (there must be at least one).
pub fn primary_failed(
    unreachable_for: Option<Duration>,
    timeout: Duration,
    reachable_replicas: &[&NodeStatus],
) -> bool {
    unreachable_for.is_some_and(|d| d >= timeout)
        && !reachable_replicas.is_empty()
        && reachable_replicas
            .iter()
            .all(|r| receiver_lost(r.receiver.as_ref(), timeout))
}

/// The replica to promote instead of `old`: reachable, allowed to be
/// promoted, with the most WAL received, then the highest priority, then
/// the first name.
pub fn choose_candidate(
    nodes: &[NodeConfig],
    statuses: &[NodeStatus],
    old: usize,
) -> Option<usize> {
    (0..nodes.len())
        .filter(|&i| {
            let status = &statuses[i];
            i != old
                && nodes[i].promote
                && status.role == Role::Replica
                && status.last_error.is_none()
                && matches!(status.state, NodeState::Up | NodeState::Lagging)
        })
        .max_by_key(|&i| {
            (
                statuses[i].wal_lsn.unwrap_or(0),
                nodes[i].priority,
                Reverse(nodes[i].name.as_str()),
            )
        })
}

impl Monitor {
    /// In `auto` mode, fails over when the primary is judged failed.
    pub(super) async fn fail_over_if_needed(&mut self) {
        if self.failover.mode != FailoverMode::Auto {
            return;
        }
        let topology = self.topology();
        let Some(primary) = topology.primary else {
            return;
        };
        let replicas: Vec<&NodeStatus> = topology
            .nodes
            .iter()
            .filter(|n| {
                n.role == Role::Replica
                    && n.last_error.is_none()
                    && !matches!(n.state, NodeState::Fenced | NodeState::NeedsRejoin)
            })
            .collect();
        if !primary_failed(
            self.unreachable_for(primary),
            self.failover.timeout,
            &replicas,
        ) {
            return;
        }
        if let Err(error) = self.fail_over(primary, None).await {
            tracing::error!(%error, "failover did not happen; retrying next round");
        }
    }

    /// Carries out an operator's request.
    pub(super) async fn handle(&mut self, request: Request) -> Result<String, String> {
        if self.failover.mode == FailoverMode::External
            && !matches!(request, Request::Rejoin { .. })
        {
            return Err("failover.mode is external: pgsplit does not promote".to_owned());
        }
        match request {
            Request::Switchover { target } => {
                let target = self.node_index(&target)?;
                self.switchover(target).await
            }
            Request::Promote { target } => {
                let topology = self.topology();
                let primary = topology.primary.ok_or("there is no primary to replace")?;
                if topology.nodes[primary].state != NodeState::Down {
                    return Err(format!(
                        "the primary {} is not down; use a switchover to move the role",
                        self.nodes[primary].name
                    ));
                }
                let target = target.map(|name| self.node_index(&name)).transpose()?;
                self.fail_over(primary, target).await
            }
            Request::Rejoin { node } => {
                let node = self.node_index(&node)?;
                self.rejoin(node).await
            }
            Request::Reload { config } => {
                self.follow_config(&config);
                Ok("the monitor follows the new configuration".to_owned())
            }
        }
    }

    /// Promotes `target` (or the best candidate) in place of the failed `old`.
    async fn fail_over(&mut self, old: usize, target: Option<usize>) -> Result<String, String> {
        let started = Instant::now();
        let topology = self.topology();
        let candidate = choose_candidate(&self.nodes, &topology.nodes, old);
        let target = match target {
            Some(t) if Some(t) == candidate || self.promotable(t) => t,
            Some(t) => return Err(format!("{} cannot be promoted now", self.nodes[t].name)),
            None => candidate.ok_or("no replica can be promoted")?,
        };
        tracing::warn!(old = %self.nodes[old].name, new = %self.nodes[target].name, "primary failed: promoting a replica");
        // What the old primary had written that the new one never received.
        let behind = self
            .history
            .latest()
            .zip(topology.nodes[target].wal_lsn)
            .map(|(last, received)| last.saturating_sub(received));
        self.publish_with(|t| t.changing_primary = true);
        if let Err(error) = actions::promote(&self.targets[target], REPLAY_WAIT).await {
            self.publish_with(|t| t.changing_primary = false);
            let message = format!("promoting {} failed: {error:#}", self.nodes[target].name);
            notify(
                &self.shared.events,
                self.failover.notify_command.as_deref(),
                "promotion_failed",
                &self.nodes[target],
                None,
                message.clone(),
            );
            return Err(message);
        }
        if let Some(bytes) = behind.filter(|&b| b > 0) {
            tracing::warn!(bytes, "the promoted node had not received the last WAL seen on the old primary: writes acknowledged under asynchronous replication may be lost");
        }
        self.become_primary(old, target, "failover", started, behind);
        self.follow_new_primary(target).await;
        Ok(format!(
            "{} is the primary; {} is fenced",
            self.nodes[target].name, self.nodes[old].name
        ))
    }

    /// A planned move of the primary role to `target`, losing nothing:
    /// new writes wait, running transactions finish, the target replays
    /// everything, then it is promoted and the old primary fenced.
    async fn switchover(&mut self, target: usize) -> Result<String, String> {
        let started = Instant::now();
        let topology = self.topology();
        let old = topology
            .primary
            .ok_or("there is no primary to switch over from")?;
        if topology.nodes[old].state != NodeState::Up {
            return Err(format!("the primary {} is not up", self.nodes[old].name));
        }
        if target == old || !self.promotable(target) {
            return Err(format!(
                "{} is not a healthy replica that may be promoted",
                self.nodes[target].name
            ));
        }
        tracing::info!(old = %self.nodes[old].name, new = %self.nodes[target].name, "switchover: holding new writes");
        self.publish_with(|t| t.changing_primary = true);
        let half = self.failover.client_wait / 2;
        let drained = Instant::now() + half;
        while self.shared.router.in_flight(old) > 0 && Instant::now() < drained {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let prepared = async {
            let ended = actions::terminate_clients(&self.targets[old]).await?;
            if ended > 0 {
                tracing::warn!(
                    sessions = ended,
                    "switchover: ended sessions still open on the old primary"
                );
            }
            let last = actions::current_wal_lsn(&self.targets[old]).await?;
            actions::wait_replayed(&self.targets[target], last, half).await?;
            actions::promote(&self.targets[target], REPLAY_WAIT).await
        };
        if let Err(error) = prepared.await {
            self.publish_with(|t| t.changing_primary = false);
            return Err(format!(
                "switchover abandoned, {} stays primary: {error:#}",
                self.nodes[old].name
            ));
        }
        self.become_primary(old, target, "switchover", started, Some(0));
        notify(
            &self.shared.events,
            self.failover.demote_command.as_deref(),
            "demote",
            &self.nodes[old],
            Some(&self.nodes[target]),
            String::new(),
        );
        self.follow_new_primary(target).await;
        Ok(format!(
            "{} is the primary; {} is fenced",
            self.nodes[target].name, self.nodes[old].name
        ))
    }

    /// Whether `node` is a reachable replica that may be promoted.
    fn promotable(&self, node: usize) -> bool {
        let topology = self.topology();
        let status = &topology.nodes[node];
        self.nodes[node].promote
            && status.role == Role::Replica
            && status.state == NodeState::Up
            && status.last_error.is_none()
    }

    /// Makes `new` the primary and fences `old`, and publishes it at once
    /// so waiting writes go ahead.
    fn become_primary(
        &mut self,
        old: usize,
        new: usize,
        kind: &'static str,
        started: Instant,
        behind: Option<u64>,
    ) {
        self.promoted = Some(new);
        self.fenced[old] = true;
        self.needs_rejoin[new] = false;
        let report = FailoverReport {
            from: self.nodes[old].name.clone(),
            to: self.nodes[new].name.clone(),
            kind,
            finished_at: SystemTime::now(),
            duration_seconds: started.elapsed().as_secs_f64(),
            wal_bytes_behind: behind,
        };
        tracing::warn!(from = %report.from, to = %report.to, kind, seconds = report.duration_seconds, "new primary in place");
        notify(
            &self.shared.events,
            self.failover.notify_command.as_deref(),
            "promoted",
            &self.nodes[new],
            Some(&self.nodes[new]),
            format!("{kind} from {}", report.from),
        );
        self.publish_with(|t| {
            t.primary = Some(new);
            t.competing_primaries.clear();
            t.nodes[new].role = Role::Primary;
            t.nodes[new].state = NodeState::Up;
            t.nodes[old].state = NodeState::Fenced;
            t.changing_primary = false;
            t.failovers += 1;
            t.last_failover = Some(report);
        });
    }

    /// Points every other usable replica at the new primary, all at once;
    /// those that do not stream from it in time need rejoining.
    async fn follow_new_primary(&mut self, primary: usize) {
        let topology = self.topology();
        let followers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                i != primary
                    && !self.fenced[i]
                    && topology.nodes[i].role == Role::Replica
                    && topology.nodes[i].state != NodeState::Down
            })
            .collect();
        let timeout = self.failover.follow_timeout;
        let attempts = followers
            .iter()
            .map(|&i| actions::follow(&self.targets[i], &self.targets[primary], timeout));
        let outcomes = futures_util::future::join_all(attempts).await;
        for (node, outcome) in followers.into_iter().zip(outcomes) {
            let (event, detail) = match outcome {
                Ok(()) => {
                    tracing::info!(node = %self.nodes[node].name, primary = %self.nodes[primary].name, "replica follows the new primary");
                    ("followed", String::new())
                }
                Err(error) => {
                    tracing::error!(node = %self.nodes[node].name, error = %format!("{error:#}"), "replica cannot follow the new primary");
                    self.needs_rejoin[node] = true;
                    self.publish_with(|t| t.nodes[node].state = NodeState::NeedsRejoin);
                    continue;
                }
            };
            notify(
                &self.shared.events,
                self.failover.notify_command.as_deref(),
                event,
                &self.nodes[node],
                Some(&self.nodes[primary]),
                detail,
            );
        }
    }

    /// Readmits a fenced or `needs_rejoin` node once it is a replica again,
    /// running `failover.rejoin_command` first when configured.
    async fn rejoin(&mut self, node: usize) -> Result<String, String> {
        let name = self.nodes[node].name.clone();
        if !self.fenced[node] && !self.needs_rejoin[node] {
            return Err(format!("{name} is neither fenced nor waiting to rejoin"));
        }
        let primary = self.topology().primary;
        if let Some(command) = self.failover.rejoin_command.clone() {
            let primary_node = primary.map(|p| NodeRef::from(&self.nodes[p]));
            hooks::run(
                &command,
                "rejoin",
                &NodeRef::from(&self.nodes[node]),
                primary_node.as_ref(),
                "",
            )
            .await
            .map_err(|error| format!("rejoin_command for {name}: {error:#}"))?;
        }
        match actions::in_recovery(&self.targets[node]).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                "{name} still runs as a primary; make it a replica of the current primary first"
            ))
            }
            Err(error) => return Err(format!("{name} does not answer: {error:#}")),
        }
        self.fenced[node] = false;
        self.needs_rejoin[node] = false;
        self.publish_with(|t| {
            t.nodes[node].state = NodeState::Up;
            t.nodes[node].role = Role::Replica;
        });
        notify(
            &self.shared.events,
            self.failover.notify_command.as_deref(),
            "rejoined",
            &self.nodes[node],
            primary.map(|p| &self.nodes[p]),
            String::new(),
        );
        Ok(format!("{name} rejoined as a replica"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(status: Option<&str>, silence: f64) -> WalReceiver {
        WalReceiver {
            status: status.map(str::to_owned),
            silence_seconds: Some(silence),
            sender_host: None,
            sender_port: None,
            timeout_seconds: 60.0,
        }
    }

    fn replica(name: &str, wal_lsn: u64, receiver: Option<WalReceiver>) -> NodeStatus {
        NodeStatus {
            wal_lsn: Some(wal_lsn),
            replay_lsn: Some(wal_lsn),
            receiver,
            ..NodeStatus::unchecked(name, Role::Replica)
        }
    }

    #[test]
    fn a_primary_fails_only_when_the_replicas_lost_it_too() {
        let timeout = Duration::from_secs(3);
        let lost = replica("a", 1, Some(receiver(Some("waiting"), 0.0)));
        let streaming = replica("b", 1, Some(receiver(Some("streaming"), 20.0)));
        let silent = replica("c", 1, Some(receiver(Some("streaming"), 61.0)));
        let gone = replica("d", 1, None);
        let long = Some(Duration::from_secs(4));
        assert!(primary_failed(long, timeout, &[&lost, &gone, &silent]));
        // One replica still streams (an idle primary may be silent for a while).
        assert!(!primary_failed(long, timeout, &[&lost, &streaming]));
        assert!(!primary_failed(
            Some(Duration::from_secs(2)),
            timeout,
            &[&lost]
        ));
        assert!(!primary_failed(None, timeout, &[&lost]));
        assert!(!primary_failed(long, timeout, &[]));
    }

    #[test]
    fn the_most_caught_up_promotable_replica_wins() {
        let node = |name: &str, promote, priority| NodeConfig {
            name: name.into(),
            host: "h".into(),
            port: 5432,
            role: Role::Replica,
            weight: 1,
            tags: Vec::new(),
            promote,
            priority,
            removed: false,
        };
        let nodes = [
            node("p", true, 0),
            node("b", true, 0),
            node("a", true, 0),
            node("d", false, 9),
        ];
        let mut statuses = vec![
            replica("p", 0, None),
            replica("b", 100, None),
            replica("a", 100, None),
            replica("d", 500, None),
        ];
        // d is further ahead but may not be promoted; a and b tie: name decides.
        assert_eq!(choose_candidate(&nodes, &statuses, 0), Some(2));
        let mut nodes = nodes;
        nodes[1].priority = 1;
        assert_eq!(choose_candidate(&nodes, &statuses, 0), Some(1));
        statuses[2].wal_lsn = Some(101);
        assert_eq!(choose_candidate(&nodes, &statuses, 0), Some(2));
        statuses[2].state = NodeState::Down;
        statuses[1].last_error = Some("timeout".into());
        assert_eq!(choose_candidate(&nodes, &statuses, 0), None);
    }
}
