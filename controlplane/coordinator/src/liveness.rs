//! Worker liveness: the time of each worker's last heartbeat, in memory on the leader.
//! Heartbeats are not Raft entries (they would flood the log); after a leader change
//! every worker looks dead until its next heartbeat, at most one long poll later.

use std::collections::HashMap;
use std::sync::Mutex;

/// A worker is alive if it sent a heartbeat within this long.
pub const ALIVE_WITHIN_MS: u64 = 10_000;

#[derive(Debug, Default)]
pub struct Liveness {
    last_heartbeat_unix_ms: Mutex<HashMap<String, u64>>,
}

impl Liveness {
    pub fn record(&self, worker: &str, now_unix_ms: u64) {
        let mut map = self.last_heartbeat_unix_ms.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(worker.to_string(), now_unix_ms);
    }

    /// Last heartbeat of `worker` (0 if none since this node became leader).
    pub fn last(&self, worker: &str) -> u64 {
        let map = self.last_heartbeat_unix_ms.lock().unwrap_or_else(|p| p.into_inner());
        map.get(worker).copied().unwrap_or(0)
    }

    pub fn is_alive(last_unix_ms: u64, now_unix_ms: u64) -> bool {
        last_unix_ms != 0 && now_unix_ms.saturating_sub(last_unix_ms) <= ALIVE_WITHIN_MS
    }

    pub fn alive_count(&self, now_unix_ms: u64) -> usize {
        let map = self.last_heartbeat_unix_ms.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|&&t| Self::is_alive(t, now_unix_ms)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_means_heartbeat_within_ten_seconds() {
        let l = Liveness::default();
        l.record("w", 1_000);
        assert_eq!(l.alive_count(11_000), 1);
        assert_eq!(l.alive_count(11_001), 0);
        assert!(!Liveness::is_alive(l.last("ghost"), 5));
    }
}
