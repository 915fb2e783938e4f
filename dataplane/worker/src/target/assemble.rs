//! Files under construction at the target, and where each of their chunks comes from.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use glommio::io::BufferedFile;
use xtsync_chunker::{ChunkName, DigestBuilder};
use xtsync_store::ChunkLocation;
use xtsync_wire::{ChunkRef, Meta, RelPath};

/// Where the bytes of one chunk of a new version come from.
#[derive(Debug, Clone)]
pub enum ChunkSource {
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
pub struct TempFile {
    pub dir: OwnedFd,
    pub name: Vec<u8>,
    pub tmp_name: String,
    pub file: Rc<BufferedFile>,
}

/// A file being assembled.
pub struct OpenFile {
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
    /// basis (`target::basis_regions`).
    pub anchor_end: Option<crate::target::basis_regions::AnchorEnd>,
}

impl OpenFile {
    pub fn new(
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

    pub fn fail(&mut self, reason: String) {
        if self.error.is_none() {
            self.error = Some(reason);
        }
    }
}

/// A segment waiting in the ordered queue: its chunks and their sources.
pub struct PendingSegment {
    pub file_id: u64,
    pub seg_no: u32,
    pub chunks: Vec<ChunkRef>,
    pub sources: Vec<ChunkSource>,
    /// Next chunk to place, and its offset in the file.
    pub next: usize,
    pub offset: u64,
    /// The file's previous version, offered to the source as a delta basis.
    pub basis: Option<Rc<crate::target::basis::DeltaBasis>>,
}

/// Open read handles on local files that chunks are copied from (bounded), with the
/// inode each was opened on.
#[derive(Default)]
pub struct LocalReaders {
    files: HashMap<Vec<u8>, (Rc<BufferedFile>, u64)>,
}

const LOCAL_READERS_MAX: usize = 64;

impl LocalReaders {
    pub async fn get(&mut self, path: &[u8]) -> std::io::Result<Rc<BufferedFile>> {
        if let Some((f, _)) = self.files.get(path) {
            return Ok(f.clone());
        }
        self.open(path).map(|(f, _)| f)
    }

    /// The file an index entry points to, if it is still the file that was indexed:
    /// `Ok(None)` when another inode is at its path now (a newer version replaced it),
    /// so that its chunks are asked for instead of failing the file that needs them.
    pub async fn get_indexed(&mut self, at: &ChunkLocation) -> std::io::Result<Option<Rc<BufferedFile>>> {
        let (file, ino) = match self.files.get(&at.path) {
            // A handle opened before the file was replaced still reads the old inode.
            Some((f, ino)) if at.ino == 0 || *ino == at.ino => (f.clone(), *ino),
            _ => self.open(&at.path)?,
        };
        Ok((at.ino == 0 || ino == at.ino).then_some(file))
    }

    fn open(&mut self, path: &[u8]) -> std::io::Result<(Rc<BufferedFile>, u64)> {
        if self.files.len() >= LOCAL_READERS_MAX {
            self.files.clear();
        }
        let fd = rustix::fs::open(
            std::ffi::OsStr::from_bytes(path),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let ino = rustix::fs::fstat(&fd)?.st_ino;
        // SAFETY: fresh fd, ownership moves into the glommio file.
        let f = Rc::new(unsafe { BufferedFile::from_raw_fd(fd.into_raw_fd()) });
        self.files.insert(path.to_vec(), (f.clone(), ino));
        Ok((f, ino))
    }

    pub fn forget(&mut self, path: &[u8]) {
        self.files.remove(path);
    }
}

/// Reads `len` bytes at `offset` and checks they are the chunk `name`.
pub async fn read_verified(file: &BufferedFile, offset: u64, len: u32, name: &[u8; 32]) -> Result<Vec<u8>, String> {
    let data = file.read_at(offset, len as usize).await.map_err(|e| format!("read local copy: {e}"))?;
    if data.len() != len as usize {
        return Err(format!("local copy of a chunk is short ({} of {len} bytes at offset {offset})", data.len()));
    }
    if ChunkName::of(&data).0 != *name {
        return Err(format!("local copy of a chunk changed since it was indexed ({len} bytes at offset {offset})"));
    }
    Ok(data.to_vec())
}
