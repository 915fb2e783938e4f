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
//!   so that an unchanged source file is not read again.

mod codec;
mod mem;
mod rocks;

#[cfg(test)]
mod conformance;

pub use mem::MemStore;
pub use rocks::RocksStore;

pub type ChunkName = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    pub path: Vec<u8>,
    pub offset: u64,
    pub len: u32,
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
    PutSource(Vec<u8>, SourceRecord),
}

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
    fn target_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<TargetRecord>>, StoreError>;
    fn source_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<SourceRecord>>, StoreError>;
    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError>;
}
