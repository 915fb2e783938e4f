//! Which sessions a target admits beyond the TLS handshake: a peer (worker or agent)
//! only for a job whose source is that peer, whose target is this daemon, and whose
//! target path is the root the session's Hello names. So a worker certificate cannot
//! write into another job's target, or anywhere else on the host.
//! `networking.admit_worker_sessions: any` admits worker peers unchecked (a daemon
//! with no coordinator to ask); agent peers are checked whatever it says. The job comes from
//! the coordinator (the control thread asks, [`serve_admissions`]); answers are kept
//! and refreshed every [`REFRESH_AFTER`], and a kept answer stands while the
//! coordinator is unreachable, so an intermittent link does not stop replication.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xtsync_api::{Job, JobId};
use xtsync_transport::{PeerIdentity, Role};

use crate::client::CoordinatorClient;

/// A kept job is read again after this long (a deleted job stops being admitted).
pub const REFRESH_AFTER: Duration = Duration::from_secs(300);
/// How long a session's Hello may wait for the verdict.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

/// Which peers need their job checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedPeers {
    /// Agent peers only (`networking.admit_worker_sessions: any`).
    Agents,
    /// Every peer (the default of workers and agents).
    All,
}

impl CheckedPeers {
    pub fn needs_check(self, peer: Role) -> bool {
        match self {
            CheckedPeers::Agents => peer == Role::Agent,
            CheckedPeers::All => true,
        }
    }
}

/// What a session's peer asks to do: replicate job `job_id` into `target_root`.
#[derive(Debug, Clone)]
pub struct SessionClaim {
    pub peer: PeerIdentity,
    pub job_id: JobId,
    pub target_root: String,
}

/// A claim and where its verdict goes (`Err`: the reason for refusing).
pub type AdmissionRequest = (SessionClaim, flume::Sender<Result<(), String>>);

/// Held by each core: the policy and the way to the control thread.
#[derive(Clone)]
pub struct Admission {
    pub checked: CheckedPeers,
    pub requests: flume::Sender<AdmissionRequest>,
}

impl Admission {
    /// The verdict on `claim` (admitted at once if its peer needs no check).
    pub async fn admit(&self, claim: SessionClaim) -> Result<(), String> {
        if !self.checked.needs_check(claim.peer.role) {
            return Ok(());
        }
        let (tx, rx) = flume::bounded(1);
        self.requests.send((claim, tx)).map_err(|_| "the control thread stopped".to_string())?;
        match crate::secure::within(VERDICT_TIMEOUT, rx.recv_async()).await {
            Some(Ok(verdict)) => verdict,
            Some(Err(_)) => Err("the control thread stopped".into()),
            None => Err(format!("no verdict from the coordinator within {VERDICT_TIMEOUT:?}")),
        }
    }
}

/// Whether `job` lets `claim` write into this daemon (`own_name`). Pure.
pub fn job_allows(job: &Job, own_name: &str, claim: &SessionClaim) -> Result<(), String> {
    let spec = &job.spec;
    if spec.source_worker != claim.peer.name {
        return Err(format!("job {} is not replicated from {}", job.id, claim.peer.name));
    }
    if spec.target_worker != own_name {
        return Err(format!("job {} does not replicate into {own_name}", job.id));
    }
    if spec.target_path != claim.target_root {
        return Err(format!("job {} does not replicate into {}", job.id, claim.target_root));
    }
    Ok(())
}

/// Serves the cores' admission requests from the control thread until they stop.
pub async fn serve_admissions(
    requests: flume::Receiver<AdmissionRequest>,
    client: CoordinatorClient,
    own_name: String,
) {
    let mut kept: HashMap<JobId, (Instant, Job)> = HashMap::new();
    while let Ok((claim, reply)) = requests.recv_async().await {
        let verdict = verdict(&mut kept, &client, &own_name, &claim).await;
        match &verdict {
            Ok(()) => {
                tracing::info!(peer = %claim.peer, job = claim.job_id, root = %claim.target_root, "data-plane session admitted: the peer is its job's source")
            }
            Err(reason) => {
                tracing::warn!(peer = %claim.peer, job = claim.job_id, root = %claim.target_root, %reason, "refused data-plane session")
            }
        }
        let _ = reply.send(verdict);
    }
}

async fn verdict(
    kept: &mut HashMap<JobId, (Instant, Job)>,
    client: &CoordinatorClient,
    own_name: &str,
    claim: &SessionClaim,
) -> Result<(), String> {
    let id = claim.job_id;
    let fresh = kept.get(&id).filter(|(at, _)| at.elapsed() < REFRESH_AFTER).map(|(_, job)| job.clone());
    let job = match fresh {
        Some(job) => job,
        None => match client.job(id).await {
            Ok(job) => {
                kept.insert(id, (Instant::now(), job.clone()));
                job
            }
            Err(e) if e.is_transient() => match kept.get(&id) {
                Some((_, job)) => job.clone(),
                None => return Err(format!("cannot check job {id} with the coordinator: {e}")),
            },
            Err(e) => {
                kept.remove(&id);
                return Err(format!("job {id}: {e}"));
            }
        },
    };
    job_allows(&job, own_name, claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtsync_api::{JobOptions, JobSpec};

    fn claim(peer: &str, role: Role, root: &str) -> SessionClaim {
        SessionClaim {
            peer: PeerIdentity { name: peer.into(), role, serial: "01".into() },
            job_id: 4,
            target_root: root.into(),
        }
    }

    #[test]
    fn a_peer_writes_only_where_its_job_says() {
        let job = Job {
            id: 4,
            spec: JobSpec {
                name: "edge".into(),
                source_worker: "edge-1".into(),
                source_path: "/data".into(),
                target_worker: "dc1-a".into(),
                target_path: "/backup/edge-1".into(),
                options: JobOptions::default(),
                agents: vec![],
            },
            created_unix_ms: 0,
        };
        job_allows(&job, "dc1-a", &claim("edge-1", Role::Agent, "/backup/edge-1")).unwrap();
        // A worker peer is held to the same job.
        job_allows(&job, "dc1-a", &claim("edge-1", Role::Worker, "/backup/edge-1")).unwrap();
        assert!(job_allows(&job, "dc1-a", &claim("dc1-c", Role::Worker, "/backup/edge-1")).is_err());
        assert!(job_allows(&job, "dc1-a", &claim("edge-1", Role::Agent, "/etc")).is_err());
        assert!(job_allows(&job, "dc1-a", &claim("edge-2", Role::Agent, "/backup/edge-1")).is_err());
        assert!(job_allows(&job, "dc1-b", &claim("edge-1", Role::Agent, "/backup/edge-1")).is_err());
    }

    #[test]
    fn every_peer_is_checked_unless_worker_sessions_are_admitted_as_any() {
        assert!(CheckedPeers::Agents.needs_check(Role::Agent));
        assert!(!CheckedPeers::Agents.needs_check(Role::Worker));
        assert!(CheckedPeers::All.needs_check(Role::Worker));
    }
}
