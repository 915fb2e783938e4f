//! Starting and stopping a coordinator: open the store, start Raft, serve HTTP until
//! the shutdown future resolves, then stop Raft.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use xtsync_config::CoordinatorAddr;
use xtsync_transport::{ReloadingTls, TlsFiles, TlsPolicy};

use crate::coordinator::Coordinator;
use crate::network::HttpNetworkFactory;
use crate::raft_types::{Node, NodeId, Raft};
use crate::store::log::LogStore;
use crate::store::reader::StateReader;
use crate::store::state_machine::StateMachineStore;
use crate::store::{self, StoreError};
use crate::timing::{ELECTION_TIMEOUT_MAX_MS, ELECTION_TIMEOUT_MIN_MS, HEARTBEAT_INTERVAL_MS};

/// Build a snapshot (and purge the log behind it) every this many entries.
const SNAPSHOT_EVERY_LOGS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub node_id: NodeId,
    pub http_listen: SocketAddr,
    /// The RocksDB database lives in `<metadata_path>/coordinator`.
    pub metadata_path: PathBuf,
    /// The configured group; with one entry, this node alone forms the group.
    pub coordinators: Vec<CoordinatorAddr>,
    /// Initialize the group at start if it is not yet.
    pub init: bool,
    /// This coordinator's certificate (role `coordinator`), the CA and its CRL.
    pub tls: TlsFiles,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create metadata directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid Raft configuration: {0}")]
    RaftConfig(Box<openraft::ConfigError>),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error("raft stopped: {0}")]
    RaftStopped(String),
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot initialize the cluster: {0}")]
    Init(crate::error::ServiceError),
    #[error("TLS setup: {0}")]
    Tls(#[from] xtsync_transport::TlsSetupError),
}

fn raft_config() -> Result<Arc<openraft::Config>, ServerError> {
    let config = openraft::Config {
        cluster_name: "xtsync".into(),
        heartbeat_interval: HEARTBEAT_INTERVAL_MS,
        election_timeout_min: ELECTION_TIMEOUT_MIN_MS,
        election_timeout_max: ELECTION_TIMEOUT_MAX_MS,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY_LOGS),
        ..Default::default()
    };
    Ok(Arc::new(config.validate().map_err(|e| ServerError::RaftConfig(Box::new(e)))?))
}

/// Who forms the group at initialization: every configured coordinator, or this node
/// alone (at the address it actually listens on) when one is configured.
fn init_members(opts: &ServerOptions, local_addr: SocketAddr) -> BTreeMap<NodeId, Node> {
    if opts.coordinators.len() > 1 {
        opts.coordinators.iter().map(|c| (c.id, Node { addr: c.api_addr.clone() })).collect()
    } else {
        BTreeMap::from([(opts.node_id, Node { addr: local_addr.to_string() })])
    }
}

/// Resolves when the Raft core stops on its own (a storage error, a protocol
/// violation), with openraft's reason.
async fn raft_stopped(raft: Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the Raft core is gone".into();
        }
    }
}

/// Runs a coordinator until `shutdown` resolves.
pub async fn run(opts: ServerOptions, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let tls = ReloadingTls::load(opts.tls.clone(), TlsPolicy::COORDINATOR)?;
    if opts.tls.crl.is_none() {
        tracing::warn!("no CRL configured (networking.tls.crl): revoked certificates are not refused");
    }
    tls.watch();
    // SIGHUP reloads certificates, key, CA and CRL (its default action would kill us).
    let hup_tls = tls.clone();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    hup_tls.reload_logged("SIGHUP");
                }
            });
        }
        Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP; certificates reload on file change only"),
    }

    let db_path = opts.metadata_path.join("coordinator");
    std::fs::create_dir_all(&db_path).map_err(|source| ServerError::CreateDir { path: db_path.clone(), source })?;
    let db = store::open(&db_path)?;
    tracing::info!(path = %db_path.display(), "metadata store open");

    let listener = tokio::net::TcpListener::bind(opts.http_listen)
        .await
        .map_err(|source| ServerError::Bind { addr: opts.http_listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: opts.http_listen, source })?;

    let raft = Raft::new(
        opts.node_id,
        raft_config()?,
        HttpNetworkFactory::new(tls.clone()),
        LogStore::new(db.clone()),
        StateMachineStore::new(db.clone()),
    )
    .await
    .map_err(|e| ServerError::Raft(e.to_string()))?;
    let coordinator =
        Coordinator::new(opts.node_id, raft.clone(), StateReader::new(db), init_members(&opts, local_addr));

    if opts.init {
        let already = coordinator.initialize().await.map_err(ServerError::Init)?;
        tracing::info!(already, "cluster initialization requested by --init");
    }

    tracing::info!(node_id = opts.node_id, addr = %local_addr, cert = %tls.current().own, "coordinator listening (HTTPS, client certificates required)");
    let app = crate::http::router(coordinator.clone());
    let stopping = coordinator.clone();
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel();
    let watched = raft.clone();
    let served = crate::https::serve(listener, app, tls, async move {
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down"),
            reason = raft_stopped(watched) => {
                // A node whose Raft core stopped cannot serve: exit, so that the service
                // manager restarts it, rather than answer requests it cannot apply.
                tracing::error!(%reason, "raft stopped; the coordinator exits");
                let _ = fatal_tx.send(reason);
            }
        }
        stopping.begin_shutdown();
    })
    .await;

    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    served.map_err(ServerError::Serve)?;
    if let Ok(reason) = fatal_rx.await {
        return Err(ServerError::RaftStopped(reason));
    }
    tracing::info!("coordinator stopped");
    Ok(())
}
