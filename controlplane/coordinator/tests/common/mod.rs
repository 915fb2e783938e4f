//! Shared by the coordinator's integration tests: a test CA with one certificate per
//! role, the real `xtsync-coordinator` binary on a loopback port (log in a file), and
//! HTTP/1.1 requests over mutual TLS as any of those certificates.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use serde_json::Value;
use xtsync_transport::{client_config, CertAuthority, IssueRequest, Role, TlsFiles, TlsPolicy};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
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

/// The test cluster's CA: `coordinator`, `ops` (admin), workers `src`, `dst`, `nobody`,
/// agents `edge-1`, `edge-2`.
pub struct Pki {
    pub ca: CertAuthority,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let ca = CertAuthority::init(&dir.join("pki"), "test").unwrap();
        for (name, role) in [
            ("coordinator", Role::Coordinator),
            ("ops", Role::Admin),
            ("src", Role::Worker),
            ("dst", Role::Worker),
            ("nobody", Role::Worker),
            ("edge-1", Role::Agent),
            ("edge-2", Role::Agent),
        ] {
            ca.issue(&IssueRequest::for_days(name, role, 1)).unwrap();
        }
        Pki { ca }
    }

    /// The files of certificate `name` (of this CA unless `other` is given).
    pub fn files(&self, name: &str) -> TlsFiles {
        let f = self.ca.cert_files(name);
        let ca = self.ca.ca_files();
        TlsFiles { cert: f.cert_path, key: f.key_path, ca: ca.cert_path, crl: Some(ca.crl_path) }
    }
}

/// A running coordinator, SIGKILLed on drop if the test did not stop it.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use xtsync_testkit::free_port;

pub fn start(meta: &Path, port: u16, pki: &Pki) -> Daemon {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tls = pki.files("coordinator");
    // One log per start: a restart must not truncate the first run's log.
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = meta.join(format!("coordinator-{n}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_xtsync-coordinator"))
        .args(["--node-id", "1", "--init", "--http-listen", &addr.to_string(), "--metadata-path"])
        .arg(meta)
        .arg("--tls-cert")
        .arg(&tls.cert)
        .arg("--tls-key")
        .arg(&tls.key)
        .arg("--tls-ca")
        .arg(&tls.ca)
        .arg("--tls-crl")
        .arg(tls.crl.as_ref().unwrap())
        .env("RUST_LOG", "info,openraft=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start xtsync-coordinator");
    let daemon = Daemon { child, addr, log };
    let ops = pki.files("ops");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = try_request(addr, &ops, "GET", "/health", None) {
            let health: Value = serde_json::from_str(&body).unwrap();
            if health["initialized"] == true && health["leader_id"] == 1 {
                return daemon;
            }
        }
        assert!(
            Instant::now() < deadline,
            "coordinator did not become healthy and leader in 60 s:\n{}",
            std::fs::read_to_string(&daemon.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn stop(mut d: Daemon) {
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

/// Waits (up to 10 s) for a line of the daemon's log containing every needle.
pub fn wait_log(d: &Daemon, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no log line with {needles:?} in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection as `files`' certificate, handshake driven to the end.
pub fn connect(addr: SocketAddr, files: &TlsFiles) -> std::io::Result<Tls> {
    let pem = std::fs::read(&files.cert)?;
    let leaf = rustls_pemfile::certs(&mut &pem[..]).next().unwrap()?;
    let own_role = xtsync_transport::identity_of(&leaf).unwrap().role;
    let config: Arc<rustls::ClientConfig> =
        client_config(files, &TlsPolicy { own_role, ..TlsPolicy::ADMIN }).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// One HTTP/1.1 request with `Connection: close` as `files`' certificate; returns
/// (status, body).
pub fn try_request(
    addr: SocketAddr,
    files: &TlsFiles,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut stream = connect(addr, files)?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if body.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", payload.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(payload.as_bytes())?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("no header end"))?;
    let status =
        head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| std::io::Error::other("no status"))?;
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "helper does not decode chunked bodies");
    Ok((status, body.to_string()))
}

/// A request as certificate `who`; the body parsed as JSON when it is JSON.
pub fn call_as(d: &Daemon, pki: &Pki, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = try_request(d.addr, &pki.files(who), method, path, body.as_ref()).expect("request");
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, value)
}
