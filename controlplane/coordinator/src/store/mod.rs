//! Durable storage of a coordinator: ONE RocksDB database holding the Raft log and the
//! state machine in column families, so that both share one WAL and one fsync policy.
//!
//! | column family | keys | values |
//! |---|---|---|
//! | `raft_log` | log index, u64 big-endian | JSON [`crate::raft_types::Entry`] |
//! | `raft_meta` | `vote`, `committed`, `last_purged` | JSON |
//! | `sm` | table-prefixed keys of [`crate::state::keys`] | JSON |
//! | `sm_meta` | `format_version`, `last_applied`, `membership`, `snapshot` | JSON |
//!
//! Blocking RocksDB calls run directly inside the openraft storage callbacks: they are
//! short point writes and reads (plus one fsync per append/apply batch). Moving them to
//! `spawn_blocking` is a later optimisation; big scans for the REST API already run there.

pub mod log;
pub mod reader;
pub mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_META: &str = "raft_meta";
pub const CF_SM: &str = "sm";
pub const CF_SM_META: &str = "sm_meta";
const COLUMN_FAMILIES: [&str; 4] = [CF_RAFT_LOG, CF_RAFT_META, CF_SM, CF_SM_META];

/// On-disk format of the state machine; bumped on incompatible key/value changes.
pub const FORMAT_VERSION: u64 = 1;
const FORMAT_VERSION_KEY: &[u8] = b"format_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB could not open the directory (permissions, lock held by another process, ...).
    #[error("cannot open metadata store {path}: {source} (is another coordinator using this directory?)")]
    Open { path: PathBuf, source: rocksdb::Error },
    /// A read or write of the store failed.
    #[error("metadata store I/O failed: {0}")]
    Io(#[from] rocksdb::Error),
    /// A value could not be encoded to JSON (a bug: our types always encode).
    #[error("cannot encode a metadata value: {0}")]
    Encode(#[from] serde_json::Error),
    /// The directory was written by an incompatible version.
    #[error("metadata store {path} has format version {found}, this coordinator reads version {expected}")]
    FormatVersion { path: PathBuf, found: String, expected: u64 },
    /// A column family is missing although the database opened with all of them.
    #[error("column family {0} is missing from the metadata store")]
    MissingColumnFamily(&'static str),
}

/// Opens (creating if needed) the coordinator database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = COLUMN_FAMILIES.iter().map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|source| StoreError::Open { path: dir.to_path_buf(), source })?;
    let meta = cf(&db, CF_SM_META)?;
    match db.get_cf(meta, FORMAT_VERSION_KEY)? {
        None => db.put_cf(meta, FORMAT_VERSION_KEY, FORMAT_VERSION.to_string())?,
        Some(v) if v == FORMAT_VERSION.to_string().as_bytes() => {}
        Some(v) => {
            return Err(StoreError::FormatVersion {
                path: dir.to_path_buf(),
                found: String::from_utf8_lossy(&v).into_owned(),
                expected: FORMAT_VERSION,
            })
        }
    }
    Ok(Arc::new(db))
}

/// The handle of a column family that [`open`] created.
pub fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingColumnFamily(name))
}

/// Write options for everything Raft relies on after a crash: fsync the WAL.
pub fn sync_write() -> rocksdb::WriteOptions {
    let mut w = rocksdb::WriteOptions::default();
    w.set_sync(true);
    w
}
