//! The control thread's side of data-plane admission: answers the receivers'
//! [`AdmissionRequest`]s by asking the coordinator for the job a session claims, keeps
//! the answers for [`REFRESH_AFTER`], and stands on a kept answer while the coordinator
//! is unreachable. The policy itself ([`job_allows`]) is the receiver's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xtsync_api::{Job, JobId};
use xtsync_receiver::admission::{job_allows, AdmissionRequest, Refusal, SessionClaim, REFRESH_AFTER};

use crate::client::CoordinatorClient;

/// How long a session's admission waits for the coordinators (an election takes
/// about a second); then a kept answer stands, or the session is refused.
const ADMISSION_WAIT_MAX: Duration = Duration::from_secs(3);

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
) -> Result<(), Refusal> {
    let id = claim.job_id;
    let fresh = kept.get(&id).filter(|(at, _)| at.elapsed() < REFRESH_AFTER).map(|(_, job)| job.clone());
    let job = match fresh {
        Some(job) => job,
        None => match client.job_within(id, ADMISSION_WAIT_MAX).await {
            Ok(job) => {
                kept.insert(id, (Instant::now(), job.clone()));
                job
            }
            Err(e) if e.is_transient() => match kept.get(&id) {
                Some((_, job)) => job.clone(),
                None => return Err(Refusal::CoordinatorUnreachable { job: id, reason: e.to_string() }),
            },
            Err(e) => {
                kept.remove(&id);
                return Err(Refusal::JobUnavailable { job: id, reason: e.to_string() });
            }
        },
    };
    job_allows(&job, own_name, claim)
}
