//! inotify backend: one watch per directory, added as directories appear.
//!
//! inotify is not recursive, so a directory created (or moved in) gets its watch from us,
//! after the fact: whatever was put in it before the watch existed is found by listing it
//! right after adding the watch, and reported as created. A watch limit hit
//! (`fs.inotify.max_user_watches`) leaves a subtree unwatched: it is reported dirty, and
//! only reconciliation scans will see later changes there.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::WatchError;
use crate::event::{Event, EventKind};
use crate::source::{Source, READS_PER_WAKEUP_MAX, READ_BUF_BYTES};
use crate::sys;
use crate::watch_table::WatchTable;

/// What every directory watch asks for. `IN_EXCL_UNLINK` drops events on files that were
/// unlinked while still open (they are no longer in the tree); `IN_DONT_FOLLOW` and
/// `IN_ONLYDIR` make a symlink or a file swapped in for a directory fail instead of being
/// watched.
const WATCH_MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_EXCL_UNLINK
    | libc::IN_DONT_FOLLOW
    | libc::IN_ONLYDIR;

/// inotify watches of one root.
pub(crate) struct Inotify {
    fd: OwnedFd,
    /// Absolute, canonical root.
    root: PathBuf,
    table: WatchTable,
    /// Directories that moved away, by cookie, until their `IN_MOVED_TO` (a move inside the
    /// root) or the end of the read (a move out of the root: unwatch them).
    moved_dirs: HashMap<u32, PathBuf>,
    /// A directory scan reports at most this many entries; past it the directory is
    /// reported dirty instead (a big tree moved in is one rescan, not a million events).
    scan_entries_max: usize,
    /// Set by `IN_Q_OVERFLOW`: directories may have appeared or moved unseen.
    resync_needed: bool,
    /// Only the first watch-limit hit is logged as a warning (then at debug level).
    watch_limit_warned: bool,
    buf: Vec<u8>,
}

impl Inotify {
    /// Watches every directory under `root` (absolute, canonical). Subtrees that could not be
    /// watched come back as [`EventKind::SubtreeDirty`] events.
    pub(crate) fn new(root: &Path, scan_entries_max: usize) -> Result<(Self, Vec<Event>), WatchError> {
        // SAFETY: inotify_init1 takes no pointers.
        let fd =
            sys::owned_fd(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) }).map_err(|source| {
                WatchError::InotifySetup {
                    path: root.to_path_buf(),
                    reason: "inotify_init1 refused (EMFILE: raise fs.inotify.max_user_instances)",
                    source,
                }
            })?;
        let mut inotify = Inotify {
            fd,
            root: root.to_path_buf(),
            table: WatchTable::default(),
            moved_dirs: HashMap::new(),
            scan_entries_max,
            resync_needed: false,
            watch_limit_warned: false,
            buf: vec![0; READ_BUF_BYTES],
        };
        if let Err(source) = inotify.add_watch(Path::new("")) {
            return Err(WatchError::InotifySetup {
                path: root.to_path_buf(),
                reason: "inotify_add_watch on the root failed",
                source,
            });
        }
        let mut initial = Vec::new();
        inotify.watch_tree(PathBuf::new(), false, &mut |event| initial.push(event));
        tracing::debug!(root = %root.display(), watches = inotify.table.len(), "inotify watches set");
        Ok((inotify, initial))
    }

    fn add_watch(&mut self, rel: &Path) -> io::Result<i32> {
        let path = sys::c_path(&self.root.join(rel))?;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let wd = sys::cvt(unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), WATCH_MASK) })?;
        self.table.insert(wd, rel.to_path_buf());
        Ok(wd)
    }

    fn rm_watch(&self, wd: i32) {
        // SAFETY: no pointers. EINVAL (already gone) is fine: we only want it gone.
        let _ = unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Adds watches to `start` and every directory below it. With `report`, every entry
    /// found is reported as created (they appeared before their directory was watched).
    fn watch_tree(&mut self, start: PathBuf, report: bool, sink: &mut dyn FnMut(Event)) {
        let mut reported = 0usize;
        let mut overflowed = !report;
        let mut stack = vec![start.clone()];
        while let Some(dir) = stack.pop() {
            // The root's own watch is added (and its failure handled) by the callers.
            if !dir.as_os_str().is_empty() {
                if let Err(err) = self.add_watch(&dir) {
                    self.watch_failed(&dir, &err, sink);
                    continue;
                }
            }
            let entries = match std::fs::read_dir(self.root.join(&dir)) {
                Ok(entries) => entries,
                Err(err) if is_gone(&err) => continue,
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot list a new directory; marking it dirty");
                    sink(Event::new(dir, EventKind::SubtreeDirty));
                    continue;
                }
            };
            for entry in entries.flatten() {
                let path = dir.join(entry.file_name());
                if !overflowed {
                    if reported < self.scan_entries_max {
                        reported += 1;
                        sink(Event::new(path.clone(), EventKind::Created));
                    } else {
                        overflowed = true;
                        sink(Event::new(start.clone(), EventKind::SubtreeDirty));
                    }
                }
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                }
            }
        }
    }

    fn watch_failed(&mut self, dir: &Path, err: &io::Error, sink: &mut dyn FnMut(Event)) {
        if is_gone(err) {
            return; // deleted (or replaced) before we got to it: its removal is an event
        }
        if err.raw_os_error() == Some(libc::ENOSPC) {
            if self.watch_limit_warned {
                tracing::debug!(dir = %dir.display(), "inotify watch limit reached; subtree unwatched");
            } else {
                self.watch_limit_warned = true;
                tracing::warn!(
                    root = %self.root.display(),
                    dir = %dir.display(),
                    watches = self.table.len(),
                    "inotify watch limit reached: raise sysctl fs.inotify.max_user_watches (or run as root for \
                     fanotify); subtrees left unwatched are reported dirty and only reconciliation scans see them"
                );
            }
        } else {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot watch directory; marking it dirty");
        }
        sink(Event::new(dir.to_path_buf(), EventKind::SubtreeDirty));
    }

    fn handle(&mut self, raw: RawEvent<'_>, sink: &mut dyn FnMut(Event)) {
        let RawEvent { wd, mask, cookie, name } = raw;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            tracing::warn!(root = %self.root.display(), "inotify queue overflowed: whole root dirty");
            self.resync_needed = true;
            sink(Event::new("", EventKind::Overflow));
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            self.table.remove_wd(wd);
            return;
        }
        let Some(dir) = self.table.path(wd) else { return };
        let is_root = dir.as_os_str().is_empty();
        let path = if name.is_empty() { dir.to_path_buf() } else { dir.join(std::ffi::OsStr::from_bytes(name)) };
        let is_dir = mask & libc::IN_ISDIR != 0;

        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_UNMOUNT) != 0 {
            // The parent's IN_DELETE / IN_MOVED_FROM reports the entry; only the root and
            // unmounts need something here.
            if is_root || mask & libc::IN_UNMOUNT != 0 {
                tracing::error!(root = %self.root.display(), mask, "watched root deleted, moved or unmounted");
                sink(Event::new(path, EventKind::SubtreeDirty));
            }
            return;
        }
        if mask & libc::IN_CREATE != 0 {
            sink(Event::new(path.clone(), EventKind::Created));
            if is_dir {
                self.watch_tree(path.clone(), true, sink);
            }
        }
        if mask & (libc::IN_MODIFY | libc::IN_CLOSE_WRITE) != 0 {
            sink(Event::new(path.clone(), EventKind::Modified));
        }
        if mask & libc::IN_ATTRIB != 0 {
            sink(Event::new(path.clone(), EventKind::Attrib));
        }
        if mask & libc::IN_MOVED_FROM != 0 {
            if is_dir {
                self.moved_dirs.insert(cookie, path.clone());
            }
            sink(Event::new(path.clone(), EventKind::MovedFrom { cookie }));
        }
        if mask & libc::IN_MOVED_TO != 0 {
            sink(Event::new(path.clone(), EventKind::MovedTo { cookie }));
            if is_dir {
                match self.moved_dirs.remove(&cookie) {
                    Some(from) => self.table.rename_subtree(&from, &path),
                    // Moved in from outside: watch it and report what it holds.
                    None => self.watch_tree(path.clone(), true, sink),
                }
            }
        }
        if mask & libc::IN_DELETE != 0 {
            sink(Event::new(path, EventKind::Deleted));
        }
    }

    /// Directories whose `IN_MOVED_FROM` found no `IN_MOVED_TO` left the root: unwatch them
    /// (they still exist elsewhere and would keep reporting under a stale path).
    fn unwatch_departed(&mut self) {
        let departed: Vec<PathBuf> = self.moved_dirs.drain().map(|(_, path)| path).collect();
        for dir in departed {
            for wd in self.table.remove_subtree(&dir) {
                self.rm_watch(wd);
            }
        }
    }

    /// After an overflow: re-walk the tree so that every directory has a watch under its
    /// current path, and drop watches of directories no longer in the tree.
    fn resync(&mut self, sink: &mut dyn FnMut(Event)) {
        self.resync_needed = false;
        let before = self.table.wds();
        let mut fresh = WatchTable::default();
        std::mem::swap(&mut self.table, &mut fresh);
        if self.add_watch(Path::new("")).is_err() {
            tracing::error!(root = %self.root.display(), "cannot re-watch the root after an overflow");
        }
        self.watch_tree(PathBuf::new(), false, sink);
        for wd in before {
            if self.table.path(wd).is_none() {
                self.rm_watch(wd);
            }
        }
        tracing::info!(root = %self.root.display(), watches = self.table.len(), "inotify watches resynced");
    }
}

impl Source for Inotify {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn read_events(&mut self, sink: &mut dyn FnMut(Event)) -> Result<(), WatchError> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut result = Ok(());
        for _ in 0..READS_PER_WAKEUP_MAX {
            let len = match sys::read_nonblocking(self.fd.as_fd(), &mut buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(source) => {
                    result = Err(WatchError::Sys { op: "read(inotify)", source });
                    break;
                }
            };
            for raw in RawEvents::new(&buf[..len]) {
                self.handle(raw, sink);
            }
        }
        self.buf = buf;
        self.unwatch_departed();
        if self.resync_needed {
            self.resync(sink);
        }
        result
    }
}

/// ENOENT / ENOTDIR: the directory went away (or was replaced) before we reached it.
fn is_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// One `struct inotify_event`, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RawEvent<'a> {
    wd: i32,
    mask: u32,
    cookie: u32,
    /// The name without its NUL padding; empty for events on the watched directory itself.
    name: &'a [u8],
}

/// Iterates the records of one read(2). A truncated record ends the iteration: the kernel
/// never splits records, so it would mean a bug, and it must not become a panic.
struct RawEvents<'a> {
    rest: &'a [u8],
}

/// `sizeof(struct inotify_event)` without the name.
const EVENT_HEADER_BYTES: usize = 16;

impl<'a> RawEvents<'a> {
    fn new(buf: &'a [u8]) -> Self {
        RawEvents { rest: buf }
    }
}

impl<'a> Iterator for RawEvents<'a> {
    type Item = RawEvent<'a>;

    fn next(&mut self) -> Option<RawEvent<'a>> {
        let header = self.rest.get(..EVENT_HEADER_BYTES)?;
        let word = |at: usize| u32::from_ne_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let name_len = word(12) as usize;
        let end = EVENT_HEADER_BYTES.saturating_add(name_len);
        let Some(name) = self.rest.get(EVENT_HEADER_BYTES..end) else {
            self.rest = &[];
            return None;
        };
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        let event = RawEvent { wd: word(0) as i32, mask: word(4), cookie: word(8), name };
        self.rest = self.rest.get(end..).unwrap_or(&[]);
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(wd: i32, mask: u32, cookie: u32, name: &[u8], padded_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&wd.to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&cookie.to_ne_bytes());
        out.extend_from_slice(&(padded_len as u32).to_ne_bytes());
        let mut padded = name.to_vec();
        padded.resize(padded_len, 0);
        out.extend_from_slice(&padded);
        out
    }

    #[test]
    fn parses_records_and_strips_name_padding() {
        let mut buf = record(3, libc::IN_CREATE, 0, b"file.txt", 16);
        buf.extend(record(1, libc::IN_ATTRIB, 0, b"", 0));
        buf.extend(record(3, libc::IN_MOVED_FROM, 42, b"x", 4));
        let events: Vec<RawEvent<'_>> = RawEvents::new(&buf).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0], RawEvent { wd: 3, mask: libc::IN_CREATE, cookie: 0, name: b"file.txt" });
        assert_eq!(events[1].name, b"");
        assert_eq!(events[2].cookie, 42);
    }

    #[test]
    fn truncated_records_end_iteration_without_panicking() {
        let buf = record(3, libc::IN_CREATE, 0, b"file.txt", 16);
        for cut in 0..buf.len() {
            assert_eq!(RawEvents::new(&buf[..cut]).count(), 0, "cut at {cut}");
        }
        let mut huge = record(3, libc::IN_CREATE, 0, b"", 0);
        huge[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(RawEvents::new(&huge).count(), 0);
    }
}
