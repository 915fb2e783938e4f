//! fanotify backend: one filesystem-wide mark with directory-entry events
//! (`FAN_REPORT_DFID_NAME`), filtered down to the root.
//!
//! Unlike inotify it needs no watch per directory (no watch limit, no race when a
//! directory appears) and costs no kernel memory per watched directory; it needs
//! CAP_SYS_ADMIN. Each event names a parent directory by file handle plus an entry name;
//! the handle is resolved to a path when the event is read (see [`DirResolver`]), so a path
//! reflects where the directory is at read time, not at event time.
//!
//! The queue is left bounded (no `FAN_UNLIMITED_QUEUE`): a reader that falls behind gets
//! `FAN_Q_OVERFLOW` (whole root dirty, one rescan) instead of unbounded kernel memory.
//!
//! A filesystem mark also sees everything else written there (on a replication host: the
//! worker's own RocksDB files, a target tree on the same filesystem). Each such event
//! costs the writer a queued event and the watcher a wake-up and a read, only to be
//! dropped. So a directory found outside the root gets an ignore mark (`FAN_MARK_IGNORE`,
//! Linux 6.0, with `FAN_RENAME`): the kernel then drops its entries' events itself. A
//! rename is never ignored (an ignore mask on either directory would drop the whole
//! event, and a move into the root must be seen); any directory rename flushes every
//! ignore mark, since a directory moved into the root is inside now. What happened in it
//! between the move and the flush is found by the walk of the moved-in subtree, which
//! starts after the flush.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::dir_resolver::{DirResolver, Resolved};
use crate::error::WatchError;
use crate::event::{Event, EventKind};
use crate::fanotify_records::{FanEvent, FanEvents, FidInfo};
use crate::source::{Source, READS_PER_WAKEUP_MAX, READ_BUF_BYTES};
use crate::sys;

/// Events every mark asks for, whatever the kernel version.
const BASE_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_DELETE_SELF
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;

/// The events an ignore mark drops: those about a directory's entries, and its own.
/// Not `FAN_RENAME`, nor `FAN_DELETE_SELF`.
const IGNORE_MASK: u64 = libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_MODIFY
    | libc::FAN_ATTRIB
    | libc::FAN_ONDIR
    | libc::FAN_EVENT_ON_CHILD;

/// Ignore marks held at most (each pins its directory's inode in the kernel's cache);
/// past it, events of other outside directories are dropped here, as before.
const IGNORED_DIRS_MAX: usize = 8192;

/// A fanotify group with a filesystem mark, filtered to one root.
pub(crate) struct Fanotify {
    fd: OwnedFd,
    root: PathBuf,
    resolver: DirResolver,
    /// The root's own handle: its deletion means nothing more will be reported.
    root_handle: Vec<u8>,
    /// Cookies we make up to pair the two sides of a `FAN_RENAME` for the coalescer.
    next_cookie: u32,
    /// Handles of directories that were gone when their events were read. Harmless if we
    /// see the directory's `FAN_DELETE_SELF` (its contents went with it; its removal is
    /// reported by its parent); otherwise we cannot tell where those events happened.
    unresolved: HashSet<Vec<u8>>,
    /// Whether outside directories get ignore marks (the kernel has `FAN_MARK_IGNORE`
    /// and `FAN_RENAME`), and how many are held.
    ignoring: bool,
    ignored_dirs: usize,
    /// Event records read from the kernel, outside ones included.
    records_read: u64,
    buf: Vec<u8>,
}

impl Fanotify {
    /// Marks the filesystem holding `root` (absolute, canonical).
    pub(crate) fn new(root: &Path) -> Result<Self, WatchError> {
        let refused = |reason: &'static str, source: std::io::Error| WatchError::FanotifyRefused {
            path: root.to_path_buf(),
            reason,
            source,
        };
        let init_flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK | libc::FAN_REPORT_DFID_NAME;
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint;
        // SAFETY: fanotify_init takes no pointers.
        let fd = sys::owned_fd(unsafe { libc::fanotify_init(init_flags, event_flags) }).map_err(|err| {
            let reason = match err.raw_os_error() {
                Some(libc::EPERM) => "fanotify_init needs CAP_SYS_ADMIN (run as root)",
                Some(libc::EINVAL) => "the kernel lacks FAN_REPORT_DFID_NAME (needs Linux >= 5.9)",
                Some(libc::ENOSYS) => "the kernel is built without fanotify",
                _ => "fanotify_init failed",
            };
            refused(reason, err)
        })?;
        let rename_events = mark_filesystem(&fd, root).map_err(|(reason, err)| refused(reason, err))?;
        let mount_fd = std::fs::File::open(root)
            .map(OwnedFd::from)
            .map_err(|err| refused("cannot open the root for open_by_handle_at", err))?;
        let root_handle = DirResolver::handle_of(root)
            .map_err(|err| refused("name_to_handle_at on the root failed: no file handles here", err))?;
        let mut resolver = DirResolver::new(mount_fd, root.to_path_buf());
        if let Err((reason, err)) = self_check(&mut resolver, &root_handle) {
            return Err(refused(reason, err));
        }
        // With FAN_RENAME (Linux 5.17) renames arrive as one event with both sides, which we
        // pair; without it they are a delete plus a create.
        tracing::debug!(root = %root.display(), rename_events, "fanotify filesystem mark set");
        Ok(Fanotify {
            fd,
            root: root.to_path_buf(),
            resolver,
            root_handle,
            next_cookie: 0,
            unresolved: HashSet::new(),
            ignoring: rename_events,
            ignored_dirs: 0,
            records_read: 0,
            buf: vec![0; READ_BUF_BYTES],
        })
    }

    fn handle(&mut self, event: FanEvent<'_>, sink: &mut dyn FnMut(Event)) {
        if event.fd >= 0 {
            // SAFETY: the kernel gave us this descriptor with the event; nobody else owns it.
            drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(event.fd) });
        }
        let mask = event.mask;
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            tracing::warn!(root = %self.root.display(), "fanotify queue overflowed: whole root dirty");
            sink(Event::new("", EventKind::Overflow));
            return;
        }
        if mask & libc::FAN_RENAME != 0 {
            self.handle_rename(&event, sink);
            return;
        }
        let Some(info) = event.infos.first() else { return };
        let is_dir = mask & libc::FAN_ONDIR != 0;
        if mask & libc::FAN_DELETE_SELF != 0 && is_dir {
            // The directory itself is gone (its parent's FAN_DELETE reports the entry).
            self.unresolved.remove(info.handle);
            self.resolver.forget(info.handle);
            if info.handle == self.root_handle.as_slice() {
                tracing::error!(root = %self.root.display(), "watched root deleted");
                sink(Event::new("", EventKind::SubtreeDirty));
            }
            return;
        }
        let mask = mask & !libc::FAN_DELETE_SELF; // of a file: its parent's FAN_DELETE says it all
        if mask & !libc::FAN_ONDIR == 0 {
            return;
        }
        let Some(path) = self.entry_path(info) else { return };
        if mask & libc::FAN_CREATE != 0 {
            sink(Event::new(path.clone(), EventKind::Created));
        }
        if mask & libc::FAN_MOVED_TO != 0 {
            sink(Event::new(path.clone(), EventKind::MovedTo { cookie: 0 }));
            if is_dir {
                // Without FAN_RENAME we cannot tell a move within the root from one into it.
                sink(Event::new(path.clone(), EventKind::SubtreeDirty));
            }
        }
        if mask & (libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE) != 0 {
            sink(Event::new(path.clone(), EventKind::Modified));
        }
        if mask & libc::FAN_ATTRIB != 0 {
            sink(Event::new(path.clone(), EventKind::Attrib));
        }
        if mask & libc::FAN_MOVED_FROM != 0 {
            sink(Event::new(path.clone(), EventKind::MovedFrom { cookie: 0 }));
        }
        if mask & libc::FAN_DELETE != 0 {
            sink(Event::new(path, EventKind::Deleted));
        }
        if is_dir && mask & (libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) != 0 {
            self.directory_moved(sink);
        }
    }

    /// `FAN_RENAME`: both sides in one event, each filtered to the root on its own.
    fn handle_rename(&mut self, event: &FanEvent<'_>, sink: &mut dyn FnMut(Event)) {
        let side = |info_type: u8| event.infos.iter().find(|info| info.info_type == info_type);
        let from = side(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME).and_then(|info| self.entry_path(info));
        let to = side(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME).and_then(|info| self.entry_path(info));
        let is_dir = event.mask & libc::FAN_ONDIR != 0;
        match (from, to) {
            (Some(from), Some(to)) => {
                self.next_cookie = self.next_cookie.wrapping_add(1).max(1);
                let cookie = self.next_cookie;
                sink(Event::new(from, EventKind::MovedFrom { cookie }));
                sink(Event::new(to, EventKind::MovedTo { cookie }));
            }
            (Some(from), None) => sink(Event::new(from, EventKind::Deleted)),
            (None, Some(to)) => {
                sink(Event::new(to.clone(), EventKind::Created));
                if is_dir {
                    // Moved in from outside: its contents are new here too.
                    sink(Event::new(to, EventKind::SubtreeDirty));
                }
            }
            (None, None) => {}
        }
        if is_dir {
            self.directory_moved(sink);
        }
    }

    /// A directory moved somewhere on the filesystem: cached paths and verdicts may be
    /// wrong now, and an ignored directory may be inside the root.
    fn directory_moved(&mut self, sink: &mut dyn FnMut(Event)) {
        self.resolver.invalidate_all();
        if self.ignored_dirs == 0 {
            return;
        }
        self.ignored_dirs = 0;
        // Without FAN_MARK_FILESYSTEM or FAN_MARK_MOUNT: every inode mark of the group,
        // which are all ignore marks (the filesystem mark stays).
        // SAFETY: no pointer is passed.
        let flushed = sys::cvt(unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), libc::FAN_MARK_FLUSH, 0, libc::AT_FDCWD, std::ptr::null())
        });
        if let Err(err) = flushed {
            // Ignored directories may have moved into the root: rescan it, ignore no more.
            tracing::error!(error = %err, "cannot remove fanotify ignore marks: whole root dirty");
            self.ignoring = false;
            sink(Event::new("", EventKind::Overflow));
        }
    }

    /// Asks the kernel to drop the events of a directory found outside the root.
    fn ignore_dir(&mut self, info: &FidInfo<'_>) {
        if !self.ignoring || self.ignored_dirs >= IGNORED_DIRS_MAX {
            return;
        }
        let Ok(dir) = self.resolver.open_dir(info.handle_type(), info.handle_bytes()) else { return };
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_IGNORE_SURV;
        // SAFETY: `dir` is an open directory; a null path marks `dir` itself.
        let marked = sys::cvt(unsafe {
            libc::fanotify_mark(self.fd.as_raw_fd(), flags, IGNORE_MASK, dir.as_raw_fd(), std::ptr::null())
        });
        match marked {
            Ok(_) => self.ignored_dirs += 1,
            Err(err) => {
                // A kernel without FAN_MARK_IGNORE (EINVAL): events are dropped here instead.
                tracing::debug!(error = %err, "no fanotify ignore marks; outside events are filtered in user space");
                self.ignoring = false;
            }
        }
    }

    /// The root-relative path an info record names, or `None` if it is outside the root
    /// (or its directory is gone, which is remembered in `unresolved`).
    fn entry_path(&mut self, info: &FidInfo<'_>) -> Option<PathBuf> {
        match self.resolver.resolve(info.handle, info.handle_type(), info.handle_bytes()) {
            Resolved::Inside(dir) if info.name == b"." || info.name.is_empty() => Some(dir),
            Resolved::Inside(dir) => Some(dir.join(std::ffi::OsStr::from_bytes(info.name))),
            Resolved::Outside { first } => {
                if first {
                    self.ignore_dir(info);
                }
                None
            }
            Resolved::Gone => {
                if self.unresolved.len() < UNRESOLVED_MAX {
                    self.unresolved.insert(info.handle.to_vec());
                }
                None
            }
        }
    }
}

/// Pending unresolved handles kept; past it one more is simply not remembered, and the
/// end-of-drain check still sees a non-empty set (root dirty).
const UNRESOLVED_MAX: usize = 4096;

impl Source for Fanotify {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn read_events(&mut self, sink: &mut dyn FnMut(Event)) -> Result<(), WatchError> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut drained = false;
        let mut result = Ok(());
        for _ in 0..READS_PER_WAKEUP_MAX {
            let len = match sys::read_nonblocking(self.fd.as_fd(), &mut buf) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    drained = true;
                    break;
                }
                Err(source) => {
                    result = Err(WatchError::Sys { op: "read(fanotify)", source });
                    break;
                }
            };
            for decoded in FanEvents::new(&buf[..len]) {
                match decoded {
                    Ok(event) => {
                        self.records_read += 1;
                        self.handle(event, sink)
                    }
                    Err(err) => {
                        tracing::error!(?err, "undecodable fanotify record: whole root dirty");
                        sink(Event::new("", EventKind::Overflow));
                        break;
                    }
                }
            }
        }
        self.buf = buf;
        // Everything queued up to now has been read: a gone directory whose deletion we did
        // not see may have been inside the root.
        if drained && !self.unresolved.is_empty() {
            tracing::warn!(
                root = %self.root.display(),
                directories = self.unresolved.len(),
                "events in directories that vanished before they could be resolved: whole root dirty"
            );
            self.unresolved.clear();
            sink(Event::new("", EventKind::Overflow));
        }
        result
    }
}

/// Adds the filesystem mark; returns whether `FAN_RENAME` is in use.
fn mark_filesystem(fd: &OwnedFd, root: &Path) -> Result<bool, (&'static str, std::io::Error)> {
    let c_root = sys::c_path(root).map_err(|err| ("root path contains a NUL byte", err))?;
    let mark = |mask: u64| {
        let flags = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // SAFETY: `c_root` is NUL-terminated and outlives the call.
        sys::cvt(unsafe {
            libc::fanotify_mark(std::os::fd::AsRawFd::as_raw_fd(fd), flags, mask, libc::AT_FDCWD, c_root.as_ptr())
        })
    };
    match mark(BASE_MASK | libc::FAN_RENAME) {
        Ok(_) => return Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            tracing::info!("kernel without FAN_RENAME (Linux < 5.17): renames reported as delete + create");
        }
        Err(err) => return Err((mark_refusal(&err), err)),
    }
    match mark(BASE_MASK | libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO) {
        Ok(_) => Ok(false),
        Err(err) => Err((mark_refusal(&err), err)),
    }
}

fn mark_refusal(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EPERM) => "FAN_MARK_FILESYSTEM needs CAP_SYS_ADMIN in the initial user namespace",
        Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            "this filesystem cannot report file handles (e.g. tmpfs before Linux 6.6, some FUSE/network filesystems)"
        }
        Some(libc::EXDEV) => "this filesystem's handles are not unique across it (e.g. a btrfs subvolume)",
        Some(libc::EINVAL) => "the kernel rejected the event mask (needs Linux >= 5.9)",
        _ => "fanotify_mark failed",
    }
}

/// Resolving the root's own handle must give the root back; otherwise (no
/// CAP_DAC_READ_SEARCH, handles that do not decode) no event could be placed.
fn self_check(resolver: &mut DirResolver, root_handle: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    let handle_type = root_handle.get(4..8).and_then(|b| b.try_into().ok()).map_or(0, i32::from_ne_bytes);
    let handle = root_handle.get(8..).unwrap_or(&[]);
    match resolver.resolve(root_handle, handle_type, handle) {
        Resolved::Inside(path) if path.as_os_str().is_empty() => Ok(()),
        _ => Err((
            "open_by_handle_at cannot resolve the root's handle back to it (needs CAP_DAC_READ_SEARCH)",
            std::io::Error::from_raw_os_error(libc::EPERM),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads whatever is queued; returns the events and how many records that took.
    fn drain(f: &mut Fanotify) -> (Vec<Event>, u64) {
        let before = f.records_read;
        let mut events = Vec::new();
        // The kernel queues an event before the syscall that caused it returns.
        f.read_events(&mut |e| events.push(e)).expect("read");
        (events, f.records_read - before)
    }

    /// A tmpfs of its own for a test that counts the kernel's records: a filesystem mark
    /// sees every change on its filesystem, and other tests write to the shared ones.
    struct PrivateFs {
        dir: tempfile::TempDir,
    }

    impl PrivateFs {
        fn new() -> PrivateFs {
            let dir = tempfile::Builder::new().prefix("xtsync-fan-fs").tempdir_in("/var/tmp").unwrap();
            let target = std::ffi::CString::new(dir.path().as_os_str().as_bytes()).unwrap();
            // SAFETY: NUL-terminated strings that outlive the call.
            let ret = unsafe {
                libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=16m".as_ptr().cast())
            };
            assert_eq!(ret, 0, "mount tmpfs (needs root): {}", std::io::Error::last_os_error());
            PrivateFs { dir }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }
    }

    impl Drop for PrivateFs {
        fn drop(&mut self) {
            let target = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
            // SAFETY: a NUL-terminated string that outlives the call.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }

    fn mentions(events: &[Event], path: &str) -> bool {
        events.iter().any(|e| e.path == Path::new(path))
    }

    /// Needs root and a kernel with FAN_MARK_IGNORE (6.0); on older ones it checks that
    /// nothing is ignored and events are still filtered.
    #[test]
    fn outside_directories_are_ignored_by_the_kernel_until_a_directory_moves() {
        let dir = PrivateFs::new();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(outside.join("busy")).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        let mut f = Fanotify::new(&root).expect("fanotify as root");
        let kernel_ignores = f.ignoring;

        std::fs::write(outside.join("busy/first"), b"x").unwrap();
        let (events, _) = drain(&mut f);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(f.ignored_dirs, usize::from(kernel_ignores));

        for i in 0..50 {
            std::fs::write(outside.join(format!("busy/f{i}")), b"x").unwrap();
        }
        let (events, records) = drain(&mut f);
        assert!(events.is_empty(), "{events:?}");
        if kernel_ignores {
            assert_eq!(records, 0, "the kernel still queued events of an ignored directory");
        } else {
            assert!(records >= 50);
        }

        // A file moved from the ignored directory into the root is seen.
        std::fs::rename(outside.join("busy/f0"), root.join("moved-in")).unwrap();
        let (events, _) = drain(&mut f);
        assert!(mentions(&events, "moved-in"), "{events:?}");

        // The ignored directory itself moved into the root: from then on, inside.
        std::fs::rename(outside.join("busy"), root.join("busy")).unwrap();
        let (events, _) = drain(&mut f);
        assert!(mentions(&events, "busy"), "{events:?}");
        assert_eq!(f.ignored_dirs, 0, "a directory rename flushes the ignore marks");
        std::fs::write(root.join("busy/after"), b"y").unwrap();
        let (events, _) = drain(&mut f);
        assert!(mentions(&events, "busy/after"), "{events:?}");
    }

    /// The root's parent holds the root's own entry: never ignored.
    #[test]
    fn the_roots_ancestors_are_not_ignored() {
        let dir = PrivateFs::new();
        let root = std::fs::canonicalize(dir.path()).unwrap().join("root");
        std::fs::create_dir(&root).unwrap();
        let mut f = Fanotify::new(&root).expect("fanotify as root");
        std::fs::write(dir.path().join("sibling"), b"x").unwrap();
        let (events, records) = drain(&mut f);
        assert!(events.is_empty() && records >= 1, "{events:?}");
        assert_eq!(f.ignored_dirs, 0);
        std::fs::write(dir.path().join("sibling2"), b"x").unwrap();
        let (_, records) = drain(&mut f);
        assert!(records >= 1, "events in the root's parent stopped coming");
    }
}
