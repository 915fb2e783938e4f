//! Which coordinator to ask next: a pure planner, one per request, driven by what each
//! attempt came back with. No clocks and no sockets here; the driver in
//! [`crate::client`] sleeps the delays it is told and enforces the request's deadline.
//!
//! The rules, in the order a request meets them:
//! - it starts at the coordinator that last answered as leader;
//! - a 421 names the leader: go there at once (an address not in the list, a member
//!   added since the client started, is learned);
//! - no answer, or "no leader here": try the next address at once; after a full round
//!   without a leader, wait a backoff (an election is running) and go round again;
//! - a request that may have been applied and whose answer was lost is sent again only
//!   if it is idempotent; otherwise the caller is told the outcome is unknown.

/// What one attempt at one coordinator came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An answer to return to the caller (success, or a refusal that is final).
    Answered,
    /// 421: this coordinator follows `leader_addr` (the request was not applied).
    NotLeader { leader_addr: String },
    /// 503 "no leader": the request was not applied; an election may be running.
    NoLeader,
    /// The connection (TCP or TLS) could not be made: nothing was sent.
    Unreachable,
    /// The request was sent but no answer came (timeout, reset) or the coordinator
    /// failed on its side: it may have been applied.
    Lost,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Hand the last answer to the caller.
    Return,
    /// Send the request to `addrs[index]` after `delay_ms`.
    Try { index: usize, delay_ms: u64 },
    /// A non-idempotent request was lost in flight: retrying could apply it twice.
    OutcomeUnknown,
}

/// First wait after a full round found no leader; it doubles up to [`BACKOFF_MS_MAX`].
pub const BACKOFF_MS_FIRST: u64 = 20;
pub const BACKOFF_MS_MAX: u64 = 500;

/// The plan of one request over `addrs` (the driver's shared, learnable list).
#[derive(Debug, Clone)]
pub struct Plan {
    current: usize,
    /// Attempts since the last full round ended (or since the start).
    misses_in_round: usize,
    backoff_ms: u64,
    idempotent: bool,
}

impl Plan {
    /// A plan starting at `start` (the last known leader).
    pub fn new(start: usize, idempotent: bool) -> Plan {
        Plan { current: start, misses_in_round: 0, backoff_ms: BACKOFF_MS_FIRST, idempotent }
    }

    /// The index of the coordinator the next attempt goes to.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Decides what follows `outcome` of the attempt at `self.current()`. `addrs` may
    /// grow: a leader named by a 421 that it does not hold is appended.
    pub fn after(&mut self, outcome: Outcome, addrs: &mut Vec<String>) -> Next {
        match outcome {
            Outcome::Answered => Next::Return,
            Outcome::NotLeader { leader_addr } => {
                let index = match addrs.iter().position(|a| *a == leader_addr) {
                    Some(i) => i,
                    None => {
                        addrs.push(leader_addr);
                        addrs.len() - 1
                    }
                };
                if index == self.current {
                    // A node naming itself while refusing: treat as no leader.
                    return self.next_in_round(addrs.len());
                }
                // Following a redirect is progress, not a miss: the hint is fresh.
                self.current = index;
                Next::Try { index, delay_ms: 0 }
            }
            Outcome::NoLeader | Outcome::Unreachable => self.next_in_round(addrs.len()),
            Outcome::Lost if self.idempotent => self.next_in_round(addrs.len()),
            Outcome::Lost => Next::OutcomeUnknown,
        }
    }

    fn next_in_round(&mut self, n: usize) -> Next {
        self.current = (self.current + 1) % n.max(1);
        self.misses_in_round += 1;
        if self.misses_in_round < n {
            return Next::Try { index: self.current, delay_ms: 0 };
        }
        self.misses_in_round = 0;
        let delay_ms = self.backoff_ms;
        self.backoff_ms = (self.backoff_ms * 2).min(BACKOFF_MS_MAX);
        Next::Try { index: self.current, delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<String> {
        vec!["a:1".into(), "b:1".into(), "c:1".into()]
    }

    #[test]
    fn an_answer_is_returned() {
        let mut addrs = three();
        let mut plan = Plan::new(1, false);
        assert_eq!(plan.current(), 1);
        assert_eq!(plan.after(Outcome::Answered, &mut addrs), Next::Return);
    }

    #[test]
    fn a_redirect_goes_to_the_named_leader_at_once() {
        let mut addrs = three();
        let mut plan = Plan::new(0, false);
        let next = plan.after(Outcome::NotLeader { leader_addr: "c:1".into() }, &mut addrs);
        assert_eq!(next, Next::Try { index: 2, delay_ms: 0 });
        assert_eq!(plan.current(), 2);
    }

    #[test]
    fn a_leader_not_in_the_list_is_learned() {
        let mut addrs = three();
        let mut plan = Plan::new(0, true);
        let next = plan.after(Outcome::NotLeader { leader_addr: "d:1".into() }, &mut addrs);
        assert_eq!(next, Next::Try { index: 3, delay_ms: 0 });
        assert_eq!(addrs[3], "d:1");
    }

    #[test]
    fn a_dead_coordinator_is_skipped_without_waiting() {
        let mut addrs = three();
        let mut plan = Plan::new(2, false);
        assert_eq!(plan.after(Outcome::Unreachable, &mut addrs), Next::Try { index: 0, delay_ms: 0 });
        assert_eq!(plan.after(Outcome::NoLeader, &mut addrs), Next::Try { index: 1, delay_ms: 0 });
    }

    #[test]
    fn rounds_without_a_leader_back_off_and_the_backoff_is_bounded() {
        let mut addrs = three();
        let mut plan = Plan::new(0, true);
        let mut delays = Vec::new();
        for _ in 0..30 {
            match plan.after(Outcome::NoLeader, &mut addrs) {
                Next::Try { delay_ms, index } => {
                    assert!(index < 3);
                    delays.push(delay_ms)
                }
                other => panic!("a request not applied must be retried, got {other:?}"),
            }
        }
        let waits: Vec<u64> = delays.iter().copied().filter(|&d| d > 0).collect();
        assert_eq!(waits.len(), 10, "one wait per round of three: {delays:?}");
        assert_eq!(waits[0], BACKOFF_MS_FIRST);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(*waits.last().unwrap(), BACKOFF_MS_MAX);
    }

    #[test]
    fn a_lost_write_is_not_sent_twice_but_a_lost_read_is_retried() {
        let mut addrs = three();
        assert_eq!(Plan::new(0, false).after(Outcome::Lost, &mut addrs), Next::OutcomeUnknown);
        assert_eq!(Plan::new(0, true).after(Outcome::Lost, &mut addrs), Next::Try { index: 1, delay_ms: 0 });
    }

    #[test]
    fn a_node_redirecting_to_itself_counts_as_no_leader() {
        let mut addrs = three();
        let mut plan = Plan::new(1, false);
        assert_eq!(
            plan.after(Outcome::NotLeader { leader_addr: "b:1".into() }, &mut addrs),
            Next::Try { index: 2, delay_ms: 0 }
        );
    }

    #[test]
    fn one_coordinator_is_retried_after_a_wait() {
        let mut addrs = vec!["a:1".to_string()];
        let mut plan = Plan::new(0, true);
        assert_eq!(plan.after(Outcome::Unreachable, &mut addrs), Next::Try { index: 0, delay_ms: BACKOFF_MS_FIRST });
    }
}
