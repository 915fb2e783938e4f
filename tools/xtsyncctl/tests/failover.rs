//! Three coordinators, each in its own host (a network namespace on a bridge), and the
//! failures an operator meets: the leader killed (`kill -9`) and the leader cut off
//! (`ip link set … down`). What the operator checks: jobs keep running through the
//! survivors, `xtsyncctl` and the workers find the new leader by themselves, a leader
//! cut off stops taking writes, and a member that comes back catches up.

use xtsync_testkit as common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Daemon};
use common::netns::Lan;
use common::*;

/// Each coordinator's own view, as `xtsyncctl --json status` lists them (`Null` for one
/// that does not answer), in node order.
fn views(c: &Cluster) -> Vec<serde_json::Value> {
    let out = c.admin(&["--json", "status"]);
    let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_default();
    c.coordinator_addrs
        .iter()
        .map(|addr| {
            let members = v["coordinators"].as_array().cloned().unwrap_or_default();
            members.into_iter().find(|m| m["addr"] == *addr).map(|m| m["view"].clone()).unwrap_or_default()
        })
        .collect()
}

/// The leader's node id, once every coordinator in `among` (1-based) names the same one.
fn agreed_leader(c: &Cluster, among: &[usize]) -> Option<u64> {
    let views = views(c);
    let seen: Vec<Option<u64>> = among.iter().map(|&n| views[n - 1]["leader_id"].as_u64()).collect();
    seen[0].filter(|_| seen.iter().all(|s| *s == seen[0]))
}

/// Three coordinators (node 1 forms the group) and two workers given all three.
fn three(lan: &Lan) -> (Cluster, Vec<Option<Daemon>>, Daemon, Daemon) {
    let c = Cluster::on_lan(lan, &["src", "dst"]);
    let members: Vec<Option<Daemon>> = (1..=3).map(|n| Some(c.member(lan, n, n == 1))).collect();
    c.wait_until(Duration::from_secs(60), "all three coordinators agree on a leader", || {
        agreed_leader(&c, &[1, 2, 3]).is_some()
    });
    let src = c.worker("src", free_port(), free_port());
    let dst = c.worker("dst", free_port(), free_port());
    c.wait_alive(&["src", "dst"]);
    (c, members, src, dst)
}

/// `n` files of 4 KiB under `dir`, their content drawn from `seed`.
fn write_files(dir: &std::path::Path, n: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i}.bin")), pseudo_random(4096, seed * 1000 + i as u64)).unwrap();
    }
}

fn create_job(c: &Cluster, source: &std::path::Path, target: &std::path::Path) {
    let (s, t) = (source.to_str().unwrap(), target.to_str().unwrap());
    let job = ["job", "create", "--name", "dr", "--source-worker", "src", "--source", s];
    c.admin_ok(&[&job[..], &["--target-worker", "dst", "--target", t]].concat());
}

#[test]
fn a_killed_leader_is_replaced_and_jobs_go_on_through_the_survivors() {
    let lan = Lan::new("ha", 3);
    let (c, mut members, _src, _dst) = three(&lan);
    let (source, target) = (c.dir.join("source"), c.dir.join("target"));
    write_files(&source, 20, 1);
    create_job(&c, &source, &target);
    c.admin_ok(&["job", "run", "1"]);
    assert_same_tree(&source, &target);

    let old = agreed_leader(&c, &[1, 2, 3]).expect("a leader");
    members[old as usize - 1].take().unwrap().kill();
    let killed_at = Instant::now();
    write_files(&source.join("after"), 10, 2);
    // The same command, given all three addresses: it finds the new leader itself.
    c.admin_ok(&["job", "run", "1"]);
    println!("failover: job run answered and finished {:?} after the leader was killed", killed_at.elapsed());
    assert_same_tree(&source, &target);
    let survivors: Vec<usize> = (1..=3).filter(|&n| n != old as usize).collect();
    let new = agreed_leader(&c, &survivors).expect("the survivors agree on a leader");
    assert_ne!(new, old, "the killed coordinator cannot still lead");
    // The workers' heartbeats moved to the new leader.
    c.wait_alive(&["src", "dst"]);

    // The killed member comes back with its disk and catches up.
    members[old as usize - 1] = Some(c.member(&lan, old as usize, false));
    c.wait_until(Duration::from_secs(30), "the restarted coordinator catches up", || {
        let views = views(&c);
        let (back, leader) = (&views[old as usize - 1], &views[new as usize - 1]);
        back["leader_id"] == new
            && back["role"] == "follower"
            && back["catalog_versions"] == leader["catalog_versions"]
            && back["jobs"] == 1
    });
    // `xtsyncctl status` shows the three, one leading.
    let roles: Vec<serde_json::Value> = views(&c).iter().map(|v| v["role"].clone()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "{roles:?}");
}

#[test]
fn a_leader_cut_off_stops_taking_writes_and_the_others_elect_a_new_one() {
    let lan = Lan::new("hb", 3);
    let (c, _members, _src, _dst) = three(&lan);
    let (source, target) = (c.dir.join("source"), c.dir.join("target"));
    write_files(&source, 10, 3);
    create_job(&c, &source, &target);

    let old = agreed_leader(&c, &[1, 2, 3]).expect("a leader") as usize;
    lan.set_link(old - 1, false);
    let cut_at = Instant::now();
    c.admin_ok(&["job", "run", "1"]);
    println!("failover: job run answered and finished {:?} after the leader was cut off", cut_at.elapsed());
    assert_same_tree(&source, &target);

    // Asked from inside its host, the old leader refuses writes instead of hanging.
    let f = |file: &str| c.pki.join(file).display().to_string();
    let asked_at = Instant::now();
    let out = lan
        .command(old - 1, &bin("xtsyncctl"))
        .args(["--coordinator", &c.coordinator_addrs[old - 1]])
        .args(["--cert", &f("admin.crt"), "--key", &f("admin.key"), "--ca", &f("ca.crt")])
        .args(["job", "run", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a coordinator cut off from its quorum took a write");
    assert!(stderr.contains("no coordinator leads"), "{stderr}");
    println!("the cut-off coordinator refused within {:?}", asked_at.elapsed());

    // Back on the network it follows the new leader and holds the same jobs and runs.
    lan.set_link(old - 1, true);
    c.wait_until(Duration::from_secs(30), "the old leader follows the new one", || {
        let others: Vec<usize> = (1..=3).filter(|&n| n != old).collect();
        let new = agreed_leader(&c, &others);
        new.is_some() && new != Some(old as u64) && agreed_leader(&c, &[1, 2, 3]) == new
    });
}

/// The catalog's count of file versions, as the coordinator reports it (`None` while
/// it does not answer).
fn catalog_versions(c: &Cluster) -> Option<u64> {
    c.status()["catalog_versions"].as_u64()
}

#[test]
fn catalog_versions_made_while_the_coordinator_is_down_survive_a_worker_kill() {
    let c = Cluster::new(&["src", "dst"], &[]);
    let mut coordinator = Some(c.coordinator());
    let (src_ports, dst_ports) = ((free_port(), free_port()), (free_port(), free_port()));
    let mut src = Some(c.worker("src", src_ports.0, src_ports.1));
    let _dst = c.worker("dst", dst_ports.0, dst_ports.1);
    c.wait_alive(&["src", "dst"]);
    let (source, target) = (c.dir.join("source"), c.dir.join("target"));
    write_files(&source, 10, 4);
    let (s, t) = (source.to_str().unwrap(), target.to_str().unwrap());
    let job = ["job", "create", "--name", "live", "--source-worker", "src", "--source", s, "--continuous"];
    c.admin_ok(&[&job[..], &["--target-worker", "dst", "--target", t]].concat());
    c.admin_ok(&["job", "run", "1"]);
    c.wait_same_tree(&source, &target, Duration::from_secs(60));
    c.wait_until(Duration::from_secs(30), "the first ten files in the catalog", || catalog_versions(&c) >= Some(10));
    let before = catalog_versions(&c).unwrap();

    // The coordinator goes away; replication goes on, and the source keeps the
    // versions of what it replicates in its outbox.
    coordinator.take().unwrap().kill();
    let src_metrics = format!("127.0.0.1:{}", src_ports.1);
    let kept_before = metric(&src_metrics, "xtsync_worker_catalog_versions_kept_total");
    write_files(&source.join("during"), 25, 5);
    c.wait_same_tree(&source, &target, Duration::from_secs(60));
    c.wait_until(Duration::from_secs(30), "the 25 new versions kept in the source's outbox", || {
        metric(&src_metrics, "xtsync_worker_catalog_versions_kept_total") >= kept_before + 25
    });

    // The source worker is killed before any coordinator is back; both come back.
    src.take().unwrap().kill();
    let _coordinator = c.coordinator();
    let _src = c.worker("src", src_ports.0, src_ports.1);
    c.wait_until(Duration::from_secs(60), "the versions made during the outage in the catalog", || {
        catalog_versions(&c) >= Some(before + 25)
    });
    // Exactly once: nothing counted twice (a version of the new directory may add one).
    let after = catalog_versions(&c).unwrap();
    assert!(after <= before + 26, "the catalog counts {after} versions for {} files", before + 25);
}
