//! `/api/...`: JSON views of pgsplit's state and the operator actions.
//! Mutating endpoints need `Authorization: Bearer <admin.token>`; without a
//! configured token they answer loopback clients only.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{exposition, health};
use crate::monitor::Request;
use crate::proxy::Shared;

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let actions = Router::new()
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route("/api/reload", post(reload))
        .route("/api/switchover", post(switchover))
        .route("/api/promote", post(promote))
        .route("/api/nodes/{name}/rejoin", post(rejoin))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/api/nodes", get(nodes))
        .route("/api/pools", get(pools))
        .route("/api/clients", get(clients))
        .route("/api/config", get(config))
        .merge(actions)
        .with_state(shared)
}

/// A node to act on.
#[derive(Deserialize)]
struct Target {
    target: Option<String>,
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        exposition::render(&shared),
    )
        .into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let report = health::health(&shared.topology.load());
    let status = if report.status == health::Status::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(report)).into_response()
}

async fn live() -> &'static str {
    "ok\n"
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    if health::ready(&shared.topology.load()) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no primary\n").into_response()
    }
}

async fn pools(State(shared): State<Arc<Shared>>) -> Response {
    let pools: Vec<_> = shared
        .pools
        .all()
        .into_iter()
        .map(|(key, pool)| {
            json!({
                "node": pool.node_name(),
                "database": key.database,
                "user": key.user,
                "stats": pool.stats(),
            })
        })
        .collect();
    Json(pools).into_response()
}

async fn clients(State(shared): State<Arc<Shared>>) -> Response {
    let config = shared.config();
    let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    let clients: Vec<_> = shared
        .clients
        .list()
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "peer": c.peer.to_string(),
                "user": c.user,
                "database": c.database,
                "application_name": c.application_name,
                "state": c.state(),
                "node": c.node().and_then(|n| names.get(n)),
                "connected_at": c.connected_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            })
        })
        .collect();
    Json(clients).into_response()
}

async fn config(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.config().redacted()).into_response()
}

async fn pause(State(shared): State<Arc<Shared>>) -> Response {
    shared.set_paused(true);
    Json(json!({ "result": "new transactions are held" })).into_response()
}

async fn resume(State(shared): State<Arc<Shared>>) -> Response {
    shared.set_paused(false);
    Json(json!({ "result": "new transactions go ahead" })).into_response()
}

async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match crate::reload::reload(&shared).await {
        Ok(result) => Json(json!({ "result": result })).into_response(),
        Err(error) => failure(StatusCode::BAD_REQUEST, &error),
    }
}

async fn nodes(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.topology.load_full().as_ref()).into_response()
}

async fn switchover(State(shared): State<Arc<Shared>>, body: Option<Json<Target>>) -> Response {
    let Some(target) = body.and_then(|Json(t)| t.target) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "the body must name a target: {\"target\": \"pg2\"}",
        );
    };
    act(&shared, Request::Switchover { target }).await
}

async fn promote(State(shared): State<Arc<Shared>>, body: Option<Json<Target>>) -> Response {
    let target = body.and_then(|Json(t)| t.target);
    act(&shared, Request::Promote { target }).await
}

async fn rejoin(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    act(&shared, Request::Rejoin { node: name }).await
}

/// Hands `request` to the monitor and reports its outcome.
async fn act(shared: &Shared, request: Request) -> Response {
    match shared.monitor.ask(request).await {
        Ok(result) => Json(json!({ "result": result })).into_response(),
        Err(error) => failure(StatusCode::CONFLICT, &error),
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Lets a request through only from a caller allowed to change things.
async fn authorize(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let allowed = match &shared.config().admin.token {
        Some(token) => request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes())),
        None => peer.ip().is_loopback(),
    };
    match (allowed, &shared.config().admin.token) {
        (true, _) => next.run(request).await,
        (false, Some(_)) => failure(StatusCode::UNAUTHORIZED, "a valid admin token is required"),
        (false, None) => failure(
            StatusCode::FORBIDDEN,
            "set admin.token to allow changes from other hosts",
        ),
    }
}

/// Compares secrets without revealing where they differ through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
