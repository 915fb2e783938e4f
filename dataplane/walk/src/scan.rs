//! The source walk: up to `WALK_THREADS_MAX` blocking threads per pass list the tree
//! (never following symlinks), read metadata and `user.*` xattrs, recognise hard links,
//! look up the source records so that unchanged files are not read again, and hand
//! every entry to the session that owns it (sharded by path; all names of one inode go
//! to the same session so that a hard link always follows its file).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use xtsync_store::{SourceRecord, SyncedEntry, WorkerStore};
use xtsync_wire::RelPath;

use crate::backlog::{Backlog, SharedBacklog};
use crate::dir_queue::DirQueue;
use crate::entry_meta::{meta_of, read_xattrs, FileStat};
use crate::item::{recorded_before, LinkNames, ScanError, WalkItem, WalkKind, WalkStats};
use crate::renames::{rel_under, Detector, EventRenames};
use crate::synced::SyncedWalk;
use xtsync_chunker::ChunkParams;
use xtsync_wire::TEMP_PREFIX;

fn shard_of(bytes: &[u8], shards: usize) -> usize {
    (u64::from_le_bytes(blake3::hash(bytes).as_bytes()[..8].try_into().expect("8 bytes")) % shards as u64) as usize
}

/// How often a walk looks whether a full session queue has drained to half.
const QUEUE_DRAIN_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Walks `root` and sends every entry to `shards[i]`. Returns when the tree is done or
/// a receiver hung up (the pass was cancelled).
pub fn walk(
    root: &Path,
    delete: bool,
    store: &Arc<dyn WorkerStore>,
    chunk_params: Option<ChunkParams>,
    shards: &[flume::Sender<WalkItem>],
    tally: Option<&SharedBacklog>,
    synced: Option<&mut SyncedWalk>,
) -> Result<WalkStats, ScanError> {
    let root_meta = std::fs::symlink_metadata(root)
        .map_err(|e| ScanError::Root { path: root.display().to_string(), reason: e.to_string() })?;
    if !root_meta.is_dir() {
        return Err(ScanError::Root { path: root.display().to_string(), reason: "not a directory".into() });
    }
    let recorded_before = recorded_before(store.as_ref(), root);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, WALK_THREADS_MAX);
    let queue = DirQueue::new((RelPath::root(), root.to_path_buf(), root_meta, None));
    let links = Arc::default();
    let mut forks: Vec<Option<SyncedWalk>> = (0..threads).map(|_| synced.as_deref().map(SyncedWalk::fork)).collect();
    let outcomes: Vec<Result<WalkStats, ScanError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = forks
            .iter_mut()
            .enumerate()
            .map(|(i, fork)| {
                let (queue, links) = (&queue, &links);
                let walker =
                    std::thread::Builder::new().name(format!("xtsync-walk{i}")).spawn_scoped(scope, move || {
                        let mut walker = Walker::new(root, delete, store, shards);
                        walker.links = Arc::clone(links);
                        walker.tally_into(tally);
                        walker.synced = fork.as_mut();
                        walker.detect_renames(root, EventRenames::default(), chunk_params, recorded_before);
                        walker.drain(queue).map(|()| walker.stats)
                    });
                walker.map_err(|e| {
                    queue.cancel();
                    ScanError::Root { path: root.display().to_string(), reason: format!("walk thread: {e}") }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w?.join().unwrap_or_else(|_| {
                    Err(ScanError::Root { path: root.display().to_string(), reason: "a walk thread panicked".into() })
                })
            })
            .collect()
    });
    if let Some(synced) = synced {
        for fork in forks.into_iter().flatten() {
            synced.absorb(fork);
        }
    }
    let mut stats = WalkStats::default();
    for outcome in outcomes {
        stats.add(&outcome?);
    }
    Ok(stats)
}

/// Threads of one walk: `lstat` is most of an unchanged tree's cost, and it scales.
const WALK_THREADS_MAX: usize = 4;

/// A directory to walk: its path below the root, absolute path, metadata, and what the
/// target acknowledged of it (see `xtsync_walk::synced`).
type PendingDir = (RelPath, PathBuf, std::fs::Metadata, Option<SyncedEntry>);

/// Sends entries to the sessions of a pass: whole trees (`walk`) or parts of one
/// (`crate::changes`). Hard links are recognised among the entries it sends.
pub(crate) struct Walker<'a> {
    /// The tree's root (the walk may cover only part of it).
    root: &'a Path,
    delete: bool,
    store: &'a Arc<dyn WorkerStore>,
    shards: &'a [flume::Sender<WalkItem>],
    pub stats: WalkStats,
    /// The first name sent per multi-link inode, shared by the threads of a walk. Held
    /// while that name's item is sent, so a later name (a hard link to it) never
    /// reaches the session before it.
    links: Arc<std::sync::Mutex<HashMap<(u64, u64), RelPath>>>,
    /// With [`Walker::track_link_names`]: every name sent per multi-link inode, and its
    /// link count (a walk of part of a tree may not meet them all).
    link_names: Option<LinkNames>,
    xattr_buf: Vec<u8>,
    renames: Option<Detector<'a>>,
    /// Counts the regular files sent, as they are sent (for the run's pending figures).
    tally: Option<&'a SharedBacklog>,
    /// What the target acknowledged: skips what it holds (a trusted pass), records
    /// what is sent.
    synced: Option<&'a mut SyncedWalk>,
    /// Reads the synced table directory by directory (one iterator for the walk).
    synced_cursor: Option<Box<dyn xtsync_store::SyncedCursor + 'a>>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(
        root: &'a Path,
        delete: bool,
        store: &'a Arc<dyn WorkerStore>,
        shards: &'a [flume::Sender<WalkItem>],
    ) -> Self {
        Walker {
            root,
            delete,
            store,
            shards,
            stats: WalkStats::default(),
            links: Arc::default(),
            link_names: None,
            xattr_buf: Vec::new(),
            renames: None,
            tally: None,
            synced: None,
            synced_cursor: None,
        }
    }

    /// Adds each regular file sent (not its other names) to `tally` as it goes.
    pub(crate) fn tally_into(&mut self, tally: Option<&'a SharedBacklog>) {
        self.tally = tally;
    }

    /// Remembers every name sent per multi-link inode (for [`Walker::names_missing`]).
    pub(crate) fn track_link_names(&mut self) {
        self.link_names.get_or_insert_with(HashMap::new);
    }

    /// Multi-link inodes sent with fewer names than their link count: how many names
    /// are missing, and the ones sent. The others are elsewhere in the tree (and must go
    /// as hard links to the first one).
    pub(crate) fn names_missing(&self) -> LinkNames {
        let Some(names) = &self.link_names else { return HashMap::new() };
        names
            .iter()
            .filter(|(_, (nlink, sent))| (sent.len() as u64) < *nlink)
            .map(|(key, (nlink, sent))| (*key, (nlink - sent.len() as u64, sent.clone())))
            .collect()
    }

    /// Recognises renames (see `crate::renames`) of the tree at `root`: from `events`,
    /// from the inode index, and with `chunk_params` by hashing same-size candidates.
    /// `recorded_before`: see [`recorded_before`].
    pub(crate) fn detect_renames(
        &mut self,
        root: &Path,
        events: EventRenames,
        chunk_params: Option<ChunkParams>,
        recorded_before: bool,
    ) {
        let store: &'a dyn WorkerStore = self.store.as_ref();
        self.renames = Some(Detector { root: root.to_path_buf(), store, events, chunk_params, recorded_before });
    }

    /// The directory `rel` was renamed from, by the events, if that path is gone.
    fn dir_renamed_from(&self, rel: &RelPath) -> Option<RelPath> {
        let detector = self.renames.as_ref().filter(|_| self.delete)?;
        let from = detector.events.dir_from(rel)?;
        let from_abs = detector.root.join(from.as_path());
        std::fs::symlink_metadata(from_abs).is_err().then(|| from.clone())
    }

    /// Queues `item` for session `shard`. A walk is far ahead of its sessions on a tree
    /// of small files: it waits for a full queue to drain to half, then fills it again,
    /// instead of being woken for every item a session takes (tens of thousands of
    /// context switches a second on an initial copy).
    fn send(&self, shard: usize, item: WalkItem) -> Result<(), ScanError> {
        let tx = &self.shards[shard];
        if let Some(capacity) = tx.capacity().filter(|&c| c >= 2 && tx.len() >= c) {
            while tx.len() > capacity / 2 && !tx.is_disconnected() {
                std::thread::sleep(QUEUE_DRAIN_POLL);
            }
        }
        tx.send(item).map_err(|_| ScanError::Cancelled)
    }

    /// Sends directory `rel`'s own entry (with its listing when deletions are on, so the
    /// target removes what is gone) and, with `recurse`, everything below it, depth
    /// first in name order. A trusted pass (`synced`) skips the entries the target
    /// acknowledged as they are, and a directory's own entry unless it changed or holds
    /// an entry that is sent (whose arrival changes the directory's times at the target).
    pub(crate) fn dir(
        &mut self,
        rel: RelPath,
        abs: PathBuf,
        meta: std::fs::Metadata,
        recurse: bool,
    ) -> Result<(), ScanError> {
        let mut stack: Vec<PendingDir> = vec![(rel, abs, meta, None)];
        while let Some(dir) = stack.pop() {
            let subdirs = self.one_dir(dir, recurse)?;
            // Depth first, in name order.
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Takes directories from `queue` until it is empty and no other thread can add to
    /// it, and walks each (see [`Walker::dir`]); its subdirectories go back to the queue.
    fn drain(&mut self, queue: &DirQueue<PendingDir>) -> Result<(), ScanError> {
        while let Some(dir) = queue.pop() {
            match self.one_dir(dir, true) {
                Ok(subdirs) => queue.done(subdirs),
                Err(e) => {
                    queue.cancel();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One directory of [`Walker::dir`]: returns its subdirectories, unwalked, in name
    /// order (with what the target acknowledged of each).
    fn one_dir(&mut self, dir: PendingDir, recurse: bool) -> Result<Vec<PendingDir>, ScanError> {
        let (rel, abs, dir_meta, mut self_known) = dir;
        {
            // One descriptor per directory: its listing, and (trusted passes) the stat of
            // each entry relative to it, without walking the path again.
            let listed = rustix::fs::open(
                &abs,
                rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .and_then(|fd| {
                let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0)?;
                let mut names = Vec::new();
                let mut dir = rustix::fs::Dir::new(dup)?;
                while let Some(entry) = dir.read() {
                    let name = entry?.file_name().to_bytes().to_vec();
                    if name != b"." && name != b".." {
                        names.push(name);
                    }
                }
                Ok((names, fd))
            });
            let (mut names, dir_fd) = match listed {
                Ok(listed) => listed,
                Err(e) => {
                    tracing::warn!(path = %abs.display(), error = %e, "cannot list directory; skipping it");
                    self.stats.errors += 1;
                    return Ok(Vec::new());
                }
            };
            names.retain(|n| !n.starts_with(TEMP_PREFIX.as_bytes()));
            names.sort_unstable();
            self.stats.dirs += 1;
            let mut known = match (&self.synced, &mut self.synced_cursor) {
                (Some(synced), Some(cursor)) => synced.known(cursor.as_mut(), &rel)?,
                (Some(synced), None) => {
                    let mut cursor = self.store.synced_cursor(synced.job());
                    let known = synced.known(cursor.as_mut(), &rel)?;
                    self.synced_cursor = Some(cursor);
                    known
                }
                _ => HashMap::new(),
            };
            if rel.is_root() {
                self_known = known.remove(&b""[..]);
            }
            // A trusted pass stats each entry relative to its directory first (no path
            // walk) and goes no further with what the target holds as it is.
            let trusted_dir = self.synced.as_deref().filter(|s| s.trusted && recurse).map(|_| &dir_fd);
            let mut children = Vec::with_capacity(names.len());
            if recurse {
                for name in &names {
                    if let Some(fd) = &trusted_dir {
                        if self.synced_unchanged(fd, name, known.get(name)) {
                            continue;
                        }
                    }
                    let child_abs = abs.join(std::ffi::OsStr::from_bytes(name));
                    let Ok(child_rel) = rel.join(name) else {
                        tracing::warn!(path = %child_abs.display(), "name cannot be replicated (too long); skipping");
                        self.stats.errors += 1;
                        continue;
                    };
                    if let Some(m) = self.stat(&child_abs) {
                        children.push((child_rel, child_abs, m));
                    }
                }
            }
            if let Some(synced) = self.synced.as_deref_mut() {
                for name in known.keys().filter(|n| names.binary_search(n).is_err()) {
                    synced.gone(&rel, name);
                }
            }
            let own = FileStat::of(&dir_meta).synced();
            let unchanged = self.synced.as_deref().is_some_and(|s| s.unchanged(self_known.as_ref(), &own));
            let holds_sent = children.iter().any(|(_, _, m)| !m.is_dir());
            if !unchanged || holds_sent {
                let dir_item = WalkItem {
                    path: rel.clone(),
                    meta: meta_of(&dir_meta, read_xattrs(&abs, &mut self.xattr_buf)),
                    abs: abs.clone(),
                    kind: WalkKind::Dir { children: self.delete.then(|| names.clone()) },
                    retries: 0,
                    renamed_from: self.dir_renamed_from(&rel),
                };
                if let Some(synced) = self.synced.as_deref_mut() {
                    synced.sent(&rel, own);
                }
                self.send(shard_of(rel.as_bytes(), self.shards.len()), dir_item)?;
            }
            if !recurse {
                return Ok(Vec::new());
            }
            let subdirs = self.entries(children)?;
            if let Some(synced) = self.synced.as_deref_mut() {
                synced.write_some(self.store.as_ref());
            }
            Ok(subdirs
                .into_iter()
                .map(|(child_rel, child_abs, m)| {
                    let child_known = child_rel.split_last().and_then(|(_, name)| known.get(name).copied());
                    (child_rel, child_abs, m, child_known)
                })
                .collect())
        }
    }

    /// True if entry `name` of the directory open at `dir` is a symlink or single-link
    /// file that a trusted pass need not send: its stat is the one the target
    /// acknowledged (`known`). Counted as walked.
    fn synced_unchanged(&mut self, dir: &OwnedFd, name: &[u8], known: Option<&SyncedEntry>) -> bool {
        let Some(synced) = self.synced.as_deref_mut() else { return false };
        let Ok(st) = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) else { return false };
        let file_type = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let is_file = file_type == rustix::fs::FileType::RegularFile;
        // A name of a multi-link inode always goes: the target links it to the first
        // name sent.
        let skippable = file_type == rustix::fs::FileType::Symlink || (is_file && st.st_nlink == 1);
        let stat = FileStat::of_raw(&st).synced();
        if !skippable || !synced.unchanged(known, &stat) {
            return false;
        }
        if is_file {
            self.stats.files += 1;
            self.stats.bytes += stat.size;
            self.stats.files_synced += 1;
        } else {
            self.stats.symlinks += 1;
        }
        true
    }

    /// Sends directory `rel`'s own entry without a listing: its metadata is applied, and
    /// nothing in it is deleted.
    pub(crate) fn dir_meta(&mut self, rel: RelPath, abs: PathBuf, meta: std::fs::Metadata) -> Result<(), ScanError> {
        self.stats.dirs += 1;
        let item = WalkItem {
            path: rel.clone(),
            meta: meta_of(&meta, read_xattrs(&abs, &mut self.xattr_buf)),
            abs,
            kind: WalkKind::Dir { children: None },
            retries: 0,
            renamed_from: None,
        };
        self.send(shard_of(rel.as_bytes(), self.shards.len()), item)
    }

    /// `lstat`, or `None` (logged unless the entry just vanished, which is no error).
    pub(crate) fn stat(&mut self, abs: &Path) -> Option<std::fs::Metadata> {
        match std::fs::symlink_metadata(abs) {
            Ok(m) => Some(m),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %abs.display(), error = %e, "cannot stat; skipping");
                    self.stats.errors += 1;
                }
                None
            }
        }
    }

    /// With [`Walker::track_link_names`]: `rel` is one of the names of the multi-link
    /// inode `key` sent in this walk.
    fn note_link_name(&mut self, key: (u64, u64), nlink: u64, rel: &RelPath) {
        if let Some(names) = &mut self.link_names {
            let (count, sent) = names.entry(key).or_insert_with(|| (nlink, Vec::new()));
            *count = nlink;
            if !sent.contains(rel) {
                sent.push(rel.clone());
            }
        }
    }

    /// The name other than `rel` under which the source last recorded inode `key`, if
    /// that name still is a link to it (with its metadata now).
    fn recorded_name(&self, key: (u64, u64), rel: &RelPath) -> Option<(RelPath, PathBuf, std::fs::Metadata)> {
        let abs = self.store.source_path_of_inode(key.0, key.1).ok()??;
        let recorded = rel_under(self.root, &abs).filter(|r| r != rel)?;
        let abs = PathBuf::from(std::ffi::OsString::from_vec(abs));
        let meta = std::fs::symlink_metadata(&abs).ok().filter(|m| m.is_file() && (m.dev(), m.ino()) == key)?;
        Some((recorded, abs, meta))
    }

    /// Sends a regular file under its first (or only) name, with its cached digest when
    /// its source record still describes it, or where it was renamed from.
    fn file(
        &mut self,
        shard: usize,
        rel: RelPath,
        abs: PathBuf,
        m: &std::fs::Metadata,
        record: Option<SourceRecord>,
    ) -> Result<(), ScanError> {
        let stat = FileStat::of(m);
        let meta = meta_of(m, read_xattrs(&abs, &mut self.xattr_buf));
        self.stats.files += 1;
        self.stats.bytes += stat.size;
        if let Some(tally) = self.tally {
            tally.add(Backlog { files: 1, bytes: stat.size });
        }
        let had_record = record.is_some();
        let mut cached_digest = record.filter(|r| stat.matches(r)).map(|r| r.digest);
        // New at this path: maybe a file the source had elsewhere (a rename). Not
        // when deletions do not propagate: the old name must stay at the target.
        let found = match (cached_digest, &self.renames) {
            (None, Some(detector)) if self.delete => detector.find(&rel, &abs, &stat, had_record),
            _ => None,
        };
        let renamed_from = found.map(|f| {
            cached_digest = Some(f.digest);
            f.from
        });
        if m.nlink() == 1 {
            if let Some(synced) = self.synced.as_deref_mut() {
                synced.sent(&rel, stat.synced());
            }
        }
        let kind = WalkKind::File { stat, cached_digest };
        self.send(shard, WalkItem { path: rel, meta, abs, kind, retries: 0, renamed_from })
    }

    /// Sends the symlinks and regular files among `children` (one source-record lookup
    /// for all the files) and returns the directories among them, unsent.
    pub(crate) fn entries(
        &mut self,
        children: Vec<(RelPath, PathBuf, std::fs::Metadata)>,
    ) -> Result<Vec<(RelPath, PathBuf, std::fs::Metadata)>, ScanError> {
        let shards = self.shards.len();
        let mut files: Vec<(RelPath, PathBuf, std::fs::Metadata)> = Vec::new();
        let mut subdirs = Vec::new();
        for (child_rel, child_abs, m) in children {
            let ft = m.file_type();
            if ft.is_dir() {
                subdirs.push((child_rel, child_abs, m));
            } else if ft.is_symlink() {
                let target = match std::fs::read_link(&child_abs) {
                    Ok(t) => t.as_os_str().as_bytes().to_vec(),
                    Err(_) => continue,
                };
                self.stats.symlinks += 1;
                if let Some(synced) = self.synced.as_deref_mut() {
                    synced.sent(&child_rel, FileStat::of(&m).synced());
                }
                let item = WalkItem {
                    path: child_rel.clone(),
                    meta: meta_of(&m, Vec::new()),
                    abs: child_abs,
                    kind: WalkKind::Symlink { target },
                    retries: 0,
                    renamed_from: None,
                };
                self.send(shard_of(child_rel.as_bytes(), shards), item)?;
            } else if ft.is_file() {
                files.push((child_rel, child_abs, m));
            }
            // Sockets, FIFOs and devices are not replicated.
        }
        if files.is_empty() {
            // Most directories of a trusted pass: nothing left to look up.
            return Ok(subdirs);
        }
        let keys: Vec<Vec<u8>> = files.iter().map(|(_, a, _)| a.as_os_str().as_bytes().to_vec()).collect();
        let records = self.store.source_records(&keys)?;
        for ((child_rel, child_abs, m), record) in files.into_iter().zip(records) {
            if m.nlink() == 1 {
                self.file(shard_of(child_rel.as_bytes(), shards), child_rel, child_abs, &m, record)?;
                continue;
            }
            let key = (m.dev(), m.ino());
            let shard = shard_of(&[key.0.to_le_bytes(), key.1.to_le_bytes()].concat(), shards);
            self.note_link_name(key, m.nlink(), &child_rel);
            let links = Arc::clone(&self.links);
            // Held until the first name's item is sent: a link never reaches its
            // session before the file it names.
            let mut first_names = links.lock().unwrap_or_else(|p| p.into_inner());
            let first = match first_names.get(&key) {
                // Sent already, by the thread that met another name first.
                Some(first) if *first == child_rel => continue,
                Some(first) => first.clone(),
                None => {
                    // The name the file was sent under last time stays its first name
                    // while it still is one: the source's record (digest) and the
                    // target's are kept under it, and any other name would read the
                    // file again and make the target write it anew.
                    let first = match self.recorded_name(key, &child_rel) {
                        Some((rel, abs, meta)) => {
                            self.note_link_name(key, meta.nlink(), &rel);
                            let record =
                                self.store.source_records(&[abs.as_os_str().as_bytes().to_vec()])?.pop().flatten();
                            self.file(shard, rel.clone(), abs, &meta, record)?;
                            rel
                        }
                        None => child_rel.clone(),
                    };
                    first_names.insert(key, first.clone());
                    if first == child_rel {
                        self.file(shard, child_rel, child_abs, &m, record)?;
                        continue;
                    }
                    first
                }
            };
            self.stats.hardlinks += 1;
            let meta = meta_of(&m, read_xattrs(&child_abs, &mut self.xattr_buf));
            let kind = WalkKind::HardLink { to: first };
            self.send(shard, WalkItem { path: child_rel, meta, abs: child_abs, kind, retries: 0, renamed_from: None })?;
        }
        Ok(subdirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtsync_store::MemStore;

    #[test]
    fn walk_finds_every_kind_and_groups_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/empty")).unwrap();
        std::fs::write(r.join("a/f"), b"data").unwrap();
        std::fs::hard_link(r.join("a/f"), r.join("h")).unwrap();
        std::os::unix::fs::symlink("a/f", r.join("s")).unwrap();
        std::fs::write(r.join(format!("{TEMP_PREFIX}junk")), b"x").unwrap();
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| flume::unbounded()).unzip();
        let stats = walk(r, true, &store, None, &txs, None, None).unwrap();
        drop(txs);
        assert_eq!((stats.files, stats.dirs, stats.symlinks, stats.hardlinks), (1, 3, 1, 1));
        let items: Vec<Vec<WalkItem>> = rxs.iter().map(|rx| rx.drain().collect()).collect();
        let all: Vec<&WalkItem> = items.iter().flatten().collect();
        assert!(all.iter().all(|i| !i.path.to_string_lossy().contains("xtsync-tmp")));
        // The file and its second name travel in the same session, file first.
        let shard = items.iter().find(|s| s.iter().any(|i| matches!(i.kind, WalkKind::HardLink { .. }))).unwrap();
        let file_pos = shard.iter().position(|i| matches!(i.kind, WalkKind::File { .. })).unwrap();
        let link_pos = shard.iter().position(|i| matches!(i.kind, WalkKind::HardLink { .. })).unwrap();
        assert!(file_pos < link_pos);
    }

    #[test]
    fn a_walk_ahead_of_its_sessions_delivers_everything_and_stops_when_they_go() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for i in 0..40 {
            std::fs::write(r.join(format!("f{i:02}")), b"x").unwrap();
        }
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        // A slow session behind a small queue: the walk waits for it to drain, and
        // every item arrives.
        let (tx, rx) = flume::bounded(4);
        let consumer = std::thread::spawn(move || {
            let mut n = 0;
            while rx.recv().is_ok() {
                n += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            n
        });
        let stats = walk(r, true, &store, None, &[tx], None, None).unwrap();
        assert_eq!(stats.files, 40);
        assert_eq!(consumer.join().unwrap(), 41, "40 files and the root");
        // A session that goes away while the queue is full: the walk ends, cancelled.
        let (tx, rx) = flume::bounded(4);
        let dropper = std::thread::spawn(move || {
            while rx.len() < 4 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            drop(rx);
        });
        assert!(matches!(walk(r, true, &store, None, &[tx], None, None), Err(ScanError::Cancelled)));
        dropper.join().unwrap();
    }

    #[test]
    fn a_multi_link_file_keeps_the_name_it_was_recorded_under_whichever_name_is_met_first() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a")).unwrap();
        std::fs::write(r.join("a/f"), b"data").unwrap();
        // The root's files are met before any subdirectory's.
        std::fs::hard_link(r.join("a/f"), r.join("h")).unwrap();
        let walk_once = |store: &Arc<dyn WorkerStore>| {
            let (tx, rx) = flume::unbounded();
            let stats = walk(r, true, store, None, &[tx], None, None).unwrap();
            assert_eq!((stats.files, stats.hardlinks), (1, 1));
            rx.drain()
                .filter(|i| !matches!(i.kind, WalkKind::Dir { .. }))
                .map(|i| (i.path.to_string_lossy(), i.kind))
                .collect::<Vec<_>>()
        };
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        let items = walk_once(&store);
        assert!(
            matches!(&items[..], [(f, WalkKind::File { cached_digest: None, .. }), (l, WalkKind::HardLink { .. })]
            if f == "h" && l == "a/f"),
            "no record: the first name met is sent: {items:?}"
        );

        let abs = r.join("a/f");
        let stat = FileStat::of(&std::fs::symlink_metadata(&abs).unwrap());
        let op = xtsync_store::StoreOp::PutSource(abs.as_os_str().as_bytes().to_vec(), stat.record([7; 32]));
        store.apply(xtsync_store::StoreBatch { ops: vec![op] }).unwrap();
        let items = walk_once(&store);
        assert!(
            matches!(&items[..], [(f, WalkKind::File { cached_digest: Some(d), .. }), (l, WalkKind::HardLink { to })]
                if f == "a/f" && *d == [7; 32] && l == "h" && to.to_string_lossy() == "a/f"),
            "the recorded name goes as the file, with its digest, the other as a link to it: {items:?}"
        );
    }

    /// Walks `root` as a pass of job 1 with the synced table of `store`; records what
    /// was sent as a succeeded pass would. Returns the paths sent.
    fn synced_pass(root: &Path, store: &Arc<dyn WorkerStore>, trusted: bool) -> (Vec<String>, WalkStats) {
        use crate::synced::SyncedWalk;
        let stored = store.synced_basis(1).unwrap();
        let generation = stored.map_or(0, |b| b.generation) + 1;
        let basis = xtsync_store::SyncedBasis { token: [1; 32], verified_unix_s: 0, generation };
        // The pass "starts" a minute from now: nothing the test wrote counts as recent.
        let started_ns = (std::time::SystemTime::now() + std::time::Duration::from_secs(60))
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let mut synced = SyncedWalk::new(1, trusted, stored.as_ref(), basis, started_ns);
        let (tx, rx) = flume::unbounded();
        let stats = walk(root, true, store, None, &[tx], None, Some(&mut synced)).unwrap();
        synced.finish(store.as_ref(), true);
        (rx.drain().map(|i| i.path.to_string_lossy()).collect(), stats)
    }

    #[test]
    fn a_trusted_walk_sends_only_what_changed_and_the_directories_holding_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join("c")).unwrap();
        for f in ["a/1", "a/b/2", "c/3", "4"] {
            std::fs::write(r.join(f), f.as_bytes()).unwrap();
        }
        std::os::unix::fs::symlink("4", r.join("c/s")).unwrap();
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        let (sent, stats) = synced_pass(r, &store, false);
        assert_eq!(sent.len(), 9, "an untrusted pass sends everything: {sent:?}");
        assert_eq!((stats.files, stats.files_synced), (4, 0));

        let (sent, stats) = synced_pass(r, &store, true);
        assert!(sent.is_empty(), "nothing changed: {sent:?}");
        assert_eq!((stats.files, stats.dirs, stats.symlinks, stats.files_synced, stats.bytes), (4, 4, 1, 4, 12));

        // An edit in place: the file and its directory (whose times the target must
        // restore), nothing else.
        std::fs::write(r.join("a/b/2"), b"changed").unwrap();
        // A removal: the directory goes with its listing, and the entry is forgotten.
        std::fs::remove_file(r.join("c/3")).unwrap();
        let (mut sent, _) = synced_pass(r, &store, true);
        sent.sort();
        assert_eq!(sent, vec!["a/b", "a/b/2", "c"]);
        let names: Vec<Vec<u8>> = store.synced_entries(1, b"c").unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![b"s".to_vec()]);

        // A mode change moves the ctime only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(r.join("4"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let (mut sent, _) = synced_pass(r, &store, true);
        sent.sort();
        assert_eq!(sent, vec!["", "4"]);
        assert!(synced_pass(r, &store, true).0.is_empty());

        // Hard links always go (the target links the names to the first one sent).
        std::fs::hard_link(r.join("a/1"), r.join("c/h")).unwrap();
        assert!(!synced_pass(r, &store, true).0.is_empty());
        let (mut sent, _) = synced_pass(r, &store, true);
        sent.sort();
        assert_eq!(sent, vec!["a", "a/1", "c", "c/h"]);
    }

    #[test]
    fn missing_root_is_a_clear_error() {
        let store: Arc<dyn WorkerStore> = Arc::new(MemStore::default());
        let (tx, _rx) = flume::unbounded();
        let err = walk(Path::new("/nonexistent/xtsync"), false, &store, None, &[tx], None, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/xtsync"), "{err}");
    }
}
