//! What a job's target already holds, as the source knows it: the stat of every entry
//! the target acknowledged (the store's synced table), valid for one target tree.
//!
//! A pass that trusts them sends only the entries whose stat changed since, and the
//! directories that hold them; an unchanged tree costs the source a walk (`lstat` of
//! every entry) and nothing on the wire. The change time (`ctime`) moves on every
//! change of content, mode, owner, xattrs or links and cannot be set by a user, so an
//! entry whose stat is equal has not changed. An entry changed less than
//! [`RECENT_NS`] before the pass started is not recorded (timestamps are coarser than
//! the writes they stamp), so it goes again next pass.
//!
//! The acknowledgements are trusted only while:
//! - the target tree is the same (`HelloAck::tree_id`: the root directory's device,
//!   inode and birth time) and so is the job's shape (target name and root, source
//!   root, whether deletions propagate) — together the basis token;
//! - a pass checked every entry at the target less than the job's
//!   `reconcile_interval_s` ago. Reconcile passes, passes after the basis changed and
//!   passes after that interval send every entry, as the first pass did.
//!
//! What this does not see: a change made at the target by something other than xtsync
//! (a file edited there). The next verifying pass repairs it; `xtsyncctl reconcile`
//! runs one now.

use std::collections::HashMap;

use xtsync_store::{EntryStat, StoreBatch, StoreOp, SyncedBasis, SyncedCursor, SyncedEntry, WorkerStore};
use xtsync_wire::RelPath;

use crate::item::ScanError;

/// Entries changed within this long before the pass started are never recorded.
pub const RECENT_NS: i64 = 1_000_000_000;

/// What makes a job's acknowledgements valid: the target tree and the job's shape.
pub fn basis_token(
    target_name: &str,
    target_root: &str,
    source_root: &str,
    delete: bool,
    tree_id: &[u8; 32],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"xtsync synced basis v1");
    for part in [target_name.as_bytes(), target_root.as_bytes(), source_root.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&[delete as u8]);
    h.update(tree_id);
    *h.finalize().as_bytes()
}

/// Whether a pass may skip what the target acknowledged: not a reconcile, the same
/// basis, and a verifying pass less than `reconcile_interval_s` ago (0: never again).
pub fn may_trust(
    stored: Option<&SyncedBasis>,
    token: &[u8; 32],
    now_unix_s: u64,
    reconcile_interval_s: u32,
    reconcile: bool,
) -> bool {
    let Some(stored) = stored else { return false };
    let fresh = reconcile_interval_s == 0
        || now_unix_s.saturating_sub(stored.verified_unix_s) < u64::from(reconcile_interval_s);
    !reconcile && stored.token == *token && fresh
}

/// Splits a path below the root into (directory, name); the root is ("", "").
fn dir_and_name(rel: &RelPath) -> (Vec<u8>, Vec<u8>) {
    match rel.split_last() {
        Some((dir, name)) => (dir.as_bytes().to_vec(), name.to_vec()),
        None => (Vec::new(), Vec::new()),
    }
}

/// Store writes a walk thread keeps before writing them (memory stays flat in the
/// number of entries a pass sends).
const OPS_BUFFERED_MAX: usize = 8192;

/// One walk's use of the synced table: what it may skip, and what it records.
///
/// Entries are written as the walk goes, tagged with this pass's generation (one more
/// than the basis's); the basis, with that generation, is written only when the pass
/// succeeded. A pass trusts only entries of a generation at most its basis's: what a
/// failed pass wrote is never trusted, and the next pass that succeeds has rewritten or
/// removed all of it (it sends every entry it does not trust, forgets what is gone, and
/// removes what changed too recently to record).
pub struct SyncedWalk {
    job: u64,
    /// Skip entries whose stat equals the acknowledged one.
    pub trusted: bool,
    /// Entries of a later generation than this are not trusted.
    trusted_generation: u64,
    recent_from_ns: i64,
    /// Recorded when the pass succeeded; its generation tags what this pass writes.
    basis: SyncedBasis,
    ops: Vec<StoreOp>,
    ops_buffered_max: usize,
    write_failed: bool,
}

impl SyncedWalk {
    /// For a pass of `job` that started at `started_unix_ns`, with the stored basis
    /// `stored` (trusted or not); `basis` is the one to record if it succeeds (its
    /// generation is this pass's).
    pub fn new(
        job: u64,
        trusted: bool,
        stored: Option<&SyncedBasis>,
        basis: SyncedBasis,
        started_unix_ns: i64,
    ) -> Self {
        SyncedWalk {
            job,
            trusted,
            trusted_generation: stored.map_or(0, |b| b.generation),
            recent_from_ns: started_unix_ns - RECENT_NS,
            basis,
            ops: Vec::new(),
            ops_buffered_max: OPS_BUFFERED_MAX,
            write_failed: false,
        }
    }

    /// A view for another thread of the same walk (see [`SyncedWalk::absorb`]).
    pub(crate) fn fork(&self) -> SyncedWalk {
        SyncedWalk { ops: Vec::new(), write_failed: false, ..*self }
    }

    /// Takes in what a fork has not written yet.
    pub(crate) fn absorb(&mut self, fork: SyncedWalk) {
        self.ops.extend(fork.ops);
        self.write_failed |= fork.write_failed;
    }

    /// The recorded entries of directory `dir`, by name (the root's own under "").
    pub(crate) fn known(
        &self,
        cursor: &mut dyn SyncedCursor,
        dir: &RelPath,
    ) -> Result<HashMap<Vec<u8>, SyncedEntry>, ScanError> {
        Ok(cursor.entries(dir.as_bytes())?.into_iter().collect())
    }

    pub(crate) fn job(&self) -> u64 {
        self.job
    }

    /// True if the entry may be skipped: trusted, and recorded with this stat by a pass
    /// that succeeded.
    pub(crate) fn unchanged(&self, known: Option<&SyncedEntry>, stat: &EntryStat) -> bool {
        self.trusted && known.is_some_and(|k| k.stat == *stat && k.generation <= self.trusted_generation)
    }

    /// The entry at `rel` is being sent with this stat. One that changed too recently
    /// is removed instead (timestamps are coarser than writes).
    pub(crate) fn sent(&mut self, rel: &RelPath, stat: EntryStat) {
        let (dir, name) = dir_and_name(rel);
        if stat.ctime_ns >= self.recent_from_ns || stat.mtime_ns >= self.recent_from_ns {
            if !rel.is_root() {
                self.ops.push(StoreOp::ForgetSynced { job: self.job, dir, name });
            }
            return;
        }
        let entry = SyncedEntry { stat, generation: self.basis.generation };
        self.ops.push(StoreOp::PutSynced { job: self.job, dir, name, entry });
    }

    /// Entry `name` of `dir` is no longer at the source: forget it and what was below.
    pub(crate) fn gone(&mut self, dir: &RelPath, name: &[u8]) {
        self.ops.push(StoreOp::ForgetSynced { job: self.job, dir: dir.as_bytes().to_vec(), name: name.to_vec() });
    }

    /// Writes the buffered entries once there are enough of them.
    pub(crate) fn write_some(&mut self, store: &dyn WorkerStore) {
        if self.ops.len() >= self.ops_buffered_max {
            self.write(store);
        }
    }

    fn write(&mut self, store: &dyn WorkerStore) {
        let ops = std::mem::take(&mut self.ops);
        if ops.is_empty() || self.write_failed {
            return;
        }
        if let Err(e) = store.apply(StoreBatch { ops }) {
            // Only costs entries sent again: nothing unwritten is ever trusted.
            tracing::warn!(error = %e, "could not record what the target acknowledged");
            self.write_failed = true;
        }
    }

    /// Ends the walk's use of the table: writes what is buffered and, if the pass
    /// `succeeded` (every entry applied and durable at the target) and every write
    /// went through, the basis that makes this pass's entries trusted.
    pub fn finish(mut self, store: &dyn WorkerStore, succeeded: bool) {
        self.write(store);
        if succeeded && !self.write_failed {
            self.ops.push(StoreOp::PutSyncedBasis(self.job, self.basis));
            self.write(store);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_the_same_basis_a_recent_verification_and_no_reconcile() {
        let token = basis_token("b", "/t", "/s", true, &[1; 32]);
        let stored = SyncedBasis { token, verified_unix_s: 1_000, generation: 3 };
        assert!(may_trust(Some(&stored), &token, 1_500, 3_600, false));
        assert!(!may_trust(Some(&stored), &token, 1_500, 3_600, true), "a reconcile checks everything");
        assert!(!may_trust(Some(&stored), &token, 4_600, 3_600, false), "verified too long ago");
        assert!(may_trust(Some(&stored), &token, 99_999, 0, false), "0: no periodic verification");
        assert!(!may_trust(None, &token, 1_500, 3_600, false), "nothing acknowledged yet");
        for other in [
            basis_token("b", "/t", "/s", true, &[2; 32]),
            basis_token("c", "/t", "/s", true, &[1; 32]),
            basis_token("b", "/t2", "/s", true, &[1; 32]),
            basis_token("b", "/t", "/s2", true, &[1; 32]),
            basis_token("b", "/t", "/s", false, &[1; 32]),
        ] {
            assert!(!may_trust(Some(&stored), &other, 1_500, 3_600, false));
        }
    }

    fn entry(stat: EntryStat, generation: u64) -> SyncedEntry {
        SyncedEntry { stat, generation }
    }

    #[test]
    fn recent_entries_are_removed_and_a_failed_pass_writes_no_basis() {
        use xtsync_store::MemStore;
        let store = MemStore::default();
        let stored = SyncedBasis { token: [0; 32], verified_unix_s: 5, generation: 1 };
        let next = SyncedBasis { generation: 2, ..stored };
        let started_ns = 100 * 1_000_000_000;
        let old = EntryStat { dev: 1, ino: 2, size: 3, mtime_ns: 10, ctime_ns: 20 };
        let recent = EntryStat { ctime_ns: started_ns - RECENT_NS / 2, ..old };
        let put = |name: &str, stat| StoreOp::PutSynced {
            job: 9,
            dir: b"a".to_vec(),
            name: name.as_bytes().to_vec(),
            entry: entry(stat, 1),
        };
        store.apply(StoreBatch { ops: vec![put("c", old), put("d", old)] }).unwrap();
        let mut w = SyncedWalk::new(9, true, Some(&stored), next, started_ns);
        w.sent(&RelPath::new("a/b").unwrap(), old);
        w.sent(&RelPath::new("a/c").unwrap(), recent);
        w.gone(&RelPath::new("a").unwrap(), b"d");
        w.finish(&store, false);
        let names: Vec<(Vec<u8>, SyncedEntry)> = store.synced_entries(9, b"a").unwrap();
        // b is written (of generation 2: not trusted while the basis says 1), c changed
        // too recently (removed), d is gone; no basis.
        assert_eq!(names, vec![(b"b".to_vec(), entry(old, 2))]);
        assert_eq!(store.synced_basis(9).unwrap(), None);
        let w = SyncedWalk::new(9, true, Some(&stored), next, started_ns);
        assert!(!w.unchanged(Some(&entry(old, 2)), &old), "written by a pass that did not succeed");
        assert!(w.unchanged(Some(&entry(old, 1)), &old));
        w.finish(&store, true);
        assert_eq!(store.synced_basis(9).unwrap(), Some(next));
    }

    #[test]
    fn writes_go_out_as_the_walk_goes() {
        use xtsync_store::MemStore;
        let store = MemStore::default();
        let basis = SyncedBasis { token: [0; 32], verified_unix_s: 5, generation: 1 };
        let mut w = SyncedWalk::new(1, false, None, basis, i64::MAX);
        w.ops_buffered_max = 2;
        let old = EntryStat { dev: 1, ino: 2, size: 3, mtime_ns: 10, ctime_ns: 20 };
        for name in ["x", "y", "z"] {
            w.sent(&RelPath::new(name).unwrap(), old);
            w.write_some(&store);
        }
        assert_eq!(store.synced_entries(1, b"").unwrap().len(), 2, "two written, one buffered");
        assert!(w.ops.len() == 1);
    }

    #[test]
    fn only_a_trusted_walk_skips_and_only_an_equal_stat() {
        let basis = SyncedBasis { token: [0; 32], verified_unix_s: 5, generation: 1 };
        let s = EntryStat { dev: 1, ino: 2, size: 3, mtime_ns: 10, ctime_ns: 20 };
        let trusted = SyncedWalk::new(1, true, Some(&basis), basis, 0);
        assert!(trusted.unchanged(Some(&entry(s, 1)), &s));
        assert!(!trusted.unchanged(Some(&entry(EntryStat { ctime_ns: 21, ..s }, 1)), &s));
        assert!(!trusted.unchanged(None, &s));
        assert!(!SyncedWalk::new(1, false, Some(&basis), basis, 0).unchanged(Some(&entry(s, 1)), &s));
    }
}
