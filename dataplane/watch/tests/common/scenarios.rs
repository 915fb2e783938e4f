//! Scenarios every backend must pass, with real files and real syscalls. Each test binary
//! (`inotify.rs`, `fanotify.rs`) runs them with its backend.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use xtsync_watch::{Backend, BackendChoice, ChangeKind, Watcher};

use super::*;

fn expect_backend(watcher: &Watcher, choice: BackendChoice) {
    let expected = match choice {
        BackendChoice::Fanotify => Backend::Fanotify,
        _ => Backend::Inotify,
    };
    assert_eq!(watcher.backend(), expected);
}

/// Nested files and directories created, modified and deleted are all reported, with the
/// right last-known kind.
pub fn create_modify_delete(choice: BackendChoice) {
    let sb = Sandbox::new();
    let watcher = start(&sb.root, choice);
    expect_backend(&watcher, choice);
    fs::create_dir_all(sb.path("a/b/c")).expect("mkdir -p");
    write(&sb.path("a/b/c/f.txt"), b"one");
    write(&sb.path("top.txt"), b"top");
    write(&sb.path("gone.txt"), b"soon gone");
    fs::create_dir(sb.path("a/tmpdir")).expect("mkdir");
    let mut seen = Seen::default();
    let all_created =
        |s: &Seen| ["a", "a/b", "a/b/c", "a/b/c/f.txt", "top.txt", "gone.txt", "a/tmpdir"].iter().all(|p| s.covers(p));
    assert!(wait_until(&watcher, &mut seen, all_created), "creations not all reported: {:?}", seen.changes);

    let mut seen = Seen::default();
    fs::OpenOptions::new()
        .append(true)
        .open(sb.path("a/b/c/f.txt"))
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(b" two")
        })
        .expect("append");
    fs::remove_file(sb.path("gone.txt")).expect("rm");
    fs::remove_dir(sb.path("a/tmpdir")).expect("rmdir");
    fs::set_permissions(sb.path("top.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let done = |s: &Seen| {
        s.kind("a/b/c/f.txt") == Some(ChangeKind::Modified)
            && s.kind("gone.txt") == Some(ChangeKind::Deleted)
            && s.kind("a/tmpdir") == Some(ChangeKind::Deleted)
            && s.kind("top.txt") == Some(ChangeKind::Attrib)
    };
    assert!(wait_until(&watcher, &mut seen, done), "changes not reported as expected: {:?}", seen.changes);
    assert!(!seen.root_dirty(), "no reason for a rescan here: {:?}", seen.dirty);
    watcher.stop().expect("clean stop");
}

/// A directory prepared outside the root (files and a subdirectory in it) and moved in:
/// everything in it must be reported, or lie in a subtree reported dirty.
pub fn prepared_dir_moved_in(choice: BackendChoice) {
    let sb = Sandbox::new();
    // `dest` exists before the watcher: the move itself must be caught, not a later scan
    // of a new `dest`.
    fs::create_dir(sb.path("dest")).expect("mkdir dest");
    let watcher = start(&sb.root, choice);
    let prepared = sb.outside.join("prepared");
    fs::create_dir_all(prepared.join("sub")).expect("mkdir");
    write(&prepared.join("one"), b"1");
    write(&prepared.join("sub/two"), b"2");
    fs::rename(&prepared, sb.path("dest/incoming")).expect("mv into root");
    let mut seen = Seen::default();
    let paths = ["dest/incoming", "dest/incoming/one", "dest/incoming/sub", "dest/incoming/sub/two"];
    let done = |s: &Seen| paths.iter().all(|p| s.covers(p));
    assert!(wait_until(&watcher, &mut seen, done), "moved-in contents missing: {seen:?}");

    // The moved-in directories are watched from now on (inotify adds their watches).
    let mut seen = Seen::default();
    write(&sb.path("dest/incoming/sub/three"), b"3");
    let done = |s: &Seen| s.covers("dest/incoming/sub/three");
    assert!(wait_until(&watcher, &mut seen, done), "change inside a moved-in dir missed: {seen:?}");
    watcher.stop().expect("clean stop");
}

/// Renames inside the root: a file and a directory (whose later changes must then be
/// reported under the new name). inotify pairs the halves by cookie; fanotify pairs them
/// with FAN_RENAME on Linux >= 5.17 and reports both paths as changed before that.
pub fn rename_inside(choice: BackendChoice) {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("d")).expect("mkdir");
    write(&sb.path("x"), b"x");
    write(&sb.path("d/inner"), b"i");
    let watcher = start(&sb.root, choice);
    fs::rename(sb.path("x"), sb.path("y")).expect("mv x y");
    fs::rename(sb.path("d"), sb.path("e")).expect("mv d e");
    let pairs = choice == BackendChoice::Inotify || kernel_version() >= (5, 17);
    let mut seen = Seen::default();
    let done = |s: &Seen| {
        if pairs {
            s.has_rename("x", "y") && s.has_rename("d", "e")
        } else {
            ["x", "y", "d", "e"].iter().all(|p| s.covers(p))
        }
    };
    assert!(wait_until(&watcher, &mut seen, done), "renames not reported: {seen:?}");
    if pairs {
        assert!(!seen.changes.contains_key(Path::new("y")), "a paired rename sends no data: {seen:?}");
    }

    let mut seen = Seen::default();
    write(&sb.path("e/inner"), b"changed");
    write(&sb.path("e/new"), b"n");
    let done = |s: &Seen| s.covers("e/inner") && s.covers("e/new");
    assert!(wait_until(&watcher, &mut seen, done), "changes under the renamed dir: {seen:?}");
    assert!(
        !seen.mentioned().iter().any(|p| p.starts_with("d")),
        "stale path of the renamed directory reported: {seen:?}"
    );
    watcher.stop().expect("clean stop");
}

/// Moving a file or directory out of the root is a deletion; what happens to it out there
/// afterwards is not reported.
pub fn move_out_is_deletion(choice: BackendChoice) {
    let sb = Sandbox::new();
    fs::create_dir(sb.path("dir")).expect("mkdir");
    write(&sb.path("dir/f"), b"f");
    write(&sb.path("file"), b"file");
    let watcher = start(&sb.root, choice);
    fs::rename(sb.path("file"), sb.outside.join("file")).expect("mv file out");
    fs::rename(sb.path("dir"), sb.outside.join("dir")).expect("mv dir out");
    let mut seen = Seen::default();
    let done = |s: &Seen| s.kind("file") == Some(ChangeKind::Deleted) && s.kind("dir") == Some(ChangeKind::Deleted);
    assert!(wait_until(&watcher, &mut seen, done), "moves out not reported as deletions: {seen:?}");

    let mut seen = Seen::default();
    write(&sb.outside.join("dir/f"), b"changed outside");
    write(&sb.outside.join("dir/g"), b"new outside");
    write(&sb.path("marker"), b"m");
    assert!(wait_until(&watcher, &mut seen, |s| s.covers("marker")), "marker missing: {seen:?}");
    drain_for(&watcher, &mut seen, Duration::from_millis(200));
    // Only the marker: not the files changed out there (nor anything else). "file" and
    // "dir" themselves may still trail in from the moves above.
    let leaked: Vec<_> = seen
        .mentioned()
        .into_iter()
        .filter(|p| p != Path::new("marker") && p != Path::new("file") && p != Path::new("dir"))
        .collect();
    assert!(leaked.is_empty(), "changes outside the root reported: {leaked:?}");
    assert!(!seen.root_dirty(), "{seen:?}");
    watcher.stop().expect("clean stop");
}

/// Activity in a sibling directory (same filesystem: fanotify's mark covers it) is not
/// reported.
pub fn outside_activity_not_reported(choice: BackendChoice) {
    let sb = Sandbox::new();
    let watcher = start(&sb.root, choice);
    for i in 0..50 {
        let dir = sb.outside.join(format!("d{i}"));
        fs::create_dir(&dir).expect("mkdir outside");
        write(&dir.join("f"), b"outside");
        fs::remove_file(dir.join("f")).expect("rm outside");
    }
    write(&sb.path("marker"), b"m");
    let mut seen = Seen::default();
    assert!(wait_until(&watcher, &mut seen, |s| s.covers("marker")), "marker missing: {seen:?}");
    drain_for(&watcher, &mut seen, Duration::from_millis(200));
    assert_eq!(seen.mentioned(), vec![std::path::PathBuf::from("marker")], "{seen:?}");
    watcher.stop().expect("clean stop");
}

/// A change is delivered within the window plus generous slack, and the batch's oldest
/// timestamp is not earlier than the change (it is when the event was read).
pub fn latency_is_bounded(choice: BackendChoice) {
    let sb = Sandbox::new();
    let watcher = start(&sb.root, choice);
    let mut worst = Duration::ZERO;
    for i in 0..5 {
        let before = Instant::now();
        write(&sb.path(&format!("f{i}")), b"data");
        let mut seen = Seen::default();
        assert!(wait_until(&watcher, &mut seen, |s| s.covers(&format!("f{i}"))), "f{i} never reported");
        let latency = before.elapsed();
        worst = worst.max(latency);
        assert!(latency < Duration::from_secs(2), "f{i} took {latency:?}");
        let name = format!("f{i}");
        let batch = seen.batches.iter().find(|b| b.changes.contains_key(Path::new(&name))).expect("its batch");
        assert!(batch.oldest_event_at >= before, "batch claims an event older than the change");
        assert!(batch.oldest_event_at <= Instant::now(), "batch timestamp in the future");
        // Events of this file still in flight (its close, say) must not leak into the next
        // iteration's check.
        drain_for(&watcher, &mut Seen::default(), Duration::from_millis(80));
    }
    eprintln!("{choice:?}: worst change-to-batch latency {worst:?} (default window)");
    watcher.stop().expect("clean stop");
}

/// A consumer that stops reading makes the kernel queue overflow (the watcher stops
/// reading when its channel is full); the next batch then says the whole root is dirty.
/// The kernel queue is made small by lowering `max_queued_events` while the watcher is
/// created (the limit is taken at init), restored right after.
pub fn overflow_makes_root_dirty(choice: BackendChoice, sysctl: &'static str) {
    let sb = Sandbox::new();
    let options = xtsync_watch::WatchOptions {
        backend: choice,
        window: Duration::ZERO,
        batch_paths_max: 1,
        channel_batches_max: 1,
    };
    let watcher = {
        let _exclusive = sysctl_exclusive();
        let _small_queue = SysctlGuard::set(sysctl, "32");
        Watcher::new(&sb.root, options).expect("watcher starts")
    };
    // Nobody reads the channel: one batch fills it, the watcher stops reading, the
    // 32-event kernel queue overflows.
    for i in 0..500 {
        write(&sb.path(&format!("f{i}")), b"x");
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut seen = Seen::default();
    assert!(wait_until(&watcher, &mut seen, Seen::root_dirty), "no overflow reported: {} batches", seen.batches.len());
    // After the overflow the watcher works normally again.
    let mut seen = Seen::default();
    drain_for(&watcher, &mut seen, Duration::from_millis(200));
    let mut seen = Seen::default();
    write(&sb.path("after"), b"a");
    assert!(wait_until(&watcher, &mut seen, |s| s.covers("after")), "watcher dead after overflow: {seen:?}");
    watcher.stop().expect("clean stop");
}
