//! Keeps a job's continuous run active from the agent's side: coordinator outages are
//! waited out with capped exponential backoff (saying what the agent waits for); a
//! run that ended (failed) is started again; a refusal ends the agent with its reason.

use std::future::Future;
use std::time::Duration;

use xtsync_api::{JobId, RunId};
use xtsync_worker::client::{ClientError, CoordinatorClient};

use crate::backoff::Backoff;
use crate::profile::RETRY_DELAY_MAX;
use crate::AgentError;

/// How often the agent checks that its job still has an active run.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(15);
const RETRY_DELAY_FIRST: Duration = Duration::from_secs(1);

/// Calls `call` until the coordinator answers. Unreachable, leaderless or failing
/// coordinators are waited out (one log line per try, with the next delay); what the
/// coordinator refuses is returned.
pub async fn until_answered<T, F, Fut>(what: &str, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut backoff = Backoff::new(RETRY_DELAY_FIRST, RETRY_DELAY_MAX);
    loop {
        match call().await {
            Ok(v) => {
                if !backoff.is_fresh() {
                    tracing::info!("the coordinator answers again ({what})");
                }
                return Ok(v);
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, "waiting for the coordinator to {what}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the coordinator said about `job` to this agent, as the operator should read it.
pub fn refusal(job: JobId, agent: &str, e: ClientError) -> AgentError {
    let reason = match e.status() {
        Some(404) => format!(
            "does not exist, or is not given to agent {agent:?} (name it as the job's source or target, or in its agents: xtsyncctl job create ... --agent {agent})"
        ),
        _ => e.to_string(),
    };
    AgentError::Refused { job, reason }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ensured {
    /// A run was active already (its id, if known).
    Active(Option<RunId>),
    Started(RunId),
}

async fn ensure_run(client: &CoordinatorClient, job: JobId) -> Result<Ensured, ClientError> {
    let runs = client.runs(job).await?;
    if let Some(run) = runs.iter().find(|r| !r.reconcile && !r.state.is_finished()) {
        return Ok(Ensured::Active(Some(run.id)));
    }
    match client.start_run(job).await {
        Ok(run) => Ok(Ensured::Started(run.id)),
        // Started meanwhile (by an operator, or the coordinator requeued it).
        Err(e) if e.status() == Some(409) => Ok(Ensured::Active(None)),
        Err(e) => Err(e),
    }
}

/// Starts the job's continuous run if none is active, then checks again every
/// [`CHECK_INTERVAL`] for as long as the agent runs. Returns only on a refusal.
pub async fn keep_running(client: CoordinatorClient, job: JobId, agent: String) -> Result<(), AgentError> {
    let mut known: Option<RunId> = None;
    loop {
        match until_answered(&format!("check the run of job {job}"), || ensure_run(&client, job)).await {
            Ok(Ensured::Started(run)) => {
                tracing::info!(job, run, "started the job's continuous run");
                known = Some(run);
            }
            Ok(Ensured::Active(Some(run))) if known != Some(run) => {
                tracing::info!(job, run, "the job's continuous run is active");
                known = Some(run);
            }
            Ok(Ensured::Active(_)) => {}
            Err(e) => return Err(refusal(job, &agent, e)),
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}
