//! The inotify backend against real files (see `common/scenarios.rs`), plus what only
//! inotify has: a watch limit.

mod common;

use std::fs;

use common::scenarios;
use common::*;
use xtsync_watch::BackendChoice::Inotify;

#[test]
fn create_modify_delete() {
    scenarios::create_modify_delete(Inotify);
}

#[test]
fn prepared_dir_moved_in() {
    scenarios::prepared_dir_moved_in(Inotify);
}

#[test]
fn rename_inside() {
    scenarios::rename_inside(Inotify);
}

#[test]
fn move_out_is_deletion() {
    scenarios::move_out_is_deletion(Inotify);
}

#[test]
fn outside_activity_not_reported() {
    scenarios::outside_activity_not_reported(Inotify);
}

#[test]
fn latency_is_bounded() {
    scenarios::latency_is_bounded(Inotify);
}

#[test]
fn overflow_makes_root_dirty() {
    scenarios::overflow_makes_root_dirty(Inotify, "/proc/sys/fs/inotify/max_queued_events");
}

/// Watches currently held by all processes (fdinfo lists one `inotify wd:` line per watch).
fn inotify_watches_in_use() -> usize {
    let mut count = 0;
    let Ok(procs) = fs::read_dir("/proc") else { return 0 };
    for proc_entry in procs.flatten() {
        let Ok(fdinfos) = fs::read_dir(proc_entry.path().join("fdinfo")) else { continue };
        for fdinfo in fdinfos.flatten() {
            if let Ok(text) = fs::read_to_string(fdinfo.path()) {
                count += text.lines().filter(|l| l.starts_with("inotify wd:")).count();
            }
        }
    }
    count
}

/// With `fs.inotify.max_user_watches` just above what is in use, a tree needing more
/// watches starts anyway: the directories left unwatched are reported dirty (so the
/// consumer rescans them) instead of silently missing changes.
#[test]
fn watch_limit_marks_unwatched_subtrees_dirty() {
    let sb = Sandbox::new();
    for i in 0..20 {
        fs::create_dir_all(sb.path(&format!("d{i:02}/sub"))).expect("mkdir");
    }
    let watcher = {
        let _exclusive = sysctl_exclusive();
        let limit = inotify_watches_in_use() + 5;
        let _limit = SysctlGuard::set("/proc/sys/fs/inotify/max_user_watches", &limit.to_string());
        xtsync_watch::Watcher::new(&sb.root, options(Inotify)).expect("starts despite the limit")
    };
    let mut seen = Seen::default();
    assert!(wait_until(&watcher, &mut seen, |s| !s.dirty.is_empty()), "no dirty subtree reported");
    drain_for(&watcher, &mut seen, std::time::Duration::from_millis(100));
    // Every one of the 41 directories is either watched or inside a dirty subtree; with
    // only ~5 watches available, most must be dirty.
    assert!(seen.dirty.len() >= 10, "too few dirty subtrees: {:?}", seen.dirty);
    assert!(!seen.root_dirty(), "the root itself was watched: {:?}", seen.dirty);
    watcher.stop().expect("clean stop");
}
