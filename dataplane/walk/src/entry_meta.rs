//! What the source reads of an entry besides its content: the stat that identifies a
//! file's version (`FileStat`, compared with source records and the synced table), the
//! metadata sent to the target (`Meta`), and `user.*` xattrs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use xtsync_store::{EntryStat, SourceRecord};
use xtsync_wire::Meta;

/// Identity of a file's content as the walk saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl FileStat {
    pub fn of(m: &std::fs::Metadata) -> FileStat {
        FileStat {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        }
    }

    /// From a raw `stat` (a walk's `statat` relative to the directory).
    pub fn of_raw(st: &rustix::fs::Stat) -> FileStat {
        FileStat {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size as u64,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
        }
    }

    /// The same stat as the synced table keeps it (see `xtsync_walk::synced`).
    pub(crate) fn synced(&self) -> EntryStat {
        EntryStat { dev: self.dev, ino: self.ino, size: self.size, mtime_ns: self.mtime_ns, ctime_ns: self.ctime_ns }
    }

    pub(crate) fn matches(&self, r: &SourceRecord) -> bool {
        (self.dev, self.ino, self.size, self.mtime_ns, self.ctime_ns) == (r.dev, r.ino, r.size, r.mtime_ns, r.ctime_ns)
    }

    pub fn record(&self, digest: [u8; 32]) -> SourceRecord {
        SourceRecord {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime_ns: self.mtime_ns,
            ctime_ns: self.ctime_ns,
            digest,
        }
    }
}

pub fn meta_of(m: &std::fs::Metadata, xattrs: Vec<(Vec<u8>, Vec<u8>)>) -> Meta {
    Meta {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_s: m.mtime(),
        mtime_ns: m.mtime_nsec().clamp(0, 999_999_999) as u32,
        xattrs,
    }
}

/// `user.*` extended attributes of a path (not following symlinks).
pub(crate) fn read_xattrs(path: &Path, buf: &mut Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)> {
    buf.resize(64 * 1024, 0);
    let n = match rustix::fs::llistxattr(path, &mut buf[..]) {
        Ok(n) if n > 0 => n,
        _ => return Vec::new(),
    };
    let names: Vec<Vec<u8>> =
        buf[..n].split(|&b| b == 0).filter(|n| n.starts_with(b"user.")).map(|n| n.to_vec()).collect();
    let mut out = Vec::new();
    let mut value = vec![0u8; xtsync_wire::XATTR_VALUE_BYTES_MAX];
    for name in names.into_iter().take(xtsync_wire::XATTRS_PER_ENTRY_MAX) {
        if let Ok(len) = rustix::fs::lgetxattr(path, name.as_slice(), &mut value[..]) {
            out.push((name, value[..len].to_vec()));
        }
    }
    out
}
