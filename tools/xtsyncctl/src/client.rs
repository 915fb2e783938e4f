//! A small client of the coordinators' REST API, over HTTPS with the operator's
//! certificate (role `admin`, or `agent` for read-only use); `xtsync-client` finds
//! the leader among the coordinators given.

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use xtsync_api::{ClusterStatus, Job, JobSpec, Run, WorkerStatus};
use xtsync_client::{ClientError, ClientOptions, Retry, TlsSource};
use xtsync_transport::{client_config, identity_of, TlsFiles, TlsPolicy};

pub struct Client {
    inner: xtsync_client::Client,
}

/// How long a command looks for a leader before it says there is none.
const FAILOVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// One coordinator as `xtsyncctl status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct Member {
    pub addr: String,
    /// Its own view; `None` when it did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<ClusterStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// A client of the coordinators at `addrs` (`host:port`; the leader is found).
    pub fn new(addrs: &[String], files: &TlsFiles) -> anyhow::Result<Client> {
        // Whatever role the certificate has (admin, or agent reading its jobs): the
        // coordinator decides what it may do; we only insist on talking to a coordinator.
        let pem = std::fs::read(&files.cert).with_context(|| format!("reading {}", files.cert.display()))?;
        let leaf = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .ok_or_else(|| anyhow!("{}: no PEM certificate", files.cert.display()))??;
        let own = identity_of(&leaf).with_context(|| files.cert.display().to_string())?;
        let policy = TlsPolicy { own_role: own.role, ..TlsPolicy::ADMIN };
        let tls = client_config(files, &policy)?;
        // An operator waits for an election (about a second), not for a cluster that
        // lost its quorum: that is reported after this.
        let options = ClientOptions { failover_deadline: FAILOVER_DEADLINE, ..ClientOptions::default() };
        let inner = xtsync_client::Client::new(addrs, TlsSource::Fixed(tls), options)?;
        Ok(Client { inner })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.inner.get(path).await.map_err(|e| self.explain(&format!("GET {path}"), e))
    }

    /// A write that would take effect twice if repeated (creating a job or a run).
    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        self.inner.post(path, body, Retry::Once).await.map_err(|e| self.explain(&format!("POST {path}"), e))
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let done: anyhow::Result<serde_json::Value> =
            self.inner.delete(path).await.map_err(|e| self.explain(&format!("DELETE {path}"), e));
        done.map(|_| ())
    }

    fn explain(&self, what: &str, e: ClientError) -> anyhow::Error {
        let addrs = self.inner.addrs().join(", ");
        match e {
            ClientError::Unreachable { tls: true, reasons } => anyhow!(
                "{what}: TLS with the coordinators failed: {reasons} (the certificate must come from the cluster CA, be valid and not revoked; see --cert, --key, --ca)"
            ),
            ClientError::Unreachable { reasons, .. } => anyhow!(
                "{what}: no coordinator reachable at {addrs}: {reasons} (is xtsync-coordinator running? set --coordinator, once per coordinator)"
            ),
            ClientError::Status { status, message, .. } => {
                anyhow!("{what}: coordinator answered {status}: {message}")
            }
            other => anyhow!("{what}: {other}"),
        }
    }

    /// Whether some coordinator answers `/health`.
    pub async fn health(&self) -> bool {
        self.inner.get::<serde_json::Value>("/health").await.is_ok()
    }

    pub async fn status(&self) -> anyhow::Result<ClusterStatus> {
        self.get("/v1/status").await
    }

    /// Each coordinator's own view (`/v1/status?local=true`), or why it did not answer.
    pub async fn members(&self) -> Vec<Member> {
        let mut members = Vec::new();
        let mut addrs = self.inner.addrs();
        addrs.sort();
        for addr in addrs {
            let answer: Result<ClusterStatus, ClientError> = self.inner.get_at(&addr, "/v1/status?local=true").await;
            members.push(match answer {
                Ok(mut view) => {
                    view.workers.clear(); // liveness is the leader's, shown once
                    Member { addr, view: Some(view), error: None }
                }
                Err(e) => Member { addr, view: None, error: Some(e.to_string()) },
            });
        }
        members
    }
    pub async fn init(&self) -> anyhow::Result<serde_json::Value> {
        // Initializing an initialized cluster answers `already`: safe to send again.
        let body = serde_json::json!({});
        let done = self.inner.post("/v1/cluster/init", &body, Retry::Idempotent).await;
        done.map_err(|e| self.explain("POST /v1/cluster/init", e))
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
