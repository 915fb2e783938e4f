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
    /// A snapshot from a coordinator of an incompatible version.
    #[error("snapshot has format version {found}, this coordinator reads version {expected}: upgrade every coordinator to the same release")]
    SnapshotFormat { found: u64, expected: u64 },
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use openraft::storage::RaftStateMachine;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{EntryPayload, Membership, RaftSnapshotBuilder};

    use super::log::LogStore;
    use super::reader::StateReader;
    use super::state_machine::StateMachineStore;
    use super::*;
    use crate::raft_types::{Entry, LogId, Node, StorageError, TypeConfig};
    use crate::state::{query, Command};

    /// A temporary directory removed on drop (the workspace has no `tempfile` in its lockfile).
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new() -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static SEQ: AtomicU64 = AtomicU64::new(0);
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("xtsync-store-test-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct RocksBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
            let dir = TempDir::new();
            let db = open(&dir.0).map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
            Ok((dir, LogStore::new(db.clone()), StateMachineStore::new(db)))
        }
    }

    /// openraft's conformance suite for log stores and state machines.
    #[test]
    fn rocksdb_store_passes_openraft_suite() {
        if let Err(e) = Suite::test_all(RocksBuilder) {
            panic!("openraft storage suite failed: {e}");
        }
    }

    fn entry(index: u64, cmd: Command) -> Entry {
        Entry { log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(cmd) }
    }

    fn reg(name: &str) -> xtsync_api::WorkerRegistration {
        xtsync_api::WorkerRegistration {
            name: name.into(),
            site: "s".into(),
            data_addr: "h:1".into(),
            http_addr: "h:2".into(),
            cores: 1,
        }
    }

    #[tokio::test]
    async fn snapshot_round_trips_and_state_survives_reopen() {
        let src_dir = TempDir::new();
        let mut src = StateMachineStore::new(open(&src_dir.0).unwrap());
        let members = Membership::new(vec![[1u64].into()], BTreeMap::from([(1u64, Node { addr: "h:7400".into() })]));
        let mut entries = vec![Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Membership(members),
        }];
        entries.push(entry(2, Command::RegisterWorker(reg("a"))));
        entries.push(entry(3, Command::RegisterWorker(reg("b"))));
        let responses = src.apply(entries).await.unwrap();
        assert_eq!(responses.len(), 3);
        let snapshot = src.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(3));

        let dst_dir = TempDir::new();
        let db = open(&dst_dir.0).unwrap();
        let mut dst = StateMachineStore::new(db.clone());
        dst.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        assert_eq!(query::workers(&StateReader::new(db.clone())).unwrap().len(), 2);
        let (applied, membership) = dst.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(3));
        assert_eq!(membership.log_id().map(|l| l.index), Some(1));
        drop(dst);
        drop(db);

        // Reopen: the tables, the applied state and the snapshot are durable.
        let db = open(&dst_dir.0).unwrap();
        let mut dst = StateMachineStore::new(db.clone());
        assert_eq!(query::counters(&StateReader::new(db)).unwrap().workers, 2);
        assert_eq!(dst.applied_state().await.unwrap().0.map(|l| l.index), Some(3));
        assert!(dst.get_current_snapshot().await.unwrap().is_some());
    }
}
