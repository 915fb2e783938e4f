//! Shared helpers for the backend tests: a sandbox (root + a sibling outside it), a
//! collector that folds batches into what a consumer would know, and guards for the
//! sysctls some tests lower.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

pub mod scenarios;

use xtsync_watch::{BackendChoice, ChangeBatch, ChangeKind, Rename, WatchOptions, Watcher};

/// How long a test waits for an expected change before failing. Generous: these tests
/// check correctness, not speed, on a shared 2-core machine.
pub const WAIT: Duration = Duration::from_secs(5);

/// Sysctls are global: tests that lower one hold the write side while it is lowered;
/// every other test holds the read side while its watcher is created.
static SYSCTL_LOCK: RwLock<()> = RwLock::new(());

pub fn sysctl_shared() -> RwLockReadGuard<'static, ()> {
    SYSCTL_LOCK.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn sysctl_exclusive() -> RwLockWriteGuard<'static, ()> {
    SYSCTL_LOCK.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serialises tests that must not overlap with any other watcher activity at all.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A temporary directory holding `root/` (watched) and `outside/` (a sibling on the same
/// filesystem, so that renames between them are real renames).
pub struct Sandbox {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub outside: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        // /var/tmp, not /tmp: the same ext4 here either way, but /var/tmp is never tmpfs.
        let dir = tempfile::Builder::new().prefix("xtsync-watch-test").tempdir_in("/var/tmp").expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        fs::create_dir(&root).expect("mkdir root");
        fs::create_dir(&outside).expect("mkdir outside");
        let root = fs::canonicalize(root).expect("canonical root");
        Sandbox { _dir: dir, root, outside }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

pub fn options(backend: BackendChoice) -> WatchOptions {
    WatchOptions { backend, window: Duration::from_millis(20), ..WatchOptions::default() }
}

pub fn start(root: &Path, backend: BackendChoice) -> Watcher {
    let _shared = sysctl_shared();
    Watcher::new(root, options(backend)).expect("watcher starts")
}

/// What a consumer knows after applying every batch received so far.
#[derive(Debug, Default)]
pub struct Seen {
    pub changes: BTreeMap<PathBuf, ChangeKind>,
    pub renames: Vec<Rename>,
    pub dirty: BTreeSet<PathBuf>,
    pub batches: Vec<ChangeBatch>,
}

impl Seen {
    pub fn add(&mut self, batch: ChangeBatch) {
        self.dirty.extend(batch.dirty_subtrees.iter().cloned());
        self.renames.extend(batch.renames.iter().cloned());
        for (path, kind) in &batch.changes {
            self.changes.insert(path.clone(), *kind);
        }
        self.batches.push(batch);
    }

    pub fn root_dirty(&self) -> bool {
        self.dirty.contains(Path::new(""))
    }

    /// The consumer would look at `rel`: it was reported, or lies in a dirty subtree.
    pub fn covers(&self, rel: &str) -> bool {
        let rel = Path::new(rel);
        self.changes.contains_key(rel) || rel.ancestors().any(|a| self.dirty.contains(a))
    }

    pub fn kind(&self, rel: &str) -> Option<ChangeKind> {
        self.changes.get(Path::new(rel)).copied()
    }

    pub fn has_rename(&self, from: &str, to: &str) -> bool {
        self.renames.iter().any(|r| r.from == Path::new(from) && r.to == Path::new(to))
    }

    /// Every path mentioned anywhere (changes, renames, dirty subtrees).
    pub fn mentioned(&self) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = self.changes.keys().cloned().collect();
        all.extend(self.dirty.iter().cloned());
        for r in &self.renames {
            all.push(r.from.clone());
            all.push(r.to.clone());
        }
        all
    }
}

/// Receives batches until `done` holds (true) or `WAIT` passes (false).
pub fn wait_until(watcher: &Watcher, seen: &mut Seen, done: impl Fn(&Seen) -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match watcher.batches().recv_timeout(left) {
            Ok(batch) => seen.add(batch),
            Err(_) => return done(seen),
        }
    }
    true
}

/// Receives whatever arrives within `quiet` (to check that something is NOT reported).
pub fn drain_for(watcher: &Watcher, seen: &mut Seen, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        if let Ok(batch) = watcher.batches().recv_timeout(left) {
            seen.add(batch);
        }
    }
}

/// Writes a sysctl and puts the old value back when dropped (also on panic).
pub struct SysctlGuard {
    path: &'static str,
    old: String,
}

impl SysctlGuard {
    pub fn set(path: &'static str, value: &str) -> SysctlGuard {
        let old = fs::read_to_string(path).expect("read sysctl").trim().to_string();
        fs::write(path, value).expect("write sysctl (tests run as root)");
        SysctlGuard { path, old }
    }
}

impl Drop for SysctlGuard {
    fn drop(&mut self) {
        if let Err(err) = fs::write(self.path, &self.old) {
            eprintln!("FAILED to restore {} to {}: {err}", self.path, self.old);
        }
    }
}

/// Writes `bytes` to `path` (create or truncate).
pub fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// Linux version as (major, minor), for features that depend on it (FAN_RENAME: 5.17).
pub fn kernel_version() -> (u32, u32) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}
