//! Recognising renames at the source, so that the target renames its own copy
//! (`Entry::renamed_from`) instead of receiving or copying the content.
//!
//! A file without a valid source record at its path (new there) is looked for under
//! the path the source had it at before:
//! 1. from watcher rename events (continuous passes): the new path, or the directory
//!    it was moved in with, maps to the old path;
//! 2. from the source records' inode index (same device and inode: a rename the
//!    events did not tell, e.g. between two full passes);
//! 3. from the records' (size, digest) index: a file of the same size that is gone is
//!    a candidate, and the new file is hashed (its manifest digest, as streaming would
//!    compute it) to compare (a copy followed by a delete).
//!
//! The old path must be gone at the source (`lstat`), so a copy that keeps its
//! original is never announced as a rename, and its record must still describe what
//! the new file is. Cases 1 and 2 trust a record whose device, inode, size and mtime
//! match, although the ctime differs: a rename changes the ctime of what it moves. The
//! target checks its own copy independently (`xtsync_receiver::rename`).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use xtsync_chunker::{ChunkName, ChunkParams, DigestBuilder, StreamChunker};
use xtsync_store::{SourceRecord, WorkerStore};
use xtsync_wire::RelPath;

use crate::entry_meta::FileStat;

/// Renames told by the watcher: new path → old path (relative to the root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRenames(BTreeMap<RelPath, RelPath>);

impl EventRenames {
    /// Records `from` → `to`; a path renamed again keeps its first origin.
    pub(crate) fn insert(&mut self, from: RelPath, to: RelPath) {
        let from = self.0.remove(&from).unwrap_or(from);
        if from != to {
            self.0.insert(to, from);
        }
    }

    pub fn extend(&mut self, later: EventRenames) {
        for (to, from) in later.0 {
            self.insert(from, to);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The directory `path` itself was renamed from.
    pub(crate) fn dir_from(&self, path: &RelPath) -> Option<&RelPath> {
        self.0.get(path)
    }

    /// Pure: where `path` was before, if it or a directory above it was renamed.
    pub(crate) fn origin_of(&self, path: &RelPath) -> Option<RelPath> {
        let mut suffix: Vec<u8> = Vec::new();
        let mut at = path.clone();
        loop {
            if let Some(from) = self.0.get(&at) {
                if suffix.is_empty() {
                    return Some(from.clone());
                }
                return from.join(&suffix).ok();
            }
            let (parent, name) = at.split_last()?;
            suffix = if suffix.is_empty() { name.to_vec() } else { [name, b"/", &suffix[..]].concat() };
            at = parent;
        }
    }
}

/// Pure: `record` describes the file `stat` describes, but for the ctime (which a
/// rename changes).
pub(crate) fn same_file(stat: &FileStat, record: &SourceRecord) -> bool {
    (stat.dev, stat.ino, stat.size, stat.mtime_ns) == (record.dev, record.ino, record.size, record.mtime_ns)
}

/// Pure: the path of `abs` relative to `root`, if it lies strictly beneath it.
pub(crate) fn rel_under(root: &Path, abs: &[u8]) -> Option<RelPath> {
    let root = root.as_os_str().as_bytes();
    let rest = abs.strip_prefix(root)?.strip_prefix(b"/")?;
    RelPath::new(rest.to_vec()).ok().filter(|p| !p.is_root())
}

/// A rename found for a file: where it was, and its content digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub from: RelPath,
    pub digest: [u8; 32],
}

/// Looks for the old path of a file that is new at `path` (see the module docs).
pub(crate) struct Detector<'a> {
    pub root: PathBuf,
    pub store: &'a dyn WorkerStore,
    pub events: EventRenames,
    /// Hashing candidates of the same size (copies) needs the job's chunking.
    pub chunk_params: Option<ChunkParams>,
    /// The store held source records beneath `root` when the pass began. Without any
    /// (an initial copy) the indexes can only name files recorded in this same pass,
    /// which were there when walked: only events are asked. Asking the indexes for each
    /// of 78,579 new files cost ~5% of an initial copy's CPU. The price: a file renamed
    /// while the initial copy runs is sent again under its new name, and the old name
    /// is removed at the target by the next pass.
    pub recorded_before: bool,
}

fn gone(abs: &Path) -> bool {
    matches!(std::fs::symlink_metadata(abs), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

impl Detector<'_> {
    fn abs(&self, rel: &RelPath) -> PathBuf {
        self.root.join(rel.as_path())
    }

    fn record(&self, abs: &Path) -> Option<SourceRecord> {
        self.store.source_records(&[abs.as_os_str().as_bytes().to_vec()]).ok()?.pop().flatten()
    }

    /// Blocking (store lookups, `lstat`, maybe a read of the file). `had_record`: the
    /// path has a (stale) source record; then only events and inodes are asked, never
    /// a hash of same-size candidates (a file rewritten in place is not a copy).
    pub(crate) fn find(&self, path: &RelPath, abs: &Path, stat: &FileStat, had_record: bool) -> Option<Found> {
        let by_event = self.events.origin_of(path);
        let by_inode = || {
            if !self.recorded_before {
                return None;
            }
            let from_abs = self.store.source_path_of_inode(stat.dev, stat.ino).ok()??;
            rel_under(&self.root, &from_abs)
        };
        for from in by_event.into_iter().chain(std::iter::once_with(by_inode).flatten()) {
            if from == *path {
                continue;
            }
            let from_abs = self.abs(&from);
            match self.record(&from_abs) {
                Some(rec) if same_file(stat, &rec) && gone(&from_abs) && self.still_holds(abs, stat, &rec) => {
                    return Some(Found { from, digest: rec.digest })
                }
                _ => {}
            }
        }
        if had_record || !self.recorded_before {
            return None;
        }
        self.by_content(path, abs, stat)
    }

    /// The file still holds the version `rec` names. A rename changes the ctime, which
    /// then no longer tells a rewrite with its mtime put back (`cp -p` over it) from an
    /// untouched file: the content is read again (locally; nothing crosses the wire).
    fn still_holds(&self, abs: &Path, stat: &FileStat, rec: &SourceRecord) -> bool {
        if stat.ctime_ns == rec.ctime_ns {
            return true;
        }
        self.chunk_params.is_some_and(|params| hash_unchanged(abs, stat, params) == Some(rec.digest))
    }

    fn by_content(&self, path: &RelPath, abs: &Path, stat: &FileStat) -> Option<Found> {
        let params = self.chunk_params?;
        if stat.size == 0 {
            return None;
        }
        let candidates: Vec<([u8; 32], RelPath)> = self
            .store
            .source_paths_of_size(stat.size)
            .ok()?
            .into_iter()
            .filter_map(|(digest, from_abs)| Some((digest, rel_under(&self.root, &from_abs)?)))
            .filter(|(digest, from)| {
                let from_abs = self.abs(from);
                from != path && self.record(&from_abs).is_some_and(|r| r.digest == *digest) && gone(&from_abs)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let digest = hash_unchanged(abs, stat, params)?;
        let (_, from) = candidates.into_iter().find(|(d, _)| *d == digest)?;
        Some(Found { from, digest })
    }
}

/// The manifest digest of the file at `abs` (chunked and named as a transfer would),
/// if it is still the file `stat` describes before and after the read.
pub(crate) fn hash_unchanged(abs: &Path, stat: &FileStat, params: ChunkParams) -> Option<[u8; 32]> {
    let mut file = std::fs::File::open(abs).ok()?;
    if FileStat::of(&file.metadata().ok()?) != *stat {
        return None;
    }
    let mut chunker = StreamChunker::new(params);
    let mut digest = DigestBuilder::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = stat.size;
    loop {
        let n = file.read(&mut buf).ok()?;
        left = left.saturating_sub(n as u64);
        let eof = n == 0 || left == 0;
        chunker.push(&buf[..n], eof, |chunk| digest.push(&ChunkName::of(chunk), chunk.len() as u32));
        if eof {
            break;
        }
    }
    (FileStat::of(&file.metadata().ok()?) == *stat).then(|| digest.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn a_path_in_a_moved_directory_maps_to_its_old_place() {
        let mut r = EventRenames::default();
        r.insert(rp("a/f"), rp("b/g"));
        r.insert(rp("d1"), rp("x/d2"));
        assert_eq!(r.origin_of(&rp("b/g")), Some(rp("a/f")));
        assert_eq!(r.origin_of(&rp("x/d2/sub/f")), Some(rp("d1/sub/f")));
        assert_eq!(r.origin_of(&rp("x/d2")), Some(rp("d1")));
        assert_eq!(r.origin_of(&rp("x/other")), None);
        assert_eq!(r.dir_from(&rp("x/d2")), Some(&rp("d1")));
        // Renamed twice: the first origin is what the target has.
        r.insert(rp("b/g"), rp("c/h"));
        assert_eq!(r.origin_of(&rp("c/h")), Some(rp("a/f")));
        assert_eq!(r.origin_of(&rp("b/g")), None);
        // And back where it was: nothing to rename.
        r.insert(rp("c/h"), rp("a/f"));
        assert_eq!(r.origin_of(&rp("a/f")), None);
    }

    #[test]
    fn a_record_matches_a_renamed_file_whatever_its_ctime() {
        let stat = FileStat { dev: 1, ino: 2, size: 3, mtime_ns: 4, ctime_ns: 9 };
        let rec = stat.record([5; 32]);
        assert!(same_file(&FileStat { ctime_ns: 10, ..stat }, &rec));
        assert!(!same_file(&FileStat { ino: 3, ..stat }, &rec));
        assert!(!same_file(&FileStat { mtime_ns: 5, ..stat }, &rec));
        assert!(!same_file(&FileStat { size: 4, ..stat }, &rec));
    }

    #[test]
    fn the_indexes_are_asked_only_when_the_pass_began_with_records() {
        use xtsync_store::{MemStore, StoreBatch, StoreOp};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("new"), b"content").unwrap();
        let stat = FileStat::of(&std::fs::symlink_metadata(root.join("new")).unwrap());
        // Recorded under a name that is gone: a rename the inode index tells.
        let store = MemStore::default();
        let old_abs = root.join("old").as_os_str().as_bytes().to_vec();
        store.apply(StoreBatch { ops: vec![StoreOp::PutSource(old_abs, stat.record([7; 32]))] }).unwrap();
        let detector = |recorded_before, events| Detector {
            root: root.clone(),
            store: &store,
            events,
            chunk_params: Some(ChunkParams::default()),
            recorded_before,
        };
        let abs = root.join("new");
        let found = detector(true, EventRenames::default()).find(&rp("new"), &abs, &stat, false);
        assert_eq!(found, Some(Found { from: rp("old"), digest: [7; 32] }));
        assert!(crate::item::recorded_before(&store, &root));
        // A pass that began without records (an initial copy) asks only the events.
        assert_eq!(detector(false, EventRenames::default()).find(&rp("new"), &abs, &stat, false), None);
        let mut events = EventRenames::default();
        events.insert(rp("old"), rp("new"));
        assert_eq!(detector(false, events).find(&rp("new"), &abs, &stat, false), found);
        assert!(!crate::item::recorded_before(&store, &root.join("elsewhere")));
    }

    #[test]
    fn only_paths_beneath_the_root_are_candidates() {
        let root = Path::new("/src/job");
        assert_eq!(rel_under(root, b"/src/job/a/b"), Some(rp("a/b")));
        assert_eq!(rel_under(root, b"/src/jobx/a"), None);
        assert_eq!(rel_under(root, b"/src/job"), None);
        assert_eq!(rel_under(root, b"/src/job/../etc"), None);
    }
}
