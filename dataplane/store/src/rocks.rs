//! RocksDB engine: one database, a column family per table.

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, Direction, ErrorKind, IteratorMode, Options, ReadOptions, ReadTier,
    WriteBatch, WriteOptions, DB,
};

use crate::codec::*;
use crate::*;

const CF_CHUNKS: &str = "chunks";
const CF_TARGETS: &str = "target_files";
const CF_SOURCES: &str = "source_files";
const CF_SOURCE_INDEX: &str = "source_index";
const CF_MOVED: &str = "moved_files";
const CF_SYNCED: &str = "synced";
const CF_OUTBOX: &str = "outbox";

pub struct RocksStore {
    db: DB,
}

fn io(e: rocksdb::Error) -> StoreError {
    StoreError::Io(e.into_string())
}

impl RocksStore {
    pub fn open(path: &Path) -> Result<RocksStore, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // The store is a cache of small records: keep its footprint modest.
        opts.set_max_background_jobs(2);
        opts.set_write_buffer_size(16 << 20);
        // The tables read by whole key get a Bloom filter (10 bits per key): a name or
        // path that is not there (every chunk of a new file) is answered from memory,
        // without reading a data block, which is what lets an executor ask
        // `chunk_locations_in_memory` for most segments.
        let cfs = [CF_CHUNKS, CF_TARGETS, CF_SOURCES, CF_SOURCE_INDEX, CF_MOVED, CF_SYNCED, CF_OUTBOX].map(|n| {
            let mut cf_opts = Options::default();
            if [CF_CHUNKS, CF_TARGETS, CF_SOURCES, CF_MOVED].contains(&n) {
                let mut table = BlockBasedOptions::default();
                table.set_bloom_filter(10.0, false);
                cf_opts.set_block_based_table_factory(&table);
            }
            ColumnFamilyDescriptor::new(n, cf_opts)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), reason: e.into_string() })?;
        Ok(RocksStore { db })
    }

    /// Writes the memtables out to table files (tests: records no longer in memory).
    #[cfg(test)]
    pub(crate) fn flush_memtables(&self) {
        for name in [CF_CHUNKS, CF_TARGETS, CF_SOURCES, CF_SOURCE_INDEX, CF_MOVED, CF_SYNCED] {
            let cf = self.db.cf_handle(name).expect("column family");
            self.db.flush_cf(cf).expect("flush");
        }
    }

    fn get_many<T>(
        &self,
        cf: &str,
        keys: &[&[u8]],
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let cf = self.db.cf_handle(cf).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let results = self.db.batched_multi_get_cf(cf, keys, false);
        results
            .into_iter()
            .map(|r| match r.map_err(io)? {
                // A record we cannot read is treated as absent: it is only a cache.
                Some(v) => Ok(decode(&v).ok()),
                None => Ok(None),
            })
            .collect()
    }
}

impl WorkerStore for RocksStore {
    fn chunk_locations(&self, names: &[ChunkName]) -> Result<Vec<Option<ChunkLocation>>, StoreError> {
        let keys: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
        self.get_many(CF_CHUNKS, &keys, decode_location)
    }

    fn chunk_locations_in_memory(&self, names: &[ChunkName]) -> Result<Option<Vec<Option<ChunkLocation>>>, StoreError> {
        let cf = self.db.cf_handle(CF_CHUNKS).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let mut memory_only = ReadOptions::default();
        memory_only.set_read_tier(ReadTier::BlockCache);
        // One `Get` per name: `MultiGet` reads from disk whatever the read tier says.
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.db.get_pinned_cf_opt(cf, name, &memory_only) {
                Ok(v) => out.push(v.and_then(|v| decode_location(&v).ok())),
                Err(e) if e.kind() == ErrorKind::Incomplete => return Ok(None),
                Err(e) => return Err(io(e)),
            }
        }
        Ok(Some(out))
    }

    fn target_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<TargetRecord>>, StoreError> {
        let keys: Vec<&[u8]> = paths.iter().map(|p| &p[..]).collect();
        self.get_many(CF_TARGETS, &keys, decode_target)
    }

    fn source_records(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<SourceRecord>>, StoreError> {
        let keys: Vec<&[u8]> = paths.iter().map(|p| &p[..]).collect();
        self.get_many(CF_SOURCES, &keys, decode_source)
    }

    fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let cf = |n| self.db.cf_handle(n).ok_or(StoreError::Corrupt { what: "missing column family" });
        let (chunks, targets, sources) = (cf(CF_CHUNKS)?, cf(CF_TARGETS)?, cf(CF_SOURCES)?);
        let (index, moved, synced) = (cf(CF_SOURCE_INDEX)?, cf(CF_MOVED)?, cf(CF_SYNCED)?);
        let mut wb = WriteBatch::default();
        for op in batch.ops {
            match op {
                StoreOp::PutChunk(k, v) => wb.put_cf(chunks, k, encode_location(&v)),
                StoreOp::DeleteChunk(k) => wb.delete_cf(chunks, k),
                StoreOp::PutTarget(k, v) => wb.put_cf(targets, k, encode_target(&v)),
                StoreOp::DeleteTarget(k) => wb.delete_cf(targets, k),
                StoreOp::PutSource(k, v) => {
                    wb.put_cf(index, inode_key(v.dev, v.ino), &k);
                    wb.put_cf(index, size_digest_key(v.size, &v.digest, &k), []);
                    wb.put_cf(sources, k, encode_source(&v));
                }
                StoreOp::PutMoved(from, to) => wb.put_cf(moved, from, to),
                StoreOp::PutSynced { job, dir, name, entry } => {
                    wb.put_cf(synced, synced::entry_key(job, &dir, &name), synced::encode_entry(&entry))
                }
                StoreOp::ForgetSynced { job, dir, name } => {
                    wb.delete_cf(synced, synced::entry_key(job, &dir, &name));
                    for (from, to) in synced::subtree_ranges(job, &synced::path_of(&dir, &name)) {
                        wb.delete_range_cf(synced, from, to);
                    }
                }
                StoreOp::PutSyncedBasis(job, basis) => {
                    wb.put_cf(synced, synced::job_key(job), synced::encode_basis(&basis))
                }
            }
        }
        // WAL on, no fsync per batch: the store is a cache (see the crate docs).
        self.db.write_opt(wb, &WriteOptions::default()).map_err(io)
    }

    fn source_path_of_inode(&self, dev: u64, ino: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let key = inode_key(dev, ino);
        Ok(self.get_many(CF_SOURCE_INDEX, &[&key[..]], |v| Ok(v.to_vec()))?.pop().flatten())
    }

    fn source_paths_of_size(&self, size: u64) -> Result<Vec<DigestAtPath>, StoreError> {
        let cf = self.db.cf_handle(CF_SOURCE_INDEX).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let prefix = size_prefix(size);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, _) = item.map_err(io)?;
            if !key.starts_with(&prefix) || out.len() >= SOURCE_PATHS_OF_SIZE_MAX {
                break;
            }
            out.extend(split_size_digest_key(&key));
        }
        Ok(out)
    }

    fn has_source_records_under(&self, dir: &[u8]) -> Result<bool, StoreError> {
        let cf = self.db.cf_handle(CF_SOURCES).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let prefix = if dir.ends_with(b"/") { dir.to_vec() } else { [dir, b"/"].concat() };
        let mut it = self.db.raw_iterator_cf(cf);
        it.seek(&prefix);
        let found = it.key().is_some_and(|k| k.starts_with(&prefix));
        it.status().map_err(io)?;
        Ok(found)
    }

    fn moved_to(&self, paths: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys: Vec<&[u8]> = paths.iter().map(|p| &p[..]).collect();
        self.get_many(CF_MOVED, &keys, |v| Ok(v.to_vec()))
    }

    fn synced_entries(&self, job: u64, dir: &[u8]) -> Result<Vec<(Vec<u8>, SyncedEntry)>, StoreError> {
        self.synced_cursor(job).entries(dir)
    }

    fn synced_basis(&self, job: u64) -> Result<Option<SyncedBasis>, StoreError> {
        let key = synced::job_key(job);
        Ok(self.get_many(CF_SYNCED, &[&key[..]], synced::decode_basis)?.pop().flatten())
    }

    fn outbox_put(&self, seq: u64, record: &[u8]) -> Result<(), StoreError> {
        let cf = self.db.cf_handle(CF_OUTBOX).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let mut synced = WriteOptions::default();
        synced.set_sync(true);
        self.db.put_cf_opt(cf, seq.to_be_bytes(), record, &synced).map_err(io)
    }

    fn outbox_delete(&self, seq: u64) -> Result<(), StoreError> {
        let cf = self.db.cf_handle(CF_OUTBOX).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        self.db.delete_cf(cf, seq.to_be_bytes()).map_err(io)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let cf = self.db.cf_handle(CF_OUTBOX).ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start).take(limit) {
            let (key, value) = item.map_err(io)?;
            let seq = <[u8; 8]>::try_from(&key[..]).map_err(|_| StoreError::Corrupt { what: "outbox key" })?;
            out.push((u64::from_be_bytes(seq), value.to_vec()));
        }
        Ok(out)
    }

    fn synced_cursor(&self, job: u64) -> Box<dyn SyncedCursor + '_> {
        let it = self.db.cf_handle(CF_SYNCED).map(|cf| self.db.raw_iterator_cf(cf));
        Box::new(RocksCursor { it, job })
    }
}

struct RocksCursor<'a> {
    it: Option<rocksdb::DBRawIteratorWithThreadMode<'a, DB>>,
    job: u64,
}

impl SyncedCursor for RocksCursor<'_> {
    fn entries(&mut self, dir: &[u8]) -> Result<Vec<(Vec<u8>, SyncedEntry)>, StoreError> {
        let it = self.it.as_mut().ok_or(StoreError::Corrupt { what: "missing column family" })?;
        let prefix = synced::dir_prefix(self.job, dir);
        it.seek(&prefix);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            // A record that does not decode is left out: the entry is sent again.
            if let Ok(entry) = synced::decode_entry(v) {
                out.push((k[prefix.len()..].to_vec(), entry));
            }
            it.next();
        }
        it.status().map_err(io)?;
        Ok(out)
    }
}
