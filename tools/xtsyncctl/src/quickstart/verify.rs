//! Checks that a target tree has the source's entries with the same type, size, mode,
//! mtime and symlink targets (content was verified chunk by chunk at the target; with
//! `content`, it is hashed again here).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, PartialEq)]
struct Facts {
    kind: &'static str,
    size: u64,
    mode: u32,
    mtime_ns: i128,
    link: Option<PathBuf>,
    digest: Option<[u8; 32]>,
}

fn facts(root: &Path, content: bool) -> std::io::Result<BTreeMap<PathBuf, Facts>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let m = std::fs::symlink_metadata(&path)?;
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let kind = if m.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if m.file_type().is_symlink() {
                "symlink"
            } else {
                "file"
            };
            let digest =
                if content && kind == "file" { Some(*blake3::hash(&std::fs::read(&path)?).as_bytes()) } else { None };
            out.insert(
                rel,
                Facts {
                    kind,
                    size: if kind == "dir" { 0 } else { m.size() },
                    mode: if kind == "symlink" { 0 } else { m.mode() & 0o7777 },
                    mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                    link: if kind == "symlink" { Some(std::fs::read_link(&path)?) } else { None },
                    digest,
                },
            );
        }
    }
    Ok(out)
}

/// Returns the differences (empty when the trees match), at most `max` of them.
pub fn compare_trees(source: &Path, target: &Path, content: bool, max: usize) -> std::io::Result<Vec<String>> {
    let a = facts(source, content)?;
    let b = facts(target, content)?;
    let mut diffs = Vec::new();
    for (path, fa) in &a {
        match b.get(path) {
            None => diffs.push(format!("missing at target: {}", path.display())),
            Some(fb) if fa != fb => diffs.push(format!("differs: {} (source {fa:?}, target {fb:?})", path.display())),
            _ => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("extra at target: {}", path.display()));
    }
    diffs.truncate(max);
    Ok(diffs)
}
