//! Start-up of a data-plane daemon, shared by `xtsync-worker` and `xtsync-agent`: the
//! configuration and flags, TLS, the local store, one executor per core (data listener
//! and command loop), then the tokio control thread (registration, heartbeats, runs,
//! `/health` and `/metrics`) until SIGTERM or Ctrl-C. A [`Profile`] says what differs
//! between the two; an agent adds its own task (push or pull mode).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use xtsync_api::WorkerRegistration;
use xtsync_chunker::ChunkParams;
use xtsync_config::Config;
use xtsync_transport::{ReloadingTls, TlsFiles, TlsPolicy};

use crate::client::CoordinatorClient;
use crate::control::{control_loop, serve_http, ControlOptions};
use crate::cores::{core_main, CoreSetup};
use xtsync_link::runtime::{allowed_cpus, raise_memlock_limit, raise_nofile_limit, start_executors};
use xtsync_link::secure::KtlsPolicy;
use xtsync_metrics::WorkerMetrics;
use xtsync_receiver::admission::{Admission, AdmissionRequest, CheckedPeers};
use xtsync_sender::pass::PassContext;

use crate::admissions::serve_admissions;

/// The flags of both daemons (each overrides its configuration key).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DaemonFlags {
    /// YAML configuration (default: embedded defaults).
    #[arg(long, env = "XTSYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Name (overrides worker.name; an agent's name is its certificate's).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    /// Data-plane listen address, host:port (overrides networking).
    #[arg(long)]
    pub data_listen: Option<SocketAddr>,
    /// Address other workers use to reach this one (default: data_listen).
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Directory of the local store (overrides storage.metadata_path).
    #[arg(long)]
    pub metadata_path: Option<PathBuf>,
    /// A coordinator's REST address host:port; repeat it for every coordinator
    /// (overrides `coordinators`). Requests find the leader among them.
    #[arg(long)]
    pub coordinator: Vec<String>,
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// The CA's revocation list (overrides networking.tls.crl).
    #[arg(long)]
    pub tls_crl: Option<PathBuf>,
    /// Number of executors (first N allowed CPUs); default: worker.cores, else the
    /// daemon's default (worker: all, agent: 1).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Kernel TLS: auto, on or off (overrides transfer.ktls).
    #[arg(long)]
    pub ktls: Option<xtsync_config::KtlsMode>,
    /// Sessions of worker peers admitted: job (the coordinator vouches for the peer's
    /// job) or any (overrides networking.admit_worker_sessions).
    #[arg(long)]
    pub admit_worker_sessions: Option<xtsync_config::AdmitWorkerSessions>,
}

/// What makes a worker or an agent.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// "worker" or "agent": in logs and errors.
    pub kind: &'static str,
    pub policy: TlsPolicy,
    /// The local store lives in this directory under `storage.metadata_path`.
    pub metadata_dir_name: &'static str,
    /// Executors when neither `--cores` nor `worker.cores` says (None: every CPU).
    pub cores_default: Option<usize>,
    /// The name is the certificate's CN (`--name` may only repeat it).
    pub name_from_certificate: bool,
    pub control: ControlOptions,
    /// See [`PassContext::retry_delay_max`].
    pub pass_retry_delay_max: Duration,
    /// Peers whose data-plane sessions are checked against their job.
    pub checked_peers: CheckedPeers,
}

impl Profile {
    pub const WORKER: Profile = Profile {
        kind: "worker",
        policy: TlsPolicy::WORKER,
        metadata_dir_name: "worker",
        cores_default: None,
        name_from_certificate: false,
        control: ControlOptions::WORKER,
        pass_retry_delay_max: Duration::from_secs(5),
        checked_peers: CheckedPeers::All,
    };
}

/// What a daemon's own task (an agent's mode) gets once the daemon runs.
#[derive(Clone)]
pub struct Started {
    /// The name it registered under (the task starts once it has).
    pub name: String,
    /// The address peers dial for this daemon's data port.
    pub data_addr: String,
    pub client: CoordinatorClient,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] xtsync_config::ConfigError),
    /// A flag, or the combination of flags and configuration, is unusable.
    #[error("{0}")]
    Usage(String),
    #[error("TLS setup")]
    Tls(#[from] xtsync_transport::TlsSetupError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("local store: {0}")]
    Store(String),
    #[error("executors: {0}")]
    Executors(String),
    /// A part that runs for the daemon's life stopped.
    #[error("{0}")]
    Stopped(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// Loads the configuration (default: the embedded one) and sets up logging from it.
pub fn load_config(flags: &DaemonFlags) -> Result<Config, DaemonError> {
    let config = match &flags.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    init_logging(&config);
    Ok(config)
}

/// Runs the daemon until SIGTERM or Ctrl-C. `task` is started once the daemon is up
/// and registered with the coordinator;
/// its error stops the daemon, its success leaves the daemon running. On return the
/// executors still run: the caller ends the process (they hold no state that needs a
/// clean stop: unfinished files are temporary files, never under their final name).
pub fn run<F, Fut>(flags: &DaemonFlags, config: &Config, profile: Profile, task: F) -> Result<(), DaemonError>
where
    F: FnOnce(Started) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    xtsync_sender::lease::ignore_break_signal();
    let mut data_listen = flags.data_listen.unwrap_or(config.networking.data_listen);
    if data_listen.port() == 0 {
        // Every executor binds the same port (SO_REUSEPORT): pick it once.
        data_listen = std::net::TcpListener::bind(data_listen)
            .and_then(|l| l.local_addr())
            .map_err(io(format!("binding the data port {data_listen}")))?;
    }
    let http_listen = flags.http_listen.unwrap_or(config.networking.http_listen);
    let advertise = flags.advertise.clone().unwrap_or_else(|| {
        if flags.data_listen.is_some() {
            data_listen.to_string()
        } else {
            config.networking.data_advertise.clone()
        }
    });
    let metadata_path =
        flags.metadata_path.clone().unwrap_or(config.storage.metadata_path.join(profile.metadata_dir_name));
    let coordinators: Vec<String> = if flags.coordinator.is_empty() {
        config.coordinators.iter().map(|c| c.api_addr.clone()).collect()
    } else {
        flags.coordinator.clone()
    };
    let tls_files = TlsFiles::from_flags_or_config(
        flags.tls_cert.as_deref(),
        flags.tls_key.as_deref(),
        flags.tls_ca.as_deref(),
        flags.tls_crl.as_deref(),
        config.networking.tls.as_ref(),
        profile.policy.own_role,
    )
    .map_err(DaemonError::Usage)?;
    // Before the certificates: without kernel TLS, `ktls: on` is the first thing to say.
    let ktls = KtlsPolicy::from_mode(flags.ktls.unwrap_or(config.transfer.ktls))
        .map_err(|e| DaemonError::Usage(format!("transfer.ktls is on, but this kernel cannot take TLS keys: {e}")))?;
    if tls_files.crl.is_none() {
        tracing::warn!("no CRL configured (networking.tls.crl): revoked certificates are not refused");
    }
    let tls = ReloadingTls::load(tls_files, profile.policy)?;
    let name = own_name(flags, config, &profile, &tls.current().own.name)?;

    raise_memlock_limit().map_err(|e| DaemonError::Executors(e.to_string()))?;
    raise_nofile_limit();
    std::fs::create_dir_all(&metadata_path).map_err(io(format!("creating {}", metadata_path.display())))?;
    let store: Arc<dyn xtsync_store::WorkerStore> = Arc::new(
        xtsync_store::RocksStore::open(&metadata_path.join("store"))
            .map_err(|e| DaemonError::Store(format!("{}: {e}", metadata_path.join("store").display())))?,
    );
    tls.watch();
    let metrics = Arc::new(WorkerMetrics::default());

    let cpus = executor_cpus(flags, config, &profile)?;
    let (admission_tx, admission_rx) = flume::unbounded::<AdmissionRequest>();
    let checked = match flags.admit_worker_sessions.unwrap_or(config.networking.admit_worker_sessions) {
        xtsync_config::AdmitWorkerSessions::Job => profile.checked_peers,
        xtsync_config::AdmitWorkerSessions::Any => {
            tracing::warn!(
                "sessions of any worker peer are admitted without a job check (networking.admit_worker_sessions: any)"
            );
            CheckedPeers::Agents
        }
    };
    let admission = Admission { checked, requests: admission_tx };
    let per_file_sync = config.transfer.small_batch_sync == xtsync_config::SmallBatchSync::PerFile;
    if per_file_sync {
        tracing::info!("small batches are made durable file by file (transfer.small_batch_sync: per_file)");
    }
    let sessions = SessionOptions { ktls, per_file_sync };
    let core_txs = start_cores(&cpus, data_listen, store.clone(), &tls, sessions, &metrics, admission)?;
    tracing::info!(%name, %data_listen, %http_listen, cores = ?cpus, "{} started", profile.kind);

    let chunk_params = ChunkParams::from_avg(config.transfer.chunk_bytes_avg)
        .map_err(|e| DaemonError::Usage(format!("transfer.chunk_size_kb: {e}")))?;
    let ctx = Arc::new(PassContext {
        cores: core_txs,
        store,
        tls: tls.clone(),
        ktls,
        metrics: metrics.clone(),
        chunk_params,
        retry_delay_max: profile.pass_retry_delay_max,
        journals: Arc::default(),
    });
    let site = flags.site.clone().unwrap_or(config.worker.site.clone());
    let registration = WorkerRegistration {
        name: name.clone(),
        site,
        data_addr: advertise.clone(),
        http_addr: http_listen.to_string(),
        cores: cpus.len() as u32,
    };
    let client = CoordinatorClient::new(&coordinators, tls.clone()).map_err(|e| DaemonError::Usage(e.to_string()))?;
    let started = Started { name: name.clone(), data_addr: advertise, client: client.clone() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(io("tokio runtime"))?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
        // SIGHUP reloads certificates, key, CA and CRL (its default action would kill us).
        let mut hup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
        tokio::spawn(serve_admissions(admission_rx, client.clone(), name.clone()));
        let http = tokio::spawn(serve_http(http_listen, name, metrics));
        let (registered_tx, registered) = tokio::sync::oneshot::channel();
        let control = tokio::spawn(control_loop(client, registration, ctx, profile.control, registered_tx));
        // The daemon's own task (an agent's mode) acts as the registered worker: it
        // starts once the coordinator knows it (a pull agent that asked first was
        // refused as "not registered" and gave up, when the machine was busy).
        let own_task = task(started);
        let mut own = Some(tokio::spawn(async move {
            match registered.await {
                Ok(()) => own_task.await,
                // The control loop ended: the select below reports why.
                Err(_) => std::future::pending().await,
            }
        }));
        tokio::pin!(http, control);
        loop {
            let own_done = async {
                match own.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = hup.recv() => tls.reload_logged("SIGHUP"),
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
                _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); break }
                r = &mut http => return Err(DaemonError::Stopped(format!("HTTP endpoint stopped: {r:?}"))),
                r = &mut control => return Err(DaemonError::Stopped(format!("control loop stopped: {r:?}"))),
                r = own_done => match r {
                    Ok(Ok(())) => own = None,
                    Ok(Err(e)) => return Err(DaemonError::Stopped(e)),
                    Err(e) => return Err(DaemonError::Stopped(format!("{} task failed: {e}", profile.kind))),
                },
            }
        }
        Ok(())
    })
}

/// A worker's name is `--name` or `worker.name` (a certificate of another name is
/// logged: the coordinator refuses it); an agent's is its certificate's CN.
fn own_name(flags: &DaemonFlags, config: &Config, profile: &Profile, cert_name: &str) -> Result<String, DaemonError> {
    if profile.name_from_certificate {
        if let Some(name) = flags.name.as_deref().filter(|n| *n != cert_name) {
            return Err(DaemonError::Usage(format!(
                "--name {name}: an {}'s name is its certificate's common name, {cert_name:?}",
                profile.kind
            )));
        }
        return Ok(cert_name.to_string());
    }
    let name = flags.name.clone().unwrap_or(config.worker.name.clone());
    if cert_name != name {
        tracing::warn!(own = %cert_name, %name, "the certificate's name differs from the worker name: the coordinator will refuse registration");
    }
    Ok(name)
}

fn executor_cpus(flags: &DaemonFlags, config: &Config, profile: &Profile) -> Result<Vec<usize>, DaemonError> {
    let configured = !config.worker.cores.is_empty();
    let mut cpus = if configured { config.worker.cores.clone() } else { allowed_cpus() };
    let wanted = flags.cores.or(if configured { None } else { profile.cores_default });
    if let Some(n) = wanted {
        if n == 0 || n > cpus.len() {
            return Err(DaemonError::Usage(format!("--cores {n}: this process may use {} CPUs", cpus.len())));
        }
        cpus.truncate(n);
    }
    Ok(cpus)
}

/// How the data-plane sessions of this process run.
struct SessionOptions {
    ktls: KtlsPolicy,
    /// `transfer.small_batch_sync: per_file`.
    per_file_sync: bool,
}

/// One executor per CPU, each listening on the data port; returns once all listen.
fn start_cores(
    cpus: &[usize],
    data_listen: SocketAddr,
    store: Arc<dyn xtsync_store::WorkerStore>,
    tls: &ReloadingTls,
    sessions: SessionOptions,
    metrics: &Arc<WorkerMetrics>,
    admission: Admission,
) -> Result<Vec<flume::Sender<xtsync_sender::CoreCommand>>, DaemonError> {
    let SessionOptions { ktls, per_file_sync } = sessions;
    let (listening_tx, listening) = flume::unbounded();
    let setup = Arc::new(CoreSetup {
        data_listen,
        store,
        partials: Arc::default(),
        server_tls: tls.clone(),
        ktls,
        per_file_sync,
        metrics: metrics.clone(),
        admission,
        listening: listening_tx,
    });
    let (core_txs, core_rxs): (Vec<_>, Vec<_>) = cpus.iter().map(|_| flume::unbounded()).unzip();
    let core_rxs = Arc::new(std::sync::Mutex::new(core_rxs.into_iter().map(Some).collect::<Vec<_>>()));
    let executors = start_executors(cpus, move |core| {
        let setup = setup.clone();
        let rx = core_rxs.lock().unwrap_or_else(|p| p.into_inner())[core].take().expect("one receiver per core");
        async move { core_main(core, setup, rx).await }
    })
    .map_err(|e| DaemonError::Executors(e.to_string()))?;
    // The executor threads run for the process's life (dropping a handle detaches).
    drop(executors);
    // Register only once every executor accepts sessions: a source handed a pass at
    // once must not find the port closed.
    for _ in 0..cpus.len() {
        match listening.recv_timeout(Duration::from_secs(30)) {
            Ok((_, Ok(()))) => {}
            Ok((core, Err(e))) => return Err(DaemonError::Executors(format!("executor {core}: {e}"))),
            Err(_) => return Err(DaemonError::Executors("the executors did not start listening within 30 s".into())),
        }
    }
    Ok(core_txs)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XTSYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.logging.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.logging.json {
        builder.json().init();
    } else {
        builder.init();
    }
}
