//! Request bodies are bounded before they are read: a pure table gives each route and
//! caller role its largest body and the time it may take to arrive
//! ([`body_bytes_max`], [`body_wait_max`]); the layer ([`bounded_body`]) refuses a
//! declared length over the bound at once (413), checks that a catalog commit comes
//! from the run's source before reading a byte of it (403), and reads the rest under
//! the deadline (408 when the body is sent too slowly).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xtsync_transport::Role;

use super::access::{require_own_name, Peer};
use super::AppState;
use crate::error::ServiceError;
use crate::state::query;

/// A catalog commit: up to `VERSIONS_PER_BATCH_MAX` versions, from the job's source.
pub const VERSIONS_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Raft entries and snapshots between coordinators.
pub const RAFT_BODY_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Everything else: job specs, registrations, heartbeats, reports.
pub const SMALL_BODY_BYTES_MAX: usize = 1024 * 1024;
const VERSIONS_ROUTE: &str = "/v1/runs/{id}/versions";

/// The largest body `role` may send to `method route`.
pub fn body_bytes_max(method: &Method, route: &str, role: Role) -> usize {
    match (method.as_str(), route, role) {
        ("POST", VERSIONS_ROUTE, Role::Worker | Role::Agent) => VERSIONS_BODY_BYTES_MAX,
        ("POST", "/raft/append" | "/raft/snapshot" | "/raft/vote", Role::Coordinator) => RAFT_BODY_BYTES_MAX,
        _ => SMALL_BODY_BYTES_MAX,
    }
}

/// How long the body of `route` may take to arrive, from the end of the headers.
pub fn body_wait_max(route: &str) -> Duration {
    match route {
        "/raft/append" | "/raft/snapshot" | "/raft/vote" => Duration::from_secs(60),
        VERSIONS_ROUTE => Duration::from_secs(30),
        _ => Duration::from_secs(10),
    }
}

/// The route layer: runs after [`super::access::authorize`] has checked the role.
pub(super) async fn bounded_body(State(c): State<AppState>, req: Request, next: Next) -> Response {
    match read_bounded(&c, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn read_bounded(c: &AppState, req: Request) -> Result<Request, ServiceError> {
    let Some(route) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return Ok(req);
    };
    let peer = req.extensions().get::<Peer>().cloned();
    let role = peer.as_ref().map(|p| p.identity.role).unwrap_or(Role::Admin);
    let max = body_bytes_max(req.method(), &route, role);
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(ServiceError::TooLarge(format!(
            "a {} {route} body may be at most {max} bytes; this one declares {}",
            req.method(),
            declared.unwrap_or_default()
        )));
    }
    if req.method() == Method::POST && route == VERSIONS_ROUTE {
        if let Some(peer) = &peer {
            commit_from_source(c, peer, req.uri().path())?;
        }
    }
    let (parts, body) = req.into_parts();
    let wait = body_wait_max(&route);
    let bytes = match tokio::time::timeout(wait, axum::body::to_bytes(body, max)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return Err(ServiceError::TooLarge(format!("request body refused (at most {max} bytes): {e}")));
        }
        Err(_) => {
            tracing::warn!(route, "request body not received within {wait:?}; closing");
            return Err(ServiceError::BodyTimeout(format!("the request body did not arrive within {wait:?}")));
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A catalog commit to run `/v1/runs/ID/versions` comes from the source worker of the
/// run's job (the handler checks the body's job against the run again).
fn commit_from_source(c: &AppState, peer: &Peer, path: &str) -> Result<(), ServiceError> {
    let run_id = path.split('/').nth(3).and_then(|id| id.parse::<u64>().ok());
    let Some(run_id) = run_id else { return Ok(()) }; // the handler answers 400
    let Some(run) = query::run(&c.reader, run_id)? else { return Ok(()) }; // 404 there
    if let Some(job) = query::job(&c.reader, run.job_id)? {
        require_own_name(peer, &job.spec.source_worker, "commit versions of a job")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_routes_that_need_them_take_large_bodies() {
        let post = Method::POST;
        assert_eq!(body_bytes_max(&post, VERSIONS_ROUTE, Role::Worker), VERSIONS_BODY_BYTES_MAX);
        assert_eq!(body_bytes_max(&post, VERSIONS_ROUTE, Role::Admin), SMALL_BODY_BYTES_MAX);
        assert_eq!(body_bytes_max(&post, "/raft/append", Role::Coordinator), RAFT_BODY_BYTES_MAX);
        assert_eq!(body_bytes_max(&post, "/raft/append", Role::Worker), SMALL_BODY_BYTES_MAX);
        assert_eq!(body_bytes_max(&post, "/v1/jobs", Role::Admin), SMALL_BODY_BYTES_MAX);
        assert!(body_wait_max("/v1/jobs") < body_wait_max(VERSIONS_ROUTE));
    }
}
