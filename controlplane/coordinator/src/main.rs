//! `xtsync-coordinator`: the control-plane daemon.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use xtsync_config::Config;
use xtsync_coordinator::server::{self, ServerOptions};
use xtsync_transport::TlsFiles;

#[derive(Debug, Parser)]
#[command(name = "xtsync-coordinator", version, about = "xtsync control-plane coordinator (Raft on RocksDB, REST API)")]
struct Args {
    /// YAML configuration (embedded defaults when absent).
    #[arg(long, env = "XTSYNC_CONFIG")]
    config: Option<PathBuf>,
    /// This coordinator's id in the Raft group (`coordinators[].id`).
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// Overrides `networking` (listen address and http_port).
    #[arg(long)]
    http_listen: Option<SocketAddr>,
    /// Overrides `storage.metadata_path`.
    #[arg(long)]
    metadata_path: Option<PathBuf>,
    /// Initialize the cluster at start if it is not yet (quickstart, single node).
    #[arg(long)]
    init: bool,
    /// This coordinator's certificate, role `coordinator` (overrides networking.tls.cert).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The cluster CA (overrides networking.tls.ca).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The CA's revocation list (overrides networking.tls.crl).
    #[arg(long)]
    tls_crl: Option<PathBuf>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.logging.level))
        .with_context(|| format!("logging.level {:?} is not a tracing filter", config.logging.level))?;
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if config.logging.json {
        logs.json().init();
    } else {
        logs.init();
    }

    // By default a coordinator listens on the port its own `coordinators[]` entry names,
    // so that workers and peers reach it where the shared config says it is.
    let own_port = config
        .coordinators
        .iter()
        .find(|c| c.id == args.node_id)
        .and_then(|c| c.api_addr.rsplit_once(':'))
        .and_then(|(_, port)| port.parse::<u16>().ok());
    let default_listen = match own_port {
        Some(port) => SocketAddr::new(config.networking.http_listen.ip(), port),
        None => config.networking.http_listen,
    };

    let tls = TlsFiles::from_flags_or_config(
        args.tls_cert.as_deref(),
        args.tls_key.as_deref(),
        args.tls_ca.as_deref(),
        args.tls_crl.as_deref(),
        config.networking.tls.as_ref(),
        xtsync_transport::Role::Coordinator,
    )
    .map_err(anyhow::Error::msg)?;
    let opts = ServerOptions {
        tls,
        node_id: args.node_id,
        http_listen: args.http_listen.unwrap_or(default_listen),
        metadata_path: args.metadata_path.unwrap_or(config.storage.metadata_path.join("coordinator")),
        coordinators: config.coordinators,
        init: args.init,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start tokio")?;
    runtime.block_on(server::run(opts, shutdown_signal())).context("coordinator failed")?;
    Ok(())
}
