//! The `tls-stream` bench moves its bytes intact through the worker's session code:
//! with `--verify` it compares a BLAKE3 of each session's stream at both ends, and it
//! names the TLS path it used (the figures it prints are for `perf/RESULTS.md`, not
//! asserted here).

use std::process::Command;

#[test]
fn tls_stream_moves_every_byte_and_names_its_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_tls-stream"))
        .args(["--sessions", "2", "--gib-per-session", "0.03125", "--ktls", "auto", "--verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "tls-stream failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("tls-stream ")).expect("a result line");
    assert!(line.contains(&format!("bytes={}", 2 * (32u64 << 20))) && line.contains("verified=true"), "{line}");
    let kernel_has_tls = xtsync_transport::ktls::probe().is_ok();
    let path = if kernel_has_tls { "path=kernel" } else { "path=userspace" };
    assert!(line.contains(path), "expected {path}: {line}");
}
