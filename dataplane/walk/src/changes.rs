//! A pass over what changed instead of the whole tree. The watcher's batch becomes a
//! `ChangeSet` (pure: which subtrees to walk whole, which directories to list, which
//! entries to stat), and `walk_changes` sends just those entries to the pass's
//! sessions. Every path in a batch is a hint: it is stat'ed, and what is found is sent —
//! an entry that is gone is removed at the target through its parent's listing.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use xtsync_store::WorkerStore;
use xtsync_watch::{ChangeBatch, ChangeKind};
use xtsync_wire::RelPath;

use crate::backlog::{Backlog, SharedBacklog};
use crate::item::{LinkNames, ScanError, WalkItem, WalkStats};
use crate::renames::EventRenames;
use crate::scan::Walker;
use xtsync_chunker::ChunkParams;
use xtsync_wire::TEMP_PREFIX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// Walked whole: new or moved-in entries (files or directories) and subtrees whose
    /// events may have been lost. The root here means a full walk.
    pub subtrees: BTreeSet<RelPath>,
    /// Sent with their listing but not their children: the parents of deleted and
    /// renamed-away entries (the listing is what removes a name at the target).
    pub listed_dirs: BTreeSet<RelPath>,
    /// Stat'ed and sent alone: written files, metadata changes.
    pub entries: BTreeSet<RelPath>,
    /// Sent with their metadata only (no listing): the parents of created and changed
    /// entries. Adding or replacing a file at the target touches its directory; the
    /// directory's own times must then be set again (nothing there needs deleting).
    pub meta_dirs: BTreeSet<RelPath>,
    /// Renames the watcher paired (new path → old path): what is walked under a new
    /// path is announced as renamed from the old one (see `crate::renames`).
    pub renames: EventRenames,
    /// When the oldest change in the set was seen: where its replication lag starts.
    pub oldest_change: Instant,
    /// Paths the set stands for (for the pending-changes gauge).
    pub paths: usize,
    /// The regular files and bytes it stands for, as estimated before its walk (see
    /// `Backlog::of_batch`; zero for a full walk, whose walk counts them).
    pub backlog: Backlog,
}

impl ChangeSet {
    /// The whole tree: a reconciliation pass.
    pub fn everything(now: Instant) -> ChangeSet {
        ChangeSet {
            subtrees: BTreeSet::from([RelPath::root()]),
            listed_dirs: BTreeSet::new(),
            entries: BTreeSet::new(),
            meta_dirs: BTreeSet::new(),
            renames: EventRenames::default(),
            oldest_change: now,
            paths: 1,
            backlog: Backlog::default(),
        }
    }

    /// Single entries to stat and send again (files that failed in a pass).
    pub fn of_entries(entries: impl IntoIterator<Item = RelPath>, oldest_change: Instant) -> ChangeSet {
        let entries: BTreeSet<RelPath> = entries.into_iter().collect();
        let paths = entries.len();
        let meta_dirs = entries.iter().map(parent).collect();
        ChangeSet {
            subtrees: BTreeSet::new(),
            listed_dirs: BTreeSet::new(),
            entries,
            meta_dirs,
            renames: EventRenames::default(),
            oldest_change,
            paths,
            backlog: Backlog::default(),
        }
    }

    pub fn is_everything(&self) -> bool {
        self.subtrees.contains(&RelPath::root())
    }

    /// Folds a later set into this one (changes that queued while a pass ran).
    pub fn merge(&mut self, other: ChangeSet) {
        self.subtrees.extend(other.subtrees);
        self.listed_dirs.extend(other.listed_dirs);
        self.entries.extend(other.entries);
        self.meta_dirs.extend(other.meta_dirs);
        self.renames.extend(other.renames);
        self.oldest_change = self.oldest_change.min(other.oldest_change);
        self.paths += other.paths;
        self.backlog = self.backlog.plus(other.backlog);
        self.normalize();
    }

    /// Drops what a subtree walk covers anyway.
    fn normalize(&mut self) {
        let subtrees: Vec<RelPath> = self.subtrees.iter().cloned().collect();
        let covered = |p: &RelPath, strict: bool| subtrees.iter().any(|s| (!strict || s != p) && within(p, s));
        self.subtrees.retain(|p| !covered(p, true));
        self.listed_dirs.retain(|p| !covered(p, false));
        self.entries.retain(|p| !covered(p, false));
        let listed = &self.listed_dirs;
        self.meta_dirs.retain(|p| !covered(p, false) && !listed.contains(p));
    }
}

/// `path` is `ancestor` or lies below it.
fn within(path: &RelPath, ancestor: &RelPath) -> bool {
    let (p, a) = (path.as_bytes(), ancestor.as_bytes());
    a.is_empty() || p == a || (p.len() > a.len() && p.starts_with(a) && p[a.len()] == b'/')
}

fn rel(path: &Path) -> Option<RelPath> {
    let bytes = path.as_os_str().as_bytes();
    // The target's temporary files never travel (a tree can be another job's target).
    let name = bytes.rsplit(|&b| b == b'/').next().unwrap_or(bytes);
    if name.starts_with(TEMP_PREFIX.as_bytes()) {
        return None;
    }
    RelPath::new(bytes.to_vec()).ok()
}

fn parent(p: &RelPath) -> RelPath {
    p.split_last().map(|(parent, _)| parent).unwrap_or_else(RelPath::root)
}

/// Pure: what to walk for one batch of changes.
pub fn change_set_of(batch: &ChangeBatch) -> ChangeSet {
    let mut set = ChangeSet {
        subtrees: BTreeSet::new(),
        listed_dirs: BTreeSet::new(),
        entries: BTreeSet::new(),
        meta_dirs: BTreeSet::new(),
        renames: EventRenames::default(),
        oldest_change: batch.oldest_event_at,
        paths: batch.len(),
        backlog: Backlog::default(),
    };
    for dirty in &batch.dirty_subtrees {
        match rel(dirty) {
            Some(p) => set.subtrees.insert(p),
            // A path the wire cannot carry: rescan from the root rather than miss it.
            None => set.subtrees.insert(RelPath::root()),
        };
    }
    for r in &batch.renames {
        // Sent as an entry renamed from the old path (the target renames its copy),
        // plus the old parent's listing (the old name goes).
        let (from, to) = (rel(&r.from), rel(&r.to));
        if let Some(from) = &from {
            set.listed_dirs.insert(parent(from));
        }
        if let Some(to) = &to {
            set.meta_dirs.insert(parent(to));
            set.subtrees.insert(to.clone());
        }
        if let (Some(from), Some(to)) = (from, to) {
            set.renames.insert(from, to);
        }
    }
    for (path, kind) in &batch.changes {
        let Some(p) = rel(path) else { continue };
        match kind {
            ChangeKind::Created => {
                set.meta_dirs.insert(parent(&p));
                set.subtrees.insert(p);
            }
            ChangeKind::Deleted => {
                set.listed_dirs.insert(parent(&p));
                // Recreated since? Then it is sent; if not, the stat finds nothing.
                set.entries.insert(p);
            }
            ChangeKind::Modified | ChangeKind::Attrib => {
                set.meta_dirs.insert(parent(&p));
                set.entries.insert(p);
            }
        }
    }
    set.normalize();
    set
}

/// Sends the entries of `set` under `root` to `shards`: listed directories first, then
/// whole subtrees, then single entries.
pub fn walk_changes(
    root: &Path,
    delete: bool,
    store: &Arc<dyn WorkerStore>,
    set: &ChangeSet,
    chunk_params: Option<ChunkParams>,
    shards: &[flume::Sender<WalkItem>],
    tally: Option<&SharedBacklog>,
) -> Result<WalkStats, ScanError> {
    if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        return Err(ScanError::Root { path: root.display().to_string(), reason: "not a directory".into() });
    }
    let mut walker = Walker::new(root, delete, store, shards);
    walker.tally_into(tally);
    walker.track_link_names();
    let recorded_before = crate::item::recorded_before(store.as_ref(), root);
    walker.detect_renames(root, set.renames.clone(), chunk_params, recorded_before);
    let abs_of = |p: &RelPath| {
        if p.is_root() {
            root.to_path_buf()
        } else {
            root.join(p.as_path())
        }
    };
    for dir in &set.listed_dirs {
        let abs = abs_of(dir);
        match walker.stat(&abs) {
            Some(m) if m.is_dir() => walker.dir(dir.clone(), abs, m, false)?,
            _ => {} // gone too: its own parent's listing says so
        }
    }
    for dir in &set.meta_dirs {
        let abs = abs_of(dir);
        match walker.stat(&abs) {
            Some(m) if m.is_dir() => walker.dir_meta(dir.clone(), abs, m)?,
            _ => {}
        }
    }
    for (paths, recurse) in [(&set.subtrees, true), (&set.entries, false)] {
        for p in paths {
            let abs = abs_of(p);
            let Some(m) = walker.stat(&abs) else { continue };
            if m.is_dir() {
                walker.dir(p.clone(), abs, m, recurse)?;
            } else {
                walker.entries(vec![(p.clone(), abs, m)])?;
            }
        }
    }
    // A changed file with more names than this batch saw (a new link, a write through
    // one name, a group that lost its first name): its other names go as hard links to
    // the one sent, found by one walk of the tree.
    let missing = walker.names_missing();
    if !missing.is_empty() {
        let found = other_names(root, &missing);
        // Relinking a name changes its directory at the target: its times go again.
        let parents: BTreeSet<RelPath> = found.iter().filter_map(|(p, ..)| p.split_last().map(|(d, _)| d)).collect();
        walker.entries(found)?;
        for dir in parents.iter().filter(|d| !set.meta_dirs.contains(d) && !set.listed_dirs.contains(d)) {
            let abs = abs_of(dir);
            if let Some(m) = walker.stat(&abs).filter(|m| m.is_dir()) {
                walker.dir_meta(dir.clone(), abs, m)?;
            }
        }
    }
    Ok(walker.stats)
}

/// The names under `root` of the inodes in `missing` that are not among the names
/// already sent. Stays on `root`'s filesystem; skips what it cannot read.
fn other_names(root: &Path, missing: &LinkNames) -> Vec<(RelPath, std::path::PathBuf, std::fs::Metadata)> {
    let Ok(root_meta) = std::fs::symlink_metadata(root) else { return Vec::new() };
    let mut names_to_find: u64 = missing.values().map(|(count, _)| count).sum();
    let mut found = Vec::new();
    let mut stack = vec![(RelPath::root(), root.to_path_buf())];
    while let Some((rel, abs)) = stack.pop() {
        if names_to_find == 0 {
            break;
        }
        let Ok(read) = std::fs::read_dir(&abs) else { continue };
        for entry in read.filter_map(|e| e.ok()) {
            let name = entry.file_name();
            if name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                continue;
            }
            let (Ok(m), Ok(child_rel)) = (entry.metadata(), rel.join(name.as_bytes())) else { continue };
            if m.is_dir() && m.dev() == root_meta.dev() {
                stack.push((child_rel, entry.path()));
            } else if m.is_file() && m.nlink() > 1 {
                let known = missing.get(&(m.dev(), m.ino()));
                if known.is_some_and(|(_, sent)| !sent.contains(&child_rel)) {
                    names_to_find = names_to_find.saturating_sub(1);
                    found.push((child_rel, entry.path(), m));
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use xtsync_store::MemStore;
    use xtsync_watch::Rename;

    use super::*;
    use crate::item::WalkKind;

    fn rp(s: &str) -> RelPath {
        RelPath::new(s.as_bytes().to_vec()).unwrap()
    }

    fn batch(changes: &[(&str, ChangeKind)], renames: &[(&str, &str)], dirty: &[&str]) -> ChangeBatch {
        ChangeBatch {
            changes: changes.iter().map(|(p, k)| (PathBuf::from(p), *k)).collect::<BTreeMap<_, _>>(),
            renames: renames.iter().map(|(f, t)| Rename { from: f.into(), to: t.into() }).collect(),
            dirty_subtrees: dirty.iter().map(PathBuf::from).collect(),
            oldest_event_at: Instant::now(),
            event_count: 1,
        }
    }

    #[test]
    fn each_kind_of_change_walks_what_it_must() {
        let set = change_set_of(&batch(
            &[
                ("a/new", ChangeKind::Created),
                ("a/edited", ChangeKind::Modified),
                ("b/gone", ChangeKind::Deleted),
                ("c/chmod", ChangeKind::Attrib),
            ],
            &[("d/old", "e/renamed")],
            &[],
        ));
        assert_eq!(set.subtrees, BTreeSet::from([rp("a/new"), rp("e/renamed")]));
        // Listings where names went away; times only where names came or changed.
        assert_eq!(set.listed_dirs, BTreeSet::from([rp("b"), rp("d")]));
        assert_eq!(set.entries, BTreeSet::from([rp("a/edited"), rp("b/gone"), rp("c/chmod")]));
        assert_eq!(set.meta_dirs, BTreeSet::from([rp("a"), rp("c"), rp("e")]));
    }

    #[test]
    fn a_dirty_subtree_swallows_what_lies_inside_it_and_the_root_swallows_all() {
        let mut set =
            change_set_of(&batch(&[("x/y/f", ChangeKind::Modified), ("z", ChangeKind::Created)], &[], &["x"]));
        assert_eq!(set.subtrees, BTreeSet::from([rp("x"), rp("z")]));
        assert_eq!(set.entries, BTreeSet::new());
        // "z"'s parent is the root: its times are set again, nothing is listed.
        assert_eq!(set.meta_dirs, BTreeSet::from([RelPath::root()]));
        assert!(set.listed_dirs.is_empty());
        set.merge(change_set_of(&batch(&[], &[], &[""])));
        assert!(set.is_everything());
        assert_eq!((set.subtrees.len(), set.listed_dirs.len(), set.entries.len(), set.meta_dirs.len()), (1, 0, 0, 0));
    }

    #[test]
    fn xtsync_temporary_files_never_travel() {
        let set = change_set_of(&batch(&[(&format!("d/{TEMP_PREFIX}1.2.3"), ChangeKind::Created)], &[], &[]));
        assert!(
            set.subtrees.is_empty() && set.listed_dirs.is_empty() && set.entries.is_empty() && set.meta_dirs.is_empty()
        );
    }

    #[test]
    fn the_walk_sends_listings_new_trees_and_changed_entries_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["a", "b", "new/sub", "untouched"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for f in ["a/edited", "a/other", "b/kept", "new/sub/f", "untouched/f"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        let set = change_set_of(&batch(
            &[("a/edited", ChangeKind::Modified), ("b/gone", ChangeKind::Deleted), ("new", ChangeKind::Created)],
            &[],
            &[],
        ));
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        let (tx, rx) = flume::unbounded();
        walk_changes(r, true, &store, &set, None, &[tx], None).unwrap();
        let sent: Vec<(String, bool)> = rx
            .drain()
            .map(|i| {
                let children = matches!(&i.kind, WalkKind::Dir { children: Some(_) });
                (i.path.to_string_lossy(), children)
            })
            .collect();
        let names: Vec<&str> = sent.iter().map(|(p, _)| p.as_str()).collect();
        // "b" lists that "gone" is gone; the root ("new" was created in it) and "a" (a
        // file in it was replaced) go with their metadata only; "new" is walked whole.
        assert_eq!(names, ["b", "", "a", "new", "new/sub", "new/sub/f", "a/edited"]);
        assert!(sent.iter().filter(|(p, _)| p == "b" || p == "new").all(|(_, listed)| *listed));
        assert!(sent.iter().filter(|(p, _)| p.is_empty() || p == "a").all(|(_, listed)| !*listed));
    }

    #[test]
    fn a_changed_name_of_a_linked_file_brings_its_other_names_as_links() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("a/file"), b"shared").unwrap();
        std::fs::hard_link(r.join("a/file"), r.join("b/link")).unwrap();
        std::fs::hard_link(r.join("a/file"), r.join("c/new-link")).unwrap();
        std::fs::write(r.join("c/alone"), b"one name").unwrap();
        // Only the new name was seen changing.
        let set = change_set_of(&batch(&[("c/new-link", ChangeKind::Created)], &[], &[]));
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        let (tx, rx) = flume::unbounded();
        walk_changes(r, true, &store, &set, None, &[tx], None).unwrap();
        let sent: Vec<(String, String)> = rx
            .drain()
            .map(|i| {
                let kind = match &i.kind {
                    WalkKind::File { .. } => "file".to_string(),
                    WalkKind::HardLink { to } => format!("link to {}", to.to_string_lossy()),
                    WalkKind::Dir { .. } => "dir".to_string(),
                    WalkKind::Symlink { .. } => "symlink".to_string(),
                };
                (i.path.to_string_lossy(), kind)
            })
            .collect();
        let sent: Vec<(&str, &str)> = sent.iter().map(|(p, k)| (p.as_str(), k.as_str())).collect();
        // The two other names go as links to the one sent, and their directories' times
        // go again (relinking changes them at the target); "c/alone" is not touched.
        assert_eq!(
            sent,
            [
                ("c", "dir"),
                ("c/new-link", "file"),
                ("a/file", "link to c/new-link"),
                ("b/link", "link to c/new-link"),
                ("a", "dir"),
                ("b", "dir"),
            ]
        );
    }
}
