//! The durability barrier. Finished files wait here, written but not yet renamed; a
//! flush makes their data durable (one `syncfs` for a large batch, `fdatasync` of each
//! file for a small one), renames them into place, makes the renames durable (`syncfs`,
//! or `fsync` of each directory), records them in the chunk index, and only then are
//! they acknowledged. One barrier per batch instead of one fsync per file is what lets
//! many small files go fast; the order (data durable before the rename) is what keeps
//! a crash from exposing an empty or partial file under the final name. A session has
//! at most one flush in flight and keeps receiving and writing the next batch meanwhile.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use xtsync_chunker::ChunkName;
use xtsync_store::{ChunkLocation, StoreBatch, StoreOp, TargetRecord, WorkerStore};

use crate::checkpoint::{remove_partials, KeptPartials};
use crate::fsops::{replace, sync_dirs, FsError};

/// Files per barrier, and bytes per barrier, before a flush is forced.
const READY_FILES_MAX: usize = 256;
const READY_BYTES_MAX: u64 = 256 << 20;

pub(crate) struct Ready {
    pub file_id: u64,
    pub dir: OwnedFd,
    pub tmp_name: String,
    pub name: Vec<u8>,
    pub abs: Vec<u8>,
    pub record: TargetRecord,
    pub written: Vec<(ChunkName, u64, u32)>,
    pub chunks_reused: u32,
    pub chunks_received: u32,
    /// Checkpointed temporaries of earlier attempts: removed once this file is in place.
    pub resumed_from: Vec<Vec<u8>>,
}

pub(crate) struct Acked {
    pub file_id: u64,
    pub error: Option<String>,
    pub chunks_reused: u32,
    pub chunks_received: u32,
}

#[derive(Default)]
pub(crate) struct Barrier {
    ready: Vec<Ready>,
    bytes: u64,
}

impl Barrier {
    pub(crate) fn push(&mut self, r: Ready) {
        self.bytes += r.record.size;
        self.ready.push(r);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    pub(crate) fn should_flush(&self) -> bool {
        self.ready.len() >= READY_FILES_MAX || self.bytes >= READY_BYTES_MAX
    }

    /// Drops the waiting files of a session that failed (their temporary files go).
    pub(crate) fn abandon(&mut self) {
        for r in self.ready.drain(..) {
            let _ = rustix::fs::unlinkat(r.dir.as_fd(), r.tmp_name.as_str(), rustix::fs::AtFlags::empty());
        }
        self.bytes = 0;
    }

    /// Takes the waiting files; the returned future flushes them off the executor
    /// thread and yields one ack per file.
    pub(crate) fn flush(
        &mut self,
        root: OwnedFd,
        store: Arc<dyn WorkerStore>,
        kept: Arc<KeptPartials>,
        new_dirs_parents: Option<Vec<OwnedFd>>,
    ) -> impl std::future::Future<Output = Vec<Acked>> + 'static {
        let ready = std::mem::take(&mut self.ready);
        self.bytes = 0;
        async move {
            if ready.is_empty() {
                return Vec::new();
            }
            glommio::executor()
                .spawn_blocking(move || flush_blocking(root, ready, store.as_ref(), &kept, &new_dirs_parents))
                .await
        }
    }
}

/// With `transfer.small_batch_sync: per_file`, up to this many files a barrier syncs
/// each file and then each directory it renamed into; above (and by default always),
/// one `syncfs`. `syncfs` writes back every dirty inode of the filesystem, other
/// programs' too: cheapest where the filesystem holds replicated data, costly on a
/// target disk that is busy with other work.
const PER_FILE_SYNC_FILES_MAX: usize = 32;

fn flush_blocking(
    root: OwnedFd,
    ready: Vec<Ready>,
    store: &dyn WorkerStore,
    kept: &KeptPartials,
    new_dirs_parents: &Option<Vec<OwnedFd>>,
) -> Vec<Acked> {
    // Too many new directories to sync one by one: the whole filesystem instead.
    let per_file = ready.len() <= PER_FILE_SYNC_FILES_MAX && new_dirs_parents.is_some();
    let new_dirs_parents = new_dirs_parents.as_deref().unwrap_or_default();
    let synced = if per_file { sync_each(&ready) } else { rustix::fs::syncfs(root.as_fd()) };
    let mut acks = Vec::with_capacity(ready.len());
    let mut ops = Vec::new();
    let mut partials = Vec::new();
    let mut ready_dirs: Vec<OwnedFd> = Vec::new();
    for r in ready {
        let result = match synced {
            Err(e) if per_file => Err(format!("fdatasync before rename: {e}")),
            Err(e) => Err(format!("syncfs before rename: {e}")),
            Ok(()) => {
                // Not between a rename's check of this name and its `renameat`.
                let _guard = crate::rename::path_lock();
                replace(r.dir.as_fd(), &r.tmp_name, &r.name).map_err(|e: FsError| e.to_string())
            }
        };
        if result.is_ok() {
            // The attempts before this one are obsolete now.
            partials.extend(r.resumed_from.iter().cloned());
            partials.extend(kept.take(&r.abs));
            ops.push(StoreOp::PutTarget(r.abs.clone(), r.record));
            // The file as renamed (a rename moves the ctime): what a later copy of its
            // chunks checks before trusting them without a hash.
            let ctime_ns = rustix::fs::statat(r.dir.as_fd(), r.name.as_slice(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .ok()
                .filter(|st| st.st_ino == r.record.ino)
                .map_or(0, |st| crate::fsops::ctime_ns(&st));
            for (name, offset, len) in &r.written {
                let at = ChunkLocation { path: r.abs.clone(), offset: *offset, len: *len, ino: r.record.ino, ctime_ns };
                ops.push(StoreOp::PutChunk(name.0, at));
            }
        } else {
            let _ = rustix::fs::unlinkat(r.dir.as_fd(), r.tmp_name.as_str(), rustix::fs::AtFlags::empty());
        }
        if per_file {
            ready_dirs.push(r.dir);
        }
        acks.push(Acked {
            file_id: r.file_id,
            error: result.err(),
            chunks_reused: r.chunks_reused,
            chunks_received: r.chunks_received,
        });
    }
    // The renames, and the entries of directories created for these files (a parent
    // recorded later is shallower or elsewhere: synced after).
    let renames_synced = if per_file {
        sync_dirs(ready_dirs.iter().chain(new_dirs_parents.iter().rev()).map(|d| d.as_fd()))
    } else {
        rustix::fs::syncfs(root.as_fd())
    };
    if let Err(e) = renames_synced {
        for a in acks.iter_mut().filter(|a| a.error.is_none()) {
            a.error = Some(format!("sync after rename: {e}"));
        }
    }
    if let Err(e) = store.apply(StoreBatch { ops }) {
        // The files are durable; only the index lags (costs bandwidth later).
        tracing::warn!(error = %e, "cannot update the chunk index");
    } else {
        // Their chunks are now indexed at the committed files.
        remove_partials(&partials);
    }
    acks
}

/// `fdatasync` of every waiting file (opened again by its temporary name).
fn sync_each(ready: &[Ready]) -> rustix::io::Result<()> {
    for r in ready {
        let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(r.dir.as_fd(), r.tmp_name.as_str(), flags, rustix::fs::Mode::empty())?;
        rustix::fs::fdatasync(&fd)?;
    }
    Ok(())
}
