//! The control thread (tokio): registration and heartbeats with the coordinator, the
//! passes it assigns, catalog commits, and the worker's HTTP endpoint. Nothing here is
//! on the data path of a byte.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use xtsync_api::{
    Assignment, FileVersion, RunId, RunProgress, RunReport, RunState, VersionBatch, WorkerHeartbeat, WorkerRegistration,
};

pub use crate::client::{ClientError, CoordinatorClient};
use crate::outbox::Outbox;
use xtsync_metrics::WorkerMetrics;
use xtsync_sender::continuous::{run_continuous, ReconcileRequest};
use xtsync_sender::pass::{run_pass, PassContext, PassSink};

struct CoordinatorSink {
    client: CoordinatorClient,
    outbox: Arc<Outbox>,
    worker: String,
    run_id: RunId,
    job_id: u64,
}

impl PassSink for CoordinatorSink {
    /// Done once the versions are kept in the local outbox: the coordinators get them
    /// from there, through outages and restarts (see [`Outbox`]).
    async fn commit(&mut self, versions: Vec<FileVersion>) -> Result<(), String> {
        let batch = VersionBatch { job_id: self.job_id, versions };
        self.outbox.commit(self.run_id, batch).await.map_err(|e| e.to_string())
    }

    fn progress(&mut self, progress: RunProgress) {
        let report = RunReport { worker: self.worker.clone(), state: RunState::Running, progress, summary: None };
        let (client, run) = (self.client.clone(), self.run_id);
        tokio::spawn(async move {
            let _ = client.report(run, &report).await;
        });
    }
}

/// How the control loop waits when the coordinator cannot be reached.
#[derive(Debug, Clone, Copy)]
pub struct ControlOptions {
    /// Registration retries double from 0.1 s up to this.
    pub register_retry_max: Duration,
    /// Heartbeat retries double from 1 s (or this, if less) up to this.
    pub heartbeat_retry_max: Duration,
}

impl ControlOptions {
    /// A data-center worker: the coordinator is near; retry often.
    pub const WORKER: ControlOptions =
        ControlOptions { register_retry_max: Duration::from_secs(5), heartbeat_retry_max: Duration::from_secs(1) };
}

/// Registers, says so on `registered`, then heartbeats forever, starting every
/// assigned pass.
pub async fn control_loop(
    client: CoordinatorClient,
    registration: WorkerRegistration,
    ctx: Arc<PassContext>,
    options: ControlOptions,
    registered: tokio::sync::oneshot::Sender<()>,
) {
    let name = registration.name.clone();
    register_until_done(&client, &registration, options).await;
    let _ = registered.send(());
    // What a previous process left in the outbox goes first.
    let outbox = Outbox::new(ctx.store.clone(), ctx.metrics.clone(), client.clone());
    tokio::spawn(outbox.clone().deliver_forever());
    let running: Arc<Mutex<HashSet<RunId>>> = Arc::default();
    let live: LiveContinuous = Arc::default();
    // How to stop each run in progress (its job deleted).
    let stops: Arc<Mutex<HashMap<RunId, tokio::sync::oneshot::Sender<()>>>> = Arc::default();
    let heartbeat_retry_first = Duration::from_secs(1).min(options.heartbeat_retry_max);
    let mut retry_delay = heartbeat_retry_first;
    loop {
        let hb = WorkerHeartbeat {
            running: running.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect(),
            reports: Vec::new(),
            wait_ms: 10_000,
        };
        match client.heartbeat(&name, &hb).await {
            Ok(reply) => {
                if retry_delay > heartbeat_retry_first {
                    tracing::info!("the coordinator answers again");
                }
                retry_delay = heartbeat_retry_first;
                for run_id in reply.cancelled {
                    if let Some(stop) = stops.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id) {
                        let _ = stop.send(());
                    }
                }
                for a in reply.assignments {
                    if running.lock().unwrap_or_else(|p| p.into_inner()).insert(a.run_id) {
                        let (client, ctx, running, name) = (client.clone(), ctx.clone(), running.clone(), name.clone());
                        let (live, stops, outbox) = (live.clone(), stops.clone(), outbox.clone());
                        let (stop_tx, stop) = tokio::sync::oneshot::channel();
                        stops.lock().unwrap_or_else(|p| p.into_inner()).insert(a.run_id, stop_tx);
                        tokio::spawn(async move {
                            let (run_id, job_id, job_name) = (a.run_id, a.job.id, a.job.spec.name.clone());
                            let stopped = tokio::select! {
                                _ = run_assignment(&client, &outbox, &ctx, a, &name, &live) => false,
                                Ok(()) = stop => true,
                            };
                            if stopped {
                                // Dropping the run ended its sessions and its watcher; what a
                                // session left half-written at the target is a temporary that
                                // is swept, as after a crash.
                                tracing::warn!(run_id, job = %job_name, "run stopped: its job was deleted");
                                live.lock().unwrap_or_else(|p| p.into_inner()).remove(&job_id);
                                ctx.metrics.continuous_jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&job_name);
                                let state = RunState::Failed { error: "stopped: its job was deleted".into() };
                                let progress = RunProgress::default();
                                report_end(&client, run_id, RunReport { worker: name, state, progress, summary: None })
                                    .await;
                            }
                            stops.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id);
                            running.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id);
                        });
                    }
                }
            }
            Err(ClientError::Status { status: 404, .. }) => register_until_done(&client, &registration, options).await,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; retrying in {retry_delay:?} (runs in progress continue)");
                tokio::time::sleep(retry_delay).await;
                retry_delay = (retry_delay * 2).min(options.heartbeat_retry_max);
            }
        }
    }
}

async fn register_until_done(client: &CoordinatorClient, registration: &WorkerRegistration, options: ControlOptions) {
    let mut delay = Duration::from_millis(100);
    loop {
        match client.register(registration).await {
            Ok(_) => {
                tracing::info!(name = %registration.name, data = %registration.data_addr, "registered with the coordinator");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "registration failed; retrying in {delay:?}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(options.register_retry_max);
    }
}

/// The continuous runs live in this process, by job: where reconciliation requests go.
pub type LiveContinuous = Arc<Mutex<std::collections::HashMap<u64, flume::Sender<ReconcileRequest>>>>;

async fn run_assignment(
    client: &CoordinatorClient,
    outbox: &Arc<Outbox>,
    ctx: &PassContext,
    a: Assignment,
    name: &str,
    live: &LiveContinuous,
) {
    let run_id = a.run_id;
    tracing::info!(run_id, job = %a.job.spec.name, target = %a.target_data_addr, "pass starting");
    let running =
        RunReport { worker: name.into(), state: RunState::Running, progress: RunProgress::default(), summary: None };
    let _ = client.report(run_id, &running).await;
    let mut sink = CoordinatorSink {
        client: client.clone(),
        outbox: outbox.clone(),
        worker: name.into(),
        run_id,
        job_id: a.job.id,
    };
    if a.reconcile {
        // A live continuous run of the job does it, in order with its change passes
        // (a separate pass could race it at the target).
        let runner = live.lock().unwrap_or_else(|p| p.into_inner()).get(&a.job.id).cloned();
        if let Some(runner) = runner {
            let (done, result) = tokio::sync::oneshot::channel();
            if runner.send(ReconcileRequest { assignment: a.clone(), done }).is_ok() {
                let outcome = result.await.unwrap_or_else(|_| Err("the continuous run stopped".into()));
                let (state, summary) = match outcome {
                    Ok(summary) => (RunState::Succeeded, Some(summary)),
                    Err(error) => (RunState::Failed { error }, None),
                };
                let progress = RunProgress::default();
                report_end(client, run_id, RunReport { worker: name.into(), state, progress, summary }).await;
                return;
            }
        }
    } else if a.job.spec.options.continuous {
        // Runs while the worker runs; it ends only if change capture fails.
        let (requests_tx, requests) = flume::unbounded();
        live.lock().unwrap_or_else(|p| p.into_inner()).insert(a.job.id, requests_tx.clone());
        let outcome = run_continuous(ctx, &a, &mut sink, requests).await;
        {
            let mut map = live.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&a.job.id).is_some_and(|s| s.same_channel(&requests_tx)) {
                map.remove(&a.job.id);
            }
        }
        ctx.metrics.continuous_jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&a.job.spec.name);
        let error = match outcome {
            Ok(()) => "continuous run ended".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::error!(run_id, %error, "continuous run stopped");
        report_end(
            client,
            run_id,
            RunReport {
                worker: name.into(),
                state: RunState::Failed { error },
                progress: RunProgress::default(),
                summary: None,
            },
        )
        .await;
        return;
    }
    let (state, summary) = match run_pass(ctx, &a, &mut sink).await {
        Ok(summary) => {
            tracing::info!(
                run_id,
                files = summary.files,
                transferred = summary.files_transferred,
                bytes_on_wire = summary.bytes_on_wire,
                seconds = summary.duration_s,
                "pass succeeded"
            );
            (RunState::Succeeded, Some(summary))
        }
        Err(e) => {
            tracing::error!(run_id, error = %e, "pass failed");
            (RunState::Failed { error: e.to_string() }, None)
        }
    };
    let progress = RunProgress::default();
    report_end(client, run_id, RunReport { worker: name.into(), state, progress, summary }).await;
}

/// Reports the end of a run, retrying for a while (the coordinator may be restarting).
async fn report_end(client: &CoordinatorClient, run_id: RunId, report: RunReport) {
    let mut delay = Duration::from_millis(100);
    for _ in 0..20 {
        if client.report(run_id, &report).await.is_ok() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    tracing::error!(run_id, "could not report the end of the pass to the coordinator");
}

/// `/health` and `/metrics`.
pub async fn serve_http(addr: SocketAddr, name: String, metrics: Arc<WorkerMetrics>) -> std::io::Result<()> {
    use axum::routing::get;
    let health_name = name.clone();
    let app = axum::Router::new()
        .route(
            "/health",
            get(move || async move { axum::Json(serde_json::json!({"status": "ok", "worker": health_name})) }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ([("content-type", "text/plain; version=0.0.4")], metrics.render()) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
