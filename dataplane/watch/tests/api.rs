//! The facade's contract independent of the backend: typed errors for bad roots and
//! options, clean stop.

mod common;

use std::time::Duration;

use common::*;
use xtsync_watch::{BackendChoice, WatchError, WatchOptions, Watcher};

#[test]
fn missing_root_is_a_typed_error_naming_the_path() {
    let sb = Sandbox::new();
    let missing = sb.path("nope");
    let err = Watcher::new(&missing, WatchOptions::default()).expect_err("must fail");
    assert!(matches!(err, WatchError::RootMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn file_as_root_is_refused() {
    let sb = Sandbox::new();
    write(&sb.path("file"), b"x");
    let err = Watcher::new(sb.path("file"), WatchOptions::default()).expect_err("must fail");
    assert!(matches!(err, WatchError::RootNotDirectory { .. }), "{err:?}");
}

#[test]
fn out_of_range_options_are_refused_by_name() {
    let sb = Sandbox::new();
    let cases = [
        (WatchOptions { window: Duration::from_secs(3600), ..WatchOptions::default() }, "window_ms"),
        (WatchOptions { batch_paths_max: 0, ..WatchOptions::default() }, "batch_paths_max"),
        (WatchOptions { channel_batches_max: 0, ..WatchOptions::default() }, "channel_batches_max"),
    ];
    for (options, name) in cases {
        let err = Watcher::new(&sb.root, options).expect_err("must fail");
        assert!(matches!(err, WatchError::InvalidOption { name: n, .. } if n == name), "{err:?}");
    }
}

#[test]
fn stop_ends_the_thread_and_disconnects_the_channel() {
    for choice in [BackendChoice::Inotify, BackendChoice::Fanotify] {
        let sb = Sandbox::new();
        let watcher = start(&sb.root, choice);
        let started = std::time::Instant::now();
        watcher.stop().expect("clean stop");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(2), "stop took {elapsed:?}");
        // Dropping without stop() must not hang either.
        let watcher = start(&sb.root, choice);
        drop(watcher);
    }
}

#[test]
fn flush_hands_over_every_change_made_before_it_without_waiting_for_the_window() {
    for choice in [BackendChoice::Inotify, BackendChoice::Fanotify] {
        let sb = Sandbox::new();
        // A window no test waits for: only the flush can deliver these changes.
        let watcher = {
            let _shared = sysctl_shared();
            Watcher::new(&sb.root, WatchOptions { window: Duration::from_secs(60), ..options(choice) })
                .expect("watcher starts")
        };
        std::fs::write(sb.path("new"), b"x").unwrap();
        std::fs::create_dir(sb.path("d")).unwrap();
        std::fs::write(sb.path("d/inner"), b"y").unwrap();
        let mut seen = Seen::default();
        assert!(watcher.flush(Duration::from_secs(10), |b| seen.add(b)).expect("flushed"), "{choice:?}");
        for path in ["new", "d", "d/inner"] {
            assert!(seen.covers(path), "{choice:?}: {path} not handed over: {seen:?}");
        }
        // Nothing was held back: with no change since, a second flush hands over nothing.
        let mut again = Seen::default();
        assert!(watcher.flush(Duration::from_secs(10), |b| again.add(b)).expect("flushed"));
        assert!(again.changes.is_empty() && again.dirty.is_empty(), "{choice:?}: {again:?}");
        watcher.stop().expect("clean stop");
    }
}
