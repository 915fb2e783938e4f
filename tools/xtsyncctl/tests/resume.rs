//! Resumable transfers: a large file whose source worker is killed mid-way resumes
//! from the target's last checkpoint instead of starting again. What a user checks:
//! the checkpointed part is not sent again (the target reuses it), and the file
//! arrives whole.

use xtsync_testkit as common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_large_file_resumes_from_its_checkpoint_after_the_source_worker_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let (source, target, state) = (dir.path().join("src"), dir.path().join("dst"), dir.path().join("state"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("small.txt"), b"first").unwrap();
    let run = Continuous::start(&source, &target, &state);
    run.status_until("the first pass done", |v| passes(v) >= 1);
    let target_metrics = metrics_addr(&state, "worker-b").expect("worker-b's metrics address in its log");

    const SIZE: usize = 512 << 20;
    std::fs::write(source.join("large.bin"), pseudo_random(SIZE, 77)).unwrap();
    // Kill the source once two checkpoints (128 MiB) are durable at the target.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&target_metrics, "xtsync_worker_checkpoints_total") < 2 {
        assert!(Instant::now() < deadline, "no checkpoints at the target\nlogs:\n{}", logs(&state));
        std::thread::sleep(Duration::from_millis(20));
    }
    let checkpointed = metric(&target_metrics, "xtsync_worker_checkpoint_bytes_total");
    let reused_before = metric(&target_metrics, "xtsync_worker_chunks_reused_total");
    let pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", run.child.id()))
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ").contains("--name worker-a ")
        })
        .expect("worker-a is a child of the quickstart");
    // SAFETY: plain kill(2) of a child process of the quickstart.
    unsafe { libc::kill(pid, libc::SIGKILL) };

    run.wait_same_tree(&source, &target);
    let reused = metric(&target_metrics, "xtsync_worker_chunks_reused_total") - reused_before;
    // Chunks are at most 256 KiB (default max): the checkpointed bytes came back as at
    // least this many reused chunks instead of crossing the wire again.
    assert!(checkpointed >= 128 << 20, "checkpointed {checkpointed} bytes");
    assert!(
        reused >= checkpointed / (256 << 10),
        "{checkpointed} bytes were checkpointed but only {reused} chunks were reused: the file started again\nlogs:\n{}",
        logs(&state)
    );
    // The temporaries it resumed from are gone.
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".xtsync-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left at the target: {leftovers:?}");
}
