//! Which pending runs a heartbeat hands out: a pure function of the candidates, the
//! worker's `running` list, the clock, and what was handed out before.
//!
//! This state is in memory on the leader only (a new leader simply hands every pending
//! run out again; workers ignore an assignment they already run).

use std::collections::{HashMap, HashSet};

use xtsync_api::RunId;

/// A handed-out run that is still Pending and that the worker does not list as running
/// is handed out again after this long.
pub const REHAND_AFTER_MS: u64 = 30_000;
/// Most assignments one heartbeat reply carries.
pub const ASSIGNMENTS_PER_REPLY_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
struct HandedOut {
    worker: String,
    at_unix_ms: u64,
}

#[derive(Debug, Default)]
pub struct HandOutTracker {
    handed: HashMap<RunId, HandedOut>,
}

impl HandOutTracker {
    /// Picks among `candidates` (Pending runs whose source is `worker`) the ones to send
    /// now, and records them as handed out at `now_unix_ms`.
    pub fn select(&mut self, worker: &str, now_unix_ms: u64, running: &[RunId], candidates: &[RunId]) -> Vec<RunId> {
        let mut out = Vec::new();
        for &run_id in candidates {
            if out.len() >= ASSIGNMENTS_PER_REPLY_MAX {
                break;
            }
            let send = match self.handed.get_mut(&run_id) {
                None => true,
                // The worker has it: restart the clock instead of sending it again.
                Some(h) if running.contains(&run_id) && h.worker == worker => {
                    h.at_unix_ms = now_unix_ms;
                    false
                }
                Some(h) => h.worker != worker || now_unix_ms.saturating_sub(h.at_unix_ms) >= REHAND_AFTER_MS,
            };
            if send {
                self.handed.insert(run_id, HandedOut { worker: worker.to_string(), at_unix_ms: now_unix_ms });
                out.push(run_id);
            }
        }
        out
    }

    /// Forgets runs that are no longer pending (bounds the map by the pending set).
    pub fn retain_pending(&mut self, pending: &HashSet<RunId>) {
        self.handed.retain(|id, _| pending.contains(id));
    }

    pub fn len(&self) -> usize {
        self.handed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_once_then_again_after_timeout_unless_running() {
        let mut t = HandOutTracker::default();
        assert_eq!(t.select("w", 1_000, &[], &[1, 2]), [1, 2]);
        assert!(t.select("w", 2_000, &[], &[1, 2]).is_empty(), "handed out once");
        // Run 1 is reported running: it is never sent again while it stays listed.
        assert!(t.select("w", 40_000, &[1], &[1]).is_empty());
        // Run 2 was lost by the worker: sent again after 30 s.
        assert_eq!(t.select("w", 31_000, &[1], &[2]), [2]);
        assert!(t.select("w", 31_500, &[], &[2]).is_empty());
        assert_eq!(t.select("w", 61_000, &[], &[2]), [2]);
    }

    #[test]
    fn forgets_runs_that_left_pending() {
        let mut t = HandOutTracker::default();
        t.select("w", 0, &[], &[1, 2, 3]);
        t.retain_pending(&HashSet::from([2]));
        assert_eq!(t.len(), 1);
        assert_eq!(t.select("w", 1, &[], &[1]), [1], "a forgotten run is new again");
    }

    #[test]
    fn reply_is_bounded() {
        let mut t = HandOutTracker::default();
        let many: Vec<RunId> = (0..200).collect();
        assert_eq!(t.select("w", 0, &[], &many).len(), ASSIGNMENTS_PER_REPLY_MAX);
        assert_eq!(t.select("w", 0, &[], &many).len(), ASSIGNMENTS_PER_REPLY_MAX);
    }
}
