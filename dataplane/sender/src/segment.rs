//! What a sent segment holds until the receiver's want for it is answered: where each
//! chunk is, its bytes as hashed (within the session's budget), and on kernel-TLS
//! sessions the open file the kernel sends raw chunks from.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::StaticPermit;

use xtsync_walk::entry_meta::FileStat;

/// A source file kept open for the kernel to send chunks from, with the stat its chunks
/// were named under.
pub(crate) struct OpenSourceFile {
    pub fd: Arc<OwnedFd>,
    pub stat: FileStat,
}

impl OpenSourceFile {
    /// The file still looks as it did when it was hashed (size, times, inode). A write
    /// that keeps all of them (same size, within the mtime granularity) is caught by
    /// the target's hash check instead.
    pub(crate) fn unchanged(&self) -> bool {
        fstat(self.fd.as_fd()).is_some_and(|now| now == self.stat)
    }
}

/// Where one chunk of a segment is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkSpan {
    /// Offset of the chunk in the file.
    pub file_at: u64,
    /// Offset in `SegmentBytes::data`, when the bytes are kept.
    pub data_at: u32,
    /// 0 for a zero chunk (never wanted, no bytes kept).
    pub bytes: u32,
}

/// One sent segment, until its want is answered.
pub(crate) struct SegmentBuf {
    pub bytes: Rc<SegmentBytes>,
    pub bytes_kept: bool,
    pub chunks: Vec<ChunkSpan>,
    /// Set on kernel-TLS sessions: raw chunks go from the file.
    pub file: Option<Rc<OpenSourceFile>>,
}

/// A segment's chunk bytes, as hashed (empty when they are not kept). Raw chunk frames
/// are written from here (`writer::SplicedFrame`), so the bytes outlive the want's
/// answer until the last such frame is written; the segment's share of the session's
/// budget is held as long.
pub(crate) struct SegmentBytes {
    pub data: Vec<u8>,
    pub(crate) _permit: StaticPermit,
}

impl AsRef<[u8]> for SegmentBytes {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// The file's stat now, as the walk would see it.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> Option<FileStat> {
    rustix::fs::fstat(fd).ok().map(|s| FileStat::of_raw(&s))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_kept_file_that_was_written_after_hashing_is_seen_as_changed() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"version one").unwrap();
        let stat = FileStat::of(&std::fs::symlink_metadata(f.path()).unwrap());
        let kept = OpenSourceFile { fd: Arc::new(OwnedFd::from(f.reopen().unwrap())), stat };
        assert!(kept.unchanged());
        // Same size, later write: mtime and ctime move.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(f.path(), b"version two").unwrap();
        assert!(!kept.unchanged(), "a rewrite of the same size must not pass for the hashed file");
    }
}
