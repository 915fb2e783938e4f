//! The key-value surface the pure state logic runs on.
//!
//! Apply logic and queries are written against these traits so that unit tests drive
//! them with [`MemKv`] (a `BTreeMap`), while the daemon runs them on RocksDB
//! (`store::state_machine`). Keys are UTF-8 strings with one prefix per table (see
//! [`super::keys`]); values are JSON.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A failure of the storage under the state machine: never a refusal of a command.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The backend (RocksDB) failed to read; the message is the backend's.
    #[error("metadata store read failed: {0}")]
    Backend(String),
    /// A stored value does not decode: the metadata directory is corrupt or was written
    /// by an incompatible version.
    #[error("stored value under key {key:?} does not decode: {reason}")]
    Decode { key: String, reason: String },
}

/// Key-value pairs returned by a scan, in key order.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Point reads.
pub trait KvGet {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
}

/// Ordered prefix scans (queries only; apply never scans, so that one command costs
/// a bounded number of reads).
pub trait KvScan: KvGet {
    /// Up to `limit` pairs whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<KvPairs, KvError>;
}

/// Buffered writes: an apply batch is committed atomically by its owner.
pub trait KvWrite: KvGet {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);
}

pub(crate) fn get_json<T: DeserializeOwned>(kv: &impl KvGet, key: &[u8]) -> Result<Option<T>, KvError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => decode(key, &bytes).map(Some),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, KvError> {
    serde_json::from_slice(bytes)
        .map_err(|e| KvError::Decode { key: String::from_utf8_lossy(key).into_owned(), reason: e.to_string() })
}

pub(crate) fn put_json<T: Serialize>(kv: &mut impl KvWrite, key: Vec<u8>, value: &T) {
    // Serializing our own plain structs (string keys, no maps with non-string keys)
    // cannot fail; an empty value would be caught on read as a decode error.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    kv.put(key, bytes);
}

/// In-memory implementation for tests and tools.
#[derive(Debug, Default, Clone)]
pub struct MemKv {
    pub map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl KvGet for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.map.get(key).cloned())
    }
}

impl KvScan for MemKv {
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<KvPairs, KvError> {
        Ok(self
            .map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl KvWrite for MemKv {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_stops_at_prefix_end_and_limit() {
        let mut kv = MemKv::default();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            kv.put(k.as_bytes().to_vec(), b"1".to_vec());
        }
        assert_eq!(kv.scan(b"a/", 10).unwrap().len(), 3);
        assert_eq!(kv.scan(b"a/", 2).unwrap().len(), 2);
        assert_eq!(kv.scan(b"c/", 2).unwrap().len(), 0);
    }
}
