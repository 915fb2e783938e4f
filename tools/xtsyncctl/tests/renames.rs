//! Renames and moves at the source are applied at the target as renames: the target's
//! file keeps its inode (it was renamed, not copied), and no chunk crosses the wire.

use xtsync_testkit as common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;

const BIG_BYTES: usize = 8 << 20;

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).ino()
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A tree with large files to rename, copy, move with their directory, and replace.
fn renamable_tree(s: &Path) {
    write(&s.join("a/big.bin"), &pseudo_random(BIG_BYTES, 1));
    write(&s.join("c.bin"), &pseudo_random(BIG_BYTES, 2));
    write(&s.join("d/one.bin"), &pseudo_random(1 << 20, 3));
    write(&s.join("d/sub/two.bin"), &pseudo_random(1 << 20, 4));
    write(&s.join("x.bin"), &pseudo_random(2 << 20, 5));
    write(&s.join("y.bin"), &pseudo_random(2 << 20, 6));
    std::fs::create_dir_all(s.join("b")).unwrap();
}

#[test]
fn renames_moves_and_copy_then_delete_between_full_passes_are_target_renames() {
    let (_dir, source, target, state) = job_dirs();
    renamable_tree(&source);
    pass(&source, &target, &state, &[]);
    let (t, s) = (&target, &source);
    let before =
        [ino(&t.join("a/big.bin")), ino(&t.join("c.bin")), ino(&t.join("d/sub/two.bin")), ino(&t.join("x.bin"))];

    std::fs::rename(s.join("a/big.bin"), s.join("b/big-moved.bin")).unwrap();
    // Copy then delete: a new inode with the same content.
    std::fs::copy(s.join("c.bin"), s.join("b/c-copy.bin")).unwrap();
    std::fs::remove_file(s.join("c.bin")).unwrap();
    std::fs::rename(s.join("d"), s.join("b/d-moved")).unwrap();
    // Onto an existing file.
    std::fs::rename(s.join("x.bin"), s.join("y.bin")).unwrap();

    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    let after = [
        ino(&t.join("b/big-moved.bin")),
        ino(&t.join("b/c-copy.bin")),
        ino(&t.join("b/d-moved/sub/two.bin")),
        ino(&t.join("y.bin")),
    ];
    assert_eq!(before, after, "renamed at the target, not copied: {second}");
    assert_eq!(second["chunks_sent"], 0, "{second}");
    assert_eq!(second["chunks_reused"], 0, "nothing copied locally either: {second}");
    assert_eq!(second["files_renamed"], 5, "{second}");
    assert_eq!(second["files_transferred"], 0, "{second}");
}

#[test]
fn a_tampered_target_copy_is_not_renamed_and_the_content_goes_again() {
    let (_dir, source, target, state) = job_dirs();
    renamable_tree(&source);
    pass(&source, &target, &state, &[]);
    // Same size, another content, at the target's copy of the file to be renamed.
    let tampered = target.join("a/big.bin");
    let mut data = std::fs::read(&tampered).unwrap();
    data[4_000_000..4_000_100].fill(0xAB);
    std::fs::write(&tampered, &data).unwrap();
    std::fs::rename(source.join("a/big.bin"), source.join("b/big-moved.bin")).unwrap();

    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(second["files_renamed"], 0, "{second}");
    assert_eq!(second["files_transferred"], 1, "{second}");
    assert!(!target.join("a/big.bin").exists());
}

#[test]
fn a_continuous_job_applies_watched_renames_and_moves_as_renames() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    renamable_tree(&source);
    let run = Continuous::start(&source, &target, &state);
    run.status_until("the first pass done", |v| passes(v) >= 1);
    run.wait_same_tree(&source, &target);
    let (t, s) = (&target, &source);
    let before =
        [ino(&t.join("a/big.bin")), ino(&t.join("d/one.bin")), ino(&t.join("d/sub/two.bin")), ino(&t.join("x.bin"))];
    let (a_metrics, b_metrics) = (metrics_addr(&state, "worker-a").unwrap(), metrics_addr(&state, "worker-b").unwrap());
    let sent_before = metric(&a_metrics, "xtsync_worker_chunk_bytes_sent_total");

    std::fs::rename(s.join("a/big.bin"), s.join("b/big-moved.bin")).unwrap();
    std::fs::rename(s.join("d"), s.join("b/d-moved")).unwrap();
    std::fs::rename(s.join("x.bin"), s.join("y.bin")).unwrap();
    run.wait_same_tree(&source, &target);
    let after = [
        ino(&t.join("b/big-moved.bin")),
        ino(&t.join("b/d-moved/one.bin")),
        ino(&t.join("b/d-moved/sub/two.bin")),
        ino(&t.join("y.bin")),
    ];
    assert_eq!(before, after, "renamed at the target, not copied\nlogs:\n{}", logs(&state));
    assert_eq!(metric(&a_metrics, "xtsync_worker_chunk_bytes_sent_total"), sent_before);
    assert!(metric(&b_metrics, "xtsync_worker_files_renamed_total") >= 4);
}
