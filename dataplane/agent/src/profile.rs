//! What makes the worker's engine an agent: its own certificate role, one core, and
//! patience with an intermittent link (retries up to 30 s, never giving up).

use std::time::Duration;

use xtsync_receiver::admission::CheckedPeers;
use xtsync_transport::TlsPolicy;
use xtsync_worker::control::ControlOptions;
use xtsync_worker::daemon::Profile;

/// The longest wait between two attempts to reach the coordinator or the peer worker.
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(30);

pub const AGENT: Profile = Profile {
    kind: "agent",
    policy: TlsPolicy::AGENT,
    metadata_dir_name: "agent",
    cores_default: Some(1),
    name_from_certificate: true,
    control: ControlOptions { register_retry_max: RETRY_DELAY_MAX, heartbeat_retry_max: RETRY_DELAY_MAX },
    pass_retry_delay_max: RETRY_DELAY_MAX,
    // Every peer (a worker pushing a pull job) writes only into its job's directory.
    checked_peers: CheckedPeers::All,
};
