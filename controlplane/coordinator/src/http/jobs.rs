//! `/v1/jobs`: job definitions and their catalog.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use xtsync_api::{now_unix_ms, FileVersion, Job, JobId, JobSpec};

use super::access::{agent_may_create, refuse, visible, Peer};
use super::{body, path, ApiResult, AppState};
use crate::error::ServiceError;
use crate::state::{query, validate, Command, Outcome};

/// Catalog rows per page unless `limit` says otherwise.
const CATALOG_LIMIT_DEFAULT: usize = 1000;
const CATALOG_LIMIT_MAX: usize = 10_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", get(list).post(create))
        .route("/v1/jobs/{id}", get(get_one).delete(delete))
        .route("/v1/jobs/{id}/catalog", get(catalog))
}

/// The job if `peer` may read it; "does not exist" otherwise (see `access::visible`).
pub(super) fn job_for(c: &AppState, peer: &Peer, id: JobId) -> ApiResult<Job> {
    visible(peer, query::job(&c.reader, id)?, id)
}

/// Admins create any job; an agent only a pull job into itself (`access::agent_may_create`).
async fn create(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    spec: Result<Json<JobSpec>, JsonRejection>,
) -> ApiResult<Json<Job>> {
    let spec = body(spec)?;
    // Checked again in apply; checking here spares a Raft entry for obvious mistakes.
    validate::job_spec(&spec)?;
    if peer.identity.role == xtsync_transport::Role::Agent {
        agent_may_create(&peer.identity, &spec, &query::jobs(&c.reader)?)
            .map_err(|reason| refuse(&peer, "create this job", reason))?;
    }
    match c.write(Command::CreateJob { spec, created_unix_ms: now_unix_ms() }).await? {
        Outcome::Job(job) => {
            tracing::info!(job_id = job.id, name = %job.spec.name, "job created");
            Ok(Json(job))
        }
        other => Err(ServiceError::Raft(format!("unexpected outcome {other:?}"))),
    }
}

/// Agents see only the jobs that name them.
async fn list(State(c): State<AppState>, Extension(peer): Extension<Peer>) -> ApiResult<Json<Vec<Job>>> {
    c.read_barrier().await?;
    let jobs = query::jobs(&c.reader)?;
    Ok(Json(jobs.into_iter().filter(|j| super::access::may_read(&peer.identity, j)).collect()))
}

async fn get_one(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    id: Result<Path<JobId>, PathRejection>,
) -> ApiResult<Json<Job>> {
    c.read_barrier().await?;
    Ok(Json(job_for(&c, &peer, path(id)?)?))
}

async fn delete(State(c): State<AppState>, id: Result<Path<JobId>, PathRejection>) -> ApiResult<StatusCode> {
    let id = path(id)?;
    c.delete_job(id).await?;
    tracing::info!(job_id = id, "job deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct CatalogQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

async fn catalog(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    id: Result<Path<JobId>, PathRejection>,
    q: Result<Query<CatalogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<FileVersion>>> {
    let id = path(id)?;
    let Query(q) = q.map_err(|r| ServiceError::BadRequest(format!("invalid query: {}", r.body_text())))?;
    let limit = q.limit.unwrap_or(CATALOG_LIMIT_DEFAULT);
    if limit == 0 || limit > CATALOG_LIMIT_MAX {
        return Err(ServiceError::BadRequest(format!("limit must be within 1..={CATALOG_LIMIT_MAX}, got {limit}")));
    }
    c.read_barrier().await?;
    job_for(&c, &peer, id)?;
    // Up to 10,000 rows: a real scan, kept off the async workers.
    let reader = c.reader.clone();
    let rows = tokio::task::spawn_blocking(move || query::catalog(&reader, id, &q.prefix, limit))
        .await
        .map_err(|e| ServiceError::Raft(format!("catalog scan task failed: {e}")))??;
    Ok(Json(rows))
}
