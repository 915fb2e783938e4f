//! The replicated state machine as pure logic: the commands that Raft log entries carry,
//! how each one changes the tables ([`apply`]), and how the tables are read
//! ([`query`]). No I/O here beyond the [`kv`] traits, and no clock: every timestamp
//! travels inside its command, so that every replica applies the same bytes the same way.

pub mod apply;
pub mod keys;
pub mod kv;
pub mod query;
pub mod validate;

use serde::{Deserialize, Serialize};
use xtsync_api::{FileVersion, Job, JobId, JobSpec, Run, RunId, RunReport, WorkerRegistration};

pub use apply::apply;

/// Most file versions one `CommitVersions` entry may carry (one Raft entry per batch).
pub const VERSIONS_PER_BATCH_MAX: usize = 10_000;

/// One Raft log entry's payload. The `cmd` tag and field names are the on-disk format:
/// add variants and optional fields only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Adds a worker, or updates the registration of a worker of the same name.
    RegisterWorker(WorkerRegistration),
    /// Creates a job with the next job id.
    CreateJob { spec: JobSpec, created_unix_ms: u64 },
    /// Removes a job definition. Its runs and catalog rows stay as history.
    DeleteJob { id: JobId },
    /// Creates a Pending run with the next run id.
    CreateRun {
        job_id: JobId,
        created_unix_ms: u64,
        /// Absent in entries written before reconciliation runs existed, and omitted
        /// when false (the log's format for ordinary runs is unchanged).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reconcile: bool,
    },
    /// Records a worker's report on a run (state, progress, summary).
    ReportRun { run_id: RunId, report: RunReport, unix_ms: u64 },
    /// Records a batch of durable file versions of a run's job.
    CommitVersions { run_id: RunId, job_id: JobId, versions: Vec<FileVersion> },
}

/// What an applied command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Blank and membership entries.
    Nothing,
    Worker(WorkerRegistration),
    Job(Job),
    JobDeleted {
        id: JobId,
    },
    Run(Run),
    /// `versions` in the batch, of which `new_versions` differed from the latest row
    /// (re-committing an identical batch after a retry adds no version).
    Committed {
        versions: u64,
        new_versions: u64,
    },
}

/// The answer a Raft entry yields to its proposer: applied, or refused (deterministically,
/// on every replica) with a typed reason.
pub type Response = Result<Outcome, CommandError>;

/// Why a command was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandError {
    /// A job names a worker that never registered.
    #[error("worker {name:?} is not registered: start it (or POST /v1/workers/register) first")]
    UnknownWorker { name: String },
    /// Job names are unique.
    #[error("a job named {name:?} already exists (id {id})")]
    DuplicateJobName { name: String, id: JobId },
    #[error("job {id} does not exist")]
    JobNotFound { id: JobId },
    #[error("run {id} does not exist")]
    RunNotFound { id: RunId },
    /// A field of a job spec or worker registration is unusable.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Runs go Pending → Running → Succeeded | Failed; finished runs never change.
    #[error("run {run_id} cannot go from {from} to {to}")]
    InvalidTransition { run_id: RunId, from: String, to: String },
    /// Only the job's source or target worker may report on its runs.
    #[error("worker {worker:?} is not a worker of the job of run {run_id}")]
    WrongWorker { run_id: RunId, worker: String },
    /// A version batch names another job than the run's.
    #[error("run {run_id} belongs to job {run_job_id}, not to job {job_id}")]
    RunJobMismatch { run_id: RunId, run_job_id: JobId, job_id: JobId },
    /// A catalog path that could escape the job root or is malformed.
    #[error("invalid catalog path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("a batch carries {count} versions; at most {max} per batch")]
    BatchTooLarge { count: usize, max: usize },
}

/// Table sizes kept by apply (so that `/metrics` and `/v1/status` never scan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub workers: u64,
    pub jobs: u64,
    pub runs_pending: u64,
    pub runs_running: u64,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    /// Catalog rows (distinct paths over all jobs).
    pub catalog_files: u64,
    /// Versions recorded over all rows.
    pub catalog_versions: u64,
}

impl Counters {
    pub fn runs_active(&self) -> u64 {
        self.runs_pending + self.runs_running
    }
}

/// A catalog row: the latest version of a path and how many versions it has had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub latest: FileVersion,
    pub versions: u64,
}
