//! `transfer.small_batch_sync: per_file` on the target worker: a continuous job's small
//! batches are made durable file by file (`fdatasync` each, `fsync` each directory)
//! instead of with one `syncfs`. What a user checks: the target still follows every
//! kind of change.

use xtsync_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::cluster::{free_port, Cluster};
use common::*;

#[test]
fn a_target_that_syncs_file_by_file_follows_every_kind_of_change() {
    let c = Cluster::new(&["dc1-a", "dc1-b"], &[]);
    let (source, target) = (c.dir.join("a-data"), c.dir.join("b-copy"));
    build_tree(&source);
    let config = c.dir.join("dc1-b.yaml");
    std::fs::write(&config, "transfer:\n  small_batch_sync: per_file\n").unwrap();
    let _coordinator = c.coordinator();
    let _a = c.worker("dc1-a", free_port(), free_port());
    let _b = c.worker_with("dc1-b", free_port(), free_port(), &["--config", config.to_str().unwrap()]);
    c.wait_alive(&["dc1-a", "dc1-b"]);
    assert!(c.log("dc1-b").contains("transfer.small_batch_sync: per_file"), "{}", c.log("dc1-b"));
    let (src, dst) = (source.to_str().unwrap(), target.to_str().unwrap());
    c.admin_ok(
        &["job", "create", "--name", "per-file", "--source-worker", "dc1-a", "--source", src]
            .into_iter()
            .chain(["--target-worker", "dc1-b", "--target", dst, "--continuous", "--delete"])
            .collect::<Vec<_>>(),
    );
    c.admin_ok(&["job", "run", "1"]);
    c.wait_same_tree(&source, &target, Duration::from_secs(60));

    // Small batches now: each kind of change, a few files at a time.
    std::fs::write(source.join("src/new-file.txt"), b"created while watched").unwrap();
    std::fs::create_dir_all(source.join("fresh/nested")).unwrap();
    std::fs::write(source.join("fresh/nested/inner.bin"), pseudo_random(200_000, 3)).unwrap();
    std::fs::write(source.join("src/file-010.txt"), b"rewritten").unwrap();
    std::fs::remove_file(source.join("src/file-020.txt")).unwrap();
    std::fs::set_permissions(source.join("empty"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("file-030.txt", source.join("src/new-link")).unwrap();
    std::fs::rename(source.join("src/file-040.txt"), source.join("fresh/file-040-moved.txt")).unwrap();
    c.wait_same_tree(&source, &target, Duration::from_secs(60));
}
