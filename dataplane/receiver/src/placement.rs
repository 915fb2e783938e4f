//! Putting the chunks of a new version into its temporary file: copies held locally
//! (in the kernel when their file is provably unchanged since it was indexed, else read
//! and re-hashed first), repeats from earlier in the same file, holes, and the final
//! size and metadata. Received chunks come through `write_chunk` too.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use xtsync_link::fd::borrowed_fd;

use glommio::io::BufferedFile;
use xtsync_chunker::ChunkName;
use xtsync_store::{ChunkLocation, StoreBatch, StoreOp, TargetRecord, WorkerStore};

use crate::assemble::{read_verified, ChunkSource, OpenFile, PendingSegment, TempFile};
use crate::checkpoint::is_partial;
use crate::chunk_error::ChunkError;
use crate::local_readers::LocalReaders;

/// Sets the final size (trailing holes) and metadata on the temporary file.
pub(crate) fn finalize(t: &TempFile, file: &OpenFile) -> Result<TargetRecord, String> {
    let fd = borrowed_fd(&t.file);
    let st = rustix::fs::fstat(fd).map_err(|e| format!("fstat: {e}"))?;
    // Only for trailing holes (or a longer earlier attempt): ext4 journals even a
    // truncate to the size the file already has.
    if st.st_size as u64 != file.size {
        rustix::fs::ftruncate(fd, file.size).map_err(|e| format!("truncate: {e}"))?;
    }
    crate::fsops::apply_meta_fd(fd, &file.meta, file.path.as_bytes()).map_err(|e| e.to_string())?;
    Ok(TargetRecord {
        ino: st.st_ino,
        size: file.size,
        mtime_ns: file.meta.mtime_s * 1_000_000_000 + file.meta.mtime_ns as i64,
        digest: file.digest.finish(),
    })
}

/// Places the chunks of `seg` that need no wire data, in order. Returns false when it
/// stops at a chunk that must arrive from the source, true when the segment is done.
pub(crate) async fn place_ready_chunks(
    seg: &mut PendingSegment,
    file: &mut OpenFile,
    readers: &mut LocalReaders,
    store: &Arc<dyn WorkerStore>,
) -> bool {
    while seg.next < seg.chunks.len() {
        let chunk = seg.chunks[seg.next];
        match &seg.sources[seg.next] {
            ChunkSource::Wire => return false,
            ChunkSource::Zero => {}
            ChunkSource::Local(loc) => place_local(file, readers, store, loc.clone(), chunk.name, seg.offset).await,
            ChunkSource::Earlier { offset } => {
                let verified = match &file.target {
                    Some(t) => read_verified(&t.file, *offset, chunk.len, &chunk.name).await,
                    None => Err(ChunkError::NoTemporaryFile),
                };
                match verified {
                    Ok(d) => write_chunk(file, ChunkName(chunk.name), d, seg.offset).await,
                    Err(e) => file.fail(e.to_string()),
                }
            }
        }
        seg.offset += chunk.len as u64;
        seg.next += 1;
    }
    true
}

/// Starts writing a finished segment back to disk now (without waiting), so that the
/// durability barrier finds little left to flush and the disk works while the
/// network does. Small segments are left to the barrier.
pub(crate) fn start_writeback(t: &TempFile, offset: u64, len: u64) {
    const WRITEBACK_BYTES_MIN: u64 = 1 << 20;
    if len >= WRITEBACK_BYTES_MIN {
        // SAFETY: plain syscall on an fd the glommio file owns for the whole call.
        unsafe { libc::sync_file_range(t.file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE) };
    }
}

/// Chunks up to this size, of files up to `WRITE_INLINE_FILE_BYTES_MAX`, are written
/// with a plain `pwrite` on the executor thread.
/// ext4 cannot take a buffered write without blocking (no `FMODE_BUF_WASYNC`), so
/// io_uring hands every one to an io-wq worker thread: for the chunk of a small file
/// that hand-off (a wake-up, two context switches, a completion) costs more than the
/// copy into the page cache (54k such writes in 5 s of an initial copy of small
/// files). Only in files up to `WRITE_INLINE_FILE_BYTES_MAX`: a large file's copy
/// into the page cache is better done by an io-wq thread, on the other CPU, while the
/// executor decrypts and hashes the next chunk. The risk kept: a write that finds the
/// page cache over its dirty limit waits on the executor (the durability barrier's
/// sync every 256 files keeps dirty data low).
const WRITE_INLINE_BYTES_MAX: usize = 64 << 10;
const WRITE_INLINE_FILE_BYTES_MAX: u64 = 1 << 20;

fn write_inline(t: &TempFile, data: &[u8], offset: u64) -> Result<usize, String> {
    let fd = borrowed_fd(&t.file);
    let mut done = 0;
    while done < data.len() {
        match rustix::io::pwrite(fd, &data[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            // Part written: reported as a short write, which says why.
            Err(_) if done > 0 => break,
            Err(e) => return Err(std::io::Error::from(e).to_string()),
        }
    }
    Ok(done)
}

/// Writes one chunk (already verified) at `offset` of the file's temporary copy.
pub(crate) async fn write_chunk(file: &mut OpenFile, name: ChunkName, data: Vec<u8>, offset: u64) {
    if file.error.is_some() {
        return;
    }
    let Some(t) = &file.target else { return };
    let len = data.len() as u32;
    let written = if data.len() <= WRITE_INLINE_BYTES_MAX && file.size <= WRITE_INLINE_FILE_BYTES_MAX {
        write_inline(t, &data, offset)
    } else {
        t.file.write_at(data, offset).await.map_err(|e| e.to_string())
    };
    match written {
        Ok(n) if n == len as usize => {}
        Ok(n) => return file.fail(short_write(t, n, len)),
        Err(e) => return file.fail(format!("write: {e}")),
    }
    file.written.push((name, offset, len));
    file.unsynced_bytes += len as u64;
}

/// Copies a local chunk in the kernel (`copy_file_range`), without reading and hashing
/// it, when its file is provably the one indexed: same inode, same ctime (nothing wrote
/// to it or changed its metadata since; the ctime cannot be set back). False when that
/// cannot be shown or the copy fell short: the caller then reads and hashes the chunk.
fn copy_unchanged(from: &BufferedFile, at: &ChunkLocation, to: &TempFile, offset: u64) -> bool {
    if at.ctime_ns == 0 || at.ino == 0 {
        return false;
    }
    let (src, dst) = (borrowed_fd(from), borrowed_fd(&to.file));
    match rustix::fs::fstat(src) {
        Ok(st) if st.st_ino == at.ino && crate::fsops::ctime_ns(&st) == at.ctime_ns => {}
        _ => return false,
    }
    let (mut off_in, mut off_out, mut left) = (at.offset, offset, at.len as usize);
    while left > 0 {
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), left) {
            Ok(0) | Err(_) => return false,
            Ok(n) => left -= n,
        }
    }
    true
}

/// Why a write fell short, as an operator must read it: a short write is a disk (or a
/// quota) filling up, and the filesystem says which.
fn short_write(t: &TempFile, written: usize, len: u32) -> String {
    let fd = borrowed_fd(&t.file);
    let left = u64::from(len) - written as u64;
    match rustix::fs::fstatvfs(fd) {
        Ok(vfs) if vfs.f_bavail.saturating_mul(vfs.f_frsize) < left.max(1 << 20) => {
            format!("write: No space left on device (os error 28): {written} of {len} bytes written")
        }
        _ => format!("short write ({written} of {len} bytes)"),
    }
}

async fn place_local(
    file: &mut OpenFile,
    readers: &mut LocalReaders,
    store: &Arc<dyn WorkerStore>,
    loc: ChunkLocation,
    name: [u8; 32],
    offset: u64,
) {
    if file.error.is_some() {
        return;
    }
    let reader = readers.get_indexed(&loc).await;
    if let (Ok(Some(from)), Some(t)) = (&reader, &file.target) {
        if copy_unchanged(from, &loc, t, offset) {
            file.chunks_reused += 1;
            file.written.push((ChunkName(name), offset, loc.len));
            file.unsynced_bytes += loc.len as u64;
            return;
        }
    }
    let verified = match reader {
        Ok(Some(f)) => read_verified(&f, loc.offset, loc.len, &name).await,
        Ok(None) => Err(ChunkError::ReplacedLocal),
        Err(e) => Err(ChunkError::OpenLocal(e.to_string())),
    };
    match verified {
        Ok(d) => {
            file.chunks_reused += 1;
            if is_partial(&loc.path) {
                file.resumed_from.insert(loc.path.clone());
            }
            write_chunk(file, ChunkName(name), d, offset).await
        }
        Err(e) => {
            // A stale index entry: forget it, and let the source send the file again.
            readers.forget(&loc.path);
            let store = store.clone();
            let _ = glommio::executor()
                .spawn_blocking(move || store.apply(StoreBatch { ops: vec![StoreOp::DeleteChunk(name)] }))
                .await;
            file.fail(format!("{e}; retry"));
        }
    }
}
