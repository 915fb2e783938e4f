//! Read access to the applied state for the REST API and the scheduler.
//!
//! Reads see what this node has applied: on a follower they may lag the leader by a
//! few entries (the REST API documents reads as "as of this node's last applied index").

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, DB};

use super::{cf, CF_SM};
use crate::state::kv::{KvError, KvGet, KvPairs, KvScan};

/// Cheap to clone; every method is a blocking RocksDB call (run big scans with
/// `tokio::task::spawn_blocking`).
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
}

fn backend(e: impl std::fmt::Display) -> KvError {
    KvError::Backend(e.to_string())
}

impl StateReader {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }
}

impl KvGet for StateReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let sm = cf(&self.db, CF_SM).map_err(backend)?;
        self.db.get_cf(sm, key).map_err(backend)
    }
}

impl KvScan for StateReader {
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<KvPairs, KvError> {
        let sm = cf(&self.db, CF_SM).map_err(backend)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(sm, IteratorMode::From(prefix, Direction::Forward)) {
            if out.len() >= limit {
                break;
            }
            let (key, value) = item.map_err(backend)?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.into_vec(), value.into_vec()));
        }
        Ok(out)
    }
}
