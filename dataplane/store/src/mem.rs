//! In-memory engine for unit tests, with an injectable failure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::*;

#[derive(Default)]
pub struct MemStore {
    chunks: Mutex<HashMap<ChunkName, ChunkLocation>>,
    targets: Mutex<HashMap<Vec<u8>, TargetRecord>>,
    sources: Mutex<HashMap<Vec<u8>, SourceRecord>>,
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

impl WorkerStore for MemStore {
    fn chunk_locations(&self, names: &[ChunkName]) -> Result<Vec<Option<ChunkLocation>>, StoreError> {
        self.check()?;
        Ok(lookup(&self.chunks, names))
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
        for op in batch.ops {
            match op {
                StoreOp::PutChunk(k, v) => drop(c.insert(k, v)),
                StoreOp::DeleteChunk(k) => drop(c.remove(&k)),
                StoreOp::PutTarget(k, v) => drop(t.insert(k, v)),
                StoreOp::DeleteTarget(k) => drop(t.remove(&k)),
                StoreOp::PutSource(k, v) => drop(s.insert(k, v)),
            }
        }
        Ok(())
    }
}
