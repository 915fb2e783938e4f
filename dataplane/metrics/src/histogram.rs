//! A Prometheus histogram on relaxed atomics (fixed buckets), for latencies observed on
//! any thread without a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Change-to-durable latency buckets, in seconds: fine below the 50/150 ms
/// marks, coarse up to a minute.
pub const LATENCY_BUCKETS_S: [f64; 15] =
    [0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0];

#[derive(Default)]
pub struct LatencyHistogram {
    /// Observations at or below each bound (not cumulative here; summed when rendered).
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, latency: Duration) {
        let s = latency.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|&b| s <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the family in text format (cumulative `le` buckets, `+Inf`, sum, count).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS_S.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_slowest_only_reach_inf() {
        let h = LatencyHistogram::default();
        for ms in [3, 40, 40, 120, 90_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        h.render(&mut out, "lat_seconds", "help");
        for line in [
            "lat_seconds_bucket{le=\"0.005\"} 1",
            "lat_seconds_bucket{le=\"0.05\"} 3",
            "lat_seconds_bucket{le=\"0.15\"} 4",
            "lat_seconds_bucket{le=\"60\"} 4",
            "lat_seconds_bucket{le=\"+Inf\"} 5",
            "lat_seconds_sum 90.203",
            "lat_seconds_count 5",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from:\n{out}");
        }
    }
}
