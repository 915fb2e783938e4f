//! One source session: a TLS connection to the target worker and the pipeline over it.
//! Lives entirely on one executor (core); shares nothing with other sessions except the
//! store (behind `spawn_blocking`) and the event channel to the pass.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use xtsync_link::fd::borrowed_fd;

use futures::AsyncReadExt;
use xtsync_api::Compression;
use xtsync_wire::{Entries, Entry, EntryKind, Hello, Message};

use crate::events::{SessionEvent, SessionStats};
use crate::producer_step::{when_idle, IdleStep, IdleView};
use crate::replies::handle_replies;
use crate::state::{flush_source_records, PassFeed, ProducerEvent, Session, SessionError, SessionParams, Shared};
use crate::stream::{stream_file, FILES_IN_FLIGHT_MAX, SEGMENTS_IN_FLIGHT_BYTES_MAX};
use xtsync_link::frames::{read_message, Counted};
use xtsync_link::secure::establish;
use xtsync_link::writer::{spawn_writer, FrameSender, KernelSocket};
use xtsync_walk::item::{WalkItem, WalkKind};

/// Entries per `Entries` frame (well under the wire limit, so the frame stays small).
const ENTRIES_PER_FRAME: usize = 1024;
const _: () = assert!(ENTRIES_PER_FRAME <= xtsync_wire::ENTRIES_PER_BATCH_MAX, "a batch fits one Entries frame");

/// How long the target may take to speak first after the handshake (`Ready`).
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connection attempts a session makes to land on a target core of its own.
const SPREAD_ATTEMPTS_MAX: usize = 6;

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
    xtsync_link::liveness::watch_peer(borrowed_fd(&tcp));
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
    let ready = xtsync_link::secure::within(READY_TIMEOUT, read_message(&mut reader))
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
    let mut producer =
        Producer { session, batch: Vec::new(), batch_files: HashMap::new(), next_batch: 0, deferred_links: Vec::new() };
    let mut walk_done = false;
    let mut links_sent = false;

    loop {
        // Needs and retries go first: they unblock FileDone acks at the target.
        match producer_rx.try_recv() {
            Ok(ProducerEvent::Need(item)) => {
                stream_file(session, item).await?;
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
                    producer.take_item(item).await?;
                    continue;
                }
                Err(flume::TryRecvError::Empty) => {
                    producer.send_batch().await?;
                }
                Err(flume::TryRecvError::Disconnected) => {
                    producer.send_batch().await?;
                    walk_done = true;
                }
            }
        }
        let view = {
            let s = session.shared.borrow();
            IdleView {
                walk_done,
                awaiting_receiver: !s.batches.is_empty() || !s.files.is_empty(),
                events_queued: !producer_rx.is_empty(),
                links_deferred: producer.deferred_links.len(),
                links_sent,
            }
        };
        let step = when_idle(view);
        match step {
            IdleStep::Finish => return Ok(()),
            IdleStep::SendDeferredLinks => {
                for item in std::mem::take(&mut producer.deferred_links) {
                    producer.batch.push(entry_of(&item));
                    if producer.batch.len() >= ENTRIES_PER_FRAME {
                        producer.send_batch().await?;
                    }
                }
                producer.send_batch().await?;
                links_sent = true;
                continue;
            }
            IdleStep::WaitForEvent | IdleStep::WaitForItemOrEvent => {}
        }
        // Nothing to do right now: wait for a reply (and a walk item while it lasts).
        if step == IdleStep::WaitForEvent {
            match producer_rx.recv_async().await.map_err(|_| SessionError::Cancelled)? {
                ProducerEvent::Need(item) => stream_file(session, item).await?,
                ProducerEvent::Wake => {}
                ProducerEvent::Stopped(r) => {
                    r?;
                    return Err(SessionError::Connection("the target closed it".into()));
                }
            }
        } else {
            let either = futures::future::select(items.recv_async(), producer_rx.recv_async()).await;
            match either {
                futures::future::Either::Left((Ok(item), _)) => producer.take_item(item).await?,
                futures::future::Either::Left((Err(_), _)) => walk_done = true,
                futures::future::Either::Right((Ok(ProducerEvent::Need(item)), _)) => {
                    stream_file(session, item).await?
                }
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

pub(crate) fn entry_of(item: &WalkItem) -> Entry {
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

/// The producer's own state: the entries batch being filled and the hard links held
/// back until everything they point to is in place.
struct Producer<'s> {
    session: &'s Rc<Session>,
    batch: Vec<Entry>,
    /// Index in `batch` → the file's walk item (to stream it if the receiver needs it).
    batch_files: HashMap<u32, WalkItem>,
    next_batch: u32,
    deferred_links: Vec<WalkItem>,
}

impl Producer<'_> {
    /// One walk item: a file without a known digest is streamed now (after the entries
    /// before it); hard links wait for the end; everything else joins the batch.
    async fn take_item(&mut self, item: WalkItem) -> Result<(), SessionError> {
        match &item.kind {
            WalkKind::File { cached_digest: None, .. } => {
                self.send_batch().await?;
                stream_file(self.session, item).await
            }
            WalkKind::HardLink { .. } => {
                self.deferred_links.push(item);
                Ok(())
            }
            _ => {
                if let WalkKind::File { .. } = item.kind {
                    self.batch_files.insert(self.batch.len() as u32, item.clone());
                }
                self.batch.push(entry_of(&item));
                if self.batch.len() >= ENTRIES_PER_FRAME {
                    self.send_batch().await?;
                }
                Ok(())
            }
        }
    }

    async fn send_batch(&mut self) -> Result<(), SessionError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let id = self.next_batch;
        self.next_batch += 1;
        let session = self.session;
        session.shared.borrow_mut().batches.insert(id, std::mem::take(&mut self.batch_files));
        let msg = Message::Entries(Entries { batch: id, entries: std::mem::take(&mut self.batch) });
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        // Paths with shared prefixes, similar metadata, directory listings: a batch
        // shrinks several times over (metadata is compressed whatever the chunk policy
        // says, except `never`).
        if session.params.compression != Compression::Never {
            frame = xtsync_wire::compress_frame(&frame, session.params.compression_level).unwrap_or(frame);
        }
        session.sender.send_encoded(frame).await.map_err(|e| SessionError::Connection(e.to_string()))
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
