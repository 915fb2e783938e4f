//! The two modes, run once the daemon is up: check the job, then keep its run active.

use std::path::{Path, PathBuf};
use std::time::Duration;

use xtsync_api::{Job, JobId};
use xtsync_worker::client::CoordinatorClient;
use xtsync_worker::daemon::Started;

use crate::backoff::Backoff;
use crate::pull::ensure_pull_job;
use crate::supervise::{keep_running, refusal, until_answered};
use crate::AgentError;

/// Push mode: job `job` must be continuous with this agent as its source, and its
/// source directory must exist here. Waits for the job to be created.
pub async fn push(started: Started, job: JobId) -> Result<(), AgentError> {
    let Started { name, client, .. } = started;
    let found = wait_for_job(&client, job, &name).await?;
    let spec = &found.spec;
    if spec.source_worker != name {
        return Err(AgentError::WrongJob {
            job,
            reason: format!(
                "its source is {:?}; push mode runs a job whose source is this agent (xtsyncctl job create --source-worker {name} ...)",
                spec.source_worker
            ),
        });
    }
    if !spec.options.continuous {
        return Err(AgentError::WrongJob { job, reason: "is not continuous (create it with --continuous)".into() });
    }
    if !Path::new(&spec.source_path).is_dir() {
        return Err(AgentError::Local {
            path: spec.source_path.clone(),
            reason: format!("job {job}'s source directory does not exist on this agent"),
        });
    }
    tracing::info!(job, source = %spec.source_path, target = %format!("{}:{}", spec.target_worker, spec.target_path), "push mode");
    keep_running(client, job, name).await
}

/// How often a pushing agent looks again for a job it cannot see yet.
const JOB_LOOKUP_DELAY_MAX: Duration = Duration::from_secs(5);

/// The job, once it is visible to this agent. A push job can be created only after
/// its source, this agent, registered: so "does not exist" is waited out (with a log
/// line saying what to create); a refusal is not.
async fn wait_for_job(client: &CoordinatorClient, job: JobId, name: &str) -> Result<Job, AgentError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), JOB_LOOKUP_DELAY_MAX);
    loop {
        match until_answered(&format!("read job {job}"), || client.job(job)).await {
            Ok(found) => return Ok(found),
            Err(e) if e.status() == Some(404) => {
                let delay = backoff.next_delay();
                tracing::warn!(
                    "job {job} does not exist or is not given to agent {name} yet (xtsyncctl job create --source-worker {name} ... --continuous); looking again in {delay:?}"
                );
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(refusal(job, name, e)),
        }
    }
}

/// Pull mode: a copy of job `job`'s tree in `dir` (absolute), kept by this agent's
/// pull job, which the source worker runs by connecting to this agent's data port.
pub async fn pull(started: Started, job: JobId, dir: String) -> Result<(), AgentError> {
    let Started { name, client, data_addr } = started;
    tracing::info!(job, dir, data_addr, "pull mode: the job's source worker connects to this agent at {data_addr}");
    let pull_job = ensure_pull_job(&client, &name, job, &dir).await?;
    keep_running(client, pull_job.id, name).await
}

/// The pull directory: created if missing, made absolute.
pub fn prepare_dir(dir: &Path) -> Result<PathBuf, AgentError> {
    let local = |reason: String| AgentError::Local { path: dir.display().to_string(), reason };
    std::fs::create_dir_all(dir).map_err(|e| local(format!("cannot create the directory: {e}")))?;
    let dir = dir.canonicalize().map_err(|e| local(e.to_string()))?;
    if !dir.is_dir() {
        return Err(local("is not a directory".into()));
    }
    Ok(dir)
}
