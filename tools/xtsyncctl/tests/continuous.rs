//! Continuous replication through the real daemons: `xtsyncctl quickstart` without
//! `--once` watches the source (fanotify as root) and replicates every change over a
//! kept session. What a user checks: the target follows the source, bursts of small
//! files do not cost a pass each, and the reported lag returns to zero.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A continuous quickstart; its `--json` status lines arrive on `lines`.
struct Continuous {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    state: PathBuf,
}

impl Continuous {
    fn start(source: &Path, target: &Path, state: &Path) -> Continuous {
        let mut child = xtsyncctl()
            .args(["quickstart", "--json", "--interval-s", "1", "--source"])
            .arg(source)
            .arg("--target")
            .arg(target)
            .arg("--state")
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
    fn status_until(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
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
    fn wait_same_tree(&self, source: &Path, target: &Path) {
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

fn passes(v: &serde_json::Value) -> u64 {
    v["passes_done"].as_u64().unwrap_or(0)
}

fn caught_up(v: &serde_json::Value) -> bool {
    v["lag_ms"] == 0 && v["changes_pending"] == 0 && v.get("waiting_for").is_none()
}

#[test]
fn every_kind_of_change_follows_to_the_target_and_the_lag_returns_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    build_tree(&source);
    let run = Continuous::start(&source, &target, &state);
    let first = run.status_until("the first pass done", |v| passes(v) >= 1);
    assert_same_tree(&source, &target);

    let s = &source;
    std::fs::write(s.join("src/new-file.txt"), b"created while watched").unwrap();
    std::fs::create_dir_all(s.join("fresh/nested")).unwrap();
    std::fs::write(s.join("fresh/nested/inner.bin"), pseudo_random(300_000, 9)).unwrap();
    let mut appended = std::fs::read(s.join("src/file-010.txt")).unwrap();
    appended.extend_from_slice(b"one more line\n");
    std::fs::write(s.join("src/file-010.txt"), appended).unwrap();
    std::fs::remove_file(s.join("src/file-020.txt")).unwrap();
    std::fs::rename(s.join("src/file-030.txt"), s.join("src/file-030-renamed.txt")).unwrap();
    std::fs::rename(s.join("src/deep"), s.join("src/deep-moved")).unwrap();
    std::fs::set_permissions(s.join("src/file-040.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("file-040.txt", s.join("src/new-link")).unwrap();
    rustix::fs::setxattr(s.join("src/file-050.txt").as_path(), "user.tag", b"v2", rustix::fs::XattrFlags::empty())
        .unwrap();
    std::fs::remove_dir_all(s.join("empty")).unwrap();

    run.wait_same_tree(&source, &target);
    let now =
        run.status_until("the lag back to zero after the changes", |v| caught_up(v) && passes(v) > passes(&first));
    assert!(now["files_done"].as_u64().unwrap() > first["files_done"].as_u64().unwrap());
}

#[test]
fn a_burst_of_small_files_is_batched_not_sent_a_pass_each() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    std::fs::create_dir_all(source.join("inbox")).unwrap();
    let run = Continuous::start(&source, &target, &state);
    let before = run.status_until("the first pass done", |v| passes(v) >= 1);
    const FILES: usize = 500;
    for i in 0..FILES {
        std::fs::write(source.join(format!("inbox/msg-{i:04}")), pseudo_random(4096 + i * 7, i as u64)).unwrap();
    }
    run.wait_same_tree(&source, &target);
    let after =
        run.status_until("the lag back to zero after the burst", |v| caught_up(v) && passes(v) > passes(&before));
    let used = passes(&after) - passes(&before);
    assert!(used >= 1, "no pass replicated the burst");
    assert!(used < (FILES / 5) as u64, "{FILES} files took {used} passes: changes are not batched");
}
