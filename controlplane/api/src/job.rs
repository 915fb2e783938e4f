//! Job definitions: what to replicate, from where to where, with which options.

use serde::{Deserialize, Serialize};

pub type JobId = u64;

/// When the source compresses a chunk with zstd before sending it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Compress, but send a chunk raw when compression does not shrink it
    /// (incompressible data costs one cheap failed attempt, not a round trip).
    #[default]
    Auto,
    /// Always send compressed frames (even when larger).
    Always,
    /// Never compress (fast LANs where the CPU is the bottleneck).
    Never,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!("unknown compression policy {other:?}: expected auto, always or never")),
        }
    }
}

/// Per-job options. Every field has a default so that `{}` is a valid options body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOptions {
    /// Remove target entries that no longer exist at the source.
    pub delete: bool,
    pub compression: Compression,
    /// zstd level used when compressing.
    pub compression_level: i32,
    /// Number of parallel sessions (one per worker core); 0 = one per core.
    pub sessions: u32,
    /// Keep replicating: after the first pass the source worker watches the tree
    /// (fanotify as root, inotify otherwise) and replicates each batch of changes on a
    /// session it keeps open. The run stays `running` and reports its lag.
    pub continuous: bool,
    /// Continuous jobs: how long changes are gathered into one batch, from the first
    /// ([`BATCH_WINDOW_MS_DEFAULT`]).
    pub batch_window_ms: u32,
    /// Continuous jobs: a full reconciliation pass this often (catches anything change
    /// capture missed). One-shot jobs: a pass checks every entry at the target when the
    /// last pass that did is older than this; passes between send only what changed
    /// since the target acknowledged it. 0 = never on its own.
    pub reconcile_interval_s: u32,
    /// Bytes per second the job's sessions may send together (0: unlimited), outside
    /// the windows of `rate_schedule`.
    pub rate_limit_bytes_per_s: u64,
    /// Time-of-day windows (the source worker's local time) with their own rate; the
    /// first window containing the current minute applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rate_schedule: Vec<RateWindow>,
}

/// A daily window `[from_minute, to_minute)` (minutes after local midnight; it may wrap
/// midnight) with its rate in bytes per second (0: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    pub from_minute: u32,
    pub to_minute: u32,
    pub bytes_per_s: u64,
}

/// Continuous jobs' default batch window: a change waits 25 ms on average before its
/// batch goes, and a steady stream costs a pass (and a durability barrier) every 50 ms
/// instead of one per few files (perf/RESULTS.md, issue 3 figure 1).
pub const BATCH_WINDOW_MS_DEFAULT: u32 = 50;

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            delete: false,
            compression: Compression::Auto,
            compression_level: 1,
            sessions: 0,
            continuous: false,
            batch_window_ms: BATCH_WINDOW_MS_DEFAULT,
            reconcile_interval_s: 3600,
            rate_limit_bytes_per_s: 0,
            rate_schedule: Vec::new(),
        }
    }
}

/// What an operator asks for: `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub source_worker: String,
    pub source_path: String,
    pub target_worker: String,
    pub target_path: String,
    #[serde(default)]
    pub options: JobOptions,
    /// Agents (certificate names of role `agent`) allowed to read this job; every
    /// other agent is told it does not exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
}

/// A job as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub created_unix_ms: u64,
}
