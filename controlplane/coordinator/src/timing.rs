//! Raft and request timing of the coordinators, in one place because they must agree
//! (docs/decisions/0030-coordinator-failover.md).
//!
//! The group runs on one LAN or a few sites (round trips of a few ms to tens of ms).
//! After a leader dies, a follower refuses votes while its lease from the old leader
//! runs (`ELECTION_TIMEOUT_MAX_MS`, openraft's leader lease), then an election follows
//! within another `MIN..MAX`: a new leader ~0.6–0.8 s after the leader's last heartbeat.

use std::time::Duration;

pub const HEARTBEAT_INTERVAL_MS: u64 = 50;
pub const ELECTION_TIMEOUT_MIN_MS: u64 = 200;
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 400;

/// A leader that heard from no quorum for this long stops taking requests
/// (check-quorum): twice the election timeout, by when the others have elected a new
/// leader if they can.
pub const QUORUM_ACK_MS_MAX: u64 = 2 * ELECTION_TIMEOUT_MAX_MS;

/// A read waits this long at most for a quorum to confirm the leader.
pub const READ_BARRIER_WAIT_MAX: Duration = Duration::from_secs(2);

const _: () = assert!(HEARTBEAT_INTERVAL_MS * 3 <= ELECTION_TIMEOUT_MIN_MS, "a few heartbeats per election timeout");
const _: () = assert!(ELECTION_TIMEOUT_MIN_MS < ELECTION_TIMEOUT_MAX_MS);
