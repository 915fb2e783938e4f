//! The test kit of the integration tests: the real binaries found in cargo's build
//! folder (`bins`), loopback ports that do not collide with other tests (`ports`), a
//! cluster set up the operator's way (`cluster`), several hosts as network
//! namespaces on a bridge (`netns`), trees built and compared the way an
//! operator would (`trees`), and quickstart runs (below).
//!
//! What it does not do: build the binaries. The test command builds every binary the
//! tests start (each package that ships one has integration tests, so `cargo nextest
//! run --workspace` builds it); a missing one is a clear panic naming it.

#![forbid(unsafe_code)]

pub mod bins;
pub mod cluster;
pub mod netns;
pub mod ports;
pub mod trees;

pub use bins::bin;
pub use ports::free_port;
pub use trees::*;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `xtsyncctl`, built beside the test.
pub fn xtsyncctl() -> Command {
    Command::new(bin("xtsyncctl"))
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
