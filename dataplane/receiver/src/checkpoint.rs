//! Checkpoints of files under construction, so that a transfer cut short (a killed
//! source or target, a cut link) resumes instead of starting the file again. Every
//! `CHECKPOINT_BYTES` written to a file's temporary copy, the copy is made durable and
//! its chunks enter the chunk index under the temporary file's path. When the file is
//! sent again, the target finds those chunks locally and does not want them from the
//! wire; a session that ends early keeps checkpointed temporaries for that. Once the
//! file is committed, the temporaries it was resumed from are removed.

use xtsync_link::fd::borrowed_fd;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use xtsync_store::{ChunkLocation, StoreBatch, StoreOp, WorkerStore};

use crate::assemble::OpenFile;
use crate::fsops::TEMP_PREFIX;
use xtsync_metrics::WorkerMetrics;

/// Bytes written to a file between checkpoints: what a resumed transfer may send again.
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Makes `file`'s temporary copy durable and indexes the chunks written since its last
/// checkpoint, if enough were. A failure is logged: the transfer goes on, it only
/// resumes from an earlier point.
pub(crate) async fn maybe_checkpoint(file: &mut OpenFile, store: &Arc<dyn WorkerStore>, metrics: &WorkerMetrics) {
    if file.unsynced_bytes < CHECKPOINT_BYTES || file.error.is_some() {
        return;
    }
    let Some(t) = &file.target else { return };
    let fd = match borrowed_fd(&t.file).try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint skipped");
            return;
        }
    };
    let ino = rustix::fs::fstat(&fd).map_or(0, |st| st.st_ino);
    let ops: Vec<StoreOp> = file.written[file.checkpointed_chunks..]
        .iter()
        .map(|(name, offset, len)| {
            // No ctime: a partial copy is still being written; its chunks are always
            // read and hashed before use.
            let at = ChunkLocation { path: file.temp_abs.clone(), offset: *offset, len: *len, ino, ctime_ns: 0 };
            StoreOp::PutChunk(name.0, at)
        })
        .collect();
    let (store, bytes) = (store.clone(), file.unsynced_bytes);
    let done = glommio::executor()
        .spawn_blocking(move || -> Result<(), String> {
            rustix::fs::fdatasync(&fd).map_err(|e| format!("fdatasync: {e}"))?;
            store.apply(StoreBatch { ops }).map_err(|e| e.to_string())
        })
        .await;
    match done {
        Ok(()) => {
            file.checkpointed_chunks = file.written.len();
            file.checkpointed_bytes += bytes;
            file.unsynced_bytes = 0;
            file.checkpointed = true;
            metrics.checkpoints_total.fetch_add(1, Ordering::Relaxed);
            metrics.checkpoint_bytes_total.fetch_add(bytes, Ordering::Relaxed);
        }
        // The sync's error is consumed here (a later fsync of the file would not see
        // it): the file fails, and is sent again.
        Err(e) => file.fail(format!("checkpoint: {e}")),
    }
}

/// Checkpointed temporaries kept after their attempt ended, by the final path they were
/// for (absolute). Shared by the executors: the next attempt may land on another core.
/// They are removed when that path is next committed; until then the end-of-pass sweep
/// of leftover temporaries spares them. A restart forgets them: the sweep then removes
/// them once a pass over their directory has run (after any resumed file used them).
/// final path → (temporary path, bytes checkpointed in it).
type PartialsByFinal = std::collections::HashMap<Vec<u8>, Vec<(Vec<u8>, u64)>>;

#[derive(Default)]
pub struct KeptPartials {
    by_final: std::sync::Mutex<PartialsByFinal>,
}

impl KeptPartials {
    /// Keeps `temp_abs` for `final_abs`. Earlier partials of that path with no more
    /// checkpointed bytes are obsolete (the new one holds what they held, copied): they
    /// are returned, for removal, so that retries of a large file do not fill the disk.
    pub(crate) fn keep(&self, final_abs: Vec<u8>, temp_abs: Vec<u8>, checkpointed_bytes: u64) -> Vec<Vec<u8>> {
        let mut map = self.lock();
        let kept = map.entry(final_abs).or_default();
        let (obsolete, still): (Vec<_>, Vec<_>) =
            std::mem::take(kept).into_iter().partition(|(_, bytes)| *bytes <= checkpointed_bytes);
        *kept = still;
        kept.push((temp_abs, checkpointed_bytes));
        obsolete.into_iter().map(|(t, _)| t).collect()
    }

    /// The partials kept for `final_abs`, forgotten.
    pub(crate) fn take(&self, final_abs: &[u8]) -> Vec<Vec<u8>> {
        self.lock().remove(final_abs).unwrap_or_default().into_iter().map(|(t, _)| t).collect()
    }

    pub(crate) fn is_kept(&self, temp_abs: &[u8]) -> bool {
        self.lock().values().any(|temps| temps.iter().any(|(t, _)| t == temp_abs))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PartialsByFinal> {
        self.by_final.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether an indexed chunk lives in a checkpointed temporary file (one that a resumed
/// transfer reads from, and removes once its file is committed).
pub(crate) fn is_partial(path: &[u8]) -> bool {
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    name.starts_with(TEMP_PREFIX.as_bytes())
}

/// Removes the temporaries a committed file was resumed from. Blocking.
pub(crate) fn remove_partials(partials: &[Vec<u8>]) {
    use std::os::unix::ffi::OsStrExt;
    for p in partials {
        if let Err(e) = std::fs::remove_file(std::ffi::OsStr::from_bytes(p)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %String::from_utf8_lossy(p), error = %e, "cannot remove a resumed-from temporary file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_partials_go_when_their_path_is_committed() {
        let kept = KeptPartials::default();
        assert!(kept.keep(b"/t/a".to_vec(), b"/t/.xtsync-tmp.1".to_vec(), 512).is_empty());
        // A later attempt that got less far does not make the first one obsolete...
        assert!(kept.keep(b"/t/a".to_vec(), b"/t/.xtsync-tmp.2".to_vec(), 64).is_empty());
        assert!(kept.keep(b"/t/b".to_vec(), b"/t/.xtsync-tmp.3".to_vec(), 64).is_empty());
        assert!(kept.is_kept(b"/t/.xtsync-tmp.2") && !kept.is_kept(b"/t/.xtsync-tmp.9"));
        assert_eq!(kept.take(b"/t/a"), vec![b"/t/.xtsync-tmp.1".to_vec(), b"/t/.xtsync-tmp.2".to_vec()]);
        // ...one that got as far does: at most one partial per path then.
        kept.keep(b"/t/a".to_vec(), b"/t/.xtsync-tmp.4".to_vec(), 64);
        assert_eq!(kept.keep(b"/t/a".to_vec(), b"/t/.xtsync-tmp.5".to_vec(), 128), vec![b"/t/.xtsync-tmp.4".to_vec()]);
        assert_eq!(kept.keep(b"/t/a".to_vec(), b"/t/.xtsync-tmp.6".to_vec(), 128), vec![b"/t/.xtsync-tmp.5".to_vec()]);
        assert_eq!(kept.take(b"/t/a"), vec![b"/t/.xtsync-tmp.6".to_vec()]);
        assert!(!kept.is_kept(b"/t/.xtsync-tmp.1") && kept.is_kept(b"/t/.xtsync-tmp.3"));
        assert!(kept.take(b"/t/a").is_empty());
    }

    #[test]
    fn only_xtsync_temporaries_count_as_partials() {
        assert!(is_partial(format!("/data/out/d/{TEMP_PREFIX}7.0.123.4").as_bytes()));
        assert!(!is_partial(b"/data/out/d/file.bin"));
        assert!(!is_partial(format!("/data/{TEMP_PREFIX}dir/file.bin").as_bytes()));
    }
}
