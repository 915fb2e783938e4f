//! `xtsync-worker`: the data-plane daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use xtsync_api::WorkerRegistration;
use xtsync_chunker::ChunkParams;
use xtsync_config::Config;
use xtsync_transport::{ReloadingTls, TlsFiles, TlsPolicy};
use xtsync_worker::control::{control_loop, serve_http, CoordinatorClient};
use xtsync_worker::cores::{core_main, CoreSetup};
use xtsync_worker::metrics::WorkerMetrics;
use xtsync_worker::runtime::{allowed_cpus, raise_memlock_limit, raise_nofile_limit, start_executors};
use xtsync_worker::secure::KtlsPolicy;
use xtsync_worker::source::pass::PassContext;

#[derive(Parser, Debug)]
#[command(name = "xtsync-worker", version, about = "xtsync data-plane worker")]
struct Args {
    /// YAML configuration (default: embedded defaults).
    #[arg(long, env = "XTSYNC_CONFIG")]
    config: Option<PathBuf>,
    /// Worker name (overrides worker.name).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    site: Option<String>,
    /// Data-plane listen address, host:port (overrides networking).
    #[arg(long)]
    data_listen: Option<SocketAddr>,
    /// Address other workers use to reach this one (default: data_listen).
    #[arg(long)]
    advertise: Option<String>,
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Directory of the worker's local store (overrides storage.metadata_path).
    #[arg(long)]
    metadata_path: Option<PathBuf>,
    /// Coordinator REST address host:port (overrides coordinators[0]).
    #[arg(long)]
    coordinator: Option<String>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The CA's revocation list (overrides networking.tls.crl).
    #[arg(long)]
    tls_crl: Option<PathBuf>,
    /// Number of executors (first N allowed CPUs); default: worker.cores or all.
    #[arg(long)]
    cores: Option<usize>,
    /// Kernel TLS: auto, on or off (overrides transfer.ktls).
    #[arg(long)]
    ktls: Option<xtsync_config::KtlsMode>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    init_logging(&config);

    let name = args.name.clone().unwrap_or(config.worker.name.clone());
    let site = args.site.clone().unwrap_or(config.worker.site.clone());
    let mut data_listen = args.data_listen.unwrap_or(config.networking.data_listen);
    if data_listen.port() == 0 {
        // Every executor binds the same port (SO_REUSEPORT): pick it once.
        data_listen = std::net::TcpListener::bind(data_listen)?.local_addr()?;
    }
    let http_listen = args.http_listen.unwrap_or(config.networking.http_listen);
    let advertise = args.advertise.clone().unwrap_or_else(|| {
        if args.data_listen.is_some() {
            data_listen.to_string()
        } else {
            config.networking.data_advertise.clone()
        }
    });
    let metadata_path = args.metadata_path.clone().unwrap_or(config.storage.metadata_path.join("worker"));
    let coordinator = args.coordinator.clone().unwrap_or_else(|| config.coordinators[0].api_addr.clone());
    let tls_files = TlsFiles::from_flags_or_config(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_ca.as_deref(),
        args.tls_crl.as_deref(),
        config.networking.tls.as_ref(),
        xtsync_transport::Role::Worker,
    )
    .map_err(anyhow::Error::msg)?;
    if tls_files.crl.is_none() {
        tracing::warn!("no CRL configured (networking.tls.crl): revoked certificates are not refused");
    }

    let ktls = KtlsPolicy::from_mode(args.ktls.unwrap_or(config.transfer.ktls))
        .context("transfer.ktls is on, but this kernel cannot take TLS keys")?;
    raise_memlock_limit()?;
    raise_nofile_limit();
    std::fs::create_dir_all(&metadata_path).with_context(|| format!("creating {}", metadata_path.display()))?;
    let store: Arc<dyn xtsync_store::WorkerStore> =
        Arc::new(xtsync_store::RocksStore::open(&metadata_path.join("store"))?);
    let tls = ReloadingTls::load(tls_files, TlsPolicy::WORKER).context("TLS setup")?;
    if tls.current().own.name != name {
        tracing::warn!(own = %tls.current().own, %name, "the certificate's name differs from the worker name: the coordinator will refuse registration");
    }
    tls.watch();
    let metrics = Arc::new(WorkerMetrics::default());

    let mut cpus = if config.worker.cores.is_empty() { allowed_cpus() } else { config.worker.cores.clone() };
    if let Some(n) = args.cores {
        if n == 0 || n > cpus.len() {
            bail!("--cores {n}: this process may use {} CPUs", cpus.len());
        }
        cpus.truncate(n);
    }
    let (listening_tx, listening) = flume::unbounded();
    let setup = Arc::new(CoreSetup {
        data_listen,
        store: store.clone(),
        partials: Arc::default(),
        server_tls: tls.clone(),
        ktls,
        metrics: metrics.clone(),
        listening: listening_tx,
    });
    let (core_txs, core_rxs): (Vec<_>, Vec<_>) = cpus.iter().map(|_| flume::unbounded()).unzip();
    let core_rxs = Arc::new(std::sync::Mutex::new(core_rxs.into_iter().map(Some).collect::<Vec<_>>()));
    let _executors = start_executors(&cpus, move |core| {
        let setup = setup.clone();
        let rx = core_rxs.lock().unwrap_or_else(|p| p.into_inner())[core].take().expect("one receiver per core");
        async move { core_main(core, setup, rx).await }
    })?;
    // Register only once every executor accepts sessions: a source handed a pass at
    // once must not find the port closed.
    for _ in 0..cpus.len() {
        match listening.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok((_, Ok(()))) => {}
            Ok((core, Err(e))) => bail!("executor {core}: {e}"),
            Err(_) => bail!("the executors did not start listening within 30 s"),
        }
    }
    tracing::info!(%name, %data_listen, %http_listen, cores = ?cpus, "worker started");

    let chunk_params = ChunkParams::from_avg(config.transfer.chunk_bytes_avg)?;
    let ctx = Arc::new(PassContext {
        cores: core_txs,
        store,
        tls: tls.clone(),
        ktls,
        metrics: metrics.clone(),
        chunk_params,
    });
    let registration = WorkerRegistration {
        name: name.clone(),
        site,
        data_addr: advertise,
        http_addr: http_listen.to_string(),
        cores: cpus.len() as u32,
    };
    let client = CoordinatorClient::new(&coordinator, tls.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        // SIGHUP reloads certificates, key, CA and CRL (its default action would kill us).
        let mut hup = signal(SignalKind::hangup())?;
        let http = tokio::spawn(serve_http(http_listen, name, metrics));
        let control = tokio::spawn(control_loop(client, registration, ctx));
        tokio::pin!(http, control);
        loop {
            tokio::select! {
                _ = hup.recv() => tls.reload_logged("SIGHUP"),
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break }
                _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: stopping"); break }
                r = &mut http => bail!("HTTP endpoint stopped: {r:?}"),
                r = &mut control => bail!("control loop stopped: {r:?}"),
            }
        }
        Ok(())
    })?;
    // Executors hold no state that needs a clean stop: unfinished files are temporary
    // files, never visible under their final name.
    std::process::exit(0)
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
