//! Raft RPCs from peer coordinators (see [`crate::network`] for the client side).
//! Answers are `Result<Response, RaftError>` as JSON, whatever the outcome.

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::AppState;
use crate::network::{PATH_APPEND, PATH_SNAPSHOT, PATH_VOTE};
use crate::raft_types::{NodeId, TypeConfig};

// Largest Raft RPC body: an append of many version batches, or a snapshot chunk.
use super::bodies::RAFT_BODY_BYTES_MAX;

pub(super) fn routes() -> axum::Router<AppState> {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .layer(DefaultBodyLimit::max(RAFT_BODY_BYTES_MAX))
}

async fn append(
    State(c): State<AppState>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>> {
    Json(c.raft.append_entries(req).await)
}

async fn vote(
    State(c): State<AppState>,
    Json(req): Json<VoteRequest<NodeId>>,
) -> Json<Result<VoteResponse<NodeId>, RaftError<NodeId>>> {
    Json(c.raft.vote(req).await)
}

async fn snapshot(
    State(c): State<AppState>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>> {
    Json(c.raft.install_snapshot(req).await)
}
