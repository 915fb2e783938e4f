//! What a run has not yet made durable at the target, in regular files and their bytes:
//! the "files and bytes pending" beside the lag.
//!
//! A pass counts the files its walker hands to the sessions and subtracts those the
//! target settles: committed (durable there), renamed, or found identical. A file that
//! failed stays pending until a later pass settles it. A continuous run adds the
//! changes queued for its next pass, stat'ed when they are queued.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use xtsync_watch::{ChangeBatch, ChangeKind};

/// Regular files and the sum of their sizes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub files: u64,
    pub bytes: u64,
}

impl Backlog {
    pub fn plus(self, other: Backlog) -> Backlog {
        Backlog { files: self.files + other.files, bytes: self.bytes + other.bytes }
    }

    pub fn minus(self, other: Backlog) -> Backlog {
        Backlog { files: self.files.saturating_sub(other.files), bytes: self.bytes.saturating_sub(other.bytes) }
    }

    /// Each figure's larger value: the best of two estimates of the same backlog.
    pub fn max(self, other: Backlog) -> Backlog {
        Backlog { files: self.files.max(other.files), bytes: self.bytes.max(other.bytes) }
    }

    /// The regular files a batch of changes created or wrote, as they are now (a path
    /// gone again counts nothing). Renames and metadata changes carry no content;
    /// dirty subtrees are counted by the walk that rescans them.
    pub fn of_batch(root: &Path, batch: &ChangeBatch) -> Backlog {
        let written =
            batch.changes.iter().filter(|(_, kind)| matches!(kind, ChangeKind::Created | ChangeKind::Modified));
        Backlog::of_files(root, written.map(|(path, _)| path.as_path()))
    }

    /// The regular files among `paths` (relative to `root`), as they are now.
    pub fn of_files<'p>(root: &Path, paths: impl Iterator<Item = &'p Path>) -> Backlog {
        let mut backlog = Backlog::default();
        for path in paths {
            if let Ok(m) = std::fs::symlink_metadata(root.join(path)) {
                if m.is_file() {
                    backlog.files += 1;
                    backlog.bytes += m.len();
                }
            }
        }
        backlog
    }
}

/// A backlog counted on one thread and read on another.
#[derive(Debug, Default)]
pub struct SharedBacklog {
    files: AtomicU64,
    bytes: AtomicU64,
}

impl SharedBacklog {
    pub fn add(&self, b: Backlog) {
        self.files.fetch_add(b.files, Ordering::Relaxed);
        self.bytes.fetch_add(b.bytes, Ordering::Relaxed);
    }

    /// Takes back what `add` put in (never below zero).
    pub fn remove(&self, b: Backlog) {
        let sub = |a: &AtomicU64, n: u64| {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
        };
        sub(&self.files, b.files);
        sub(&self.bytes, b.bytes);
    }

    pub fn get(&self) -> Backlog {
        Backlog { files: self.files.load(Ordering::Relaxed), bytes: self.bytes.load(Ordering::Relaxed) }
    }
}

/// One pass's files: walked, minus settled at the target.
#[derive(Debug, Default)]
pub struct PassBacklog {
    /// Counted by the walker (see `Walker::tally_into`).
    pub walked: std::sync::Arc<SharedBacklog>,
    /// What the pass stands for before its walk has counted it (see `Backlog::of_batch`).
    estimate: Backlog,
    settled: Backlog,
}

impl PassBacklog {
    pub fn with_estimate(estimate: Backlog) -> PassBacklog {
        PassBacklog { estimate, ..PassBacklog::default() }
    }

    /// Settles what is done at the target (`SessionEvent::settles`).
    pub fn settle(&mut self, done: Backlog) {
        self.settled = self.settled.plus(done);
    }

    /// Walked (or estimated, while the walk has counted less) and not settled, yet or
    /// because it failed.
    pub fn pending(&self) -> Backlog {
        self.walked.get().max(self.estimate).minus(self.settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    #[test]
    fn a_batch_counts_the_regular_files_it_created_or_wrote_as_they_are_now() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::write(r.join("new"), vec![0u8; 1000]).unwrap();
        std::fs::write(r.join("written"), vec![0u8; 24]).unwrap();
        std::fs::write(r.join("chmod"), vec![0u8; 5000]).unwrap();
        std::fs::create_dir(r.join("dir")).unwrap();
        let changes: BTreeMap<PathBuf, ChangeKind> = [
            ("new", ChangeKind::Created),
            ("written", ChangeKind::Modified),
            ("chmod", ChangeKind::Attrib),
            ("dir", ChangeKind::Created),
            ("gone-again", ChangeKind::Created),
            ("deleted", ChangeKind::Deleted),
        ]
        .into_iter()
        .map(|(p, k)| (PathBuf::from(p), k))
        .collect();
        let batch = ChangeBatch {
            changes,
            renames: Vec::new(),
            dirty_subtrees: BTreeSet::new(),
            oldest_event_at: std::time::Instant::now(),
            event_count: 6,
        };
        assert_eq!(Backlog::of_batch(r, &batch), Backlog { files: 2, bytes: 1024 });
    }
}
