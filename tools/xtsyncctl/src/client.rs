//! A small client of the coordinator's REST API.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use xtsync_api::{ClusterStatus, Job, JobSpec, Run, WorkerStatus};

pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(addr: &str) -> Client {
        let base =
            if addr.starts_with("http") { addr.trim_end_matches('/').to_string() } else { format!("http://{addr}") };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("reqwest client");
        Client { base, http }
    }

    async fn decode<T: DeserializeOwned>(&self, what: &str, resp: reqwest::Response) -> anyhow::Result<T> {
        let status = resp.status();
        let body = resp.text().await.with_context(|| format!("{what}: reading the answer"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<xtsync_api::ApiError>(&body).map(|e| e.error).unwrap_or(body);
            bail!("{what}: coordinator answered {status}: {msg}");
        }
        let body = if body.is_empty() { "null".to_string() } else { body };
        serde_json::from_str(&body).with_context(|| format!("{what}: unexpected answer {body:?}"))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.with_context(|| self.unreachable())?;
        self.decode(&format!("GET {path}"), resp).await
    }

    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .with_context(|| self.unreachable())?;
        self.decode(&format!("POST {path}"), resp).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self.http.delete(format!("{}{path}", self.base)).send().await.with_context(|| self.unreachable())?;
        self.decode::<serde_json::Value>(&format!("DELETE {path}"), resp).await.map(|_| ())
    }

    fn unreachable(&self) -> String {
        format!("coordinator at {} is unreachable (is xtsync-coordinator running? set --coordinator)", self.base)
    }

    pub async fn health(&self) -> bool {
        matches!(self.http.get(format!("{}/health", self.base)).send().await, Ok(r) if r.status().is_success())
    }

    pub async fn status(&self) -> anyhow::Result<ClusterStatus> {
        self.get("/v1/status").await
    }
    pub async fn init(&self) -> anyhow::Result<serde_json::Value> {
        self.post("/v1/cluster/init", &serde_json::json!({})).await
    }
    pub async fn workers(&self) -> anyhow::Result<Vec<WorkerStatus>> {
        self.get("/v1/workers").await
    }
    pub async fn jobs(&self) -> anyhow::Result<Vec<Job>> {
        self.get("/v1/jobs").await
    }
    pub async fn job(&self, id: u64) -> anyhow::Result<Job> {
        self.get(&format!("/v1/jobs/{id}")).await
    }
    pub async fn create_job(&self, spec: &JobSpec) -> anyhow::Result<Job> {
        self.post("/v1/jobs", spec).await
    }
    pub async fn delete_job(&self, id: u64) -> anyhow::Result<()> {
        self.delete(&format!("/v1/jobs/{id}")).await
    }
    pub async fn start_run(&self, job: u64) -> anyhow::Result<Run> {
        self.post(&format!("/v1/jobs/{job}/runs"), &serde_json::json!({})).await
    }
    pub async fn run(&self, id: u64) -> anyhow::Result<Run> {
        self.get(&format!("/v1/runs/{id}")).await
    }
}
