//! The fanotify backend against real files (see `common/scenarios.rs`), plus what only
//! fanotify has. These tests need root (CAP_SYS_ADMIN).

mod common;

use common::scenarios;
use common::*;
use xtsync_watch::BackendChoice::Fanotify;

#[test]
fn create_modify_delete() {
    scenarios::create_modify_delete(Fanotify);
}

#[test]
fn prepared_dir_moved_in() {
    scenarios::prepared_dir_moved_in(Fanotify);
}

#[test]
fn rename_inside() {
    scenarios::rename_inside(Fanotify);
}

#[test]
fn move_out_is_deletion() {
    scenarios::move_out_is_deletion(Fanotify);
}

#[test]
fn outside_activity_not_reported() {
    scenarios::outside_activity_not_reported(Fanotify);
}

#[test]
fn latency_is_bounded() {
    scenarios::latency_is_bounded(Fanotify);
}

#[test]
fn overflow_makes_root_dirty() {
    scenarios::overflow_makes_root_dirty(Fanotify, "/proc/sys/fs/fanotify/max_queued_events");
}

/// As root on this kernel, `Auto` must pick fanotify (and say so).
#[test]
fn auto_picks_fanotify_as_root() {
    let sb = Sandbox::new();
    let watcher = start(&sb.root, xtsync_watch::BackendChoice::Auto);
    assert_eq!(watcher.backend(), xtsync_watch::Backend::Fanotify);
    watcher.stop().expect("clean stop");
}

/// tmpfs gained file handles in Linux 6.6: fanotify works there too (older kernels refuse
/// with a clear error, which Auto turns into an inotify fallback).
#[test]
fn works_on_tmpfs() {
    let dir = tempfile::tempdir_in("/dev/shm").expect("tmpfs dir");
    let result = {
        let _shared = sysctl_shared();
        xtsync_watch::Watcher::new(dir.path(), options(Fanotify))
    };
    match result {
        Ok(watcher) => {
            write(&dir.path().join("f"), b"x");
            let mut seen = Seen::default();
            assert!(wait_until(&watcher, &mut seen, |s| s.covers("f")), "{seen:?}");
        }
        Err(err) => {
            assert!(kernel_version() < (6, 6), "refused on a kernel that supports it: {err}");
            assert!(err.to_string().contains("file handles"), "unclear refusal: {err}");
        }
    }
}
