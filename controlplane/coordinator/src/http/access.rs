//! Who may call what. Every connection is mutual TLS ([`crate::https`]); the verified
//! certificate's name and role ride on each request as a [`Peer`]. A pure table maps a
//! route to the roles allowed on it ([`allowed_roles`]); handlers then check what a
//! role may see of one object (a worker acts only under its own name, an agent sees
//! only jobs that name it).

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xtsync_api::Job;
use xtsync_transport::{PeerIdentity, Role};

use crate::error::ServiceError;

/// The authenticated peer of a request (inserted by the HTTPS server).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: PeerIdentity,
}

const ANY: &[Role] = &Role::ALL;
const WORKER: &[Role] = &[Role::Worker];
const COORDINATOR: &[Role] = &[Role::Coordinator];
const ADMIN: &[Role] = &[Role::Admin];
const READERS: &[Role] = &[Role::Admin, Role::Agent];
const OPERATORS: &[Role] = &[Role::Admin, Role::Coordinator];

/// Roles allowed on a route (axum's route pattern). Anything not listed is for
/// admins only, so that a new route is closed until someone opens it here.
pub fn allowed_roles(method: &Method, route: &str) -> &'static [Role] {
    match (method.as_str(), route) {
        ("GET", "/health") => ANY,
        // Counters of jobs and runs: for operators and peers, not for workers or agents.
        ("GET", "/metrics") => OPERATORS,
        ("POST", "/v1/workers/register" | "/v1/workers/{name}/heartbeat")
        | ("POST", "/v1/runs/{id}/report" | "/v1/runs/{id}/versions") => WORKER,
        ("POST", "/raft/append" | "/raft/vote" | "/raft/snapshot") => COORDINATOR,
        ("GET", "/v1/jobs" | "/v1/jobs/{id}" | "/v1/jobs/{id}/catalog" | "/v1/jobs/{id}/runs") => READERS,
        _ => ADMIN,
    }
}

/// The route layer: refuses a role the table does not allow, with one log line.
pub(super) async fn authorize(req: Request, next: Next) -> Response {
    let Some(peer) = req.extensions().get::<Peer>().cloned() else {
        // Only a router served without the HTTPS server gets here (a bug).
        return ServiceError::Forbidden("no authenticated peer".into()).into_response();
    };
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    let Some(route) = route else { return next.run(req).await };
    let allowed = allowed_roles(req.method(), &route);
    if allowed.contains(&peer.identity.role) {
        return next.run(req).await;
    }
    let roles: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
    tracing::warn!(
        peer = %peer.addr,
        cert = %peer.identity,
        method = %req.method(),
        path = %req.uri().path(),
        "refused request: role {} may not call {} {route} (allowed: {})",
        peer.identity.role,
        req.method(),
        roles.join(", ")
    );
    ServiceError::Forbidden(format!(
        "certificate role {} may not call {} {route}; allowed: {}",
        peer.identity.role,
        req.method(),
        roles.join(", ")
    ))
    .into_response()
}

/// A worker acts only under the name its certificate carries.
pub(super) fn require_own_name(peer: &Peer, claimed: &str, what: &str) -> Result<(), ServiceError> {
    if peer.identity.role == Role::Worker && peer.identity.name != claimed {
        tracing::warn!(peer = %peer.addr, cert = %peer.identity, claimed, "refused request: {what} under another worker's name");
        return Err(ServiceError::Forbidden(format!(
            "certificate {} may not {what} as worker {claimed:?}",
            peer.identity.name
        )));
    }
    Ok(())
}

/// Whether `peer` may read `job`: admins always, agents when the job names them.
pub fn may_read(peer: &PeerIdentity, job: &Job) -> bool {
    match peer.role {
        Role::Admin => true,
        Role::Agent => job.spec.agents.contains(&peer.name),
        Role::Worker | Role::Coordinator => false,
    }
}

/// The job, or the same "does not exist" a missing job gets: a peer that may not read
/// it learns nothing, not even that it exists.
pub(super) fn visible(peer: &Peer, job: Option<Job>, id: u64) -> Result<Job, ServiceError> {
    let missing = || ServiceError::NotFound(format!("job {id} does not exist"));
    let job = job.ok_or_else(missing)?;
    if may_read(&peer.identity, &job) {
        return Ok(job);
    }
    tracing::warn!(peer = %peer.addr, cert = %peer.identity, job_id = id, "refused request: job not given to this agent (answered 404)");
    Err(missing())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtsync_api::{JobOptions, JobSpec};

    #[test]
    fn the_table_separates_planes() {
        assert_eq!(allowed_roles(&Method::POST, "/v1/workers/register"), WORKER);
        assert_eq!(allowed_roles(&Method::POST, "/raft/append"), COORDINATOR);
        assert_eq!(allowed_roles(&Method::POST, "/v1/jobs"), ADMIN);
        assert_eq!(allowed_roles(&Method::DELETE, "/v1/jobs/{id}"), ADMIN);
        assert_eq!(allowed_roles(&Method::GET, "/v1/jobs/{id}"), READERS);
        assert_eq!(allowed_roles(&Method::GET, "/health"), ANY);
        assert_eq!(allowed_roles(&Method::GET, "/metrics"), OPERATORS, "job counters: not for workers or agents");
        assert_eq!(allowed_roles(&Method::GET, "/v1/some/new/route"), ADMIN, "closed by default");
    }

    #[test]
    fn agents_read_only_the_jobs_naming_them() {
        let mut job = Job {
            id: 1,
            spec: JobSpec {
                name: "j".into(),
                source_worker: "a".into(),
                source_path: "/s".into(),
                target_worker: "b".into(),
                target_path: "/t".into(),
                options: JobOptions::default(),
                agents: vec!["edge-1".into()],
            },
            created_unix_ms: 0,
        };
        let id = |name: &str, role| PeerIdentity { name: name.into(), role, serial: "01".into() };
        assert!(may_read(&id("edge-1", Role::Agent), &job));
        assert!(!may_read(&id("edge-2", Role::Agent), &job));
        assert!(may_read(&id("ops", Role::Admin), &job));
        assert!(!may_read(&id("edge-1", Role::Worker), &job));
        job.spec.agents.clear();
        assert!(!may_read(&id("edge-1", Role::Agent), &job));
    }
}
