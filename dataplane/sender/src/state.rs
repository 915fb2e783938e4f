//! One sender session's state, shared by its producer (`session.rs`), its file
//! streaming (`stream.rs`) and its reply handler (`replies.rs`), which all run on the
//! session's executor: what was sent and awaits the receiver, the budgets that bound
//! it, and the channels to the pass and to the producer.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use xtsync_api::Compression;
use xtsync_chunker::ChunkParams;
use xtsync_link::frames::FrameError;
use xtsync_link::secure::KtlsPolicy;
use xtsync_link::writer::FrameSender;
use xtsync_metrics::WorkerMetrics;
use xtsync_store::{StoreBatch, StoreOp, WorkerStore};
use xtsync_wire::Message;

use crate::events::{SessionEvent, SessionStats};
use crate::segment::SegmentBuf;
use xtsync_walk::item::{WalkItem, WalkKind};

/// What a session needs to know of its job, its pass and its worker.
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
    pub limiter: Option<Arc<xtsync_link::shaping::RateLimiter>>,
    /// Where to say which tree the target serves (`HelloAck::tree_id`): a pass's walk
    /// waits for it to know whether it may trust what the target acknowledged.
    pub tree_ids: Option<flume::Sender<[u8; 32]>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
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
pub(crate) struct InFlightFile {
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
    pub(crate) fn acknowledged_before(&self) -> bool {
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
pub(crate) struct Shared {
    /// Entries batches awaiting their reply: batch → (index in frame → file item).
    pub batches: HashMap<u32, HashMap<u32, WalkItem>>,
    pub files: HashMap<u64, InFlightFile>,
    pub segments: HashMap<(u64, u32), SegmentBuf>,
    pub stats: SessionStats,
    pub pass_done: bool,
    pub source_records: Vec<StoreOp>,
}

/// What the reply handler tells the producer.
pub(crate) enum ProducerEvent {
    /// The target needs this file's content (or a retry of it).
    Need(WalkItem),
    /// Some in-flight state changed (a batch reply or a FileDone arrived).
    Wake,
    /// The reply handler stopped; the session is over.
    Stopped(Result<(), SessionError>),
}

pub(crate) struct Session {
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

impl Session {
    /// Sends one message on the session's connection.
    pub(crate) async fn send(&self, msg: &Message) -> Result<(), SessionError> {
        self.sender.send(msg).await.map_err(|e| SessionError::Connection(e.to_string()))
    }
}

/// Writes the source records collected from FileDone acks (off the executor).
pub(crate) async fn flush_source_records(session: &Rc<Session>) {
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
