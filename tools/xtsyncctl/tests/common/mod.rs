//! Helpers shared by the end-to-end tests: running the quickstart, and comparing trees
//! the way an operator would (content, mode, owner, times, xattrs, links).
#![allow(dead_code)]

pub mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn xtsyncctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtsyncctl"))
}

/// A fresh directory with the `source`, `target` and `state` paths of a quickstart job
/// (only the directory itself exists); the paths live as long as the returned guard.
pub fn job_dirs() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("source"), dir.path().join("target"), dir.path().join("state"));
    (dir, source, target, state)
}

/// Runs one quickstart pass and returns its JSON summary.
pub fn pass(source: &Path, target: &Path, state: &Path, extra: &[&str]) -> serde_json::Value {
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

/// `xtsyncctl quickstart --serve`: the daemons stay up (and keep what they learn between
/// passes) until the guard is dropped; passes run the operator's way (`job run`).
pub struct Served {
    child: Child,
    info: serde_json::Value,
    state: PathBuf,
}

impl Served {
    pub fn start(source: &Path, target: &Path, state: &Path) -> Served {
        let mut child = xtsyncctl()
            .args(["quickstart", "--serve", "--json", "--source"])
            .arg(source)
            .arg("--target")
            .arg(target)
            .arg("--state")
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Served { child, info, state: state.to_path_buf() }
    }

    /// `xtsyncctl job run`: the run's JSON (`summary` holds the pass summary).
    pub fn run_pass(&self) -> serde_json::Value {
        let arg = |name: &str| self.info[name].as_str().unwrap().to_string();
        let out = xtsyncctl()
            .args(["--coordinator", &arg("coordinator"), "--cert", &arg("cert"), "--key", &arg("key")])
            .args(["--ca", &arg("ca"), "--json", "job", "run", &self.info["job_id"].to_string()])
            .output()
            .unwrap();
        assert!(out.status.success(), "job run: {}\nlogs: {}", String::from_utf8_lossy(&out.stderr), logs(&self.state));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Closes stdin and waits for the daemons to stop.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "quickstart --serve did not stop when stdin closed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn logs(state: &Path) -> String {
    let quickstart = std::fs::read_to_string(state.join("quickstart.stderr")).unwrap_or_default();
    let daemons = ["coordinator", "worker-a", "worker-b"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(state.join(format!("logs/{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            format!("--- {n}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!("--- xtsyncctl quickstart (stderr)\n{quickstart}\n{daemons}")
}

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

/// A continuous quickstart; its `--json` status lines arrive on `lines`.
pub struct Continuous {
    pub child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    state: PathBuf,
}

impl Continuous {
    pub fn start(source: &Path, target: &Path, state: &Path) -> Continuous {
        let mut child = xtsyncctl()
            .args(["quickstart", "--json", "--interval-s", "1", "--source"])
            .arg(source)
            .arg("--target")
            .arg(target)
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr({
                std::fs::create_dir_all(state).unwrap();
                std::fs::File::create(state.join("quickstart.stderr")).unwrap()
            })
            .spawn()
            .expect("start xtsyncctl");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Continuous { child, lines, state: state.to_path_buf() }
    }

    /// The next status line satisfying `ok`, or a failure naming what was last seen.
    pub fn status_until(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) if ok(&v) => return v,
                Ok(v) => last = Some(v),
                Err(_) => break,
            }
        }
        panic!("no status line with {what} (last: {last:?})\nlogs:\n{}", logs(&self.state));
    }

    /// Waits until the target is the source again.
    pub fn wait_same_tree(&self, source: &Path, target: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let differences = tree_differences(source, target);
            if differences.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the target did not follow the source:\n{}\nlogs:\n{}",
                differences.join("\n"),
                logs(&self.state)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Continuous {
    fn drop(&mut self) {
        // Ctrl-C, as a user would; the daemons die with it (PR_SET_PDEATHSIG).
        let _ = std::process::Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn passes(v: &serde_json::Value) -> u64 {
    v["passes_done"].as_u64().unwrap_or(0)
}

pub fn caught_up(v: &serde_json::Value) -> bool {
    v["lag_ms"] == 0
        && v["changes_pending"] == 0
        && v["files_pending"] == 0
        && v["bytes_pending"] == 0
        && v.get("waiting_for").is_none()
}

/// The `/metrics` address of a quickstart worker, from its log.
pub fn metrics_addr(state: &Path, worker: &str) -> Option<String> {
    let log = std::fs::read_to_string(state.join(format!("logs/{worker}.log"))).ok()?;
    let line = log.lines().rev().find(|l| l.contains("worker started"))?;
    let at = line.find("http_listen")?;
    let rest = &line[at..];
    let start = rest.find("127.0.0.1")?;
    let addr: String = rest[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    Some(addr)
}

/// One unlabelled sample of a daemon's `/metrics` (0 when unreachable or absent).
pub fn metric(addr: &str, name: &str) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return 0 };
    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
