//! Requests to the monitor from the admin API: it owns node roles, so
//! switchover, manual promotion and rejoining go through it, one at a time,
//! between its check rounds.

use tokio::sync::{mpsc, oneshot};

/// What an operator asked for.
pub enum Request {
    /// Planned switch of the primary role to a healthy replica.
    Switchover {
        /// The replica to promote, by name.
        target: String,
    },
    /// Promote a replica because the primary failed (`manual` mode, or to
    /// choose the node); `None` picks the best candidate.
    Promote {
        /// The replica to promote, by name.
        target: Option<String>,
    },
    /// Readmit a fenced or `needs_rejoin` node after it was rebuilt (runs
    /// `failover.rejoin_command` first when configured).
    Rejoin {
        /// The node to readmit, by name.
        node: String,
    },
    /// Take on a reloaded configuration (nodes added or removed, lag
    /// limits, failover settings).
    Reload {
        /// The configuration just loaded.
        config: std::sync::Arc<crate::config::Config>,
    },
}

/// A request with the channel its outcome goes back on.
pub struct Envelope {
    pub(super) request: Request,
    pub(super) reply: oneshot::Sender<Result<String, String>>,
}

/// The admin side's way to reach the monitor.
#[derive(Clone)]
pub struct MonitorHandle {
    sender: mpsc::Sender<Envelope>,
}

impl MonitorHandle {
    /// A handle and the receiving end the monitor is built with.
    pub fn channel() -> (MonitorHandle, mpsc::Receiver<Envelope>) {
        let (sender, receiver) = mpsc::channel(8);
        (MonitorHandle { sender }, receiver)
    }

    /// Asks the monitor to carry out `request`; the text says what happened.
    pub async fn ask(&self, request: Request) -> Result<String, String> {
        let (reply, outcome) = oneshot::channel();
        self.sender
            .send(Envelope { request, reply })
            .await
            .map_err(|_| "the monitor is not running".to_owned())?;
        outcome
            .await
            .map_err(|_| "the monitor stopped before answering".to_owned())?
    }
}
