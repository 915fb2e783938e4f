//! The coordinator's REST API as a client: what workers and agents call (register,
//! heartbeat, reports, catalog commits; an agent also reads jobs, creates its pull job
//! and starts runs). Errors say whether the coordinator was unreachable or answered.

use std::time::Duration;

use xtsync_api::{
    HeartbeatReply, Job, JobId, JobSpec, Run, RunId, RunReport, RunRequest, VersionBatch, WorkerHeartbeat,
    WorkerRegistration,
};
use xtsync_client::{Client, ClientOptions, Method, Request, Retry, TlsSource};
use xtsync_transport::ReloadingTls;

pub use xtsync_client::ClientError;

/// The coordinators' REST API over HTTPS, with this worker's certificate (reloaded when
/// its files change); the server must present a `coordinator` certificate. Every
/// configured coordinator is known: requests find the leader (see `xtsync-client`).
#[derive(Clone)]
pub struct CoordinatorClient {
    client: Client,
}

/// Time a heartbeat's answer may take beyond the long poll it asked for.
const LONG_POLL_SLACK: Duration = Duration::from_secs(5);

impl CoordinatorClient {
    pub fn new(addrs: &[String], tls: ReloadingTls) -> Result<CoordinatorClient, ClientError> {
        let client = Client::new(addrs, TlsSource::Reloading(tls), ClientOptions::default())?;
        Ok(CoordinatorClient { client })
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<R, ClientError> {
        self.client.post(path, body, retry).await
    }

    async fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.client.get(path).await
    }

    pub async fn register(&self, r: &WorkerRegistration) -> Result<serde_json::Value, ClientError> {
        // Registration is an upsert of the same record.
        self.post("/v1/workers/register", r, Retry::Idempotent).await
    }

    pub async fn heartbeat(&self, name: &str, hb: &WorkerHeartbeat) -> Result<HeartbeatReply, ClientError> {
        // A repeated heartbeat refreshes liveness again; its reports are state
        // transitions the coordinator refuses the second time.
        let path = format!("/v1/workers/{name}/heartbeat");
        let timeout = Some(Duration::from_millis(hb.wait_ms) + LONG_POLL_SLACK);
        let req = Request {
            method: Method::POST,
            path: &path,
            body: Some(hb),
            retry: Retry::Idempotent,
            timeout,
            deadline: None,
        };
        self.client.call(req).await
    }

    pub async fn report(&self, run: RunId, r: &RunReport) -> Result<serde_json::Value, ClientError> {
        self.post(&format!("/v1/runs/{run}/report"), r, Retry::Idempotent).await
    }

    pub async fn commit(&self, run: RunId, b: &VersionBatch) -> Result<serde_json::Value, ClientError> {
        // Committing the same versions again stores nothing new.
        self.post(&format!("/v1/runs/{run}/versions"), b, Retry::Idempotent).await
    }

    /// The jobs this certificate may read.
    pub async fn jobs(&self) -> Result<Vec<Job>, ClientError> {
        self.get("/v1/jobs").await
    }

    pub async fn job(&self, id: JobId) -> Result<Job, ClientError> {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    /// [`CoordinatorClient::job`] for a caller that must answer within `within`
    /// (a peer waiting for admission), however long the coordinators take to elect.
    pub async fn job_within(&self, id: JobId, within: Duration) -> Result<Job, ClientError> {
        let path = format!("/v1/jobs/{id}");
        self.client.call(Request { deadline: Some(within), ..Request::get(&path) }).await
    }

    pub async fn runs(&self, job: JobId) -> Result<Vec<Run>, ClientError> {
        self.get(&format!("/v1/jobs/{job}/runs")).await
    }

    pub async fn create_job(&self, spec: &JobSpec) -> Result<Job, ClientError> {
        self.post("/v1/jobs", spec, Retry::Once).await
    }

    /// Starts a run (409 if the job is continuous and a run of it is active).
    pub async fn start_run(&self, job: JobId) -> Result<Run, ClientError> {
        self.post(&format!("/v1/jobs/{job}/runs"), &RunRequest::default(), Retry::Once).await
    }
}
