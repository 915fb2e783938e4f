//! Bad input against a real `xtsync-worker` process: malformed and oversized frames,
//! paths that try to leave the job's root, certificates from another CA, expired,
//! revoked or of the wrong role, a broken config. Each must get a clear refusal (and a
//! clear log line), touch nothing outside the root, and leave the worker serving other
//! sessions. Certificates and CRL changes apply without a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use xtsync_testkit::free_port;
use xtsync_transport::{client_config, identity_of, CertAuthority, IssueRequest, Role, TlsFiles, TlsPolicy};
use xtsync_wire::*;

struct Worker {
    child: Child,
    data_port: u16,
    http_port: u16,
    ca: CertAuthority,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker() -> Worker {
    start_worker_with(&[])
}

fn start_worker_with(extra_args: &[&str]) -> Worker {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::init(&dir.path().join("pki"), "test").unwrap();
    let cert = ca.issue(&IssueRequest::for_days("worker-b", Role::Worker, 1)).unwrap().files;
    ca.issue(&IssueRequest::for_days("client", Role::Worker, 1)).unwrap();
    let ca_files = ca.ca_files();
    let log = dir.path().join("worker.log");
    let (data_port, http_port) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_xtsync-worker"))
        .args(["--name", "worker-b", "--cores", "1"])
        .args(["--data-listen", &format!("127.0.0.1:{data_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        // No coordinator runs: worker peers are admitted without asking it which job is
        // theirs (what these tests send is checked frame by frame instead), unless the
        // test says otherwise.
        .args(["--coordinator", &format!("127.0.0.1:{}", free_port())])
        .args(if extra_args.contains(&"--admit-worker-sessions") {
            &[][..]
        } else {
            &["--admit-worker-sessions", "any"][..]
        })
        .arg("--metadata-path")
        .arg(dir.path().join("meta"))
        .arg("--tls-cert")
        .arg(&cert.cert_path)
        .arg("--tls-key")
        .arg(&cert.key_path)
        .arg("--tls-ca")
        .arg(&ca_files.cert_path)
        .arg("--tls-crl")
        .arg(&ca_files.crl_path)
        .env("XTSYNC_LOG", "info")
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The data port and the HTTP port (/metrics) open independently: wait for both.
    for port in [data_port, http_port] {
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "worker did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Worker { child, data_port, http_port, ca, log, _dir: dir }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// The files of certificate `name` of `ca`, trusting `trust` (the worker's CA).
fn files_of(ca: &CertAuthority, name: &str, trust: &CertAuthority) -> TlsFiles {
    let f = ca.cert_files(name);
    TlsFiles { cert: f.cert_path, key: f.key_path, ca: trust.ca_files().cert_path, crl: None }
}

fn connect_with(w: &Worker, files: &TlsFiles) -> std::io::Result<Tls> {
    // Whatever role the certificate has: the test plays that component.
    let pem = std::fs::read(&files.cert).unwrap();
    let leaf = rustls_pemfile::certs(&mut &pem[..]).next().unwrap().unwrap();
    let own_role = identity_of(&leaf).unwrap().role;
    let config = client_config(files, &TlsPolicy { own_role, ..TlsPolicy::WORKER }).unwrap();
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", w.data_port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake to completion (TLS 1.3: the server checks our certificate
    // after its first flight, so read until it answers or refuses).
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn connect(w: &Worker) -> Tls {
    let mut tls = connect_with(w, &files_of(&w.ca, "client", &w.ca)).unwrap();
    // The target speaks first, so that either side may hand its keys to the kernel.
    assert!(matches!(recv(&mut tls), Some(Message::Ready(_))), "expected Ready first");
    tls
}

/// Waits (up to 10 s) for a line of the worker's log containing every needle.
fn wait_log(w: &Worker, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&w.log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no log line with {needles:?} in:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A peer that completes the TLS handshake from its side, says Hello, and must get
/// nothing back but the refusal: not a byte of a frame.
fn assert_refused(w: &Worker, files: &TlsFiles) -> String {
    let result = connect_with(w, files).and_then(|mut tls| {
        let h =
            Hello { job_id: 1, run_id: 1, session_index: 0, session_count: 1, target_root: "/tmp/x".into(), flags: 0 };
        let mut buf = Vec::new();
        Message::Hello(h).encode(&mut buf);
        tls.write_all(&buf)?;
        tls.flush()?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b)
    });
    let err = result.expect_err("the worker must refuse the handshake");
    // The peer learns only that its certificate was not accepted.
    assert!(err.to_string().contains("CertificateUnknown"), "{err}");
    err.to_string()
}

/// The serial of the certificate the worker presents now.
fn server_serial(w: &Worker) -> String {
    let tls = connect(w);
    let chain = tls.conn.peer_certificates().unwrap();
    identity_of(&chain[0]).unwrap().serial
}

fn send(tls: &mut Tls, msg: &Message) {
    let mut buf = Vec::new();
    msg.encode(&mut buf);
    tls.write_all(&buf).unwrap();
    tls.flush().unwrap();
}

/// The next frame, or `None` once the worker closed the session.
fn recv(tls: &mut Tls) -> Option<Message> {
    let mut h = [0u8; 8];
    tls.read_exact(&mut h).ok()?;
    let h = decode_header(&h).expect("the worker sends valid frames");
    let mut payload = vec![0u8; h.payload_bytes as usize];
    tls.read_exact(&mut payload).ok()?;
    Some(Message::decode(h.kind, payload).expect("the worker sends valid frames"))
}

fn hello(tls: &mut Tls, root: &Path) {
    let h = Hello {
        job_id: 1,
        run_id: 1,
        session_index: 0,
        session_count: 1,
        target_root: root.display().to_string(),
        flags: 0,
    };
    send(tls, &Message::Hello(h));
    assert!(matches!(recv(tls), Some(Message::HelloAck(_))), "expected HelloAck");
}

/// The session ends with an Error frame naming the problem, then a close.
fn expect_refusal(tls: &mut Tls, needle: &str) {
    match recv(tls) {
        Some(Message::Error(e)) => {
            assert!(e.message.contains(needle), "error {:?} should mention {needle:?}", e.message)
        }
        other => panic!("expected an Error frame mentioning {needle:?}, got {other:?}"),
    }
    assert!(recv(tls).is_none(), "the session must be closed after the error");
}

/// A new session still works: one bad peer does not take the worker down.
fn assert_worker_serves(w: &Worker) {
    let dir = tempfile::tempdir().unwrap();
    let mut tls = connect(w);
    hello(&mut tls, dir.path());
    send(&mut tls, &Message::EndOfPass(EndOfPass { files: 0 }));
    assert!(matches!(recv(&mut tls), Some(Message::PassDone(_))));
}

fn metric(w: &Worker, name: &str) -> u64 {
    let text = metrics(w);
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn metrics(w: &Worker) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", w.http_port)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn malformed_frame_closes_only_that_session() {
    let w = start_worker();
    let mut tls = connect(&w);
    // A header of protocol version 9.
    tls.write_all(&[9, 1, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]).unwrap();
    tls.flush().unwrap();
    expect_refusal(&mut tls, "protocol version 9");
    assert_worker_serves(&w);
}

#[test]
fn oversized_frame_is_refused_before_it_is_read() {
    let w = start_worker();
    let mut tls = connect(&w);
    let mut header = vec![PROTOCOL_VERSION, 1, 0, 0];
    header.extend_from_slice(&(1u32 << 30).to_le_bytes());
    tls.write_all(&header).unwrap();
    tls.flush().unwrap();
    expect_refusal(&mut tls, "exceeds the maximum");
    assert_worker_serves(&w);
}

#[test]
fn relative_or_dotted_target_roots_are_refused() {
    let w = start_worker();
    for root in ["relative/dir", "/tmp/../etc"] {
        let mut tls = connect(&w);
        let h = Hello { job_id: 1, run_id: 1, session_index: 0, session_count: 1, target_root: root.into(), flags: 0 };
        send(&mut tls, &Message::Hello(h));
        expect_refusal(&mut tls, "absolute path without `..`");
    }
}

#[test]
fn a_worker_peer_is_refused_unless_the_coordinator_vouches_for_its_job() {
    // By default a worker asks the coordinator whether the peer is the source of the
    // job it names, into that job's target path; here nobody can answer.
    let w = start_worker_with(&["--admit-worker-sessions", "job"]);
    let root = tempfile::tempdir().unwrap();
    let mut tls = connect(&w);
    let h = Hello {
        job_id: 1,
        run_id: 1,
        session_index: 0,
        session_count: 1,
        target_root: root.path().join("job").display().to_string(),
        flags: 0,
    };
    send(&mut tls, &Message::Hello(h));
    expect_refusal(&mut tls, "cannot check job 1 with the coordinator");
    assert!(!root.path().join("job").exists(), "a refused session created its root");
    wait_log(&w, &["refused data-plane session", "client"]);
}

#[test]
fn a_dotdot_path_on_the_wire_is_refused() {
    let w = start_worker();
    let root = tempfile::tempdir().unwrap();
    let mut tls = connect(&w);
    hello(&mut tls, &root.path().join("job"));
    // RelPath cannot hold "..": encode a valid path, then rewrite it in the frame.
    let begin = FileBegin {
        file_id: 1,
        path: RelPath::new("zz/escape").unwrap(),
        meta: Meta::default(),
        size: 1,
        digest: None,
    };
    let mut buf = Vec::new();
    Message::FileBegin(begin).encode(&mut buf);
    let at = buf.windows(3).position(|x| x == b"zz/").unwrap();
    buf[at..at + 3].copy_from_slice(b"../");
    tls.write_all(&buf).unwrap();
    tls.flush().unwrap();
    expect_refusal(&mut tls, "`.` and `..` components are not allowed");
    assert!(!root.path().join("escape").exists());
    assert_worker_serves(&w);
}

#[test]
fn a_symlink_planted_in_the_root_cannot_be_followed_out() {
    let w = start_worker();
    let outside = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
    let mut tls = connect(&w);
    hello(&mut tls, root.path());
    let data = b"pwned".to_vec();
    let name = *blake3::hash(&data).as_bytes();
    let meta = Meta { mode: 0o644, ..Meta::default() };
    send(
        &mut tls,
        &Message::FileBegin(FileBegin {
            file_id: 1,
            path: RelPath::new("evil/pwned").unwrap(),
            meta,
            size: 5,
            digest: None,
        }),
    );
    send(
        &mut tls,
        &Message::Segment(Segment { file_id: 1, seg_no: 0, chunks: vec![ChunkRef { name, len: 5, zero: false }] }),
    );
    match recv(&mut tls) {
        Some(Message::Want(want)) => assert!(!want.wants(0), "a refused file must not ask for data"),
        other => panic!("expected Want, got {other:?}"),
    }
    let mut digest = blake3::Hasher::new();
    digest.update(&name);
    digest.update(&5u32.to_le_bytes());
    let digest = *digest.finalize().as_bytes();
    send(&mut tls, &Message::FileEnd(FileEnd { file_id: 1, digest, aborted: false }));
    match recv(&mut tls) {
        Some(Message::FileDone(d)) => {
            let e = d.error.expect("the file must fail");
            assert!(e.contains("refused"), "{e}");
        }
        other => panic!("expected FileDone, got {other:?}"),
    }
    send(&mut tls, &Message::EndOfPass(EndOfPass { files: 1 }));
    assert!(matches!(recv(&mut tls), Some(Message::PassDone(_))));
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing may be written outside the root");
}

#[test]
fn a_chunk_that_does_not_match_its_name_is_refused() {
    let w = start_worker();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("f"), b"old version").unwrap();
    let mut tls = connect(&w);
    hello(&mut tls, root.path());
    let name = *blake3::hash(b"hello").as_bytes();
    let meta = Meta { mode: 0o644, ..Meta::default() };
    send(
        &mut tls,
        &Message::FileBegin(FileBegin { file_id: 1, path: RelPath::new("f").unwrap(), meta, size: 5, digest: None }),
    );
    send(
        &mut tls,
        &Message::Segment(Segment { file_id: 1, seg_no: 0, chunks: vec![ChunkRef { name, len: 5, zero: false }] }),
    );
    assert!(matches!(recv(&mut tls), Some(Message::Want(w)) if w.wants(0)));
    let forged = ChunkData { file_id: 1, seg_no: 0, index: 0, encoding: 0, raw_len: 5, data: b"HELLO".to_vec() };
    send(&mut tls, &Message::ChunkData(forged));
    let digest = *blake3::Hasher::new().update(&name).update(&5u32.to_le_bytes()).finalize().as_bytes();
    send(&mut tls, &Message::FileEnd(FileEnd { file_id: 1, digest, aborted: false }));
    match recv(&mut tls) {
        Some(Message::FileDone(d)) => assert!(d.error.unwrap().contains("does not match its name")),
        other => panic!("expected FileDone, got {other:?}"),
    }
    assert_eq!(std::fs::read(root.path().join("f")).unwrap(), b"old version", "the old version stays whole");
    assert_eq!(metric(&w, "xtsync_worker_chunk_hash_mismatches_total"), 1);
}

#[test]
fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let w = start_worker();
    // start_worker's readiness probe (a bare TCP connect) is itself a refused handshake:
    // wait until it is counted, so that the baseline is stable.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&w, "xtsync_worker_tls_handshakes_refused_total") < 1 {
        assert!(Instant::now() < deadline, "the probe's refusal was never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused_before = metric(&w, "xtsync_worker_tls_handshakes_refused_total");
    let other = tempfile::tempdir().unwrap();
    let other_ca = CertAuthority::init(other.path(), "intruder").unwrap();
    other_ca.issue(&IssueRequest::for_days("intruder", Role::Worker, 1)).unwrap();
    // The intruder trusts the real CA (it knows the server) but presents its own cert.
    assert_refused(&w, &files_of(&other_ca, "intruder", &w.ca));
    wait_log(&w, &["refused data-plane connection", "intruder (role worker", "not issued by this cluster's CA"]);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(metric(&w, "xtsync_worker_tls_handshakes_refused_total"), refused_before + 1);
}

#[test]
fn ktls_on_starts_only_where_the_kernel_takes_tls_keys() {
    let kernel_has_tls = xtsync_transport::ktls::probe().is_ok();
    if kernel_has_tls {
        // Serves sessions (start_worker_with waits until it listens), with kTLS.
        let w = start_worker_with(&["--ktls", "on"]);
        let root = tempfile::tempdir().unwrap();
        let mut tls = connect(&w);
        hello(&mut tls, root.path());
        assert!(metric(&w, "xtsync_worker_tls_sessions_kernel_total") >= 1);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xtsync.yaml");
    std::fs::write(&path, "transfer:\n  ktls: on\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtsync-worker"))
        .arg("--config")
        .arg(&path)
        .args(["--tls-cert", "/nonexistent", "--tls-key", "/nonexistent", "--tls-ca", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a worker told to use kernel TLS must not start without it");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("transfer.ktls") && err.contains("TCP_ULP"), "the error says what is missing: {err}");
}

#[test]
fn expired_and_wrong_role_certificates_are_refused_with_a_clear_log_line() {
    let w = start_worker();
    // Expired yesterday (issued with a validity window in the past).
    let mut old = IssueRequest::for_days("old-worker", Role::Worker, 1);
    old.not_before -= time::Duration::days(3);
    old.not_after = old.not_before + time::Duration::days(1);
    w.ca.issue(&old).unwrap();
    assert_refused(&w, &files_of(&w.ca, "old-worker", &w.ca));
    wait_log(&w, &["refused data-plane connection", "old-worker (role worker", "certificate expired"]);

    // Valid certificates of other roles may not use the data port.
    for (name, role) in [("ops", Role::Admin), ("coord-1", Role::Coordinator)] {
        w.ca.issue(&IssueRequest::for_days(name, role, 1)).unwrap();
        assert_refused(&w, &files_of(&w.ca, name, &w.ca));
        wait_log(
            &w,
            &[
                "refused data-plane connection",
                &format!("{name} (role {role}"),
                "wrong role; accepted here: worker, agent",
            ],
        );
    }
    // An agent completes the handshake, but writes nothing unless the coordinator
    // confirms the job (none runs here).
    w.ca.issue(&IssueRequest::for_days("edge-1", Role::Agent, 1)).unwrap();
    let mut tls = connect_with(&w, &files_of(&w.ca, "edge-1", &w.ca)).unwrap();
    assert!(matches!(recv(&mut tls), Some(Message::Ready(_))), "the handshake is accepted");
    let h = Hello { job_id: 1, run_id: 1, session_index: 0, session_count: 1, target_root: "/tmp/x".into(), flags: 0 };
    send(&mut tls, &Message::Hello(h));
    expect_refusal(&mut tls, "cannot check job 1 with the coordinator");
    wait_log(&w, &["refused data-plane session", "edge-1 (role agent"]);
    assert_worker_serves(&w);
}

#[test]
fn revocations_and_new_certificates_apply_without_a_restart() {
    let w = start_worker();
    let first = server_serial(&w);
    assert_worker_serves(&w);

    // Revoke the client: the worker rereads the CRL (it polls every 2 s).
    w.ca.revoke("client").unwrap();
    wait_log(&w, &["TLS configuration reloaded", "file change"]);
    assert_refused(&w, &files_of(&w.ca, "client", &w.ca));
    wait_log(&w, &["refused data-plane connection", "client (role worker", "revoked"]);
    // A new certificate under the revoked name is a new serial, not revoked: once the
    // worker has reread the CRL written with it, it is accepted.
    let fresh = w.ca.issue(&IssueRequest::for_days("client", Role::Worker, 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while connect_with(&w, &files_of(&w.ca, "client", &w.ca)).and_then(|mut t| t.read(&mut [0u8; 1])).is_err() {
        assert!(Instant::now() < deadline, "the reissued client {} is still refused", fresh.cert.serial);
        std::thread::sleep(Duration::from_millis(100));
    }

    // A new certificate for the worker itself: new connections see it.
    let renewed = w.ca.issue(&IssueRequest::for_days("worker-b", Role::Worker, 1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_serial(&w) != renewed.cert.serial {
        assert!(Instant::now() < deadline, "the worker still presents {first}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A broken file is refused and the previous configuration stays in use.
    let cert_path = w.ca.cert_files("worker-b").cert_path;
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n").unwrap();
    wait_log(&w, &["TLS configuration reload failed", "worker-b.crt"]);
    assert_eq!(server_serial(&w), renewed.cert.serial);
    assert_worker_serves(&w);

    // SIGHUP reloads on demand: a good pair again, reloaded and logged as such.
    let again = w.ca.issue(&IssueRequest::for_days("worker-b", Role::Worker, 1)).unwrap();
    let pid = w.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    wait_log(&w, &["TLS configuration reloaded", "SIGHUP"]);
    assert_eq!(server_serial(&w), again.cert.serial);
    assert_worker_serves(&w);
}

#[test]
fn a_broken_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xtsync.yaml");
    std::fs::write(&path, "transfer:\n  chunk_size_kb: 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtsync-worker")).arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&path.display().to_string())
            && err.contains("transfer.chunk_size_kb")
            && err.contains("out of range"),
        "{err}"
    );
    std::fs::write(&path, "networking:\n  data_port: [1, 2]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtsync-worker")).arg("--config").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("{}:2:", path.display())), "{err}");
}

#[test]
fn a_segment_after_its_files_end_is_refused_without_harming_the_worker() {
    let w = start_worker();
    let root = tempfile::tempdir().unwrap();
    let mut tls = connect(&w);
    hello(&mut tls, root.path());
    let meta = Meta { mode: 0o644, ..Meta::default() };
    send(
        &mut tls,
        &Message::FileBegin(FileBegin { file_id: 1, path: RelPath::new("f").unwrap(), meta, size: 0, digest: None }),
    );
    send(&mut tls, &Message::FileEnd(FileEnd { file_id: 1, digest: [0; 32], aborted: false }));
    let name = *blake3::hash(b"late").as_bytes();
    send(
        &mut tls,
        &Message::Segment(Segment { file_id: 1, seg_no: 0, chunks: vec![ChunkRef { name, len: 4, zero: false }] }),
    );
    // FileDone for the (bad-digest) empty file may come first; then the refusal.
    let mut refused = false;
    while let Some(m) = recv(&mut tls) {
        if let Message::Error(e) = m {
            assert!(e.message.contains("unknown or ended file"), "{}", e.message);
            refused = true;
        }
    }
    assert!(refused, "the late segment must end the session with an error");
    assert_worker_serves(&w);
}
