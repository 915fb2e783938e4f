//! Pure coalescing: backend events in, bounded [`ChangeBatch`]es out. No I/O and no clock of
//! its own — the caller passes `now` — so the rules are tested with fake instants.
//!
//! A batch opens with its first event and closes `window` after it (not after the last
//! event), so a constant stream of events cannot postpone delivery: the lag this layer
//! adds is at most `window` plus one poll. A batch also closes as soon as it holds
//! `batch_paths_max` entries, which bounds its memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::event::{ChangeBatch, ChangeKind, Event, EventKind, Rename};

/// Coalescing parameters (validated by [`crate::WatchOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalesceConfig {
    /// How long a batch stays open after its first event.
    pub window: Duration,
    /// A batch closes early when it holds this many entries (paths + renames + subtrees).
    pub batch_paths_max: usize,
}

/// Folds events into the currently open batch.
#[derive(Debug)]
pub struct Coalescer {
    config: CoalesceConfig,
    open: Option<OpenBatch>,
}

/// The batch being built, with the rename halves still waiting for their partner.
#[derive(Debug)]
struct OpenBatch {
    changes: BTreeMap<PathBuf, ChangeKind>,
    renames: Vec<Rename>,
    dirty: BTreeSet<PathBuf>,
    /// `MovedFrom` halves by cookie, until their `MovedTo` arrives or the batch closes.
    moved_from: HashMap<u32, PathBuf>,
    oldest_event_at: Instant,
    event_count: u64,
}

impl Coalescer {
    /// A coalescer with no open batch. A zero `batch_paths_max` is treated as 1.
    pub fn new(config: CoalesceConfig) -> Self {
        let batch_paths_max = config.batch_paths_max.max(1);
        Coalescer { config: CoalesceConfig { batch_paths_max, ..config }, open: None }
    }

    /// Adds one event read at `now`.
    pub fn push(&mut self, event: Event, now: Instant) {
        let open = self.open.get_or_insert_with(|| OpenBatch::new(now));
        open.oldest_event_at = open.oldest_event_at.min(now);
        open.event_count += 1;
        open.apply(event);
    }

    /// When the open batch is due, if one is open: the caller sleeps until then at most.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|open| open.oldest_event_at + self.config.window)
    }

    /// True when the open batch has reached its size cap.
    pub fn is_full(&self) -> bool {
        self.open.as_ref().is_some_and(|open| open.len() >= self.config.batch_paths_max)
    }

    /// Closes and returns the open batch if its window has passed at `now` or it is full.
    pub fn poll(&mut self, now: Instant) -> Option<ChangeBatch> {
        let due = self.deadline().is_some_and(|deadline| now >= deadline);
        if due || self.is_full() {
            self.flush()
        } else {
            None
        }
    }

    /// Closes and returns the open batch now, whatever its age (used at shutdown). A batch
    /// whose events cancelled out entirely is still returned, so lag accounting sees it.
    pub fn flush(&mut self) -> Option<ChangeBatch> {
        self.open.take().map(OpenBatch::close)
    }
}

impl OpenBatch {
    fn new(now: Instant) -> Self {
        OpenBatch {
            changes: BTreeMap::new(),
            renames: Vec::new(),
            dirty: BTreeSet::new(),
            moved_from: HashMap::new(),
            oldest_event_at: now,
            event_count: 0,
        }
    }

    fn len(&self) -> usize {
        self.changes.len() + self.renames.len() + self.dirty.len() + self.moved_from.len()
    }

    fn apply(&mut self, event: Event) {
        let Event { path, kind } = event;
        match kind {
            EventKind::Overflow => self.mark_dirty(PathBuf::new()),
            EventKind::SubtreeDirty => self.mark_dirty(path),
            EventKind::MovedFrom { cookie } if cookie != 0 => {
                // A reused cookie means the earlier half never found its partner.
                if let Some(stale) = self.moved_from.insert(cookie, path) {
                    self.record(stale, ChangeKind::Deleted);
                }
            }
            EventKind::MovedTo { cookie } if cookie != 0 => match self.moved_from.remove(&cookie) {
                Some(from) => self.rename(from, path),
                None => self.record(path, ChangeKind::Created),
            },
            EventKind::MovedFrom { .. } | EventKind::Deleted => self.record(path, ChangeKind::Deleted),
            EventKind::MovedTo { .. } | EventKind::Created => self.record(path, ChangeKind::Created),
            EventKind::Modified => self.record(path, ChangeKind::Modified),
            EventKind::Attrib => self.record(path, ChangeKind::Attrib),
        }
    }

    /// True when `path` lies in (or is) a subtree already marked dirty.
    fn is_dirty(&self, path: &Path) -> bool {
        path.ancestors().any(|ancestor| self.dirty.contains(ancestor))
    }

    fn record(&mut self, path: PathBuf, kind: ChangeKind) {
        if self.is_dirty(&path) {
            return;
        }
        let merged = merge(self.changes.get(&path).copied(), kind);
        self.changes.insert(path, merged);
    }

    /// Folds a paired rename. Entries recorded under the old path move to the new one,
    /// because the consumer applies renames before changes.
    fn rename(&mut self, from: PathBuf, to: PathBuf) {
        if from == to {
            return;
        }
        if self.is_dirty(&from) || self.is_dirty(&to) {
            // The rescan covers one side; the other is a plain appearance or removal.
            self.record(from, ChangeKind::Deleted);
            self.record(to, ChangeKind::Created);
            return;
        }
        // The rename replaces whatever was at `to`: that entry's history no longer applies.
        self.changes.remove(&to);
        let moved_kind = self.changes.remove(&from);
        self.move_entries_below(&from, &to);
        if moved_kind == Some(ChangeKind::Created) {
            // The target cannot hold `from` yet: a rename pair would refer to nothing there.
            self.record(from, ChangeKind::Deleted);
            self.record(to, ChangeKind::Created);
            return;
        }
        if let Some(kind) = moved_kind {
            self.changes.insert(to.clone(), kind);
        }
        self.renames.push(Rename { from, to });
    }

    /// Rewrites changes and dirty subtrees strictly below `from` to lie below `to`.
    fn move_entries_below(&mut self, from: &Path, to: &Path) {
        let below: Vec<PathBuf> = strictly_below(self.changes.keys(), from);
        for old in below {
            if let Some(kind) = self.changes.remove(&old) {
                self.changes.insert(rebase(&old, from, to), kind);
            }
        }
        let below: Vec<PathBuf> = strictly_below(self.dirty.iter(), from);
        for old in below {
            self.dirty.remove(&old);
            self.dirty.insert(rebase(&old, from, to));
        }
    }

    /// Marks a subtree for rescan; it swallows every entry recorded inside it.
    fn mark_dirty(&mut self, subtree: PathBuf) {
        if self.is_dirty(&subtree) {
            return;
        }
        let inside = |path: &Path| path.starts_with(&subtree);
        self.changes.retain(|path, _| !inside(path));
        self.dirty.retain(|path| !inside(path));
        let renames = std::mem::take(&mut self.renames);
        let mut broken = Vec::new();
        for rename in renames {
            if inside(&rename.from) || inside(&rename.to) {
                broken.push(rename);
            } else {
                self.renames.push(rename);
            }
        }
        if subtree.as_os_str().is_empty() {
            self.moved_from.clear();
        }
        self.dirty.insert(subtree);
        // A rename with one side inside the rescanned subtree leaves the other side as a
        // plain removal or appearance (`record` drops the side that is inside).
        for Rename { from, to } in broken {
            self.record(from, ChangeKind::Deleted);
            self.record(to, ChangeKind::Created);
        }
    }

    fn close(mut self) -> ChangeBatch {
        // A rename half whose partner never came: moved out of the root (or split across
        // batches, which costs a copy instead of a rename, never a wrong replica).
        let unpaired: Vec<PathBuf> = self.moved_from.drain().map(|(_, path)| path).collect();
        for path in unpaired {
            self.record(path, ChangeKind::Deleted);
        }
        ChangeBatch {
            changes: self.changes,
            renames: self.renames,
            dirty_subtrees: self.dirty,
            oldest_event_at: self.oldest_event_at,
            event_count: self.event_count,
        }
    }
}

/// The kind a path ends up with when `new` follows `old` within one window.
fn merge(old: Option<ChangeKind>, new: ChangeKind) -> ChangeKind {
    use ChangeKind::{Attrib, Created, Deleted, Modified};
    match (old, new) {
        (_, Deleted) => Deleted,
        (_, Created) => Created,
        (Some(Created), Modified | Attrib) => Created,
        // It exists again without a create we saw: re-read it.
        (Some(Deleted), Modified | Attrib) => Modified,
        (Some(Modified), Modified | Attrib) => Modified,
        (None | Some(Attrib), Modified) => Modified,
        (None | Some(Attrib), Attrib) => Attrib,
    }
}

fn strictly_below<'a>(paths: impl Iterator<Item = &'a PathBuf>, dir: &Path) -> Vec<PathBuf> {
    paths.filter(|path| path.as_path() != dir && path.starts_with(dir)).cloned().collect()
}

fn rebase(path: &Path, from: &Path, to: &Path) -> PathBuf {
    match path.strip_prefix(from) {
        Ok(rest) => to.join(rest),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(20);

    fn coalescer(batch_paths_max: usize) -> Coalescer {
        Coalescer::new(CoalesceConfig { window: WINDOW, batch_paths_max })
    }

    fn ev(path: &str, kind: EventKind) -> Event {
        Event::new(path, kind)
    }

    fn ms(base: Instant, offset_ms: u64) -> Instant {
        base + Duration::from_millis(offset_ms)
    }

    fn changes(batch: &ChangeBatch) -> Vec<(String, ChangeKind)> {
        batch.changes.iter().map(|(p, k)| (p.display().to_string(), *k)).collect()
    }

    #[test]
    fn batch_closes_one_window_after_its_first_event_even_under_a_stream() {
        let t0 = Instant::now();
        let mut c = coalescer(1000);
        assert_eq!(c.deadline(), None);
        // One event every 5 ms keeps arriving: the batch must still close at t0 + 20 ms.
        for i in 0..4 {
            c.push(ev(&format!("f{i}"), EventKind::Modified), ms(t0, i * 5));
            assert!(c.poll(ms(t0, i * 5)).is_none(), "closed early at {} ms", i * 5);
        }
        assert_eq!(c.deadline(), Some(ms(t0, 20)));
        let batch = c.poll(ms(t0, 20)).expect("due at window");
        assert_eq!(batch.changes.len(), 4);
        assert_eq!(batch.oldest_event_at, t0);
        assert_eq!(batch.event_count, 4);
        // The next event opens a new batch with its own oldest timestamp.
        c.push(ev("g", EventKind::Created), ms(t0, 21));
        assert!(c.poll(ms(t0, 40)).is_none());
        let next = c.poll(ms(t0, 41)).expect("second batch");
        assert_eq!(next.oldest_event_at, ms(t0, 21));
    }

    #[test]
    fn batch_closes_early_at_its_size_cap() {
        let t0 = Instant::now();
        let mut c = coalescer(3);
        c.push(ev("a", EventKind::Created), t0);
        c.push(ev("b", EventKind::Created), t0);
        assert!(c.poll(t0).is_none());
        c.push(ev("a", EventKind::Modified), t0); // same path: no growth
        assert!(!c.is_full());
        c.push(ev("c", EventKind::Created), t0);
        let batch = c.poll(t0).expect("full batch must close before the window");
        assert_eq!(batch.len(), 3);
        assert!(c.flush().is_none());
    }

    #[test]
    fn paths_are_deduplicated_with_the_last_known_kind() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        let seq = [
            ("created-deleted", EventKind::Created),
            ("created-modified", EventKind::Created),
            ("modified-attrib", EventKind::Modified),
            ("attrib", EventKind::Attrib),
            ("deleted-created", EventKind::Deleted),
            ("created-deleted", EventKind::Modified),
            ("created-deleted", EventKind::Deleted),
            ("created-modified", EventKind::Modified),
            ("modified-attrib", EventKind::Attrib),
            ("deleted-created", EventKind::Created),
        ];
        for (path, kind) in seq {
            c.push(ev(path, kind), t0);
        }
        let batch = c.flush().expect("batch");
        assert_eq!(
            changes(&batch),
            vec![
                ("attrib".to_string(), ChangeKind::Attrib),
                ("created-deleted".to_string(), ChangeKind::Deleted),
                ("created-modified".to_string(), ChangeKind::Created),
                ("deleted-created".to_string(), ChangeKind::Created),
                ("modified-attrib".to_string(), ChangeKind::Modified),
            ]
        );
        assert_eq!(batch.event_count, 10);
    }

    #[test]
    fn cookies_pair_moves_into_a_rename() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("dir/old", EventKind::MovedFrom { cookie: 7 }), t0);
        c.push(ev("other", EventKind::MovedFrom { cookie: 8 }), t0); // moved out
        c.push(ev("dir/new", EventKind::MovedTo { cookie: 7 }), t0);
        c.push(ev("incoming", EventKind::MovedTo { cookie: 9 }), t0); // moved in
        let batch = c.flush().expect("batch");
        assert_eq!(batch.renames, vec![Rename { from: "dir/old".into(), to: "dir/new".into() }]);
        assert_eq!(
            changes(&batch),
            vec![("incoming".to_string(), ChangeKind::Created), ("other".to_string(), ChangeKind::Deleted)]
        );
    }

    #[test]
    fn cookie_zero_reports_both_sides_as_changed() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("a", EventKind::MovedFrom { cookie: 0 }), t0);
        c.push(ev("b", EventKind::MovedTo { cookie: 0 }), t0);
        let batch = c.flush().expect("batch");
        assert!(batch.renames.is_empty());
        assert_eq!(
            changes(&batch),
            vec![("a".to_string(), ChangeKind::Deleted), ("b".to_string(), ChangeKind::Created)]
        );
    }

    #[test]
    fn changes_before_a_rename_follow_the_renamed_path() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("d/x", EventKind::Modified), t0);
        c.push(ev("d/sub/y", EventKind::Created), t0);
        c.push(ev("d", EventKind::Attrib), t0);
        c.push(ev("e", EventKind::Deleted), t0); // replaced by the rename below
        c.push(ev("d", EventKind::MovedFrom { cookie: 1 }), t0);
        c.push(ev("e", EventKind::MovedTo { cookie: 1 }), t0);
        let batch = c.flush().expect("batch");
        assert_eq!(batch.renames, vec![Rename { from: "d".into(), to: "e".into() }]);
        assert_eq!(
            changes(&batch),
            vec![
                ("e".to_string(), ChangeKind::Attrib),
                ("e/sub/y".to_string(), ChangeKind::Created),
                ("e/x".to_string(), ChangeKind::Modified),
            ]
        );
    }

    #[test]
    fn renaming_a_path_created_in_the_same_window_is_a_create() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("tmp.123", EventKind::Created), t0);
        c.push(ev("tmp.123", EventKind::MovedFrom { cookie: 5 }), t0);
        c.push(ev("final", EventKind::MovedTo { cookie: 5 }), t0);
        let batch = c.flush().expect("batch");
        assert!(batch.renames.is_empty(), "the target has no tmp.123 to rename");
        assert_eq!(
            changes(&batch),
            vec![("final".to_string(), ChangeKind::Created), ("tmp.123".to_string(), ChangeKind::Deleted)]
        );
    }

    #[test]
    fn dirty_subtree_swallows_paths_below_it() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("a/b/c", EventKind::Modified), t0);
        c.push(ev("a/bee", EventKind::Modified), t0); // sibling with a common string prefix
        c.push(ev("a/b/d", EventKind::SubtreeDirty), t0);
        c.push(ev("a/b", EventKind::SubtreeDirty), t0); // swallows a/b/d and a/b/c
        c.push(ev("a/b/e", EventKind::Created), t0); // inside: swallowed
        c.push(ev("a/b/d/f", EventKind::SubtreeDirty), t0); // inside: swallowed
        let batch = c.flush().expect("batch");
        assert_eq!(batch.dirty_subtrees.iter().collect::<Vec<_>>(), vec![Path::new("a/b")]);
        assert_eq!(changes(&batch), vec![("a/bee".to_string(), ChangeKind::Modified)]);
        assert!(!batch.root_dirty());
    }

    #[test]
    fn rename_across_a_dirty_subtree_becomes_delete_and_create() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("x", EventKind::MovedFrom { cookie: 3 }), t0);
        c.push(ev("dirty/x", EventKind::MovedTo { cookie: 3 }), t0);
        c.push(ev("y", EventKind::MovedFrom { cookie: 4 }), t0);
        c.push(ev("z", EventKind::MovedTo { cookie: 4 }), t0);
        c.push(ev("z", EventKind::SubtreeDirty), t0);
        c.push(ev("dirty", EventKind::SubtreeDirty), t0);
        let batch = c.flush().expect("batch");
        assert!(batch.renames.is_empty());
        assert_eq!(
            changes(&batch),
            vec![("x".to_string(), ChangeKind::Deleted), ("y".to_string(), ChangeKind::Deleted)]
        );
        assert_eq!(batch.dirty_subtrees.len(), 2);
    }

    #[test]
    fn overflow_makes_the_whole_root_dirty_and_swallows_everything() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("a", EventKind::Created), t0);
        c.push(ev("b", EventKind::MovedFrom { cookie: 2 }), t0);
        c.push(ev("", EventKind::Overflow), ms(t0, 1));
        c.push(ev("c", EventKind::Created), ms(t0, 2));
        c.push(ev("d", EventKind::MovedTo { cookie: 2 }), ms(t0, 3));
        c.push(ev("e", EventKind::SubtreeDirty), ms(t0, 3));
        let batch = c.poll(ms(t0, 20)).expect("batch");
        assert!(batch.root_dirty());
        assert_eq!(batch.len(), 1, "{batch:?}");
        assert_eq!(batch.oldest_event_at, t0);
    }

    #[test]
    fn unpaired_move_from_is_reported_as_deleted_when_the_batch_closes() {
        let t0 = Instant::now();
        let mut c = coalescer(100);
        c.push(ev("gone", EventKind::MovedFrom { cookie: 11 }), t0);
        let batch = c.poll(ms(t0, 20)).expect("batch");
        assert_eq!(changes(&batch), vec![("gone".to_string(), ChangeKind::Deleted)]);
    }

    #[test]
    fn zero_cap_is_treated_as_one() {
        let t0 = Instant::now();
        let mut c = coalescer(0);
        c.push(ev("a", EventKind::Created), t0);
        assert!(c.poll(t0).is_some());
    }
}
