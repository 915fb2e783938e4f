//! Errors of the coordinator service, as the REST layer maps them to status codes.

use crate::raft_types::NodeId;
use crate::state::kv::KvError;
use crate::state::CommandError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Writes go to the leader; this node knows who it is.
    #[error(
        "coordinator {node_id} is not the Raft leader: send this request to coordinator {leader_id} at {leader_addr}"
    )]
    NotLeader { node_id: NodeId, leader_id: NodeId, leader_addr: String },
    /// No leader is known (election in progress, no quorum, or never initialized).
    #[error("coordinator {node_id} knows no Raft leader: wait for the election, check that a majority of coordinators is up, or initialize a new cluster with POST /v1/cluster/init")]
    NoLeader { node_id: NodeId },
    /// This node leads but heard from no quorum lately: it may have been deposed.
    #[error("coordinator {node_id} has not heard from a majority of coordinators for {since_ms} ms: it may be cut off; ask another coordinator")]
    NoQuorum { node_id: NodeId, since_ms: u64 },
    /// The state machine refused the command (replicated, deterministic).
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// Raft stopped (shutdown or a storage failure: see the log).
    #[error("raft is not running: {0}")]
    Raft(String),
    /// Reading the applied state failed.
    #[error(transparent)]
    Read(#[from] KvError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotFound(String),
    /// The peer's certificate does not allow this call (role or name).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    BodyTimeout(String),
    /// The request contradicts the current state (409).
    #[error("{0}")]
    Conflict(String),
}
