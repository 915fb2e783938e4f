//! End-to-end replication through the real daemons: `xtsyncctl quickstart` starts a
//! coordinator (openraft on RocksDB) and two glommio workers talking mTLS, and the
//! tests check what an operator would: the target is the source, content and metadata.

use xtsync_testkit as common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use common::*;

#[test]
fn initial_copy_makes_target_identical_then_unchanged_pass_sends_nothing() {
    let (_dir, source, target, state) = job_dirs();
    build_tree(&source);
    let first = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(first["verified"], true);
    // 304 regular files plus 2 more names of a hard-linked one.
    assert_eq!(first["files"], 306, "{first}");
    assert!(first["chunks_sent"].as_u64().unwrap() > 0);
    // Holes stay holes: 16 MiB apparent, far less allocated.
    let sparse = std::fs::metadata(target.join("src/sparse.img")).unwrap();
    assert_eq!(sparse.len(), 16 << 20);
    assert!(sparse.blocks() * 512 < 2 << 20, "sparse file allocated {} bytes", sparse.blocks() * 512);

    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(second["files_transferred"], 0, "{second}");
    assert_eq!(second["chunks_sent"], 0, "{second}");
    assert_eq!(second["bytes_read"], 0, "unchanged files must not be read again: {second}");
}

#[test]
fn hard_linked_files_are_not_read_again_whichever_of_their_names_the_walk_meets_first() {
    let (_dir, source, target, state) = job_dirs();
    // 200 files with a name in each of four directories: the walk's threads meet the
    // names of one file in an order that changes from pass to pass.
    for d in ["a", "b", "c", "d"] {
        std::fs::create_dir_all(source.join(d)).unwrap();
    }
    for i in 0..200 {
        let first = source.join(format!("a/f{i:03}"));
        std::fs::write(&first, format!("file {i} ").repeat(100 + i)).unwrap();
        for d in ["b", "c", "d"] {
            std::fs::hard_link(&first, source.join(format!("{d}/f{i:03}"))).unwrap();
        }
    }
    let first = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(first["files"], 800, "{first}");
    for _ in 0..3 {
        let again = pass(&source, &target, &state, &[]);
        assert_same_tree(&source, &target);
        assert_eq!(again["files_transferred"], 0, "{again}");
        assert_eq!(again["chunks_sent"], 0, "{again}");
        assert_eq!(again["bytes_read"], 0, "unchanged files must not be read again: {again}");
    }
}

#[test]
fn a_pass_sends_only_what_changed_since_the_target_acknowledged_it_until_the_target_tree_is_replaced() {
    let (dir, source, target, state) = job_dirs();
    build_tree(&source);
    // Entries changed within a second of a pass are not recorded (coarse timestamps).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let first = pass(&source, &target, &state, &[]);
    let files = first["files"].as_u64().unwrap();
    assert_eq!(first["files_unchanged"], 0, "{first}");

    // Nothing changed: the target is asked only about the three names of the hard-linked
    // file (they always go: the target links them to the first one sent) and their
    // directories. No chunk crosses the wire, no other file is read.
    let idle = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(idle["files"].as_u64(), Some(files), "{idle}");
    assert!(idle["files_unchanged"].as_u64().unwrap() >= files - 3, "{idle}");
    assert_eq!((idle["dirs"].clone(), idle["chunks_sent"].as_u64()), (first["dirs"].clone(), Some(0)), "{idle}");
    assert!(idle["bytes_read"].as_u64().unwrap() < 100, "{idle}");
    let (idle_bytes, first_bytes) = (idle["bytes_on_wire"].as_u64().unwrap(), first["bytes_on_wire"].as_u64().unwrap());
    assert!(idle_bytes < 8192, "{idle}");

    // An edit in place: that file (and the linked one), with its directory's times kept.
    std::fs::write(source.join("src/file-100.txt"), b"edited in place").unwrap();
    let after_edit = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert!(after_edit["files_transferred"].as_u64().unwrap() >= 1, "{after_edit}");
    assert!(after_edit["files_unchanged"].as_u64().unwrap() >= files - 4, "{after_edit}");
    assert!(after_edit["bytes_read"].as_u64().unwrap() < 100, "{after_edit}");

    // The target tree is replaced (restored elsewhere, a new filesystem): its id is new,
    // so the pass sends every entry again.
    std::fs::rename(&target, dir.path().join("old-target")).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("stray"), b"not from the source").unwrap();
    let replaced = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(replaced["files_unchanged"], 0, "{replaced}");
    assert_eq!(replaced["entries_deleted"], 1, "{replaced}");
    assert!(replaced["bytes_on_wire"].as_u64().unwrap() > first_bytes / 2, "{replaced} vs {first}");
}

#[test]
fn serve_keeps_the_daemons_up_for_job_run_until_stdin_closes() {
    let (_dir, source, target, state) = job_dirs();
    build_tree(&source);
    let served = Served::start(&source, &target, &state);
    assert!(!target.join("src").exists(), "--serve runs no pass by itself");
    let first = served.run_pass();
    assert_eq!(first["summary"]["files"], 306, "{first}");
    assert_eq!(first["summary"]["changes_only"], false, "{first}");
    assert_same_tree(&source, &target);
    let second = served.run_pass();
    assert_same_tree(&source, &target);
    assert_eq!(second["summary"]["files_transferred"], 0, "{second}");
    served.stop();
}

#[test]
fn a_served_pass_walks_only_what_changed_since_the_last_pass_began() {
    let (dir, source, target, state) = job_dirs();
    build_tree(&source);
    let served = Served::start(&source, &target, &state);
    let first = served.run_pass();
    assert_eq!(first["summary"]["changes_only"], false, "the first pass walks the tree: {first}");
    assert_same_tree(&source, &target);

    // An edit, a new file in a new directory, a removal, a rename and a mode change.
    std::fs::write(source.join("src/file-010.txt"), b"edited between passes").unwrap();
    std::fs::create_dir_all(source.join("new/deeper")).unwrap();
    std::fs::write(source.join("new/deeper/added.txt"), b"added between passes").unwrap();
    std::fs::remove_file(source.join("src/file-020.txt")).unwrap();
    std::fs::rename(source.join("src/file-030.txt"), source.join("new/moved.txt")).unwrap();
    std::fs::set_permissions(source.join("src/file-040.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let second = served.run_pass();
    assert_same_tree(&source, &target);
    let summary = &second["summary"];
    assert_eq!(summary["changes_only"], true, "{second}");
    assert!(summary["files"].as_u64().unwrap() < 10, "only the changed entries are looked at: {second}");
    assert_eq!(summary["entries_deleted"], 1, "{second}");

    // Nothing changed: nothing is looked at, read or sent.
    let idle = served.run_pass();
    assert_same_tree(&source, &target);
    assert_eq!((idle["summary"]["changes_only"].clone(), idle["summary"]["files"].as_u64()), (true.into(), Some(0)));
    assert_eq!(idle["summary"]["bytes_read"], 0, "{idle}");

    // Another tree renamed to the source's path: the journal followed the old one.
    let other = dir.path().join("other-source");
    build_tree(&other);
    std::fs::write(other.join("src/file-050.txt"), b"only in the other tree").unwrap();
    std::fs::rename(&source, dir.path().join("old-source")).unwrap();
    std::fs::rename(&other, &source).unwrap();
    let swapped = served.run_pass();
    assert_eq!(swapped["summary"]["changes_only"], false, "{swapped}");
    assert_same_tree(&source, &target);

    // The target tree is replaced: it acknowledged nothing, so the whole tree is walked.
    std::fs::rename(&target, dir.path().join("old-target")).unwrap();
    std::fs::create_dir(&target).unwrap();
    let replaced = served.run_pass();
    assert_eq!(replaced["summary"]["changes_only"], false, "{replaced}");
    assert_same_tree(&source, &target);
    served.stop();
}

#[test]
fn a_small_edit_in_a_small_file_goes_as_a_delta_against_the_targets_copy() {
    let (_dir, source, target, state) = job_dirs();
    std::fs::create_dir_all(&source).unwrap();
    // 512 KiB that no compressor shrinks: only a delta can avoid sending a whole chunk
    // (16 to 256 KiB) for the edit.
    let mut data = pseudo_random(512 << 10, 7);
    std::fs::write(source.join("notes.bin"), &data).unwrap();
    pass(&source, &target, &state, &[]);

    data.splice(300_000..300_000, b"one line inserted\n".iter().copied());
    data[100_000] ^= 0xff;
    std::fs::write(source.join("notes.bin"), &data).unwrap();
    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(second["files_transferred"], 1, "{second}");
    assert!(second["chunks_sent"].as_u64().unwrap() >= 1, "{second}");
    // Two edits: a few blocks of the target's copy (~1 KiB each) and the inserted line,
    // plus the manifest and the signature, instead of 32 KiB or more.
    assert!(second["bytes_on_wire"].as_u64().unwrap() < 16_000, "{second}");
}

#[test]
fn edits_inside_a_large_file_go_as_deltas_against_the_stretch_the_target_holds_there() {
    let (_dir, source, target, state) = job_dirs();
    std::fs::create_dir_all(&source).unwrap();
    // 24 MiB that no compressor shrinks, like a disk image's data: an edit costs a whole
    // chunk (16 to 256 KiB) unless the stretch around it at the target serves as a basis.
    let mut data = pseudo_random(24 << 20, 11);
    std::fs::write(source.join("disk.img"), &data).unwrap();
    pass(&source, &target, &state, &[]);

    // Three small edits far apart, one of which shifts everything after it.
    for at in [3_000_000usize, 11_000_000, 20_000_000] {
        data[at..at + 100].iter_mut().for_each(|b| *b ^= 0x5a);
    }
    data.splice(15_000_000..15_000_000, b"a record inserted here\n".iter().copied());
    std::fs::write(source.join("disk.img"), &data).unwrap();
    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert!(second["chunks_sent"].as_u64().unwrap() >= 4, "{second}");
    assert!(second["chunks_reused"].as_u64().unwrap() >= 100, "{second}");
    // Four edits of ~100 bytes: a few blocks each, the manifest (~15 KB) and the
    // signatures — 21 KB when measured, against 411 KB as whole chunks.
    let wire = second["bytes_on_wire"].as_u64().unwrap();
    assert!(wire < 64_000, "{second}");
}

#[test]
fn a_large_file_that_goes_back_to_an_earlier_version_replicates_every_time() {
    let (_dir, source, target, state) = job_dirs();
    std::fs::create_dir_all(&source).unwrap();
    // Two versions that share most chunks; each also has chunks of its own. After the
    // second pass the target's index still names the first version's own chunks at
    // their old places in a file that was replaced since: those copies must be seen as
    // gone (and sent), not fail the file.
    let first = pseudo_random(12 << 20, 21);
    let mut second = first.clone();
    for k in 0..12 {
        let at = k * (1 << 20) + 300_000;
        second[at..at + 200_000].copy_from_slice(&pseudo_random(200_000, 100 + k as u64));
    }
    for (i, version) in [&first, &second, &first, &second].into_iter().enumerate() {
        std::fs::write(source.join("vm.img"), version).unwrap();
        let summary = pass(&source, &target, &state, &[]);
        assert_same_tree(&source, &target);
        assert_eq!(summary["files_transferred"], 1, "pass {i}: {summary}");
    }
}

#[test]
fn a_target_copy_edited_in_place_is_never_copied_into_another_file_unchecked() {
    let (_dir, source, target, state) = job_dirs();
    std::fs::create_dir_all(&source).unwrap();
    let data = pseudo_random(4 << 20, 31);
    std::fs::write(source.join("a.bin"), &data).unwrap();
    pass(&source, &target, &state, &[]);

    // Someone edits the target's copy in place (same inode) and puts its mtime back;
    // its ctime moves, which nobody can undo.
    let copy = target.join("a.bin");
    let mtime = std::fs::metadata(&copy).unwrap().modified().unwrap();
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.seek(std::io::SeekFrom::Start(2_000_000)).unwrap();
        f.write_all(&[0u8; 4096]).unwrap();
        f.set_modified(mtime).unwrap();
    }
    // A new source file with a.bin's content: the target's index says every chunk of it
    // is in its a.bin. The edited one must be found out (by its hash), not copied.
    std::fs::write(source.join("b.bin"), &data).unwrap();
    pass(&source, &target, &state, &[]);
    assert!(std::fs::read(target.join("b.bin")).unwrap() == data, "b.bin took the edited bytes of a.bin");
}

#[test]
fn incremental_pass_sends_only_changes_and_applies_renames_and_deletions() {
    let (_dir, source, target, state) = job_dirs();
    build_tree(&source);
    pass(&source, &target, &state, &[]);

    // A one-line edit in the middle of a 3 MiB file, a rename, a move, a deletion, a new file.
    let big = source.join("src/deep/er/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    data.splice(1_500_000..1_500_000, b"inserted line\n".iter().copied());
    std::fs::write(&big, &data).unwrap();
    std::fs::rename(source.join("src/file-010.txt"), source.join("src/renamed-010.txt")).unwrap();
    std::fs::rename(source.join("src/file-011.txt"), source.join("empty/moved-011.txt")).unwrap();
    std::fs::remove_file(source.join("src/file-012.txt")).unwrap();
    std::fs::remove_dir(source.join("empty/nested-empty")).unwrap();
    std::fs::write(source.join("src/new.txt"), b"new file").unwrap();
    std::fs::set_permissions(source.join("src/file-013.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    // Metadata only: a file gains an attribute, a directory loses its own.
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::setxattr(source.join("src/file-014.txt").as_path(), "user.added", b"later", flags).unwrap();
    rustix::fs::removexattr(source.join("src").as_path(), "user.dir-tag").unwrap();

    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    // The deleted file and the removed empty directory; the renamed and the moved file
    // were renamed at the target (their old names were not deleted: they moved).
    assert_eq!(second["entries_deleted"], 2, "{second}");
    assert_eq!(second["files_renamed"], 2, "{second}");
    assert!(
        second["chunks_reused"].as_u64().unwrap() >= 30,
        "big.bin's unchanged chunks come from the target: {second}"
    );
    // 3 MiB file edited, yet only the chunks around the edit cross the wire.
    assert!(second["bytes_on_wire"].as_u64().unwrap() < 600_000, "{second}");
}

#[test]
fn readers_of_the_target_never_see_a_torn_file() {
    let (_dir, source, target, state) = job_dirs();
    std::fs::create_dir_all(&source).unwrap();
    let names: Vec<String> = (0..4).map(|i| format!("f{i}.bin")).collect();
    let v1: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(12 << 20, 10 + i)).collect();
    let v2: Vec<Vec<u8>> = (0..4).map(|i| pseudo_random(12 << 20, 20 + i)).collect();
    for (n, d) in names.iter().zip(&v1) {
        std::fs::write(source.join(n), d).unwrap();
    }
    pass(&source, &target, &state, &[]);
    for (n, d) in names.iter().zip(&v2) {
        std::fs::write(source.join(n), d).unwrap();
    }
    let allowed: Vec<[u8; 32]> = v1.iter().chain(&v2).map(|d| *blake3::hash(d).as_bytes()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observer = {
        let (stop, target, names) = (stop.clone(), target.clone(), names.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for n in &names {
                    let data = std::fs::read(target.join(n)).expect("the file exists throughout");
                    let h = *blake3::hash(&data).as_bytes();
                    assert!(
                        allowed.contains(&h),
                        "{n}: a reader saw content that is neither version ({} bytes)",
                        data.len()
                    );
                    reads += 1;
                }
            }
            reads
        })
    };
    pass(&source, &target, &state, &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = observer.join().expect("observer saw only whole versions");
    assert!(reads > 0);
    assert_same_tree(&source, &target);
}

#[test]
fn compression_policies_give_identical_targets() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    build_tree(&source);
    let mut wire = Vec::new();
    for policy in ["never", "always", "auto"] {
        let target = dir.path().join(format!("target-{policy}"));
        let out = pass(&source, &target, &dir.path().join(format!("state-{policy}")), &["--compression", policy]);
        assert_same_tree(&source, &target);
        wire.push(out["bytes_on_wire"].as_u64().unwrap());
    }
    // The text files compress: `always` and `auto` send fewer bytes than `never`.
    assert!(wire[1] < wire[0] && wire[2] < wire[0], "bytes on wire never/always/auto: {wire:?}");
}

#[test]
fn a_missing_source_fails_the_pass_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = xtsyncctl()
        .args(["quickstart", "--once", "--source"])
        .arg(dir.path().join("does-not-exist"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does-not-exist"), "{err}");
}

#[test]
fn many_small_files_flow_within_the_sessions_bounds() {
    // More files than a target session may hold open at once (4096): the source must
    // pace itself instead of being cut off.
    let (_dir, source, target, state) = job_dirs();
    for d in 0..10 {
        let sub = source.join(format!("d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..600 {
            std::fs::write(sub.join(format!("f{f}")), format!("{d}/{f}\n")).unwrap();
        }
    }
    let out = pass(&source, &target, &state, &["--cores", "1"]);
    assert_eq!(out["files_transferred"], 6000, "{out}");
    assert_same_tree(&source, &target);
}

#[test]
fn a_source_tree_swapped_for_an_identical_copy_rewrites_nothing() {
    // A restored or recopied source (new inodes and ctimes, same content and mtimes)
    // misses every source record: files are read again, but the target, which holds
    // them exactly, must neither receive nor rewrite them.
    let (dir, source, target, state) = job_dirs();
    build_tree(&source);
    pass(&source, &target, &state, &[]);
    let inode_before = std::fs::metadata(target.join("src/file-100.txt")).unwrap().ino();
    let copy = dir.path().join("copy");
    let status = Command::new("cp").arg("-a").arg(&source).arg(&copy).status().unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&source).unwrap();
    std::fs::rename(&copy, &source).unwrap();
    let out = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    assert_eq!(out["chunks_sent"], 0, "{out}");
    assert_eq!(std::fs::metadata(target.join("src/file-100.txt")).unwrap().ino(), inode_before, "rewritten");
}
