//! Operator commands run on events: `failover.notify_command` for every
//! node event, `rejoin_command` and `demote_command` for the nodes they
//! concern. Each runs with `sh -c` and `PGSPLIT_*` variables describing the
//! event, so one script can serve several clusters.

use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::process::Command;

use crate::config::NodeConfig;

/// The longest a rejoin or demote command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// A node and where it lives, for the command's environment.
pub struct NodeRef<'a> {
    /// The node's name from the config (`PGSPLIT_NODE`, `PGSPLIT_PRIMARY`).
    pub name: &'a str,
    /// Its host (`PGSPLIT_NODE_HOST`, `PGSPLIT_PRIMARY_HOST`).
    pub host: &'a str,
    /// Its port (`PGSPLIT_NODE_PORT`, `PGSPLIT_PRIMARY_PORT`).
    pub port: u16,
}

impl<'a> From<&'a NodeConfig> for NodeRef<'a> {
    fn from(node: &'a NodeConfig) -> Self {
        NodeRef {
            name: &node.name,
            host: &node.host,
            port: node.port,
        }
    }
}

/// Runs `command` with the event's variables and waits for it; an error
/// when it fails or runs too long.
pub async fn run(
    command: &str,
    event: &str,
    node: &NodeRef<'_>,
    primary: Option<&NodeRef<'_>>,
    detail: &str,
) -> anyhow::Result<()> {
    let mut process = Command::new("sh");
    process
        .arg("-c")
        .arg(command)
        .env("PGSPLIT_EVENT", event)
        .env("PGSPLIT_NODE", node.name)
        .env("PGSPLIT_NODE_HOST", node.host)
        .env("PGSPLIT_NODE_PORT", node.port.to_string())
        .env("PGSPLIT_DETAIL", detail)
        .kill_on_drop(true);
    if let Some(primary) = primary {
        process
            .env("PGSPLIT_PRIMARY", primary.name)
            .env("PGSPLIT_PRIMARY_HOST", primary.host)
            .env("PGSPLIT_PRIMARY_PORT", primary.port.to_string());
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, process.output())
        .await
        .with_context(|| format!("{event} command ran longer than {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("starting the {event} command"))?;
    if !output.status.success() {
        bail!(
            "{event} command failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
