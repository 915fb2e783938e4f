//! Raft RPCs between coordinators: JSON over HTTPS POST to the peer's `/raft/append`,
//! `/raft/vote` and `/raft/snapshot` (served by [`crate::http::raft`]). Both ends
//! present `coordinator` certificates; the peer refuses any other role.
//!
//! The peer answers `Result<Response, RaftError<..>>` as JSON, so a refusal by the peer's
//! Raft (e.g. it is shutting down) comes back as a typed remote error.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use xtsync_transport::ReloadingTls;

use crate::raft_types::{Node, NodeId, TypeConfig};

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";

/// Creates one [`HttpPeer`] per target; all share one connection pool per TLS
/// generation (a certificate reload builds a new pool: reqwest takes its rustls
/// configuration at build time).
#[derive(Clone)]
pub struct HttpNetworkFactory {
    tls: ReloadingTls,
    client: Arc<Mutex<Option<(u64, reqwest::Client)>>>,
}

impl HttpNetworkFactory {
    pub fn new(tls: ReloadingTls) -> Self {
        HttpNetworkFactory { tls, client: Arc::default() }
    }
}

/// The pool for the current certificates.
fn client_for(tls: &ReloadingTls, cache: &Mutex<Option<(u64, reqwest::Client)>>) -> Result<reqwest::Client, String> {
    let current = tls.current();
    let mut cached = cache.lock().unwrap_or_else(|p| p.into_inner());
    match &*cached {
        Some((generation, client)) if *generation == current.generation => Ok(client.clone()),
        _ => {
            let client = reqwest::Client::builder()
                .use_preconfigured_tls((*current.coordinator_client).clone())
                .build()
                .map_err(|e| format!("cannot build the HTTPS client: {e}"))?;
            *cached = Some((current.generation, client.clone()));
            Ok(client)
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for HttpNetworkFactory {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> HttpPeer {
        HttpPeer { target, addr: node.addr.clone(), tls: self.tls.clone(), client: self.client.clone() }
    }
}

/// The connection to one peer coordinator.
pub struct HttpPeer {
    target: NodeId,
    /// `host:port` of the peer's REST API.
    addr: String,
    tls: ReloadingTls,
    client: Arc<Mutex<Option<(u64, reqwest::Client)>>>,
}

impl HttpPeer {
    async fn post<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let url = format!("https://{}{}", self.addr, path);
        let client = client_for(&self.tls, &self.client)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let sent = client.post(&url).timeout(option.hard_ttl()).json(req).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                // A refused certificate shows here too: say why, once per failure.
                let reason = xtsync_transport::describe_tls_error(&e);
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason))));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let status = response.status();
        if !status.is_success() {
            let err = std::io::Error::other(format!("{url} answered HTTP {status}"));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let body: Result<Resp, RaftError<NodeId, E>> =
            response.json().await.map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        body.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.post(PATH_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        self.post(PATH_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.post(PATH_VOTE, &rpc, &option).await
    }
}
