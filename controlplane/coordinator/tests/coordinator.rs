//! End-to-end: the real `xtsync-coordinator` binary on a loopback port and a temporary
//! metadata directory, driven over HTTPS with client certificates of each role, killed
//! with SIGTERM and restarted on the same directory.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// As the operator (`ops`, role admin).
fn call(d: &Daemon, pki: &Pki, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call_as(d, pki, "ops", method, path, body)
}

fn ok_as(d: &Daemon, pki: &Pki, who: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, value) = call_as(d, pki, who, method, path, body);
    assert_eq!(status, 200, "{method} {path} as {who} -> {status}: {value}");
    value
}

fn ok(d: &Daemon, pki: &Pki, method: &str, path: &str, body: Option<Value>) -> Value {
    ok_as(d, pki, "ops", method, path, body)
}

fn worker(name: &str, port: u16) -> Value {
    json!({"name": name, "site": "lab", "data_addr": format!("127.0.0.1:{port}"),
           "http_addr": format!("127.0.0.1:{}", port + 1), "cores": 2})
}

fn version(path: &str, size: u64) -> Value {
    json!({"path": path, "size": size, "mtime_ns": 1_700_000_000_000_000_000i64, "mode": 0o100644,
           "uid": 1000, "gid": 1000, "content_digest": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"})
}

#[test]
fn coordinator_serves_jobs_runs_catalog_and_survives_restart() {
    let meta = TempDir::new("coordinator");
    let pki = Pki::new(&meta.0);
    let port = free_port();
    let d = start(&meta.0, port, &pki);

    // Initialization is idempotent.
    let init = ok(&d, &pki, "POST", "/v1/cluster/init", None);
    assert_eq!(init, json!({"initialized": true, "already": true}));

    ok_as(&d, &pki, "src", "POST", "/v1/workers/register", Some(worker("src", 9001)));
    ok_as(&d, &pki, "dst", "POST", "/v1/workers/register", Some(worker("dst", 9003)));
    assert_eq!(ok(&d, &pki, "GET", "/v1/workers", None).as_array().unwrap().len(), 2);

    let spec = json!({"name": "home", "source_worker": "src", "source_path": "/srv/in",
                      "target_worker": "dst", "target_path": "/srv/out"});
    let job = ok(&d, &pki, "POST", "/v1/jobs", Some(spec.clone()));
    let job_id = job["id"].as_u64().unwrap();
    assert_eq!(job["spec"]["name"], "home");

    // Refusals: unknown worker, duplicate name, relative path.
    let mut ghost = spec.clone();
    ghost["name"] = json!("other");
    ghost["target_worker"] = json!("ghost");
    let (status, err) = call(&d, &pki, "POST", "/v1/jobs", Some(ghost));
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("ghost"), "{err}");
    let (status, err) = call(&d, &pki, "POST", "/v1/jobs", Some(spec.clone()));
    assert_eq!(status, 409, "{err}");
    let mut relative = spec.clone();
    relative["name"] = json!("rel");
    relative["source_path"] = json!("srv/in");
    assert_eq!(call(&d, &pki, "POST", "/v1/jobs", Some(relative)).0, 400);
    assert_eq!(call(&d, &pki, "GET", "/v1/jobs/999", None).0, 404);

    let run = ok(&d, &pki, "POST", &format!("/v1/jobs/{job_id}/runs"), None);
    let run_id = run["id"].as_u64().unwrap();
    assert_eq!(run["state"], "pending");

    // The source worker's heartbeat carries the assignment, once.
    let hb = json!({"running": [], "wait_ms": 1000});
    let reply = ok_as(&d, &pki, "src", "POST", "/v1/workers/src/heartbeat", Some(hb.clone()));
    let assignments = reply["assignments"].as_array().unwrap();
    assert_eq!(assignments.len(), 1, "{reply}");
    assert_eq!(assignments[0]["run_id"], run_id);
    assert_eq!(assignments[0]["target_data_addr"], "127.0.0.1:9003");
    let started = Instant::now();
    let reply =
        ok_as(&d, &pki, "src", "POST", "/v1/workers/src/heartbeat", Some(json!({"running": [run_id], "wait_ms": 300})));
    assert!(reply["assignments"].as_array().unwrap().is_empty(), "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(250), "an empty heartbeat long-polls");
    assert_eq!(call_as(&d, &pki, "nobody", "POST", "/v1/workers/nobody/heartbeat", Some(hb)).0, 404);
    let workers = ok(&d, &pki, "GET", "/v1/workers", None);
    let src = workers.as_array().unwrap().iter().find(|w| w["registration"]["name"] == "src").unwrap();
    assert_eq!(src["alive"], true);

    // Reports: Running (through a heartbeat), then Succeeded with a summary.
    let running = json!({"worker": "src", "state": {"state": "running"},
                         "progress": {"files_seen": 2, "files_done": 0, "bytes_scanned": 10, "bytes_on_wire": 0}, "summary": null});
    ok_as(
        &d,
        &pki,
        "src",
        "POST",
        "/v1/workers/src/heartbeat",
        Some(json!({"running": [run_id], "reports": [[run_id, running]], "wait_ms": 0})),
    );
    assert_eq!(ok(&d, &pki, "GET", &format!("/v1/runs/{run_id}"), None)["state"], "running");

    let versions = json!({"job_id": job_id, "versions": [version("a.txt", 3), version("dir/b.bin", 7)]});
    let committed = ok_as(&d, &pki, "src", "POST", &format!("/v1/runs/{run_id}/versions"), Some(versions));
    assert_eq!(committed["committed"], 2);
    let bad = json!({"job_id": job_id, "versions": [version("../escape", 1)]});
    assert_eq!(call_as(&d, &pki, "src", "POST", &format!("/v1/runs/{run_id}/versions"), Some(bad)).0, 400);
    let too_many: Vec<Value> = (0..10_001).map(|i| version(&format!("f{i}"), 1)).collect();
    let (status, _) = call_as(
        &d,
        &pki,
        "src",
        "POST",
        &format!("/v1/runs/{run_id}/versions"),
        Some(json!({"job_id": job_id, "versions": too_many})),
    );
    assert_eq!(status, 413);

    let summary = json!({"files": 2, "dirs": 1, "symlinks": 0, "hardlinks": 0, "files_transferred": 2, "files_unchanged": 0,
                         "bytes_scanned": 10, "bytes_read": 10, "bytes_on_wire": 12, "chunks_sent": 2, "chunks_reused": 0,
                         "entries_deleted": 0, "duration_s": 0.5});
    let done = json!({"worker": "src", "state": {"state": "succeeded"},
                      "progress": {"files_seen": 2, "files_done": 2, "bytes_scanned": 10, "bytes_on_wire": 12}, "summary": summary});
    let run = ok_as(&d, &pki, "src", "POST", &format!("/v1/runs/{run_id}/report"), Some(done));
    assert_eq!(run["state"], "succeeded");
    assert!(run["finished_unix_ms"].as_u64().is_some());
    assert_eq!(run["summary"]["files_transferred"], 2);

    let catalog = ok(&d, &pki, "GET", &format!("/v1/jobs/{job_id}/catalog"), None);
    assert_eq!(catalog.as_array().unwrap().len(), 2, "{catalog}");
    let dir = ok(&d, &pki, "GET", &format!("/v1/jobs/{job_id}/catalog?prefix=dir/&limit=5"), None);
    assert_eq!(dir[0]["path"], "dir/b.bin");

    let status = ok(&d, &pki, "GET", "/v1/status", None);
    assert_eq!((status["jobs"].as_u64(), status["catalog_versions"].as_u64()), (Some(1), Some(2)));
    let (code, metrics) = try_request(d.addr, &pki.files("ops"), "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("xtsync_coordinator_jobs 1"), "{metrics}");
    assert!(metrics.contains("xtsync_coordinator_runs{state=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("xtsync_coordinator_is_leader 1"), "{metrics}");

    // A second job, deleted again: 204, then 404.
    let mut tmp = spec.clone();
    tmp["name"] = json!("tmp");
    let tmp_id = ok(&d, &pki, "POST", "/v1/jobs", Some(tmp))["id"].as_u64().unwrap();
    let tmp_run = ok(&d, &pki, "POST", &format!("/v1/jobs/{tmp_id}/runs"), None)["id"].as_u64().unwrap();
    let hb = json!({"running": [], "wait_ms": 1000});
    let reply = ok_as(&d, &pki, "src", "POST", "/v1/workers/src/heartbeat", Some(hb));
    assert_eq!(reply["assignments"][0]["run_id"], tmp_run, "{reply}");
    assert_eq!(call(&d, &pki, "DELETE", &format!("/v1/jobs/{tmp_id}"), None).0, 204);
    assert_eq!(call(&d, &pki, "GET", &format!("/v1/jobs/{tmp_id}"), None).0, 404);
    // The worker running it is told to stop, at once; the other job's run is not.
    let started = Instant::now();
    let hb = json!({"running": [tmp_run, run_id], "wait_ms": 5000});
    let reply = ok_as(&d, &pki, "src", "POST", "/v1/workers/src/heartbeat", Some(hb));
    assert_eq!(reply["cancelled"], json!([tmp_run]), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(4), "a cancellation does not wait for the long poll");

    // Restart on the same metadata directory: everything is still there.
    stop(d);
    let d = start(&meta.0, port, &pki);
    let jobs = ok(&d, &pki, "GET", "/v1/jobs", None);
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["spec"]["name"], "home");
    let run = ok(&d, &pki, "GET", &format!("/v1/runs/{run_id}"), None);
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["summary"]["files"], 2);
    assert_eq!(ok(&d, &pki, "GET", &format!("/v1/jobs/{job_id}/runs"), None).as_array().unwrap().len(), 1);
    let catalog = ok(&d, &pki, "GET", &format!("/v1/jobs/{job_id}/catalog"), None);
    let paths: Vec<&str> = catalog.as_array().unwrap().iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["a.txt", "dir/b.bin"]);
    // Writes still work after the restart, with ids continuing.
    let run2 = ok(&d, &pki, "POST", &format!("/v1/jobs/{job_id}/runs"), None);
    assert_eq!(run2["id"].as_u64(), Some(tmp_run + 1));
    stop(d);
}
