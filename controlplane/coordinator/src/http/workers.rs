//! `/v1/workers`: registration, heartbeats (long poll), listing.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use xtsync_api::{HeartbeatReply, WorkerHeartbeat, WorkerRegistration, WorkerStatus};

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
    reg: Result<Json<WorkerRegistration>, JsonRejection>,
) -> ApiResult<Json<WorkerRegistration>> {
    match c.write(Command::RegisterWorker(body(reg)?)).await? {
        Outcome::Worker(reg) => {
            tracing::info!(worker = %reg.name, site = %reg.site, data_addr = %reg.data_addr, "worker registered");
            Ok(Json(reg))
        }
        other => Err(ServiceError::Raft(format!("unexpected outcome {other:?}"))),
    }
}

async fn heartbeat(
    State(c): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    hb: Result<Json<WorkerHeartbeat>, JsonRejection>,
) -> ApiResult<Json<HeartbeatReply>> {
    let name = path(name)?;
    Ok(Json(c.heartbeat(&name, body(hb)?).await?))
}

async fn list(State(c): State<AppState>) -> ApiResult<Json<Vec<WorkerStatus>>> {
    Ok(Json(c.workers()?))
}
