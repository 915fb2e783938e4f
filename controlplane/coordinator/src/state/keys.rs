//! Key layout of the state machine (one RocksDB column family, one prefix per table).
//!
//! Numeric ids are zero-padded to 20 digits so that key order is numeric order.

use xtsync_api::{JobId, RunId};

/// Next job id to assign (u64, JSON).
pub const NEXT_JOB_ID: &[u8] = b"meta/next_job_id";
/// Next run id to assign (u64, JSON).
pub const NEXT_RUN_ID: &[u8] = b"meta/next_run_id";
/// [`super::Counters`], kept by apply so that `/metrics` never scans.
pub const COUNTERS: &[u8] = b"meta/counters";

pub const WORKER_PREFIX: &[u8] = b"worker/";
pub const JOB_PREFIX: &[u8] = b"job/";
pub const PENDING_PREFIX: &[u8] = b"pending/";

pub fn worker(name: &str) -> Vec<u8> {
    format!("worker/{name}").into_bytes()
}

pub fn job(id: JobId) -> Vec<u8> {
    format!("job/{id:020}").into_bytes()
}

/// Unique index: job name → job id.
pub fn job_name(name: &str) -> Vec<u8> {
    format!("jobname/{name}").into_bytes()
}

pub fn run(id: RunId) -> Vec<u8> {
    format!("run/{id:020}").into_bytes()
}

/// Index: runs of a job (empty value).
pub fn job_run(job_id: JobId, run_id: RunId) -> Vec<u8> {
    format!("jobrun/{job_id:020}/{run_id:020}").into_bytes()
}

pub fn job_runs_prefix(job_id: JobId) -> Vec<u8> {
    format!("jobrun/{job_id:020}/").into_bytes()
}

/// Index: runs in state Pending (value: job id), scanned by the scheduler.
pub fn pending(run_id: RunId) -> Vec<u8> {
    format!("pending/{run_id:020}").into_bytes()
}

/// The runs a source worker is running (value: run ids), requeued when it registers.
pub fn running_of(worker: &str) -> Vec<u8> {
    format!("runningof/{worker}").into_bytes()
}

/// Catalog row: latest version of `path` in job `job_id`.
pub fn catalog(job_id: JobId, path: &str) -> Vec<u8> {
    format!("cat/{job_id:020}/{path}").into_bytes()
}

/// Prefix of the catalog rows of a job whose path starts with `path_prefix`.
pub fn catalog_prefix(job_id: JobId, path_prefix: &str) -> Vec<u8> {
    format!("cat/{job_id:020}/{path_prefix}").into_bytes()
}

/// Parses the run id at the end of a `jobrun/` or `pending/` key.
pub fn trailing_id(key: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(key).ok()?;
    text.rsplit('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_numerically_and_parse_back() {
        assert!(job(9) < job(10));
        assert_eq!(trailing_id(&job_run(3, 42)), Some(42));
        assert_eq!(trailing_id(&pending(7)), Some(7));
    }
}
