//! `xtsyncctl quickstart`: a single-node coordinator and two workers (sites `a` and
//! `b`) on loopback, with a CA and certificates generated under the state directory,
//! replicating SOURCE to TARGET through the same code paths as production.

mod continuous;
mod daemons;
mod sample;
mod verify;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use xtsync_api::{Job, JobOptions, JobSpec, PassSummary, RunState};
use xtsync_transport::{CertAuthority, IssueRequest, NodeCertFiles, Role, TlsFiles};

use crate::client::Client;
use crate::output::{print_summary, wait_for_run};
use continuous::Daemons;
use daemons::{free_port, sibling_binary, Daemon};
pub use verify::compare_trees;

#[derive(clap::Args, Debug)]
pub struct QuickstartArgs {
    /// Tree to replicate (default: a generated sample tree under the state directory).
    #[arg(long)]
    pub source: Option<PathBuf>,
    /// Where to replicate it (default: STATE/target).
    #[arg(long)]
    pub target: Option<PathBuf>,
    /// State directory: certificates, metadata stores, logs.
    #[arg(long, default_value = "xtsync-quickstart")]
    pub state: PathBuf,
    /// Exit after one complete, verified pass (exit code 0 only then). Without it the
    /// job is continuous: after the first pass (verified) every change is replicated
    /// until interrupted, with the lag printed every --interval-s.
    #[arg(long)]
    pub once: bool,
    /// Print the pass summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Start the daemons and create the (one-shot) job, print one JSON line saying how
    /// to reach them (coordinator, job id, admin certificate), and run no pass: keep
    /// the daemons up until stdin closes or Ctrl-C. For benchmarks that time
    /// `xtsyncctl job run` against running daemons, as operators run it.
    #[arg(long, conflicts_with = "once")]
    pub serve: bool,
    /// Executors per worker (default: one per CPU).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Compression policy: auto, always or never.
    #[arg(long, default_value = "auto")]
    pub compression: String,
    /// Also hash every file's content on both sides when verifying.
    #[arg(long)]
    pub verify_content: bool,
    /// Kernel TLS on the data plane: auto (where the kernel has it), on (required) or off.
    #[arg(long, default_value = "auto")]
    pub ktls: String,
    /// Without --once: seconds between status lines (lag, pending changes).
    #[arg(long, default_value_t = 5)]
    pub interval_s: u64,
    /// Bandwidth limit for the job, e.g. 20MB/s (default unlimited).
    #[arg(long, value_parser = crate::rates::parse_rate, default_value = "unlimited")]
    pub rate_limit: u64,
    /// Without --once: how long changes are gathered into one batch, in milliseconds.
    #[arg(long, default_value_t = xtsync_api::job::BATCH_WINDOW_MS_DEFAULT)]
    pub batch_window_ms: u32,
}

#[derive(Serialize)]
struct QuickstartReport {
    #[serde(flatten)]
    summary: PassSummary,
    run_id: u64,
    source: String,
    target: String,
    verified: bool,
    worker_peak_rss_bytes: BTreeMap<String, u64>,
    /// Who encrypted this pass's data-plane sessions at both ends: `kernel`,
    /// `userspace` or `mixed` (from the workers' /metrics).
    data_tls: &'static str,
    /// Raw chunk bytes the kernel sent straight from source files in this pass
    /// (`sendfile` on kernel-TLS sessions; 0 under rustls).
    data_sendfile_bytes: u64,
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    p.canonicalize().with_context(|| format!("resolving {}", p.display()))
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let state = absolute(&args.state)?;
    let source = match &args.source {
        Some(s) => s.canonicalize().with_context(|| format!("source {}", s.display()))?,
        None => {
            let s = state.join("sample");
            if !s.exists() {
                sample::create_sample_tree(&s)
                    .with_context(|| format!("creating the sample tree in {}", s.display()))?;
            }
            s.canonicalize()?
        }
    };
    let target = absolute(&args.target.clone().unwrap_or_else(|| state.join("target")))?;
    if target.starts_with(&source) || source.starts_with(&target) {
        bail!("source {} and target {} must not contain each other", source.display(), target.display());
    }
    let compression = args.compression.parse().map_err(anyhow::Error::msg)?;
    args.ktls.parse::<xtsync_config::KtlsMode>().map_err(|e| anyhow::anyhow!("--ktls: {e}"))?;

    // Certificates: one CA, and one certificate per component with its role.
    let pki = state.join("pki");
    let ca = CertAuthority::open_or_init(&pki, "quickstart")?;
    let mut certs = BTreeMap::new();
    for (name, role) in [
        ("coordinator", Role::Coordinator),
        ("worker-a", Role::Worker),
        ("worker-b", Role::Worker),
        ("admin", Role::Admin),
    ] {
        certs.insert(name, ensure_cert(&ca, name, role)?);
    }
    let ca_files = ca.ca_files();
    let tls_args = |name: &str| -> Vec<String> {
        let c = &certs[name];
        vec![
            "--tls-cert".into(),
            c.cert_path.display().to_string(),
            "--tls-key".into(),
            c.key_path.display().to_string(),
            "--tls-ca".into(),
            ca_files.cert_path.display().to_string(),
            "--tls-crl".into(),
            ca_files.crl_path.display().to_string(),
        ]
    };

    let logs = state.join("logs");
    let coordinator_port = free_port()?;
    let coordinator_addr = format!("127.0.0.1:{coordinator_port}");
    let mut coordinator_args = vec![
        "--http-listen".into(),
        coordinator_addr.clone(),
        "--metadata-path".into(),
        state.join("coordinator").display().to_string(),
        "--init".into(),
    ];
    coordinator_args.extend(tls_args("coordinator"));
    let mut coordinator =
        Daemon::start("coordinator", &sibling_binary("xtsync-coordinator")?, &coordinator_args, &logs)?;
    let admin = &certs["admin"];
    let client = Client::new(
        std::slice::from_ref(&coordinator_addr),
        &TlsFiles {
            cert: admin.cert_path.clone(),
            key: admin.key_path.clone(),
            ca: ca_files.cert_path.clone(),
            crl: Some(ca_files.crl_path.clone()),
        },
    )?;
    wait_healthy(&client, &mut coordinator).await?;

    let mut workers = Vec::new();
    let mut worker_http = Vec::new();
    for name in ["a", "b"] {
        let http_addr = format!("127.0.0.1:{}", free_port()?);
        worker_http.push(http_addr.clone());
        let mut args_w = vec![
            "--name".to_string(),
            format!("worker-{name}"),
            "--site".into(),
            name.into(),
            "--data-listen".into(),
            format!("127.0.0.1:{}", free_port()?),
            "--http-listen".into(),
            http_addr,
            "--metadata-path".into(),
            state.join(format!("worker-{name}")).display().to_string(),
            "--ktls".into(),
            args.ktls.clone(),
            "--coordinator".into(),
            coordinator_addr.clone(),
        ];
        args_w.extend(tls_args(&format!("worker-{name}")));
        if let Some(n) = args.cores {
            args_w.extend(["--cores".into(), n.to_string()]);
        }
        workers.push(Daemon::start(&format!("worker-{name}"), &sibling_binary("xtsync-worker")?, &args_w, &logs)?);
    }
    wait_workers(&client, &mut workers).await?;

    let spec = JobSpec {
        name: "quickstart".into(),
        source_worker: "worker-a".into(),
        source_path: source.display().to_string(),
        target_worker: "worker-b".into(),
        target_path: target.display().to_string(),
        options: JobOptions {
            delete: true,
            compression,
            continuous: !args.once && !args.serve,
            batch_window_ms: args.batch_window_ms,
            rate_limit_bytes_per_s: args.rate_limit,
            ..JobOptions::default()
        },
        agents: vec![],
    };
    let job = ensure_job(&client, spec).await?;
    if args.serve {
        return serve(&job, &certs["admin"], &ca_files, &coordinator_addr, &mut coordinator, &mut workers).await;
    }
    if !args.json {
        println!(
            "replicating {} (worker-a) -> {} (worker-b); logs in {}",
            source.display(),
            target.display(),
            logs.display()
        );
    }
    if !args.once {
        let daemons = Daemons { coordinator: &mut coordinator, workers: &mut workers };
        return continuous::replicate(&client, job.id, &source, &target, &args, daemons).await;
    }

    let counts_before = data_path_counts(&worker_http).await?;
    {
        let started = Instant::now();
        let run = client.start_run(job.id).await?;
        let finished = tokio::select! {
            r = wait_for_run(&client, run.id, args.json) => r?,
            dead = watch(&mut coordinator, &mut workers) => return Err(dead),
        };
        let summary = match (&finished.state, finished.summary) {
            (RunState::Succeeded, Some(s)) => s,
            (state, _) => bail!("pass {} did not succeed: {}", run.id, crate::output::state_name(state)),
        };
        let diffs = compare_trees(&source, &target, args.verify_content, 10)?;
        let counts = data_path_counts(&worker_http).await?;
        let data_tls = data_tls_path(
            counts.tls_sessions_kernel - counts_before.tls_sessions_kernel,
            counts.tls_sessions_userspace - counts_before.tls_sessions_userspace,
        );
        let data_sendfile_bytes = counts.chunk_bytes_sendfile - counts_before.chunk_bytes_sendfile;
        let report = QuickstartReport {
            summary,
            run_id: run.id,
            source: source.display().to_string(),
            target: target.display().to_string(),
            verified: diffs.is_empty(),
            worker_peak_rss_bytes: workers
                .iter()
                .filter_map(|w| w.peak_rss_bytes().map(|b| (w.name.clone(), b)))
                .collect(),
            data_tls,
            data_sendfile_bytes,
        };
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print_summary(&report.summary);
            println!(
                "pass {} {} in {:.2} s",
                run.id,
                if diffs.is_empty() { "verified" } else { "NOT verified" },
                started.elapsed().as_secs_f64()
            );
        }
        if !diffs.is_empty() {
            bail!("target differs from source:\n{}", diffs.join("\n"));
        }
        Ok(())
    }
}

/// `--serve`: say how to reach the daemons, then keep them up until stdin closes,
/// Ctrl-C, or one of them dies.
async fn serve(
    job: &Job,
    admin: &NodeCertFiles,
    ca: &xtsync_transport::CaFiles,
    coordinator_addr: &str,
    coordinator: &mut Daemon,
    workers: &mut [Daemon],
) -> anyhow::Result<()> {
    let ready = serde_json::json!({
        "coordinator": coordinator_addr,
        "job_id": job.id,
        "cert": admin.cert_path,
        "key": admin.key_path,
        "ca": ca.cert_path,
        "crl": ca.crl_path,
    });
    println!("{ready}");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    });
    tokio::select! {
        _ = stdin_closed => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
        dead = watch(coordinator, workers) => Err(dead),
    }
}

/// The certificate of `name`, issued unless a valid one of the right role exists.
fn ensure_cert(ca: &CertAuthority, name: &str, role: Role) -> anyhow::Result<NodeCertFiles> {
    let files = ca.cert_files(name);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let current = ca.index()?.certs.into_iter().rev().find(|c| c.name == name);
    let usable = current.is_some_and(|c| c.role == role && c.state(now) == xtsync_transport::pki::CertState::Valid);
    if usable && files.cert_path.exists() && files.key_path.exists() {
        return Ok(files);
    }
    Ok(ca.issue(&IssueRequest::for_days(name, role, xtsync_transport::pki::CERT_DAYS_DEFAULT))?.files)
}

async fn wait_healthy(client: &Client, d: &mut Daemon) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        d.check_alive()?;
        if client.health().await && client.status().await.is_ok_and(|s| s.leader_id.is_some()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the coordinator did not become ready within 60 s (log: {})", d.log.display())
}

async fn wait_workers(client: &Client, workers: &mut [Daemon]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        for w in workers.iter_mut() {
            w.check_alive()?;
        }
        let registered = client.workers().await.unwrap_or_default();
        if workers.iter().all(|w| registered.iter().any(|r| r.registration.name == w.name && r.alive)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the workers did not register within 60 s (logs under {})",
        workers[0].log.parent().unwrap_or(Path::new(".")).display()
    )
}

/// Resolves to an error as soon as a daemon dies.
async fn watch(coordinator: &mut Daemon, workers: &mut [Daemon]) -> anyhow::Error {
    loop {
        if let Err(e) = coordinator.check_alive() {
            return e;
        }
        for w in workers.iter_mut() {
            if let Err(e) = w.check_alive() {
                return e;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The quickstart job, created or replaced when its definition changed.
async fn ensure_job(client: &Client, spec: JobSpec) -> anyhow::Result<Job> {
    if let Some(existing) = client.jobs().await?.into_iter().find(|j| j.spec.name == spec.name) {
        if existing.spec == spec {
            return Ok(existing);
        }
        client.delete_job(existing.id).await?;
    }
    client.create_job(&spec).await
}

/// What both workers' data paths counted so far.
#[derive(Debug, Default, Clone, Copy)]
struct DataPathCounts {
    tls_sessions_kernel: u64,
    tls_sessions_userspace: u64,
    chunk_bytes_sendfile: u64,
}

async fn data_path_counts(worker_http: &[String]) -> anyhow::Result<DataPathCounts> {
    // The workers' /metrics port is plain HTTP on loopback (counters only): a client
    // without TLS, so that no crypto provider is needed for it.
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).use_preconfigured_tls(plain_tls()?).build()?;
    let mut totals = DataPathCounts::default();
    for addr in worker_http {
        let text = http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
        totals.tls_sessions_kernel += metric_value(&text, "xtsync_worker_tls_sessions_kernel_total");
        totals.tls_sessions_userspace += metric_value(&text, "xtsync_worker_tls_sessions_userspace_total");
        totals.chunk_bytes_sendfile += metric_value(&text, "xtsync_worker_chunk_bytes_sendfile_total");
    }
    Ok(totals)
}

/// A TLS configuration for a client that only speaks plain HTTP (reqwest wants one).
fn plain_tls() -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Pure: the JSON `data_tls` value from the session ends counted during a pass.
fn data_tls_path(kernel: u64, userspace: u64) -> &'static str {
    match (kernel, userspace) {
        (0, 0) => "none",
        (_, 0) => "kernel",
        (0, _) => "userspace",
        _ => "mixed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_tls_names_the_path_of_every_session_end() {
        assert_eq!(data_tls_path(4, 0), "kernel");
        assert_eq!(data_tls_path(0, 4), "userspace");
        assert_eq!(data_tls_path(2, 2), "mixed");
        assert_eq!(data_tls_path(0, 0), "none");
        let text = "# HELP x\nxtsync_worker_tls_sessions_kernel_total 3\nxtsync_worker_tls_sessions_kernel_totalx 9\n";
        assert_eq!(metric_value(text, "xtsync_worker_tls_sessions_kernel_total"), 3);
        assert_eq!(metric_value(text, "xtsync_worker_tls_sessions_userspace_total"), 0);
    }
}
