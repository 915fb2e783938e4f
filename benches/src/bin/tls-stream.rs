//! `tls-stream`: throughput and CPU cost of the data plane's TLS path, user space
//! (rustls) or kernel (kTLS), through the worker's own session code
//! (`xtsync_link::secure`) on its pinned glommio executors, over loopback.
//!
//! Session k's sender runs on executor k mod N and its receiver on executor k+1 mod N,
//! so one session keeps both ends on different cores and N sessions load every core.
//! Prints one line per run: sessions, path, MB/s, CPU seconds per GB (all threads of
//! this process, both ends) — the figures of issue 4 in `perf/RESULTS.md`. With
//! `--verify` both ends hash their stream (BLAKE3) and the run fails unless every
//! session's receiver got exactly what its sender sent (a correctness check; it costs
//! CPU, so figures are taken without it).
//!
//! ```text
//! tls-stream [--sessions N] [--gib-per-session G] [--write-kib K] [--ktls auto|on|off] [--verify]
//! ```

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use xtsync_config::KtlsMode;
use xtsync_link::frames::Counted;
use xtsync_link::runtime::{allowed_cpus, raise_memlock_limit, start_executors};
use xtsync_link::secure::{establish, KtlsPolicy};
use xtsync_metrics::WorkerMetrics;
use xtsync_transport::ktls::TlsPath;

struct Options {
    sessions: usize,
    bytes_per_session: u64,
    write_bytes: usize,
    ktls: KtlsMode,
    verify: bool,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o =
        Options { sessions: 1, bytes_per_session: 2 << 30, write_bytes: 1 << 20, ktls: KtlsMode::Auto, verify: false };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--sessions" => o.sessions = value()?.parse()?,
            "--gib-per-session" => o.bytes_per_session = (value()?.parse::<f64>()? * (1u64 << 30) as f64) as u64,
            "--write-kib" => o.write_bytes = value()?.parse::<usize>()? * 1024,
            "--ktls" => o.ktls = value()?.parse().map_err(anyhow::Error::msg)?,
            "--verify" => o.verify = true,
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other}"),
        }
    }
    if o.sessions == 0 || o.write_bytes == 0 {
        bail!("--sessions and --write-kib must be positive");
    }
    Ok(o)
}

fn cpu_seconds() -> f64 {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a valid value.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given, which lives on this stack.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    raise_memlock_limit()?;
    let dir = tempfile::tempdir()?;
    let ca = xtsync_transport::CertAuthority::init(dir.path(), "bench")?;
    let node = ca.issue(&xtsync_transport::IssueRequest::for_days("bench", xtsync_transport::Role::Worker, 1))?.files;
    let files = xtsync_transport::TlsFiles {
        cert: node.cert_path,
        key: node.key_path,
        ca: ca.ca_files().cert_path,
        crl: Some(ca.ca_files().crl_path),
    };
    let server_tls = xtsync_transport::server_config(&files, &xtsync_transport::TlsPolicy::WORKER)?;
    let client_tls = xtsync_transport::client_config(&files, &xtsync_transport::TlsPolicy::WORKER)?;
    let policy = KtlsPolicy::from_mode(o.ktls)?;
    let metrics = Arc::new(WorkerMetrics::default());
    let cpus = allowed_cpus();
    let ports: Vec<u16> = (0..o.sessions)
        .map(|_| Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()))
        .collect::<std::io::Result<_>>()?;
    let received = Arc::new(AtomicU64::new(0));
    // (session, is the receiver, BLAKE3 of the stream when verifying)
    let (done_tx, done_rx) = flume::unbounded::<anyhow::Result<(usize, bool, Option<blake3::Hash>)>>();
    let (ready_tx, ready_rx) = flume::unbounded::<()>();
    let (go_tx, go_rx) = flume::unbounded::<()>();

    let n = cpus.len();
    let (sessions, bytes, write_bytes, verify) = (o.sessions, o.bytes_per_session, o.write_bytes, o.verify);
    let _executors = start_executors(&cpus, {
        let (metrics, received, ports) = (metrics.clone(), received.clone(), ports.clone());
        move |core| {
            let (server_tls, client_tls, metrics, received, ports) =
                (server_tls.clone(), client_tls.clone(), metrics.clone(), received.clone(), ports.clone());
            let (done_tx, ready_tx, go_rx) = (done_tx.clone(), ready_tx.clone(), go_rx.clone());
            async move {
                let mut tasks = Vec::new();
                for (k, &port) in ports.iter().enumerate() {
                    if (k + 1) % n == core {
                        let (tls, metrics, received, done) =
                            (server_tls.clone(), metrics.clone(), received.clone(), done_tx.clone());
                        let listener = glommio::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
                        let _ = ready_tx.send(());
                        tasks.push(glommio::spawn_local(async move {
                            let r = receive(listener, tls, policy, &metrics, &received, verify).await;
                            let _ = done.send(r.map(|h| (k, true, h)));
                        }));
                    }
                }
                let _ = go_rx.recv_async().await;
                for (k, &port) in ports.iter().enumerate() {
                    if k % n == core {
                        let (tls, metrics, done) = (client_tls.clone(), metrics.clone(), done_tx.clone());
                        tasks.push(glommio::spawn_local(async move {
                            let r = send(port, tls, policy, &metrics, bytes, write_bytes, verify).await;
                            let _ = done.send(r.map(|h| (k, false, h)));
                        }));
                    }
                }
                for t in tasks {
                    t.await;
                }
            }
        }
    })?;
    for _ in 0..sessions {
        ready_rx.recv_timeout(Duration::from_secs(10)).context("listeners did not start")?;
    }
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    for _ in 0..n {
        let _ = go_tx.send(());
    }
    let mut hashes = std::collections::HashMap::new();
    for _ in 0..2 * sessions {
        let (k, receiver, hash) = done_rx.recv()??;
        hashes.insert((k, receiver), hash);
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let total = received.load(Ordering::Relaxed);
    if total != bytes * sessions as u64 {
        bail!("received {total} bytes, expected {}", bytes * sessions as u64);
    }
    if verify {
        for k in 0..sessions {
            if hashes.get(&(k, true)) != hashes.get(&(k, false)) {
                bail!("session {k}: the receiver's bytes differ from the sender's");
            }
        }
    }
    let kernel = metrics.tls_sessions_kernel_total.load(Ordering::Relaxed);
    let user = metrics.tls_sessions_userspace_total.load(Ordering::Relaxed);
    let path = match (kernel, user) {
        (_, 0) => "kernel",
        (0, _) => "userspace",
        _ => "mixed",
    };
    let gb = total as f64 / 1e9;
    println!(
        "tls-stream sessions={sessions} cores={n} path={path} write_kib={} bytes={total} verified={verify} wall_s={wall:.3} MB/s={:.0} cpu_s={cpu:.2} cpu_s_per_GB={:.2}",
        write_bytes / 1024,
        gb * 1e3 / wall,
        cpu / gb
    );
    std::process::exit(0)
}

async fn receive(
    listener: glommio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    policy: KtlsPolicy,
    metrics: &WorkerMetrics,
    received: &AtomicU64,
    verify: bool,
) -> anyhow::Result<Option<blake3::Hash>> {
    let tcp = listener.accept().await.map_err(|e| anyhow::anyhow!("accept: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = futures_rustls::TlsAcceptor::from(tls).accept(Counted::new(tcp, Rc::default())).await?;
    let (mut stream, _path): (_, TlsPath) = establish(tls.into(), policy, metrics)?;
    // The receiving side speaks first, as a target does (`Ready`).
    stream.write_all(b"R").await?;
    stream.flush().await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut hasher = verify.then(blake3::Hasher::new);
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(hasher.map(|h| h.finalize()));
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn send(
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    policy: KtlsPolicy,
    metrics: &WorkerMetrics,
    bytes: u64,
    write_bytes: usize,
    verify: bool,
) -> anyhow::Result<Option<blake3::Hash>> {
    let tcp =
        glommio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| anyhow::anyhow!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = futures_rustls::TlsConnector::from(tls).connect(name, Counted::new(tcp, Rc::default())).await?;
    let (mut stream, _path) = establish(tls.into(), policy, metrics)?;
    let mut ready = [0u8; 1];
    stream.read_exact(&mut ready).await?;
    if ready != *b"R" {
        bail!("expected the receiver's R first, got {ready:?}");
    }
    let mut hasher = verify.then(blake3::Hasher::new);
    // A different block per write, so that a lost, repeated or reordered write shows.
    let blocks: Vec<Vec<u8>> = (0..4).map(|i| xtsync_benches::random_bytes(write_bytes, 7 + i)).collect();
    let mut left = bytes;
    let mut i = 0;
    while left > 0 {
        let n = left.min(write_bytes as u64) as usize;
        let block = &blocks[i % blocks.len()][..n];
        if let Some(h) = hasher.as_mut() {
            h.update(block);
        }
        stream.write_all(block).await?;
        left -= n as u64;
        i += 1;
    }
    stream.close().await?;
    Ok(hasher.map(|h| h.finalize()))
}
