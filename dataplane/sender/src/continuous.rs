//! A continuous run (job option `continuous`), driven from the control thread: watch
//! the source tree, replicate it whole once, then replicate each batch of changes as a
//! pass over one session kept open to the target. Changes that arrive while a pass runs
//! are folded into the next one. A failed pass (target unreachable, session refused)
//! keeps its changes and is retried on a new session with a growing delay; the run says
//! what it waits for. Lag (the age of the oldest change not yet durable at the target)
//! and the files and bytes pending (`backlog.rs`) are reported to the coordinator and
//! in `/metrics`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use xtsync_api::{Assignment, FileVersion, PassSummary, RunProgress};
use xtsync_watch::{ChangeBatch, WatchOptions, Watcher};
use xtsync_wire::RelPath;

use crate::events::{SessionEvent, SessionStats};
use crate::pass::{run_pass, session_params, PassContext, PassError, PassSink, VERSIONS_PER_COMMIT};
use crate::state::{PassFeed, SessionParams};
use crate::CoreCommand;
use xtsync_metrics::JobLag;
use xtsync_walk::backlog::{Backlog, PassBacklog, SharedBacklog};
use xtsync_walk::changes::{change_set_of, walk_changes, ChangeSet};

/// Walk items queued for the session before the walk waits.
const ITEMS_QUEUED_MAX: usize = 8192;
/// The catalog is committed at least this often while versions wait (they are durable
/// at the target already: the catalog only lags).
const CATALOG_COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Progress (lag) goes to the coordinator at most this often (each report is a Raft
/// write; the worker's `/metrics` has the lag live).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Retry delays after a failed pass: doubling from this to `PassContext::retry_delay_max`.
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(100);

/// `xtsyncctl reconcile` on a job whose continuous run lives here: a full pass, run in
/// order with the change passes, whose summary goes back to the reconcile run.
pub struct ReconcileRequest {
    pub assignment: Assignment,
    pub done: tokio::sync::oneshot::Sender<Result<PassSummary, String>>,
}

/// The session kept open to the target: one pass per feed.
struct LiveSession {
    feeds: flume::Sender<PassFeed>,
    events: flume::Receiver<SessionEvent>,
}

struct Run<'a, S: PassSink> {
    ctx: &'a PassContext,
    a: &'a Assignment,
    sink: &'a mut S,
    root: PathBuf,
    session: Option<LiveSession>,
    progress: RunProgress,
    last_progress: Instant,
    versions: Vec<FileVersion>,
    last_commit: Instant,
    /// The job's bandwidth limit, shared by the change passes' sessions.
    limiter: Option<Arc<xtsync_link::shaping::RateLimiter>>,
    /// When the oldest change not yet durable at the target was seen (`None`: caught up).
    lag_from: Option<Instant>,
    /// The pass in flight (or the failed one waiting for its retry).
    pass: PassBacklog,
    /// Changes the watcher queued for a later pass.
    queued: Arc<SharedBacklog>,
}

/// Runs until the watcher fails (the source root went away) — a continuous run has no
/// other end while the worker runs.
pub async fn run_continuous(
    ctx: &PassContext,
    a: &Assignment,
    sink: &mut impl PassSink,
    reconcile_requests: flume::Receiver<ReconcileRequest>,
) -> Result<(), PassError> {
    let options = &a.job.spec.options;
    let root = PathBuf::from(&a.job.spec.source_path);
    // Watch first: what changes while the first pass runs is in the next batch.
    let watch_options = WatchOptions {
        window: Duration::from_millis(options.batch_window_ms.max(1) as u64),
        ..WatchOptions::default()
    };
    let watcher = Watcher::new(&root, watch_options).map_err(|e| PassError::Walk(e.to_string()))?;
    tracing::info!(job = %a.job.spec.name, backend = watcher.backend().name(), root = %root.display(), "watching the source tree");
    let queued = Arc::new(SharedBacklog::default());
    let batches = forward_batches(watcher, root.clone(), queued.clone());

    let mut run = Run {
        ctx,
        a,
        sink,
        root,
        session: None,
        progress: RunProgress::default(),
        last_progress: Instant::now(),
        versions: Vec::new(),
        last_commit: Instant::now(),
        limiter: xtsync_link::shaping::RateLimiter::for_job(options).map(Arc::new),
        lag_from: None,
        pass: PassBacklog::default(),
        queued,
    };
    // The whole tree once, with every core (retried like any pass).
    let mut pending = Some(ChangeSet::everything(Instant::now()));
    let reconcile_every = match options.reconcile_interval_s {
        0 => None,
        s => Some(Duration::from_secs(s as u64)),
    };
    let mut last_full = Instant::now();
    let mut retry_delay = RETRY_DELAY_FIRST;
    loop {
        if let Ok(request) = reconcile_requests.try_recv() {
            run.reconcile(request).await;
            last_full = Instant::now();
            continue;
        }
        let set = match pending.take() {
            Some(set) => set,
            None => {
                run.caught_up();
                let wait = reconcile_every
                    .map_or(Duration::from_secs(3600), |every| every.saturating_sub(last_full.elapsed()));
                let next = async {
                    match futures::future::select(batches.recv_async(), reconcile_requests.recv_async()).await {
                        futures::future::Either::Left((batch, _)) => futures::future::Either::Left(batch),
                        futures::future::Either::Right((request, _)) => futures::future::Either::Right(request),
                    }
                };
                let waited = tokio::time::timeout(wait.min(CATALOG_COMMIT_INTERVAL), next).await;
                match waited {
                    Ok(futures::future::Either::Left(Ok(batch))) => run.take(batch),
                    Ok(futures::future::Either::Left(Err(_))) => {
                        return Err(PassError::Walk("change capture stopped".into()))
                    }
                    Ok(futures::future::Either::Right(request)) => {
                        if let Ok(request) = request {
                            run.reconcile(request).await;
                            last_full = Instant::now();
                        }
                        continue;
                    }
                    Err(_) => {
                        run.commit_catalog().await;
                        if reconcile_every.is_some_and(|every| last_full.elapsed() >= every) {
                            ChangeSet::everything(Instant::now())
                        } else {
                            continue;
                        }
                    }
                }
            }
        };
        let mut set = set;
        // Everything that queued meanwhile goes in the same pass.
        while let Ok(batch) = batches.try_recv() {
            set.merge(run.take(batch));
        }
        run.start_on(&set, false);
        let full = set.is_everything();
        let result = if full { run.full_pass().await } else { run.change_pass(&set).await };
        match result {
            Ok(failed) => {
                run.progress.passes_done += 1;
                if full {
                    last_full = Instant::now();
                }
                run.commit_catalog().await;
                if failed.is_empty() {
                    retry_delay = RETRY_DELAY_FIRST;
                    run.progress.waiting_for = None;
                    continue;
                }
                // Files the target could not take (its disk is full, say) or the source
                // could not read: the run pauses, says why, and tries them again.
                let (first_path, first_error) = &failed[0];
                let waiting = format!(
                    "{} file(s) not replicated, retrying in {retry_delay:?}; first: {}: {first_error}",
                    failed.len(),
                    first_path.to_string_lossy()
                );
                tracing::warn!(job = %a.job.spec.name, "{waiting}");
                run.progress.waiting_for = Some(waiting);
                // The walk is over: what is left is the failed files, as they are now.
                // (The pass's own count mixes estimates made while they were still being
                // written, and would keep its errors through every retry.)
                let left = Backlog::of_files(&run.root, failed.iter().map(|(p, _)| p.as_path()));
                let mut again = ChangeSet::of_entries(failed.into_iter().map(|(p, _)| p), set.oldest_change);
                again.backlog = left;
                run.start_on(&again, true);
                pending = Some(again);
                tokio::time::sleep(retry_delay).await;
                retry_delay = (retry_delay * 2).min(ctx.retry_delay_max);
            }
            Err(e) => {
                tracing::warn!(job = %a.job.spec.name, error = %e, delay = ?retry_delay, "pass failed; retrying");
                run.session = None;
                run.progress.waiting_for = Some(e);
                set.backlog = run.pass.pending();
                run.start_on(&set, true);
                pending = Some(set);
                tokio::time::sleep(retry_delay).await;
                retry_delay = (retry_delay * 2).min(ctx.retry_delay_max);
            }
        }
    }
}

/// Moves the watcher's batches onto an async channel, with the files and bytes each
/// stands for (added to `queued` until the run takes the batch); the thread (and the
/// watcher) end once the run drops the receiver.
fn forward_batches(watcher: Watcher, root: PathBuf, queued: Arc<SharedBacklog>) -> flume::Receiver<QueuedBatch> {
    let (tx, rx) = flume::bounded(64);
    std::thread::Builder::new()
        .name("xtsync-watch-fwd".into())
        .spawn(move || loop {
            match watcher.batches().recv_timeout(Duration::from_secs(1)) {
                Ok(batch) => {
                    let backlog = Backlog::of_batch(&root, &batch);
                    queued.add(backlog);
                    if tx.send(QueuedBatch { batch, backlog }).is_err() {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !tx.is_disconnected() => {}
                Err(_) => return,
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the change-capture thread"));
    rx
}

/// A batch of changes waiting for the run, and what it stands for.
struct QueuedBatch {
    batch: ChangeBatch,
    backlog: Backlog,
}

/// The sink of a full pass inside a continuous run: the pass's own progress would say
/// nothing of the run's lag or of the changes queued meanwhile, so they are added.
struct WithinRun<'r, S: PassSink> {
    sink: &'r mut S,
    ctx: &'r PassContext,
    job: String,
    run: RunProgress,
    /// The run's oldest change not yet durable (`None` for a reconcile started while
    /// caught up: the lag stays 0 unless changes wait).
    lag_from: Option<Instant>,
    queued: Arc<SharedBacklog>,
}

impl<S: PassSink> PassSink for WithinRun<'_, S> {
    async fn commit(&mut self, versions: Vec<FileVersion>) -> Result<(), String> {
        self.sink.commit(versions).await
    }

    fn progress(&mut self, pass: RunProgress) {
        let pending = Backlog { files: pass.files_pending, bytes: pass.bytes_pending }.plus(self.queued.get());
        let progress = RunProgress {
            files_seen: self.run.files_seen.max(pass.files_done),
            files_done: self.run.files_done + pass.files_done,
            bytes_scanned: pass.bytes_scanned,
            files_pending: pending.files,
            bytes_pending: pending.bytes,
            lag_ms: self.lag_from.map_or(0, |t| t.elapsed().as_millis() as u64),
            ..self.run.clone()
        };
        publish_lag(self.ctx, &self.job, self.lag_from, &progress);
        self.sink.progress(progress);
    }
}

/// A continuous job's lag and pending figures, for `/metrics`.
fn publish_lag(ctx: &PassContext, job: &str, oldest_pending: Option<Instant>, p: &RunProgress) {
    let lag = JobLag {
        oldest_pending,
        changes_pending: p.changes_pending,
        files_pending: p.files_pending,
        bytes_pending: p.bytes_pending,
    };
    ctx.metrics.continuous_jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(job.to_string(), lag);
}

impl<S: PassSink> Run<'_, S> {
    /// A batch the run takes from the queue.
    fn take(&self, queued: QueuedBatch) -> ChangeSet {
        self.queued.remove(queued.backlog);
        ChangeSet { backlog: queued.backlog, ..change_set_of(&queued.batch) }
    }

    /// The full-pass sink for this run, starting from its progress now.
    fn within_run(&mut self) -> WithinRun<'_, S> {
        WithinRun {
            ctx: self.ctx,
            job: self.a.job.spec.name.clone(),
            run: self.progress.clone(),
            lag_from: self.lag_from,
            queued: self.queued.clone(),
            sink: &mut *self.sink,
        }
    }

    /// The whole tree with every core (the first pass and reconciliation passes).
    async fn full_pass(&mut self) -> Result<Vec<(RelPath, String)>, String> {
        let (ctx, a) = (self.ctx, self.a);
        let summary = run_pass(ctx, a, &mut self.within_run()).await.map_err(|e| e.to_string())?;
        self.progress.files_seen = summary.files;
        self.progress.files_done += summary.files_transferred;
        self.progress.bytes_scanned = summary.bytes_scanned;
        self.progress.bytes_on_wire += summary.bytes_on_wire;
        tracing::info!(job = %self.a.job.spec.name, files = summary.files, transferred = summary.files_transferred, "full pass done; replicating changes");
        Ok(Vec::new())
    }

    /// A full pass for a reconcile run: what differed is its summary.
    async fn reconcile(&mut self, request: ReconcileRequest) {
        tracing::info!(job = %self.a.job.spec.name, run_id = request.assignment.run_id, "reconciliation pass");
        let ctx = self.ctx;
        let result = run_pass(ctx, &request.assignment, &mut self.within_run()).await.map_err(|e| e.to_string());
        let _ = request.done.send(result);
    }

    /// One batch of changes over the kept session. Returns the files that failed, why.
    async fn change_pass(&mut self, set: &ChangeSet) -> Result<Vec<(RelPath, String)>, String> {
        let ctx = self.ctx;
        let options = &self.a.job.spec.options;
        if self.session.is_none() {
            self.session = Some(self.start_session()?);
        }
        let live = self.session.as_ref().ok_or("no session")?;
        let (items_tx, items) = flume::bounded(ITEMS_QUEUED_MAX);
        let (end_tx, end_of_pass) = flume::bounded(1);
        live.feeds.send(PassFeed { items, end_of_pass }).map_err(|_| "the session to the target ended".to_string())?;
        let (root, store, delete, walked_set) = (self.root.clone(), ctx.store.clone(), options.delete, set.clone());
        let chunk_params = Some(ctx.chunk_params);
        let tally = self.pass.walked.clone();
        let walker = tokio::task::spawn_blocking(move || {
            walk_changes(&root, delete, &store, &walked_set, chunk_params, &[items_tx], Some(&tally))
        });
        let events = live.events.clone();
        let mut failed = Vec::new();
        let stats: SessionStats = loop {
            let event = events.recv_async().await;
            if let Ok(e @ (SessionEvent::Committed(_) | SessionEvent::Unchanged(_))) = &event {
                self.pass.settle(e.settles());
                self.publish(false);
            }
            match event {
                Ok(SessionEvent::Unchanged(_)) => {}
                Ok(SessionEvent::Committed(v)) => {
                    ctx.metrics.change_to_durable.observe(set.oldest_change.elapsed());
                    self.progress.files_done += 1;
                    self.versions.push(v);
                }
                Ok(SessionEvent::FileFailed { path, error }) => {
                    if let Ok(p) = RelPath::new(path.into_bytes()) {
                        failed.push((p, error));
                    }
                }
                Ok(SessionEvent::ContentDone { .. }) => {
                    let _ = end_tx.send(());
                }
                Ok(SessionEvent::Finished { stats, .. }) => break stats,
                Ok(SessionEvent::Failed { error, .. }) => return Err(error),
                Err(_) => return Err("the session to the target ended".into()),
            }
        };
        walker.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        ctx.metrics.continuous_passes_total.fetch_add(1, Ordering::Relaxed);
        self.progress.bytes_on_wire += stats.bytes_on_wire;
        Ok(failed)
    }

    fn start_session(&self) -> Result<LiveSession, String> {
        let ctx = self.ctx;
        let params = SessionParams { limiter: self.limiter.clone(), ..session_params(ctx, self.a) };
        let (feeds, passes) = flume::unbounded();
        let (events_tx, events) = flume::unbounded();
        ctx.cores[0]
            .send(CoreCommand::StartSource { params, passes, events: events_tx })
            .map_err(|_| "executors stopped".to_string())?;
        Ok(LiveSession { feeds, events })
    }

    /// The run is about to replicate `set`, or, `waiting`, to retry it after a failure.
    fn start_on(&mut self, set: &ChangeSet, waiting: bool) {
        self.lag_from = Some(set.oldest_change);
        self.pass = PassBacklog::with_estimate(set.backlog);
        self.progress.changes_pending = set.paths as u64;
        self.publish(waiting);
    }

    /// Nothing to replicate: the lag is zero (changes queued since are picked up next).
    fn caught_up(&mut self) {
        self.lag_from = None;
        self.pass = PassBacklog::default();
        self.progress.changes_pending = 0;
        self.publish(false);
    }

    /// The lag and pending figures now to `/metrics`, and to the coordinator at once if
    /// `now`, else at most every `PROGRESS_INTERVAL` (each report is a Raft write).
    fn publish(&mut self, now: bool) {
        let pending = self.pass.pending().plus(self.queued.get());
        self.progress.lag_ms = self.lag_from.map_or(0, |t| t.elapsed().as_millis() as u64);
        (self.progress.files_pending, self.progress.bytes_pending) = (pending.files, pending.bytes);
        publish_lag(self.ctx, &self.a.job.spec.name, self.lag_from, &self.progress);
        if now || self.last_progress.elapsed() >= PROGRESS_INTERVAL {
            self.sink.progress(self.progress.clone());
            self.last_progress = Instant::now();
        }
    }

    /// Commits waiting versions to the catalog when there are enough, or they waited
    /// long enough. The files are durable at the target already, so a coordinator that
    /// cannot be reached only delays the catalog: the versions wait for the next try.
    async fn commit_catalog(&mut self) {
        let due = self.versions.len() >= VERSIONS_PER_COMMIT || self.last_commit.elapsed() >= CATALOG_COMMIT_INTERVAL;
        if self.versions.is_empty() || !due {
            return;
        }
        self.last_commit = Instant::now();
        let batch: Vec<FileVersion> = self.versions.drain(..self.versions.len().min(VERSIONS_PER_COMMIT)).collect();
        if let Err(e) = self.sink.commit(batch.clone()).await {
            tracing::warn!(error = %e, versions = batch.len(), "catalog commit failed; keeping the versions for the next try");
            self.versions.splice(0..0, batch);
        }
    }
}
