//! Entries at the target: deciding which files need content, applying directories,
//! symlinks and hard links, and the end-of-pass work (deletions, directory metadata).

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Arc;

use rustix::fs::AtFlags;
use xtsync_store::WorkerStore;
use xtsync_wire::{Entry, EntryKind, Meta, RelPath, PASS_DONE_REMOVED_MAX};

use crate::checkpoint::KeptPartials;
use crate::fsops::{self, FsError, TargetRoot, TEMP_PREFIX};

/// Indices of the `File` entries whose content the target does not hold exactly as
/// described (content digest, size, mtime, mode, owner). Blocking: call it off the
/// executor.
pub(crate) fn files_needing_content(root: &TargetRoot, store: &dyn WorkerStore, entries: &[Entry]) -> Vec<u32> {
    let files: Vec<(u32, &Entry, u64, [u8; 32])> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.kind {
            EntryKind::File { size, digest } => Some((i as u32, e, size, digest)),
            _ => None,
        })
        .collect();
    let keys: Vec<Vec<u8>> = files.iter().map(|(_, e, _, _)| root.absolute(&e.path)).collect();
    let records = store.target_records(&keys).unwrap_or_else(|_| vec![None; keys.len()]);
    let chown = fsops::can_chown();
    files
        .into_iter()
        .zip(records)
        .filter(|((_, entry, size, digest), record)| {
            let Some(rec) = record else { return true };
            let mtime_ns = entry.meta.mtime_s * 1_000_000_000 + entry.meta.mtime_ns as i64;
            if rec.digest != *digest || rec.size != *size || rec.mtime_ns != mtime_ns {
                return true;
            }
            let Some((parent, name)) = entry.path.split_last() else { return true };
            let Ok(dir) = root.dir(&parent, false) else { return true };
            let Ok(st) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else { return true };
            let st_mtime_ns = st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64;
            st.st_ino != rec.ino
                || st.st_size as u64 != *size
                || st_mtime_ns != mtime_ns
                || (st.st_mode & 0o7777) != entry.meta.mode
                || (chown && (st.st_uid != entry.meta.uid || st.st_gid != entry.meta.gid))
                || !same_xattrs(&entry.meta.xattrs, fsops::user_xattrs_at(dir.as_fd(), name))
        })
        .map(|((i, ..), _)| i)
        .collect()
}

/// The source's `user.*` attributes (in its listing order) against the target's (sorted).
fn same_xattrs(source: &[(Vec<u8>, Vec<u8>)], target: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
    let mut source: Vec<(Vec<u8>, Vec<u8>)> = source.iter().filter(|(n, _)| n.starts_with(b"user.")).cloned().collect();
    source.sort();
    source == target
}

/// What a session remembers for its end of pass.
#[derive(Default)]
pub(crate) struct PassMemory {
    pub dirs: Vec<(RelPath, Meta)>,
    pub dir_children: Vec<(RelPath, Vec<Vec<u8>>)>,
    /// Directories in which this pass created symlinks or hard links.
    pub linked_dirs: Vec<RelPath>,
    pub entries_failed: u64,
}

/// Applies the non-content entries of a batch, in order. Errors are per entry.
pub(crate) fn apply_entries(root: &TargetRoot, entries: Vec<Entry>, tag: &str, delete: bool, memory: &mut PassMemory) {
    for entry in entries {
        let result: Result<(), FsError> = (|| match entry.kind {
            EntryKind::Dir { children } => {
                root.dir(&entry.path, true)?;
                if let (true, Some(children)) = (delete, children) {
                    memory.dir_children.push((entry.path.clone(), children));
                }
                memory.dirs.push((entry.path.clone(), entry.meta.clone()));
                Ok(())
            }
            EntryKind::Symlink { target } => {
                let (dir, name) = root.parent(&entry.path)?;
                memory.linked_dirs.extend(entry.path.split_last().map(|(d, _)| d));
                fsops::put_symlink(dir.as_fd(), name, &target, tag)?;
                fsops::apply_meta_symlink(dir.as_fd(), name, &entry.meta)
            }
            EntryKind::HardLink { to } => {
                let (to_dir, to_name) = root.parent(&to)?;
                let (dir, name) = root.parent(&entry.path)?;
                memory.linked_dirs.extend(entry.path.split_last().map(|(d, _)| d));
                fsops::put_hardlink(to_dir.as_fd(), to_name, dir.as_fd(), name, tag)
            }
            // Files are either unchanged or streamed separately.
            EntryKind::File { .. } => Ok(()),
        })();
        if let Err(e) = result {
            tracing::warn!(path = ?entry.path, error = %e, "entry not applied");
            memory.entries_failed += 1;
        }
    }
}

/// What the end of a pass removed: the count, and the first paths (for a reconcile's
/// report; at most `PASS_DONE_REMOVED_MAX`).
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub count: u64,
    pub paths: Vec<RelPath>,
}

impl Removed {
    fn push(&mut self, dir: &RelPath, name: &[u8]) {
        self.count += 1;
        if self.paths.len() < PASS_DONE_REMOVED_MAX {
            if let Ok(path) = dir.join(name) {
                self.paths.push(path);
            }
        }
    }
}

/// Deletes what the source no longer has (only in directories this session listed),
/// then applies directory metadata deepest first. Blocking.
/// Fails only if what it did cannot be made durable (the pass must not be reported done).
pub(crate) fn end_of_pass(
    root: Arc<TargetRoot>,
    mut memory: PassMemory,
    kept: &KeptPartials,
    per_file_sync: bool,
) -> Result<Removed, String> {
    let mut removed = Removed::default();
    let mut changed_dirs: Vec<RelPath> = std::mem::take(&mut memory.linked_dirs);
    for (dir, children) in &memory.dir_children {
        let Ok(fd) = root.dir(dir, false) else { continue };
        let keep: HashSet<&[u8]> = children.iter().map(|c| c.as_slice()).collect();
        let Ok(names) = fsops::list_dir(fd.as_fd()) else { continue };
        let dir_abs = root.absolute(dir);
        // Leftover temporaries go too, except partials kept for a resumed attempt.
        let kept_partial = |name: &[u8]| {
            name.starts_with(TEMP_PREFIX.as_bytes()) && kept.is_kept(&[&dir_abs[..], b"/", name].concat())
        };
        for name in names.iter().filter(|n| !keep.contains(n.as_slice()) && !kept_partial(n)) {
            if changed_dirs.last() != Some(dir) {
                changed_dirs.push(dir.clone());
            }
            match fsops::remove_tree(fd.as_fd(), name) {
                Ok(()) if !name.starts_with(TEMP_PREFIX.as_bytes()) => removed.push(dir, name),
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(dir = ?dir, name = %String::from_utf8_lossy(name), error = %e, "cannot delete")
                }
            }
        }
    }
    memory.dirs.sort_by_key(|(p, _)| {
        std::cmp::Reverse(p.as_bytes().iter().filter(|&&b| b == b'/').count() + !p.is_root() as usize)
    });
    let chown = fsops::can_chown();
    for (path, meta) in &memory.dirs {
        let _times_held = crate::sweep::dir_times_lock();
        let applied = root.dir(path, false).and_then(|fd| {
            // A changed mode or owner is access control: it is synced below.
            let access_changed = rustix::fs::fstat(&fd).is_ok_and(|st| {
                (st.st_mode & 0o7777) != meta.mode || (chown && (st.st_uid != meta.uid || st.st_gid != meta.gid))
            });
            fsops::apply_meta_fd(fd.as_fd(), meta, path.as_bytes())?;
            if access_changed {
                changed_dirs.push(path.clone());
            }
            Ok(())
        });
        if let Err(e) = applied {
            tracing::warn!(path = ?path, error = %e, "directory metadata not applied");
        }
    }
    // Removals, links, new directories and changed modes or owners made durable: in a
    // pass over a few directories (a batch of changes) by syncing the directories they
    // changed; in a larger one with `syncfs`. Directory times alone are not worth a
    // sync of their own: they become durable with the next sync of their directory, and
    // a lost one is set again by the next full pass.
    let new_dirs_parents = root.take_unsynced_parents();
    changed_dirs.sort();
    changed_dirs.dedup();
    // Nothing but times changed (files are synced by their barriers): nothing to sync.
    if changed_dirs.is_empty() && new_dirs_parents.as_ref().is_some_and(|p| p.is_empty()) {
        return Ok(removed);
    }
    let new_dirs_parents = new_dirs_parents.filter(|_| per_file_sync);
    let few = memory.dirs.len() <= DIR_SYNCS_MAX && changed_dirs.len() <= DIR_SYNCS_MAX;
    let synced = if let (true, Some(new_dirs_parents)) = (few, &new_dirs_parents) {
        let fds: Vec<_> = changed_dirs.iter().filter_map(|path| root.dir(path, false).ok()).collect();
        crate::fsops::sync_dirs(fds.iter().chain(new_dirs_parents.iter().rev()).map(|fd| fd.as_fd()))
    } else {
        rustix::fs::syncfs(root.fd())
    };
    synced.map_err(|e| format!("sync of deletions and directories: {e}"))?;
    Ok(removed)
}

/// Directories of a pass synced one by one at its end, at most (see `end_of_pass`).
const DIR_SYNCS_MAX: usize = 32;
