//! Reads of the tables, shared by the REST handlers and the scheduler.
//!
//! Every list is bounded by a limit: the callers pass the REST limit or a scheduler cap.

use xtsync_api::{FileVersion, Job, JobId, Run, RunId, WorkerRegistration};

use super::kv::{decode, get_json, KvError, KvGet, KvScan};
use super::{keys, CatalogEntry, Counters};

/// Most rows any list query returns.
pub const LIST_ROWS_MAX: usize = 10_000;

pub fn counters(kv: &impl KvGet) -> Result<Counters, KvError> {
    Ok(get_json(kv, keys::COUNTERS)?.unwrap_or_default())
}

pub fn worker(kv: &impl KvGet, name: &str) -> Result<Option<WorkerRegistration>, KvError> {
    get_json(kv, &keys::worker(name))
}

pub fn workers(kv: &impl KvScan) -> Result<Vec<WorkerRegistration>, KvError> {
    kv.scan(keys::WORKER_PREFIX, LIST_ROWS_MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
}

pub fn job(kv: &impl KvGet, id: JobId) -> Result<Option<Job>, KvError> {
    get_json(kv, &keys::job(id))
}

pub fn jobs(kv: &impl KvScan) -> Result<Vec<Job>, KvError> {
    kv.scan(keys::JOB_PREFIX, LIST_ROWS_MAX)?.iter().map(|(k, v)| decode(k, v)).collect()
}

pub fn run(kv: &impl KvGet, id: RunId) -> Result<Option<Run>, KvError> {
    get_json(kv, &keys::run(id))
}

/// Runs of a job, oldest first.
pub fn runs_of_job(kv: &impl KvScan, job_id: JobId, limit: usize) -> Result<Vec<Run>, KvError> {
    runs_by_index(kv, &keys::job_runs_prefix(job_id), limit)
}

/// Runs waiting for their source worker, oldest first.
pub fn pending_runs(kv: &impl KvScan, limit: usize) -> Result<Vec<Run>, KvError> {
    runs_by_index(kv, keys::PENDING_PREFIX, limit)
}

fn runs_by_index(kv: &impl KvScan, prefix: &[u8], limit: usize) -> Result<Vec<Run>, KvError> {
    let mut out = Vec::new();
    for (key, _) in kv.scan(prefix, limit.min(LIST_ROWS_MAX))? {
        let id = keys::trailing_id(&key).ok_or_else(|| KvError::Decode {
            key: String::from_utf8_lossy(&key).into_owned(),
            reason: "index key does not end with a run id".into(),
        })?;
        // An index row without its run would be a bug in apply; skip rather than fail reads.
        if let Some(run) = run(kv, id)? {
            out.push(run);
        }
    }
    Ok(out)
}

/// Latest versions of a job's paths that start with `path_prefix`, in path order.
pub fn catalog(kv: &impl KvScan, job_id: JobId, path_prefix: &str, limit: usize) -> Result<Vec<FileVersion>, KvError> {
    kv.scan(&keys::catalog_prefix(job_id, path_prefix), limit.min(LIST_ROWS_MAX))?
        .iter()
        .map(|(k, v)| decode::<CatalogEntry>(k, v).map(|e| e.latest))
        .collect()
}
