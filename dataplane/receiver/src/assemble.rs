//! Files under construction at the target, and where each of their chunks comes from.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use glommio::io::BufferedFile;
use xtsync_chunker::{ChunkName, DigestBuilder};
use xtsync_store::ChunkLocation;

use crate::chunk_error::ChunkError;
use xtsync_wire::{ChunkRef, Meta, RelPath};

/// Where the bytes of one chunk of a new version come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkSource {
    /// All zeros: left as a hole.
    Zero,
    /// A copy held locally (index hit), verified by hash before use.
    Local(ChunkLocation),
    /// Written earlier into this same file.
    Earlier { offset: u64 },
    /// Must arrive from the source.
    Wire,
}

/// The temporary file a new version is assembled in, next to its final name.
pub(crate) struct TempFile {
    pub dir: OwnedFd,
    pub name: Vec<u8>,
    pub tmp_name: String,
    pub file: Rc<BufferedFile>,
}

/// A file being assembled.
pub(crate) struct OpenFile {
    pub path: RelPath,
    pub meta: Meta,
    pub size: u64,
    /// `None` when the file was refused from the start (bad path, no space).
    pub target: Option<TempFile>,
    /// Offset where the next segment starts.
    pub next_offset: u64,
    pub digest: DigestBuilder,
    /// Chunks written (name, offset, len): the chunk index learns them at commit.
    pub written: Vec<(ChunkName, u64, u32)>,
    /// Chunks already placed in this file, for repeats within it.
    pub placed: HashMap<ChunkName, u64>,
    pub chunks_reused: u32,
    pub chunks_received: u32,
    /// First failure; later chunks are consumed but not written.
    pub error: Option<String>,
    /// The target already holds exactly this version: nothing is written.
    pub unchanged: bool,
    /// The source sent FileEnd: no more segments may follow.
    pub ended: bool,
    /// Absolute path of the temporary copy (where checkpointed chunks are indexed).
    pub temp_abs: Vec<u8>,
    /// Bytes written since the last checkpoint, and how much of `written` it covers.
    pub unsynced_bytes: u64,
    pub checkpointed_chunks: usize,
    /// Bytes covered by checkpoints so far.
    pub checkpointed_bytes: u64,
    /// A checkpoint exists: the temporary copy outlives an early end of the session.
    pub checkpointed: bool,
    /// Checkpointed temporaries of earlier attempts this file was resumed from.
    pub resumed_from: std::collections::HashSet<Vec<u8>>,
    /// Where the last chunk copied locally came from, for the next segment's delta
    /// basis (`crate::basis_regions`).
    pub anchor_end: Option<crate::basis_regions::AnchorEnd>,
}

impl OpenFile {
    pub(crate) fn new(
        path: RelPath,
        meta: Meta,
        size: u64,
        target: Option<(OwnedFd, Vec<u8>, (OwnedFd, String))>,
        final_abs: &[u8],
    ) -> OpenFile {
        let temp_abs = match &target {
            Some((_, _, (_, tmp_name))) => {
                let dir = &final_abs[..final_abs.iter().rposition(|&b| b == b'/').unwrap_or(0)];
                [dir, b"/", tmp_name.as_bytes()].concat()
            }
            None => Vec::new(),
        };
        let target = target.map(|(dir, name, (fd, tmp_name))| {
            // SAFETY: the fd was just created and is owned by nobody else.
            let file = unsafe { BufferedFile::from_raw_fd(fd.into_raw_fd()) };
            TempFile { dir, name, tmp_name, file: Rc::new(file) }
        });
        OpenFile {
            path,
            meta,
            size,
            target,
            next_offset: 0,
            digest: DigestBuilder::default(),
            written: Vec::new(),
            placed: HashMap::new(),
            chunks_reused: 0,
            chunks_received: 0,
            error: None,
            unchanged: false,
            ended: false,
            temp_abs,
            unsynced_bytes: 0,
            checkpointed_chunks: 0,
            checkpointed_bytes: 0,
            checkpointed: false,
            resumed_from: Default::default(),
            anchor_end: None,
        }
    }

    pub(crate) fn fail(&mut self, reason: String) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
    }
}

/// A segment waiting in the ordered queue: its chunks and their sources.
pub(crate) struct PendingSegment {
    pub file_id: u64,
    pub seg_no: u32,
    pub chunks: Vec<ChunkRef>,
    pub sources: Vec<ChunkSource>,
    /// Next chunk to place, and its offset in the file.
    pub next: usize,
    pub offset: u64,
    /// The file's previous version, offered to the source as a delta basis.
    pub basis: Option<Rc<crate::basis::DeltaBasis>>,
}

/// Reads `len` bytes at `offset` and checks they are the chunk `name`.
pub(crate) async fn read_verified(
    file: &BufferedFile,
    offset: u64,
    len: u32,
    name: &[u8; 32],
) -> Result<Vec<u8>, ChunkError> {
    let data = file.read_at(offset, len as usize).await.map_err(|e| ChunkError::ReadLocal(e.to_string()))?;
    if data.len() != len as usize {
        return Err(ChunkError::ShortLocal { read: data.len(), len, offset });
    }
    if ChunkName::of(&data).0 != *name {
        return Err(ChunkError::ChangedLocal { len, offset });
    }
    Ok(data.to_vec())
}
