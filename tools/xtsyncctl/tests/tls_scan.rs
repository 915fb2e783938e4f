//! Checked by real clients: `testssl.sh` (Debian package `testssl.sh`, installed by
//! `scripts/install-deps.sh`) scans the coordinator's REST port and a worker's data
//! port of real daemons, and `openssl s_client` tries both without a client
//! certificate. Fails on SSLv2/3, TLS 1.0/1.1, any cipher that is not ECDHE + AEAD
//! (NULL, export, LOW, 3DES, CBC), any HIGH/CRITICAL finding, or a handshake that
//! completes without a client certificate.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use xtsync_testkit::cluster::Daemon;
use xtsync_testkit::{bin as binary, free_port};
use xtsync_transport::{CertAuthority, IssueRequest, Role};

/// A whole scan of one port takes ~10 s here; this bounds a hung one.
const SCAN_TIMEOUT_S: u32 = 120;

fn tls_args(ca: &CertAuthority, name: &str) -> Vec<String> {
    let (c, f) = (ca.ca_files(), ca.cert_files(name));
    [
        "--tls-cert",
        &f.cert_path.display().to_string(),
        "--tls-key",
        &f.key_path.display().to_string(),
        "--tls-ca",
        &c.cert_path.display().to_string(),
        "--tls-crl",
        &c.crl_path.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

fn start(binary: &Path, args: &[String], log: &Path) -> Daemon {
    let child = Command::new(binary)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    Daemon(child)
}

fn wait_listening(port: u16, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}:\n{}", std::fs::read_to_string(log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// testssl.sh: protocols (-p), cipher categories (-s), server preferences (-P) and
/// every cipher per protocol (-E); returns its JSON findings.
fn testssl(port: u16, out: &Path) -> Vec<Value> {
    let json = out.join(format!("testssl-{port}.json"));
    let status = Command::new("timeout")
        .arg(SCAN_TIMEOUT_S.to_string())
        .arg("testssl")
        .args(["--quiet", "--warnings", "off", "--color", "0", "-p", "-s", "-P", "-E", "--jsonfile"])
        .arg(&json)
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::fs::File::create(out.join(format!("testssl-{port}.txt"))).unwrap())
        .stderr(Stdio::inherit())
        .status()
        .expect("testssl.sh is not installed: run scripts/install-deps.sh (Debian package testssl.sh)");
    assert!(status.code() != Some(124), "testssl.sh did not finish within {SCAN_TIMEOUT_S} s");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("testssl.sh wrote no {}: {e}", json.display()));
    serde_json::from_str(&text).expect("testssl.sh JSON")
}

fn finding<'a>(findings: &'a [Value], id: &str) -> &'a str {
    findings
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["finding"].as_str())
        .unwrap_or_else(|| panic!("testssl.sh reported no {id}"))
}

/// The checks the issue asks for, on one port's findings; returns a summary line.
fn judge(what: &str, findings: &[Value]) -> String {
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(finding(findings, id).starts_with("not offered"), "{what}: {id} {}", finding(findings, id));
    }
    for id in ["TLS1_2", "TLS1_3"] {
        assert!(finding(findings, id).starts_with("offered"), "{what}: {id} {}", finding(findings, id));
    }
    for id in ["NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "AVERAGE"] {
        let f = finding(findings, &format!("cipherlist_{id}"));
        assert!(f.starts_with("not offered"), "{what}: {id} ciphers {f}");
    }
    assert!(finding(findings, "cipherlist_STRONG").starts_with("offered"));
    assert_eq!(finding(findings, "cipher_order"), "server", "{what}: the server must choose the suite");
    let suites: Vec<&str> = findings
        .iter()
        .filter(|f| f["id"].as_str().is_some_and(|id| id.starts_with("cipher-tls")))
        .filter_map(|f| f["finding"].as_str())
        .collect();
    assert!(!suites.is_empty(), "{what}: testssl.sh enumerated no cipher");
    for s in &suites {
        let aead = ["AESGCM", "ChaCha20", "AESCCM"].iter().any(|a| s.contains(a));
        assert!(s.contains("ECDH") && aead, "{what}: weak or non-AEAD suite offered: {s}");
    }
    let bad: Vec<String> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .map(|f| format!("{} {}", f["id"], f["finding"]))
        .collect();
    assert!(bad.is_empty(), "{what}: testssl.sh findings: {bad:?}");
    let names: Vec<&str> = suites.iter().filter_map(|s| s.split_whitespace().last()).collect();
    format!("{what}: TLS 1.2 + 1.3 only, {} suites, all ECDHE + AEAD: {}", names.len(), names.join(" "))
}

/// `openssl s_client` with `cert` (or none) and one protocol version, sending an HTTP
/// request; returns its whole output.
fn s_client(port: u16, version: &str, cert: Option<(&Path, &Path)>) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args(["20", "openssl", "s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-ign_eof"]);
    if let Some((c, k)) = cert {
        cmd.arg("-cert").arg(c).arg("-key").arg(k);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let out = child.wait_with_output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_needs_client_cert(what: &str, port: u16) {
    for version in ["-tls1_2", "-tls1_3"] {
        let out = s_client(port, version, None);
        assert!(!out.contains("HTTP/1.1"), "{what} {version}: answered without a client certificate:\n{out}");
        assert!(
            out.contains("alert certificate required") || out.contains("alert handshake failure"),
            "{what} {version}: no refusal alert without a client certificate:\n{out}"
        );
    }
}

#[test]
fn testssl_and_openssl_find_only_strong_tls_and_required_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::init(&dir.path().join("pki"), "scan").unwrap();
    for (name, role) in [("coordinator", Role::Coordinator), ("worker-a", Role::Worker), ("ops", Role::Admin)] {
        ca.issue(&IssueRequest::for_days(name, role, 1)).unwrap();
    }
    let (api_port, data_port) = (free_port(), free_port());
    let coordinator_log = dir.path().join("coordinator.log");
    let mut args = vec!["--init".to_string(), "--http-listen".into(), format!("127.0.0.1:{api_port}")];
    args.extend(["--metadata-path".into(), dir.path().join("meta").display().to_string()]);
    args.extend(tls_args(&ca, "coordinator"));
    let _coordinator = start(&binary("xtsync-coordinator"), &args, &coordinator_log);
    let worker_log = dir.path().join("worker.log");
    let mut args = vec!["--name".to_string(), "worker-a".into(), "--cores".into(), "1".into()];
    args.extend(["--data-listen".into(), format!("127.0.0.1:{data_port}")]);
    args.extend(["--http-listen".into(), format!("127.0.0.1:{}", free_port())]);
    args.extend(["--coordinator".into(), format!("127.0.0.1:{api_port}")]);
    args.extend(["--metadata-path".into(), dir.path().join("worker").display().to_string()]);
    args.extend(tls_args(&ca, "worker-a"));
    let _worker = start(&binary("xtsync-worker"), &args, &worker_log);
    wait_listening(api_port, &coordinator_log);
    wait_listening(data_port, &worker_log);

    // A control: with a valid certificate, s_client does get an answer, so the refusals
    // below are refusals and not a broken probe.
    let ops = ca.cert_files("ops");
    let accepted = s_client(api_port, "-tls1_3", Some((&ops.cert_path, &ops.key_path)));
    assert!(accepted.contains("HTTP/1.1 200"), "the control request failed:\n{accepted}");
    // The data port speaks no HTTP: its control is a worker certificate that gets no alert.
    let worker = ca.cert_files("worker-a");
    let accepted = s_client(data_port, "-tls1_3", Some((&worker.cert_path, &worker.key_path)));
    assert!(
        accepted.contains("TLSv1.3") && !accepted.contains("alert"),
        "a worker certificate was refused on the data port:\n{accepted}"
    );
    assert_needs_client_cert("coordinator", api_port);
    assert_needs_client_cert("worker data port", data_port);

    let started = Instant::now();
    let mut summary = Vec::new();
    for (what, port) in [("coordinator REST", api_port), ("worker data port", data_port)] {
        summary.push(judge(what, &testssl(port, dir.path())));
    }
    // Shown with --no-capture; the JSON stays in the temporary directory during the run.
    println!("testssl.sh ({:.0} s):\n{}", started.elapsed().as_secs_f64(), summary.join("\n"));
}
