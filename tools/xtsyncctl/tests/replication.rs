//! End-to-end replication through the real daemons: `xtsyncctl quickstart` starts a
//! coordinator (openraft on RocksDB) and two glommio workers talking mTLS, and the
//! tests check what an operator would: the target is the source, content and metadata.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn xtsyncctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtsyncctl"))
}

/// Runs one quickstart pass and returns its JSON summary.
fn pass(source: &Path, target: &Path, state: &Path, extra: &[&str]) -> serde_json::Value {
    let out = xtsyncctl()
        .args(["quickstart", "--once", "--json", "--source"])
        .arg(source)
        .arg("--target")
        .arg(target)
        .arg("--state")
        .arg(state)
        .args(extra)
        .output()
        .expect("run xtsyncctl");
    assert!(
        out.status.success(),
        "quickstart failed: {}\nstdout: {}\nlogs: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
        logs(state)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn logs(state: &Path) -> String {
    ["coordinator", "worker-a", "worker-b"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(state.join(format!("logs/{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            format!("--- {n}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, PartialEq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    content: Option<[u8; 32]>,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the first path sharing this inode (hard-link groups).
    link_group: Option<PathBuf>,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| n.starts_with(b"user.")) {
        let mut v = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut v[..]) {
            out.insert(String::from_utf8_lossy(name).into_owned(), v[..len].to_vec());
        }
    }
    out
}

/// Everything an operator would compare, per relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "file"
            };
            let link_group =
                (kind == "file" && m.nlink() > 1).then(|| inodes.entry(m.ino()).or_insert(rel.clone()).clone());
            out.insert(
                rel,
                Seen {
                    kind,
                    mode: if kind == "symlink" { 0 } else { m.mode() & 0o7777 },
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    size: if kind == "dir" { 0 } else { m.size() },
                    content: (kind == "file").then(|| *blake3::hash(&std::fs::read(&path).unwrap()).as_bytes()),
                    link: (kind == "symlink").then(|| std::fs::read_link(&path).unwrap()),
                    xattrs: if kind == "symlink" { BTreeMap::new() } else { xattrs(&path) },
                    link_group,
                },
            );
        }
    }
    out
}

fn assert_same_tree(source: &Path, target: &Path) {
    let (a, b) = (snapshot(source), snapshot(target));
    let missing: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let extra: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing at target: {missing:?}, extra at target: {extra:?}");
    for (path, seen) in &a {
        assert_eq!(Some(seen), b.get(path), "{} differs", path.display());
    }
    let (ra, rb) = (std::fs::metadata(source).unwrap(), std::fs::metadata(target).unwrap());
    assert_eq!(
        (ra.mode() & 0o7777, ra.mtime(), ra.mtime_nsec()),
        (rb.mode() & 0o7777, rb.mtime(), rb.mtime_nsec()),
        "root metadata"
    );
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(blake3::keyed_hash(&[seed as u8; 32], &i.to_le_bytes()).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn set_mtime(path: &Path, secs: i64, nanos: i64) {
    let t = rustix::fs::Timespec { tv_sec: secs, tv_nsec: nanos as _ };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps { last_access: t, last_modification: t },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A tree with every kind of entry and metadata the product promises to keep.
fn build_tree(root: &Path) {
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    for i in 0..300 {
        std::fs::write(root.join(format!("src/file-{i:03}.txt")), format!("line {i}\n").repeat(i % 40 + 1)).unwrap();
    }
    std::fs::write(root.join("src/deep/er/big.bin"), pseudo_random(3 << 20, 1)).unwrap();
    std::fs::write(root.join("src/deep/empty-file"), b"").unwrap();
    std::fs::write(root.join("src/name with spaces & ünïcode"), b"odd name").unwrap();
    std::fs::set_permissions(root.join("src/file-007.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("src/file-008.txt"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("deep/er/big.bin", root.join("src/link-to-big")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/absolute/target", root.join("src/dangling")).unwrap();
    std::fs::hard_link(root.join("src/file-001.txt"), root.join("src/hard-a")).unwrap();
    std::fs::hard_link(root.join("src/file-001.txt"), root.join("empty/hard-b")).unwrap();
    rustix::fs::setxattr(
        root.join("src/file-002.txt").as_path(),
        "user.origin",
        b"site-a",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(root.join("src").as_path(), "user.dir-tag", b"x", rustix::fs::XattrFlags::empty()).unwrap();
    // Sparse: 16 MiB with 8 KiB of data at 8 MiB.
    let f = std::fs::File::create(root.join("src/sparse.img")).unwrap();
    f.set_len(16 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &pseudo_random(8192, 2), 8 << 20).unwrap();
    set_mtime(&root.join("src/file-003.txt"), 1_000_000_000, 123_456_789);
    set_mtime(&root.join("src/deep"), 1_500_000_000, 5);
}

#[test]
fn initial_copy_makes_target_identical_then_unchanged_pass_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("source"), dir.path().join("target"), dir.path().join("state"));
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
fn incremental_pass_sends_only_changes_and_applies_renames_and_deletions() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("source"), dir.path().join("target"), dir.path().join("state"));
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

    let second = pass(&source, &target, &state, &[]);
    assert_same_tree(&source, &target);
    // Renamed, moved and deleted files, and the removed empty directory.
    assert_eq!(second["entries_deleted"], 4, "{second}");
    assert!(
        second["chunks_reused"].as_u64().unwrap() >= 30,
        "big.bin's unchanged chunks come from the target: {second}"
    );
    // 3 MiB file edited, yet only the chunks around the edit cross the wire.
    assert!(second["bytes_on_wire"].as_u64().unwrap() < 600_000, "{second}");
}

#[test]
fn readers_of_the_target_never_see_a_torn_file() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("source"), dir.path().join("target"), dir.path().join("state"));
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
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("source"), dir.path().join("target"), dir.path().join("state"));
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
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("source"), dir.path().join("target"), dir.path().join("state"));
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
