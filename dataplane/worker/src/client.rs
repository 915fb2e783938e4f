//! The coordinator's REST API as a client: what workers and agents call (register,
//! heartbeat, reports, catalog commits; an agent also reads jobs, creates its pull job
//! and starts runs). Errors say whether the coordinator was unreachable or answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use xtsync_api::{
    HeartbeatReply, Job, JobId, JobSpec, Run, RunId, RunReport, RunRequest, VersionBatch, WorkerHeartbeat,
    WorkerRegistration,
};
use xtsync_transport::ReloadingTls;

/// The coordinator's REST API over HTTPS, with this worker's certificate; the server
/// must present a `coordinator` certificate. A certificate reload builds a new HTTP
/// client (reqwest takes its rustls configuration at build time).
#[derive(Clone)]
pub struct CoordinatorClient {
    base: String,
    tls: ReloadingTls,
    /// The HTTP client and the TLS generation it was built with.
    http: Arc<Mutex<(u64, reqwest::Client)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("coordinator at {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("cannot build the HTTPS client: {0}")]
    Setup(String),
    #[error("coordinator answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl CoordinatorClient {
    pub fn new(addr: &str, tls: ReloadingTls) -> Result<CoordinatorClient, ClientError> {
        let base = if addr.starts_with("https://") { addr.to_string() } else { format!("https://{addr}") };
        let current = tls.current();
        let http = https_client(&current.coordinator_client)?;
        Ok(CoordinatorClient { base, tls, http: Arc::new(Mutex::new((current.generation, http))) })
    }

    fn http(&self) -> Result<reqwest::Client, ClientError> {
        let current = self.tls.current();
        let mut cached = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if cached.0 != current.generation {
            *cached = (current.generation, https_client(&current.coordinator_client)?);
        }
        Ok(cached.1.clone())
    }

    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ClientError> {
        let request = self.http()?.post(format!("{}{path}", self.base)).json(body);
        self.send(request).await
    }

    async fn get<R: serde::de::DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        let request = self.http()?.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn send<R: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<R, ClientError> {
        let resp = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(self.base.clone(), xtsync_transport::describe_tls_error(&e)))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = resp.text().await.unwrap_or_default();
            return Err(ClientError::Status { status, body });
        }
        if status == 204 {
            return serde_json::from_str("null").map_err(|e| ClientError::Status { status, body: e.to_string() });
        }
        resp.json().await.map_err(|e| ClientError::Status { status, body: e.to_string() })
    }

    pub async fn register(&self, r: &WorkerRegistration) -> Result<serde_json::Value, ClientError> {
        self.post("/v1/workers/register", r).await
    }

    pub async fn heartbeat(&self, name: &str, hb: &WorkerHeartbeat) -> Result<HeartbeatReply, ClientError> {
        self.post(&format!("/v1/workers/{name}/heartbeat"), hb).await
    }

    pub async fn report(&self, run: RunId, r: &RunReport) -> Result<serde_json::Value, ClientError> {
        self.post(&format!("/v1/runs/{run}/report"), r).await
    }

    pub async fn commit(&self, run: RunId, b: &VersionBatch) -> Result<serde_json::Value, ClientError> {
        self.post(&format!("/v1/runs/{run}/versions"), b).await
    }

    /// The jobs this certificate may read.
    pub async fn jobs(&self) -> Result<Vec<Job>, ClientError> {
        self.get("/v1/jobs").await
    }

    pub async fn job(&self, id: JobId) -> Result<Job, ClientError> {
        self.get(&format!("/v1/jobs/{id}")).await
    }

    pub async fn runs(&self, job: JobId) -> Result<Vec<Run>, ClientError> {
        self.get(&format!("/v1/jobs/{job}/runs")).await
    }

    pub async fn create_job(&self, spec: &JobSpec) -> Result<Job, ClientError> {
        self.post("/v1/jobs", spec).await
    }

    /// Starts a run (409 if the job is continuous and a run of it is active).
    pub async fn start_run(&self, job: JobId) -> Result<Run, ClientError> {
        self.post(&format!("/v1/jobs/{job}/runs"), &RunRequest::default()).await
    }
}

fn https_client(tls: &rustls::ClientConfig) -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ClientError::Setup(e.to_string()))
}

impl ClientError {
    /// The HTTP status the coordinator answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Unreachable(..) | ClientError::Setup(_) => None,
        }
    }

    /// Worth trying again later: the coordinator was unreachable, had no leader, or
    /// failed on its side; a refusal (4xx) or a broken local setup is not.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(..) => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 421 || *status == 408,
            ClientError::Setup(_) => false,
        }
    }
}
