//! Turns the directory file handles fanotify reports into root-relative paths:
//! `open_by_handle_at` then `readlink("/proc/self/fd/N")`, with a bounded cache because a
//! busy directory reports the same handle thousands of times.
//!
//! A fanotify filesystem mark sees the whole filesystem, so most handles may lie outside
//! the root; those are cached too (as "outside") so that unrelated activity on the same
//! filesystem costs one hash lookup per event, not two syscalls.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::sys;

/// Entries kept before the cache is dropped wholesale (~100 bytes each).
const CACHE_ENTRIES_MAX: usize = 64 * 1024;

/// Where a directory handle points now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// Inside the root, at this relative path (empty = the root).
    Inside(PathBuf),
    /// Somewhere else on the filesystem. `first`: seen for the first time (not from the
    /// cache) and not an ancestor of the root, so its events may be ignored from now on.
    Outside { first: bool },
    /// The directory no longer exists (ESTALE, or readlink says "(deleted)").
    Gone,
}

/// Resolves handles against one mount; owns the cache.
pub(crate) struct DirResolver {
    /// Any descriptor on the watched filesystem (the root): `open_by_handle_at` needs it.
    mount_fd: OwnedFd,
    /// Absolute, canonical root.
    root: PathBuf,
    cache: HashMap<Vec<u8>, Option<PathBuf>>,
}

/// `struct file_handle` with room for the largest handle (`MAX_HANDLE_SZ`), aligned as
/// the kernel expects.
#[repr(C)]
struct HandleBuf {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; libc::MAX_HANDLE_SZ as usize],
}

impl DirResolver {
    pub(crate) fn new(mount_fd: OwnedFd, root: PathBuf) -> Self {
        DirResolver { mount_fd, root, cache: HashMap::new() }
    }

    /// Where the directory with this handle (`key`: the raw `struct file_handle`,
    /// `handle_type` and bytes split out) is now.
    pub(crate) fn resolve(&mut self, key: &[u8], handle_type: i32, handle: &[u8]) -> Resolved {
        if let Some(cached) = self.cache.get(key) {
            return cached.clone().map_or(Resolved::Outside { first: false }, Resolved::Inside);
        }
        let resolved = self.resolve_uncached(handle_type, handle);
        let entry = match &resolved {
            Resolved::Inside(path) => Some(path.clone()),
            Resolved::Outside { .. } => None,
            Resolved::Gone => return resolved, // never cache: inode numbers get reused
        };
        if self.cache.len() >= CACHE_ENTRIES_MAX {
            self.cache.clear();
        }
        self.cache.insert(key.to_vec(), entry);
        resolved
    }

    /// A directory moved somewhere on the filesystem: every cached path at or below it (and
    /// every "outside" verdict) may be wrong now. Renames of directories are rare next to
    /// the events that hit the cache, so dropping it all is the simple, safe choice.
    pub(crate) fn invalidate_all(&mut self) {
        self.cache.clear();
    }

    /// The handle of `path` as fanotify would report it (the cache key layout: the raw
    /// `struct file_handle`), for recognising events about the root itself.
    pub(crate) fn handle_of(path: &Path) -> io::Result<Vec<u8>> {
        let c_path = sys::c_path(path)?;
        let mut buf = HandleBuf {
            handle_bytes: libc::MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; libc::MAX_HANDLE_SZ as usize],
        };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `c_path` is NUL-terminated; `buf` is a live `struct file_handle` with room
        // for `handle_bytes` bytes; `mount_id` is a live int.
        sys::cvt(unsafe {
            libc::name_to_handle_at(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                (&mut buf as *mut HandleBuf).cast(),
                &mut mount_id,
                0,
            )
        })?;
        let len = (buf.handle_bytes as usize).min(buf.f_handle.len());
        let mut key = Vec::with_capacity(8 + len);
        key.extend_from_slice(&buf.handle_bytes.to_ne_bytes());
        key.extend_from_slice(&buf.handle_type.to_ne_bytes());
        key.extend_from_slice(&buf.f_handle[..len]);
        Ok(key)
    }

    /// The directory with this handle was deleted: forget it.
    pub(crate) fn forget(&mut self, key: &[u8]) {
        self.cache.remove(key);
    }

    fn resolve_uncached(&self, handle_type: i32, handle: &[u8]) -> Resolved {
        match self.open_handle(handle_type, handle, libc::O_PATH | libc::O_CLOEXEC) {
            Ok(fd) => match std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) {
                Ok(path) => self.classify(&path),
                Err(err) => {
                    tracing::debug!(error = %err, "readlink of a resolved directory handle failed");
                    Resolved::Gone
                }
            },
            Err(err) => {
                if err.raw_os_error() != Some(libc::ESTALE) {
                    tracing::debug!(error = %err, "open_by_handle_at failed");
                }
                Resolved::Gone
            }
        }
    }

    /// The directory with this handle, opened to be marked.
    pub(crate) fn open_dir(&self, handle_type: i32, handle: &[u8]) -> io::Result<OwnedFd> {
        self.open_handle(handle_type, handle, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
    }

    fn open_handle(&self, handle_type: i32, handle: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
        let mut buf = HandleBuf { handle_bytes: 0, handle_type, f_handle: [0; libc::MAX_HANDLE_SZ as usize] };
        let dst = buf.f_handle.get_mut(..handle.len()).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        dst.copy_from_slice(handle);
        buf.handle_bytes = handle.len() as u32;
        // SAFETY: `buf` is a live `struct file_handle` whose `handle_bytes` matches the bytes
        // filled in; `mount_fd` is a valid descriptor.
        let ret =
            unsafe { libc::open_by_handle_at(self.mount_fd.as_raw_fd(), (&mut buf as *mut HandleBuf).cast(), flags) };
        sys::owned_fd(ret)
    }

    fn classify(&self, path: &Path) -> Resolved {
        if path.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") {
            return Resolved::Gone;
        }
        match path.strip_prefix(&self.root) {
            Ok(rel) => Resolved::Inside(rel.to_path_buf()),
            // The root's ancestors stay reported: the root's own entry lives there.
            Err(_) => Resolved::Outside { first: !self.root.starts_with(path) },
        }
    }
}
