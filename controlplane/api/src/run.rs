//! Runs (one pass of a job), their progress, and the file versions they commit.

use serde::{Deserialize, Serialize};

use crate::job::JobId;

pub type RunId = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RunState {
    /// Created, waiting for the source worker to pick it up.
    Pending,
    Running,
    Succeeded,
    Failed {
        error: String,
    },
}

impl RunState {
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed { .. })
    }
}

/// Counters of a pass while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunProgress {
    pub files_seen: u64,
    pub files_done: u64,
    pub bytes_scanned: u64,
    pub bytes_on_wire: u64,
    /// Continuous runs: passes completed (the first is the full one).
    pub passes_done: u64,
    /// Continuous runs: age of the oldest change not yet durable at the target (0 when
    /// caught up) — the replication lag, i.e. the RPO right now.
    pub lag_ms: u64,
    /// Continuous runs: changed paths waiting for or in their pass.
    pub changes_pending: u64,
    /// Regular files not yet durable at the target: those the pass in flight has walked
    /// and the target has not settled (committed, renamed or found identical), and, in
    /// continuous runs, those changed since (stat'ed when their change was queued).
    pub files_pending: u64,
    /// The bytes of `files_pending`.
    pub bytes_pending: u64,
    /// Continuous runs: what the run waits for when it cannot make progress (the
    /// target unreachable, a failed pass being retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// Summary of a finished pass (`xtsyncctl quickstart --json` prints this).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PassSummary {
    /// Regular files in the source tree.
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Regular files whose content was (re)assembled at the target.
    pub files_transferred: u64,
    /// Regular files found identical at the target (nothing written).
    pub files_unchanged: u64,
    /// Regular files put in place by renaming the target's copy (a rename or move at
    /// the source: no content sent, nothing copied).
    #[serde(default)]
    pub files_renamed: u64,
    /// Bytes of file content covered by this pass.
    pub bytes_scanned: u64,
    /// Bytes the source read from disk (files whose cached manifest was stale or absent).
    pub bytes_read: u64,
    /// Bytes sent over the data-plane connections, frames and TLS records included.
    pub bytes_on_wire: u64,
    pub chunks_sent: u64,
    /// Chunks sent for file versions the target had acknowledged in an earlier pass (its
    /// record at the source says so): zero unless the target lost or changed such a file.
    #[serde(default)]
    pub chunks_resent_acknowledged: u64,
    /// Chunks the target already held and copied locally instead of receiving.
    pub chunks_reused: u64,
    pub entries_deleted: u64,
    pub duration_s: f64,
    /// The source walked only what its change journal recorded since the previous pass
    /// began (that pass succeeded, the target had acknowledged the tree): `files`,
    /// `dirs` and `bytes_scanned` count the entries looked at, not the whole tree.
    #[serde(default)]
    pub changes_only: bool,
    /// Reconcile passes: the paths whose version at the target was not the source's
    /// (missing, other content or other metadata), at most [`PASS_PATHS_LISTED_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differed: Vec<String>,
    /// Reconcile passes: the paths removed from the target because the source does not
    /// have them, at most [`PASS_PATHS_LISTED_MAX`] (`entries_deleted` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

/// Paths a pass summary lists at most in `differed` and in `removed`.
pub const PASS_PATHS_LISTED_MAX: usize = 1000;

/// What a worker reports on a run: `POST /v1/runs/{id}/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub worker: String,
    pub state: RunState,
    pub progress: RunProgress,
    pub summary: Option<PassSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub job_id: JobId,
    #[serde(flatten)]
    pub state: RunState,
    pub created_unix_ms: u64,
    pub finished_unix_ms: Option<u64>,
    pub progress: RunProgress,
    pub summary: Option<PassSummary>,
    /// One full pass asked for by `xtsyncctl reconcile`: on a job whose continuous run
    /// is live, that run performs it (in order with its change passes).
    #[serde(default)]
    pub reconcile: bool,
}

/// `POST /v1/jobs/{id}/runs` body (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRequest {
    pub reconcile: bool,
}

/// One durable file version at a target: a catalog row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersion {
    /// Path relative to the job's root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// BLAKE3 over the file's chunk names (hex).
    pub content_digest: String,
}

/// A batch of versions committed as one Raft entry: `POST /v1/runs/{id}/versions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionBatch {
    pub job_id: JobId,
    pub versions: Vec<FileVersion>,
}
