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

use crate::monitor::Request;
use crate::proxy::Shared;

/// The API's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    let actions = Router::new()
        .route("/api/switchover", post(switchover))
        .route("/api/promote", post(promote))
        .route("/api/nodes/{name}/rejoin", post(rejoin))
        .route_layer(middleware::from_fn_with_state(shared.clone(), authorize));
    Router::new()
        .route("/api/nodes", get(nodes))
        .merge(actions)
        .with_state(shared)
}

/// A node to act on.
#[derive(Deserialize)]
struct Target {
    target: Option<String>,
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
    let allowed = match &shared.config.admin.token {
        Some(token) => request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|presented| constant_time_eq(presented.as_bytes(), token.as_bytes())),
        None => peer.ip().is_loopback(),
    };
    match (allowed, &shared.config.admin.token) {
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
