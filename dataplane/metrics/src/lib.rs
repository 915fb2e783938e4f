//! Worker counters: atomics written by the executors, read by `/metrics`. No locks on
//! the hot path; each counter is a relaxed atomic.
//!
//! What it does not do: serve HTTP (the worker's control thread does) or keep history
//! (Prometheus scrapes it).

#![forbid(unsafe_code)]

pub mod histogram;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use xtsync_api::metrics::{write_labelled, write_metric};

use histogram::LatencyHistogram;

/// Where a continuous job stands, for `/metrics` (one per job name).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JobLag {
    /// When the oldest change not yet durable at the target was seen (`None`: caught
    /// up); the lag is its age when `/metrics` is read.
    pub oldest_pending: Option<std::time::Instant>,
    pub changes_pending: u64,
    pub files_pending: u64,
    pub bytes_pending: u64,
}

#[derive(Default)]
pub struct WorkerMetrics {
    pub sessions_source_active: AtomicU64,
    pub sessions_target_active: AtomicU64,
    pub passes_total: AtomicU64,
    pub passes_failed_total: AtomicU64,
    pub files_committed_total: AtomicU64,
    /// Files (and directories) put in place at the target by renaming its own copy.
    pub files_renamed_total: AtomicU64,
    pub dirs_renamed_total: AtomicU64,
    pub chunks_sent_total: AtomicU64,
    /// Of those, sent as deltas against the target's previous version of their file.
    pub chunks_sent_as_delta_total: AtomicU64,
    /// Chunks sent for a file version the target had already acknowledged (its source
    /// record says so): zero unless the target lost or changed an acknowledged file.
    pub chunks_resent_acknowledged_total: AtomicU64,
    pub chunk_bytes_sent_total: AtomicU64,
    pub chunks_received_total: AtomicU64,
    pub chunks_reused_total: AtomicU64,
    pub chunk_hash_mismatches_total: AtomicU64,
    pub sessions_refused_protocol_total: AtomicU64,
    pub tls_handshakes_refused_total: AtomicU64,
    pub bytes_sent_total: AtomicU64,
    pub tls_sessions_kernel_total: AtomicU64,
    pub tls_sessions_userspace_total: AtomicU64,
    pub ktls_fallbacks_total: AtomicU64,
    pub ktls_handoffs_failed_total: AtomicU64,
    pub chunk_bytes_sendfile_total: AtomicU64,
    pub sendfile_bytes_padded_total: AtomicU64,
    /// Continuous jobs: from a change being seen to the file being durable at the target.
    pub change_to_durable: LatencyHistogram,
    pub continuous_passes_total: AtomicU64,
    pub checkpoints_total: AtomicU64,
    pub checkpoint_bytes_total: AtomicU64,
    /// File versions kept in the local catalog outbox, and of those (or of what an
    /// earlier process kept) the ones the coordinators acknowledged.
    pub catalog_versions_kept_total: AtomicU64,
    pub catalog_versions_delivered_total: AtomicU64,
    pub continuous_jobs: Mutex<BTreeMap<String, JobLag>>,
}

impl WorkerMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let rows: [(&str, &str, &str, &AtomicU64); 25] = [
            (
                "xtsync_worker_catalog_versions_kept_total",
                "counter",
                "File versions kept in the local outbox for the catalog",
                &self.catalog_versions_kept_total,
            ),
            (
                "xtsync_worker_catalog_versions_delivered_total",
                "counter",
                "File versions from the outbox the coordinators acknowledged",
                &self.catalog_versions_delivered_total,
            ),
            ("xtsync_worker_source_sessions_active", "gauge", "Source sessions running", &self.sessions_source_active),
            ("xtsync_worker_target_sessions_active", "gauge", "Target sessions running", &self.sessions_target_active),
            ("xtsync_worker_passes_total", "counter", "Passes run as source", &self.passes_total),
            ("xtsync_worker_passes_failed_total", "counter", "Passes that failed", &self.passes_failed_total),
            (
                "xtsync_worker_files_committed_total",
                "counter",
                "File versions made durable here",
                &self.files_committed_total,
            ),
            (
                "xtsync_worker_files_renamed_total",
                "counter",
                "Files put in place by renaming the target's copy (no content sent)",
                &self.files_renamed_total,
            ),
            (
                "xtsync_worker_dirs_renamed_total",
                "counter",
                "Directories moved at the target by one rename",
                &self.dirs_renamed_total,
            ),
            ("xtsync_worker_chunks_sent_total", "counter", "Chunks sent as source", &self.chunks_sent_total),
            (
                "xtsync_worker_chunks_sent_as_delta_total",
                "counter",
                "Chunks sent as deltas against the target's previous version of their file",
                &self.chunks_sent_as_delta_total,
            ),
            (
                "xtsync_worker_chunks_resent_acknowledged_total",
                "counter",
                "Chunks sent again for file versions the target had acknowledged",
                &self.chunks_resent_acknowledged_total,
            ),
            (
                "xtsync_worker_chunk_bytes_sent_total",
                "counter",
                "Raw bytes of chunks sent",
                &self.chunk_bytes_sent_total,
            ),
            (
                "xtsync_worker_chunks_received_total",
                "counter",
                "Chunks received as target",
                &self.chunks_received_total,
            ),
            (
                "xtsync_worker_chunks_reused_total",
                "counter",
                "Chunks copied from local data",
                &self.chunks_reused_total,
            ),
            (
                "xtsync_worker_chunk_hash_mismatches_total",
                "counter",
                "Received chunks refused by hash",
                &self.chunk_hash_mismatches_total,
            ),
            (
                "xtsync_worker_sessions_refused_protocol_total",
                "counter",
                "Sessions closed for protocol violations",
                &self.sessions_refused_protocol_total,
            ),
            (
                "xtsync_worker_tls_handshakes_refused_total",
                "counter",
                "Connections refused at the TLS handshake",
                &self.tls_handshakes_refused_total,
            ),
            (
                "xtsync_worker_bytes_sent_total",
                "counter",
                "Bytes on the wire of source sessions (under kernel TLS: plaintext, records add ~0.1%)",
                &self.bytes_sent_total,
            ),
            (
                "xtsync_worker_tls_sessions_kernel_total",
                "counter",
                "Data-plane sessions (either end) encrypted by the kernel (kTLS)",
                &self.tls_sessions_kernel_total,
            ),
            (
                "xtsync_worker_tls_sessions_userspace_total",
                "counter",
                "Data-plane sessions (either end) encrypted by rustls in user space",
                &self.tls_sessions_userspace_total,
            ),
            (
                "xtsync_worker_ktls_fallbacks_total",
                "counter",
                "Sessions that fell back to rustls because the kernel refused kTLS",
                &self.ktls_fallbacks_total,
            ),
            (
                "xtsync_worker_ktls_handoffs_failed_total",
                "counter",
                "Sessions closed: kTLS required (transfer.ktls on) but refused, or keys refused after the hand-off began",
                &self.ktls_handoffs_failed_total,
            ),
            (
                "xtsync_worker_chunk_bytes_sendfile_total",
                "counter",
                "Raw chunk bytes the kernel sent from source files (sendfile on kernel-TLS sessions)",
                &self.chunk_bytes_sendfile_total,
            ),
            (
                "xtsync_worker_sendfile_bytes_padded_total",
                "counter",
                "Zero bytes sent for file ranges that ended early (file shrank after hashing; the target refuses the chunk and the file is sent again)",
                &self.sendfile_bytes_padded_total,
            ),
        ];
        for (name, kind, help, v) in rows {
            write_metric(&mut out, name, kind, help, g(v));
        }
        write_metric(
            &mut out,
            "xtsync_worker_continuous_passes_total",
            "counter",
            "Passes over batches of changes (continuous jobs)",
            g(&self.continuous_passes_total),
        );
        write_metric(
            &mut out,
            "xtsync_worker_checkpoints_total",
            "counter",
            "Checkpoints of files under construction (made durable and indexed: a cut transfer resumes from them)",
            g(&self.checkpoints_total),
        );
        write_metric(
            &mut out,
            "xtsync_worker_checkpoint_bytes_total",
            "counter",
            "Bytes covered by checkpoints",
            g(&self.checkpoint_bytes_total),
        );
        self.change_to_durable.render(
            &mut out,
            "xtsync_worker_change_to_durable_seconds",
            "Continuous jobs: from a change being seen at the source to the file being durable at the target",
        );
        let jobs = self.continuous_jobs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let lag: Vec<_> = jobs
            .iter()
            .map(|(job, l)| (vec![("job", job.clone())], l.oldest_pending.map_or(0.0, |t| t.elapsed().as_secs_f64())))
            .collect();
        write_labelled(
            &mut out,
            "xtsync_worker_replication_lag_seconds",
            "gauge",
            "Continuous jobs: age of the oldest change not yet durable at the target (the RPO now)",
            &lag,
        );
        let pending: Vec<_> =
            jobs.iter().map(|(job, l)| (vec![("job", job.clone())], l.changes_pending as f64)).collect();
        write_labelled(
            &mut out,
            "xtsync_worker_changes_pending",
            "gauge",
            "Continuous jobs: changed paths waiting for or in their pass",
            &pending,
        );
        let files: Vec<_> = jobs.iter().map(|(job, l)| (vec![("job", job.clone())], l.files_pending as f64)).collect();
        write_labelled(
            &mut out,
            "xtsync_worker_files_pending",
            "gauge",
            "Continuous jobs: regular files changed at the source and not yet durable at the target",
            &files,
        );
        let bytes: Vec<_> = jobs.iter().map(|(job, l)| (vec![("job", job.clone())], l.bytes_pending as f64)).collect();
        write_labelled(
            &mut out,
            "xtsync_worker_bytes_pending",
            "gauge",
            "Continuous jobs: bytes of the files pending",
            &bytes,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuous_job_shows_its_lag_and_what_is_pending() {
        let metrics = WorkerMetrics::default();
        let seen = std::time::Instant::now() - std::time::Duration::from_secs(3);
        let lag = JobLag { oldest_pending: Some(seen), changes_pending: 4, files_pending: 3, bytes_pending: 1_500_000 };
        metrics.continuous_jobs.lock().unwrap().insert("dr".into(), lag);
        let out = metrics.render();
        assert!(out.contains("xtsync_worker_changes_pending{job=\"dr\"} 4\n"), "{out}");
        assert!(out.contains("xtsync_worker_files_pending{job=\"dr\"} 3\n"), "{out}");
        assert!(out.contains("xtsync_worker_bytes_pending{job=\"dr\"} 1500000\n"), "{out}");
        let lag_s: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("xtsync_worker_replication_lag_seconds{job=\"dr\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((3.0..60.0).contains(&lag_s), "{out}");
    }
}
