//! The REST API (axum): routing, JSON bodies, and the mapping of errors to status
//! codes. Every non-2xx answer is an [`ApiError`] body. Handlers live per resource in
//! the submodules; `raft` serves the peer-to-peer Raft RPCs.

pub mod access;
pub mod bodies;
mod jobs;
mod raft;
mod runs;
mod workers;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use xtsync_api::{ApiError, Redirect};

use crate::coordinator::Coordinator;
use crate::error::ServiceError;
use crate::state::CommandError;

pub type AppState = Arc<Coordinator>;
type ApiResult<T> = Result<T, ServiceError>;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/cluster/init", post(init))
        .route("/v1/status", get(status))
        .merge(workers::routes())
        .merge(jobs::routes())
        .merge(runs::routes())
        .merge(raft::routes())
        // Every matched route checks the peer's role first (fallback: 404 for all),
        // then bounds and reads its body (route layers run last-added first).
        .route_layer(from_fn_with_state(state.clone(), bodies::bounded_body))
        .route_layer(axum::middleware::from_fn(access::authorize))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn count_requests(State(c): State<AppState>, req: Request, next: Next) -> Response {
    c.count_request();
    next.run(req).await
}

async fn not_found() -> ServiceError {
    ServiceError::NotFound("no such endpoint: see controlplane/coordinator/openapi.yaml".into())
}

/// 200 while the Raft core runs; 503 once it stopped (the process exits right after).
async fn health(State(c): State<AppState>) -> Response {
    let m = c.raft.metrics().borrow().clone();
    let (code, status) = match &m.running_state {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err(fatal) => (StatusCode::SERVICE_UNAVAILABLE, format!("raft stopped: {fatal}")),
    };
    let body = json!({
        "status": status,
        "initialized": c.is_initialized(),
        "leader_id": m.current_leader,
        "node_id": c.node_id,
        "term": m.current_term,
        "role": format!("{:?}", m.state).to_lowercase(),
    });
    (code, Json(body)).into_response()
}

async fn metrics(State(c): State<AppState>) -> ApiResult<Response> {
    let text = crate::metrics::render(&c.metrics_snapshot()?);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn init(State(c): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let already = c.initialize().await?;
    if !already {
        tracing::info!(node_id = c.node_id, "initialized the Raft group");
    }
    Ok(Json(json!({ "initialized": true, "already": already })))
}

#[derive(Debug, serde::Deserialize)]
struct StatusQuery {
    /// This node's own view (role, term, applied index), even on a follower; without
    /// it a follower sends the caller to the leader, whose view is current and holds
    /// the workers' liveness.
    #[serde(default)]
    local: bool,
}

async fn status(
    State(c): State<AppState>,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> ApiResult<Json<xtsync_api::ClusterStatus>> {
    let Query(q) = q.map_err(|r| ServiceError::BadRequest(format!("invalid query: {}", r.body_text())))?;
    if !q.local {
        c.read_barrier().await?;
    }
    Ok(Json(c.status()?))
}

/// Unwraps a JSON body, turning axum's plain-text rejection into an [`ApiError`].
fn body<T>(b: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    match b {
        Ok(Json(v)) => Ok(v),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ServiceError::TooLarge(r.body_text())),
        Err(r) => Err(ServiceError::BadRequest(format!("invalid request body: {}", r.body_text()))),
    }
}

/// Unwraps a path parameter (ids must be unsigned integers).
fn path<T>(p: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    p.map(|Path(v)| v).map_err(|r| ServiceError::BadRequest(format!("invalid path: {}", r.body_text())))
}

fn refusal_status(e: &CommandError) -> StatusCode {
    match e {
        CommandError::UnknownWorker { .. }
        | CommandError::Invalid { .. }
        | CommandError::InvalidPath { .. }
        | CommandError::RunJobMismatch { .. } => StatusCode::BAD_REQUEST,
        CommandError::DuplicateJobName { .. } | CommandError::InvalidTransition { .. } => StatusCode::CONFLICT,
        CommandError::JobNotFound { .. } | CommandError::RunNotFound { .. } => StatusCode::NOT_FOUND,
        CommandError::WrongWorker { .. } => StatusCode::FORBIDDEN,
        CommandError::BatchTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::NotLeader { .. } => StatusCode::MISDIRECTED_REQUEST,
        ServiceError::NoLeader { .. } | ServiceError::NoQuorum { .. } | ServiceError::Raft(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ServiceError::Refused(r) => refusal_status(r),
        ServiceError::Read(_) | ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Forbidden(_) => StatusCode::FORBIDDEN,
        ServiceError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ServiceError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        if status.is_server_error() {
            // Handled here: the client gets the message, the operator gets the log line.
            tracing::error!(error = %self, "request failed");
        }
        let redirect = match &self {
            ServiceError::NotLeader { leader_id, leader_addr, .. } => {
                Some(Redirect::NotLeader { leader_id: *leader_id, leader_addr: leader_addr.clone() })
            }
            ServiceError::NoLeader { .. } | ServiceError::NoQuorum { .. } => Some(Redirect::NoLeader),
            _ => None,
        };
        (status, Json(ApiError { error: self.to_string(), redirect })).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_client_errors() {
        let dup = ServiceError::Refused(CommandError::DuplicateJobName { name: "a".into(), id: 1 });
        assert_eq!(status_of(&dup), StatusCode::CONFLICT);
        let unknown = ServiceError::Refused(CommandError::UnknownWorker { name: "w".into() });
        assert_eq!(status_of(&unknown), StatusCode::BAD_REQUEST);
        let follower = ServiceError::NotLeader { node_id: 2, leader_id: 1, leader_addr: "h:7400".into() };
        assert_eq!(status_of(&follower), StatusCode::MISDIRECTED_REQUEST);
        assert!(follower.to_string().contains("coordinator 1 at h:7400"));
    }
}
