//! Streaming one file: read it through io_uring, cut it into content-defined chunks,
//! name them, and send their names in segments. The chunk bytes of a segment stay in
//! memory (within a per-session budget) until the target says which ones it wants —
//! except on a kernel-TLS session with compression off, where the kernel sends the
//! wanted chunks from the file (`sendfile`) and the segment keeps only the open file.

use std::os::fd::BorrowedFd;
use std::rc::Rc;
use std::sync::Arc;
use xtsync_link::fd::borrowed_fd;

use glommio::io::BufferedFile;
use xtsync_api::Compression;
use xtsync_chunker::{is_all_zero, ChunkName, DigestBuilder, StreamChunker};
use xtsync_wire::{
    ChunkRef, FileBegin, FileEnd, Message, Segment, CHUNKS_PER_SEGMENT_MAX, FILES_OPEN_PER_SESSION_MAX,
    FRAME_PAYLOAD_BYTES_MAX,
};

use crate::events::SessionEvent;
use crate::lease::{self, LeaseRequest};
use crate::segment::{fstat, ChunkSpan, OpenSourceFile, SegmentBuf, SegmentBytes};
use crate::state::{InFlightFile, Session, SessionError};
use xtsync_walk::item::{WalkItem, WalkKind};

/// Bytes of chunk data a session may hold while waiting for wants.
pub(crate) const SEGMENTS_IN_FLIGHT_BYTES_MAX: u64 = 32 << 20;
/// Files a session may have begun and not seen acknowledged (well under the target's
/// limit of open files per session).
pub(crate) const FILES_IN_FLIGHT_MAX: u64 = 1024;
/// Bytes per segment before it is sent (or fewer at the end of a file).
const SEGMENT_BYTES_MAX: usize = 8 << 20;

// Limits that must agree with the receiver's and the codec's, checked at compile time.
const _: () = assert!(
    FILES_IN_FLIGHT_MAX < FILES_OPEN_PER_SESSION_MAX as u64,
    "a sender keeps fewer files in flight than a receiver holds open per session"
);
const _: () = assert!(
    // A chunk's frame adds its file id, segment, index, encoding and length: < 64 bytes.
    xtsync_chunker::CHUNK_BYTES_MAX as u64 + 64 <= FRAME_PAYLOAD_BYTES_MAX as u64,
    "the largest chunk fits one frame"
);

/// Bytes per io_uring read.
const READ_BYTES_MAX: u64 = 1 << 20;
/// Read-lease requests on a file open for writing, and the wait between them.
const LEASE_ATTEMPTS: u32 = 4;
const LEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(25);
/// How often a file that keeps changing while read is tried again.
pub(crate) const RETRIES_MAX: u8 = 3;

struct Builder {
    file_id: u64,
    seg_no: u32,
    refs: Vec<ChunkRef>,
    data: Vec<u8>,
    keep_bytes: bool,
    /// Bytes of chunks pushed (kept or not): what fills a segment.
    bytes: usize,
    spans: Vec<ChunkSpan>,
}

impl Builder {
    /// `bytes_hint`: what is left of the file, so that the buffer is allocated once
    /// (growing an 8 MiB Vec by doubling left large freed blocks behind).
    fn new(file_id: u64, seg_no: u32, bytes_hint: u64, keep_bytes: bool) -> Builder {
        let capacity = if keep_bytes { bytes_hint.min(SEGMENT_BYTES_MAX as u64 + (1 << 20)) as usize } else { 0 };
        Builder {
            file_id,
            seg_no,
            refs: Vec::new(),
            data: Vec::with_capacity(capacity),
            keep_bytes,
            bytes: 0,
            spans: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8], file_at: u64, digest: &mut DigestBuilder) {
        let name = ChunkName::of(chunk);
        digest.push(&name, chunk.len() as u32);
        let zero = is_all_zero(chunk);
        self.refs.push(ChunkRef { name: name.0, len: chunk.len() as u32, zero });
        self.bytes += chunk.len();
        // Zero chunks are never wanted: keep no bytes for them.
        if zero {
            self.spans.push(ChunkSpan { file_at, data_at: 0, bytes: 0 });
            return;
        }
        self.spans.push(ChunkSpan { file_at, data_at: self.data.len() as u32, bytes: chunk.len() as u32 });
        if self.keep_bytes {
            self.data.extend_from_slice(chunk);
        }
    }

    fn full(&self) -> bool {
        self.bytes >= SEGMENT_BYTES_MAX || self.refs.len() >= CHUNKS_PER_SEGMENT_MAX
    }
}

/// Tries to hold a read lease on the file while it is read (`crate::lease`): a file
/// open for writing is waited for a little, then read without one.
async fn read_lease(fd: BorrowedFd<'_>, path: &std::path::Path) -> bool {
    for attempt in 0..LEASE_ATTEMPTS {
        match lease::request(fd) {
            LeaseRequest::Held => return true,
            LeaseRequest::Unavailable => return false,
            LeaseRequest::OpenForWriting if attempt + 1 < LEASE_ATTEMPTS => glommio::timer::sleep(LEASE_RETRY).await,
            LeaseRequest::OpenForWriting => {}
        }
    }
    tracing::debug!(path = %path.display(), "read while open for writing (no lease): checked by its stat only");
    false
}

/// Opens a source file on the executor thread. glommio's own open adds a `statx`
/// through io_uring, which the kernel always hands to an io-wq worker thread: for a
/// small file that hand-off cost more than everything else in reading it. The walk
/// has just `lstat`ed the path, so the open finds it in the dentry and inode caches.
/// Never through a symlink (the walk saw a regular file there), and never anything
/// but a regular file: the open does not block (`O_NONBLOCK`: a FIFO put there since
/// would wait for a writer), and one that would (a lease held by another process, to
/// be broken) goes through io_uring as before. `O_NONBLOCK` is cleared once open: on
/// a file opened with it io_uring would fail an uncached read instead of waiting.
async fn open_source(path: &std::path::Path) -> std::io::Result<BufferedFile> {
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = match rustix::fs::open(path, flags | OFlags::NONBLOCK, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return glommio::io::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .buffered_open(path)
                .await
                .map_err(std::io::Error::from)
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&fd)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "no longer a regular file"));
    }
    rustix::fs::fcntl_setfl(&fd, rustix::fs::fcntl_getfl(&fd)? - OFlags::NONBLOCK)?;
    // SAFETY: a descriptor just opened and owned by nothing else.
    Ok(unsafe { BufferedFile::from_raw_fd(fd.into_raw_fd()) })
}

/// Bytes of a source file, read on the executor when the page cache holds them all.
enum Block {
    Cached(Vec<u8>),
    Read(glommio::io::ReadResult),
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Block::Cached(v) => v,
            Block::Read(r) => r,
        }
    }
}

/// Reads up to `len` bytes at `pos`: first with `preadv2(RWF_NOWAIT)` on the executor
/// thread, which copies what the page cache holds and does not wait for the data to
/// come from the disk (on a miss it starts readahead and returns; the filesystem may
/// still take a lock or read extent metadata meanwhile); what that could not read
/// whole goes through io_uring. The small files of a source tree are mostly cached
/// (the walk, an editor, a build just touched them), and a cached read through
/// io_uring costs a submission, a completion and two polls of the read's future.
async fn read_block(file: &BufferedFile, pos: u64, len: usize) -> std::io::Result<Block> {
    const CACHED_READ_BYTES_MAX: usize = 256 << 10;
    if len <= CACHED_READ_BYTES_MAX {
        let fd = borrowed_fd(file);
        let mut buf = vec![0u8; len];
        match rustix::io::preadv2(
            fd,
            &mut [std::io::IoSliceMut::new(&mut buf)],
            pos,
            rustix::io::ReadWriteFlags::NOWAIT,
        ) {
            // All of it, or the file ends there: done.
            Ok(n) if n == len || n == 0 => {
                buf.truncate(n);
                return Ok(Block::Cached(buf));
            }
            // Part cached, or not at all, or no RWF_NOWAIT here: io_uring reads it.
            Ok(_) | Err(_) => {}
        }
    }
    file.read_at(pos, len).await.map(Block::Read).map_err(std::io::Error::from)
}

/// Sends one file with its content manifest. A file that cannot be opened is
/// skipped with a warning (the target keeps its old version).
pub(crate) async fn stream_file(session: &Session, item: WalkItem) -> Result<(), SessionError> {
    let WalkKind::File { stat, .. } = item.kind else {
        return Err(SessionError::Protocol(format!("{:?} is not a file", item.path)));
    };
    let file = match open_source(&item.abs).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %item.abs.display(), error = %e, "cannot open source file; skipping it");
            let _ = session
                .events
                .send(SessionEvent::FileFailed { path: item.path.to_string_lossy(), error: e.to_string() });
            session.shared.borrow_mut().stats.files_failed += 1;
            return Ok(());
        }
    };
    let fd = borrowed_fd(&file);
    let leased = read_lease(fd, &item.abs).await;
    let permit = session.file_budget.acquire_static_permit(1).await.map_err(|_| SessionError::Cancelled)?;
    let file_id = session.next_file_id.get();
    session.next_file_id.set(file_id + 1);
    let mut begin =
        Some(FileBegin { file_id, path: item.path.clone(), meta: item.meta.clone(), size: stat.size, digest: None });
    session
        .shared
        .borrow_mut()
        .files
        .insert(file_id, InFlightFile { item, digest: None, compress_probe: Default::default(), _permit: permit });

    // On a kernel-TLS session the kernel sends raw chunks from the file: keep it
    // open (a duplicate descriptor) until the segments are answered. With
    // compression off the chunk bytes are then not kept at all.
    let open_file = session.sender.kernel_sends().then(|| {
        let fd = borrowed_fd(&file);
        match fd.try_clone_to_owned() {
            Ok(fd) => Some(Rc::new(OpenSourceFile { fd: Arc::new(fd), stat })),
            Err(e) => {
                tracing::debug!(error = %e, "cannot keep the source file open: chunks go from memory");
                None
            }
        }
    });
    let open_file = open_file.flatten();
    let keep_bytes = open_file.is_none() || session.params.compression != Compression::Never;
    let mut chunker = StreamChunker::new(session.params.chunk_params);
    let mut digest = DigestBuilder::default();
    let mut seg = Builder::new(file_id, 0, stat.size, keep_bytes);
    let mut chunk_at = 0u64;
    let mut pos = 0u64;
    let mut read_error = None;
    let mut grew = false;
    let mut lease_broken = false;
    loop {
        let want = (stat.size.saturating_sub(pos)).min(READ_BYTES_MAX);
        // An empty file is read for one byte, to notice that it grew; other growth
        // or change is caught by the fstat after the last read.
        let block = match read_block(&file, pos, want.max(1) as usize).await {
            Ok(b) => b,
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        };
        if want == 0 {
            // The probe of an empty file: a byte there means it grew since the stat
            // (it is sent again, whole); it is never part of the manifest, which
            // covers the size announced.
            grew = !block.is_empty();
            break;
        }
        if leased && lease::broken(fd) {
            // Somebody opens it for writing and waits for us: give it back now; the
            // file is read again later.
            lease_broken = true;
            break;
        }
        let eof = block.is_empty() || (block.len() as u64) < want || pos + block.len() as u64 >= stat.size;
        pos += block.len() as u64;
        let mut ready: Vec<Builder> = Vec::new();
        chunker.push(&block, eof, |chunk| {
            seg.push(chunk, chunk_at, &mut digest);
            chunk_at += chunk.len() as u64;
            if seg.full() {
                // `pos` is already past this block: what is left, plus the block.
                let left = stat.size.saturating_sub(pos) + READ_BYTES_MAX;
                let next = Builder::new(file_id, seg.seg_no + 1, left, keep_bytes);
                ready.push(std::mem::replace(&mut seg, next));
            }
        });
        // Sending may wait (for the target's wants, for bandwidth), and a writer must
        // not wait that long for the lease: it is given back, and taken again before
        // the next read. A writer that opened the file meanwhile still has it open
        // then (refused: the file is read again later) or has finished (its write
        // moved the size or times, which the stat check sees).
        let relet = leased && !ready.is_empty() && !eof;
        if relet {
            lease::release(fd);
        }
        for b in ready {
            // A file of more than one segment is announced before its digest is known.
            if let Some(begin) = begin.take() {
                session.send(&Message::FileBegin(begin)).await?;
            }
            send_segment(session, b, open_file.clone()).await?;
        }
        if eof {
            break;
        }
        if relet && lease::request(fd) != LeaseRequest::Held {
            lease_broken = true;
            break;
        }
    }
    let changed = fstat(fd).is_none_or(|now| now != stat || pos != stat.size) || grew || lease_broken;
    if leased {
        lease::release(fd);
    }
    let _ = file.close().await;
    session.shared.borrow_mut().stats.bytes_read += pos;
    let aborted = changed || read_error.is_some();
    if let Some(e) = &read_error {
        tracing::warn!(file_id, error = %e, "read failed; the target keeps its old version");
    }
    let digest = digest.finish();
    // Known before anything more is sent: the target may answer the file's FileDone
    // as soon as it sees FileBegin (it holds that digest) or the last segment, and
    // the reply handler must then find the version it read, not a file still
    // "being read" (which it would queue again).
    if let Some(f) = session.shared.borrow_mut().files.get_mut(&file_id) {
        f.digest = (!aborted).then_some(digest);
    }
    // A one-segment file is announced with its digest: the target can skip it.
    if let Some(mut begin) = begin.take() {
        begin.digest = (!aborted).then_some(digest);
        session.send(&Message::FileBegin(begin)).await?;
    }
    if !seg.refs.is_empty() {
        send_segment(session, seg, open_file).await?;
    }
    session.send(&Message::FileEnd(FileEnd { file_id, digest, aborted })).await
}

async fn send_segment(session: &Session, b: Builder, file: Option<Rc<OpenSourceFile>>) -> Result<(), SessionError> {
    // Segments whose bytes are not kept count as if they were: the budget also
    // bounds how far reading runs ahead of sending (the kernel's page cache holds
    // the bytes meanwhile).
    let nonzero_bytes: u64 = b.spans.iter().map(|c| c.bytes as u64).sum();
    let units = nonzero_bytes.min(SEGMENTS_IN_FLIGHT_BYTES_MAX);
    let permit = session.segment_budget.acquire_static_permit(units).await.map_err(|_| SessionError::Cancelled)?;
    let key = (b.file_id, b.seg_no);
    let msg = Message::Segment(Segment { file_id: b.file_id, seg_no: b.seg_no, chunks: b.refs });
    session.shared.borrow_mut().segments.insert(
        key,
        SegmentBuf {
            bytes: Rc::new(SegmentBytes { data: b.data, _permit: permit }),
            bytes_kept: b.keep_bytes,
            chunks: b.spans,
            file,
        },
    );
    session.send(&msg).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_the_same_from_the_cache_and_through_io_uring_and_never_through_a_symlink() {
        xtsync_link::runtime::raise_memlock_limit().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &content).unwrap();
        std::os::unix::fs::symlink(&path, dir.path().join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let (tx, rx) = flume::unbounded();
        let cpus = xtsync_link::runtime::allowed_cpus();
        let root = dir.path().to_path_buf();
        let handles = xtsync_link::runtime::start_executors(&cpus[..1], move |_| {
            let (dir, tx) = (root.clone(), tx.clone());
            async move {
                let f = open_source(&dir.join("f")).await.unwrap();
                let mut got = Vec::new();
                // Small (just written, so cached: on the executor), large (io_uring),
                // and past the end.
                for (pos, len) in [(0u64, 4096usize), (4096, 300_000), (304_096, 1 << 20), (600_000, 1)] {
                    let block = read_block(&f, pos, len).await.unwrap();
                    got.push((matches!(block, Block::Cached(_)), block.to_vec()));
                }
                let through_link = open_source(&dir.join("link")).await.map(|_| ()).map_err(|e| e.raw_os_error());
                let fifo = open_source(&dir.join("fifo")).await.map(|_| ()).map_err(|e| e.kind());
                tx.send((got, through_link, fifo)).unwrap();
                f.close().await.unwrap();
            }
        })
        .unwrap();
        let (got, through_link, fifo) = rx.recv().unwrap();
        for h in handles {
            h.join().unwrap();
        }
        let whole: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(whole, content);
        assert_eq!(got[2].1.len(), 600_000 - 304_096, "a read past the end is short");
        assert!(got[3].1.is_empty());
        assert_eq!(through_link, Err(Some(libc::ELOOP)));
        assert_eq!(fifo, Err(std::io::ErrorKind::InvalidInput), "a FIFO is refused, not waited on");
        assert_eq!(got.iter().map(|(cached, _)| *cached).collect::<Vec<_>>(), [true, false, false, true]);
    }
}
