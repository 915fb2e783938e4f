//! The YAML configuration shared by every xtsync daemon (`/etc/xtsync/xtsync.yaml`).
//!
//! Two layers, as neon's `parse_and_validate` does it: [`raw`] mirrors the file with
//! serde (unknown keys are errors, every key optional), then [`Config::from_raw`]
//! destructures every field, applies defaults and checks it, so that each error names
//! the file, the key and what is wrong. Nothing needs a file: [`Config::default`] is
//! the embedded default the quickstart runs on.

#![forbid(unsafe_code)]

mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use validate::ConfigError;
use xtsync_api::Compression;

/// One coordinator of the Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorAddr {
    pub id: u64,
    /// `host:port` of its REST API.
    pub api_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    pub data_path: PathBuf,
    pub metadata_path: PathBuf,
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
    /// The CA's revocation list (`xtsyncctl cert` keeps it beside the CA); without it,
    /// revoked certificates are not refused.
    pub crl_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkingConfig {
    /// Where the data plane (TLS) listens.
    pub data_listen: SocketAddr,
    /// Where the HTTP endpoint (`/health`, `/metrics`, REST on coordinators) listens.
    pub http_listen: SocketAddr,
    /// Address peers use to reach this node's data plane (defaults to `data_listen`).
    pub data_advertise: String,
    pub tls: Option<TlsConfig>,
    /// Which data-plane sessions of worker peers are admitted (see [`AdmitWorkerSessions`]).
    pub admit_worker_sessions: AdmitWorkerSessions,
}

/// `networking.admit_worker_sessions`: which sessions a worker (or agent) accepts from a
/// worker peer whose certificate the CA signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdmitWorkerSessions {
    /// Only for a job whose source is that peer, whose target is this daemon, into that
    /// job's target path, as the coordinator says (answers kept, and trusted while the
    /// coordinator is unreachable). A worker certificate then cannot write elsewhere.
    #[default]
    Job,
    /// Any session: every worker of the CA may write anywhere on this daemon (a daemon
    /// without a coordinator to ask; agent peers are still checked).
    Any,
}

impl std::str::FromStr for AdmitWorkerSessions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "job" => Ok(AdmitWorkerSessions::Job),
            "any" => Ok(AdmitWorkerSessions::Any),
            other => Err(format!("{other:?} is not one of job, any")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferConfig {
    pub max_concurrent_transfers: u32,
    /// Average content-defined chunk size; min is a quarter, max four times it.
    pub chunk_bytes_avg: u32,
    pub retry_count: u32,
    pub compression: Compression,
    pub compression_level: i32,
    /// Kernel TLS on the data plane.
    pub ktls: KtlsMode,
    /// How a target makes a small batch durable (see [`SmallBatchSync`]).
    pub small_batch_sync: SmallBatchSync,
}

/// `transfer.small_batch_sync`: how a target makes a batch of a few files durable (a
/// continuous job's changes; large batches always use `syncfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmallBatchSync {
    /// One `syncfs` of the target filesystem per batch: every file, directory and
    /// removal in one writeback and one cache flush. Cheapest and fastest where the
    /// target filesystem holds replicated data (a dedicated replication host); it also
    /// writes back whatever else is dirty on that filesystem.
    #[default]
    Filesystem,
    /// `fdatasync` of each file and `fsync` of each directory: a cache flush each, but
    /// independent of other writers on a shared target filesystem.
    PerFile,
}

impl std::str::FromStr for SmallBatchSync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "filesystem" => Ok(SmallBatchSync::Filesystem),
            "per_file" => Ok(SmallBatchSync::PerFile),
            other => Err(format!("{other:?} is not one of filesystem, per_file")),
        }
    }
}

/// `transfer.ktls`: who encrypts data-plane sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KtlsMode {
    /// The kernel where the kernel, the cipher and the socket accept it, else rustls
    /// in user space (per session).
    #[default]
    Auto,
    /// The kernel or nothing: a worker whose kernel lacks TLS refuses to start.
    On,
    /// Always rustls in user space.
    Off,
}

impl std::str::FromStr for KtlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(KtlsMode::Auto),
            "on" => Ok(KtlsMode::On),
            "off" => Ok(KtlsMode::Off),
            other => Err(format!("{other:?} is not one of auto, on, off")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub name: String,
    pub site: String,
    /// CPUs to pin one executor each to; empty = every CPU this process may use.
    pub cores: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    /// A `tracing` filter directive (`info`, `xtsync_worker=debug`, ...).
    pub level: String,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this came from (`None` for embedded defaults).
    pub source_file: Option<PathBuf>,
    pub coordinators: Vec<CoordinatorAddr>,
    pub storage: StorageConfig,
    pub networking: NetworkingConfig,
    pub transfer: TransferConfig,
    pub worker: WorkerConfig,
    pub logging: LoggingConfig,
}

/// The chunk sizes FastCDC uses, derived from `transfer.chunk_size_kb`.
pub const CHUNK_SIZE_KB_DEFAULT: u32 = 64;

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(raw::RawConfig::default(), None).expect("embedded defaults are valid")
    }
}

impl Config {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { file: path.display().to_string(), reason: e.to_string() })?;
        Config::parse(&text, Some(path))
    }

    /// Parses YAML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = path.map(|p| p.display().to_string()).unwrap_or_else(|| "<config>".into());
        let raw: raw::RawConfig = if text.trim().is_empty() {
            raw::RawConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::from_yaml(&file, e))?
        };
        Config::from_raw(raw, path)
    }

    /// Chunk size bounds for the chunker: (min, avg, max) bytes.
    pub fn chunk_bytes(&self) -> (u32, u32, u32) {
        let avg = self.transfer.chunk_bytes_avg;
        (avg / 4, avg, avg * 4)
    }
}

#[cfg(test)]
mod tests;
