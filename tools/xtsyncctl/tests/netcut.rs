//! Network faults between sites, on network namespaces: the target worker runs in its
//! own namespace, joined to the host by a veth pair, and the test cuts that link
//! (`ip link set … down`) in the middle of a large transfer of a continuous job. What
//! an operator checks: while the link is down the job says what it waits for; when
//! the link returns the transfer completes without starting the file again.
//!
//! The cluster is set up the way an operator would: `xtsyncctl cert`, the daemons with
//! their flags, `xtsyncctl job create --continuous`, `job run`, `status --json`.

use xtsync_testkit as common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Daemon;
use common::*;

/// A namespace and its veth link to the host, removed however the test ends.
struct Link {
    ns: String,
    host_if: String,
    host_ip: String,
    ns_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Link {
    fn new() -> Link {
        // A subnet and names of our own (tests run in parallel).
        let n = std::process::id() % 200 + 20;
        let link = Link {
            ns: format!("xtsync-cut-{n}"),
            host_if: format!("xtc{n}h"),
            host_ip: format!("10.231.{n}.1"),
            ns_ip: format!("10.231.{n}.2"),
        };
        let _ = Command::new("ip").args(["netns", "del", &link.ns]).status();
        ip(&["netns", "add", &link.ns]);
        let ns_if = format!("xtc{n}n");
        ip(&["link", "add", &link.host_if, "type", "veth", "peer", "name", &ns_if]);
        ip(&["link", "set", &ns_if, "netns", &link.ns]);
        ip(&["addr", "add", &format!("{}/24", link.host_ip), "dev", &link.host_if]);
        ip(&["link", "set", &link.host_if, "up"]);
        ip(&["-n", &link.ns, "addr", "add", &format!("{}/24", link.ns_ip), "dev", &ns_if]);
        ip(&["-n", &link.ns, "link", "set", &ns_if, "up"]);
        ip(&["-n", &link.ns, "link", "set", "lo", "up"]);
        link
    }

    fn set(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }]);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn start(mut cmd: Command, log: &Path) -> Daemon {
    let out = std::fs::File::create(log).unwrap();
    Daemon(cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap())
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_link_cut_mid_transfer_is_waited_out_and_the_file_is_not_sent_again_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    // XTSYNC_TEST_KEEP=1 keeps the directory (logs, trees) for a look after a failure.
    let dir_path = dir.path().to_path_buf();
    // (The guard holds the directory until the end of the test, or gives it up.)
    let _guard = match std::env::var_os("XTSYNC_TEST_KEEP") {
        Some(_) => {
            let _ = dir.keep();
            None
        }
        None => Some(dir),
    };
    let dir = &dir_path;
    let (source, target, pki, logs_dir) = (dir.join("src"), dir.join("dst"), dir.join("pki"), dir.join("logs"));
    for d in [&source, &target, &logs_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let link = Link::new();

    let ctl = |args: &[&str]| {
        let out = xtsyncctl().args(args).output().unwrap();
        assert!(out.status.success(), "xtsyncctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let pki_s = pki.to_str().unwrap();
    ctl(&["cert", "init-ca", "--name", "netcut", "--dir", pki_s]);
    for (role, name, san) in [
        ("coordinator", "coordinator", link.host_ip.as_str()),
        ("worker", "site-a", link.host_ip.as_str()),
        ("worker", "site-b", link.ns_ip.as_str()),
        ("admin", "admin", link.host_ip.as_str()),
    ] {
        ctl(&["cert", "issue", "--role", role, "--name", name, "--san", san, "--dir", pki_s]);
    }
    let tls = |name: &str| -> Vec<String> {
        let f = |ext: &str| pki.join(format!("{name}.{ext}")).display().to_string();
        vec![
            "--tls-cert".into(),
            f("crt"),
            "--tls-key".into(),
            f("key"),
            "--tls-ca".into(),
            pki.join("ca.crt").display().to_string(),
            "--tls-crl".into(),
            pki.join("ca.crl").display().to_string(),
        ]
    };
    // The coordinator and the source site on the host; the target site behind the link.
    let coordinator_addr = format!("{}:{}", link.host_ip, port());
    let mut c = Command::new(bin("xtsync-coordinator"));
    c.args(["--http-listen", &coordinator_addr, "--init", "--metadata-path"]).arg(dir.join("coordinator"));
    c.args(tls("coordinator"));
    let _coordinator = start(c, &logs_dir.join("coordinator.log"));
    let worker = |name: &str, listen_ip: &str, netns: Option<&str>, http: &str| {
        let mut w = match netns {
            Some(ns) => {
                let mut w = Command::new("ip");
                w.args(["netns", "exec", ns]).arg(bin("xtsync-worker"));
                w
            }
            None => Command::new(bin("xtsync-worker")),
        };
        w.args(["--name", name, "--site", name, "--cores", "1"])
            .args(["--data-listen", &format!("{listen_ip}:{}", port())])
            .args(["--http-listen", http])
            .args(["--coordinator", &coordinator_addr, "--metadata-path"])
            .arg(dir.join(name))
            .args(tls(name));
        start(w, &logs_dir.join(format!("{name}.log")))
    };
    let a_metrics = format!("{}:{}", link.host_ip, port());
    let _a = worker("site-a", &link.host_ip, None, &a_metrics);
    let b_metrics = format!("{}:{}", link.ns_ip, port());
    let _b = worker("site-b", &link.ns_ip, Some(&link.ns), &b_metrics);

    let admin = |args: &[&str]| -> Vec<u8> {
        let mut all = vec!["--coordinator", &coordinator_addr, "--pki-dir", pki_s];
        let (cert, key, ca) = (pki.join("admin.crt"), pki.join("admin.key"), pki.join("ca.crt"));
        let files = [cert.to_str().unwrap(), key.to_str().unwrap(), ca.to_str().unwrap()];
        all.extend(["--cert", files[0], "--key", files[1], "--ca", files[2]]);
        all.extend(args);
        ctl(&all)
    };
    let status = || -> serde_json::Value {
        let out = admin(&["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["jobs"][0]["run"].clone()
    };
    let daemon_logs = || {
        ["coordinator", "site-a", "site-b"]
            .iter()
            .map(|n| {
                let t = std::fs::read_to_string(logs_dir.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = t.lines().filter(|l| !l.contains("openraft")).rev().take(40).collect();
                format!("--- {n}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Both sites registered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = xtsyncctl()
            .args(["--coordinator", &coordinator_addr, "--pki-dir", pki_s, "--json", "status"])
            .args(["--cert", pki.join("admin.crt").to_str().unwrap(), "--key", pki.join("admin.key").to_str().unwrap()])
            .args(["--ca", pki.join("ca.crt").to_str().unwrap()])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["workers"].as_array().is_some_and(|w| w.iter().filter(|w| w["alive"] == true).count() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the sites did not register\n{}", daemon_logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A large file, replicated continuously (at 40 MB/s, so the cut lands mid-transfer);
    // cut the link once part of it is durable at the target.
    let size_mib: usize = std::env::var("XTSYNC_NETCUT_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let cut_s: u64 = std::env::var("XTSYNC_NETCUT_CUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(35);
    let content = pseudo_random(size_mib << 20, 11);
    std::fs::write(source.join("large.bin"), &content).unwrap();
    let (src, dst) = (source.to_str().unwrap(), target.to_str().unwrap());
    admin(&[
        "job",
        "create",
        "--name",
        "dr",
        "--source-worker",
        "site-a",
        "--source",
        src,
        "--target-worker",
        "site-b",
        "--target",
        dst,
        "--delete",
        "--continuous",
        "--compression",
        "never",
        "--rate-limit",
        "40MB/s",
    ]);
    let started = Instant::now();
    admin(&["job", "run", "1"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&b_metrics, "xtsync_worker_checkpoints_total") < 1 {
        assert!(Instant::now() < deadline, "no checkpoint at the target\n{}", daemon_logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let checkpointed = metric(&b_metrics, "xtsync_worker_checkpoint_bytes_total");
    link.set(false);
    let cut_at = Instant::now();
    let mut waiting_seen = None;
    while cut_at.elapsed() < Duration::from_secs(cut_s) {
        let run = status();
        if let Some(w) = run["progress"]["waiting_for"].as_str() {
            waiting_seen.get_or_insert(w.to_string());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    link.set(true);
    let deadline = Instant::now() + Duration::from_secs(180);
    while std::fs::read(target.join("large.bin")).ok().as_deref() != Some(&content[..]) {
        assert!(Instant::now() < deadline, "the file did not arrive after the link returned\n{}", daemon_logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let total_s = started.elapsed().as_secs_f64();
    let reused = metric(&b_metrics, "xtsync_worker_chunks_reused_total");
    let received = metric(&b_metrics, "xtsync_worker_chunks_received_total");
    println!(
        "netcut size_mib={size_mib} cut_s={cut_s} total_s={total_s:.1} checkpointed_bytes={checkpointed} \
         chunks_reused={reused} chunks_received={received} waiting_for={waiting_seen:?}"
    );
    // Not from zero: a restart from zero would send the file again after what went
    // before the cut, which is at least what was checkpointed.
    let sent = metric(&a_metrics, "xtsync_worker_bytes_sent_total");
    println!("netcut source_bytes_sent={sent} file_bytes={}", content.len());
    assert!(
        sent < content.len() as u64 + checkpointed,
        "the source sent {sent} bytes for a {} byte file with {checkpointed} bytes checkpointed before the cut\n{}",
        content.len(),
        daemon_logs()
    );
    if cut_s > 30 {
        // Longer than the peer timeout: the session failed, the run said why, and the
        // checkpointed part came from the target's own copy.
        assert!(waiting_seen.is_some(), "the run never said what it waited for during the cut");
        assert!(
            reused >= checkpointed / (256 << 10),
            "{checkpointed} bytes were durable before the cut, yet only {reused} chunks were reused\n{}",
            daemon_logs()
        );
    }
}
