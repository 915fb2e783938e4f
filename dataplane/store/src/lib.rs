//! The worker's local metadata, behind one trait ([`WorkerStore`]) with two engines:
//! RocksDB for the daemon ([`RocksStore`]) and an in-memory one for unit tests
//! ([`MemStore`]). Both pass the same conformance suite (`conformance.rs`), the TiKV
//! `engine_traits` pattern. This crate has no dependency on the data plane's I/O.
//!
//! What is kept (all of it a cache: losing it costs bandwidth, never correctness,
//! because the target re-hashes every chunk it copies and the source re-reads files
//! it has no valid record for):
//! - **chunk index** (target role): chunk name → a place where a copy lives at this
//!   worker (absolute file path, offset, length);
//! - **target records**: absolute path → what xtsync last wrote there (inode, size,
//!   mtime, content digest), to recognise an unchanged file without reading it;
//! - **source records**: absolute path → (device, inode, size, mtime, ctime, digest),
//!   so that an unchanged source file is not read again; indexed by inode and by
//!   (size, digest) so that a file at a new path can be recognised as one the source
//!   had elsewhere (a rename or a copy). The index is never trusted alone: a hit names
//!   a path whose record is read and checked again;
//! - **moves** (target role): absolute path → the path its file was renamed to, so a
//!   chunk index entry naming the old path still finds the chunks (checked on use);
//! - **synced** (source role): per job, the stat of every entry its target acknowledged,
//!   and the basis that makes them valid (`synced.rs`), so that a pass sends only what
//!   changed since. Losing it costs one pass that sends every entry.
//!
//! One table is not a cache: the **outbox** (source role) holds catalog commits the
//! coordinators have not acknowledged yet, written with an fsync before the worker
//! tries to deliver them, so that neither a coordinator outage nor a worker restart
//! loses a file version. Losing the store loses what it held; a reconcile pass
//! finds those files again.

#![forbid(unsafe_code)]

mod codec;
mod mem;
mod rocks;
mod synced;

#[cfg(test)]
mod conformance;

pub use mem::MemStore;
pub use rocks::RocksStore;
pub use synced::{EntryStat, SyncedBasis, SyncedEntry};

pub type ChunkName = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub path: Vec<u8>,
    pub offset: u64,
    pub len: u32,
    /// Inode of the file at `path` when the chunk was indexed; 0 if unknown. Another
    /// inode there now (the file was replaced by a newer version) makes the entry stale
    /// without reading it.
    pub ino: u64,
    /// The file's ctime (ns) when indexed; 0 if unknown. The same inode with the same
    /// ctime has not been written since (a write or a metadata change moves the ctime,
    /// and nobody can set it back), so the chunk is copied in the kernel without being
    /// read and hashed again.
    pub ctime_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetRecord {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub digest: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRecord {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub digest: [u8; 32],
}

/// One atomic group of changes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreBatch {
    pub ops: Vec<StoreOp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    PutChunk(ChunkName, ChunkLocation),
    DeleteChunk(ChunkName),
    PutTarget(Vec<u8>, TargetRecord),
    DeleteTarget(Vec<u8>),
    /// Also indexes the record by inode and by (size, digest).
    PutSource(Vec<u8>, SourceRecord),
    /// The file at the first path was renamed to the second.
    PutMoved(Vec<u8>, Vec<u8>),
    /// Entry `name` of directory `dir` of job `job` (paths below the job's root; the
    /// root is `("", "")`) was sent with this stat by a pass of this generation.
    PutSynced {
        job: u64,
        dir: Vec<u8>,
        name: Vec<u8>,
        entry: SyncedEntry,
    },
    /// Forgets entry (`dir`, `name`) of `job` and everything below it.
    ForgetSynced {
        job: u64,
        dir: Vec<u8>,
        name: Vec<u8>,
    },
    PutSyncedBasis(u64, SyncedBasis),
}

/// A content digest and the absolute path a source record gave it.
pub type DigestAtPath = ([u8; 32], Vec<u8>);

/// Source paths indexed under one size, at most, returned by `source_paths_of_size`.
pub const SOURCE_PATHS_OF_SIZE_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("metadata store I/O: {0}")]
    Io(String),
    #[error("metadata store record is corrupt ({what}); delete the store directory to rebuild it")]
    Corrupt { what: &'static str },
}

/// Blocking calls: run them off the executor threads (`spawn_blocking`).
pub trait WorkerStore: Send + Sync + 'static {
    fn chunk_locations(&self, names: &[ChunkName]) -> Result<Vec<Option<ChunkLocation>>, StoreError>;
    /// As [`WorkerStore::chunk_locations`], but only from what the store holds in memory
    /// (never a disk read, so an executor thread may call it): `None` when any of the
    /// names would need one.
    fn chunk_locations_in_memory(&self, names: &[ChunkName]) -> Result<Option<Vec<Option<ChunkLocation>>>, StoreError>;
    fn target_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<TargetRecord>>, StoreError>;
    fn source_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<SourceRecord>>, StoreError>;
    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError>;
    /// The last path recorded for (device, inode) by `PutSource` (maybe stale).
    fn source_path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// (digest, path) of source records put with this size (maybe stale), at most
    /// `SOURCE_PATHS_OF_SIZE_MAX`.
    fn source_paths_of_size(&self, size: u64) -> Result<Vec<DigestAtPath>, StoreError>;
    /// Whether any source record lies beneath directory `dir` (an absolute path without
    /// a trailing `/`).
    fn has_source_records_under(&self, dir: &[u8]) -> Result<bool, StoreError>;
    /// Where the files at `paths` were renamed to (`PutMoved`), if they were.
    fn moved_to(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// The synced entries of directory `dir` of `job`: (name, stat), in name order. For
    /// the root (`dir` empty) this includes the root itself, with an empty name.
    fn synced_entries(&self, job: u64, dir: &[u8]) -> Result<Vec<(Vec<u8>, SyncedEntry)>, StoreError>;
    fn synced_basis(&self, job: u64) -> Result<Option<SyncedBasis>, StoreError>;
    /// Keeps `record` under `seq` in the outbox, durably (fsync) before returning.
    fn outbox_put(&self, seq: u64, record: &[u8]) -> Result<(), StoreError>;
    fn outbox_delete(&self, seq: u64) -> Result<(), StoreError>;
    /// The outbox's first `limit` records, oldest (lowest `seq`) first.
    fn outbox(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Reads `job`'s synced entries directory after directory with one iterator (a
    /// walk asks for thousands of directories), as of the cursor's creation.
    fn synced_cursor(&self, job: u64) -> Box<dyn SyncedCursor + '_>;
}

/// See [`WorkerStore::synced_cursor`].
pub trait SyncedCursor {
    /// As [`WorkerStore::synced_entries`].
    fn entries(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, SyncedEntry)>, StoreError>;
}
