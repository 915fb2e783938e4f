//! Who may call what. Every connection is mutual TLS ([`crate::https`]); the verified
//! certificate's name and role ride on each request as a [`Peer`]. A pure table maps a
//! route to the roles allowed on it ([`allowed_roles`]); handlers then check what a
//! role may see of one object (a worker or agent acts only under its own name, an
//! agent sees only jobs that name it or that it is an endpoint of, starts runs only of
//! the latter, and creates only pull jobs into itself).

use std::net::SocketAddr;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use xtsync_api::{Job, JobSpec};
use xtsync_transport::{PeerIdentity, Role};

use crate::error::ServiceError;

/// The authenticated peer of a request (inserted by the HTTPS server).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: PeerIdentity,
}

const ANY: &[Role] = &Role::ALL;
/// Data-plane endpoints: workers, and agents (which run the worker's engine).
const ENDPOINTS: &[Role] = &[Role::Worker, Role::Agent];
const COORDINATOR: &[Role] = &[Role::Coordinator];
const ADMIN: &[Role] = &[Role::Admin];
const READERS: &[Role] = &[Role::Admin, Role::Agent];
/// One job: also a worker that is its endpoint (see [`may_read`]).
const JOB_READERS: &[Role] = &[Role::Admin, Role::Agent, Role::Worker];
const OPERATORS: &[Role] = &[Role::Admin, Role::Coordinator];
/// Admins, and agents within what [`may_start_run`] and [`agent_may_create`] allow.
const ADMIN_OR_AGENT: &[Role] = &[Role::Admin, Role::Agent];

/// Roles allowed on a route (axum's route pattern). Anything not listed is for
/// admins only, so that a new route is closed until someone opens it here.
pub fn allowed_roles(method: &Method, route: &str) -> &'static [Role] {
    match (method.as_str(), route) {
        ("GET", "/health") => ANY,
        // Counters of jobs and runs: for operators and peers, not for workers or agents.
        ("GET", "/metrics") => OPERATORS,
        ("POST", "/v1/workers/register" | "/v1/workers/{name}/heartbeat")
        | ("POST", "/v1/runs/{id}/report" | "/v1/runs/{id}/versions") => ENDPOINTS,
        ("POST", "/raft/append" | "/raft/vote" | "/raft/snapshot") => COORDINATOR,
        // A target checks an agent's (or an agent a worker's) session against its job.
        ("GET", "/v1/jobs/{id}") => JOB_READERS,
        ("GET", "/v1/jobs" | "/v1/jobs/{id}/catalog" | "/v1/jobs/{id}/runs") => READERS,
        ("POST", "/v1/jobs" | "/v1/jobs/{id}/runs") => ADMIN_OR_AGENT,
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

/// A worker or agent acts only under the name its certificate carries.
pub(super) fn require_own_name(peer: &Peer, claimed: &str, what: &str) -> Result<(), ServiceError> {
    if matches!(peer.identity.role, Role::Worker | Role::Agent) && peer.identity.name != claimed {
        tracing::warn!(peer = %peer.addr, cert = %peer.identity, claimed, "refused request: {what} under another worker's name");
        return Err(ServiceError::Forbidden(format!(
            "certificate {} may not {what} as worker {claimed:?}",
            peer.identity.name
        )));
    }
    Ok(())
}

/// Whether `peer` may read `job`: admins always, agents when the job names them or
/// when they are its source or target, workers when they are (only one job at a time:
/// the route table keeps lists, catalogs and runs from workers).
pub fn may_read(peer: &PeerIdentity, job: &Job) -> bool {
    match peer.role {
        Role::Admin => true,
        Role::Agent => job.spec.agents.contains(&peer.name) || is_endpoint(peer, &job.spec),
        Role::Worker => is_endpoint(peer, &job.spec),
        Role::Coordinator => false,
    }
}

/// Whether `peer`'s name is the job's source or target.
pub fn is_endpoint(peer: &PeerIdentity, spec: &JobSpec) -> bool {
    spec.source_worker == peer.name || spec.target_worker == peer.name
}

/// Whether `peer` may start a run (or a reconciliation) of `job`: admins always,
/// agents only of jobs they are an endpoint of.
pub fn may_start_run(peer: &PeerIdentity, job: &Job) -> bool {
    match peer.role {
        Role::Admin => true,
        Role::Agent => is_endpoint(peer, &job.spec),
        Role::Worker | Role::Coordinator => false,
    }
}

/// Whether agent `agent` may create `spec`: only a pull job — continuous, into the
/// agent itself, from exactly the source (worker and path) of a job that lists the
/// agent in `agents`, naming no other agent. `jobs` are the existing jobs. The reason
/// of a refusal names the rule, never another job.
pub fn agent_may_create(agent: &PeerIdentity, spec: &JobSpec, jobs: &[Job]) -> Result<(), String> {
    let rule = "an agent may create only a continuous job whose target is itself and whose source \
                (worker and path) is that of a job listing it in agents";
    if agent.role != Role::Agent {
        return Err(format!("certificate role {} is not an agent", agent.role));
    }
    if spec.target_worker != agent.name {
        return Err(format!("{rule}: target_worker must be {:?}", agent.name));
    }
    if spec.source_worker == agent.name {
        return Err(format!("{rule}: the source must be another worker"));
    }
    if !spec.options.continuous {
        return Err(format!("{rule}: options.continuous must be true"));
    }
    if spec.agents.iter().any(|a| *a != agent.name) {
        return Err(format!("{rule}: agents may name only {:?}", agent.name));
    }
    let pulls_a_listed_job = jobs.iter().any(|j| {
        j.spec.agents.contains(&agent.name)
            && j.spec.source_worker == spec.source_worker
            && j.spec.source_path == spec.source_path
    });
    if !pulls_a_listed_job {
        return Err(format!("{rule}: no such job"));
    }
    Ok(())
}

/// Refuses (403, one log line) what an access rule refused.
pub(super) fn refuse(peer: &Peer, what: &str, reason: String) -> ServiceError {
    tracing::warn!(peer = %peer.addr, cert = %peer.identity, "refused request: {what}: {reason}");
    ServiceError::Forbidden(format!("certificate {} may not {what}: {reason}", peer.identity.name))
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
        assert_eq!(allowed_roles(&Method::POST, "/v1/workers/register"), ENDPOINTS);
        assert_eq!(allowed_roles(&Method::POST, "/v1/runs/{id}/versions"), ENDPOINTS);
        assert_eq!(allowed_roles(&Method::POST, "/v1/jobs/{id}/runs"), ADMIN_OR_AGENT);
        assert_eq!(allowed_roles(&Method::GET, "/v1/runs/{id}"), ADMIN);
        assert_eq!(allowed_roles(&Method::GET, "/v1/workers"), ADMIN);
        assert_eq!(allowed_roles(&Method::POST, "/raft/append"), COORDINATOR);
        assert_eq!(allowed_roles(&Method::POST, "/v1/jobs"), ADMIN_OR_AGENT, "agents: pull jobs only");
        assert_eq!(allowed_roles(&Method::DELETE, "/v1/jobs/{id}"), ADMIN);
        assert_eq!(allowed_roles(&Method::GET, "/v1/jobs/{id}"), JOB_READERS);
        assert_eq!(allowed_roles(&Method::GET, "/v1/jobs"), READERS, "workers list nothing");
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
        assert!(may_read(&id("b", Role::Worker), &job), "its target worker");
        job.spec.agents.clear();
        assert!(!may_read(&id("edge-1", Role::Agent), &job));
    }

    fn spec(source: &str, source_path: &str, target: &str, agents: &[&str]) -> JobSpec {
        JobSpec {
            name: "j".into(),
            source_worker: source.into(),
            source_path: source_path.into(),
            target_worker: target.into(),
            target_path: "/t".into(),
            options: JobOptions { continuous: true, ..JobOptions::default() },
            agents: agents.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn agent(name: &str) -> PeerIdentity {
        PeerIdentity { name: name.into(), role: Role::Agent, serial: "01".into() }
    }

    #[test]
    fn agents_read_and_start_runs_of_jobs_they_are_an_endpoint_of() {
        let push = Job { id: 2, spec: spec("edge-1", "/data", "dc1-a", &[]), created_unix_ms: 0 };
        let pull = Job { id: 3, spec: spec("dc1-a", "/data", "edge-1", &[]), created_unix_ms: 0 };
        let listed = Job { id: 4, spec: spec("dc1-a", "/data", "dc1-b", &["edge-1"]), created_unix_ms: 0 };
        for job in [&push, &pull, &listed] {
            assert!(may_read(&agent("edge-1"), job), "{job:?}");
            assert!(!may_read(&agent("edge-2"), job), "{job:?}");
        }
        assert!(may_start_run(&agent("edge-1"), &push) && may_start_run(&agent("edge-1"), &pull));
        assert!(!may_start_run(&agent("edge-1"), &listed), "listed only: read, not run");
        assert!(!may_start_run(&agent("edge-2"), &push));
        let ops = PeerIdentity { name: "ops".into(), role: Role::Admin, serial: "02".into() };
        assert!(may_start_run(&ops, &listed));
        let worker = PeerIdentity { name: "edge-1".into(), role: Role::Worker, serial: "03".into() };
        assert!(!may_start_run(&worker, &push), "workers never start runs over REST");
    }

    #[test]
    fn agents_create_only_pull_jobs_of_jobs_that_list_them() {
        let jobs = [Job { id: 1, spec: spec("dc1-a", "/data", "dc1-b", &["edge-1"]), created_unix_ms: 0 }];
        let me = agent("edge-1");
        agent_may_create(&me, &spec("dc1-a", "/data", "edge-1", &[]), &jobs).unwrap();
        agent_may_create(&me, &spec("dc1-a", "/data", "edge-1", &["edge-1"]), &jobs).unwrap();
        let refused = |s: JobSpec, who: &PeerIdentity| agent_may_create(who, &s, &jobs).unwrap_err();
        assert!(refused(spec("dc1-a", "/data", "dc1-b", &[]), &me).contains("target_worker"));
        assert!(refused(spec("dc1-a", "/etc", "edge-1", &[]), &me).contains("no such job"));
        assert!(refused(spec("dc1-b", "/data", "edge-1", &[]), &me).contains("no such job"));
        assert!(refused(spec("dc1-a", "/data", "edge-1", &["edge-2"]), &me).contains("agents"));
        assert!(refused(spec("edge-1", "/data", "edge-1", &[]), &me).contains("another worker"));
        let mut once = spec("dc1-a", "/data", "edge-1", &[]);
        once.options.continuous = false;
        assert!(refused(once, &me).contains("continuous"));
        assert!(refused(spec("dc1-a", "/data", "edge-2", &[]), &agent("edge-2")).contains("no such job"));
    }
}
