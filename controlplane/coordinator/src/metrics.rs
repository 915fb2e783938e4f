//! `/metrics`: Prometheus text rendered from a snapshot of the coordinator's numbers.

use xtsync_api::metrics::{write_labelled, write_metric};

use crate::state::Counters;

/// Everything `/metrics` shows, gathered at scrape time.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub term: u64,
    pub last_applied_index: u64,
    pub is_leader: bool,
    pub workers_alive: u64,
    pub counters: Counters,
    pub http_requests_total: u64,
}

pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let c = &s.counters;
    write_metric(&mut out, "xtsync_coordinator_raft_term", "gauge", "Current Raft term.", s.term as f64);
    write_metric(
        &mut out,
        "xtsync_coordinator_raft_last_applied_index",
        "gauge",
        "Index of the last log entry applied to the state machine.",
        s.last_applied_index as f64,
    );
    write_metric(
        &mut out,
        "xtsync_coordinator_is_leader",
        "gauge",
        "1 if this coordinator is the Raft leader.",
        if s.is_leader { 1.0 } else { 0.0 },
    );
    write_metric(&mut out, "xtsync_coordinator_workers_registered", "gauge", "Registered workers.", c.workers as f64);
    write_metric(
        &mut out,
        "xtsync_coordinator_workers_alive",
        "gauge",
        "Workers with a heartbeat in the last 10 s (as seen by this node; leader only).",
        s.workers_alive as f64,
    );
    write_metric(&mut out, "xtsync_coordinator_jobs", "gauge", "Defined jobs.", c.jobs as f64);
    let runs = [
        ("pending", c.runs_pending),
        ("running", c.runs_running),
        ("succeeded", c.runs_succeeded),
        ("failed", c.runs_failed),
    ];
    let samples: Vec<(Vec<(&str, String)>, f64)> =
        runs.iter().map(|(state, n)| (vec![("state", state.to_string())], *n as f64)).collect();
    write_labelled(&mut out, "xtsync_coordinator_runs", "gauge", "Runs by state.", &samples);
    write_metric(
        &mut out,
        "xtsync_coordinator_catalog_files",
        "gauge",
        "Catalog rows (distinct paths over all jobs).",
        c.catalog_files as f64,
    );
    write_metric(
        &mut out,
        "xtsync_coordinator_catalog_versions",
        "gauge",
        "File versions recorded in the catalog.",
        c.catalog_versions as f64,
    );
    write_metric(
        &mut out,
        "xtsync_coordinator_http_requests_total",
        "counter",
        "HTTP requests served.",
        s.http_requests_total as f64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let s = MetricsSnapshot {
            term: 3,
            is_leader: true,
            counters: Counters { jobs: 2, runs_failed: 1, ..Default::default() },
            ..Default::default()
        };
        let text = render(&s);
        for line in [
            "xtsync_coordinator_raft_term 3",
            "xtsync_coordinator_is_leader 1",
            "xtsync_coordinator_jobs 2",
            "xtsync_coordinator_runs{state=\"failed\"} 1",
            "# TYPE xtsync_coordinator_http_requests_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
