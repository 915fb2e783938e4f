//! Shared wire types of the control plane: what `xtsyncctl`, the coordinator and the
//! workers say to each other over the REST API (JSON). No server code lives here, so
//! clients never depend on a daemon crate (the neon `*_api` pattern).
//!
//! Every request/response body that is persisted or crosses a version boundary is
//! plain serde; the REST paths are versioned (`/v1/...`) and described in
//! `controlplane/coordinator/openapi.yaml`.

#![forbid(unsafe_code)]

pub mod job;
pub mod metrics;
pub mod run;
pub mod worker;

pub use job::{Compression, Job, JobId, JobOptions, JobSpec, RateWindow};
pub use run::{
    FileVersion, PassSummary, Run, RunId, RunProgress, RunReport, RunRequest, RunState, VersionBatch,
    PASS_PATHS_LISTED_MAX,
};
pub use worker::{Assignment, HeartbeatReply, WorkerHeartbeat, WorkerRegistration, WorkerStatus};

/// Status of the whole cluster, as `GET /v1/status` returns it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    /// This node's Raft role: `leader`, `follower`, `candidate` or `learner`.
    #[serde(default)]
    pub role: String,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_applied_index: u64,
    pub initialized: bool,
    pub workers: Vec<WorkerStatus>,
    pub jobs: u64,
    pub runs_active: u64,
    pub catalog_versions: u64,
}

/// Error body of every non-2xx REST answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiError {
    pub error: String,
    /// Set when the request was not applied because this coordinator is not the
    /// leader: the client may send it again elsewhere (see `xtsync-client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
}

/// Why a coordinator did not apply a request, and where to send it instead.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Redirect {
    /// 421: another coordinator leads; `leader_addr` is its REST `host:port`.
    NotLeader { leader_id: u64, leader_addr: String },
    /// 503: no leader is known here (an election is running, or this node lost its
    /// quorum); another coordinator may know one.
    NoLeader,
}

/// Milliseconds since the Unix epoch, the timestamp unit of the API.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
