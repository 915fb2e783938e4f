//! The Raft state machine on RocksDB: applies entries with the pure logic of
//! [`crate::state`], builds and installs snapshots.
//!
//! Each `apply` call writes ONE synced batch holding the table changes of all its
//! entries together with `last_applied` (and the membership), so that after a crash the
//! tables and `last_applied` always agree and openraft re-applies exactly the rest.

// openraft's `StorageError` (the error type its storage traits demand) is large; the
// helpers here return it as-is because boxing it would only be undone at the trait boundary.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot, StorageIOError};
use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::{cf, sync_write, StoreError, CF_SM, CF_SM_META, FORMAT_VERSION};
use crate::raft_types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::state::kv::{KvError, KvGet, KvWrite};
use crate::state::{self, Outcome, Response};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT: &[u8] = b"snapshot";

/// Snapshot payload: every row of the `sm` column family.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    format_version: u64,
    rows: Vec<(String, String)>,
}

/// The current snapshot, persisted in `sm_meta` so that it survives restarts.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn get_json<T: for<'de> Deserialize<'de>>(
    get: impl FnOnce() -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> Result<Option<T>, StorageError> {
    match get().map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(sm_read_err),
    }
}

/// The writes of one apply call, readable before they are committed (a later entry of
/// the batch must see what an earlier one wrote).
struct BatchKv<'a> {
    db: &'a DB,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl KvGet for BatchKv<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        let sm = cf(self.db, CF_SM).map_err(|e| KvError::Backend(e.to_string()))?;
        self.db.get_cf(sm, key).map_err(|e| KvError::Backend(e.to_string()))
    }
}

impl KvWrite for BatchKv<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert(key, Some(value));
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.pending.insert(key, None);
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
}

impl StateMachineStore {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db }
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let meta = cf(&self.db, CF_SM_META).map_err(sm_read_err)?;
        get_json(|| self.db.get_cf(meta, key))
    }

    fn write_batch(
        &self,
        rows: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        last_applied: Option<LogId>,
        membership: Option<StoredMembership>,
    ) -> Result<(), StoreError> {
        let sm = cf(&self.db, CF_SM)?;
        let meta = cf(&self.db, CF_SM_META)?;
        let mut batch = WriteBatch::default();
        for (key, value) in rows {
            match value {
                Some(v) => batch.put_cf(sm, key, v),
                None => batch.delete_cf(sm, key),
            }
        }
        if let Some(id) = last_applied {
            batch.put_cf(meta, LAST_APPLIED, serde_json::to_vec(&id)?);
        }
        if let Some(m) = membership {
            batch.put_cf(meta, MEMBERSHIP, serde_json::to_vec(&m)?);
        }
        self.db.write_opt(batch, &sync_write())?;
        Ok(())
    }

    fn install(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StoreError> {
        let parsed: SnapshotData = serde_json::from_slice(&data)?;
        if parsed.format_version != FORMAT_VERSION {
            return Err(StoreError::SnapshotFormat { found: parsed.format_version, expected: FORMAT_VERSION });
        }
        let sm = cf(&self.db, CF_SM)?;
        let sm_meta = cf(&self.db, CF_SM_META)?;
        let mut batch = WriteBatch::default();
        // Keys are printable ASCII table prefixes, so [0x00, 0xff) covers every row.
        batch.delete_range_cf(sm, [0u8], [0xffu8]);
        for (key, value) in parsed.rows {
            batch.put_cf(sm, key, value);
        }
        batch.put_cf(sm_meta, LAST_APPLIED, serde_json::to_vec(&meta.last_log_id)?);
        batch.put_cf(sm_meta, MEMBERSHIP, serde_json::to_vec(&meta.last_membership)?);
        batch.put_cf(sm_meta, SNAPSHOT, serde_json::to_vec(&StoredSnapshot { meta: meta.clone(), data })?);
        self.db.write_opt(batch, &sync_write())?;
        Ok(())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last_applied: Option<LogId> = self.meta::<Option<LogId>>(LAST_APPLIED)?.flatten();
        let membership: StoredMembership = self.meta(MEMBERSHIP)?.unwrap_or_default();
        Ok((last_applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut kv = BatchKv { db: &self.db, pending: BTreeMap::new() };
        let mut responses = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        for entry in entries {
            let log_id = entry.log_id;
            last_applied = Some(log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Ok(Outcome::Nothing),
                EntryPayload::Normal(cmd) => {
                    state::apply(&mut kv, cmd).map_err(|e| StorageError::from(StorageIOError::apply(log_id, &e)))?
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m));
                    Ok(Outcome::Nothing)
                }
            };
            responses.push(response);
        }
        let rows = kv.pending;
        self.write_batch(rows, last_applied, membership).map_err(sm_write_err)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.install(meta, snapshot.into_inner())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored: Option<StoredSnapshot> = self.meta(SNAPSHOT)?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

impl StateMachineStore {
    /// Reads every row and the applied state from one RocksDB snapshot, so that the
    /// result is consistent even while apply keeps writing.
    fn read_consistent(&self) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
        let sm = cf(&self.db, CF_SM).map_err(sm_read_err)?;
        let sm_meta = cf(&self.db, CF_SM_META).map_err(sm_read_err)?;
        let view = self.db.snapshot();
        let last_log_id: Option<LogId> = get_json::<Option<LogId>>(|| view.get_cf(sm_meta, LAST_APPLIED))?.flatten();
        let last_membership: StoredMembership = get_json(|| view.get_cf(sm_meta, MEMBERSHIP))?.unwrap_or_default();
        let mut rows = Vec::new();
        for item in view.iterator_cf(sm, IteratorMode::Start) {
            let (key, value) = item.map_err(sm_read_err)?;
            let key = String::from_utf8(key.into_vec()).map_err(sm_read_err)?;
            let value = String::from_utf8(value.into_vec()).map_err(sm_read_err)?;
            rows.push((key, value));
        }
        let data = serde_json::to_vec(&SnapshotData { format_version: FORMAT_VERSION, rows }).map_err(sm_read_err)?;
        let snapshot_id = match &last_log_id {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, xtsync_api::now_unix_ms()),
            None => format!("empty-{}", xtsync_api::now_unix_ms()),
        };
        Ok((SnapshotMeta { last_log_id, last_membership, snapshot_id }, data))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, data) = self.read_consistent()?;
        let sm_meta = cf(&self.db, CF_SM_META).map_err(sm_write_err)?;
        let stored =
            serde_json::to_vec(&StoredSnapshot { meta: meta.clone(), data: data.clone() }).map_err(sm_write_err)?;
        self.db.put_cf_opt(sm_meta, SNAPSHOT, stored, &sync_write()).map_err(sm_write_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}
