//! `/v1/workers`: registration, heartbeats (long poll), listing.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use xtsync_api::{HeartbeatReply, WorkerHeartbeat, WorkerRegistration, WorkerStatus};

use super::access::{require_own_name, Peer};
use super::{body, path, ApiResult, AppState};
use crate::error::ServiceError;
use crate::state::{Command, Outcome};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workers", get(list))
        .route("/v1/workers/register", post(register))
        .route("/v1/workers/{name}/heartbeat", post(heartbeat))
}

async fn register(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    reg: Result<Json<WorkerRegistration>, JsonRejection>,
) -> ApiResult<Json<WorkerRegistration>> {
    let reg = body(reg)?;
    require_own_name(&peer, &reg.name, "register")?;
    match c.write(Command::RegisterWorker(reg)).await? {
        Outcome::Worker(reg) => {
            tracing::info!(worker = %reg.name, site = %reg.site, data_addr = %reg.data_addr, "worker registered");
            Ok(Json(reg))
        }
        other => Err(ServiceError::Raft(format!("unexpected outcome {other:?}"))),
    }
}

async fn heartbeat(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    name: Result<Path<String>, PathRejection>,
    hb: Result<Json<WorkerHeartbeat>, JsonRejection>,
) -> ApiResult<Json<HeartbeatReply>> {
    let name = path(name)?;
    // Heartbeat replies carry the worker's assignments (jobs): only to that worker.
    require_own_name(&peer, &name, "heartbeat")?;
    Ok(Json(c.heartbeat(&name, body(hb)?).await?))
}

/// Liveness is the leader's: a follower sends the caller there.
async fn list(State(c): State<AppState>) -> ApiResult<Json<Vec<WorkerStatus>>> {
    c.read_barrier().await?;
    Ok(Json(c.workers()?))
}
