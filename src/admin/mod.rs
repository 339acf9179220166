//! The admin side on `admin_listen`: Prometheus metrics, health and
//! readiness for load balancers and Kubernetes, and a JSON API for
//! operators (nodes, pools, clients, config, pause/resume, switchover,
//! promotion, rejoining).

mod api;
pub mod console;
mod exposition;
pub mod health;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::proxy::Shared;

/// The bound admin endpoint, not yet serving.
pub struct AdminServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl AdminServer {
    /// Binds `admin_listen`.
    pub async fn bind(shared: Arc<Shared>) -> anyhow::Result<AdminServer> {
        let address = shared.config().admin_listen.clone();
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("admin_listen: cannot bind {address}"))?;
        Ok(AdminServer { listener, shared })
    }

    /// Where it listens (useful when `admin_listen` used port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves requests until the task is dropped.
    pub async fn run(self) {
        let app = api::router(self.shared).into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(self.listener, app).await {
            tracing::error!(%error, "admin endpoint stopped");
        }
    }
}
