//! In-memory engine for unit tests, with an injectable failure.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::codec::{inode_key, size_digest_key, size_prefix, split_size_digest_key};
use crate::synced::{
    decode_basis, dir_prefix, encode_basis, encode_entry, entries_in_range, entry_key, job_key, path_of, subtree_ranges,
};
use crate::*;

#[derive(Default)]
pub struct MemStore {
    chunks: Mutex<HashMap<ChunkName, ChunkLocation>>,
    targets: Mutex<HashMap<Vec<u8>, TargetRecord>>,
    sources: Mutex<HashMap<Vec<u8>, SourceRecord>>,
    source_index: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    moved: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    /// The synced table, keyed as in RocksDB (`synced.rs`).
    synced: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    outbox: Mutex<BTreeMap<u64, Vec<u8>>>,
    /// When set, every call fails as a broken disk would.
    pub fail: AtomicBool,
}

impl MemStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(StoreError::Io("injected failure".into()));
        }
        Ok(())
    }
}

fn lookup<K: std::hash::Hash + Eq, V: Clone>(m: &Mutex<HashMap<K, V>>, keys: &[K]) -> Vec<Option<V>> {
    let m = m.lock().unwrap_or_else(|p| p.into_inner());
    keys.iter().map(|k| m.get(k).cloned()).collect()
}

fn remove_range(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, (from, to): (Vec<u8>, Vec<u8>)) {
    let doomed: Vec<Vec<u8>> = map.range(from..to).map(|(k, _)| k.clone()).collect();
    for k in doomed {
        map.remove(&k);
    }
}

impl WorkerStore for MemStore {
    fn chunk_locations(&self, names: &[ChunkName]) -> Result<Vec<Option<ChunkLocation>>, StoreError> {
        self.check()?;
        Ok(lookup(&self.chunks, names))
    }

    fn chunk_locations_in_memory(&self, names: &[ChunkName]) -> Result<Option<Vec<Option<ChunkLocation>>>, StoreError> {
        self.chunk_locations(names).map(Some)
    }

    fn target_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<TargetRecord>>, StoreError> {
        self.check()?;
        Ok(lookup(&self.targets, paths))
    }

    fn source_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<SourceRecord>>, StoreError> {
        self.check()?;
        Ok(lookup(&self.sources, paths))
    }

    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        self.check()?;
        let mut c = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        let mut t = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let mut s = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.source_index.lock().unwrap_or_else(|p| p.into_inner());
        let mut moved = self.moved.lock().unwrap_or_else(|p| p.into_inner());
        let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        for op in batch.ops {
            match op {
                StoreOp::PutChunk(k, v) => drop(c.insert(k, v)),
                StoreOp::DeleteChunk(k) => drop(c.remove(&k)),
                StoreOp::PutTarget(k, v) => drop(t.insert(k, v)),
                StoreOp::DeleteTarget(k) => drop(t.remove(&k)),
                StoreOp::PutSource(k, v) => {
                    index.insert(inode_key(v.dev, v.ino), k.clone());
                    index.insert(size_digest_key(v.size, &v.digest, &k), Vec::new());
                    s.insert(k, v);
                }
                StoreOp::PutMoved(from, to) => drop(moved.insert(from, to)),
                StoreOp::PutSynced { job, dir, name, entry } => {
                    drop(synced.insert(entry_key(job, &dir, &name), encode_entry(&entry)))
                }
                StoreOp::ForgetSynced { job, dir, name } => {
                    let key = entry_key(job, &dir, &name);
                    synced.remove(&key);
                    for range in subtree_ranges(job, &path_of(&dir, &name)) {
                        remove_range(&mut synced, range);
                    }
                }
                StoreOp::PutSyncedBasis(job, basis) => drop(synced.insert(job_key(job), encode_basis(&basis))),
            }
        }
        Ok(())
    }

    fn source_path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.check()?;
        Ok(self.source_index.lock().unwrap_or_else(|p| p.into_inner()).get(&inode_key(dev, ino)).cloned())
    }

    fn source_paths_of_size(&self, size: u64) -> Result<Vec<DigestAtPath>, StoreError> {
        self.check()?;
        let prefix = size_prefix(size);
        let index = self.source_index.lock().unwrap_or_else(|p| p.into_inner());
        Ok(index
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| split_size_digest_key(k))
            .take(SOURCE_PATHS_OF_SIZE_MAX)
            .collect())
    }

    fn has_source_records_under(&self, dir: &[u8]) -> Result<bool, StoreError> {
        self.check()?;
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let prefix = if dir.ends_with(b"/") { dir.to_vec() } else { [dir, b"/"].concat() };
        Ok(sources.keys().any(|k| k.starts_with(&prefix)))
    }

    fn moved_to(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.check()?;
        Ok(lookup(&self.moved, paths))
    }

    fn synced_entries(&self, job: u64, dir: &[u8]) -> Result<Vec<(Vec<u8>, SyncedEntry)>, StoreError> {
        self.check()?;
        let prefix = dir_prefix(job, dir);
        let synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        Ok(entries_in_range(&prefix, synced.range(prefix.clone()..).map(|(k, v)| (&k[..], &v[..]))))
    }

    fn synced_basis(&self, job: u64) -> Result<Option<SyncedBasis>, StoreError> {
        self.check()?;
        let synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
        Ok(synced.get(&job_key(job)).and_then(|v| decode_basis(v).ok()))
    }

    fn outbox_put(&self, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        self.check()?;
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, record.to_vec());
        Ok(())
    }

    fn outbox_delete(&self, seq: u64) -> Result<(), StoreError> {
        self.check()?;
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq);
        Ok(())
    }

    fn outbox(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.check()?;
        let outbox = self.outbox.lock().unwrap_or_else(|p| p.into_inner());
        Ok(outbox.iter().take(limit).map(|(k, v)| (*k, v.clone())).collect())
    }

    fn synced_cursor(&self, job: u64) -> Box<dyn SyncedCursor + '_> {
        Box::new(MemCursor { store: self, job })
    }
}

struct MemCursor<'a> {
    store: &'a MemStore,
    job: u64,
}

impl SyncedCursor for MemCursor<'_> {
    fn entries(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, SyncedEntry)>, StoreError> {
        self.store.synced_entries(self.job, dir)
    }
}
