//! Trees built and compared the way an operator would: content, mode, owner, times,
//! xattrs, symlinks and hard-link groups.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
pub struct Seen {
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

pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
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
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut inodes: HashMap<u64, PathBuf> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        // Entries that vanish while the walk runs (a target being written) are skipped:
        // callers compare again until the trees settle.
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<PathBuf> = listing.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for path in entries {
            let Ok(m) = std::fs::symlink_metadata(&path) else { continue };
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
                    content: (kind == "file")
                        .then(|| *blake3::hash(&std::fs::read(&path).unwrap_or_default()).as_bytes()),
                    link: (kind == "symlink").then(|| std::fs::read_link(&path).unwrap_or_default()),
                    xattrs: if kind == "symlink" { BTreeMap::new() } else { xattrs(&path) },
                    link_group,
                },
            );
        }
    }
    out
}

pub fn assert_same_tree(source: &Path, target: &Path) {
    let differences = tree_differences(source, target);
    assert!(differences.is_empty(), "the target differs from the source:\n{}", differences.join("\n"));
}

/// What differs between two trees (content, metadata, links; the roots' own metadata).
pub fn tree_differences(source: &Path, target: &Path) -> Vec<String> {
    let (a, b) = (snapshot(source), snapshot(target));
    let mut out = Vec::new();
    for k in a.keys().filter(|k| !b.contains_key(*k)) {
        out.push(format!("missing at target: {}", k.display()));
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("extra at target: {}", k.display()));
    }
    for (path, seen) in &a {
        if let Some(other) = b.get(path).filter(|o| *o != seen) {
            out.push(format!("{} differs: source {seen:?}, target {other:?}", path.display()));
        }
    }
    let ra = std::fs::metadata(source).unwrap();
    // Not made yet (the first pass has not reached it): a difference to wait out.
    let Ok(rb) = std::fs::metadata(target) else {
        out.push(format!("target root {} missing", target.display()));
        return out;
    };
    let (ma, mb) =
        ((ra.mode() & 0o7777, ra.mtime(), ra.mtime_nsec()), (rb.mode() & 0o7777, rb.mtime(), rb.mtime_nsec()));
    if ma != mb {
        out.push(format!("root metadata: source {ma:?}, target {mb:?}"));
    }
    out
}

pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(blake3::keyed_hash(&[seed as u8; 32], &i.to_le_bytes()).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

pub fn set_mtime(path: &Path, secs: i64, nanos: i64) {
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
pub fn build_tree(root: &Path) {
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
