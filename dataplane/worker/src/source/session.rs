//! One source session: a TLS connection to the target worker and the pipeline over it.
//! Lives entirely on one executor (core); shares nothing with other sessions except the
//! store (behind `spawn_blocking`) and the event channel to the pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use futures::AsyncReadExt;
use xtsync_api::{Compression, FileVersion};
use xtsync_chunker::ChunkParams;
use xtsync_store::{StoreBatch, StoreOp, WorkerStore};
use xtsync_wire::{Entries, Entry, EntryKind, Hello, Message};

use crate::frames::{read_message, Counted, FrameError};
use crate::metrics::WorkerMetrics;
use crate::secure::{establish, KtlsPolicy};
use crate::source::replies::handle_replies;
use crate::source::scan::{WalkItem, WalkKind};
use crate::source::stream::{SegmentBuf, FILES_IN_FLIGHT_MAX, SEGMENTS_IN_FLIGHT_BYTES_MAX};
use crate::writer::{spawn_writer, FrameSender, KernelSocket};

/// Entries per `Entries` frame (well under the wire limit, so the frame stays small).
const ENTRIES_PER_FRAME: usize = 1024;

#[derive(Clone)]
pub struct SessionParams {
    pub job_id: u64,
    pub run_id: u64,
    pub session_index: u16,
    pub session_count: u16,
    pub target_addr: String,
    /// The job's target: the certificate name the peer at `target_addr` must present.
    pub target_name: String,
    pub target_root: String,
    pub delete: bool,
    pub compression: Compression,
    pub compression_level: i32,
    pub chunk_params: ChunkParams,
    pub tls: Arc<rustls::ClientConfig>,
    pub ktls: KtlsPolicy,
    pub store: Arc<dyn WorkerStore>,
    pub metrics: Arc<WorkerMetrics>,
    /// Target executors already serving a session of this pass. SO_REUSEPORT spreads
    /// connections by hash, so two sessions can land on one target core; a session
    /// that lands on a taken core reconnects (a few times) to spread the load.
    pub target_cores_taken: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// The index of the executor this session runs on. When the target is on this same
    /// host, the session avoids the target executor with the same index: with the
    /// default pinning both are the same CPU, and the two ends would take turns on it
    /// while another CPU idles.
    pub core_index: u64,
    /// The job's bandwidth limit, shared by all its sessions.
    pub limiter: Option<Arc<crate::shaping::RateLimiter>>,
    /// Where to say which tree the target serves (`HelloAck::tree_id`): a pass's walk
    /// waits for it to know whether it may trust what the target acknowledged.
    pub tree_ids: Option<flume::Sender<[u8; 32]>>,
}

/// How long the target may take to speak first after the handshake (`Ready`).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connection attempts a session makes to land on a target core of its own.
const SPREAD_ATTEMPTS_MAX: usize = 6;

#[derive(Debug, Default, Clone)]
pub struct SessionStats {
    pub files_transferred: u64,
    pub files_unchanged: u64,
    pub files_renamed: u64,
    pub files_failed: u64,
    pub bytes_read: u64,
    pub bytes_on_wire: u64,
    pub chunks_sent: u64,
    /// Chunks sent for file versions the target had acknowledged earlier.
    pub chunks_resent_acknowledged: u64,
    pub chunks_reused: u64,
    pub entries_deleted: u64,
    /// The first paths the target did not hold as the source has them (reconcile report).
    pub differed: Vec<String>,
    /// The first paths the target removed.
    pub removed: Vec<String>,
}

impl SessionStats {
    /// Adds to a bounded list of paths (`PASS_PATHS_LISTED_MAX`), once.
    pub fn list(paths: &mut Vec<String>, path: String) {
        if paths.len() < xtsync_api::PASS_PATHS_LISTED_MAX && !paths.contains(&path) {
            paths.push(path);
        }
    }

    /// Adds another session's figures and paths.
    pub fn add(&mut self, s: &SessionStats) {
        self.files_transferred += s.files_transferred;
        self.files_unchanged += s.files_unchanged;
        self.files_renamed += s.files_renamed;
        self.files_failed += s.files_failed;
        self.bytes_read += s.bytes_read;
        self.bytes_on_wire += s.bytes_on_wire;
        self.chunks_sent += s.chunks_sent;
        self.chunks_resent_acknowledged += s.chunks_resent_acknowledged;
        self.chunks_reused += s.chunks_reused;
        self.entries_deleted += s.entries_deleted;
        for path in &s.differed {
            Self::list(&mut self.differed, path.clone());
        }
        for path in &s.removed {
            Self::list(&mut self.removed, path.clone());
        }
    }
}

/// What a session tells its pass.
#[derive(Debug)]
pub enum SessionEvent {
    Committed(FileVersion),
    /// Files of an entries batch the target already held as they are: settled.
    Unchanged(crate::source::backlog::Backlog),
    FileFailed {
        path: String,
        error: String,
    },
    /// Every entry of this session is durable at the target (or failed).
    ContentDone {
        session: u16,
    },
    Finished {
        session: u16,
        stats: SessionStats,
    },
    Failed {
        session: u16,
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to target worker {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("target refused: {0}")]
    Refused(String),
    #[error("protocol violation by target: {0}")]
    Protocol(String),
    #[error("connection to the target lost: {0}")]
    Connection(String),
    #[error("the pass was cancelled")]
    Cancelled,
}

/// A file sent with content, until its FileDone.
pub struct InFlightFile {
    pub item: WalkItem,
    pub digest: Option<[u8; 32]>,
    /// Whether `auto` still tries to compress this file's chunks.
    pub compress_probe: xtsync_chunker::CompressProbe,
    /// Held until the file's FileDone: bounds the files a session has open at the target.
    pub _permit: glommio::sync::StaticPermit,
}

impl InFlightFile {
    /// The content read is the version the target acknowledged in an earlier pass: the
    /// source record (written only on the target's FileDone) matched the file's stat,
    /// and the digest read (once known: wants for the first segments of a large file
    /// can come first) is that version's.
    /// A digest found by rename detection was acknowledged at another path: not this.
    pub fn acknowledged_before(&self) -> bool {
        match self.item.kind {
            WalkKind::File { cached_digest: Some(acked), .. } if self.item.renamed_from.is_none() => {
                self.digest.is_none_or(|d| d == acked)
            }
            _ => false,
        }
    }
}

/// State shared by the producer and the reply handler (same executor: RefCell).
#[derive(Default)]
pub struct Shared {
    /// Entries batches awaiting their reply: batch → (index in frame → file item).
    pub batches: HashMap<u32, HashMap<u32, WalkItem>>,
    pub files: HashMap<u64, InFlightFile>,
    pub segments: HashMap<(u64, u32), SegmentBuf>,
    pub stats: SessionStats,
    pub pass_done: bool,
    pub source_records: Vec<StoreOp>,
}

/// What the reply handler tells the producer.
pub enum ProducerEvent {
    /// The target needs this file's content (or a retry of it).
    Need(WalkItem),
    /// Some in-flight state changed (a batch reply or a FileDone arrived).
    Wake,
    /// The reply handler stopped; the session is over.
    Stopped(Result<(), SessionError>),
}

pub struct Session {
    pub params: SessionParams,
    pub sender: FrameSender,
    pub shared: Rc<RefCell<Shared>>,
    pub events: flume::Sender<SessionEvent>,
    pub producer_tx: flume::Sender<ProducerEvent>,
    pub next_file_id: Cell<u64>,
    pub segment_budget: Rc<glommio::sync::Semaphore>,
    pub file_budget: Rc<glommio::sync::Semaphore>,
    /// Wire bytes already added to the worker's `bytes_sent_total` (by finished passes).
    pub bytes_counted: Cell<u64>,
}

/// One pass's input to a session: the walk's items and the signal that every session
/// of the pass has its content durable (deletions may go).
pub struct PassFeed {
    pub items: flume::Receiver<WalkItem>,
    pub end_of_pass: flume::Receiver<()>,
}

/// Runs a session: one pass per `PassFeed` received on `passes`, on the same connection,
/// each reported with `ContentDone` and `Finished`; the session closes when `passes`
/// closes. The first failure is reported as `Failed` and ends the session.
pub async fn run_session(
    params: SessionParams,
    passes: flume::Receiver<PassFeed>,
    events: flume::Sender<SessionEvent>,
) {
    let index = params.session_index;
    params.metrics.sessions_source_active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let result = run(params.clone(), passes, events.clone()).await;
    params.metrics.sessions_source_active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    if let Err(e) = result {
        let _ = events.send(SessionEvent::Failed { session: index, error: e.to_string() });
    }
}

/// Connects, checks the target by name and sets up TLS; also says whether the target
/// is on this host (the connection's two ends have one address).
async fn connect(
    params: &SessionParams,
    wire_bytes: Rc<Cell<u64>>,
) -> Result<(FrameSender, impl futures_lite::AsyncRead + Unpin, bool), SessionError> {
    let addr = params.target_addr.clone();
    let tcp = glommio::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| SessionError::Connect { addr: addr.clone(), reason: e.to_string() })?;
    let _ = tcp.set_nodelay(true);
    let same_host = matches!((tcp.local_addr(), tcp.peer_addr()), (Ok(l), Ok(p)) if l.ip() == p.ip());
    // SAFETY: `tcp` owns the descriptor for this borrow.
    crate::liveness::watch_peer(unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&tcp)) });
    let host = addr.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or(&addr).to_string();
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| SessionError::Connect { addr: addr.clone(), reason: format!("bad server name {host:?}: {e}") })?;
    let tls = futures_rustls::TlsConnector::from(params.tls.clone())
        .connect(server_name, Counted::new(tcp, wire_bytes.clone()))
        .await
        .map_err(|e| SessionError::Handshake {
            addr: addr.clone(),
            reason: xtsync_transport::describe_tls_error(&e),
        })?;
    // The address comes from the target's registration: the peer must also be the
    // job's target by name, or a registration pointing at another worker's port would
    // make this source write into that worker.
    let peer = xtsync_transport::peer_identity(tls.get_ref().1.peer_certificates())
        .map_err(|e| SessionError::Handshake { addr: addr.clone(), reason: e.to_string() })?;
    if peer.name != params.target_name {
        return Err(SessionError::Handshake {
            addr: addr.clone(),
            reason: format!("the peer is {:?}, not the job's target {:?}", peer.name, params.target_name),
        });
    }
    let (stream, path) = establish(tls.into(), params.ktls, &params.metrics)
        .map_err(|e| SessionError::Handshake { addr: addr.clone(), reason: e.to_string() })?;
    // Under kernel TLS the writer may let the kernel send chunks from the files.
    let kernel = match stream.kernel_socket() {
        Some(Ok(fd)) => Some(KernelSocket { fd: Arc::new(fd), wire_bytes, metrics: params.metrics.clone() }),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot duplicate the kernel-TLS socket: chunks go from memory");
            None
        }
        None => None,
    };
    let (mut reader, writer) = stream.split();
    // The target speaks first (see `Ready`): nothing is sent before the keys moved.
    let ready = crate::secure::within(READY_TIMEOUT, read_message(&mut reader))
        .await
        .ok_or_else(|| SessionError::Refused(format!("no Ready from the target within {READY_TIMEOUT:?}")))?;
    let target_kernel_tls = match ready? {
        Some(Message::Ready(r)) => r.target_kernel_tls,
        Some(Message::Error(e)) => return Err(SessionError::Refused(e.message)),
        Some(other) => return Err(SessionError::Protocol(format!("expected Ready, got {other:?}"))),
        None => return Err(SessionError::Refused("connection closed before Ready".into())),
    };
    tracing::info!(
        target = %addr,
        session = params.session_index,
        tls = path.as_str(),
        target_tls = if target_kernel_tls { "kernel" } else { "userspace" },
        "source session connected"
    );
    let (sender, _writer_task) = spawn_writer(writer, kernel, params.limiter.clone());
    Ok((sender, reader, same_host))
}

/// Connects and says Hello until the target serves this session on an executor no
/// other session of the pass uses, and, on a shared host, not on this session's own
/// executor index (or the attempts run out).
async fn open_session(
    params: &SessionParams,
    wire_bytes: Rc<Cell<u64>>,
) -> Result<(FrameSender, impl futures_lite::AsyncRead + Unpin), SessionError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (sender, mut reader, same_host) = connect(params, wire_bytes.clone()).await?;
        let (target_core, tree_id) = hello(params, &sender, &mut reader).await?;
        if let Some(tree_ids) = &params.tree_ids {
            let _ = tree_ids.try_send(tree_id);
        }
        let mut taken = params.target_cores_taken.lock().unwrap_or_else(|p| p.into_inner());
        let own_index = same_host.then_some(params.core_index);
        if target_core_suits(target_core, own_index, &taken) || attempt >= SPREAD_ATTEMPTS_MAX {
            taken.insert(target_core);
            return Ok((sender, reader));
        }
        // Dropping both halves closes this connection; the target drops it quietly.
    }
}

/// Whether a session keeps the target executor it landed on: one no other session of
/// the pass has, and, with the target on this host, not the one with this session's
/// own executor index (`own_index`).
fn target_core_suits(target_core: u64, own_index: Option<u64>, taken: &std::collections::HashSet<u64>) -> bool {
    own_index != Some(target_core) && !taken.contains(&target_core)
}

/// Sends Hello, waits for HelloAck; returns the target executor serving the session and
/// the target tree's id.
async fn hello<R: futures_lite::AsyncRead + Unpin>(
    params: &SessionParams,
    sender: &FrameSender,
    reader: &mut R,
) -> Result<(u64, [u8; 32]), SessionError> {
    let flags = if params.delete { Hello::FLAG_DELETE } else { 0 };
    sender
        .send(&Message::Hello(Hello {
            job_id: params.job_id,
            run_id: params.run_id,
            session_index: params.session_index,
            session_count: params.session_count,
            target_root: params.target_root.clone(),
            flags,
        }))
        .await
        .map_err(|e| SessionError::Connect { addr: params.target_addr.clone(), reason: e.to_string() })?;
    match read_message(reader).await? {
        Some(Message::HelloAck(ack)) => Ok((ack.session_id & 0xffff, ack.tree_id)),
        Some(Message::Error(e)) => Err(SessionError::Refused(e.message)),
        Some(other) => Err(SessionError::Protocol(format!("expected HelloAck, got {other:?}"))),
        None => Err(SessionError::Refused("connection closed after Hello".into())),
    }
}

async fn run(
    params: SessionParams,
    passes: flume::Receiver<PassFeed>,
    events: flume::Sender<SessionEvent>,
) -> Result<(), SessionError> {
    // The first pass's input comes before the connection is opened: a pass cancelled
    // early costs no handshake.
    let Ok(feed) = passes.recv_async().await else { return Ok(()) };
    let wire_bytes = Rc::new(Cell::new(0u64));
    let (sender, reader) = open_session(&params, wire_bytes.clone()).await?;

    let (producer_tx, producer_rx) = flume::unbounded();
    let session = Rc::new(Session {
        params: params.clone(),
        sender,
        shared: Rc::new(RefCell::new(Shared::default())),
        events: events.clone(),
        producer_tx,
        next_file_id: Cell::new(1),
        segment_budget: Rc::new(glommio::sync::Semaphore::new(SEGMENTS_IN_FLIGHT_BYTES_MAX)),
        file_budget: Rc::new(glommio::sync::Semaphore::new(FILES_IN_FLIGHT_MAX)),
        bytes_counted: Cell::new(0),
    });
    let _replies = glommio::spawn_local(handle_replies(session.clone(), reader)).detach();
    let result = passes_on(&session, feed, &passes, &producer_rx, &wire_bytes).await;
    // The reply task holds the session (and a sender) until the target closes: close
    // our side explicitly so that the target sees the end of the session.
    session.sender.close().await;
    // The bytes of a pass that did not finish count too (finished passes added theirs).
    if result.is_err() {
        let counted = session.bytes_counted.get();
        params.metrics.bytes_sent_total.fetch_add(wire_bytes.get() - counted, std::sync::atomic::Ordering::Relaxed);
    }
    result
}

async fn passes_on(
    session: &Rc<Session>,
    mut feed: PassFeed,
    passes: &flume::Receiver<PassFeed>,
    producer_rx: &flume::Receiver<ProducerEvent>,
    wire_bytes: &Rc<Cell<u64>>,
) -> Result<(), SessionError> {
    let params = &session.params;
    loop {
        let wire_before = wire_bytes.get();
        {
            let mut shared = session.shared.borrow_mut();
            shared.stats = SessionStats::default();
            shared.pass_done = false;
        }
        one_pass(session, &feed, producer_rx).await?;
        let mut stats = std::mem::take(&mut session.shared.borrow_mut().stats);
        stats.bytes_on_wire = wire_bytes.get() - wire_before;
        params.metrics.bytes_sent_total.fetch_add(stats.bytes_on_wire, std::sync::atomic::Ordering::Relaxed);
        session.bytes_counted.set(wire_bytes.get());
        let _ = session.events.send(SessionEvent::Finished { session: params.session_index, stats });
        match passes.recv_async().await {
            Ok(next) => feed = next,
            Err(_) => return Ok(()),
        }
    }
}

/// One pass over the open session: entries and files, then (once every session of the
/// pass is done) EndOfPass, until the target's PassDone.
async fn one_pass(
    session: &Rc<Session>,
    feed: &PassFeed,
    producer_rx: &flume::Receiver<ProducerEvent>,
) -> Result<(), SessionError> {
    let index = session.params.session_index;
    produce(session, &feed.items, producer_rx).await?;
    flush_source_records(session).await;
    let _ = session.events.send(SessionEvent::ContentDone { session: index });
    // Deletions and directory metadata wait until every session is done.
    feed.end_of_pass.recv_async().await.map_err(|_| SessionError::Cancelled)?;
    let files = session.shared.borrow().stats.files_transferred;
    session
        .sender
        .send(&Message::EndOfPass(xtsync_wire::EndOfPass { files }))
        .await
        .map_err(|e| SessionError::Connection(e.to_string()))?;
    wait_until(session, producer_rx, |s| s.pass_done).await
}

/// Waits for producer events until `done(shared)` holds; needs arriving meanwhile are a
/// protocol error (only sent in answer to entries, which are all answered).
async fn wait_until(
    session: &Rc<Session>,
    producer_rx: &flume::Receiver<ProducerEvent>,
    done: impl Fn(&Shared) -> bool,
) -> Result<(), SessionError> {
    while !done(&session.shared.borrow()) {
        match producer_rx.recv_async().await.map_err(|_| SessionError::Cancelled)? {
            ProducerEvent::Wake => {}
            ProducerEvent::Need(item) => {
                return Err(SessionError::Protocol(format!("late need for {:?}", item.path)));
            }
            ProducerEvent::Stopped(r) => {
                r?;
                if !done(&session.shared.borrow()) {
                    return Err(SessionError::Connection("the target closed it early".into()));
                }
            }
        }
    }
    Ok(())
}

/// The producer: entries in batches, files with content streamed, needs first.
async fn produce(
    session: &Rc<Session>,
    items: &flume::Receiver<WalkItem>,
    producer_rx: &flume::Receiver<ProducerEvent>,
) -> Result<(), SessionError> {
    let mut batch: Vec<Entry> = Vec::new();
    let mut batch_files: HashMap<u32, WalkItem> = HashMap::new();
    let mut next_batch = 0u32;
    let mut deferred_links: Vec<WalkItem> = Vec::new();
    let mut walk_done = false;
    let mut links_sent = false;

    loop {
        // Needs and retries go first: they unblock FileDone acks at the target.
        match producer_rx.try_recv() {
            Ok(ProducerEvent::Need(item)) => {
                session.stream_file(item).await?;
                continue;
            }
            Ok(ProducerEvent::Wake) => {}
            Ok(ProducerEvent::Stopped(r)) => {
                r?;
                return Err(SessionError::Connection("the target closed it".into()));
            }
            Err(_) => {}
        }
        if !walk_done {
            match items.try_recv() {
                Ok(item) => {
                    session.take_item(item, &mut batch, &mut batch_files, &mut next_batch, &mut deferred_links).await?;
                    continue;
                }
                Err(flume::TryRecvError::Empty) => {
                    session.send_batch(&mut batch, &mut batch_files, &mut next_batch).await?;
                }
                Err(flume::TryRecvError::Disconnected) => {
                    session.send_batch(&mut batch, &mut batch_files, &mut next_batch).await?;
                    walk_done = true;
                }
            }
        }
        // Idle only with nothing queued for us: a reply handled while `send_batch` above
        // awaited may have answered the last batch with a need that is still queued
        // (ending then left it for `wait_until`, which calls it a protocol violation).
        let idle = {
            let s = session.shared.borrow();
            s.batches.is_empty() && s.files.is_empty() && producer_rx.is_empty()
        };
        if walk_done && idle {
            if links_sent || deferred_links.is_empty() {
                return Ok(());
            }
            // Hard links last: every file they point to is now in place.
            for item in deferred_links.drain(..) {
                batch.push(entry_of(&item));
                if batch.len() >= ENTRIES_PER_FRAME {
                    session.send_batch(&mut batch, &mut batch_files, &mut next_batch).await?;
                }
            }
            session.send_batch(&mut batch, &mut batch_files, &mut next_batch).await?;
            links_sent = true;
            continue;
        }
        // Nothing to do right now: wait for a walk item or a reply.
        if walk_done {
            match producer_rx.recv_async().await.map_err(|_| SessionError::Cancelled)? {
                ProducerEvent::Need(item) => session.stream_file(item).await?,
                ProducerEvent::Wake => {}
                ProducerEvent::Stopped(r) => {
                    r?;
                    return Err(SessionError::Connection("the target closed it".into()));
                }
            }
        } else {
            let either = futures::future::select(items.recv_async(), producer_rx.recv_async()).await;
            match either {
                futures::future::Either::Left((Ok(item), _)) => {
                    session.take_item(item, &mut batch, &mut batch_files, &mut next_batch, &mut deferred_links).await?
                }
                futures::future::Either::Left((Err(_), _)) => walk_done = true,
                futures::future::Either::Right((Ok(ProducerEvent::Need(item)), _)) => session.stream_file(item).await?,
                futures::future::Either::Right((Ok(ProducerEvent::Wake), _)) => {}
                futures::future::Either::Right((Ok(ProducerEvent::Stopped(r)), _)) => {
                    r?;
                    return Err(SessionError::Connection("the target closed it".into()));
                }
                futures::future::Either::Right((Err(_), _)) => return Err(SessionError::Cancelled),
            }
        }
    }
}

pub fn entry_of(item: &WalkItem) -> Entry {
    let kind = match &item.kind {
        WalkKind::Dir { children } => EntryKind::Dir { children: children.clone() },
        WalkKind::Symlink { target } => EntryKind::Symlink { target: target.clone() },
        WalkKind::HardLink { to } => EntryKind::HardLink { to: to.clone() },
        WalkKind::File { stat, cached_digest } => {
            EntryKind::File { size: stat.size, digest: cached_digest.unwrap_or_default() }
        }
    };
    let renamed_from = match kind {
        EntryKind::File { .. } | EntryKind::Dir { .. } => item.renamed_from.clone(),
        _ => None,
    };
    Entry { path: item.path.clone(), meta: item.meta.clone(), kind, renamed_from }
}

impl Session {
    /// One walk item: a file without a known digest is streamed now (after the entries
    /// before it); hard links wait for the end; everything else joins the batch.
    async fn take_item(
        &self,
        item: WalkItem,
        batch: &mut Vec<Entry>,
        batch_files: &mut HashMap<u32, WalkItem>,
        next_batch: &mut u32,
        deferred_links: &mut Vec<WalkItem>,
    ) -> Result<(), SessionError> {
        match &item.kind {
            WalkKind::File { cached_digest: None, .. } => {
                self.send_batch(batch, batch_files, next_batch).await?;
                self.stream_file(item).await
            }
            WalkKind::HardLink { .. } => {
                deferred_links.push(item);
                Ok(())
            }
            _ => {
                if let WalkKind::File { .. } = item.kind {
                    batch_files.insert(batch.len() as u32, item.clone());
                }
                batch.push(entry_of(&item));
                if batch.len() >= ENTRIES_PER_FRAME {
                    self.send_batch(batch, batch_files, next_batch).await?;
                }
                Ok(())
            }
        }
    }

    async fn send_batch(
        &self,
        batch: &mut Vec<Entry>,
        files: &mut HashMap<u32, WalkItem>,
        next_batch: &mut u32,
    ) -> Result<(), SessionError> {
        if batch.is_empty() {
            return Ok(());
        }
        let id = *next_batch;
        *next_batch += 1;
        self.shared.borrow_mut().batches.insert(id, std::mem::take(files));
        let msg = Message::Entries(Entries { batch: id, entries: std::mem::take(batch) });
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        // Paths with shared prefixes, similar metadata, directory listings: a batch
        // shrinks several times over (metadata is compressed whatever the chunk policy
        // says, except `never`).
        if self.params.compression != Compression::Never {
            frame = xtsync_wire::compress_frame(&frame, self.params.compression_level).unwrap_or(frame);
        }
        self.sender.send_encoded(frame).await.map_err(|e| SessionError::Connection(e.to_string()))
    }
}

/// Writes the source records collected from FileDone acks (off the executor).
pub async fn flush_source_records(session: &Rc<Session>) {
    let ops = std::mem::take(&mut session.shared.borrow_mut().source_records);
    if ops.is_empty() {
        return;
    }
    let store = session.params.store.clone();
    let result = glommio::executor().spawn_blocking(move || store.apply(StoreBatch { ops })).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot record source files; they will be read again next pass");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_keeps_a_target_core_of_its_own_and_off_its_own_cpu_on_a_shared_host() {
        let taken: std::collections::HashSet<u64> = [1].into();
        // Another host: any free target executor, whatever its index.
        assert!(target_core_suits(0, None, &taken));
        assert!(!target_core_suits(1, None, &taken));
        // This host: not the executor with the session's own index (the same CPU).
        assert!(!target_core_suits(0, Some(0), &taken));
        assert!(target_core_suits(2, Some(0), &taken));
        assert!(!target_core_suits(1, Some(0), &taken));
    }
}
