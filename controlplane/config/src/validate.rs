//! From the raw file to a checked [`Config`]: defaults, ranges, and errors that name
//! the file, the key and the reason.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::raw::*;
use crate::*;

pub const DATA_PORT_DEFAULT: u16 = 7401;
pub const HTTP_PORT_DEFAULT: u16 = 7402;
pub const COORDINATOR_PORT_DEFAULT: u16 = 7400;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read configuration: {reason}")]
    Read { file: String, reason: String },
    /// YAML syntax, an unknown key, or a value of the wrong type.
    #[error("{file}:{line}:{column}: {reason}")]
    Syntax { file: String, line: usize, column: usize, reason: String },
    /// A well-formed value that is out of range or inconsistent.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid { file: String, key: String, reason: String },
}

impl ConfigError {
    pub(crate) fn from_yaml(file: &str, e: serde_yaml_ng::Error) -> Self {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        ConfigError::Syntax { file: file.to_string(), line, column, reason: e.to_string() }
    }
}

struct Checker {
    file: String,
}

impl Checker {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: self.file.clone(), key: key.to_string(), reason: reason.into() }
    }

    fn path(&self, key: &str, value: Option<String>, default: &str) -> Result<PathBuf, ConfigError> {
        let value = value.unwrap_or_else(|| default.to_string());
        if value.is_empty() {
            return Err(self.invalid(key, "must not be empty"));
        }
        if !Path::new(&value).is_absolute() {
            return Err(self.invalid(key, format!("must be an absolute path, got {value:?}")));
        }
        Ok(PathBuf::from(value))
    }

    fn range<T: PartialOrd + std::fmt::Display + Copy>(&self, key: &str, v: T, lo: T, hi: T) -> Result<T, ConfigError> {
        if v < lo || v > hi {
            return Err(self.invalid(key, format!("{v} is out of range: expected {lo}..={hi}")));
        }
        Ok(v)
    }
}

impl Config {
    pub(crate) fn from_raw(raw: RawConfig, path: Option<&Path>) -> Result<Config, ConfigError> {
        let c = Checker { file: path.map(|p| p.display().to_string()).unwrap_or_else(|| "<config>".into()) };
        let RawConfig { coordinators, storage, networking, transfer, worker, logging } = raw;

        let coordinators = match coordinators {
            None => vec![CoordinatorAddr { id: 1, api_addr: format!("127.0.0.1:{COORDINATOR_PORT_DEFAULT}") }],
            Some(list) if list.is_empty() => return Err(c.invalid("coordinators", "needs at least one coordinator")),
            Some(list) => {
                if list.len() % 2 == 0 {
                    return Err(c.invalid(
                        "coordinators",
                        format!("{} coordinators cannot form a majority after a failure: use 1, 3 or 5", list.len()),
                    ));
                }
                let mut out = Vec::new();
                for (i, RawCoordinator { id, host, port }) in list.into_iter().enumerate() {
                    let key = format!("coordinators[{i}].host");
                    if host.trim().is_empty() || host.contains(char::is_whitespace) {
                        return Err(c.invalid(&key, format!("{host:?} is not a host name or address")));
                    }
                    let id = id.unwrap_or(i as u64 + 1);
                    if out.iter().any(|o: &CoordinatorAddr| o.id == id) {
                        return Err(c.invalid(&format!("coordinators[{i}].id"), format!("id {id} is used twice")));
                    }
                    out.push(CoordinatorAddr {
                        id,
                        api_addr: format!("{host}:{}", port.unwrap_or(COORDINATOR_PORT_DEFAULT)),
                    });
                }
                out
            }
        };

        let RawStorage { data_path, metadata_path, retention_days } = storage.unwrap_or_default();
        let storage = StorageConfig {
            data_path: c.path("storage.data_path", data_path, "/var/lib/xtsync/data")?,
            metadata_path: c.path("storage.metadata_path", metadata_path, "/var/lib/xtsync/meta")?,
            retention_days: c.range("storage.retention_days", retention_days.unwrap_or(30), 0, 36500)?,
        };

        let RawNetworking { listen_address, advertise_address, data_port, http_port, tls, admit_worker_sessions } =
            networking.unwrap_or_default();
        let listen_address = listen_address.unwrap_or_else(|| "127.0.0.1".into());
        let ip: IpAddr = listen_address
            .parse()
            .map_err(|_| c.invalid("networking.listen_address", format!("{listen_address:?} is not an IP address")))?;
        let data_port = data_port.unwrap_or(DATA_PORT_DEFAULT);
        let http_port = http_port.unwrap_or(HTTP_PORT_DEFAULT);
        if data_port != 0 && data_port == http_port {
            return Err(c.invalid("networking.http_port", format!("port {http_port} is already networking.data_port")));
        }
        let data_listen = SocketAddr::new(ip, data_port);
        let tls = match tls {
            None => None,
            Some(RawTls { cert, key, ca, crl }) => {
                let need = |k: &str, v: Option<String>| {
                    v.ok_or_else(|| c.invalid(k, "is required when networking.tls is set"))
                };
                Some(TlsConfig {
                    cert_path: c.path("networking.tls.cert", Some(need("networking.tls.cert", cert)?), "")?,
                    key_path: c.path("networking.tls.key", Some(need("networking.tls.key", key)?), "")?,
                    ca_path: c.path("networking.tls.ca", Some(need("networking.tls.ca", ca)?), "")?,
                    crl_path: match crl {
                        None => None,
                        Some(crl) => Some(c.path("networking.tls.crl", Some(crl), "")?),
                    },
                })
            }
        };
        let networking = NetworkingConfig {
            data_listen,
            http_listen: SocketAddr::new(ip, http_port),
            data_advertise: advertise_address.unwrap_or_else(|| data_listen.to_string()),
            tls,
            admit_worker_sessions: admit_worker_sessions
                .as_deref()
                .unwrap_or("job")
                .parse()
                .map_err(|e: String| c.invalid("networking.admit_worker_sessions", e))?,
        };

        let RawTransfer {
            max_concurrent_transfers,
            chunk_size_kb,
            retry_count,
            compression,
            compression_level,
            ktls,
            small_batch_sync,
        } = transfer.unwrap_or_default();
        let chunk_size_kb =
            c.range("transfer.chunk_size_kb", chunk_size_kb.unwrap_or(CHUNK_SIZE_KB_DEFAULT), 4, 4096)?;
        if !chunk_size_kb.is_power_of_two() {
            return Err(c.invalid("transfer.chunk_size_kb", format!("{chunk_size_kb} must be a power of two")));
        }
        let transfer = TransferConfig {
            max_concurrent_transfers: c.range(
                "transfer.max_concurrent_transfers",
                max_concurrent_transfers.unwrap_or(128),
                1,
                65536,
            )?,
            chunk_bytes_avg: chunk_size_kb * 1024,
            retry_count: c.range("transfer.retry_count", retry_count.unwrap_or(5), 0, 1000)?,
            compression: compression
                .as_deref()
                .unwrap_or("auto")
                .parse()
                .map_err(|e: String| c.invalid("transfer.compression", e))?,
            compression_level: c.range("transfer.compression_level", compression_level.unwrap_or(1), -7, 19)?,
            ktls: ktls.as_deref().unwrap_or("auto").parse().map_err(|e: String| c.invalid("transfer.ktls", e))?,
            small_batch_sync: small_batch_sync
                .as_deref()
                .unwrap_or("filesystem")
                .parse()
                .map_err(|e: String| c.invalid("transfer.small_batch_sync", e))?,
        };

        let RawWorker { name, site, cores } = worker.unwrap_or_default();
        let name = name.unwrap_or_else(|| "worker".into());
        if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            return Err(
                c.invalid("worker.name", format!("{name:?} must be non-empty ASCII letters, digits, '-' or '_'"))
            );
        }
        let worker =
            WorkerConfig { name, site: site.unwrap_or_else(|| "default".into()), cores: cores.unwrap_or_default() };

        let RawLogging { level, format } = logging.unwrap_or_default();
        let json = match format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => return Err(c.invalid("logging.format", format!("{other:?}: expected text or json"))),
        };
        let logging = LoggingConfig { level: level.unwrap_or_else(|| "info".into()), json };

        Ok(Config {
            source_file: path.map(Path::to_path_buf),
            coordinators,
            storage,
            networking,
            transfer,
            worker,
            logging,
        })
    }
}
