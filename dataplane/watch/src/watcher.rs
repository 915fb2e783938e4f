//! The public facade: pick a backend, run it on one dedicated thread, deliver batches.
//!
//! The thread blocks in poll(2) on the backend's descriptor and an eventfd (so `stop` is
//! immediate); while a batch is open it reads the kernel queue at the batch's deadline
//! (and every 50 ms for longer windows) instead of on every event. No async runtime is
//! involved, so the watcher can be embedded in the glommio worker, a tokio daemon or a CLI.
//! Batches go through a bounded channel. When the consumer falls behind and the channel
//! is full, the thread stops reading the kernel queue: the kernel queue then overflows and
//! the next batch says "root dirty" — bounded memory on both sides, at the price of one
//! rescan.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::coalesce::{CoalesceConfig, Coalescer};
use crate::error::WatchError;
use crate::event::{ChangeBatch, Event};
use crate::fanotify::Fanotify;
use crate::inotify::Inotify;
use crate::source::Source;
use crate::sys::{self, StopSignal};

/// Which kernel interface to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// fanotify when running with CAP_SYS_ADMIN and the kernel and filesystem support it,
    /// inotify otherwise (logged at info level with the reason).
    #[default]
    Auto,
    /// fanotify or an error ([`WatchError::FanotifyRefused`]).
    Fanotify,
    /// inotify, even as root.
    Inotify,
}

/// The backend a [`Watcher`] actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// fanotify filesystem mark with directory-entry events.
    Fanotify,
    /// One inotify watch per directory.
    Inotify,
}

impl Backend {
    /// Lower-case name, as in logs and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fanotify => "fanotify",
            Backend::Inotify => "inotify",
        }
    }
}

/// How to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Kernel interface.
    pub backend: BackendChoice,
    /// How long a batch stays open after its first event (0 = deliver every read at once).
    pub window: Duration,
    /// A batch closes early at this many entries; also the most entries one new directory's
    /// scan reports before it is reported dirty instead (inotify).
    pub batch_paths_max: usize,
    /// Batches waiting in the channel before the watcher stops reading the kernel.
    pub channel_batches_max: usize,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            backend: BackendChoice::Auto,
            window: Duration::from_millis(50),
            batch_paths_max: 4096,
            channel_batches_max: 64,
        }
    }
}

/// Upper bounds of the options: beyond them a setting is a typo, not a choice.
const WINDOW_MAX: Duration = Duration::from_secs(60);
const BATCH_PATHS_MAX_MAX: usize = 1 << 20;
const CHANNEL_BATCHES_MAX_MAX: usize = 1 << 16;

impl WatchOptions {
    fn validate(&self) -> Result<(), WatchError> {
        let invalid = |name, reason: String| Err(WatchError::InvalidOption { name, reason });
        if self.window > WINDOW_MAX {
            return invalid("window_ms", format!("{} ms is above the 60000 ms maximum", self.window.as_millis()));
        }
        if !(1..=BATCH_PATHS_MAX_MAX).contains(&self.batch_paths_max) {
            return invalid("batch_paths_max", format!("{} is not in 1..={BATCH_PATHS_MAX_MAX}", self.batch_paths_max));
        }
        if !(1..=CHANNEL_BATCHES_MAX_MAX).contains(&self.channel_batches_max) {
            return invalid(
                "channel_batches_max",
                format!("{} is not in 1..={CHANNEL_BATCHES_MAX_MAX}", self.channel_batches_max),
            );
        }
        Ok(())
    }
}

/// Watches one directory tree and delivers [`ChangeBatch`]es until stopped or dropped.
///
/// Start it before the initial scan of the tree: changes made during that scan then show
/// up in batches instead of being missed.
#[derive(Debug)]
pub struct Watcher {
    backend: Backend,
    root: PathBuf,
    batches: Receiver<ChangeBatch>,
    stop: Arc<StopSignal>,
    requests: Arc<Requests>,
    thread: Option<JoinHandle<Result<(), WatchError>>>,
}

/// What the consumer asks of the thread besides its batches (the stop eventfd wakes it).
#[derive(Debug, Default)]
struct Requests {
    stopping: AtomicBool,
    flushes_asked: AtomicU64,
    flushes_done: AtomicU64,
}

impl Watcher {
    /// Starts watching `root` (resolved to a canonical absolute path).
    pub fn new(root: impl AsRef<Path>, options: WatchOptions) -> Result<Watcher, WatchError> {
        options.validate()?;
        let given = root.as_ref();
        let root = std::fs::canonicalize(given)
            .map_err(|source| WatchError::RootMissing { path: given.to_path_buf(), source })?;
        let metadata =
            std::fs::metadata(&root).map_err(|source| WatchError::RootMissing { path: root.clone(), source })?;
        if !metadata.is_dir() {
            return Err(WatchError::RootNotDirectory { path: root });
        }
        let (source, backend, initial) = open_source(&root, &options)?;
        let stop = Arc::new(StopSignal::new().map_err(|source| WatchError::Sys { op: "eventfd", source })?);
        let (tx, batches) = mpsc::sync_channel(options.channel_batches_max);
        let coalescer =
            Coalescer::new(CoalesceConfig { window: options.window, batch_paths_max: options.batch_paths_max });
        let thread_stop = Arc::clone(&stop);
        let requests = Arc::new(Requests::default());
        let thread_requests = Arc::clone(&requests);
        let thread = std::thread::Builder::new()
            .name(format!("xtsync-watch-{}", backend.name()))
            .spawn(move || run(source, coalescer, tx, &thread_stop, &thread_requests, initial))
            .map_err(|err| WatchError::Thread(format!("cannot spawn: {err}")))?;
        tracing::info!(root = %root.display(), backend = backend.name(), window_ms = options.window.as_millis() as u64, "watching");
        Ok(Watcher { backend, root, batches, stop, requests, thread: Some(thread) })
    }

    /// Hands every change made before this call to `each`, without waiting for batch
    /// windows: the thread reads what the kernel queued by now and closes its open batch.
    /// Returns `Ok(false)` if that took longer than `timeout` (what came is handed over
    /// all the same), an error if the thread has ended.
    pub fn flush(&self, timeout: Duration, mut each: impl FnMut(ChangeBatch)) -> Result<bool, WatchError> {
        let asked = self.requests.flushes_asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.stop.signal();
        let deadline = Instant::now() + timeout;
        loop {
            // The thread delivers the flushed batch before it counts the flush done.
            let done = self.requests.flushes_done.load(Ordering::SeqCst) >= asked;
            while let Ok(batch) = self.batches.try_recv() {
                each(batch);
            }
            if done {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match self.batches.recv_timeout(left.min(Duration::from_millis(1))) {
                Ok(batch) => each(batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(WatchError::Thread("the watcher thread has ended".to_string()))
                }
            }
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The canonical root being watched; batch paths are relative to it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The batches, oldest first. Disconnected once the thread has ended (call
    /// [`Watcher::stop`] to learn why).
    pub fn batches(&self) -> &Receiver<ChangeBatch> {
        &self.batches
    }

    /// Stops the thread and reports how it ended: `Ok` unless a syscall failed under it.
    pub fn stop(mut self) -> Result<(), WatchError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), WatchError> {
        self.requests.stopping.store(true, Ordering::SeqCst);
        self.stop.signal();
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| WatchError::Thread("panicked".to_string()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            tracing::warn!(root = %self.root.display(), error = %err, "watcher ended with an error");
        }
    }
}

/// An opened backend, which one it is, and the events its setup produced (subtrees it
/// could not watch).
type Opened = (Box<dyn Source>, Backend, Vec<Event>);

/// Opens the backend `options` asks for; `Auto` falls back to inotify with the reason.
fn open_source(root: &Path, options: &WatchOptions) -> Result<Opened, WatchError> {
    let inotify = || -> Result<Opened, WatchError> {
        let (source, initial) = Inotify::new(root, options.batch_paths_max)?;
        Ok((Box::new(source), Backend::Inotify, initial))
    };
    match options.backend {
        BackendChoice::Inotify => inotify(),
        BackendChoice::Fanotify => Ok((Box::new(Fanotify::new(root)?), Backend::Fanotify, Vec::new())),
        BackendChoice::Auto => match Fanotify::new(root) {
            Ok(source) => Ok((Box::new(source), Backend::Fanotify, Vec::new())),
            Err(err) => {
                tracing::info!(root = %root.display(), reason = %err, "fanotify unavailable, using inotify");
                inotify()
            }
        },
    }
}

/// Poll interval while a finished batch waits for room in the channel.
const CHANNEL_FULL_RETRY: Duration = Duration::from_millis(10);

/// The watcher thread: read, coalesce, deliver, until stopped or the receiver is gone.
fn run(
    mut source: Box<dyn Source>,
    mut coalescer: Coalescer,
    tx: SyncSender<ChangeBatch>,
    stop: &StopSignal,
    requests: &Requests,
    initial: Vec<Event>,
) -> Result<(), WatchError> {
    let started = Instant::now();
    for event in initial {
        coalescer.push(event, started);
    }
    let mut held: Option<ChangeBatch> = None;
    let mut read_at_latest = started;
    loop {
        let now = Instant::now();
        if held.is_none() {
            // Events that queued while the open batch waited belong to it: read them
            // before it closes.
            if coalescer.deadline().is_some_and(|deadline| now >= deadline) && read_at_latest < now {
                read_at_latest = now;
                read_source(source.as_mut(), &mut coalescer, now)?;
            }
            held = coalescer.poll(now);
        }
        if let Some(batch) = held.take() {
            match tx.try_send(batch) {
                Ok(()) => continue,
                Err(TrySendError::Full(batch)) => held = Some(batch),
                Err(TrySendError::Disconnected(_)) => return Ok(()),
            }
        }
        // While a batch is open the kernel queue is read every OPEN_BATCH_READ_INTERVAL,
        // not on every event: a steady stream of changes then costs a few wake-ups per
        // batch instead of one per event (the kernel merges and holds them meanwhile).
        let next_read = read_at_latest + OPEN_BATCH_READ_INTERVAL;
        let (watch_source, timeout) = match (&held, coalescer.deadline()) {
            (Some(_), _) => (false, Some(CHANNEL_FULL_RETRY)),
            (None, Some(deadline)) if next_read > now => {
                (false, Some(deadline.min(next_read).saturating_duration_since(now)))
            }
            (None, Some(deadline)) => (true, Some(deadline.saturating_duration_since(now))),
            (None, None) => (true, None),
        };
        let ready = sys::poll_two(source.fd(), watch_source, stop.as_fd(), timeout)
            .map_err(|source| WatchError::Sys { op: "poll", source })?;
        if ready.stop {
            if requests.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            stop.clear();
            let asked = requests.flushes_asked.load(Ordering::SeqCst);
            // Everything read from now on was queued by the kernel before the request.
            read_source(source.as_mut(), &mut coalescer, Instant::now())?;
            for batch in held.take().into_iter().chain(coalescer.flush()) {
                // The consumer takes batches while it waits for the flush.
                if tx.send(batch).is_err() {
                    return Ok(());
                }
            }
            requests.flushes_done.store(asked, Ordering::SeqCst);
            continue;
        }
        let now = Instant::now();
        let read_due = held.is_none() && coalescer.deadline().is_some() && now >= next_read;
        if ready.source || read_due {
            read_at_latest = now;
            read_source(source.as_mut(), &mut coalescer, now)?;
        }
    }
}

fn read_source(source: &mut dyn Source, coalescer: &mut Coalescer, read_at: Instant) -> Result<(), WatchError> {
    source.read_events(&mut |event| coalescer.push(event, read_at)).inspect_err(|err| {
        tracing::error!(error = %err, "watcher stopped");
    })
}

/// How often the kernel queue is read while a batch is open (a batch of a shorter
/// window is read once, when it closes: every wake-up of this thread costs).
const OPEN_BATCH_READ_INTERVAL: Duration = Duration::from_millis(50);
