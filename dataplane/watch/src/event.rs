//! The vocabulary shared by the backends (which produce [`Event`]s) and the coalescer (which
//! turns them into [`ChangeBatch`]es). Paths are always relative to the watched root; the
//! empty path is the root itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

/// One change notification from a backend, already translated to a root-relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Path relative to the watched root (empty = the root itself).
    pub path: PathBuf,
    /// What happened to it.
    pub kind: EventKind,
}

/// What a backend saw happen to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new directory entry (file, directory, symlink, ...).
    Created,
    /// Content written (`IN_MODIFY`, `IN_CLOSE_WRITE`, `FAN_MODIFY`, `FAN_CLOSE_WRITE`).
    Modified,
    /// Metadata only (mode, owner, times, xattrs, link count).
    Attrib,
    /// The entry was removed.
    Deleted,
    /// First half of a rename. `cookie` pairs it with the [`EventKind::MovedTo`] of the same
    /// rename; 0 means the backend has no identity for it (fanotify without `FAN_RENAME`),
    /// and the path is then reported as deleted.
    MovedFrom { cookie: u32 },
    /// Second half of a rename; see [`EventKind::MovedFrom`]. Unpaired (cookie 0, or moved
    /// in from outside the root) it is reported as created.
    MovedTo { cookie: u32 },
    /// Events below this path may have been lost: the consumer must rescan the subtree.
    SubtreeDirty,
    /// The kernel queue overflowed: every path may have changed (the whole root is dirty).
    /// The event's path is ignored.
    Overflow,
}

impl Event {
    /// Shorthand used by the backends and tests.
    pub fn new(path: impl Into<PathBuf>, kind: EventKind) -> Self {
        Event { path: path.into(), kind }
    }
}

/// The last known state of a changed path within a batch. Every kind is a hint to check:
/// the consumer stats the path at the source and acts on what it finds, so a kind that is
/// out of date by the time the batch is read costs a stat, never a wrong replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// New in this window (possibly written to as well).
    Created,
    /// Content may have changed: re-read it.
    Modified,
    /// Only metadata changed: content need not be re-read.
    Attrib,
    /// The last event seen was a removal (created-then-deleted also ends here): check
    /// whether it exists and delete it at the target if not.
    Deleted,
}

/// A rename seen as one operation (both halves arrived in the same batch), so the target
/// can apply it as a rename and send no data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// Old path, relative to the root.
    pub from: PathBuf,
    /// New path, relative to the root.
    pub to: PathBuf,
}

/// What changed under the root during one coalescing window.
///
/// Apply in this order: `dirty_subtrees` (rescan them), `renames` (in order), then
/// `changes` (their paths are the ones current after the renames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeBatch {
    /// Changed paths, deduplicated, with their last known kind. No path here lies inside a
    /// dirty subtree.
    pub changes: BTreeMap<PathBuf, ChangeKind>,
    /// Renames within the root, in the order they happened.
    pub renames: Vec<Rename>,
    /// Subtrees to rescan because events may have been lost there (the empty path means the
    /// whole root: queue overflow). Never nested in one another.
    pub dirty_subtrees: BTreeSet<PathBuf>,
    /// When the oldest event of the batch was read: the start of its replication lag (RPO).
    pub oldest_event_at: Instant,
    /// How many backend events were folded into this batch.
    pub event_count: u64,
}

impl ChangeBatch {
    /// True when the whole root must be rescanned (queue overflow or root-level trouble).
    pub fn root_dirty(&self) -> bool {
        self.dirty_subtrees.iter().any(|p| p.as_os_str().is_empty())
    }

    /// Number of entries (changed paths + renames + dirty subtrees).
    pub fn len(&self) -> usize {
        self.changes.len() + self.renames.len() + self.dirty_subtrees.len()
    }

    /// True when the batch carries nothing to do.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
