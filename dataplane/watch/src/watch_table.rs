//! The inotify watch descriptors and the root-relative directory each one watches. Pure
//! bookkeeping (no syscalls) so that directory renames and removals are unit tested.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Two-way map between watch descriptors and directory paths (relative to the root).
#[derive(Debug, Default)]
pub(crate) struct WatchTable {
    by_wd: HashMap<i32, PathBuf>,
    /// Ordered by components, so a subtree is one contiguous range.
    by_path: BTreeMap<PathBuf, i32>,
}

impl WatchTable {
    /// Records that `wd` watches `path`. The kernel returns the same wd when a watched
    /// directory is watched again (it moved while we missed the event): the new path wins.
    pub(crate) fn insert(&mut self, wd: i32, path: PathBuf) {
        if let Some(old) = self.by_wd.insert(wd, path.clone()) {
            if self.by_path.get(&old) == Some(&wd) {
                self.by_path.remove(&old);
            }
        }
        if let Some(displaced) = self.by_path.insert(path, wd) {
            if displaced != wd {
                self.by_wd.remove(&displaced);
            }
        }
    }

    /// The directory `wd` watches, if it is still known.
    pub(crate) fn path(&self, wd: i32) -> Option<&Path> {
        self.by_wd.get(&wd).map(PathBuf::as_path)
    }

    /// Forgets `wd` (the kernel sent `IN_IGNORED`: the directory is gone or unwatched).
    pub(crate) fn remove_wd(&mut self, wd: i32) {
        if let Some(path) = self.by_wd.remove(&wd) {
            if self.by_path.get(&path) == Some(&wd) {
                self.by_path.remove(&path);
            }
        }
    }

    /// Forgets `dir` and every directory below it; returns their wds (to unwatch).
    pub(crate) fn remove_subtree(&mut self, dir: &Path) -> Vec<i32> {
        let inside: Vec<PathBuf> = self.subtree_paths(dir);
        let mut wds = Vec::with_capacity(inside.len());
        for path in inside {
            if let Some(wd) = self.by_path.remove(&path) {
                self.by_wd.remove(&wd);
                wds.push(wd);
            }
        }
        wds
    }

    /// A directory moved from `from` to `to` inside the root: its watches stay valid, only
    /// the paths they stand for change.
    pub(crate) fn rename_subtree(&mut self, from: &Path, to: &Path) {
        let inside: Vec<PathBuf> = self.subtree_paths(from);
        let mut moved = Vec::with_capacity(inside.len());
        for path in inside {
            if let Some(wd) = self.by_path.remove(&path) {
                let rest = path.strip_prefix(from).unwrap_or(Path::new(""));
                moved.push((wd, to.join(rest)));
            }
        }
        for (wd, path) in moved {
            self.insert(wd, path);
        }
    }

    /// All wds, for a full resync after a queue overflow.
    pub(crate) fn wds(&self) -> Vec<i32> {
        self.by_wd.keys().copied().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_wd.len()
    }

    fn subtree_paths(&self, dir: &Path) -> Vec<PathBuf> {
        self.by_path
            .range::<Path, _>((std::ops::Bound::Included(dir), std::ops::Bound::Unbounded))
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(i32, &str)]) -> WatchTable {
        let mut t = WatchTable::default();
        for (wd, path) in entries {
            t.insert(*wd, PathBuf::from(path));
        }
        t
    }

    #[test]
    fn renaming_a_directory_moves_its_whole_subtree_only() {
        let mut t = table(&[(1, ""), (2, "a"), (3, "a/b"), (4, "a b"), (5, "ab")]);
        t.rename_subtree(Path::new("a"), Path::new("z/y"));
        assert_eq!(t.path(2), Some(Path::new("z/y")));
        assert_eq!(t.path(3), Some(Path::new("z/y/b")));
        assert_eq!(t.path(4), Some(Path::new("a b")));
        assert_eq!(t.path(5), Some(Path::new("ab")));
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn removing_a_subtree_returns_its_watches() {
        let mut t = table(&[(1, ""), (2, "a"), (3, "a/b"), (4, "ab")]);
        let mut wds = t.remove_subtree(Path::new("a"));
        wds.sort_unstable();
        assert_eq!(wds, vec![2, 3]);
        assert_eq!(t.path(2), None);
        assert_eq!(t.path(4), Some(Path::new("ab")));
    }

    #[test]
    fn a_rewatched_directory_takes_its_new_path() {
        let mut t = table(&[(1, ""), (2, "old")]);
        t.insert(2, PathBuf::from("new"));
        assert_eq!(t.path(2), Some(Path::new("new")));
        assert_eq!(t.remove_subtree(Path::new("old")), Vec::<i32>::new());
        t.remove_wd(2);
        assert_eq!(t.len(), 1);
    }
}
