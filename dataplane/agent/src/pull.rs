//! Pull mode: the agent keeps a local copy of a job's tree through a job of its own —
//! continuous, from the job's source worker and path into the agent's directory —
//! created once and reused by every later start (found by its name).

use xtsync_api::{Job, JobId, JobSpec};
use xtsync_worker::client::CoordinatorClient;

use crate::supervise::{refusal, until_answered};
use crate::AgentError;

/// The name of `agent`'s pull job of job `of`: one per agent and job.
pub fn pull_job_name(agent: &str, of: JobId) -> String {
    format!("{agent}.pull.{of}")
}

/// The pull job of `job` into `dir` (absolute) on `agent`: the job's source and
/// options, continuous, mirroring (what is deleted at the source is deleted in `dir`).
pub fn pull_spec(job: &Job, agent: &str, dir: &str) -> JobSpec {
    let mut options = job.spec.options.clone();
    options.continuous = true;
    options.delete = true;
    JobSpec {
        name: pull_job_name(agent, job.id),
        source_worker: job.spec.source_worker.clone(),
        source_path: job.spec.source_path.clone(),
        target_worker: agent.to_string(),
        target_path: dir.to_string(),
        options,
        agents: Vec::new(),
    }
}

/// Whether an existing job is `wanted` (same endpoints); a different directory is the
/// operator's to resolve.
fn same_copy(existing: &JobSpec, wanted: &JobSpec) -> Result<(), String> {
    if existing.source_worker == wanted.source_worker
        && existing.source_path == wanted.source_path
        && existing.target_worker == wanted.target_worker
        && existing.target_path == wanted.target_path
    {
        Ok(())
    } else {
        Err(existing.target_path.clone())
    }
}

/// The agent's pull job of job `of` into `dir`: found, or created. Waits out
/// coordinator outages; fails on a refusal or a pull job into another directory.
pub async fn ensure_pull_job(client: &CoordinatorClient, agent: &str, of: JobId, dir: &str) -> Result<Job, AgentError> {
    let job = until_answered(&format!("read job {of}"), || client.job(of)).await.map_err(|e| refusal(of, agent, e))?;
    if job.spec.target_worker == agent || job.spec.source_worker == agent {
        return Err(AgentError::WrongJob {
            job: of,
            reason: format!(
                "agent {agent} is an endpoint of this job already; pull copies a job between other workers"
            ),
        });
    }
    let wanted = pull_spec(&job, agent, dir);
    loop {
        let jobs = until_answered("list its jobs", || client.jobs()).await.map_err(|e| refusal(of, agent, e))?;
        if let Some(existing) = jobs.into_iter().find(|j| j.spec.name == wanted.name) {
            return match same_copy(&existing.spec, &wanted) {
                Ok(()) => {
                    tracing::info!(job = of, pull_job = existing.id, dir, "reusing this agent's pull job");
                    Ok(existing)
                }
                Err(other) => Err(AgentError::PulledElsewhere {
                    job: of,
                    pull_job: existing.id,
                    pull_name: existing.spec.name,
                    existing: other,
                }),
            };
        }
        match until_answered("create the pull job", || client.create_job(&wanted)).await {
            Ok(created) => {
                tracing::info!(job = of, pull_job = created.id, name = %created.spec.name, dir, "created the pull job");
                return Ok(created);
            }
            // Created by a concurrent start: look again.
            Err(e) if e.status() == Some(409) => continue,
            Err(e) => return Err(refusal(of, agent, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtsync_api::JobOptions;

    fn job() -> Job {
        Job {
            id: 7,
            spec: JobSpec {
                name: "assets".into(),
                source_worker: "dc1-a".into(),
                source_path: "/srv/assets".into(),
                target_worker: "dc1-b".into(),
                target_path: "/backup/assets".into(),
                options: JobOptions { compression_level: 5, ..JobOptions::default() },
                agents: vec!["edge-1".into()],
            },
            created_unix_ms: 0,
        }
    }

    #[test]
    fn a_pull_job_copies_the_source_into_the_agent_continuously() {
        let spec = pull_spec(&job(), "edge-1", "/var/lib/copy");
        assert_eq!(spec.name, "edge-1.pull.7");
        assert_eq!((spec.source_worker.as_str(), spec.source_path.as_str()), ("dc1-a", "/srv/assets"));
        assert_eq!((spec.target_worker.as_str(), spec.target_path.as_str()), ("edge-1", "/var/lib/copy"));
        assert!(spec.options.continuous && spec.options.delete);
        assert_eq!(spec.options.compression_level, 5, "the job's own options otherwise");
        assert!(spec.agents.is_empty());
    }

    #[test]
    fn an_existing_pull_job_is_reused_only_for_the_same_directory() {
        let wanted = pull_spec(&job(), "edge-1", "/var/lib/copy");
        assert!(same_copy(&wanted, &wanted).is_ok());
        let elsewhere = pull_spec(&job(), "edge-1", "/other");
        assert_eq!(same_copy(&elsewhere, &wanted), Err("/other".to_string()));
    }
}
