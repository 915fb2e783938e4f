//! The file as written: every key optional, unknown keys rejected.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub coordinators: Option<Vec<RawCoordinator>>,
    pub storage: Option<RawStorage>,
    pub networking: Option<RawNetworking>,
    pub transfer: Option<RawTransfer>,
    pub worker: Option<RawWorker>,
    pub logging: Option<RawLogging>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCoordinator {
    pub id: Option<u64>,
    pub host: String,
    pub port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub data_path: Option<String>,
    pub metadata_path: Option<String>,
    pub retention_days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetworking {
    pub listen_address: Option<String>,
    pub advertise_address: Option<String>,
    pub data_port: Option<u16>,
    pub http_port: Option<u16>,
    pub tls: Option<RawTls>,
    pub admit_worker_sessions: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub ca: Option<String>,
    pub crl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransfer {
    pub max_concurrent_transfers: Option<u32>,
    pub chunk_size_kb: Option<u32>,
    pub retry_count: Option<u32>,
    pub compression: Option<String>,
    pub compression_level: Option<i32>,
    pub ktls: Option<String>,
    pub small_batch_sync: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorker {
    pub name: Option<String>,
    pub site: Option<String>,
    pub cores: Option<Vec<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub level: Option<String>,
    pub format: Option<String>,
}
