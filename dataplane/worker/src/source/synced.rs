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

use xtsync_store::{EntryStat, StoreOp, SyncedBasis, SyncedCursor};
use xtsync_wire::RelPath;

use crate::source::scan::ScanError;

/// Entries changed within this long before the pass started are never recorded.
pub const RECENT_NS: i64 = 1_000_000_000;

/// The stat the synced table keeps for an entry.
pub fn entry_stat(m: &std::fs::Metadata) -> EntryStat {
    use std::os::unix::fs::MetadataExt;
    EntryStat {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    }
}

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

/// One walk's use of the synced table: what it may skip, and what it will record.
pub struct SyncedWalk {
    job: u64,
    /// Skip entries whose stat equals the acknowledged one.
    pub trusted: bool,
    recent_from_ns: i64,
    basis: SyncedBasis,
    puts: Vec<StoreOp>,
    forgets: Vec<StoreOp>,
    /// Regular files skipped as unchanged, and their bytes.
    pub skipped_files: u64,
    pub skipped_bytes: u64,
}

impl SyncedWalk {
    /// For a pass of `job` that started at `started_unix_ns`: `basis` is recorded when
    /// it succeeds (with the previous verification time if `trusted`).
    pub fn new(job: u64, trusted: bool, basis: SyncedBasis, started_unix_ns: i64) -> SyncedWalk {
        SyncedWalk {
            job,
            trusted,
            recent_from_ns: started_unix_ns - RECENT_NS,
            basis,
            puts: Vec::new(),
            forgets: Vec::new(),
            skipped_files: 0,
            skipped_bytes: 0,
        }
    }

    /// A view for another thread of the same walk (see [`SyncedWalk::absorb`]).
    pub fn fork(&self) -> SyncedWalk {
        SyncedWalk::new(self.job, self.trusted, self.basis, self.recent_from_ns + RECENT_NS)
    }

    /// Takes in what a fork skipped and will record.
    pub fn absorb(&mut self, fork: SyncedWalk) {
        self.puts.extend(fork.puts);
        self.forgets.extend(fork.forgets);
        self.skipped_files += fork.skipped_files;
        self.skipped_bytes += fork.skipped_bytes;
    }

    /// The acknowledged entries of directory `dir`, by name (the root's own under "").
    pub fn known(
        &self,
        cursor: &mut dyn SyncedCursor,
        dir: &RelPath,
    ) -> Result<HashMap<Vec<u8>, EntryStat>, ScanError> {
        Ok(cursor.entries(dir.as_bytes())?.into_iter().collect())
    }

    pub fn job(&self) -> u64 {
        self.job
    }

    /// True if the entry may be skipped: trusted, and acknowledged with this stat.
    pub fn unchanged(&self, known: Option<&EntryStat>, stat: &EntryStat) -> bool {
        self.trusted && known == Some(stat)
    }

    /// The entry at `rel` is being sent with this stat: recorded if the pass succeeds.
    pub fn sent(&mut self, rel: &RelPath, stat: EntryStat) {
        if stat.ctime_ns >= self.recent_from_ns || stat.mtime_ns >= self.recent_from_ns {
            return;
        }
        let (dir, name) = dir_and_name(rel);
        self.puts.push(StoreOp::PutSynced { job: self.job, dir, name, stat });
    }

    /// Entry `name` of `dir` is no longer at the source: forget it and what was below.
    pub fn gone(&mut self, dir: &RelPath, name: &[u8]) {
        self.forgets.push(StoreOp::ForgetSynced { job: self.job, dir: dir.as_bytes().to_vec(), name: name.to_vec() });
    }

    /// The store writes of the finished pass: what is gone is forgotten either way;
    /// what was sent is recorded only if the pass `succeeded` (every entry applied and
    /// durable at the target).
    pub fn into_ops(self, succeeded: bool) -> Vec<StoreOp> {
        let mut ops = self.forgets;
        if succeeded {
            ops.extend(self.puts);
            ops.push(StoreOp::PutSyncedBasis(self.job, self.basis));
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_needs_the_same_basis_a_recent_verification_and_no_reconcile() {
        let token = basis_token("b", "/t", "/s", true, &[1; 32]);
        let stored = SyncedBasis { token, verified_unix_s: 1_000 };
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

    #[test]
    fn recent_entries_are_not_recorded_and_nothing_is_recorded_for_a_failed_pass() {
        let basis = SyncedBasis { token: [0; 32], verified_unix_s: 5 };
        let started_ns = 100 * 1_000_000_000;
        let old = EntryStat { dev: 1, ino: 2, size: 3, mtime_ns: 10, ctime_ns: 20 };
        let recent = EntryStat { ctime_ns: started_ns - RECENT_NS / 2, ..old };
        let mut w = SyncedWalk::new(9, true, basis, started_ns);
        w.sent(&RelPath::new("a/b").unwrap(), old);
        w.sent(&RelPath::new("a/c").unwrap(), recent);
        w.gone(&RelPath::new("a").unwrap(), b"d");
        let forget = StoreOp::ForgetSynced { job: 9, dir: b"a".to_vec(), name: b"d".to_vec() };
        let put = StoreOp::PutSynced { job: 9, dir: b"a".to_vec(), name: b"b".to_vec(), stat: old };
        assert_eq!(w.into_ops(true), vec![forget.clone(), put, StoreOp::PutSyncedBasis(9, basis)]);
        let mut w = SyncedWalk::new(9, true, basis, started_ns);
        w.sent(&RelPath::new("a/b").unwrap(), old);
        w.gone(&RelPath::new("a").unwrap(), b"d");
        assert_eq!(w.into_ops(false), vec![forget]);
    }

    #[test]
    fn only_a_trusted_walk_skips_and_only_an_equal_stat() {
        let basis = SyncedBasis { token: [0; 32], verified_unix_s: 5 };
        let s = EntryStat { dev: 1, ino: 2, size: 3, mtime_ns: 10, ctime_ns: 20 };
        let trusted = SyncedWalk::new(1, true, basis, 0);
        assert!(trusted.unchanged(Some(&s), &s));
        assert!(!trusted.unchanged(Some(&EntryStat { ctime_ns: 21, ..s }), &s));
        assert!(!trusted.unchanged(None, &s));
        assert!(!SyncedWalk::new(1, false, basis, 0).unchanged(Some(&s), &s));
    }
}
