//! One pass of a job, driven from the control thread: start the walk, one session per
//! core, gather acks into catalog batches, hold every session at the end until all are
//! done (deletions must not race with other sessions' copies), and sum up.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use xtsync_api::{Assignment, FileVersion, PassSummary, RunProgress};
use xtsync_chunker::ChunkParams;

use crate::events::{SessionEvent, SessionStats};
use crate::state::{PassFeed, SessionParams};
use crate::CoreCommand;
use xtsync_metrics::WorkerMetrics;
use xtsync_walk::backlog::PassBacklog;
use xtsync_walk::changes::walk_changes;
use xtsync_walk::item::ScanError;
use xtsync_walk::journal::Journals;
use xtsync_walk::scan::walk;
use xtsync_walk::synced::{basis_token, may_trust, SyncedWalk};

/// Walk items queued per session before the walk waits.
const ITEMS_QUEUED_MAX: usize = 8192;
/// Versions per catalog commit (one Raft entry each).
pub(crate) const VERSIONS_PER_COMMIT: usize = 2000;

pub struct PassContext {
    pub cores: Vec<flume::Sender<CoreCommand>>,
    pub store: Arc<dyn xtsync_store::WorkerStore>,
    /// Reloaded on file change or SIGHUP; each pass takes the current client config.
    pub tls: xtsync_transport::ReloadingTls,
    pub ktls: xtsync_link::secure::KtlsPolicy,
    pub metrics: Arc<WorkerMetrics>,
    pub chunk_params: ChunkParams,
    /// A continuous run retries a failed pass after a delay doubling from 0.1 s up to
    /// this (5 s on a worker, 30 s on an agent of an intermittent link).
    pub retry_delay_max: std::time::Duration,
    /// One-shot jobs' change journals, kept between passes.
    pub journals: Arc<Journals>,
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("{0}")]
    Walk(String),
    #[error("session {session}: {error}")]
    Session { session: u16, error: String },
    #[error("catalog commit: {0}")]
    Catalog(String),
    #[error("{0} files could not be replicated (first: {1})")]
    Files(u64, String),
}

/// Sink for what a pass produces: catalog batches and progress.
pub trait PassSink {
    fn commit(&mut self, versions: Vec<FileVersion>) -> impl std::future::Future<Output = Result<(), String>>;
    fn progress(&mut self, progress: RunProgress);
}

/// The parameters of one session of `a`: a single session with the current TLS
/// configuration and no bandwidth limit; callers override what differs.
pub(crate) fn session_params(ctx: &PassContext, a: &Assignment) -> SessionParams {
    let options = &a.job.spec.options;
    SessionParams {
        job_id: a.job.id,
        run_id: a.run_id,
        session_index: 0,
        session_count: 1,
        target_addr: a.target_data_addr.clone(),
        target_name: a.job.spec.target_worker.clone(),
        target_root: a.job.spec.target_path.clone(),
        delete: options.delete,
        compression: options.compression,
        compression_level: options.compression_level,
        chunk_params: ctx.chunk_params,
        tls: ctx.tls.current().client.clone(),
        ktls: ctx.ktls,
        store: ctx.store.clone(),
        metrics: ctx.metrics.clone(),
        target_cores_taken: Arc::default(),
        core_index: 0,
        limiter: None,
        tree_ids: None,
    }
}

pub async fn run_pass(ctx: &PassContext, a: &Assignment, sink: &mut impl PassSink) -> Result<PassSummary, PassError> {
    let started = Instant::now();
    ctx.metrics.passes_total.fetch_add(1, Ordering::Relaxed);
    let result = run(ctx, a, sink, started).await;
    if result.is_err() {
        ctx.metrics.passes_failed_total.fetch_add(1, Ordering::Relaxed);
    }
    result
}

async fn run(
    ctx: &PassContext,
    a: &Assignment,
    sink: &mut impl PassSink,
    started: Instant,
) -> Result<PassSummary, PassError> {
    let options = &a.job.spec.options;
    let sessions = match options.sessions {
        0 => ctx.cores.len(),
        n => n as usize,
    }
    .clamp(1, 64);
    let (item_txs, item_rxs): (Vec<_>, Vec<_>) = (0..sessions).map(|_| flume::bounded(ITEMS_QUEUED_MAX)).unzip();
    let (events_tx, events_rx) = flume::unbounded();
    let mut end_txs = Vec::new();
    let target_cores_taken = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let limiter = xtsync_link::shaping::RateLimiter::for_job(options).map(Arc::new);
    // One configuration for the whole pass: a reload in the middle applies to the next.
    let client_tls = ctx.tls.current().client.clone();
    let (tree_ids, tree_id) = flume::unbounded();
    for (i, items) in item_rxs.into_iter().enumerate() {
        let (end_tx, end_rx) = flume::bounded(1);
        end_txs.push(end_tx);
        let params = SessionParams {
            session_index: i as u16,
            core_index: (i % ctx.cores.len()) as u64,
            session_count: sessions as u16,
            tls: client_tls.clone(),
            target_cores_taken: target_cores_taken.clone(),
            limiter: limiter.clone(),
            tree_ids: Some(tree_ids.clone()),
            ..session_params(ctx, a)
        };
        // One pass: the feed's sender is dropped at once, so the session closes after it.
        let (feed_tx, passes) = flume::bounded(1);
        let _ = feed_tx.send(PassFeed { items, end_of_pass: end_rx });
        let cmd = CoreCommand::StartSource { params, passes, events: events_tx.clone() };
        ctx.cores[i % ctx.cores.len()].send(cmd).map_err(|_| PassError::Walk("executors stopped".into()))?;
    }
    drop((events_tx, tree_ids));

    let root = PathBuf::from(&a.job.spec.source_path);
    let (store, delete, chunk_params) = (ctx.store.clone(), options.delete, ctx.chunk_params);
    let mut backlog = PassBacklog::default();
    let tally = backlog.walked.clone();
    let basis = SyncedBasisInputs::of(a);
    let started_walk = started;
    let (journals, job_id, source_path) = (ctx.journals.clone(), a.job.id, a.job.spec.source_path.clone());
    let journaled = !a.reconcile && !options.continuous;
    let walker = tokio::task::spawn_blocking(move || {
        // Before the walk: what changes from here on is in the journal.
        let mut journal = journaled.then(|| journals.begin(job_id, &source_path, delete)).flatten();
        // The first session's HelloAck names the target tree (none: every session
        // failed before it, and so does the pass).
        let walked =
            tree_id.recv().ok().map(|id| basis.walk(store.as_ref(), &id)).transpose().and_then(|mut synced| {
                // The target acknowledged the tree as the source had it, and the journal has
                // every change since: only those are walked (the synced table is left as
                // the last full walk wrote it; entries changed since are checked again then).
                let trusted = synced.as_ref().is_some_and(|s| s.trusted);
                let changes = journal.as_mut().filter(|_| trusted).and_then(|j| j.changes.take());
                match changes.filter(|c| !c.is_everything()) {
                    Some(set) => {
                        tracing::info!(job = job_id, paths = set.paths, "pass: only what the change journal recorded");
                        let stats =
                            walk_changes(&root, delete, &store, &set, Some(chunk_params), &item_txs, Some(&tally))?;
                        Ok((stats, None, true))
                    }
                    None => {
                        let stats =
                            walk(&root, delete, &store, Some(chunk_params), &item_txs, Some(&tally), synced.as_mut())?;
                        Ok((stats, synced, false))
                    }
                }
            });
        if let Ok((stats, _, _)) = &walked {
            tracing::debug!(elapsed_s = started_walk.elapsed().as_secs_f64(), files = stats.files, "pass: walk done");
        }
        (walked, journal)
    });

    let mut totals = SessionStats::default();
    let (mut content_done, mut finished) = (0, 0);
    let mut batch: Vec<FileVersion> = Vec::new();
    let mut failed_files = (0u64, String::new());
    let mut progress = RunProgress::default();
    let mut last_report = Instant::now();
    let mut failure: Option<PassError> = None;
    while finished < sessions {
        let Ok(event) = events_rx.recv_async().await else { break };
        backlog.settle(event.settles());
        match event {
            SessionEvent::Committed(v) => {
                progress.files_done += 1;
                progress.bytes_scanned += v.size;
                batch.push(v);
                if batch.len() >= VERSIONS_PER_COMMIT {
                    sink.commit(std::mem::take(&mut batch)).await.map_err(PassError::Catalog)?;
                }
            }
            SessionEvent::Unchanged(_) => {}
            SessionEvent::FileFailed { path, error } => {
                if failed_files.0 == 0 {
                    failed_files.1 = format!("{path}: {error}");
                }
                failed_files.0 += 1;
            }
            SessionEvent::ContentDone { .. } => {
                content_done += 1;
                if content_done == sessions {
                    tracing::debug!(elapsed_s = started.elapsed().as_secs_f64(), "pass: content done, ending the pass");
                    for tx in &end_txs {
                        let _ = tx.send(());
                    }
                }
            }
            SessionEvent::Finished { stats, .. } => {
                finished += 1;
                totals.add(&stats);
            }
            SessionEvent::Failed { session, error } => {
                finished += 1;
                // Dropping the end signals releases every other session.
                end_txs.clear();
                failure.get_or_insert(PassError::Session { session, error });
            }
        }
        if last_report.elapsed().as_millis() >= 500 {
            let pending = backlog.pending();
            (progress.files_pending, progress.bytes_pending) = (pending.files, pending.bytes);
            sink.progress(progress.clone());
            last_report = Instant::now();
        }
    }
    let (walked, journal) = walker.await.map_err(|e| PassError::Walk(e.to_string()))?;
    let (walked, synced, changes_only) = match walked {
        Ok((stats, synced, changes_only)) => (Ok(stats), synced, changes_only),
        Err(e) => (Err(PassError::Walk(e.to_string())), None, false),
    };
    // The catalog first: what the pass records as acknowledged is never sent again, so
    // it must be in the catalog before.
    let committed = match (&failure, &walked) {
        (None, Ok(_)) if !batch.is_empty() => sink.commit(batch).await.map_err(PassError::Catalog),
        _ => Ok(()),
    };
    let succeeded = failure.is_none() && walked.is_ok() && committed.is_ok() && failed_files.0 == 0;
    if let Some(synced) = synced {
        record_synced(ctx, synced, succeeded).await;
    }
    if let Some(journal) = journal {
        ctx.journals.end(a.job.id, journal, succeeded);
    }
    if let Some(f) = failure {
        return Err(f);
    }
    let walked = walked?;
    committed?;
    if failed_files.0 > 0 {
        return Err(PassError::Files(failed_files.0, failed_files.1));
    }
    Ok(PassSummary {
        files: walked.files + walked.hardlinks,
        dirs: walked.dirs,
        symlinks: walked.symlinks,
        hardlinks: walked.hardlinks,
        files_transferred: totals.files_transferred,
        files_unchanged: totals.files_unchanged + walked.files_synced,
        files_renamed: totals.files_renamed,
        bytes_scanned: walked.bytes,
        bytes_read: totals.bytes_read,
        bytes_on_wire: totals.bytes_on_wire,
        chunks_sent: totals.chunks_sent,
        chunks_resent_acknowledged: totals.chunks_resent_acknowledged,
        chunks_reused: totals.chunks_reused,
        entries_deleted: totals.entries_deleted,
        duration_s: started.elapsed().as_secs_f64(),
        changes_only,
        // What differed is worth its room in the run's record only for a reconcile.
        differed: if a.reconcile { totals.differed } else { Vec::new() },
        removed: if a.reconcile { totals.removed } else { Vec::new() },
    })
}

/// What decides whether a pass of a job may trust its target's acknowledgements.
struct SyncedBasisInputs {
    job: u64,
    target_name: String,
    target_root: String,
    source_root: String,
    delete: bool,
    reconcile_interval_s: u32,
    reconcile: bool,
    started: std::time::SystemTime,
}

impl SyncedBasisInputs {
    fn of(a: &Assignment) -> SyncedBasisInputs {
        let spec = &a.job.spec;
        SyncedBasisInputs {
            job: a.job.id,
            target_name: spec.target_worker.clone(),
            target_root: spec.target_path.clone(),
            source_root: spec.source_path.clone(),
            delete: spec.options.delete,
            reconcile_interval_s: spec.options.reconcile_interval_s,
            reconcile: a.reconcile,
            started: std::time::SystemTime::now(),
        }
    }

    /// The walk's view of the synced table, for a target serving tree `tree_id`.
    fn walk(&self, store: &dyn xtsync_store::WorkerStore, tree_id: &[u8; 32]) -> Result<SyncedWalk, ScanError> {
        let token = basis_token(&self.target_name, &self.target_root, &self.source_root, self.delete, tree_id);
        let since_epoch = self.started.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let stored = store.synced_basis(self.job)?;
        let trusted =
            may_trust(stored.as_ref(), &token, since_epoch.as_secs(), self.reconcile_interval_s, self.reconcile);
        // A pass that trusts keeps the time of the last one that checked everything.
        let verified_unix_s = match stored {
            Some(b) if trusted => b.verified_unix_s,
            _ => since_epoch.as_secs(),
        };
        let what = if trusted {
            "only what changed since the target acknowledged it"
        } else {
            "every entry, checked at the target"
        };
        tracing::info!(job = self.job, trusted, "pass: {what}");
        let generation = stored.map_or(0, |b| b.generation) + 1;
        let basis = xtsync_store::SyncedBasis { token, verified_unix_s, generation };
        Ok(SyncedWalk::new(self.job, trusted, stored.as_ref(), basis, since_epoch.as_nanos() as i64))
    }
}

/// Writes what the pass learnt about its target (see `xtsync_walk::synced`); a failure is
/// logged and costs the next pass more entries, never correctness.
async fn record_synced(ctx: &PassContext, synced: SyncedWalk, succeeded: bool) {
    let store = ctx.store.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || synced.finish(store.as_ref(), succeeded)).await {
        tracing::warn!(error = %e, "could not record what the target acknowledged");
    }
}
