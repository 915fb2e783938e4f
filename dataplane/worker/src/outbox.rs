//! Catalog commits, kept in the worker's store until the coordinators acknowledge
//! them. A pass hands its file versions to [`Outbox::commit`], which writes them to the
//! store's outbox (fsync) and waits a little for the delivery; one task delivers the
//! outbox in order ([`Outbox::deliver_forever`]), retrying through coordinator
//! outages and after a worker restart. Files are durable at the target before their
//! versions get here, so a version in the outbox is one the catalog must get.
//!
//! Exactly once: one task delivers, oldest first, and does not take the next record
//! before the current one is acknowledged. A record whose answer was lost is sent
//! again before anything newer, and the coordinator skips a version equal to the
//! path's latest, so the repeat changes nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use xtsync_api::{now_unix_ms, RunId, VersionBatch};
use xtsync_metrics::WorkerMetrics;
use xtsync_store::{StoreError, WorkerStore};

use crate::client::CoordinatorClient;

/// Records read from the store at a time.
const READ_AT_ONCE: usize = 16;
/// How long [`Outbox::commit`] waits for its delivery before leaving it to the task.
const COMMIT_WAIT_MAX: Duration = Duration::from_secs(5);
/// Waits between delivery attempts double up to this.
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    run_id: RunId,
    batch: VersionBatch,
}

pub struct Outbox {
    store: Arc<dyn WorkerStore>,
    metrics: Arc<WorkerMetrics>,
    /// Set while deliveries fail: a commit then does not wait for its own.
    stalled: AtomicBool,
    client: CoordinatorClient,
    /// Sequence numbers grow across restarts: they start from the clock.
    last_seq: AtomicU64,
    /// The highest sequence number delivered (or given up) so far.
    delivered: watch::Sender<u64>,
    wake: Notify,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot keep the catalog commit in the local store: {0}")]
    Store(#[from] StoreError),
    #[error("the local store task failed: {0}")]
    Task(String),
    #[error("a catalog commit cannot be encoded: {0}")]
    Encode(String),
}

impl Outbox {
    pub fn new(store: Arc<dyn WorkerStore>, metrics: Arc<WorkerMetrics>, client: CoordinatorClient) -> Arc<Outbox> {
        Arc::new(Outbox {
            store,
            metrics,
            stalled: AtomicBool::new(false),
            client,
            last_seq: AtomicU64::new(now_unix_ms() * 1000),
            delivered: watch::channel(0).0,
            wake: Notify::new(),
        })
    }

    /// Keeps `batch` of run `run_id` durably, then waits up to [`COMMIT_WAIT_MAX`] for
    /// its delivery. `Ok` once kept: delivery follows, whatever the coordinators do.
    pub async fn commit(&self, run_id: RunId, batch: VersionBatch) -> Result<(), OutboxError> {
        let seq = self.last_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let versions = batch.versions.len() as u64;
        let record = serde_json::to_vec(&Pending { run_id, batch }).map_err(|e| OutboxError::Encode(e.to_string()))?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.outbox_put(seq, &record))
            .await
            .map_err(|e| OutboxError::Task(e.to_string()))??;
        self.metrics.catalog_versions_kept_total.fetch_add(versions, Ordering::Relaxed);
        self.wake.notify_one();
        if self.stalled.load(Ordering::Relaxed) {
            // The coordinators are away: a continuous run must not slow down for it.
            return Ok(());
        }
        let mut delivered = self.delivered.subscribe();
        let waited = tokio::time::timeout(COMMIT_WAIT_MAX, delivered.wait_for(|&d| d >= seq)).await;
        if waited.is_err() {
            tracing::warn!(
                run_id,
                "catalog commit not acknowledged yet: kept in the local store, delivered when a coordinator leads"
            );
        }
        Ok(())
    }

    /// Delivers the outbox, oldest first, until the worker stops: what a restart left
    /// at once, then each new commit.
    pub async fn deliver_forever(self: Arc<Self>) {
        loop {
            let store = self.store.clone();
            let records = match tokio::task::spawn_blocking(move || store.outbox(READ_AT_ONCE)).await {
                Ok(Ok(records)) => records,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the catalog outbox; retrying");
                    tokio::time::sleep(RETRY_MAX).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "catalog outbox task failed; retrying");
                    tokio::time::sleep(RETRY_MAX).await;
                    continue;
                }
            };
            if records.is_empty() {
                let _ = tokio::time::timeout(RETRY_MAX, self.wake.notified()).await;
                continue;
            }
            for (seq, record) in records {
                self.deliver(seq, &record).await;
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.outbox_delete(seq)).await {
                    Ok(Ok(())) => {}
                    // Delivered again later: the coordinator skips versions it holds.
                    Ok(Err(e)) => tracing::error!(error = %e, seq, "cannot remove a delivered catalog commit"),
                    Err(e) => tracing::error!(error = %e, seq, "catalog outbox task failed"),
                }
                self.delivered.send_if_modified(|d| {
                    let newer = seq > *d;
                    *d = (*d).max(seq);
                    newer
                });
            }
        }
    }

    /// Sends one record until the coordinators acknowledge or refuse it for good.
    async fn deliver(&self, seq: u64, record: &[u8]) {
        let pending: Pending = match serde_json::from_slice(record) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, seq, "a catalog commit in the outbox is unreadable; dropping it (a reconcile pass finds its files)");
                return;
            }
        };
        let mut delay = Duration::from_millis(100);
        loop {
            match self.client.commit(pending.run_id, &pending.batch).await {
                Ok(_) => {
                    if self.stalled.swap(false, Ordering::Relaxed) {
                        tracing::info!("catalog commits are delivered again");
                    }
                    let n = pending.batch.versions.len() as u64;
                    self.metrics.catalog_versions_delivered_total.fetch_add(n, Ordering::Relaxed);
                    return;
                }
                Err(e) if !e.is_transient() => {
                    // The run or job is gone, or the batch is refused: it can never apply.
                    tracing::error!(error = %e, run_id = pending.run_id, versions = pending.batch.versions.len(), "catalog commit refused; dropping it");
                    return;
                }
                Err(e) => {
                    self.stalled.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, run_id = pending.run_id, "catalog commit not delivered; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
