//! Change journals of one-shot jobs. The worker keeps a watcher (`xtsync-watch`) per
//! job between passes, started before the walk of the job's first pass here. When the
//! previous pass succeeded and the watcher ran without a gap since before its walk, the
//! next pass walks only what the journal recorded (`changes.rs`), not the whole tree:
//! the way Syncthing's watcher feeds its scans, with the full walk kept for what a
//! journal cannot vouch for (first pass, failed pass, lost events, a reconcile, a target
//! that is not the one that acknowledged the tree).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xtsync_watch::{WatchOptions, Watcher};

use crate::changes::{change_set_of, ChangeSet};

/// Jobs with a journal per worker; the least recently used one is dropped beyond this.
/// (As root each journal is a fanotify mark on the source's whole filesystem, read by
/// its own thread.)
const JOURNALS_MAX: usize = 16;

/// Nobody takes a journal's batches between passes: they wait in the watcher's channel.
/// One-second batches of at most 1,024 paths, 256 of them (about four minutes of a change
/// every second, or 262,144 paths; tens of MB at most). When the channel is full the
/// watcher stops reading, the kernel's queue overflows, and the next pass walks the tree.
fn journal_watch_options() -> WatchOptions {
    WatchOptions {
        window: Duration::from_secs(1),
        batch_paths_max: 1024,
        channel_batches_max: 256,
        ..WatchOptions::default()
    }
}

/// How long a pass waits for its journal to hand over what the kernel queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Journals {
    by_job: Mutex<HashMap<u64, Journal>>,
}

pub struct Journal {
    /// What the recorded changes are relative to: the job's source root and whether
    /// deletions propagate.
    shape: (String, bool),
    /// The root directory's (device, inode) when the watcher started: a watcher follows
    /// the directory it was given, not a directory later renamed to its path.
    root_id: (u64, u64),
    watcher: Watcher,
    /// The watcher has run without a gap since before the walk of a pass that succeeded.
    vouches: bool,
    used_at: Instant,
}

/// A pass's journal while the pass runs, and what it recorded since the previous pass
/// began, when it can vouch for that (`None`: walk the tree).
pub struct Taken {
    journal: Journal,
    pub changes: Option<ChangeSet>,
}

impl Journals {
    /// Before a pass's walk (blocking: starts or flushes a watcher). `None` when the
    /// tree cannot be watched: the pass walks it, as it would without journals.
    pub fn begin(&self, job: u64, root: &str, delete: bool) -> Option<Taken> {
        if shared_filesystem(Path::new(root)) {
            return None;
        }
        let shape = (root.to_string(), delete);
        // Before a new watcher starts: if the root is replaced in between, the next pass
        // sees another directory and walks.
        let root_id = std::fs::metadata(root).map(|m| (m.dev(), m.ino())).ok()?;
        // Taken out of the map first: a journal dropped here stops its watcher thread
        // (a join), which must not hold up the other jobs' passes.
        let kept = self.lock().remove(&job);
        let kept = kept.filter(|j| j.shape == shape && j.root_id == root_id);
        let kept = kept.and_then(|journal| recorded(&journal).map(|changes| (journal, changes)));
        let (journal, changes) = match kept {
            Some(kept) => kept,
            None => {
                let watcher = Watcher::new(Path::new(root), journal_watch_options())
                    .inspect_err(|e| tracing::info!(job, error = %e, "no change journal; every pass walks the tree"))
                    .ok()?;
                (Journal { shape, root_id, watcher, vouches: false, used_at: Instant::now() }, None)
            }
        };
        Some(Taken { journal: Journal { used_at: Instant::now(), ..journal }, changes })
    }

    /// After the pass: the journal keeps recording; it vouches for the next pass only if
    /// this one succeeded.
    pub fn end(&self, job: u64, taken: Taken, succeeded: bool) {
        let mut dropped = Vec::new();
        {
            let mut by_job = self.lock();
            by_job.insert(job, Journal { vouches: succeeded, ..taken.journal });
            while by_job.len() > JOURNALS_MAX {
                let Some(oldest) = by_job.iter().min_by_key(|(_, j)| j.used_at).map(|(job, _)| *job) else { break };
                dropped.extend(by_job.remove(&oldest));
            }
        }
        // Their watcher threads are stopped (joined) outside the lock.
        drop(dropped);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Journal>> {
        self.by_job.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Filesystems that other hosts write to (NFS, SMB, FUSE, cluster filesystems): their
/// changes raise no local event, so a journal cannot vouch for anything there.
fn shared_filesystem(root: &Path) -> bool {
    const SHARED_MAGICS: [u64; 11] = [
        0x6969,      // NFS
        0x517b,      // SMB
        0xff53_4d42, // CIFS
        0xfe53_4d42, // SMB2
        0x6573_5546, // FUSE
        0x0102_1997, // 9P
        0x00c3_6400, // Ceph
        0x5346_414f, // AFS
        0x0116_1970, // GFS2
        0x7461_636f, // OCFS2
        0x0bd0_0bd0, // Lustre
    ];
    rustix::fs::statfs(root).map_or(true, |st| SHARED_MAGICS.contains(&(st.f_type as u64)))
}

/// Everything `journal` recorded up to now, if it can vouch for all of it; `None` if its
/// watcher has stopped (a new one is started).
fn recorded(journal: &Journal) -> Option<Option<ChangeSet>> {
    let mut set: Option<ChangeSet> = None;
    let flushed = journal.watcher.flush(FLUSH_TIMEOUT, |batch| {
        let batch_set = change_set_of(&batch);
        match &mut set {
            Some(set) => set.merge(batch_set),
            None => set = Some(batch_set),
        }
    });
    match flushed {
        Ok(true) if journal.vouches => Some(Some(set.unwrap_or_else(|| ChangeSet::of_entries([], Instant::now())))),
        Ok(_) => Some(None),
        Err(e) => {
            tracing::warn!(error = %e, "change journal stopped; walking the tree");
            None
        }
    }
}
