//! Filesystem operations at the target, all relative to the job's root directory fd and
//! resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: a name from the wire
//! cannot reach outside the root, not even through a symlink planted inside it. This
//! is the second wall after `RelPath` validation in the wire crate.
//!
//! These are plain (blocking) syscalls on metadata; file *data* goes through io_uring
//! in `assemble.rs`. Directory fsyncs happen in the durability barrier, off the
//! executor.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;
use xtsync_wire::{Meta, RelPath};

pub(crate) use xtsync_wire::TEMP_PREFIX;

#[derive(Debug, thiserror::Error)]
pub(crate) enum FsError {
    #[error("{path}: {op}: {errno}")]
    Sys { path: String, op: &'static str, errno: Errno },
    #[error("{path}: refused: resolving it would leave the job's root or follow a symlink")]
    Escape { path: String },
}

fn sys<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(Errno) -> FsError + 'a {
    move |errno| {
        let path = String::from_utf8_lossy(path).into_owned();
        if errno == Errno::XDEV || errno == Errno::LOOP {
            FsError::Escape { path }
        } else {
            FsError::Sys { path, op, errno }
        }
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// A stat's ctime in nanoseconds (what a chunk index entry records, see
/// `xtsync_store::ChunkLocation::ctime_ns`).
pub(crate) fn ctime_ns(st: &rustix::fs::Stat) -> i64 {
    st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64
}

/// The job's root at the target.
pub(crate) struct TargetRoot {
    fd: OwnedFd,
    path: PathBuf,
    /// Directories in which a directory was created and whose entries are not yet
    /// synced: a file acknowledged in a new directory needs them durable too.
    unsynced_parents: std::sync::Mutex<Option<Vec<OwnedFd>>>,
}

/// Directories created between two syncs that are tracked one by one (see `created_in`).
const UNSYNCED_PARENTS_MAX: usize = 256;

impl TargetRoot {
    /// Opens the root, creating it (and its parents) if needed.
    pub(crate) fn open(path: &Path) -> Result<TargetRoot, FsError> {
        let bytes = path.as_os_str().as_encoded_bytes();
        std::fs::create_dir_all(path)
            .map_err(|e| sys(bytes, "create root")(Errno::from_io_error(&e).unwrap_or(Errno::IO)))?;
        let fd = rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(sys(bytes, "open root"))?;
        Ok(TargetRoot { fd, path: path.to_path_buf(), unsynced_parents: std::sync::Mutex::new(Some(Vec::new())) })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Names this tree (see `HelloAck::tree_id`): the root directory's device, inode,
    /// inode generation (`FS_IOC_GETVERSION`: it changes when an inode number is used
    /// again) and birth time (each 0 where the filesystem does not keep it), hashed. A
    /// root removed and made again is a new tree even where the inode number is reused.
    pub(crate) fn tree_id(&self) -> Result<[u8; 32], FsError> {
        let bytes = self.path.as_os_str().as_encoded_bytes();
        let mask = rustix::fs::StatxFlags::INO | rustix::fs::StatxFlags::BTIME;
        let st = rustix::fs::statx(self.fd.as_fd(), "", AtFlags::EMPTY_PATH, mask).map_err(sys(bytes, "statx root"))?;
        let born = if st.stx_mask & rustix::fs::StatxFlags::BTIME.bits() != 0 {
            (st.stx_btime.tv_sec, st.stx_btime.tv_nsec)
        } else {
            (0, 0)
        };
        let generation = inode_generation(self.fd.as_fd()).unwrap_or(0);
        let mut h = blake3::Hasher::new();
        h.update(b"xtsync tree id v2");
        for x in
            [st.stx_dev_major as u64, st.stx_dev_minor as u64, st.stx_ino, generation, born.0 as u64, born.1 as u64]
        {
            h.update(&x.to_le_bytes());
        }
        Ok(*h.finalize().as_bytes())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Absolute path of an entry (for the chunk index and records).
    pub(crate) fn absolute(&self, rel: &RelPath) -> Vec<u8> {
        let mut v = self.path.as_os_str().as_encoded_bytes().to_vec();
        if !rel.is_root() {
            v.push(b'/');
            v.extend_from_slice(rel.as_bytes());
        }
        v
    }

    /// Opens directory `rel` beneath the root; with `create`, missing components are
    /// created (mode 0700 until the pass applies the source's metadata) and a
    /// non-directory in the way is replaced.
    pub(crate) fn dir(&self, rel: &RelPath, create: bool) -> Result<OwnedFd, FsError> {
        let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
        let path = if rel.is_root() { &b"."[..] } else { rel.as_bytes() };
        match rustix::fs::openat2(&self.fd, path, flags, Mode::empty(), RESOLVE) {
            Ok(fd) => return Ok(fd),
            Err(e) if create && (e == Errno::NOENT || e == Errno::NOTDIR) => {}
            Err(e) => return Err(sys(path, "open directory")(e)),
        }
        let mut cur =
            rustix::fs::openat2(&self.fd, ".", flags, Mode::empty(), RESOLVE).map_err(sys(b".", "open root"))?;
        for comp in rel.as_bytes().split(|&b| b == b'/') {
            let open = |d: &OwnedFd| rustix::fs::openat2(d, comp, flags, Mode::empty(), RESOLVE);
            let next = match open(&cur) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o700)) {
                        Ok(()) => self.created_in(&cur),
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(sys(rel.as_bytes(), "mkdir")(e)),
                    }
                    open(&cur).map_err(sys(rel.as_bytes(), "open directory"))?
                }
                Err(Errno::NOTDIR) => {
                    // A file where the source now has a directory: replace it.
                    remove_tree(cur.as_fd(), comp).map_err(|e| sys(rel.as_bytes(), "replace file by directory")(e))?;
                    rustix::fs::mkdirat(&cur, comp, Mode::from_raw_mode(0o700))
                        .map_err(sys(rel.as_bytes(), "mkdir"))?;
                    self.created_in(&cur);
                    open(&cur).map_err(sys(rel.as_bytes(), "open directory"))?
                }
                Err(e) => return Err(sys(rel.as_bytes(), "open directory")(e)),
            };
            cur = next;
        }
        Ok(cur)
    }

    fn created_in(&self, parent: &OwnedFd) {
        let mut parents = self.unsynced_parents.lock().unwrap_or_else(|p| p.into_inner());
        // Past this many (a pass creating a large tree) one `syncfs` is cheaper than
        // a descriptor and an fsync each; `None` stands for "all of them".
        match parents.as_mut() {
            Some(list) if list.len() < UNSYNCED_PARENTS_MAX => match rustix::io::fcntl_dupfd_cloexec(parent, 0) {
                Ok(dup) => list.push(dup),
                Err(_) => *parents = None,
            },
            _ => *parents = None,
        }
    }

    /// The directories in which directories were created since the last call, to be
    /// synced before anything in those new directories is acknowledged; `None` when
    /// there were too many to list (sync the whole filesystem instead).
    pub(crate) fn take_unsynced_parents(&self) -> Option<Vec<OwnedFd>> {
        self.unsynced_parents.lock().unwrap_or_else(|p| p.into_inner()).replace(Vec::new())
    }

    /// The parent directory of `rel` (created if missing) and its last component.
    pub(crate) fn parent<'a>(&self, rel: &'a RelPath) -> Result<(OwnedFd, &'a [u8]), FsError> {
        let (parent, name) = rel.split_last().ok_or_else(|| FsError::Escape { path: String::new() })?;
        Ok((self.dir(&parent, true)?, name))
    }
}

/// The inode generation of `fd` (`FS_IOC_GETVERSION`), where the filesystem has one.
fn inode_generation(fd: BorrowedFd<'_>) -> Option<u64> {
    const FS_IOC_GETVERSION: libc::c_ulong = 0x8008_7601;
    let mut generation: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one `long` through the pointer, which is valid
    // for the call; `fd` is an open descriptor.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_GETVERSION, &mut generation as *mut libc::c_long) };
    (rc == 0).then_some(generation as u64)
}

/// Creates an empty temporary file in `dir` (0600; permissions are set before rename).
pub(crate) fn create_temp(dir: BorrowedFd<'_>, tag: &str) -> Result<(OwnedFd, String), FsError> {
    let name = format!("{TEMP_PREFIX}{tag}");
    // Never an existing file: it may be a checkpointed partial that a resumed transfer
    // is about to read from.
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rustix::fs::openat(dir, name.as_str(), flags, Mode::from_raw_mode(0o600))
        .map_err(sys(name.as_bytes(), "create temporary file"))?;
    Ok((fd, name))
}

/// Atomically puts `tmp` in place of `name` in the same directory. A directory in the
/// way (the source replaced a directory by a file) is removed first.
pub(crate) fn replace(dir: BorrowedFd<'_>, tmp: &str, name: &[u8]) -> Result<(), FsError> {
    match rustix::fs::renameat(dir, tmp, dir, name) {
        Err(Errno::ISDIR) | Err(Errno::NOTEMPTY) | Err(Errno::EXIST) => {
            remove_tree(dir, name).map_err(sys(name, "remove directory in the way"))?;
            rustix::fs::renameat(dir, tmp, dir, name).map_err(sys(name, "rename"))
        }
        other => other.map_err(sys(name, "rename")),
    }
}

/// Removes `name` in `dir`, recursively if it is a directory; never follows symlinks.
pub(crate) fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(e) => return Err(e),
    }
    let sub =
        rustix::fs::openat2(dir, name, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty(), RESOLVE)?;
    for child in list_dir(sub.as_fd())? {
        remove_tree(sub.as_fd(), &child)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}

/// Names in a directory, without `.` and `..`.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, Errno> {
    let dup = rustix::fs::openat(dir, ".", OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(dup)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    Ok(names)
}

fn timestamps(meta: &Meta) -> Timestamps {
    let t = Timespec { tv_sec: meta.mtime_s, tv_nsec: meta.mtime_ns as _ };
    Timestamps { last_access: t, last_modification: t }
}

/// Whether ownership is applied: only root may give files away.
pub(crate) fn can_chown() -> bool {
    rustix::process::geteuid().is_root()
}

/// Applies mode, owner, `user.*` xattrs and mtime to an open file or directory. The
/// mtime goes last so that nothing after it changes it.
pub(crate) fn apply_meta_fd(fd: BorrowedFd<'_>, meta: &Meta, what: &[u8]) -> Result<(), FsError> {
    if can_chown() {
        rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(meta.uid)), Some(rustix::fs::Gid::from_raw(meta.gid)))
            .map_err(sys(what, "chown"))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode & 0o7777)).map_err(sys(what, "chmod"))?;
    // `user.*` attributes the source no longer has go (a directory keeps its inode).
    for name in user_xattr_names(|| rustix::fs::flistxattr_query(fd), |buf| rustix::fs::flistxattr(fd, buf)) {
        if !meta.xattrs.iter().any(|(n, _)| *n == name) {
            rustix::fs::fremovexattr(fd, name.as_slice()).map_err(sys(what, "removexattr"))?;
        }
    }
    for (name, value) in &meta.xattrs {
        // Only the user namespace crosses hosts; anything else is ignored.
        if name.starts_with(b"user.") {
            rustix::fs::fsetxattr(fd, name.as_slice(), value, rustix::fs::XattrFlags::empty())
                .map_err(sys(what, "setxattr"))?;
        }
    }
    rustix::fs::futimens(fd, &timestamps(meta)).map_err(sys(what, "set mtime"))
}

/// The `user.*` attribute names a `listxattr`-like call returns (none on error).
fn user_xattr_names(
    size: impl Fn() -> rustix::io::Result<usize>,
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> Vec<Vec<u8>> {
    // The size first: most files have no attributes at all, and a 64 KiB buffer for
    // each of them was most of a small file's metadata cost.
    match size() {
        Ok(0) | Err(_) => return Vec::new(),
        Ok(_) => {}
    }
    let mut buf = vec![0u8; 64 * 1024];
    match list(&mut buf[..]) {
        Ok(n) => buf[..n].split(|&b| b == 0).filter(|n| n.starts_with(b"user.")).map(|n| n.to_vec()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The `user.*` attributes of `name` in `dir` (not following a symlink), sorted by name:
/// what a metadata comparison with the source's entry needs.
pub(crate) fn user_xattrs_at(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&path));
    let mut value = vec![0u8; xtsync_wire::XATTR_VALUE_BYTES_MAX];
    let mut out: Vec<(Vec<u8>, Vec<u8>)> =
        user_xattr_names(|| rustix::fs::llistxattr_query(path), |buf| rustix::fs::llistxattr(path, buf))
            .into_iter()
            .filter_map(|n| {
                let len = rustix::fs::lgetxattr(path, n.as_slice(), &mut value[..]).ok()?;
                Some((n, value[..len].to_vec()))
            })
            .collect();
    out.sort();
    out
}

/// Applies owner and mtime to a symlink (mode is meaningless for symlinks on Linux).
pub(crate) fn apply_meta_symlink(dir: BorrowedFd<'_>, name: &[u8], meta: &Meta) -> Result<(), FsError> {
    if can_chown() {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(sys(name, "lchown"))?;
    }
    rustix::fs::utimensat(dir, name, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(sys(name, "set symlink mtime"))
}

/// Creates or replaces a symlink atomically (via a temporary name).
pub(crate) fn put_symlink(dir: BorrowedFd<'_>, name: &[u8], target: &[u8], tag: &str) -> Result<(), FsError> {
    let tmp = format!("{TEMP_PREFIX}{tag}");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    rustix::fs::symlinkat(target, dir, tmp.as_str()).map_err(sys(name, "symlink"))?;
    replace(dir, &tmp, name)
}

/// Makes `name` another link to `to_dir/to_name`, atomically replacing what was there.
pub(crate) fn put_hardlink(
    to_dir: BorrowedFd<'_>,
    to_name: &[u8],
    dir: BorrowedFd<'_>,
    name: &[u8],
    tag: &str,
) -> Result<(), FsError> {
    let existing = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
    let source =
        rustix::fs::statat(to_dir, to_name, AtFlags::SYMLINK_NOFOLLOW).map_err(sys(to_name, "stat link source"))?;
    if existing.is_some_and(|e| e.st_ino == source.st_ino && e.st_dev == source.st_dev) {
        return Ok(());
    }
    let tmp = format!("{TEMP_PREFIX}{tag}");
    let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
    rustix::fs::linkat(to_dir, to_name, dir, tmp.as_str(), AtFlags::empty()).map_err(sys(name, "link"))?;
    replace(dir, &tmp, name)
}

/// `fsync` of each distinct directory (by device and inode): makes renames and
/// removals in them durable.
pub(crate) fn sync_dirs<'a>(dirs: impl Iterator<Item = std::os::fd::BorrowedFd<'a>>) -> rustix::io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for dir in dirs {
        let st = rustix::fs::fstat(dir)?;
        if seen.insert((st.st_dev, st.st_ino)) {
            rustix::fs::fsync(dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_made_again_is_a_new_tree_and_an_unchanged_one_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root");
        let first = TargetRoot::open(&path).unwrap().tree_id().unwrap();
        std::fs::write(path.join("f"), b"x").unwrap();
        assert_eq!(TargetRoot::open(&path).unwrap().tree_id().unwrap(), first, "its content is not its identity");
        // Removed and made again (the inode number is often the same one).
        for _ in 0..3 {
            std::fs::remove_dir_all(&path).unwrap();
            std::fs::create_dir(&path).unwrap();
            assert_ne!(TargetRoot::open(&path).unwrap().tree_id().unwrap(), first);
        }
    }

    #[test]
    fn symlink_inside_root_cannot_be_used_to_escape() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root_dir.path().join("evil")).unwrap();
        let root = TargetRoot::open(root_dir.path()).unwrap();
        let rel = RelPath::new("evil/file").unwrap();
        let err = root.parent(&rel).expect_err("must refuse a symlinked parent");
        assert!(matches!(err, FsError::Escape { .. }), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn created_directories_leave_their_parents_to_be_synced_until_there_are_too_many() {
        let root_dir = tempfile::tempdir().unwrap();
        let root = TargetRoot::open(root_dir.path()).unwrap();
        root.dir(&RelPath::new("a/b/c").unwrap(), true).unwrap();
        // a in the root, b in a, c in b: three directory entries to make durable.
        assert_eq!(root.take_unsynced_parents().map(|p| p.len()), Some(3));
        root.dir(&RelPath::new("a/b/c").unwrap(), true).unwrap();
        assert_eq!(root.take_unsynced_parents().map(|p| p.len()), Some(0), "existing directories add nothing");
        for i in 0..=UNSYNCED_PARENTS_MAX {
            root.dir(&RelPath::new(format!("many/d{i}")).unwrap(), true).unwrap();
        }
        assert!(root.take_unsynced_parents().is_none(), "too many: the caller syncs the filesystem");
        root.dir(&RelPath::new("later").unwrap(), true).unwrap();
        assert_eq!(root.take_unsynced_parents().map(|p| p.len()), Some(1), "tracking starts again after a take");
    }

    #[test]
    fn parents_are_created_and_files_replace_directories() {
        let root_dir = tempfile::tempdir().unwrap();
        let root = TargetRoot::open(root_dir.path()).unwrap();
        std::fs::create_dir_all(root_dir.path().join("a/b/old")).unwrap();
        std::fs::write(root_dir.path().join("a/b/old/x"), b"x").unwrap();
        let rel = RelPath::new("a/b/old").unwrap();
        let (dir, name) = root.parent(&rel).unwrap();
        let (_fd, tmp) = create_temp(dir.as_fd(), "1").unwrap();
        replace(dir.as_fd(), &tmp, name).unwrap();
        assert!(root_dir.path().join("a/b/old").is_file());
        // And a file in the way of a directory is replaced by the directory.
        let deeper = RelPath::new("a/b/old/c/d").unwrap();
        root.parent(&deeper).unwrap();
        assert!(root_dir.path().join("a/b/old/c").is_dir());
    }
}
