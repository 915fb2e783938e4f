//! `xtsync-agent`: the endpoint agent. It runs the worker's engine
//! (`xtsync_worker::daemon`) with a light [`profile::AGENT`] (one core, retries up to
//! 30 s) and keeps one continuous job of its own running:
//!
//! - `push`: a job whose source is this agent (watch a local directory, push to a
//!   worker);
//! - `pull`: a job it creates from the source of a job that lists it, into a local
//!   directory (a worker pushes to the agent's data port).
//!
//! `backoff`: capped exponential delays; `supervise`: keeps the job's run active
//! through coordinator outages; `pull::pull_spec`: the pull job (pure).

#![forbid(unsafe_code)]

pub mod backoff;
pub mod modes;
pub mod profile;
pub mod pull;
pub mod supervise;

/// Why the agent cannot do what it was started for (never a transient outage: those
/// are waited out).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The coordinator refused (403) or does not show the job to this agent (404).
    #[error("job {job}: {reason}")]
    Refused { job: u64, reason: String },
    /// The job exists but is not one this mode can run.
    #[error("job {job}: {reason}")]
    WrongJob { job: u64, reason: String },
    /// A local directory or path is unusable.
    #[error("{path}: {reason}")]
    Local { path: String, reason: String },
    /// The pull job of this agent for that job already copies into another directory.
    #[error("job {job} is already pulled into {existing} by job {pull_job} ({pull_name}); use --dir {existing}, or delete job {pull_job} first (xtsyncctl job delete {pull_job})")]
    PulledElsewhere { job: u64, pull_job: u64, pull_name: String, existing: String },
}
