//! Runs: creation under a job, reports, and version batches.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use xtsync_api::{now_unix_ms, JobId, Run, RunId, RunReport, RunRequest, VersionBatch};

use super::access::{may_start_run, refuse, require_own_name, Peer};
use super::jobs::job_for;
use super::{body, path, ApiResult, AppState};
use crate::error::ServiceError;
use crate::state::{query, Command, Outcome, VERSIONS_PER_BATCH_MAX};

// A full batch of 10,000 versions with long paths fits; anything bigger is refused
// before it is read (`bodies`).
use super::bodies::VERSIONS_BODY_BYTES_MAX;
const RUNS_LIST_MAX: usize = 10_000;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs/{id}/runs", get(list).post(create))
        .route("/v1/runs/{id}", get(get_one))
        .route("/v1/runs/{id}/report", post(report))
        .route("/v1/runs/{id}/versions", post(versions).layer(DefaultBodyLimit::max(VERSIONS_BODY_BYTES_MAX)))
}

fn expect_run(out: Outcome) -> ApiResult<Json<Run>> {
    match out {
        Outcome::Run(run) => Ok(Json(run)),
        other => Err(ServiceError::Raft(format!("unexpected outcome {other:?}"))),
    }
}

/// The body is optional: `{}` or none starts a pass, `{"reconcile": true}` a
/// reconciliation pass. Agents start runs only of jobs they are an endpoint of.
async fn create(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    id: Result<Path<JobId>, PathRejection>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Run>> {
    let request: RunRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RunRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ServiceError::BadRequest(format!("run request: {e}")))?
    };
    let id = path(id)?;
    if peer.identity.role == xtsync_transport::Role::Agent {
        let job = job_for(&c, &peer, id)?;
        if !may_start_run(&peer.identity, &job) {
            return Err(refuse(
                &peer,
                &format!("start a run of job {id}"),
                "it is not the job's source or target".into(),
            ));
        }
    }
    if !request.reconcile {
        // A continuous job has one run at a time: a second would replicate into the
        // same target beside it.
        let continuous = query::job(&c.reader, id)?.is_some_and(|j| j.spec.options.continuous);
        let active = query::runs_of_job(&c.reader, id, RUNS_LIST_MAX)?
            .into_iter()
            .find(|r| !r.reconcile && !r.state.is_finished());
        if let (true, Some(run)) = (continuous, active) {
            return Err(ServiceError::Conflict(format!(
                "job {id} is continuous and run {} is still active (use reconcile for an extra full pass)",
                run.id
            )));
        }
    }
    expect_run(c.create_run(id, request.reconcile).await?)
}

async fn list(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    id: Result<Path<JobId>, PathRejection>,
) -> ApiResult<Json<Vec<Run>>> {
    let id = path(id)?;
    c.read_barrier().await?;
    job_for(&c, &peer, id)?;
    Ok(Json(query::runs_of_job(&c.reader, id, RUNS_LIST_MAX)?))
}

async fn get_one(State(c): State<AppState>, id: Result<Path<RunId>, PathRejection>) -> ApiResult<Json<Run>> {
    let id = path(id)?;
    c.read_barrier().await?;
    let run = query::run(&c.reader, id)?.ok_or_else(|| ServiceError::NotFound(format!("run {id} does not exist")))?;
    Ok(Json(run))
}

async fn report(
    State(c): State<AppState>,
    Extension(peer): Extension<Peer>,
    id: Result<Path<RunId>, PathRejection>,
    report: Result<Json<RunReport>, JsonRejection>,
) -> ApiResult<Json<Run>> {
    let run_id = path(id)?;
    let report = body(report)?;
    // Apply checks that the worker takes part in the run; here, that it is the caller.
    require_own_name(&peer, &report.worker, "report a run")?;
    expect_run(c.write(Command::ReportRun { run_id, report, unix_ms: now_unix_ms() }).await?)
}

async fn versions(
    State(c): State<AppState>,
    id: Result<Path<RunId>, PathRejection>,
    batch: Result<Json<VersionBatch>, JsonRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let run_id = path(id)?;
    let VersionBatch { job_id, versions } = body(batch)?;
    // Only the job's source worker commits versions: the body layer checked the run's
    // job before reading a byte (`bodies::commit_from_source`), and apply refuses a
    // batch whose job is not the run's.
    if versions.len() > VERSIONS_PER_BATCH_MAX {
        return Err(ServiceError::TooLarge(format!(
            "a batch carries {} versions; split it into batches of at most {VERSIONS_PER_BATCH_MAX}",
            versions.len()
        )));
    }
    match c.write(Command::CommitVersions { run_id, job_id, versions }).await? {
        Outcome::Committed { versions, new_versions } => {
            Ok(Json(json!({ "committed": versions, "new_versions": new_versions })))
        }
        other => Err(ServiceError::Raft(format!("unexpected outcome {other:?}"))),
    }
}
