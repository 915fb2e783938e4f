//! `xtsync-agent` with the real binaries, set up the operator's way (`xtsyncctl cert`,
//! daemons with their flags, `xtsyncctl job create`): push mode replicates every kind
//! of change and catches up by itself after the worker (and the coordinator) were
//! away; pull mode keeps an identical local copy that follows the source and is
//! reused on a restart; an agent the job does not list gets nothing.

use xtsync_testkit as common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::cluster::{free_port, Cluster};
use common::*;

const SYNC_WITHIN: Duration = Duration::from_secs(90);

/// Changes of every kind in `root` (built by `build_tree`), numbered by `round`.
fn change_everything(root: &Path, round: u32) {
    std::fs::write(root.join(format!("new-{round}.txt")), format!("created in round {round}\n")).unwrap();
    std::fs::create_dir_all(root.join(format!("new-dir-{round}/sub"))).unwrap();
    std::fs::write(root.join(format!("new-dir-{round}/sub/data.bin")), pseudo_random(300_000, round as u64)).unwrap();
    std::fs::write(root.join("src/file-010.txt"), format!("rewritten in round {round}\n")).unwrap();
    std::fs::set_permissions(root.join("src/file-011.txt"), std::fs::Permissions::from_mode(0o640 + round % 2))
        .unwrap();
    set_mtime(&root.join("src/file-012.txt"), 1_200_000_000 + round as i64, 42);
    let _ = std::fs::remove_file(root.join(format!("src/file-{:03}.txt", 100 + round)));
    let _ = std::fs::remove_dir_all(root.join(format!("new-dir-{}", round.wrapping_sub(1))));
}

fn job_create(c: &Cluster, name: &str, source: (&str, &Path), target: (&str, &Path), extra: &[&str]) {
    let (src, dst) = (source.1.to_str().unwrap(), target.1.to_str().unwrap());
    let mut args = vec!["job", "create", "--name", name, "--source-worker", source.0, "--source", src];
    args.extend(["--target-worker", target.0, "--target", dst]);
    args.extend(extra);
    c.admin_ok(&args);
}

/// A cluster with worker `dc1-a` and agent `edge-1` pushing `edge-src` into
/// `dc1-a:/backup` (job 1, created once the agent registered, started by the agent).
/// Fields drop in order: the daemons stop before the cluster's directory goes.
struct Push {
    coordinator: Option<common::cluster::Daemon>,
    worker: Option<common::cluster::Daemon>,
    _agent: common::cluster::Daemon,
    source: std::path::PathBuf,
    target: std::path::PathBuf,
    ports: (u16, u16),
    c: Cluster,
}

fn push_cluster() -> Push {
    push_cluster_with(&[])
}

fn push_cluster_with(job_options: &[&str]) -> Push {
    let c = Cluster::new(&["dc1-a"], &["edge-1"]);
    let (source, target) = (c.dir.join("edge-src"), c.dir.join("dc1-backup"));
    build_tree(&source);
    std::fs::create_dir_all(&target).unwrap();
    let coordinator = c.coordinator();
    let ports = (free_port(), free_port());
    let worker = c.worker("dc1-a", ports.0, ports.1);
    // The agent first: a job's source must be registered before the job exists.
    let agent = c.agent("edge-1", &["push", "--job", "1"]);
    c.wait_alive(&["dc1-a", "edge-1"]);
    let mut options = vec!["--continuous", "--delete"];
    options.extend(job_options);
    job_create(&c, "edge-1-backup", ("edge-1", &source), ("dc1-a", &target), &options);
    Push { c, source, target, ports, coordinator: Some(coordinator), worker: Some(worker), _agent: agent }
}

#[test]
fn push_replicates_creates_changes_and_deletes_with_their_metadata() {
    let p = push_cluster();
    // Nobody ran the job: the agent started its continuous run.
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);
    let status = p.c.status();
    assert_eq!(status["jobs"][0]["run"]["state"], "running", "{status}");
    for round in 1..=3 {
        change_everything(&p.source, round);
        p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);
    }
    // Renames and a whole subtree removed.
    std::fs::rename(p.source.join("src/file-020.txt"), p.source.join("renamed.txt")).unwrap();
    std::fs::remove_dir_all(p.source.join("src/deep")).unwrap();
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);
    // The worker let the agent write only after checking its job with the coordinator.
    let worker_log = p.c.log("dc1-a");
    assert!(
        worker_log.contains("data-plane session admitted") && worker_log.contains("edge-1 (role agent"),
        "{worker_log}"
    );
}

#[test]
fn push_catches_up_by_itself_after_the_worker_and_the_coordinator_were_away() {
    let mut p = push_cluster();
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);

    // The worker dies with a change on its way; more changes while it is away.
    change_everything(&p.source, 1);
    p.worker.take().unwrap().kill();
    change_everything(&p.source, 2);
    std::fs::write(p.source.join("while-away.bin"), pseudo_random(2 << 20, 9)).unwrap();
    // The run says what it waits for and how much, and the agent keeps running.
    p.c.wait_until(Duration::from_secs(60), "the run says what it waits for and the 2 MiB pending", || {
        let progress = &p.c.status()["jobs"][0]["run"]["progress"];
        progress["waiting_for"].is_string()
            && progress["files_pending"].as_u64() >= Some(1)
            && progress["bytes_pending"].as_u64() >= Some(2 << 20)
    });
    assert!(p.c.log("edge-1").contains("pass failed; retrying"), "{}", p.c.logs());
    p.worker = Some(p.c.worker("dc1-a", p.ports.0, p.ports.1));
    // Within the agent's longest retry delay (30 s) and a pass.
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);

    // The coordinator is away: the data plane does not need it; the catalog waits.
    p.coordinator.take().unwrap().kill();
    change_everything(&p.source, 3);
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);
    p.coordinator = Some(p.c.coordinator());
    p.c.wait_alive(&["dc1-a", "edge-1"]);
    change_everything(&p.source, 4);
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);
    let status = p.c.status();
    assert_eq!(status["jobs"][0]["run"]["state"], "running", "{status}");
    p.c.wait_until(Duration::from_secs(30), "nothing pending once caught up", || {
        let progress = &p.c.status()["jobs"][0]["run"]["progress"];
        progress["files_pending"] == 0 && progress["bytes_pending"] == 0 && progress["lag_ms"] == 0
    });
}

#[test]
fn push_resumes_a_large_file_from_the_workers_checkpoints_after_the_worker_restarts() {
    // 20 MB/s: the worker is killed once a part of the file is durable (checkpointed).
    let mut p = push_cluster_with(&["--compression", "never", "--rate-limit", "20MB/s"]);
    p.c.wait_same_tree(&p.source, &p.target, SYNC_WITHIN);
    let size_bytes = 160usize << 20;
    std::fs::write(p.source.join("large.bin"), pseudo_random(size_bytes, 21)).unwrap();
    let metrics = format!("127.0.0.1:{}", p.ports.1);
    p.c.wait_until(Duration::from_secs(60), "a checkpoint of large.bin at the worker", || {
        metric(&metrics, "xtsync_worker_checkpoints_total") >= 1
    });
    p.worker.take().unwrap().kill();
    p.worker = Some(p.c.worker("dc1-a", p.ports.0, p.ports.1));
    p.c.wait_same_tree(&p.source, &p.target, Duration::from_secs(180));
    // The restarted worker took the checkpointed part from its own copy.
    let reused = metric(&metrics, "xtsync_worker_chunks_reused_total");
    assert!(reused >= (64 << 20) / (256 << 10), "only {reused} chunks reused after the restart\n{}", p.c.logs());
}

#[test]
fn pull_keeps_an_identical_local_copy_that_follows_the_source_and_is_reused_on_restart() {
    let c = Cluster::new(&["dc1-a"], &["edge-1"]);
    let (source, backup, copy) = (c.dir.join("dc1-data"), c.dir.join("dc1-backup"), c.dir.join("edge-copy"));
    build_tree(&source);
    let coordinator = c.coordinator();
    let _worker = c.worker("dc1-a", free_port(), free_port());
    c.wait_alive(&["dc1-a"]);
    job_create(&c, "data", ("dc1-a", &source), ("dc1-a", &backup), &["--agent", "edge-1"]);

    // The agent starts while the coordinator is away: it registers once the coordinator
    // is back, and only then makes its pull job (a pull job asked for before the agent
    // registered was refused, "not registered", and the agent gave up).
    coordinator.stop();
    let data_listen = format!("127.0.0.1:{}", free_port());
    let pull = ["pull", "--job", "1", "--dir", copy.to_str().unwrap(), "--data-listen", &data_listen];
    let agent = c.agent("edge-1", &pull);
    std::thread::sleep(Duration::from_secs(3));
    let _coordinator = c.coordinator();
    c.wait_same_tree(&source, &copy, SYNC_WITHIN);
    let agent_log = c.log("edge-1");
    assert!(
        agent_log.contains("data-plane session admitted") && agent_log.contains("dc1-a (role worker"),
        "{agent_log}"
    );
    change_everything(&source, 1);
    c.wait_same_tree(&source, &copy, SYNC_WITHIN);

    // A second start reuses the agent's pull job and goes on from the copy it has.
    agent.stop();
    change_everything(&source, 2);
    let _agent = c.agent("edge-1", &pull);
    c.wait_same_tree(&source, &copy, SYNC_WITHIN);
    assert!(c.log("edge-1").contains("reusing this agent's pull job"), "{}", c.logs());
    let jobs: serde_json::Value = serde_json::from_slice(&c.admin_ok(&["--json", "job", "list"])).unwrap();
    let names: Vec<&str> = jobs.as_array().unwrap().iter().filter_map(|j| j["spec"]["name"].as_str()).collect();
    assert_eq!(names, ["data", "edge-1.pull.1"], "{jobs}");
    change_everything(&source, 3);
    c.wait_same_tree(&source, &copy, SYNC_WITHIN);
}

#[test]
fn an_agent_the_job_does_not_list_is_refused_and_gets_nothing() {
    let c = Cluster::new(&["dc1-a"], &["edge-1", "edge-2"]);
    let (source, backup) = (c.dir.join("dc1-data"), c.dir.join("dc1-backup"));
    build_tree(&source);
    let _coordinator = c.coordinator();
    let _worker = c.worker("dc1-a", free_port(), free_port());
    c.wait_alive(&["dc1-a"]);
    job_create(&c, "data", ("dc1-a", &source), ("dc1-a", &backup), &["--agent", "edge-1"]);

    let copy = c.dir.join("edge-2-copy");
    let data_listen = format!("127.0.0.1:{}", free_port());
    let mut agent =
        c.agent("edge-2", &["pull", "--job", "1", "--dir", copy.to_str().unwrap(), "--data-listen", &data_listen]);
    let status = agent.exited_within(Duration::from_secs(60));
    assert!(status.is_some_and(|s| !s.success()), "edge-2 should stop with an error: {status:?}\n{}", c.logs());
    let log = c.log("edge-2");
    assert!(log.contains("job 1: does not exist, or is not given to agent \"edge-2\""), "{log}");
    assert_eq!(std::fs::read_dir(&copy).map(|d| d.count()).unwrap_or(0), 0, "nothing was copied");
    let jobs: serde_json::Value = serde_json::from_slice(&c.admin_ok(&["--json", "job", "list"])).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "no job was created: {jobs}");

    // Listed, but pushing a job whose source is a worker: refused with the reason.
    let mut agent = c.agent("edge-1", &["push", "--job", "1"]);
    let status = agent.exited_within(Duration::from_secs(60));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}\n{}", c.logs());
    assert!(c.log("edge-1").contains("push mode runs a job whose source is this agent"), "{}", c.logs());
    // A bad certificate is a clear error at start.
    let mut wrong = std::process::Command::new(common::cluster::bin("xtsync-agent"));
    wrong.args(["push", "--job", "1", "--coordinator", &c.coordinator_addr]).args(c.tls("dc1-a"));
    let out = wrong.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("role worker") && stderr.contains("--role agent"), "{stderr}");
}

#[test]
fn a_registration_that_points_at_another_workers_port_gets_no_data() {
    let c = Cluster::new(&["dc1-a", "dc1-b", "dc1-c"], &[]);
    let (source, target) = (c.dir.join("a-data"), c.dir.join("c-backup"));
    build_tree(&source);
    let _coordinator = c.coordinator();
    let _a = c.worker("dc1-a", free_port(), free_port());
    let b_port = free_port();
    let _b = c.worker("dc1-b", b_port, free_port());
    // dc1-c says dc1-b's data port is its own.
    let _c = c.worker_with("dc1-c", free_port(), free_port(), &["--advertise", &format!("127.0.0.1:{b_port}")]);
    c.wait_alive(&["dc1-a", "dc1-b", "dc1-c"]);
    job_create(&c, "to-c", ("dc1-a", &source), ("dc1-c", &target), &[]);
    // The source meets dc1-b's certificate where dc1-c should be: it sends nothing.
    let out = c.admin(&["job", "run", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the peer is \"dc1-b\", not the job's target \"dc1-c\""), "{stderr}");
    assert!(!target.exists(), "dc1-b wrote the job's tree");
}
