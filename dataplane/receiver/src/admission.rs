//! Which sessions a target admits beyond the TLS handshake: a peer (worker or agent)
//! only for a job whose source is that peer, whose target is this daemon, and whose
//! target path is the root the session's Hello names. So a worker certificate cannot
//! write into another job's target, or anywhere else on the host.
//! `networking.admit_worker_sessions: any` admits worker peers unchecked (a daemon
//! with no coordinator to ask); agent peers are checked whatever it says. The job comes from
//! the coordinator: the worker's control thread answers [`AdmissionRequest`]s
//! (`xtsync_worker::admissions`), keeps answers and refreshes them every
//! [`REFRESH_AFTER`]; a kept answer stands while the coordinator is unreachable, so an
//! intermittent link does not stop replication.

use std::time::Duration;

use xtsync_api::{Job, JobId};

use xtsync_transport::{PeerIdentity, Role};

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

/// Why a session is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The job replicates from another source.
    #[error("job {job} is not replicated from {peer}")]
    NotItsSource { job: JobId, peer: String },
    /// The job replicates into another daemon.
    #[error("job {job} does not replicate into {daemon}")]
    NotThisDaemon { job: JobId, daemon: String },
    /// The job replicates into another root on this daemon.
    #[error("job {job} does not replicate into {root}")]
    NotThisRoot { job: JobId, root: String },
    /// The coordinator could not be asked and no answer is kept.
    #[error("cannot check job {job} with the coordinator: {reason}")]
    CoordinatorUnreachable { job: JobId, reason: String },
    /// The coordinator answered that the job cannot be read (deleted, say).
    #[error("job {job}: {reason}")]
    JobUnavailable { job: JobId, reason: String },
    /// The worker's control thread is gone (the daemon is stopping).
    #[error("the control thread stopped")]
    ControlStopped,
    /// No verdict in time.
    #[error("no verdict from the coordinator within {0:?}")]
    NoVerdict(Duration),
}

/// A claim and where its verdict goes.
pub type AdmissionRequest = (SessionClaim, flume::Sender<Result<(), Refusal>>);

/// Held by each core: the policy and the way to the control thread.
#[derive(Clone)]
pub struct Admission {
    pub checked: CheckedPeers,
    pub requests: flume::Sender<AdmissionRequest>,
}

impl Admission {
    /// The verdict on `claim` (admitted at once if its peer needs no check).
    pub async fn admit(&self, claim: SessionClaim) -> Result<(), Refusal> {
        if !self.checked.needs_check(claim.peer.role) {
            return Ok(());
        }
        let (tx, rx) = flume::bounded(1);
        self.requests.send((claim, tx)).map_err(|_| Refusal::ControlStopped)?;
        match xtsync_link::secure::within(VERDICT_TIMEOUT, rx.recv_async()).await {
            Some(Ok(verdict)) => verdict,
            Some(Err(_)) => Err(Refusal::ControlStopped),
            None => Err(Refusal::NoVerdict(VERDICT_TIMEOUT)),
        }
    }
}

/// Whether `job` lets `claim` write into this daemon (`own_name`). Pure.
pub fn job_allows(job: &Job, own_name: &str, claim: &SessionClaim) -> Result<(), Refusal> {
    let spec = &job.spec;
    if spec.source_worker != claim.peer.name {
        return Err(Refusal::NotItsSource { job: job.id, peer: claim.peer.name.clone() });
    }
    if spec.target_worker != own_name {
        return Err(Refusal::NotThisDaemon { job: job.id, daemon: own_name.to_string() });
    }
    if spec.target_path != claim.target_root {
        return Err(Refusal::NotThisRoot { job: job.id, root: claim.target_root.clone() });
    }
    Ok(())
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
        assert_eq!(
            job_allows(&job, "dc1-a", &claim("dc1-c", Role::Worker, "/backup/edge-1")),
            Err(Refusal::NotItsSource { job: 4, peer: "dc1-c".into() })
        );
        assert_eq!(
            job_allows(&job, "dc1-a", &claim("edge-1", Role::Agent, "/etc")),
            Err(Refusal::NotThisRoot { job: 4, root: "/etc".into() })
        );
        assert_eq!(
            job_allows(&job, "dc1-a", &claim("edge-2", Role::Agent, "/backup/edge-1")),
            Err(Refusal::NotItsSource { job: 4, peer: "edge-2".into() })
        );
        assert_eq!(
            job_allows(&job, "dc1-b", &claim("edge-1", Role::Agent, "/backup/edge-1")),
            Err(Refusal::NotThisDaemon { job: 4, daemon: "dc1-b".into() })
        );
    }

    #[test]
    fn every_peer_is_checked_unless_worker_sessions_are_admitted_as_any() {
        assert!(CheckedPeers::Agents.needs_check(Role::Agent));
        assert!(!CheckedPeers::Agents.needs_check(Role::Worker));
        assert!(CheckedPeers::All.needs_check(Role::Worker));
    }
}
