//! One target session: the ordered frame loop of a connection from a source.
//!
//! Frames are handled in arrival order. Manifests (entries, segments) are answered at
//! once so the source can keep streaming; the work they imply waits in an ordered queue
//! that is drained as chunk data arrives. Protocol violations end the session (never
//! the worker); a file that cannot be written fails alone and keeps its old version.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use xtsync_link::fd::borrowed_fd;

use futures::AsyncReadExt;
use xtsync_chunker::{ChunkCodec, ChunkName, Encoding};
use xtsync_store::{ChunkLocation, StoreBatch, StoreOp, WorkerStore};
use xtsync_wire::{
    ChunkData, Entries, EntriesReply, FileBegin, FileDone, HelloAck, Message, PassDone, Segment, Want,
    FILES_OPEN_PER_SESSION_MAX,
};

use crate::admission::SessionClaim;
use crate::assemble::{ChunkSource, OpenFile, PendingSegment};
use crate::checkpoint::{maybe_checkpoint, remove_partials, KeptPartials};
use crate::chunk_error::ChunkError;
use crate::durability::{Barrier, Ready};
use crate::entries::{apply_entries, end_of_pass, files_needing_content, PassMemory};
use crate::frame_plan::{file_end, plan_segment, FileEndFacts, FileEndVerdict, SegmentPlan};
use crate::fsops::{create_temp, TargetRoot};
use crate::local_readers::LocalReaders;
use crate::placement::{finalize, place_ready_chunks, start_writeback, write_chunk};
use crate::rename::{apply_dir_renames, apply_file_renames, moved_location, Applied};
use xtsync_link::frames::{read_message, Counted, FrameError};
use xtsync_link::secure::{establish, KtlsPolicy};
use xtsync_link::writer::{spawn_writer, FrameSender};
use xtsync_metrics::WorkerMetrics;
use xtsync_transport::ktls::TlsPath;

/// How long finished files may wait for their barrier when no frame arrives.
const BARRIER_IDLE: Duration = Duration::from_millis(3);
/// How long a connecting peer may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TargetContext {
    pub store: Arc<dyn WorkerStore>,
    /// Checkpointed temporaries kept for a resumed attempt (shared by all cores).
    pub partials: Arc<KeptPartials>,
    pub tls: xtsync_transport::ReloadingTls,
    pub ktls: KtlsPolicy,
    /// Small batches sync each file and directory (`transfer.small_batch_sync:
    /// per_file`) rather than the filesystem.
    pub per_file_sync: bool,
    pub metrics: Arc<WorkerMetrics>,
    pub core: usize,
    /// Which peers may write where, beyond the handshake (agents: their job only).
    pub admission: crate::admission::Admission,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TargetError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("refused: {0}")]
    Refused(String),
}

enum Pending {
    Entries(Vec<xtsync_wire::Entry>),
    Segment(PendingSegment),
    FileEnd { file_id: u64, digest: [u8; 32], aborted: bool },
}

/// Serves one accepted connection to the end.
pub(crate) async fn serve(tcp: glommio::net::TcpStream, ctx: Rc<TargetContext>) {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = tcp.set_nodelay(true);
    xtsync_link::liveness::watch_peer(borrowed_fd(&tcp));
    // The client certificate and its role (`worker`) are checked inside the handshake
    // (xtsync_transport::tls): a refused peer gets an alert and no byte of a job.
    let config = ctx.tls.current().server.clone();
    let accept = futures_rustls::TlsAcceptor::from(config).accept(Counted::new(tcp, Default::default()));
    let Some(accepted) = xtsync_link::secure::within(HANDSHAKE_TIMEOUT, accept).await else {
        tracing::warn!(%peer, "refused data-plane connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
        ctx.metrics.tls_handshakes_refused_total.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let tls = match accepted {
        Ok(t) => t,
        Err(e) => {
            let reason = xtsync_transport::describe_tls_error(&e);
            tracing::warn!(%peer, %reason, "refused data-plane connection: TLS handshake failed");
            ctx.metrics.tls_handshakes_refused_total.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let identity = xtsync_transport::peer_identity(tls.get_ref().1.peer_certificates()).ok();
    let source = identity.as_ref().map_or_else(|| "?".into(), |id| id.to_string());
    let (stream, path) = match establish(tls.into(), ctx.ktls, &ctx.metrics) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "session closed: kernel TLS hand-off failed");
            return;
        }
    };
    tracing::info!(%peer, %source, core = ctx.core, tls = path.as_str(), "target session accepted");
    let (mut reader, writer) = stream.split();
    let (sender, writer_task) = spawn_writer(writer, None, None);
    let ready = Message::Ready(xtsync_wire::Ready { target_kernel_tls: path == TlsPath::Kernel });
    if sender.send(&ready).await.is_err() {
        return;
    }
    let (frames_tx, frames_rx) = flume::bounded::<Result<Message, FrameError>>(64);
    let reader_task = glommio::spawn_local(async move {
        loop {
            let next = read_message(&mut reader).await;
            let stop = !matches!(next, Ok(Some(_)));
            let item = match next {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(FrameError::Closed),
                Err(e) => Err(e),
            };
            if frames_tx.send_async(item).await.is_err() || stop {
                break;
            }
        }
    })
    .detach();

    ctx.metrics.sessions_target_active.fetch_add(1, Ordering::Relaxed);
    let mut session = TargetSession::new(ctx.clone(), sender.clone(), identity);
    let result = session.run(&frames_rx).await;
    ctx.metrics.sessions_target_active.fetch_sub(1, Ordering::Relaxed);
    session.abandon();
    if let Err(e) = &result {
        if matches!(e, TargetError::Frame(FrameError::Wire(_)) | TargetError::Protocol(_)) {
            ctx.metrics.sessions_refused_protocol_total.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(%peer, error = %e, "session closed");
        let _ = sender.send(&Message::Error(xtsync_wire::ErrorMsg { message: e.to_string() })).await;
    }
    drop(session);
    drop(sender);
    let _ = writer_task.await;
    drop(reader_task);
}

struct TargetSession {
    ctx: Rc<TargetContext>,
    sender: FrameSender,
    /// The peer's verified certificate identity.
    peer: Option<xtsync_transport::PeerIdentity>,
    root: Option<Arc<TargetRoot>>,
    delete: bool,
    /// Bytes of delta bases this session holds (see `crate::basis`).
    basis_held: Rc<std::cell::Cell<u64>>,
    tag: String,
    files: std::collections::HashMap<u64, OpenFile>,
    queue: VecDeque<Pending>,
    barrier: Barrier,
    /// The barrier being flushed (at most one): the session keeps receiving and writing
    /// the next batch meanwhile; its acks go out when it completes.
    flushing: Option<glommio::Task<Vec<crate::durability::Acked>>>,
    readers: LocalReaders,
    codec: ChunkCodec,
    memory: PassMemory,
    files_committed: u64,
    tmp_counter: u64,
}

impl TargetSession {
    fn new(ctx: Rc<TargetContext>, sender: FrameSender, peer: Option<xtsync_transport::PeerIdentity>) -> Self {
        TargetSession {
            ctx,
            sender,
            peer,
            root: None,
            delete: false,
            basis_held: Rc::default(),
            tag: String::new(),
            files: Default::default(),
            queue: VecDeque::new(),
            barrier: Barrier::default(),
            flushing: None,
            readers: LocalReaders::default(),
            codec: ChunkCodec::default(),
            memory: PassMemory::default(),
            files_committed: 0,
            tmp_counter: 0,
        }
    }

    fn root(&self) -> Result<&Arc<TargetRoot>, TargetError> {
        self.root.as_ref().ok_or_else(|| TargetError::Protocol("frame before Hello".into()))
    }

    async fn send(&self, msg: &Message) -> Result<(), TargetError> {
        self.sender.send(msg).await.map_err(|e| TargetError::Frame(FrameError::Io(e)))
    }

    fn next_tag(&mut self) -> String {
        self.tmp_counter += 1;
        format!("{}.{}", self.tag, self.tmp_counter)
    }

    async fn run(&mut self, frames: &flume::Receiver<Result<Message, FrameError>>) -> Result<(), TargetError> {
        match frames.recv_async().await {
            Ok(Ok(Message::Hello(h))) => self.hello(h).await?,
            Ok(Ok(other)) => return Err(TargetError::Protocol(format!("expected Hello, got {other:?}"))),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Ok(()),
        }
        let mut frames_seen = 0u64;
        loop {
            self.drain().await?;
            let next = if let Some(flushing) = self.flushing.as_mut() {
                match futures::future::select(frames.recv_async(), flushing).await {
                    futures::future::Either::Left((m, _)) => m,
                    futures::future::Either::Right((acks, _)) => {
                        self.flushing = None;
                        self.send_acks(acks).await?;
                        continue;
                    }
                }
            } else if self.barrier.is_empty() {
                frames.recv_async().await
            } else {
                let sleep = glommio::timer::sleep(BARRIER_IDLE);
                match futures::future::select(frames.recv_async(), std::pin::pin!(sleep)).await {
                    futures::future::Either::Left((m, _)) => m,
                    futures::future::Either::Right(_) => {
                        self.flush().await?;
                        continue;
                    }
                }
            };
            let msg = match next {
                Ok(Ok(m)) => m,
                // A source that closes right after Hello is trying another core; one
                // that closes after a pass is done with the session.
                Ok(Err(FrameError::Closed)) | Err(_) if frames_seen == 0 => return Ok(()),
                Ok(Err(FrameError::Closed)) | Err(_) => {
                    return Err(TargetError::Protocol("source closed the connection mid-pass".into()))
                }
                Ok(Err(e)) => return Err(e.into()),
            };
            frames_seen += 1;
            if let Message::EndOfPass(_) = msg {
                // The source may start another pass on this session (continuous
                // replication) or close it: between passes a close is clean.
                self.end_of_pass().await?;
                frames_seen = 0;
                continue;
            }
            self.handle(msg).await?;
        }
    }

    async fn hello(&mut self, h: xtsync_wire::Hello) -> Result<(), TargetError> {
        let path = Path::new(&h.target_root);
        let clean = path.is_absolute()
            && path.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)));
        if !clean {
            return Err(TargetError::Refused(format!(
                "target root {:?} must be an absolute path without `..`",
                h.target_root
            )));
        }
        let peer =
            self.peer.clone().ok_or_else(|| TargetError::Refused("the peer's certificate is unreadable".into()))?;
        let claim = SessionClaim { peer, job_id: h.job_id, target_root: h.target_root.clone() };
        self.ctx.admission.admit(claim).await.map_err(|r| TargetError::Refused(r.to_string()))?;
        let root = Arc::new(TargetRoot::open(path).map_err(|e| TargetError::Refused(e.to_string()))?);
        let tree_id = root.tree_id().map_err(|e| TargetError::Refused(e.to_string()))?;
        crate::sweep::sweep_once(&root);
        self.root = Some(root);
        self.delete = h.flags & xtsync_wire::Hello::FLAG_DELETE != 0;
        // Unique per session of this process (a resumed attempt of the same run and
        // session index must not reuse the names of the partials it resumes from).
        static SESSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SESSIONS.fetch_add(1, Ordering::Relaxed);
        self.tag = crate::sweep::session_tag(h.run_id, h.session_index, seq);
        // The low 16 bits name the executor serving the session (the source uses them
        // to spread its sessions over the target's cores).
        let session_id = h.run_id << 16 | (self.ctx.core as u64 & 0xffff);
        self.send(&Message::HelloAck(HelloAck { session_id, tree_id })).await
    }

    async fn handle(&mut self, msg: Message) -> Result<(), TargetError> {
        match msg {
            Message::Entries(e) => self.on_entries(e).await,
            Message::FileBegin(f) => self.on_file_begin(f).await,
            Message::Segment(s) => self.on_segment(s).await,
            Message::ChunkData(c) => self.on_chunk(c).await,
            Message::FileEnd(f) => {
                let file = self
                    .files
                    .get_mut(&f.file_id)
                    .ok_or_else(|| TargetError::Protocol(format!("FileEnd for unknown file {}", f.file_id)))?;
                if std::mem::replace(&mut file.ended, true) {
                    return Err(TargetError::Protocol(format!("FileEnd twice for file {}", f.file_id)));
                }
                self.queue.push_back(Pending::FileEnd { file_id: f.file_id, digest: f.digest, aborted: f.aborted });
                Ok(())
            }
            other => Err(TargetError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }

    async fn on_entries(&mut self, e: Entries) -> Result<(), TargetError> {
        let root = self.root()?.clone();
        let store = self.ctx.store.clone();
        let entries = Arc::new(e.entries);
        let for_check = entries.clone();
        // Renames are applied (and durable) before the reply that reports them.
        let applied = glommio::executor()
            .spawn_blocking(move || {
                let dirs_renamed = apply_dir_renames(&root, &for_check);
                let need = files_needing_content(&root, store.as_ref(), &for_check);
                Applied { dirs_renamed, ..apply_file_renames(&root, store.as_ref(), &for_check, need) }
            })
            .await;
        let m = &self.ctx.metrics;
        m.files_renamed_total.fetch_add(applied.renamed.len() as u64, Ordering::Relaxed);
        m.dirs_renamed_total.fetch_add(applied.dirs_renamed, Ordering::Relaxed);
        let reply = EntriesReply { batch: e.batch, need: applied.need, renamed: applied.renamed };
        self.send(&Message::EntriesReply(reply)).await?;
        let entries = Arc::try_unwrap(entries).unwrap_or_else(|a| (*a).clone());
        self.queue.push_back(Pending::Entries(entries));
        Ok(())
    }

    async fn on_file_begin(&mut self, f: FileBegin) -> Result<(), TargetError> {
        if self.files.len() >= FILES_OPEN_PER_SESSION_MAX || self.files.contains_key(&f.file_id) {
            return Err(TargetError::Protocol(format!("file {} reused or too many open files", f.file_id)));
        }
        if f.path.is_root() {
            return Err(TargetError::Protocol("a file cannot be the root".into()));
        }
        let root = self.root()?.clone();
        if let Some(digest) = f.digest {
            if self.holds_identical(&root, &f, digest).await {
                let mut file = OpenFile::new(f.path, f.meta, f.size, None, &[]);
                file.unchanged = true;
                self.files.insert(f.file_id, file);
                return Ok(());
            }
        }
        let tag = crate::sweep::temp_tag(&self.next_tag(), f.size);
        let opened = root.parent(&f.path).and_then(|(dir, name)| {
            let tmp = create_temp(dir.as_fd(), &tag)?;
            Ok((dir, name.to_vec(), tmp))
        });
        let final_abs = root.absolute(&f.path);
        let file = match opened {
            Ok((dir, name, tmp)) => OpenFile::new(f.path, f.meta, f.size, Some((dir, name, tmp)), &final_abs),
            Err(e) => {
                tracing::warn!(path = ?f.path, error = %e, "file refused");
                let mut file = OpenFile::new(f.path, f.meta, f.size, None, &[]);
                file.fail(e.to_string());
                file
            }
        };
        self.files.insert(f.file_id, file);
        Ok(())
    }

    /// Whether the target already holds exactly this file (content and metadata). A
    /// stat on the executor rules out the common case (a new path) without a store
    /// lookup; the record lookup runs off the executor.
    async fn holds_identical(&self, root: &Arc<TargetRoot>, f: &FileBegin, digest: [u8; 32]) -> bool {
        let Some((parent, name)) = f.path.split_last() else { return false };
        let exists = root
            .dir(&parent, false)
            .is_ok_and(|dir| rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok());
        if !exists {
            return false;
        }
        let entry = xtsync_wire::Entry {
            path: f.path.clone(),
            meta: f.meta.clone(),
            kind: xtsync_wire::EntryKind::File { size: f.size, digest },
            renamed_from: None,
        };
        let (root, store) = (root.clone(), self.ctx.store.clone());
        let need =
            glommio::executor().spawn_blocking(move || files_needing_content(&root, store.as_ref(), &[entry])).await;
        need.is_empty()
    }

    /// The location of a chunk whose indexed file was renamed here, if it opens.
    async fn moved(&mut self, l: ChunkLocation) -> Option<ChunkLocation> {
        let store = self.ctx.store.clone();
        let path = l.path.clone();
        let to = glommio::executor().spawn_blocking(move || moved_location(store.as_ref(), &path)).await?;
        let at = ChunkLocation { path: to, ..l };
        self.readers.get_indexed(&at).await.ok()??;
        Some(at)
    }

    async fn on_segment(&mut self, s: Segment) -> Result<(), TargetError> {
        let file = self
            .files
            .get_mut(&s.file_id)
            .filter(|f| !f.ended)
            .ok_or_else(|| TargetError::Protocol(format!("segment for unknown or ended file {}", s.file_id)))?;
        let start = file.next_offset;
        for c in &s.chunks {
            file.digest.push(&ChunkName(c.name), c.len);
        }
        let takes_data = file.error.is_none() && !file.unchanged;
        let SegmentPlan { mut sources, lookup, end_offset } =
            plan_segment(&s.chunks, start, file.size, takes_data, &mut file.placed)
                .map_err(|_| TargetError::Protocol(format!("segments of file {} exceed its size", s.file_id)))?;
        file.next_offset = end_offset;
        if !lookup.is_empty() {
            let names: Vec<[u8; 32]> = lookup.iter().map(|&i| s.chunks[i].name).collect();
            // Most segments are answered from the store's memory (new chunks by the
            // Bloom filters), here; the others need a disk read, off the executor.
            let found = match self.ctx.store.chunk_locations_in_memory(&names) {
                Ok(Some(found)) => Ok(found),
                _ => {
                    let store = self.ctx.store.clone();
                    glommio::executor().spawn_blocking(move || store.chunk_locations(&names)).await
                }
            };
            let found = found.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "chunk index lookup failed; asking the source for everything");
                vec![None; lookup.len()]
            });
            let mut stale = Vec::new();
            for (&i, loc) in lookup.iter().zip(found) {
                sources[i] = match loc {
                    // A copy in a file that is gone (a removed partial, a deleted file,
                    // a version replaced since) is asked for again, and forgotten.
                    Some(l) if l.len == s.chunks[i].len => match self.readers.get_indexed(&l).await {
                        Ok(Some(_)) => ChunkSource::Local(l),
                        Ok(None) | Err(_) => match self.moved(l).await {
                            // The file was renamed here: the chunk is at its new name.
                            Some(l) => {
                                stale.push(StoreOp::PutChunk(s.chunks[i].name, l.clone()));
                                ChunkSource::Local(l)
                            }
                            None => {
                                stale.push(StoreOp::DeleteChunk(s.chunks[i].name));
                                ChunkSource::Wire
                            }
                        },
                    },
                    _ => ChunkSource::Wire,
                };
            }
            if !stale.is_empty() {
                let store = self.ctx.store.clone();
                let _ = glommio::executor().spawn_blocking(move || store.apply(StoreBatch { ops: stale })).await;
            }
        }
        let flags: Vec<bool> = sources.iter().map(|s| matches!(s, ChunkSource::Wire)).collect();
        let basis = self.delta_basis(&s, &sources, flags.contains(&true)).await;
        let (basis, signature) = basis.map(|(b, sig)| (Rc::new(b), sig)).unzip();
        let want = Want { basis: signature, ..Want::from_flags(s.file_id, s.seg_no, &flags) };
        self.send(&Message::Want(want)).await?;
        self.queue.push_back(Pending::Segment(PendingSegment {
            file_id: s.file_id,
            seg_no: s.seg_no,
            chunks: s.chunks,
            sources,
            next: 0,
            offset: start,
            basis,
        }));
        Ok(())
    }

    /// The basis offered with a segment's `Want`, so that the source may send deltas of
    /// what it wants: a small file's previous version whole, or else the stretches of
    /// local files between the copies of the chunks around the wanted ones.
    async fn delta_basis(
        &mut self,
        s: &Segment,
        sources: &[ChunkSource],
        wants_any: bool,
    ) -> Option<(crate::basis::DeltaBasis, xtsync_wire::Basis)> {
        use crate::basis_regions::{plan, within, Slot};
        let f = self.files.get_mut(&s.file_id)?;
        let slots: Vec<Slot<'_>> = sources
            .iter()
            .zip(&s.chunks)
            .map(|(source, c)| match source {
                ChunkSource::Local(l) => Slot::Anchor { path: &l.path, offset: l.offset, len: l.len },
                ChunkSource::Wire => Slot::Wanted { len: c.len },
                ChunkSource::Zero | ChunkSource::Earlier { .. } => Slot::Other { len: c.len },
            })
            .collect();
        let (regions, anchor_end) = plan(f.anchor_end.take(), &slots);
        f.anchor_end = anchor_end;
        if !wants_any || f.error.is_some() {
            return None;
        }
        let t = f.target.as_ref()?;
        if s.seg_no == 0 {
            if let Some(whole) = crate::basis::open(t.dir.as_fd(), &t.name, &self.basis_held) {
                return Some(whole);
            }
        }
        // Only this job's own tree: a basis's signature tells the source something of
        // the bytes it describes, and other jobs' files at this worker are not its to see.
        let root = self.root.as_ref()?.path().as_os_str().as_encoded_bytes();
        let regions: Vec<_> = regions.into_iter().filter(|r| within(root, &r.path)).collect();
        if regions.is_empty() {
            return None;
        }
        crate::basis::read_regions(&mut self.readers, &regions, &self.basis_held).await
    }

    async fn on_chunk(&mut self, c: ChunkData) -> Result<(), TargetError> {
        let Some(Pending::Segment(seg)) = self.queue.front_mut() else {
            return Err(TargetError::Protocol("chunk data that nothing waits for".into()));
        };
        let expected = (seg.file_id, seg.seg_no, seg.next as u32);
        if (c.file_id, c.seg_no, c.index) != expected || !matches!(seg.sources.get(seg.next), Some(ChunkSource::Wire)) {
            return Err(TargetError::Protocol(format!(
                "chunk {}/{}/{} out of order (expected {}/{}/{})",
                c.file_id, c.seg_no, c.index, expected.0, expected.1, expected.2
            )));
        }
        let chunk = seg.chunks[seg.next];
        let offset = seg.offset;
        let basis = seg.basis.clone();
        seg.next += 1;
        seg.offset += chunk.len as u64;
        let m = &self.ctx.metrics;
        let data = match Encoding::from_u8(c.encoding) {
            _ if c.raw_len != chunk.len => Err(ChunkError::LengthDiffers),
            _ if c.encoding == xtsync_wire::DELTA_ENCODING => match &basis {
                Some(b) => crate::basis::rebuild(b, &mut self.codec, &c.data, chunk.len),
                None => Err(ChunkError::DeltaWithoutBasis),
            },
            Some(Encoding::Raw) => Ok(c.data),
            Some(enc) => {
                let mut out = Vec::with_capacity(chunk.len as usize);
                self.codec
                    .decompress(enc, &c.data, chunk.len as usize, &mut out)
                    .map(|()| out)
                    .map_err(ChunkError::from)
            }
            None => Err(ChunkError::UnknownEncoding(c.encoding)),
        };
        // Every chunk is hashed again here, and must match its name.
        let data = data.and_then(|d| {
            if ChunkName::of(&d).0 == chunk.name {
                Ok(d)
            } else {
                m.chunk_hash_mismatches_total.fetch_add(1, Ordering::Relaxed);
                Err(ChunkError::NameMismatch)
            }
        });
        m.chunks_received_total.fetch_add(1, Ordering::Relaxed);
        let file =
            self.files.get_mut(&expected.0).ok_or_else(|| TargetError::Protocol("chunk for closed file".into()))?;
        file.chunks_received += 1;
        match data {
            Ok(d) => write_chunk(file, ChunkName(chunk.name), d, offset).await,
            Err(e) => file.fail(e.to_string()),
        }
        Ok(())
    }

    /// Places every chunk and finishes every file that needs no more wire data.
    async fn drain(&mut self) -> Result<(), TargetError> {
        loop {
            match self.queue.front_mut() {
                None => return Ok(()),
                Some(Pending::Segment(seg)) => {
                    let file = self
                        .files
                        .get_mut(&seg.file_id)
                        .ok_or_else(|| TargetError::Protocol(format!("segment of closed file {}", seg.file_id)))?;
                    if !place_ready_chunks(seg, file, &mut self.readers, &self.ctx.store).await {
                        return Ok(()); // waits for chunk data from the wire
                    }
                    let start = seg.offset - seg.chunks.iter().map(|c| c.len as u64).sum::<u64>();
                    if let Some(t) = &file.target {
                        start_writeback(t, start, seg.offset - start);
                    }
                    maybe_checkpoint(file, &self.ctx.store, &self.ctx.metrics).await;
                    self.queue.pop_front();
                }
                Some(_) => match self.queue.pop_front() {
                    Some(Pending::Entries(entries)) => {
                        let tag = self.next_tag();
                        let root = self.root()?.clone();
                        apply_entries(&root, entries, &tag, self.delete, &mut self.memory);
                    }
                    Some(Pending::FileEnd { file_id, digest, aborted }) => {
                        self.finish_file(file_id, digest, aborted).await?
                    }
                    _ => {}
                },
            }
            if self.barrier.should_flush() {
                self.flush().await?;
            }
        }
    }

    async fn finish_file(&mut self, file_id: u64, digest: [u8; 32], aborted: bool) -> Result<(), TargetError> {
        let mut file = self.files.remove(&file_id).ok_or_else(|| TargetError::Protocol("FileEnd twice".into()))?;
        let verdict = file_end(FileEndFacts {
            aborted,
            covered_bytes: file.next_offset,
            size: file.size,
            digest_matches: file.digest.finish() == digest,
            unchanged: file.unchanged,
            failed_earlier: file.error.is_some(),
        });
        let (reused, received) = (file.chunks_reused, file.chunks_received);
        match verdict {
            FileEndVerdict::AlreadyInPlace => {
                // Nothing to write, nothing to sync.
                let done = FileDone { file_id, error: None, chunks_reused: 0, chunks_received: 0 };
                return self.send(&Message::FileDone(done)).await;
            }
            FileEndVerdict::Fail(Some(reason)) => file.fail(reason),
            FileEndVerdict::Fail(None) | FileEndVerdict::Commit => {}
        }
        let ready = match (file.error.take(), file.target.take()) {
            (None, Some(t)) => finalize(&t, &file).map(|record| (t, record)),
            (Some(e), t) => {
                // A checkpointed copy stays: its chunks are indexed and verified on use,
                // so the next attempt (the file changed while read, say) resumes from it.
                if file.checkpointed {
                    let final_abs = self.root()?.absolute(&file.path);
                    let obsolete = self.ctx.partials.keep(final_abs, file.temp_abs.clone(), file.checkpointed_bytes);
                    remove_partials(&obsolete);
                } else if let Some(t) = t {
                    let _ = rustix::fs::unlinkat(t.dir.as_fd(), t.tmp_name.as_str(), rustix::fs::AtFlags::empty());
                }
                Err(e)
            }
            (None, None) => Err("no temporary file".into()),
        };
        match ready {
            Ok((t, record)) => {
                let abs = self.root()?.absolute(&file.path);
                drop(t.file);
                self.barrier.push(Ready {
                    file_id,
                    dir: t.dir,
                    tmp_name: t.tmp_name,
                    name: t.name,
                    abs,
                    record,
                    written: std::mem::take(&mut file.written),
                    chunks_reused: reused,
                    chunks_received: received,
                    resumed_from: file.resumed_from.drain().collect(),
                });
                Ok(())
            }
            Err(e) => {
                tracing::debug!(path = ?file.path, error = %e, "file not committed");
                let done = FileDone { file_id, error: Some(e), chunks_reused: reused, chunks_received: received };
                self.send(&Message::FileDone(done)).await
            }
        }
    }

    /// Starts flushing the waiting files (after the flush in flight, if any, completed
    /// and its files were acknowledged).
    async fn flush(&mut self) -> Result<(), TargetError> {
        self.finish_flushing().await?;
        if self.barrier.is_empty() {
            return Ok(());
        }
        let root = self.root()?.clone();
        let dup = rustix::io::fcntl_dupfd_cloexec(root.fd(), 0)
            .map_err(|e| TargetError::Refused(format!("cannot duplicate the root fd: {e}")))?;
        // Without their list, the barrier syncs the filesystem.
        let new_dirs_parents = root.take_unsynced_parents().filter(|_| self.ctx.per_file_sync);
        let flush = self.barrier.flush(dup, self.ctx.store.clone(), self.ctx.partials.clone(), new_dirs_parents);
        self.flushing = Some(glommio::spawn_local(flush));
        Ok(())
    }

    /// Waits for the flush in flight and acknowledges its files.
    async fn finish_flushing(&mut self) -> Result<(), TargetError> {
        if let Some(flushing) = self.flushing.take() {
            let acks = flushing.await;
            self.send_acks(acks).await?;
        }
        Ok(())
    }

    async fn send_acks(&mut self, acks: Vec<crate::durability::Acked>) -> Result<(), TargetError> {
        for a in acks {
            if a.error.is_none() {
                self.files_committed += 1;
                self.ctx.metrics.files_committed_total.fetch_add(1, Ordering::Relaxed);
                self.ctx.metrics.chunks_reused_total.fetch_add(a.chunks_reused as u64, Ordering::Relaxed);
            }
            let done = FileDone {
                file_id: a.file_id,
                error: a.error,
                chunks_reused: a.chunks_reused,
                chunks_received: a.chunks_received,
            };
            self.send(&Message::FileDone(done)).await?;
        }
        Ok(())
    }

    async fn end_of_pass(&mut self) -> Result<(), TargetError> {
        self.drain().await?;
        if !self.queue.is_empty() || !self.files.is_empty() {
            return Err(TargetError::Protocol("EndOfPass while files are still open".into()));
        }
        self.flush().await?;
        self.finish_flushing().await?;
        let root = self.root()?.clone();
        let memory = std::mem::take(&mut self.memory);
        let (partials, per_file_sync) = (self.ctx.partials.clone(), self.ctx.per_file_sync);
        let removed = glommio::executor()
            .spawn_blocking(move || end_of_pass(root, memory, &partials, per_file_sync))
            .await
            .map_err(|e| TargetError::Refused(format!("end of pass: {e}")))?;
        // A kept session must not hold replaced or removed files open across passes.
        self.readers = LocalReaders::default();
        let done = PassDone {
            entries_deleted: removed.count,
            files_committed: std::mem::take(&mut self.files_committed),
            removed: removed.paths,
        };
        self.send(&Message::PassDone(done)).await
    }

    /// Removes the temporary files of a session that ended early.
    fn abandon(&mut self) {
        for (_, mut f) in self.files.drain() {
            if let Some(t) = f.target.take() {
                if f.checkpointed && f.error.is_none() {
                    // Indexed: the next attempt at this file resumes from it.
                    tracing::info!(path = ?f.path, temp = %t.tmp_name, "kept a checkpointed partial file for resumption");
                    if let Some(root) = &self.root {
                        let obsolete =
                            self.ctx.partials.keep(root.absolute(&f.path), f.temp_abs.clone(), f.checkpointed_bytes);
                        remove_partials(&obsolete);
                    }
                    continue;
                }
                let _ = rustix::fs::unlinkat(t.dir.as_fd(), t.tmp_name.as_str(), rustix::fs::AtFlags::empty());
            }
        }
        self.barrier.abandon();
    }
}
