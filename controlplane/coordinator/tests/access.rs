//! Who may talk to a real coordinator: handshakes with a certificate from another CA,
//! an expired, a revoked one, or none at all are refused; valid certificates of the
//! wrong role get 403 (a wrong-agent read gets the 404 of a missing job); each refusal
//! is one clear log line, and no refused peer gets job data. Certificates and the CRL
//! change without a restart.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use xtsync_transport::{identity_of, CertAuthority, IssueRequest, Role, TlsFiles};

fn worker(name: &str, port: u16) -> Value {
    json!({"name": name, "site": "lab", "data_addr": format!("127.0.0.1:{port}"),
           "http_addr": format!("127.0.0.1:{}", port + 1), "cores": 2})
}

/// A cluster with workers `src`, `dst` and job "secret-job" (`src` → `dst`, readable
/// by agent `edge-1`); returns the job id.
fn cluster_with_job(d: &Daemon, pki: &Pki) -> u64 {
    for (name, port) in [("src", 9001), ("dst", 9003)] {
        assert_eq!(call_as(d, pki, name, "POST", "/v1/workers/register", Some(worker(name, port))).0, 200);
    }
    let spec = json!({"name": "secret-job", "source_worker": "src", "source_path": "/srv/secret-in",
                      "target_worker": "dst", "target_path": "/srv/secret-out", "agents": ["edge-1"]});
    let (status, job) = call_as(d, pki, "ops", "POST", "/v1/jobs", Some(spec));
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["spec"]["agents"], json!(["edge-1"]));
    job["id"].as_u64().unwrap()
}

/// Nothing of the job is in an answer to a refused peer.
fn assert_no_job_data(body: &Value) {
    let text = body.to_string();
    for secret in ["secret-job", "/srv/secret-in", "/srv/secret-out", "\"src\"", "\"dst\""] {
        assert!(!text.contains(secret), "a refused peer learned {secret}: {text}");
    }
}

#[test]
fn wrong_roles_are_refused_and_learn_nothing_of_the_job() {
    let meta = TempDir::new("access-roles");
    let pki = Pki::new(&meta.0);
    let d = start(&meta.0, free_port(), &pki);
    let job_id = cluster_with_job(&d, &pki);
    let run = call_as(&d, &pki, "ops", "POST", &format!("/v1/jobs/{job_id}/runs"), None).1;
    let run_id = run["id"].as_u64().unwrap();

    // A worker certificate cannot manage or list jobs.
    let spec = json!({"name": "evil", "source_worker": "src", "source_path": "/etc",
                      "target_worker": "dst", "target_path": "/tmp/evil"});
    let (status, body) = call_as(&d, &pki, "src", "POST", "/v1/jobs", Some(spec));
    assert_eq!(status, 403, "{body}");
    assert_no_job_data(&body);
    wait_log(&d, &["refused request", "src (role worker", "may not call POST /v1/jobs"]);
    let (status, body) = call_as(&d, &pki, "src", "GET", "/v1/jobs", None);
    assert_eq!(status, 403, "{body}");
    assert_no_job_data(&body);

    // A worker cannot heartbeat under another worker's name (the reply would carry
    // that worker's assignments: the job).
    let hb = json!({"running": [], "wait_ms": 0});
    let (status, body) = call_as(&d, &pki, "dst", "POST", "/v1/workers/src/heartbeat", Some(hb.clone()));
    assert_eq!(status, 403, "{body}");
    assert_no_job_data(&body);
    wait_log(&d, &["refused request", "dst (role worker", "heartbeat under another worker's name"]);
    let (status, body) = call_as(&d, &pki, "src", "POST", "/v1/workers/src/heartbeat", Some(hb));
    assert_eq!(status, 200);
    assert_eq!(body["assignments"][0]["run_id"], run_id, "the job goes to its own worker: {body}");

    // Admins, agents and workers cannot speak Raft; coordinators cannot manage jobs.
    let (status, _) = call_as(&d, &pki, "ops", "POST", "/raft/vote", Some(json!({})));
    assert_eq!(status, 403);
    wait_log(&d, &["refused request", "ops (role admin", "/raft/vote"]);
    let (status, body) = call_as(&d, &pki, "coordinator", "GET", &format!("/v1/jobs/{job_id}"), None);
    assert_eq!(status, 403);
    assert_no_job_data(&body);

    // An agent reads the job that names it, and nothing else; another agent is told
    // the job does not exist, exactly as for a job that does not.
    let (status, body) = call_as(&d, &pki, "edge-1", "GET", &format!("/v1/jobs/{job_id}"), None);
    assert_eq!((status, body["spec"]["name"].as_str()), (200, Some("secret-job")), "{body}");
    let (status, mine) = call_as(&d, &pki, "edge-1", "GET", "/v1/jobs", None);
    assert_eq!((status, mine.as_array().map(Vec::len)), (200, Some(1)));
    let (status, body) = call_as(&d, &pki, "edge-2", "GET", &format!("/v1/jobs/{job_id}"), None);
    assert_eq!(status, 404);
    assert_no_job_data(&body);
    let (_, missing) = call_as(&d, &pki, "edge-2", "GET", "/v1/jobs/999", None);
    assert_eq!(body["error"].as_str().unwrap().replace(&job_id.to_string(), "999"), missing["error"].as_str().unwrap());
    wait_log(&d, &["refused request", "edge-2 (role agent", "job not given to this agent"]);
    for path in [format!("/v1/jobs/{job_id}/catalog"), format!("/v1/jobs/{job_id}/runs")] {
        let (status, body) = call_as(&d, &pki, "edge-2", "GET", &path, None);
        assert_eq!(status, 404, "{path}: {body}");
        assert_no_job_data(&body);
    }
    let (status, theirs) = call_as(&d, &pki, "edge-2", "GET", "/v1/jobs", None);
    assert_eq!((status, theirs), (200, json!([])));
    // Agents cannot change anything.
    let (status, _) = call_as(&d, &pki, "edge-1", "DELETE", &format!("/v1/jobs/{job_id}"), None);
    assert_eq!(status, 403);
    // Health answers every role; metrics (job and run counters) only operators.
    for who in ["ops", "src", "edge-2", "coordinator"] {
        assert_eq!(call_as(&d, &pki, who, "GET", "/health", None).0, 200, "{who}");
    }
    for (who, expected) in [("ops", 200), ("coordinator", 200), ("src", 403), ("edge-2", 403)] {
        let (status, body) = call_as(&d, &pki, who, "GET", "/metrics", None);
        assert_eq!(status, expected, "{who}: {body}");
        if expected == 403 {
            assert!(!body.to_string().contains("xtsync_"), "{who} got counters: {body}");
        }
    }
    stop(d);
}

#[test]
fn agents_act_only_on_jobs_they_are_an_endpoint_of_and_create_only_pull_jobs() {
    let meta = TempDir::new("access-agents");
    let pki = Pki::new(&meta.0);
    let d = start(&meta.0, free_port(), &pki);
    let listed = cluster_with_job(&d, &pki);

    // An agent registers and heartbeats under its own name only.
    assert_eq!(call_as(&d, &pki, "edge-1", "POST", "/v1/workers/register", Some(worker("edge-1", 9005))).0, 200);
    let (status, body) = call_as(&d, &pki, "edge-1", "POST", "/v1/workers/register", Some(worker("src", 9007)));
    assert_eq!(status, 403, "{body}");
    wait_log(&d, &["refused request", "edge-1 (role agent", "register under another worker's name"]);
    let hb = json!({"running": [], "wait_ms": 0});
    assert_eq!(call_as(&d, &pki, "edge-1", "POST", "/v1/workers/edge-1/heartbeat", Some(hb.clone())).0, 200);
    let (status, body) = call_as(&d, &pki, "edge-1", "POST", "/v1/workers/src/heartbeat", Some(hb.clone()));
    assert_eq!(status, 403, "{body}");
    assert_no_job_data(&body);

    // Listed on a job: it reads it, but may not run it (it is not an endpoint).
    let (status, body) = call_as(&d, &pki, "edge-1", "POST", &format!("/v1/jobs/{listed}/runs"), None);
    assert_eq!(status, 403, "{body}");
    wait_log(&d, &["refused request", "edge-1 (role agent", "not the job's source or target"]);

    // A pull job of the listed job into itself: allowed once (the name is unique).
    let pull = json!({"name": "edge-1.pull.1", "source_worker": "src", "source_path": "/srv/secret-in",
                      "target_worker": "edge-1", "target_path": "/var/lib/edge/copy",
                      "options": {"continuous": true}});
    let (status, job) = call_as(&d, &pki, "edge-1", "POST", "/v1/jobs", Some(pull.clone()));
    assert_eq!(status, 200, "{job}");
    let pull_id = job["id"].as_u64().unwrap();
    assert_eq!(call_as(&d, &pki, "edge-1", "POST", "/v1/jobs", Some(pull.clone())).0, 409);
    let (status, run) = call_as(&d, &pki, "edge-1", "POST", &format!("/v1/jobs/{pull_id}/runs"), None);
    assert_eq!(status, 200, "{run}");
    let (status, body) = call_as(&d, &pki, "edge-1", "POST", &format!("/v1/jobs/{pull_id}/runs"), None);
    assert_eq!(status, 409, "one continuous run at a time: {body}");
    // The assignment goes to the source worker, never to the agent.
    let (_, body) = call_as(&d, &pki, "edge-1", "POST", "/v1/workers/edge-1/heartbeat", Some(hb.clone()));
    assert_eq!(body["assignments"], json!([]), "{body}");
    let (_, body) = call_as(&d, &pki, "src", "POST", "/v1/workers/src/heartbeat", Some(hb));
    assert!(body["assignments"].as_array().unwrap().iter().any(|a| a["run_id"] == run["id"]), "{body}");

    // Anything else an agent might create is refused: another source path, a target
    // that is not itself, a job that does not list it, a one-off job.
    let mut other_path = pull.clone();
    other_path["name"] = json!("x1");
    other_path["source_path"] = json!("/etc");
    let mut other_target = pull.clone();
    other_target["name"] = json!("x2");
    other_target["target_worker"] = json!("dst");
    let mut once = pull.clone();
    once["name"] = json!("x3");
    once["options"] = json!({"continuous": false});
    for (who, spec) in [("edge-1", other_path), ("edge-1", other_target), ("edge-1", once), ("edge-2", pull)] {
        let (status, body) = call_as(&d, &pki, who, "POST", "/v1/jobs", Some(spec.clone()));
        assert_eq!(status, 403, "{who} {spec}: {body}");
        assert_no_job_data(&body);
    }
    wait_log(&d, &["refused request", "edge-2 (role agent", "create this job"]);
    // Another agent does not see the pull job, nor may it run it.
    let (status, body) = call_as(&d, &pki, "edge-2", "POST", &format!("/v1/jobs/{pull_id}/runs"), None);
    assert_eq!(status, 404, "{body}");
    // A worker reads one job it is an endpoint of (a target checks an agent's session
    // against it), no other, and lists nothing.
    let (status, body) = call_as(&d, &pki, "dst", "GET", &format!("/v1/jobs/{listed}"), None);
    assert_eq!((status, body["spec"]["target_worker"].as_str()), (200, Some("dst")), "{body}");
    let (status, body) = call_as(&d, &pki, "nobody", "GET", &format!("/v1/jobs/{listed}"), None);
    assert_eq!(status, 404, "{body}");
    assert_no_job_data(&body);
    assert_eq!(call_as(&d, &pki, "dst", "GET", "/v1/jobs", None).0, 403);
    // Agents still cannot delete, list workers, or read runs directly.
    assert_eq!(call_as(&d, &pki, "edge-1", "DELETE", &format!("/v1/jobs/{pull_id}"), None).0, 403);
    assert_eq!(call_as(&d, &pki, "edge-1", "GET", "/v1/workers", None).0, 403);
    stop(d);
}

/// The handshake fails from the client's side (TLS 1.3: at the first read).
fn assert_handshake_refused(d: &Daemon, files: &TlsFiles) {
    match try_request(d.addr, files, "GET", "/v1/jobs", None) {
        Ok((status, body)) => panic!("the coordinator answered {status}: {body}"),
        Err(e) => assert!(e.to_string().contains("CertificateUnknown"), "{e}"),
    }
}

#[test]
fn bad_certificates_are_refused_at_the_handshake_with_a_log_line() {
    let meta = TempDir::new("access-tls");
    let pki = Pki::new(&meta.0);
    let d = start(&meta.0, free_port(), &pki);
    cluster_with_job(&d, &pki);

    // From another CA.
    let other = CertAuthority::init(&meta.0.join("other-pki"), "intruder").unwrap();
    other.issue(&IssueRequest::for_days("intruder", Role::Admin, 1)).unwrap();
    let f = other.cert_files("intruder");
    let intruder = TlsFiles { cert: f.cert_path, key: f.key_path, ca: pki.files("ops").ca, crl: None };
    assert_handshake_refused(&d, &intruder);
    wait_log(
        &d,
        &["refused connection: TLS handshake failed", "intruder (role admin", "not issued by this cluster's CA"],
    );

    // Expired.
    let mut old = IssueRequest::for_days("old-ops", Role::Admin, 1);
    old.not_before -= time::Duration::days(3);
    old.not_after = old.not_before + time::Duration::days(1);
    pki.ca.issue(&old).unwrap();
    assert_handshake_refused(&d, &pki.files("old-ops"));
    wait_log(&d, &["refused connection", "old-ops (role admin", "certificate expired"]);

    // Revoked: the coordinator rereads the CRL within its 2 s poll; on a connection the
    // revoked peer kept alive, its next request is refused (a new connection is refused
    // at the handshake, below).
    assert_eq!(call_as(&d, &pki, "edge-1", "GET", "/health", None).0, 200);
    let mut kept = common::connect(d.addr, &pki.files("edge-1")).unwrap();
    assert_eq!(keep_alive_get(&mut kept, "/health").unwrap(), 200);
    pki.ca.revoke("edge-1").unwrap();
    wait_log(&d, &["TLS configuration reloaded", "file change"]);
    assert_eq!(
        keep_alive_get(&mut kept, "/health").unwrap(),
        403,
        "a revoked peer's kept-alive connection still served"
    );
    wait_log(&d, &["refused request on a kept-alive connection", "edge-1 (role agent", "revoked since the handshake"]);
    assert_handshake_refused(&d, &pki.files("edge-1"));
    wait_log(&d, &["refused connection", "edge-1 (role agent", "revoked"]);

    // No certificate at all.
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates({
                let mut roots = rustls::RootCertStore::empty();
                let pem = std::fs::read(pki.files("ops").ca).unwrap();
                roots.add(rustls_pemfile::certs(&mut &pem[..]).next().unwrap().unwrap()).unwrap();
                roots
            })
            .with_no_client_auth();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, std::net::TcpStream::connect(d.addr).unwrap());
    use std::io::{Read, Write};
    let sent =
        tls.write_all(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").and_then(|_| tls.flush());
    let mut answer = Vec::new();
    let read = sent.and_then(|_| tls.read_to_end(&mut answer));
    assert!(read.is_err() && answer.is_empty(), "answered without a client certificate: {read:?}");
    wait_log(&d, &["refused connection", "presented no client certificate"]);
    stop(d);
}

fn server_serial(d: &Daemon, pki: &Pki) -> String {
    let tls = connect(d.addr, &pki.files("ops")).unwrap();
    identity_of(&tls.conn.peer_certificates().unwrap()[0]).unwrap().serial
}

#[test]
fn a_new_certificate_applies_without_a_restart_and_sighup_reloads() {
    let meta = TempDir::new("access-reload");
    let pki = Pki::new(&meta.0);
    let d = start(&meta.0, free_port(), &pki);
    let first = server_serial(&d, &pki);

    let renewed = pki.ca.issue(&IssueRequest::for_days("coordinator", Role::Coordinator, 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_serial(&d, &pki) != renewed.cert.serial {
        assert!(Instant::now() < deadline, "the coordinator still presents {first}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The API still answers, now presenting the new certificate (one node: no Raft RPC
    // crosses the network here; multi-node Raft over mTLS is not exercised by this test).
    assert_eq!(call_as(&d, &pki, "ops", "POST", "/v1/cluster/init", None).0, 200);

    // A key that does not match the certificate is refused; the old pair stays.
    let key = pki.ca.cert_files("coordinator").key_path;
    std::fs::copy(pki.ca.cert_files("ops").key_path, &key).unwrap();
    wait_log(&d, &["TLS configuration reload failed"]);
    assert_eq!(server_serial(&d, &pki), renewed.cert.serial);

    let again = pki.ca.issue(&IssueRequest::for_days("coordinator", Role::Coordinator, 1)).unwrap();
    let pid = d.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_log(&d, &["TLS configuration reloaded", "SIGHUP"]);
    assert_eq!(server_serial(&d, &pki), again.cert.serial);
    stop(d);
}

/// One request on a kept-alive connection; the status, or an error if the connection
/// gave no complete answer.
fn keep_alive_get(tls: &mut common::Tls, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())?;
    tls.flush()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("closed before an answer"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .ok_or_else(|| std::io::Error::other("no content-length"))?;
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))
}

/// Sends the head of a POST declaring `declared` body bytes and only `sent` of them,
/// then reads the answer's status (the connection stays open from our side).
fn stalled_post(d: &Daemon, pki: &Pki, who: &str, path: &str, declared: u64, sent: usize) -> u16 {
    use std::io::{Read, Write};
    let mut tls = connect(d.addr, &pki.files(who)).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n",
        d.addr
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&vec![b' '; sent]).unwrap();
    tls.flush().unwrap();
    let mut answer = [0u8; 512];
    let n = tls.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn bodies_are_bounded_by_route_and_role_before_they_are_read() {
    let meta = TempDir::new("access-bodies");
    let pki = Pki::new(&meta.0);
    let d = start(&meta.0, free_port(), &pki);
    let job_id = cluster_with_job(&d, &pki);
    let run = call_as(&d, &pki, "ops", "POST", &format!("/v1/jobs/{job_id}/runs"), None).1;
    let run_id = run["id"].as_u64().unwrap();
    let versions = format!("/v1/runs/{run_id}/versions");

    // A worker that is not the job's source is refused before it sends its 60 MB: the
    // answer comes while the body is still owed.
    assert_eq!(stalled_post(&d, &pki, "nobody", &versions, 60 << 20, 100), 403);
    // The source may send a large batch, but not beyond the bound, and not on a route
    // that takes small bodies.
    assert_eq!(stalled_post(&d, &pki, "src", &versions, 65 << 20, 0), 413);
    assert_eq!(stalled_post(&d, &pki, "src", "/v1/workers/register", 2 << 20, 0), 413);
    // A body sent too slowly is cut off (408) instead of holding the server.
    assert_eq!(stalled_post(&d, &pki, "src", "/v1/workers/register", 1000, 10), 408);
    wait_log(&d, &["request body not received within"]);
    // And the coordinator still serves.
    assert_eq!(call_as(&d, &pki, "ops", "GET", "/v1/jobs", None).0, 200);
}
