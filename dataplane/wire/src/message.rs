//! Message types and their payload encoding. The conversation of one session:
//!
//! ```text
//! source                                   target
//!       ◄───────────────────────────────── Ready (the target speaks first)
//! Hello ─────────────────────────────────► (checks root, job)
//!       ◄───────────────────────────────── HelloAck
//! Entries{dirs, links, known files, ──────► renames applied (durable), then
//!         renamed_from}                    EntriesReply{which files need content,
//!                                          which were renamed into place}
//! FileBegin, Segment{chunk names} ───────► (looks chunks up locally)
//!       ◄───────────────────────────────── Want{bitmap of missing chunks}
//! ChunkData (only the wanted ones) ──────► re-hash, write, assemble
//! FileEnd{digest} ───────────────────────► fsync barrier, rename
//!       ◄───────────────────────────────── FileDone
//! EndOfPass ─────────────────────────────► deletions, final fsync
//!       ◄───────────────────────────────── PassDone
//! (Entries … EndOfPass again: the next pass on the same session, or close)
//! ```
//! A continuous job keeps its session and runs one pass per batch of changes on it.
//! Everything is pipelined: the source never waits for an answer before sending the
//! next frame, within the bounds of its in-flight window.

use crate::codec::*;
use crate::frame::{encode_frame, FRAME_HEADER_BYTES};
use crate::kind;
use crate::path::{RelPath, PATH_BYTES_MAX};
use crate::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub job_id: u64,
    pub run_id: u64,
    pub session_index: u16,
    pub session_count: u16,
    /// Absolute path of the job's root at the target.
    pub target_root: String,
    pub flags: u32,
}

impl Hello {
    /// Propagate deletions.
    pub const FLAG_DELETE: u32 = 1;
}

/// The target's first frame after the TLS handshake. The source sends nothing before
/// it, so neither side's TLS library can have read application data past the
/// handshake: each side may hand its session keys to the kernel (kTLS) safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// The target encrypts and decrypts this session in the kernel (informational).
    pub target_kernel_tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloAck {
    pub session_id: u64,
    /// Names the target tree the session writes: its root directory's device, inode
    /// and birth time, hashed. A source that finds the same id as when its target last
    /// acknowledged entries may trust those acknowledgements; a new id (the root was
    /// removed and made again, another filesystem) means it must send everything.
    pub tree_id: [u8; 32],
}

/// Metadata of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// Permission bits (the low 12 bits of st_mode).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// `user.*` extended attributes: (name, value).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory; `children` lists every name in it when deletions propagate.
    Dir {
        children: Option<Vec<Vec<u8>>>,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Another name of a file already sent in this pass.
    HardLink {
        to: RelPath,
    },
    /// A file whose content digest the source knows without reading it.
    File {
        size: u64,
        digest: [u8; 32],
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub meta: Meta,
    pub kind: EntryKind,
    /// This file or directory is the one that was at `renamed_from` (a rename or move
    /// at the source): the target renames its copy instead of receiving or copying
    /// the content, if that copy is still exactly the announced version. Only on
    /// `File` and non-root `Dir` entries, never equal to `path`.
    pub renamed_from: Option<RelPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entries {
    pub batch: u32,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntriesReply {
    pub batch: u32,
    /// Indices of `File` entries whose content the target does not hold.
    pub need: Vec<u32>,
    /// Indices of `File` entries the target now holds by renaming its copy at their
    /// `renamed_from` path (durable before this reply was sent).
    pub renamed: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBegin {
    pub file_id: u64,
    pub path: RelPath,
    pub meta: Meta,
    pub size: u64,
    /// The content digest when the source knows it before sending the manifest (files
    /// of one segment): a target that holds exactly this file skips assembling it.
    pub digest: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub name: [u8; 32],
    pub len: u32,
    /// All bytes zero: the target leaves a hole and never asks for it.
    pub zero: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub file_id: u64,
    pub seg_no: u32,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub file_id: u64,
    pub seg_no: u32,
    /// Bit i (LSB first) set = send chunk i of the segment.
    pub bitmap: Vec<u8>,
    /// The previous version of the file that the target holds, block by block: the
    /// source may send wanted chunks as deltas against it (`ChunkData` with
    /// [`DELTA_ENCODING`]). An optional tail on the wire.
    pub basis: Option<Basis>,
}

/// A target's copy of a file as a delta basis: per whole block of `block_bytes`, a
/// rolling checksum and a strong hash (`xtsync_chunker::delta::Signature`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    pub block_bytes: u32,
    pub blocks: Vec<(u32, u32)>,
}

/// Blocks a basis may describe at most.
pub const BASIS_BLOCKS_MAX: usize = 64 << 10;

/// `ChunkData::encoding` of a chunk sent as a zstd-compressed delta against the
/// segment's basis (`Want::basis`).
pub const DELTA_ENCODING: u8 = 0x80;

impl Want {
    pub fn wants(&self, i: usize) -> bool {
        self.bitmap.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }
    pub fn from_flags(file_id: u64, seg_no: u32, flags: &[bool]) -> Want {
        let mut bitmap = vec![0u8; flags.len().div_ceil(8)];
        for (i, _) in flags.iter().enumerate().filter(|(_, &f)| f) {
            bitmap[i / 8] |= 1 << (i % 8);
        }
        Want { file_id, seg_no, bitmap, basis: None }
    }
}

/// One chunk's bytes. Encoded with the data first and a fixed trailer last, so the
/// receiver can keep the frame buffer as the chunk buffer (truncate, no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkData {
    pub file_id: u64,
    pub seg_no: u32,
    pub index: u32,
    pub encoding: u8,
    pub raw_len: u32,
    pub data: Vec<u8>,
}

const CHUNK_TRAILER_BYTES: usize = 8 + 4 + 4 + 1 + 4;

/// Appends a whole ChunkData frame whose data is borrowed: the chunk bytes are copied
/// once, straight from where they were hashed into the frame.
pub fn encode_chunk_data(
    out: &mut Vec<u8>,
    file_id: u64,
    seg_no: u32,
    index: u32,
    encoding: u8,
    raw_len: u32,
    data: &[u8],
) {
    let at = out.len();
    out.reserve(FRAME_HEADER_BYTES + data.len() + CHUNK_TRAILER_BYTES);
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.extend_from_slice(data);
    put_u64(out, file_id);
    put_u32(out, seg_no);
    put_u32(out, index);
    put_u8(out, encoding);
    put_u32(out, raw_len);
    encode_frame(out, at, kind::CHUNK_DATA);
}

/// The bytes before and after a ChunkData frame's body, for a sender that writes the
/// body itself (the kernel, with `sendfile` from the file): `head`, then `body_bytes`
/// of chunk data, then `tail` make exactly the frame `encode_chunk_data` makes.
pub fn chunk_data_frame_around(
    file_id: u64,
    seg_no: u32,
    index: u32,
    encoding: u8,
    raw_len: u32,
    body_bytes: u32,
) -> ([u8; FRAME_HEADER_BYTES], [u8; CHUNK_TRAILER_BYTES]) {
    let mut tail = Vec::with_capacity(CHUNK_TRAILER_BYTES);
    put_u64(&mut tail, file_id);
    put_u32(&mut tail, seg_no);
    put_u32(&mut tail, index);
    put_u8(&mut tail, encoding);
    put_u32(&mut tail, raw_len);
    let mut head = [0u8; FRAME_HEADER_BYTES];
    head[0] = crate::PROTOCOL_VERSION;
    head[1] = kind::CHUNK_DATA;
    head[4..8].copy_from_slice(&(body_bytes + CHUNK_TRAILER_BYTES as u32).to_le_bytes());
    let mut trailer = [0u8; CHUNK_TRAILER_BYTES];
    trailer.copy_from_slice(&tail);
    (head, trailer)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEnd {
    pub file_id: u64,
    pub digest: [u8; 32],
    /// The source saw the file change while reading it: drop this version.
    pub aborted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDone {
    pub file_id: u64,
    /// `None` = durable at the target; `Some(reason)` = not written (old version kept).
    pub error: Option<String>,
    pub chunks_reused: u32,
    pub chunks_received: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfPass {
    pub files: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassDone {
    pub entries_deleted: u64,
    pub files_committed: u64,
    /// What the target removed, for a reconcile's report: at most
    /// [`PASS_DONE_REMOVED_MAX`] paths (`entries_deleted` counts them all). An optional
    /// tail on the wire: a PassDone without it decodes with an empty list.
    pub removed: Vec<RelPath>,
}

/// Removed paths a PassDone names at most.
pub const PASS_DONE_REMOVED_MAX: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorMsg {
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Ready(Ready),
    Hello(Hello),
    HelloAck(HelloAck),
    Entries(Entries),
    EntriesReply(EntriesReply),
    FileBegin(FileBegin),
    Segment(Segment),
    Want(Want),
    ChunkData(ChunkData),
    FileEnd(FileEnd),
    FileDone(FileDone),
    EndOfPass(EndOfPass),
    PassDone(PassDone),
    Error(ErrorMsg),
}

const MESSAGE_BYTES_MAX: usize = 64 * 1024;

fn put_path(out: &mut Vec<u8>, p: &RelPath) {
    put_bytes(out, p.as_bytes());
}

fn read_path(r: &mut Reader<'_>, what: &'static str) -> Result<RelPath, WireError> {
    RelPath::new(r.bytes(what, PATH_BYTES_MAX)?.to_vec())
}

fn put_meta(out: &mut Vec<u8>, m: &Meta) {
    put_u32(out, m.mode);
    put_u32(out, m.uid);
    put_u32(out, m.gid);
    put_u64(out, m.mtime_s as u64);
    put_u32(out, m.mtime_ns);
    put_u32(out, m.xattrs.len() as u32);
    for (k, v) in &m.xattrs {
        put_bytes(out, k);
        put_bytes(out, v);
    }
}

fn read_meta(r: &mut Reader<'_>) -> Result<Meta, WireError> {
    let mode = r.u32("meta.mode")?;
    let uid = r.u32("meta.uid")?;
    let gid = r.u32("meta.gid")?;
    let mtime_s = r.i64("meta.mtime_s")?;
    let mtime_ns = r.u32("meta.mtime_ns")?;
    if mtime_ns >= 1_000_000_000 {
        return Err(WireError::Invalid("meta.mtime_ns"));
    }
    let n = r.count("meta.xattrs", XATTRS_PER_ENTRY_MAX, 8)?;
    let mut xattrs = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.bytes("xattr name", 255)?.to_vec();
        let v = r.bytes("xattr value", XATTR_VALUE_BYTES_MAX)?.to_vec();
        xattrs.push((k, v));
    }
    Ok(Meta { mode, uid, gid, mtime_s, mtime_ns, xattrs })
}

fn put_entry(out: &mut Vec<u8>, e: &Entry) {
    put_path(out, &e.path);
    put_meta(out, &e.meta);
    match &e.kind {
        EntryKind::Dir { children } => {
            put_u8(out, 0);
            match children {
                None => put_u8(out, 0),
                Some(names) => {
                    put_u8(out, 1);
                    put_u32(out, names.len() as u32);
                    for n in names {
                        put_bytes(out, n);
                    }
                }
            }
        }
        EntryKind::Symlink { target } => {
            put_u8(out, 1);
            put_bytes(out, target);
        }
        EntryKind::HardLink { to } => {
            put_u8(out, 2);
            put_path(out, to);
        }
        EntryKind::File { size, digest } => {
            put_u8(out, 3);
            put_u64(out, *size);
            out.extend_from_slice(digest);
        }
    }
    match &e.renamed_from {
        None => put_u8(out, 0),
        Some(from) => {
            put_u8(out, 1);
            put_path(out, from);
        }
    }
}

fn read_entry(r: &mut Reader<'_>) -> Result<Entry, WireError> {
    let path = read_path(r, "entry.path")?;
    let meta = read_meta(r)?;
    let kind = match r.u8("entry.kind")? {
        0 => match r.u8("dir.children flag")? {
            0 => EntryKind::Dir { children: None },
            1 => {
                let n = r.count("dir.children", DIR_CHILDREN_MAX, 4)?;
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.bytes("dir child", crate::PATH_COMPONENT_BYTES_MAX)?;
                    // A child name is one component: reuse the path rules.
                    if name.contains(&b'/') || RelPath::new(name.to_vec()).is_err() || name.is_empty() {
                        return Err(WireError::Invalid("dir child name"));
                    }
                    names.push(name.to_vec());
                }
                EntryKind::Dir { children: Some(names) }
            }
            _ => return Err(WireError::Invalid("dir.children flag")),
        },
        1 => EntryKind::Symlink { target: r.bytes("symlink.target", PATH_BYTES_MAX)?.to_vec() },
        2 => EntryKind::HardLink { to: read_path(r, "hardlink.to")? },
        3 => EntryKind::File { size: r.u64("file.size")?, digest: r.hash("file.digest")? },
        _ => return Err(WireError::Invalid("entry.kind")),
    };
    if path.is_root() && !matches!(kind, EntryKind::Dir { .. }) {
        return Err(WireError::Path { path: String::new(), reason: "only a directory may be the root" });
    }
    let renamed_from = match r.u8("entry.renamed_from flag")? {
        0 => None,
        1 => {
            let from = read_path(r, "entry.renamed_from")?;
            let renamable = matches!(kind, EntryKind::File { .. } | EntryKind::Dir { .. });
            if !renamable || path.is_root() || from.is_root() || from == path {
                return Err(WireError::Invalid("entry.renamed_from"));
            }
            Some(from)
        }
        _ => return Err(WireError::Invalid("entry.renamed_from flag")),
    };
    Ok(Entry { path, meta, kind, renamed_from })
}

impl Message {
    fn kind(&self) -> u8 {
        match self {
            Message::Ready(_) => kind::READY,
            Message::Hello(_) => kind::HELLO,
            Message::HelloAck(_) => kind::HELLO_ACK,
            Message::Entries(_) => kind::ENTRIES,
            Message::EntriesReply(_) => kind::ENTRIES_REPLY,
            Message::FileBegin(_) => kind::FILE_BEGIN,
            Message::Segment(_) => kind::SEGMENT,
            Message::Want(_) => kind::WANT,
            Message::ChunkData(_) => kind::CHUNK_DATA,
            Message::FileEnd(_) => kind::FILE_END,
            Message::FileDone(_) => kind::FILE_DONE,
            Message::EndOfPass(_) => kind::END_OF_PASS,
            Message::PassDone(_) => kind::PASS_DONE,
            Message::Error(_) => kind::ERROR,
        }
    }

    /// Appends the whole frame (header and payload) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        match self {
            Message::Ready(r) => out.push(u8::from(r.target_kernel_tls)),
            Message::Hello(h) => {
                put_u64(out, h.job_id);
                put_u64(out, h.run_id);
                put_u16(out, h.session_index);
                put_u16(out, h.session_count);
                put_bytes(out, h.target_root.as_bytes());
                put_u32(out, h.flags);
            }
            Message::HelloAck(a) => {
                put_u64(out, a.session_id);
                out.extend_from_slice(&a.tree_id);
            }
            Message::Entries(e) => {
                put_u32(out, e.batch);
                put_u32(out, e.entries.len() as u32);
                for entry in &e.entries {
                    put_entry(out, entry);
                }
            }
            Message::EntriesReply(r) => {
                put_u32(out, r.batch);
                for list in [&r.need, &r.renamed] {
                    put_u32(out, list.len() as u32);
                    for i in list {
                        put_u32(out, *i);
                    }
                }
            }
            Message::FileBegin(f) => {
                put_u64(out, f.file_id);
                put_path(out, &f.path);
                put_meta(out, &f.meta);
                put_u64(out, f.size);
                match &f.digest {
                    None => put_u8(out, 0),
                    Some(d) => {
                        put_u8(out, 1);
                        out.extend_from_slice(d);
                    }
                }
            }
            Message::Segment(s) => {
                put_u64(out, s.file_id);
                put_u32(out, s.seg_no);
                put_u32(out, s.chunks.len() as u32);
                for c in &s.chunks {
                    out.extend_from_slice(&c.name);
                    put_u32(out, c.len);
                    put_u8(out, c.zero as u8);
                }
            }
            Message::Want(w) => {
                put_u64(out, w.file_id);
                put_u32(out, w.seg_no);
                put_bytes(out, &w.bitmap);
                if let Some(b) = &w.basis {
                    put_u32(out, b.block_bytes);
                    put_u32(out, b.blocks.len() as u32);
                    for (weak, strong) in &b.blocks {
                        put_u32(out, *weak);
                        put_u32(out, *strong);
                    }
                }
            }
            Message::ChunkData(c) => {
                out.extend_from_slice(&c.data);
                put_u64(out, c.file_id);
                put_u32(out, c.seg_no);
                put_u32(out, c.index);
                put_u8(out, c.encoding);
                put_u32(out, c.raw_len);
            }
            Message::FileEnd(f) => {
                put_u64(out, f.file_id);
                out.extend_from_slice(&f.digest);
                put_u8(out, f.aborted as u8);
            }
            Message::FileDone(d) => {
                put_u64(out, d.file_id);
                put_u32(out, d.chunks_reused);
                put_u32(out, d.chunks_received);
                match &d.error {
                    None => put_u8(out, 0),
                    Some(e) => {
                        put_u8(out, 1);
                        put_bytes(out, &e.as_bytes()[..e.len().min(MESSAGE_BYTES_MAX)]);
                    }
                }
            }
            Message::EndOfPass(e) => put_u64(out, e.files),
            Message::PassDone(p) => {
                put_u64(out, p.entries_deleted);
                put_u64(out, p.files_committed);
                if !p.removed.is_empty() {
                    let removed = &p.removed[..p.removed.len().min(PASS_DONE_REMOVED_MAX)];
                    put_u32(out, removed.len() as u32);
                    for path in removed {
                        put_path(out, path);
                    }
                }
            }
            Message::Error(e) => put_bytes(out, &e.message.as_bytes()[..e.message.len().min(MESSAGE_BYTES_MAX)]),
        }
        encode_frame(out, at, self.kind());
    }

    /// Decodes one payload of the given kind. Takes ownership so that chunk data keeps
    /// the frame's buffer.
    pub fn decode(kind: u8, mut payload: Vec<u8>) -> Result<Message, WireError> {
        if kind == kind::COMPRESSED {
            // Never nested: the inner kind is neither compressed nor chunk data.
            let (inner, raw) = crate::compressed::decompress_payload(&payload)?;
            return Message::decode(inner, raw);
        }
        if kind == kind::CHUNK_DATA {
            return decode_chunk_data(payload);
        }
        let mut r = Reader::new(&payload);
        let msg = match kind {
            kind::READY => Message::Ready(Ready { target_kernel_tls: r.bool("ready.target_kernel_tls")? }),
            kind::HELLO => Message::Hello(Hello {
                job_id: r.u64("hello.job_id")?,
                run_id: r.u64("hello.run_id")?,
                session_index: r.u16("hello.session_index")?,
                session_count: r.u16("hello.session_count")?,
                target_root: r.string("hello.target_root", PATH_BYTES_MAX)?,
                flags: r.u32("hello.flags")?,
            }),
            kind::HELLO_ACK => Message::HelloAck(HelloAck {
                session_id: r.u64("hello_ack.session_id")?,
                tree_id: r.hash("hello_ack.tree_id")?,
            }),
            kind::ENTRIES => {
                let batch = r.u32("entries.batch")?;
                let n = r.count("entries", ENTRIES_PER_BATCH_MAX, 31)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    entries.push(read_entry(&mut r)?);
                }
                Message::Entries(Entries { batch, entries })
            }
            kind::ENTRIES_REPLY => {
                let batch = r.u32("entries_reply.batch")?;
                let n = r.count("entries_reply.need", ENTRIES_PER_BATCH_MAX, 4)?;
                let need = (0..n).map(|_| r.u32("need index")).collect::<Result<_, _>>()?;
                let n = r.count("entries_reply.renamed", ENTRIES_PER_BATCH_MAX, 4)?;
                let renamed = (0..n).map(|_| r.u32("renamed index")).collect::<Result<_, _>>()?;
                Message::EntriesReply(EntriesReply { batch, need, renamed })
            }
            kind::FILE_BEGIN => Message::FileBegin(FileBegin {
                file_id: r.u64("file_begin.file_id")?,
                path: read_path(&mut r, "file_begin.path")?,
                meta: read_meta(&mut r)?,
                size: r.u64("file_begin.size")?,
                digest: match r.u8("file_begin.digest flag")? {
                    0 => None,
                    1 => Some(r.hash("file_begin.digest")?),
                    _ => return Err(WireError::Invalid("file_begin.digest flag")),
                },
            }),
            kind::SEGMENT => {
                let file_id = r.u64("segment.file_id")?;
                let seg_no = r.u32("segment.seg_no")?;
                let n = r.count("segment.chunks", CHUNKS_PER_SEGMENT_MAX, 37)?;
                let mut chunks = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.hash("chunk.name")?;
                    let len = r.u32("chunk.len")?;
                    if len == 0 || len > 16 << 20 {
                        return Err(WireError::Invalid("chunk.len"));
                    }
                    let zero = match r.u8("chunk.zero")? {
                        0 => false,
                        1 => true,
                        _ => return Err(WireError::Invalid("chunk.zero")),
                    };
                    chunks.push(ChunkRef { name, len, zero });
                }
                Message::Segment(Segment { file_id, seg_no, chunks })
            }
            kind::WANT => {
                let file_id = r.u64("want.file_id")?;
                let seg_no = r.u32("want.seg_no")?;
                let bitmap = r.bytes("want.bitmap", CHUNKS_PER_SEGMENT_MAX / 8)?.to_vec();
                let basis = if r.remaining() == 0 {
                    None
                } else {
                    let block_bytes = r.u32("want.basis.block_bytes")?;
                    if block_bytes == 0 {
                        return Err(WireError::Invalid("want.basis.block_bytes"));
                    }
                    let n = r.count("want.basis.blocks", BASIS_BLOCKS_MAX, 8)?;
                    let mut blocks = Vec::with_capacity(n);
                    for _ in 0..n {
                        blocks.push((r.u32("want.basis.weak")?, r.u32("want.basis.strong")?));
                    }
                    Some(Basis { block_bytes, blocks })
                };
                Message::Want(Want { file_id, seg_no, bitmap, basis })
            }
            kind::FILE_END => Message::FileEnd(FileEnd {
                file_id: r.u64("file_end.file_id")?,
                digest: r.hash("file_end.digest")?,
                aborted: match r.u8("file_end.aborted")? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::Invalid("file_end.aborted")),
                },
            }),
            kind::FILE_DONE => {
                let file_id = r.u64("file_done.file_id")?;
                let chunks_reused = r.u32("file_done.chunks_reused")?;
                let chunks_received = r.u32("file_done.chunks_received")?;
                let error = match r.u8("file_done.flag")? {
                    0 => None,
                    1 => Some(r.string("file_done.error", MESSAGE_BYTES_MAX)?),
                    _ => return Err(WireError::Invalid("file_done.flag")),
                };
                Message::FileDone(FileDone { file_id, error, chunks_reused, chunks_received })
            }
            kind::END_OF_PASS => Message::EndOfPass(EndOfPass { files: r.u64("end_of_pass.files")? }),
            kind::PASS_DONE => {
                let entries_deleted = r.u64("pass_done.entries_deleted")?;
                let files_committed = r.u64("pass_done.files_committed")?;
                let mut removed = Vec::new();
                if r.remaining() > 0 {
                    let n = r.count("pass_done.removed", PASS_DONE_REMOVED_MAX, 4)?;
                    removed.reserve(n);
                    for _ in 0..n {
                        removed.push(read_path(&mut r, "pass_done.removed")?);
                    }
                }
                Message::PassDone(PassDone { entries_deleted, files_committed, removed })
            }
            kind::ERROR => Message::Error(ErrorMsg { message: r.string("error.message", MESSAGE_BYTES_MAX)? }),
            other => return Err(WireError::UnknownKind(other)),
        };
        r.finish()?;
        payload.clear();
        Ok(msg)
    }
}

fn decode_chunk_data(mut payload: Vec<u8>) -> Result<Message, WireError> {
    if payload.len() < CHUNK_TRAILER_BYTES {
        return Err(WireError::Truncated("chunk_data trailer"));
    }
    let at = payload.len() - CHUNK_TRAILER_BYTES;
    let mut r = Reader::new(&payload[at..]);
    let file_id = r.u64("chunk.file_id")?;
    let seg_no = r.u32("chunk.seg_no")?;
    let index = r.u32("chunk.index")?;
    let encoding = r.u8("chunk.encoding")?;
    let raw_len = r.u32("chunk.raw_len")?;
    if raw_len == 0 || raw_len > 16 << 20 {
        return Err(WireError::Invalid("chunk.raw_len"));
    }
    payload.truncate(at);
    Ok(Message::ChunkData(ChunkData { file_id, seg_no, index, encoding, raw_len, data: payload }))
}
