//! The source's reply handler: reads the target's frames and answers wants with chunk
//! data (compressed by policy), turns FileDone acks into catalog versions, and feeds
//! needed and retried files back to the producer.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures_lite::AsyncRead;
use xtsync_api::FileVersion;
use xtsync_chunker::delta::{Signature, SignatureIndex};
use xtsync_chunker::{ChunkCodec, Encoding};
use xtsync_store::StoreOp;
use xtsync_wire::{chunk_data_frame_around, encode_chunk_data, FileDone, Message, Want, DELTA_ENCODING};

use crate::events::{SessionEvent, SessionStats};
use crate::state::{flush_source_records, ProducerEvent, Session, SessionError};
use crate::stream::RETRIES_MAX;
use crate::want_plan::{self, ChunkFacts, FrameSink, Route, WholeChunk};
use xtsync_link::frames::read_message;
use xtsync_link::sendfile::{FileRange, Part};
use xtsync_link::writer::SplicedFrame;
use xtsync_walk::entry_meta::FileStat;
use xtsync_walk::item::{WalkItem, WalkKind};

pub(crate) async fn handle_replies<R: AsyncRead + Unpin>(session: Rc<Session>, mut reader: R) {
    let mut codec = ChunkCodec::default();
    let result = loop {
        let msg = match read_message(&mut reader).await {
            Ok(Some(m)) => m,
            Ok(None) => break Ok(()),
            Err(e) => break Err(SessionError::Frame(e)),
        };
        let step = match msg {
            Message::EntriesReply(r) => on_entries_reply(&session, r.batch, &r.need, &r.renamed),
            Message::Want(w) => on_want(&session, w, &mut codec).await,
            Message::FileDone(d) => on_file_done(&session, d).await,
            Message::PassDone(p) => {
                let mut s = session.shared.borrow_mut();
                s.stats.entries_deleted += p.entries_deleted;
                for path in p.removed {
                    SessionStats::list(&mut s.stats.removed, path.to_string_lossy());
                }
                s.pass_done = true;
                Ok(())
            }
            Message::Error(e) => Err(SessionError::Refused(e.message)),
            other => Err(SessionError::Protocol(format!("unexpected frame {other:?}"))),
        };
        if let Err(e) = step {
            break Err(e);
        }
        let _ = session.producer_tx.send(ProducerEvent::Wake);
    };
    // Nothing will release what the producer may be waiting for (wants free segment
    // budget, FileDones free file slots): wake it with an error instead of a hang.
    session.segment_budget.close();
    session.file_budget.close();
    let _ = session.producer_tx.send(ProducerEvent::Stopped(result));
}

fn on_entries_reply(session: &Rc<Session>, batch: u32, need: &[u32], renamed: &[u32]) -> Result<(), SessionError> {
    let mut files = session
        .shared
        .borrow_mut()
        .batches
        .remove(&batch)
        .ok_or_else(|| SessionError::Protocol(format!("reply to unknown batch {batch}")))?;
    for i in need {
        let item = files.remove(i).ok_or_else(|| SessionError::Protocol(format!("need for non-file entry {i}")))?;
        SessionStats::list(&mut session.shared.borrow_mut().stats.differed, item.path.to_string_lossy());
        let _ = session.producer_tx.send(ProducerEvent::Need(item));
    }
    for i in renamed {
        let item = files.remove(i).ok_or_else(|| SessionError::Protocol(format!("rename of non-file entry {i}")))?;
        let WalkKind::File { stat, cached_digest: Some(digest) } = item.kind else {
            return Err(SessionError::Protocol(format!("rename of entry {i} without a digest")));
        };
        // Durable at the target: a new version at this path, like a transferred file.
        let version = file_version(&item, stat.size, digest);
        let mut s = session.shared.borrow_mut();
        s.stats.files_renamed += 1;
        let key = item.abs.as_os_str().as_encoded_bytes().to_vec();
        s.source_records.push(StoreOp::PutSource(key, stat.record(digest)));
        let _ = session.events.send(SessionEvent::Committed(version));
    }
    session.shared.borrow_mut().stats.files_unchanged += files.len() as u64;
    if !files.is_empty() {
        let bytes =
            files.values().map(|item| if let WalkKind::File { stat, .. } = &item.kind { stat.size } else { 0 }).sum();
        let unchanged = xtsync_walk::backlog::Backlog { files: files.len() as u64, bytes };
        let _ = session.events.send(SessionEvent::Unchanged(unchanged));
    }
    Ok(())
}

fn file_version(item: &WalkItem, size: u64, digest: [u8; 32]) -> FileVersion {
    FileVersion {
        path: item.path.to_string_lossy(),
        size,
        mtime_ns: item.meta.mtime_s * 1_000_000_000 + item.meta.mtime_ns as i64,
        mode: item.meta.mode,
        uid: item.meta.uid,
        gid: item.meta.gid,
        content_digest: blake3::Hash::from_bytes(digest).to_hex().to_string(),
    }
}

async fn on_want(session: &Rc<Session>, mut w: Want, codec: &mut ChunkCodec) -> Result<(), SessionError> {
    let seg = session
        .shared
        .borrow_mut()
        .segments
        .remove(&(w.file_id, w.seg_no))
        .ok_or_else(|| SessionError::Protocol(format!("want for unknown segment {}/{}", w.file_id, w.seg_no)))?;
    let p = &session.params;
    // On a kernel-TLS session raw chunks go from the file, if it is still the file that
    // was hashed; otherwise from the bytes kept. Without kept bytes the file is all
    // there is: a change the stat missed makes the target's hash check fail the file,
    // which is then read and sent again.
    let from_file = seg.file.as_ref().filter(|f| !seg.bytes_kept || f.unchanged());
    let (acknowledged_before, retried, mut probe) = {
        let shared = session.shared.borrow();
        let file = shared.files.get(&w.file_id);
        (
            file.is_some_and(|f| f.acknowledged_before()),
            file.is_some_and(|f| f.item.retries > 0),
            file.map(|f| f.compress_probe).unwrap_or_default(),
        )
    };
    let basis = w
        .basis
        .take()
        .filter(|_| want_plan::delta_basis_usable(p.compression, retried, seg.bytes_kept))
        .map(|b| Signature { block_bytes: b.block_bytes, blocks: b.blocks });
    let basis = basis.as_ref().map(SignatureIndex::new);
    let sink = want_plan::frame_sink(seg.file.is_some());
    let mut delta_encoded = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    let mut encoded = Vec::new();
    let (mut sent, mut total) = (0u64, 0u64);
    for (index, span) in seg.chunks.iter().enumerate() {
        if !w.wants(index) {
            continue;
        }
        if span.bytes == 0 {
            return Err(SessionError::Protocol(format!("want for zero chunk {index} of file {}", w.file_id)));
        }
        let raw_range = span.data_at as usize..(span.data_at + span.bytes) as usize;
        let raw = seg.bytes_kept.then(|| &seg.bytes.data[raw_range.clone()]);
        let (file_id, seg_no, at) = (w.file_id, w.seg_no, index as u32);
        let (mut delta_bytes, mut mostly_copies) = (None, false);
        if let (Some(sig), Some(raw)) = (&basis, raw) {
            let (delta_ops, literal_bytes) = sig.encode(raw);
            if want_plan::delta_worth_encoding(literal_bytes, raw.len()) {
                codec.compress(&delta_ops, p.compression_level, false, &mut delta_encoded);
                delta_bytes = Some(delta_encoded.len());
                mostly_copies = want_plan::mostly_copies(literal_bytes, raw.len());
            }
        }
        let encoding =
            match (want_plan::whole_chunk(p.compression, raw.is_some(), mostly_copies, probe.should_try()), raw) {
                (WholeChunk::Compress { give_up_if_incompressible }, Some(raw)) => {
                    let encoding = codec.compress(raw, p.compression_level, give_up_if_incompressible, &mut encoded);
                    if give_up_if_incompressible {
                        probe.observe(encoding);
                    }
                    encoding
                }
                _ => Encoding::Raw,
            };
        let whole_bytes = match (encoding, raw) {
            (Encoding::Raw, Some(raw)) => raw.len(),
            (Encoding::Raw, None) => span.bytes as usize,
            _ => encoded.len(),
        };
        let facts = ChunkFacts {
            delta_bytes,
            whole_bytes,
            whole_is_raw: encoding == Encoding::Raw,
            have_bytes: raw.is_some(),
            file_readable: from_file.is_some(),
            kernel_session: seg.file.is_some(),
        };
        // Bytes are dropped only where the file is kept (see `stream_file`).
        let nothing = || SessionError::Protocol(format!("no bytes and no file for chunk {index} of file {file_id}"));
        match (want_plan::route(facts).map_err(|_| nothing())?, from_file, raw) {
            (Route::Delta, _, _) => {
                let mut frame = Vec::new();
                encode_chunk_data(&mut frame, file_id, seg_no, at, DELTA_ENCODING, span.bytes, &delta_encoded);
                send_frame(session, sink, &mut parts, frame).await?;
                p.metrics.chunks_sent_as_delta_total.fetch_add(1, Ordering::Relaxed);
            }
            (Route::RawFromFile, Some(file), _) => {
                let (head, tail) =
                    chunk_data_frame_around(file_id, seg_no, at, Encoding::Raw as u8, span.bytes, span.bytes);
                push_bytes(&mut parts, head.to_vec());
                parts.push(Part::File(FileRange { file: file.fd.clone(), offset: span.file_at, bytes: span.bytes }));
                push_bytes(&mut parts, tail.to_vec());
            }
            (Route::RawSpliced, _, Some(_)) => {
                // Written from the bytes that were hashed, with no frame copy between
                // (TLS encryption, or the kernel's, reads them there).
                let (head, tail) =
                    chunk_data_frame_around(file_id, seg_no, at, Encoding::Raw as u8, span.bytes, span.bytes);
                let frame = SplicedFrame {
                    head: head.to_vec(),
                    body: seg.bytes.clone(),
                    range: raw_range,
                    tail: tail.to_vec(),
                };
                session.sender.send_spliced(frame).await.map_err(|e| SessionError::Connection(e.to_string()))?;
            }
            (Route::Frame, _, Some(raw)) => {
                let body = if encoding == Encoding::Raw { raw } else { &encoded[..] };
                let mut frame = Vec::new();
                encode_chunk_data(&mut frame, file_id, seg_no, at, encoding as u8, span.bytes, body);
                send_frame(session, sink, &mut parts, frame).await?;
            }
            // `route` chose these only with their file or bytes at hand.
            (Route::RawFromFile | Route::RawSpliced | Route::Frame, _, _) => return Err(nothing()),
        }
        sent += 1;
        total += span.bytes as u64;
    }
    if !parts.is_empty() {
        session.sender.send_parts(parts).await.map_err(|e| SessionError::Connection(e.to_string()))?;
    }
    let mut s = session.shared.borrow_mut();
    if let Some(f) = s.files.get_mut(&w.file_id) {
        f.compress_probe = probe;
    }
    s.stats.chunks_sent += sent;
    p.metrics.chunks_sent_total.fetch_add(sent, Ordering::Relaxed);
    if acknowledged_before && sent > 0 {
        let path = s.files.get(&w.file_id).map(|f| f.item.path.to_string_lossy()).unwrap_or_default();
        tracing::warn!(path, chunks = sent, "the target wants chunks of a version it had acknowledged: sending again");
        s.stats.chunks_resent_acknowledged += sent;
        p.metrics.chunks_resent_acknowledged_total.fetch_add(sent, Ordering::Relaxed);
    }
    p.metrics.chunk_bytes_sent_total.fetch_add(total, Ordering::Relaxed);
    Ok(())
}

/// A frame of its own, where `sink` says.
async fn send_frame(
    session: &Rc<Session>,
    sink: FrameSink,
    parts: &mut Vec<Part>,
    frame: Vec<u8>,
) -> Result<(), SessionError> {
    match sink {
        FrameSink::WithFileSends => {
            push_bytes(parts, frame);
            Ok(())
        }
        FrameSink::Direct => {
            session.sender.send_encoded(frame).await.map_err(|e| SessionError::Connection(e.to_string()))
        }
    }
}

/// Appends frame bytes: small ones join the previous bytes part (one send for a
/// trailer and the next header), large ones stay in their own buffer.
fn push_bytes(parts: &mut Vec<Part>, bytes: Vec<u8>) {
    match parts.last_mut() {
        Some(Part::Bytes(last)) if bytes.len() < 16 << 10 => last.extend_from_slice(&bytes),
        _ => parts.push(Part::Bytes(bytes)),
    }
}

async fn on_file_done(session: &Rc<Session>, d: FileDone) -> Result<(), SessionError> {
    let f = session
        .shared
        .borrow_mut()
        .files
        .remove(&d.file_id)
        .ok_or_else(|| SessionError::Protocol(format!("FileDone for unknown file {}", d.file_id)))?;
    let WalkKind::File { stat, cached_digest } = f.item.kind else {
        return Err(SessionError::Protocol("FileDone for a non-file".into()));
    };
    match (d.error, f.digest) {
        (None, Some(digest)) => {
            let version = file_version(&f.item, stat.size, digest);
            let flush = {
                let mut s = session.shared.borrow_mut();
                s.stats.files_transferred += 1;
                s.stats.chunks_reused += d.chunks_reused as u64;
                // A file read because its record did not match (a need was listed when
                // the target asked): it differed if the target wrote anything for it.
                if cached_digest.is_none() && (d.chunks_received + d.chunks_reused > 0 || stat.size == 0) {
                    SessionStats::list(&mut s.stats.differed, f.item.path.to_string_lossy());
                }
                let key = f.item.abs.as_os_str().as_encoded_bytes().to_vec();
                s.source_records.push(StoreOp::PutSource(key, stat.record(digest)));
                s.source_records.len() >= 512
            };
            if flush {
                flush_source_records(session).await;
            }
            let _ = session.events.send(SessionEvent::Committed(version));
        }
        (error, _) => {
            let error = error.unwrap_or_else(|| "changed while being read".into());
            let mut item = f.item;
            if item.retries < RETRIES_MAX {
                // Stat again: the retry must describe the file as it is now.
                item.retries += 1;
                match std::fs::symlink_metadata(&item.abs) {
                    Ok(m) if m.is_file() => {
                        // Unchanged since the walk: still the version the record names
                        // (the target lost it, or its copy was not what the index said).
                        let now = FileStat::of(&m);
                        let cached_digest = cached_digest.filter(|_| now == stat);
                        item.kind = WalkKind::File { stat: now, cached_digest };
                        item.meta = xtsync_walk::entry_meta::meta_of(&m, item.meta.xattrs.clone());
                        tracing::debug!(path = ?item.path, %error, "sending again");
                        let _ = session.producer_tx.send(ProducerEvent::Need(item));
                        return Ok(());
                    }
                    _ => {}
                }
            }
            tracing::warn!(path = ?item.path, %error, "file not replicated in this pass");
            session.shared.borrow_mut().stats.files_failed += 1;
            let _ = session.events.send(SessionEvent::FileFailed { path: item.path.to_string_lossy(), error });
        }
    }
    Ok(())
}
