//! Why a chunk could not be placed in the file being assembled. The file then fails
//! (its first failure is what the sender is told, in `FileDone`), and the sender reads
//! and sends it again.

use xtsync_chunker::delta::DeltaError;
use xtsync_chunker::CompressError;

/// Why one chunk could not be placed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChunkError {
    /// A local copy (another file, or earlier in this one) could not be read.
    #[error("read local copy: {0}")]
    ReadLocal(String),
    /// A local copy could not be opened.
    #[error("open local copy: {0}")]
    OpenLocal(String),
    /// A local copy ended before the chunk did.
    #[error("local copy of a chunk is short ({read} of {len} bytes at offset {offset})")]
    ShortLocal { read: usize, len: u32, offset: u64 },
    /// A local copy no longer hashes to the chunk's name.
    #[error("local copy of a chunk changed since it was indexed ({len} bytes at offset {offset})")]
    ChangedLocal { len: u32, offset: u64 },
    /// The file the index named was replaced since.
    #[error("local copy of a chunk was replaced since it was indexed")]
    ReplacedLocal,
    /// The file being assembled has no temporary copy (it was refused from the start).
    #[error("no temporary file")]
    NoTemporaryFile,
    /// A chunk frame whose length differs from the manifest's.
    #[error("chunk length differs from its manifest")]
    LengthDiffers,
    /// A delta for a segment the receiver offered no basis for.
    #[error("a delta for a segment that was offered no basis")]
    DeltaWithoutBasis,
    /// An encoding this receiver does not know.
    #[error("unknown chunk encoding {0}")]
    UnknownEncoding(u8),
    /// A compressed chunk that does not decode.
    #[error(transparent)]
    Decompress(#[from] CompressError),
    /// A delta that does not rebuild the chunk.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// Received bytes that do not hash to the chunk's name.
    #[error("received chunk does not match its name (changed at the source after it was hashed, corrupt, or forged)")]
    NameMismatch,
}
