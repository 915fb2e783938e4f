//! Worker membership: registration, heartbeats and the assignments they carry back.

use serde::{Deserialize, Serialize};

use crate::job::Job;
use crate::run::{RunId, RunReport};

/// `POST /v1/workers/register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRegistration {
    pub name: String,
    pub site: String,
    /// `host:port` where the worker's data plane (TLS) listens.
    pub data_addr: String,
    /// `host:port` of the worker's HTTP endpoint (`/health`, `/metrics`).
    pub http_addr: String,
    pub cores: u32,
}

/// `POST /v1/workers/{name}/heartbeat`. The coordinator answers as soon as it has an
/// assignment for this worker, or after `wait_ms` (long poll).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerHeartbeat {
    pub running: Vec<RunId>,
    /// Reports to record with this heartbeat (progress of running passes).
    #[serde(default)]
    pub reports: Vec<(RunId, RunReport)>,
    pub wait_ms: u64,
}

/// One pass for the source worker to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub run_id: RunId,
    pub job: Job,
    /// Data-plane address of the job's target worker.
    pub target_data_addr: String,
    /// A reconciliation pass (see `Run::reconcile`).
    #[serde(default)]
    pub reconcile: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub assignments: Vec<Assignment>,
    /// Runs the heartbeat listed as running that must stop: their job was deleted.
    #[serde(default)]
    pub cancelled: Vec<RunId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub registration: WorkerRegistration,
    pub last_heartbeat_unix_ms: u64,
    pub alive: bool,
}
