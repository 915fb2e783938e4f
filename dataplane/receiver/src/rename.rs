//! Renames announced by the source (`Entry::renamed_from`), applied at the target by
//! renaming its own copy: no content crosses the wire and nothing is copied.
//!
//! A rename is applied only when the target's copy at the from-path is still exactly
//! the announced version: its target record has the announced digest and size, and the
//! file on disk is the inode, size and mtime that record describes (as in
//! `files_needing_content`). Otherwise the entry goes the normal content way (local
//! copy or wire). A file found already at its new path with the from-path's inode was
//! moved with its directory (a directory rename applied first): only its records move.
//!
//! Every path goes through `TargetRoot` (openat2 beneath the root, no symlinks). The
//! check and the `renameat` hold `PATH_LOCK`, which the durability barrier also holds
//! around each of its renames, so no file committed by another session can slip in
//! between the check and the rename. Renames are made durable (fsync of both
//! directories) and recorded before the `EntriesReply` that reports them is sent.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use xtsync_store::{StoreBatch, StoreOp, TargetRecord, WorkerStore};
use xtsync_wire::{Entry, EntryKind, RelPath};

use crate::fsops::{apply_meta_fd, sync_dirs, FsError, TargetRoot};

static PATH_LOCK: Mutex<()> = Mutex::new(());

/// Held while a name of a regular file is replaced at the target (here, and by the
/// durability barrier): a rename's check and its `renameat` see no commit in between.
pub(crate) fn path_lock() -> MutexGuard<'static, ()> {
    PATH_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a file on disk is, as far as the announced version is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OnDisk {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl OnDisk {
    fn of(st: &rustix::fs::Stat) -> Option<OnDisk> {
        let regular = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        regular.then(|| OnDisk {
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
        })
    }
}

/// Pure: the target's copy described by `record` and found on disk as `disk` is
/// exactly the announced version (`size`, `digest`).
pub(crate) fn holds_announced(record: &TargetRecord, disk: &OnDisk, size: u64, digest: &[u8; 32]) -> bool {
    record.digest == *digest
        && record.size == size
        && (disk.ino, disk.size, disk.mtime_ns) == (record.ino, record.size, record.mtime_ns)
}

/// The outcome of one entries batch's renames.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Indices of the file entries now in place by rename (durable, recorded).
    pub renamed: Vec<u32>,
    /// Indices that still need content.
    pub need: Vec<u32>,
    pub dirs_renamed: u64,
}

/// Renames the directories announced as moved, in entry order, where the target has
/// the from-directory and nothing at the new path (never replacing a directory: a
/// file renamed into it by another session would be lost). Their files follow as
/// file entries (`apply_file_renames` finds them already in place). Blocking.
pub(crate) fn apply_dir_renames(root: &TargetRoot, entries: &[Entry]) -> u64 {
    let mut renamed = 0;
    let mut dirs: Vec<OwnedFd> = Vec::new();
    for entry in entries {
        let (EntryKind::Dir { .. }, Some(from)) = (&entry.kind, &entry.renamed_from) else { continue };
        match rename_dir(root, from, &entry.path) {
            Ok(parents) => {
                renamed += 1;
                dirs.extend(parents);
            }
            Err(e) => tracing::debug!(from = ?from, to = ?entry.path, error = %e, "directory not renamed; per file"),
        }
    }
    if let Err(e) = sync_dirs(dirs.iter().map(|d| d.as_fd())) {
        // The files moved with them are reported once their own directory is synced;
        // the parents' entries need the whole filesystem then.
        tracing::warn!(error = %e, "sync after directory renames; syncing the filesystem");
        if let Err(e) = rustix::fs::syncfs(root.fd()) {
            tracing::error!(error = %e, "syncfs after directory renames");
        }
    }
    renamed
}

fn rename_dir(root: &TargetRoot, from: &RelPath, to: &RelPath) -> Result<[OwnedFd; 2], FsError> {
    let (from_parent, from_name) = from.split_last().ok_or_else(|| FsError::Escape { path: String::new() })?;
    // The from-directory must resolve beneath the root (no symlink on the way).
    root.dir(from, false)?;
    let from_dir = root.dir(&from_parent, false)?;
    let (to_dir, to_name) = root.parent(to)?;
    let _guard = path_lock();
    rustix::fs::renameat_with(&from_dir, from_name, &to_dir, to_name, RenameFlags::NOREPLACE).map_err(|errno| {
        FsError::Sys { path: String::from_utf8_lossy(to.as_bytes()).into_owned(), op: "rename directory", errno }
    })?;
    Ok([from_dir, to_dir])
}

/// Applies the renames among the file entries at `need` (those the target does not
/// hold at their own path). Blocking.
pub(crate) fn apply_file_renames(
    root: &TargetRoot,
    store: &dyn WorkerStore,
    entries: &[Entry],
    need: Vec<u32>,
) -> Applied {
    let mut applied = Applied::default();
    let candidates: Vec<(u32, &Entry, &RelPath)> = need
        .into_iter()
        .filter_map(|i| {
            let entry = &entries[i as usize];
            match &entry.renamed_from {
                Some(from) => Some((i, entry, from)),
                None => {
                    applied.need.push(i);
                    None
                }
            }
        })
        .collect();
    if candidates.is_empty() {
        return applied;
    }
    let keys: Vec<Vec<u8>> = candidates.iter().map(|(_, _, from)| root.absolute(from)).collect();
    let records = store.target_records(&keys).unwrap_or_else(|_| vec![None; keys.len()]);
    let mut done: Vec<(u32, Moved)> = Vec::new();
    for ((i, entry, from), record) in candidates.into_iter().zip(records) {
        let EntryKind::File { size, digest } = entry.kind else {
            applied.need.push(i);
            continue;
        };
        let moved = record
            .ok_or_else(|| "no record of the from-path".to_string())
            .and_then(|rec| rename_file(root, from, entry, &rec, size, digest).map_err(|e| e.to_string()));
        match moved {
            Ok(m) => done.push((i, m)),
            Err(e) => {
                tracing::debug!(from = ?from, to = ?entry.path, error = %e, "rename not applied; content instead");
                applied.need.push(i);
            }
        }
    }
    if done.is_empty() {
        return applied;
    }
    // Durable before reported: each file's new metadata, both directories of every
    // rename, and directories created on the way to a new path (their parents' entries;
    // too many of them: the whole filesystem).
    let synced = done
        .iter()
        .try_for_each(|(_, m)| rustix::fs::fsync(&m.file))
        .and_then(|()| sync_dirs(done.iter().flat_map(|(_, m)| m.dirs.iter().map(|d| d.as_fd()))))
        .and_then(|()| match root.take_unsynced_parents() {
            Some(parents) => sync_dirs(parents.iter().rev().map(|d| d.as_fd())),
            None => rustix::fs::syncfs(root.fd()),
        });
    if let Err(e) = synced {
        tracing::warn!(error = %e, "sync after renames; the files go the content way");
        applied.need.extend(done.iter().map(|(i, _)| *i));
        applied.need.sort_unstable();
        return applied;
    }
    let mut ops = Vec::with_capacity(done.len() * 3);
    for (i, m) in done {
        ops.push(StoreOp::DeleteTarget(m.from_abs.clone()));
        ops.push(StoreOp::PutTarget(m.to_abs.clone(), m.record));
        // Chunk index entries naming the old path follow it (see `moved_location`).
        ops.push(StoreOp::PutMoved(m.from_abs, m.to_abs));
        applied.renamed.push(i);
    }
    if let Err(e) = store.apply(StoreBatch { ops }) {
        // The renames are durable; a stale record costs a content check next time.
        tracing::warn!(error = %e, "cannot record renames");
    }
    applied.need.sort_unstable();
    applied
}

struct Moved {
    from_abs: Vec<u8>,
    to_abs: Vec<u8>,
    record: TargetRecord,
    /// The directories whose entries changed (the new one, and the old one if the
    /// file was renamed here).
    dirs: Vec<OwnedFd>,
    /// The file (its new metadata is synced with it).
    file: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
enum RenameError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the target's copy is not the announced version")]
    NotAnnounced,
}

fn sys<'a>(path: &'a RelPath, op: &'static str) -> impl FnOnce(rustix::io::Errno) -> RenameError + 'a {
    move |errno| {
        RenameError::Fs(FsError::Sys { path: String::from_utf8_lossy(path.as_bytes()).into_owned(), op, errno })
    }
}

fn rename_file(
    root: &TargetRoot,
    from: &RelPath,
    entry: &Entry,
    record: &TargetRecord,
    size: u64,
    digest: [u8; 32],
) -> Result<Moved, RenameError> {
    let (from_parent, from_name) = from.split_last().ok_or(RenameError::NotAnnounced)?;
    let (to_dir, to_name) = root.parent(&entry.path)?;
    let stat = |dir: &OwnedFd, name: &[u8]| {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok().as_ref().and_then(OnDisk::of)
    };
    let guard = path_lock();
    // Moved with its directory already: the file is at its new path (and its old
    // directory may be gone).
    let at_to = stat(&to_dir, to_name).filter(|d| holds_announced(record, d, size, &digest));
    let from_dir = match at_to {
        Some(_) => None,
        None => {
            let from_dir = root.dir(&from_parent, false)?;
            let at_from = stat(&from_dir, from_name).ok_or(RenameError::NotAnnounced)?;
            if !holds_announced(record, &at_from, size, &digest) {
                return Err(RenameError::NotAnnounced);
            }
            Some(from_dir)
        }
    };
    let (dir, name) = match &from_dir {
        Some(d) => (d, from_name),
        None => (&to_dir, to_name),
    };
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(sys(from, "open"))?;
    let st = rustix::fs::fstat(&fd).map_err(sys(from, "fstat"))?;
    if OnDisk::of(&st).is_none_or(|d| !holds_announced(record, &d, size, &digest)) {
        return Err(RenameError::NotAnnounced);
    }
    // The new metadata first: the name appears with it.
    apply_meta_fd(fd.as_fd(), &entry.meta, entry.path.as_bytes())?;
    if let Some(from_dir) = &from_dir {
        rustix::fs::renameat(from_dir, from_name, &to_dir, to_name).map_err(sys(&entry.path, "rename"))?;
    }
    drop(guard);
    let mtime_ns = entry.meta.mtime_s * 1_000_000_000 + entry.meta.mtime_ns as i64;
    Ok(Moved {
        from_abs: root.absolute(from),
        to_abs: root.absolute(&entry.path),
        record: TargetRecord { ino: st.st_ino, size, mtime_ns, digest },
        dirs: from_dir.into_iter().chain([to_dir]).collect(),
        file: fd,
    })
}

/// Where a chunk index entry's file went if it was renamed here (following up to a
/// few renames). Blocking.
pub(crate) fn moved_location(store: &dyn WorkerStore, path: &[u8]) -> Option<Vec<u8>> {
    const HOPS_MAX: usize = 8;
    let mut at = None;
    let mut current = path.to_vec();
    for _ in 0..HOPS_MAX {
        match store.moved_to(&[current.clone()]).ok()?.pop().flatten() {
            Some(next) => {
                current = next.clone();
                at = Some(next);
            }
            None => break,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_announced_version_is_renamed() {
        let rec = TargetRecord { ino: 7, size: 100, mtime_ns: 5, digest: [1; 32] };
        let disk = OnDisk { ino: 7, size: 100, mtime_ns: 5 };
        assert!(holds_announced(&rec, &disk, 100, &[1; 32]));
        // Another version announced, or the file on disk is not what was recorded.
        assert!(!holds_announced(&rec, &disk, 100, &[2; 32]));
        assert!(!holds_announced(&rec, &disk, 101, &[1; 32]));
        assert!(!holds_announced(&rec, &OnDisk { ino: 8, ..disk }, 100, &[1; 32]));
        assert!(!holds_announced(&rec, &OnDisk { size: 99, ..disk }, 100, &[1; 32]));
        assert!(!holds_announced(&rec, &OnDisk { mtime_ns: 6, ..disk }, 100, &[1; 32]));
    }
}
