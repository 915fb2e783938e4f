//! Continuous replication through the real daemons: `xtsyncctl quickstart` without
//! `--once` watches the source (fanotify as root) and replicates every change over a
//! kept session. What a user checks: the target follows the source, bursts of small
//! files do not cost a pass each, and the reported lag returns to zero.

use xtsync_testkit as common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::*;

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

/// A small tmpfs mounted for the test, unmounted however it ends.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "xtsync-test"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {} (the suite runs as root)", at.display());
        SmallDisk(at.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_target_disk_pauses_the_run_with_a_clear_error_and_it_resumes_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    std::fs::create_dir_all(source.join("in")).unwrap();
    std::fs::write(source.join("in/first.txt"), b"fits").unwrap();
    let disk = SmallDisk::mount(&target, "3m");
    let run = Continuous::start(&source, &target, &state);
    run.status_until("the first pass done", |v| passes(v) >= 1);

    // 6 MiB of incompressible files into 3 MiB.
    for i in 0..6 {
        std::fs::write(source.join(format!("in/big-{i}.bin")), pseudo_random(1 << 20, 50 + i)).unwrap();
    }
    let paused = run.status_until("the run waiting on the full disk", |v| {
        v["waiting_for"].as_str().is_some_and(|w| w.contains("No space left on device"))
    });
    assert!(paused["changes_pending"].as_u64().unwrap() > 0, "{paused}");
    // What is pending is the files that did not fit, whole: 1 MiB each.
    let stuck = run.status_until("the files that did not fit pending, with their bytes", |v| {
        let files = v["files_pending"].as_u64().unwrap_or(0);
        v["waiting_for"].is_string() && files > 0 && v["bytes_pending"].as_u64() == Some(files << 20)
    });
    assert!(stuck["files_pending"].as_u64().unwrap() <= 6, "{stuck}");
    // Nothing at the target is damaged: every file there is a whole source version.
    for entry in std::fs::read_dir(target.join("in")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with(".xtsync-tmp") {
            continue;
        }
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(source.join("in").join(&name)).unwrap(),
            "{name} at the target is not the source's version"
        );
    }

    disk.resize("64m");
    run.wait_same_tree(&source, &target);
    run.status_until("the lag back to zero once space was freed", caught_up);
}

/// `xtsyncctl` as an operator runs it against the quickstart's coordinator, with the
/// quickstart's admin certificate.
fn admin_command(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    let log = std::fs::read_to_string(state.join("logs/coordinator.log")).unwrap();
    let line = log.lines().rev().find(|l| l.contains("coordinator listening")).expect("the coordinator's address");
    let at = line.find("127.0.0.1:").unwrap();
    let addr: String = line[at..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect();
    let pki = state.join("pki");
    xtsyncctl()
        .args(["--coordinator", &addr, "--pki-dir"])
        .arg(&pki)
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg("--ca")
        .arg(pki.join("ca.crt"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn reconcile_repairs_what_change_capture_cannot_see_and_says_what_differed() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    std::fs::create_dir_all(source.join("d")).unwrap();
    for i in 0..20 {
        std::fs::write(source.join(format!("d/f{i}")), format!("content {i}")).unwrap();
    }
    let run = Continuous::start(&source, &target, &state);
    run.status_until("the first pass done", |v| passes(v) >= 1);
    assert_same_tree(&source, &target);

    // Someone changes the target behind the replicator's back: the source sees nothing.
    std::fs::remove_file(target.join("d/f3")).unwrap();
    std::fs::write(target.join("d/f4"), b"tampered").unwrap();
    std::fs::write(target.join("d/stray"), b"not at the source").unwrap();

    let out = admin_command(&state, &["--json", "reconcile", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "reconcile failed: {}\n{}", String::from_utf8_lossy(&out.stderr), logs(&state));
    let done: serde_json::Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').rfind(|l| !l.is_empty()).unwrap()).unwrap();
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["reconcile"], true, "{done}");
    assert_eq!(done["summary"]["files_transferred"], 2, "f3 and f4 differed: {done}");
    assert_eq!(done["summary"]["entries_deleted"], 1, "the stray file: {done}");
    let mut differed: Vec<String> = serde_json::from_value(done["summary"]["differed"].clone()).unwrap();
    differed.sort();
    assert_eq!(differed, ["d/f3", "d/f4"], "{done}");
    assert_eq!(done["summary"]["removed"], serde_json::json!(["d/stray"]), "{done}");
    // Both had been acknowledged by the target: their chunks crossed again, and say so.
    assert_eq!(done["summary"]["chunks_resent_acknowledged"], 2, "{done}");
    assert_same_tree(&source, &target);

    // One continuous run per job: a second would replicate into the same target.
    let out = admin_command(&state, &["job", "run", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("still active"), "{}", String::from_utf8_lossy(&out.stderr));

    let out = admin_command(&state, &["reconcile", "--target", "/nonexistent/target"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job replicates to /nonexistent/target"));
}

#[test]
fn hard_links_made_broken_and_written_through_while_watched_follow_to_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    build_tree(&source);
    let run = Continuous::start(&source, &target, &state);
    run.status_until("the first pass done", |v| passes(v) >= 1);
    assert_same_tree(&source, &target);

    let s = &source;
    // A new name for a file that has one, in another directory.
    std::fs::create_dir_all(s.join("links")).unwrap();
    std::fs::hard_link(s.join("src/file-060.txt"), s.join("links/file-060-again")).unwrap();
    run.wait_same_tree(&source, &target);
    // A name leaves its group: src/hard-a becomes a file of its own, other content.
    std::fs::remove_file(s.join("src/hard-a")).unwrap();
    std::fs::write(s.join("src/hard-a"), b"on its own now").unwrap();
    run.wait_same_tree(&source, &target);
    // Written through one name: every name of the inode shows it.
    std::fs::OpenOptions::new().append(true).open(s.join("empty/hard-b")).unwrap().write_all(b"appended").unwrap();
    run.wait_same_tree(&source, &target);
    // The first name of a group goes; the others stay one inode.
    std::fs::remove_file(s.join("src/file-060.txt")).unwrap();
    std::fs::hard_link(s.join("links/file-060-again"), s.join("links/third")).unwrap();
    run.wait_same_tree(&source, &target);
}

#[test]
fn deleting_a_continuous_job_stops_its_replication() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("before.txt"), b"replicated").unwrap();
    let run = Continuous::start(&source, &target, &state);
    run.status_until("the first pass done", |v| passes(v) >= 1);
    std::fs::write(source.join("while-the-job-exists.txt"), b"replicated too").unwrap();
    run.wait_same_tree(&source, &target);

    let out = admin_command(&state, &["job", "delete", "1"]);
    assert!(out.status.success(), "job delete: {}", String::from_utf8_lossy(&out.stderr));
    // The deletion wakes the source worker's heartbeat, whose reply stops the run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !logs(&state).contains("run stopped: its job was deleted") {
        assert!(std::time::Instant::now() < deadline, "the run was not stopped:\n{}", logs(&state));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::write(source.join("after-the-delete.txt"), b"stays at the source").unwrap();
    // Forty batch windows: a live run would have replicated it long before.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(!target.join("after-the-delete.txt").exists(), "a deleted job still replicates:\n{}", logs(&state));
    assert!(target.join("while-the-job-exists.txt").exists());
}
