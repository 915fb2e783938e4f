//! End-to-end: the real `xtsync-coordinator` binary on a loopback port and a temporary
//! metadata directory, driven over HTTP, killed with SIGTERM and restarted on the same
//! directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("xtsync-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running coordinator, SIGKILLed on drop if the test did not stop it.
struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(meta: &Path, port: u16) -> Daemon {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_xtsync-coordinator"))
        .args(["--node-id", "1", "--init", "--http-listen", &addr.to_string(), "--metadata-path"])
        .arg(meta)
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start xtsync-coordinator");
    let daemon = Daemon { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = try_request(addr, "GET", "/health", None) {
            let health: Value = serde_json::from_str(&body).unwrap();
            if health["initialized"] == true && health["leader_id"] == 1 {
                return daemon;
            }
        }
        assert!(Instant::now() < deadline, "coordinator did not become healthy and leader in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut d: Daemon) {
    let pid = d.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = d.child.try_wait().unwrap() {
            assert!(exit.success(), "coordinator exited with {exit} after SIGTERM");
            return;
        }
        assert!(Instant::now() < deadline, "coordinator did not exit within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn try_request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))?;
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "helper does not decode chunked bodies");
    Ok((status, body.to_string()))
}

fn call(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = try_request(d.addr, method, path, body.as_ref()).expect("request");
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}

fn ok(d: &Daemon, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, value) = call(d, method, path, body);
    assert_eq!(status, 200, "{method} {path} -> {status}: {value}");
    value
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
    let port = free_port();
    let d = start(&meta.0, port);

    // Initialization is idempotent.
    let init = ok(&d, "POST", "/v1/cluster/init", None);
    assert_eq!(init, json!({"initialized": true, "already": true}));

    ok(&d, "POST", "/v1/workers/register", Some(worker("src", 9001)));
    ok(&d, "POST", "/v1/workers/register", Some(worker("dst", 9003)));
    assert_eq!(ok(&d, "GET", "/v1/workers", None).as_array().unwrap().len(), 2);

    let spec = json!({"name": "home", "source_worker": "src", "source_path": "/srv/in",
                      "target_worker": "dst", "target_path": "/srv/out"});
    let job = ok(&d, "POST", "/v1/jobs", Some(spec.clone()));
    let job_id = job["id"].as_u64().unwrap();
    assert_eq!(job["spec"]["name"], "home");

    // Refusals: unknown worker, duplicate name, relative path.
    let mut ghost = spec.clone();
    ghost["name"] = json!("other");
    ghost["target_worker"] = json!("ghost");
    let (status, err) = call(&d, "POST", "/v1/jobs", Some(ghost));
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("ghost"), "{err}");
    let (status, err) = call(&d, "POST", "/v1/jobs", Some(spec.clone()));
    assert_eq!(status, 409, "{err}");
    let mut relative = spec.clone();
    relative["name"] = json!("rel");
    relative["source_path"] = json!("srv/in");
    assert_eq!(call(&d, "POST", "/v1/jobs", Some(relative)).0, 400);
    assert_eq!(call(&d, "GET", "/v1/jobs/999", None).0, 404);

    let run = ok(&d, "POST", &format!("/v1/jobs/{job_id}/runs"), None);
    let run_id = run["id"].as_u64().unwrap();
    assert_eq!(run["state"], "pending");

    // The source worker's heartbeat carries the assignment, once.
    let hb = json!({"running": [], "wait_ms": 1000});
    let reply = ok(&d, "POST", "/v1/workers/src/heartbeat", Some(hb.clone()));
    let assignments = reply["assignments"].as_array().unwrap();
    assert_eq!(assignments.len(), 1, "{reply}");
    assert_eq!(assignments[0]["run_id"], run_id);
    assert_eq!(assignments[0]["target_data_addr"], "127.0.0.1:9003");
    let started = Instant::now();
    let reply = ok(&d, "POST", "/v1/workers/src/heartbeat", Some(json!({"running": [run_id], "wait_ms": 300})));
    assert!(reply["assignments"].as_array().unwrap().is_empty(), "{reply}");
    assert!(started.elapsed() >= Duration::from_millis(250), "an empty heartbeat long-polls");
    assert_eq!(call(&d, "POST", "/v1/workers/nobody/heartbeat", Some(hb)).0, 404);
    let workers = ok(&d, "GET", "/v1/workers", None);
    let src = workers.as_array().unwrap().iter().find(|w| w["registration"]["name"] == "src").unwrap();
    assert_eq!(src["alive"], true);

    // Reports: Running (through a heartbeat), then Succeeded with a summary.
    let running = json!({"worker": "src", "state": {"state": "running"},
                         "progress": {"files_seen": 2, "files_done": 0, "bytes_scanned": 10, "bytes_on_wire": 0}, "summary": null});
    ok(
        &d,
        "POST",
        "/v1/workers/src/heartbeat",
        Some(json!({"running": [run_id], "reports": [[run_id, running]], "wait_ms": 0})),
    );
    assert_eq!(ok(&d, "GET", &format!("/v1/runs/{run_id}"), None)["state"], "running");

    let versions = json!({"job_id": job_id, "versions": [version("a.txt", 3), version("dir/b.bin", 7)]});
    let committed = ok(&d, "POST", &format!("/v1/runs/{run_id}/versions"), Some(versions));
    assert_eq!(committed["committed"], 2);
    let bad = json!({"job_id": job_id, "versions": [version("../escape", 1)]});
    assert_eq!(call(&d, "POST", &format!("/v1/runs/{run_id}/versions"), Some(bad)).0, 400);
    let too_many: Vec<Value> = (0..10_001).map(|i| version(&format!("f{i}"), 1)).collect();
    let (status, _) =
        call(&d, "POST", &format!("/v1/runs/{run_id}/versions"), Some(json!({"job_id": job_id, "versions": too_many})));
    assert_eq!(status, 413);

    let summary = json!({"files": 2, "dirs": 1, "symlinks": 0, "hardlinks": 0, "files_transferred": 2, "files_unchanged": 0,
                         "bytes_scanned": 10, "bytes_read": 10, "bytes_on_wire": 12, "chunks_sent": 2, "chunks_reused": 0,
                         "entries_deleted": 0, "duration_s": 0.5});
    let done = json!({"worker": "src", "state": {"state": "succeeded"},
                      "progress": {"files_seen": 2, "files_done": 2, "bytes_scanned": 10, "bytes_on_wire": 12}, "summary": summary});
    let run = ok(&d, "POST", &format!("/v1/runs/{run_id}/report"), Some(done));
    assert_eq!(run["state"], "succeeded");
    assert!(run["finished_unix_ms"].as_u64().is_some());
    assert_eq!(run["summary"]["files_transferred"], 2);

    let catalog = ok(&d, "GET", &format!("/v1/jobs/{job_id}/catalog"), None);
    assert_eq!(catalog.as_array().unwrap().len(), 2, "{catalog}");
    let dir = ok(&d, "GET", &format!("/v1/jobs/{job_id}/catalog?prefix=dir/&limit=5"), None);
    assert_eq!(dir[0]["path"], "dir/b.bin");

    let status = ok(&d, "GET", "/v1/status", None);
    assert_eq!((status["jobs"].as_u64(), status["catalog_versions"].as_u64()), (Some(1), Some(2)));
    let (code, metrics) = try_request(d.addr, "GET", "/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("xtsync_coordinator_jobs 1"), "{metrics}");
    assert!(metrics.contains("xtsync_coordinator_runs{state=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("xtsync_coordinator_is_leader 1"), "{metrics}");

    // A second job, deleted again: 204, then 404.
    let mut tmp = spec.clone();
    tmp["name"] = json!("tmp");
    let tmp_id = ok(&d, "POST", "/v1/jobs", Some(tmp))["id"].as_u64().unwrap();
    assert_eq!(call(&d, "DELETE", &format!("/v1/jobs/{tmp_id}"), None).0, 204);
    assert_eq!(call(&d, "GET", &format!("/v1/jobs/{tmp_id}"), None).0, 404);

    // Restart on the same metadata directory: everything is still there.
    stop(d);
    let d = start(&meta.0, port);
    let jobs = ok(&d, "GET", "/v1/jobs", None);
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs[0]["spec"]["name"], "home");
    let run = ok(&d, "GET", &format!("/v1/runs/{run_id}"), None);
    assert_eq!(run["state"], "succeeded");
    assert_eq!(run["summary"]["files"], 2);
    assert_eq!(ok(&d, "GET", &format!("/v1/jobs/{job_id}/runs"), None).as_array().unwrap().len(), 1);
    let catalog = ok(&d, "GET", &format!("/v1/jobs/{job_id}/catalog"), None);
    let paths: Vec<&str> = catalog.as_array().unwrap().iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["a.txt", "dir/b.bin"]);
    // Writes still work after the restart, with ids continuing.
    let run2 = ok(&d, "POST", &format!("/v1/jobs/{job_id}/runs"), None);
    assert_eq!(run2["id"].as_u64(), Some(run_id + 1));
    stop(d);
}
