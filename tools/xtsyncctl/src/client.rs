//! A small client of the coordinator's REST API, over HTTPS with the operator's
//! certificate (role `admin`, or `agent` for read-only use).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use xtsync_api::{ClusterStatus, Job, JobSpec, Run, WorkerStatus};
use xtsync_transport::{client_config, describe_tls_error, find_tls_error, identity_of, TlsFiles, TlsPolicy};

pub struct Client {
    base: String,
    http: reqwest::Client,
}

/// The operator's certificate files: the flags (or their environment variables) when
/// given, else `admin.crt`/`admin.key`/`ca.crt` (and `ca.crl`) from the first of
/// `pki_dir` and the default quickstart state (`./xtsync-quickstart/pki`).
pub fn credentials(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    crl: Option<PathBuf>,
    pki_dir: &Path,
) -> anyhow::Result<TlsFiles> {
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => return Ok(TlsFiles { cert, key, ca, crl }),
        (None, None, None) => {}
        _ => bail!("--cert, --key and --ca go together (XTSYNC_CERT, XTSYNC_KEY, XTSYNC_CA)"),
    }
    let candidates = [pki_dir.to_path_buf(), PathBuf::from("xtsync-quickstart/pki")];
    for dir in &candidates {
        let (cert, key, ca) = (dir.join("admin.crt"), dir.join("admin.key"), dir.join("ca.crt"));
        if cert.exists() && key.exists() && ca.exists() {
            let crl = crl.or_else(|| Some(dir.join("ca.crl")).filter(|p| p.exists()));
            return Ok(TlsFiles { cert, key, ca, crl });
        }
    }
    bail!(
        "no client certificate: pass --cert, --key and --ca (or XTSYNC_CERT, XTSYNC_KEY, XTSYNC_CA), or keep admin.crt, admin.key and ca.crt in {} (xtsyncctl cert issue --role admin --name admin)",
        candidates.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ")
    )
}

impl Client {
    pub fn new(addr: &str, files: &TlsFiles) -> anyhow::Result<Client> {
        let base = if addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("https://{}", addr.trim_start_matches("http://"))
        };
        // Whatever role the certificate has (admin, or agent reading its jobs): the
        // coordinator decides what it may do; we only insist on talking to a coordinator.
        let pem = std::fs::read(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
        let leaf = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .ok_or_else(|| anyhow!("{}: no PEM certificate", files.cert.display()))??;
        let own = identity_of(&leaf).with_context(|| files.cert.display().to_string())?;
        let policy = TlsPolicy { own_role: own.role, ..TlsPolicy::ADMIN };
        let tls = client_config(files, &policy)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTPS client")?;
        Ok(Client { base, http })
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
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| self.unreachable(&e))?;
        self.decode(&format!("GET {path}"), resp).await
    }

    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let resp =
            self.http.post(format!("{}{path}", self.base)).json(body).send().await.map_err(|e| self.unreachable(&e))?;
        self.decode(&format!("POST {path}"), resp).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self.http.delete(format!("{}{path}", self.base)).send().await.map_err(|e| self.unreachable(&e))?;
        self.decode::<serde_json::Value>(&format!("DELETE {path}"), resp).await.map(|_| ())
    }

    fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        if find_tls_error(e).is_some() {
            return anyhow!(
                "TLS with the coordinator at {} failed: {} (the certificate must come from the cluster CA, be valid and not revoked; see --cert, --key, --ca)",
                self.base,
                describe_tls_error(e)
            );
        }
        anyhow!(
            "coordinator at {} is unreachable: {} (is xtsync-coordinator running? set --coordinator)",
            self.base,
            describe_tls_error(e)
        )
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
    pub async fn start_reconcile(&self, job: u64) -> anyhow::Result<Run> {
        self.post(&format!("/v1/jobs/{job}/runs"), &xtsync_api::RunRequest { reconcile: true }).await
    }
    pub async fn runs(&self, job: u64) -> anyhow::Result<Vec<Run>> {
        self.get(&format!("/v1/jobs/{job}/runs")).await
    }
}
