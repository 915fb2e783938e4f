//! What the walk hands to the sessions: one entry of the tree (`WalkItem`) with its
//! kind, the walk's figures and its errors. Shared by the walk, the sessions, the
//! rename detector and the change tracking; depends on none of them.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use xtsync_store::WorkerStore;
use xtsync_wire::{Meta, RelPath};

use crate::entry_meta::FileStat;

#[derive(Debug, Clone)]
pub enum WalkKind {
    Dir { children: Option<Vec<Vec<u8>>> },
    Symlink { target: Vec<u8> },
    HardLink { to: RelPath },
    File { stat: FileStat, cached_digest: Option<[u8; 32]> },
}

#[derive(Debug, Clone)]
pub struct WalkItem {
    pub path: RelPath,
    pub abs: PathBuf,
    pub meta: Meta,
    pub kind: WalkKind,
    /// How many times this file was sent again after a failure.
    pub retries: u8,
    /// The path this file or directory had before (a rename recognised at the source).
    pub renamed_from: Option<RelPath>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WalkStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub bytes: u64,
    /// Entries that could not be read (logged) and were skipped.
    pub errors: u64,
    /// Regular files not sent: the target acknowledged them as they are (`synced`).
    pub files_synced: u64,
}

impl WalkStats {
    pub(crate) fn add(&mut self, o: &WalkStats) {
        self.files += o.files;
        self.dirs += o.dirs;
        self.symlinks += o.symlinks;
        self.hardlinks += o.hardlinks;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.files_synced += o.files_synced;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("source root {path}: {reason}")]
    Root { path: String, reason: String },
    #[error("source records: {0}")]
    Store(#[from] xtsync_store::StoreError),
    #[error("the pass was cancelled")]
    Cancelled,
}

/// Whether the store holds source records beneath `root` now (at a pass's start); when
/// it cannot say, as if it did (rename detection then asks its indexes).
pub(crate) fn recorded_before(store: &dyn WorkerStore, root: &Path) -> bool {
    store.has_source_records_under(root.as_os_str().as_bytes()).unwrap_or(true)
}

/// Per multi-link inode (device, inode): a count of names (the link count, or the
/// names missing) and names.
pub(crate) type LinkNames = HashMap<(u64, u64), (u64, Vec<RelPath>)>;
