//! The coordinator service: Raft plus the in-memory, leader-only parts (liveness,
//! hand-outs, long polls). The REST handlers are thin wrappers over these methods.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::ServerState;
use tokio::sync::{watch, Notify};
use xtsync_api::{
    now_unix_ms, Assignment, ClusterStatus, HeartbeatReply, Job, JobId, RunId, WorkerHeartbeat, WorkerStatus,
};

use crate::assignments::HandOutTracker;
use crate::error::ServiceError;
use crate::liveness::Liveness;
use crate::metrics::MetricsSnapshot;
use crate::raft_types::{Node, NodeId, Raft};
use crate::state::{query, Command, Outcome};
use crate::store::reader::StateReader;
use crate::timing::{QUORUM_ACK_MS_MAX, READ_BARRIER_WAIT_MAX};

/// Longest a heartbeat long poll waits for an assignment.
pub const HEARTBEAT_WAIT_MS_MAX: u64 = 30_000;
/// Most run reports one heartbeat may carry.
pub const REPORTS_PER_HEARTBEAT_MAX: usize = 256;
/// Most run ids one heartbeat may list as running.
pub const RUNNING_PER_HEARTBEAT_MAX: usize = 4096;
/// Most pending runs the scheduler looks at per heartbeat.
const PENDING_SCAN_MAX: usize = 10_000;

pub struct Coordinator {
    pub node_id: NodeId,
    pub raft: Raft,
    pub reader: StateReader,
    pub liveness: Liveness,
    /// Members to initialize the group with (`POST /v1/cluster/init`, `--init`).
    init_members: BTreeMap<NodeId, Node>,
    hand_outs: Mutex<HandOutTracker>,
    /// Woken when a run is created, so that waiting heartbeats look again.
    new_work: Notify,
    /// Flips to true on shutdown so that long polls answer at once.
    shutdown: watch::Sender<bool>,
    pub http_requests_total: AtomicU64,
}

impl Coordinator {
    pub fn new(node_id: NodeId, raft: Raft, reader: StateReader, init_members: BTreeMap<NodeId, Node>) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            raft,
            reader,
            liveness: Liveness::default(),
            init_members,
            hand_outs: Mutex::new(HandOutTracker::default()),
            new_work: Notify::new(),
            shutdown: watch::channel(false).0,
            http_requests_total: AtomicU64::new(0),
        })
    }

    /// Ends long polls; call before shutting the HTTP server down.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn count_request(&self) {
        self.http_requests_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leader_id(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Initialized = this node has a membership config (own or received from a leader).
    pub fn is_initialized(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().voter_ids().next().is_some()
    }

    fn not_leader(&self, leader_id: Option<NodeId>, leader_node: Option<Node>) -> ServiceError {
        // A leader whose address this node does not know yet is no help to the client:
        // it tries the other coordinators, as when no leader is known.
        match (leader_id, leader_node) {
            (Some(leader_id), Some(node)) if leader_id != self.node_id => {
                ServiceError::NotLeader { node_id: self.node_id, leader_id, leader_addr: node.addr }
            }
            _ => ServiceError::NoLeader { node_id: self.node_id },
        }
    }

    /// Leader-only operations (heartbeats, writes) check this first. A leader that has
    /// not heard from a quorum within its lease answers as a node without a leader
    /// (check-quorum): it may have been deposed behind a partition, and the client
    /// should look for the leader elsewhere instead of waiting on a write that cannot
    /// commit.
    pub fn ensure_leader(&self) -> Result<(), ServiceError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return match m.millis_since_quorum_ack {
                Some(ms) if ms > QUORUM_ACK_MS_MAX => {
                    Err(ServiceError::NoQuorum { node_id: self.node_id, since_ms: ms })
                }
                _ => Ok(()),
            };
        }
        let node = m.current_leader.and_then(|id| m.membership_config.membership().get_node(&id).cloned());
        Err(self.not_leader(m.current_leader, node))
    }

    /// Before a read that must be current: this node leads, and a quorum confirms it
    /// now (openraft's read index), and the state applied here has caught up with it.
    pub async fn read_barrier(&self) -> Result<(), ServiceError> {
        self.ensure_leader()?;
        match tokio::time::timeout(READ_BARRIER_WAIT_MAX, self.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Err(ServiceError::NoLeader { node_id: self.node_id })
            }
            Ok(Err(RaftError::Fatal(e))) => Err(ServiceError::Raft(e.to_string())),
        }
    }

    /// Proposes `cmd` and waits until it is committed and applied.
    pub async fn write(&self, cmd: Command) -> Result<Outcome, ServiceError> {
        self.ensure_leader()?;
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data?),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id, f.leader_node))
            }
            Err(RaftError::APIError(e)) => Err(ServiceError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ServiceError::Raft(e.to_string())),
        }
    }

    /// Creates a run and wakes the heartbeats waiting for work.
    pub async fn create_run(&self, job_id: JobId, reconcile: bool) -> Result<Outcome, ServiceError> {
        let out = self.write(Command::CreateRun { job_id, created_unix_ms: now_unix_ms(), reconcile }).await?;
        self.new_work.notify_waiters();
        Ok(out)
    }

    /// Deletes a job and wakes the heartbeats waiting, so that its runs stop at once
    /// (see [`Coordinator::cancelled_among`]).
    pub async fn delete_job(&self, id: JobId) -> Result<Outcome, ServiceError> {
        let out = self.write(Command::DeleteJob { id }).await?;
        self.new_work.notify_waiters();
        Ok(out)
    }

    /// Initializes the Raft group; `Ok(true)` if it already was.
    pub async fn initialize(&self) -> Result<bool, ServiceError> {
        if self.raft.is_initialized().await.map_err(|e| ServiceError::Raft(e.to_string()))? {
            return Ok(true);
        }
        match self.raft.initialize(self.init_members.clone()).await {
            Ok(()) => Ok(false),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(true),
            Err(e) => Err(ServiceError::Raft(e.to_string())),
        }
    }

    pub fn workers(&self) -> Result<Vec<WorkerStatus>, ServiceError> {
        let now = now_unix_ms();
        let regs = query::workers(&self.reader)?;
        Ok(regs
            .into_iter()
            .map(|registration| {
                let last = self.liveness.last(&registration.name);
                WorkerStatus { registration, last_heartbeat_unix_ms: last, alive: Liveness::is_alive(last, now) }
            })
            .collect())
    }

    pub fn status(&self) -> Result<ClusterStatus, ServiceError> {
        let m = self.raft.metrics().borrow().clone();
        let c = query::counters(&self.reader)?;
        Ok(ClusterStatus {
            node_id: self.node_id,
            role: format!("{:?}", m.state).to_lowercase(),
            leader_id: m.current_leader,
            term: m.current_term,
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            initialized: self.is_initialized(),
            workers: self.workers()?,
            jobs: c.jobs,
            runs_active: c.runs_active(),
            catalog_versions: c.catalog_versions,
        })
    }

    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot, ServiceError> {
        let m = self.raft.metrics().borrow().clone();
        Ok(MetricsSnapshot {
            term: m.current_term,
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_leader: m.state == ServerState::Leader,
            workers_alive: self.liveness.alive_count(now_unix_ms()) as u64,
            counters: query::counters(&self.reader)?,
            http_requests_total: self.http_requests_total.load(Ordering::Relaxed),
        })
    }

    /// Records a heartbeat, applies its reports, and long-polls for assignments.
    pub async fn heartbeat(&self, worker: &str, hb: WorkerHeartbeat) -> Result<HeartbeatReply, ServiceError> {
        self.ensure_leader()?;
        if query::worker(&self.reader, worker)?.is_none() {
            return Err(ServiceError::NotFound(format!(
                "worker {worker:?} is not registered: POST /v1/workers/register first"
            )));
        }
        self.liveness.record(worker, now_unix_ms());
        if hb.running.len() > RUNNING_PER_HEARTBEAT_MAX {
            return Err(ServiceError::TooLarge(format!(
                "a heartbeat lists {} running runs; at most {RUNNING_PER_HEARTBEAT_MAX}",
                hb.running.len()
            )));
        }
        if hb.reports.len() > REPORTS_PER_HEARTBEAT_MAX {
            return Err(ServiceError::TooLarge(format!(
                "a heartbeat carries {} reports; at most {REPORTS_PER_HEARTBEAT_MAX}",
                hb.reports.len()
            )));
        }
        for (run_id, report) in hb.reports {
            if report.worker != worker {
                tracing::warn!(worker, run_id, claimed = %report.worker, "ignoring a report signed by another worker");
                continue;
            }
            let cmd = Command::ReportRun { run_id, report, unix_ms: now_unix_ms() };
            match self.write(cmd).await {
                Ok(_) => {}
                Err(ServiceError::Refused(e)) => tracing::warn!(worker, run_id, error = %e, "run report refused"),
                Err(e) => return Err(e),
            }
        }

        let wait = Duration::from_millis(hb.wait_ms.min(HEARTBEAT_WAIT_MS_MAX));
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = self.shutdown.subscribe();
        loop {
            // Register interest before looking, so that a run created in between wakes us.
            let notified = self.new_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let assignments = self.assignments_for(worker, &hb.running)?;
            let cancelled = self.cancelled_among(&hb.running)?;
            if !assignments.is_empty() || !cancelled.is_empty() || *shutdown.borrow() {
                return Ok(HeartbeatReply { assignments, cancelled });
            }
            let idle = HeartbeatReply { assignments: Vec::new(), cancelled: Vec::new() };
            tokio::select! {
                _ = &mut notified => continue,
                _ = shutdown.changed() => return Ok(idle),
                _ = tokio::time::sleep_until(deadline) => return Ok(idle),
            }
        }
    }

    /// Runs a worker says it runs whose job is gone: it must stop them.
    fn cancelled_among(&self, running: &[RunId]) -> Result<Vec<RunId>, ServiceError> {
        let mut out = Vec::new();
        for &run_id in running {
            let gone = match query::run(&self.reader, run_id)? {
                Some(run) => query::job(&self.reader, run.job_id)?.is_none(),
                None => true,
            };
            if gone {
                out.push(run_id);
            }
        }
        Ok(out)
    }

    /// Pending runs whose job's source is `worker`, filtered by the hand-out tracker.
    fn assignments_for(&self, worker: &str, running: &[RunId]) -> Result<Vec<Assignment>, ServiceError> {
        // A bounded index scan plus point reads: small enough to run inline.
        let pending = query::pending_runs(&self.reader, PENDING_SCAN_MAX)?;
        let mut jobs: HashMap<JobId, Option<Job>> = HashMap::new();
        let mut candidates = Vec::new();
        for run in &pending {
            if let Entry::Vacant(slot) = jobs.entry(run.job_id) {
                slot.insert(query::job(&self.reader, run.job_id)?);
            }
            if let Some(Some(job)) = jobs.get(&run.job_id) {
                if job.spec.source_worker == worker {
                    candidates.push(run.id);
                }
            }
        }
        let selected = {
            let mut tracker = self.hand_outs.lock().unwrap_or_else(|p| p.into_inner());
            tracker.retain_pending(&pending.iter().map(|r| r.id).collect::<HashSet<_>>());
            tracker.select(worker, now_unix_ms(), running, &candidates)
        };
        let mut out = Vec::new();
        for run_id in selected {
            let Some(run) = pending.iter().find(|r| r.id == run_id) else { continue };
            let Some(Some(job)) = jobs.get(&run.job_id) else { continue };
            let Some(target) = query::worker(&self.reader, &job.spec.target_worker)? else {
                tracing::warn!(run_id, target = %job.spec.target_worker, "target worker of a pending run is not registered");
                continue;
            };
            out.push(Assignment {
                run_id,
                job: job.clone(),
                target_data_addr: target.data_addr,
                reconcile: run.reconcile,
            });
        }
        Ok(out)
    }
}
