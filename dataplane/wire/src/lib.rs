//! The data-plane wire protocol, as pure code: frame header, message types, and their
//! encoding. Decoding is a pure function over bytes (`decode_header`, `Message::decode`)
//! that never panics and never allocates more than the frame it was given, so it can be
//! fuzzed directly (the seeded mutation tests in `tests.rs` do so in the regular suite).
//!
//! Frame = 8-byte header `[version u8][kind u8][reserved u16 = 0][payload_len u32 LE]`
//! followed by `payload_len` bytes. Every frame carries the protocol version, and a
//! peer refuses frames of a version it does not speak.

#![forbid(unsafe_code)]

mod codec;
mod compressed;
mod frame;
mod kind;
mod message;
mod path;

pub use codec::Reader;
pub use compressed::{compress_frame, COMPRESSIBLE_FRAME_BYTES_MIN};
pub use frame::{decode_header, encode_frame, FrameHeader, FRAME_HEADER_BYTES};
pub use message::*;
pub use path::{RelPath, PATH_BYTES_MAX, PATH_COMPONENT_BYTES_MAX};

/// Prefix of the temporary names a receiver assembles new versions under. A sender
/// never sends entries with this prefix (a tree may be both a target and a source),
/// and a receiver sweeps stale ones.
pub const TEMP_PREFIX: &str = ".xtsync-tmp.";

/// The protocol version this build speaks. 2: the target speaks first (`Ready`); a
/// version-1 peer gets a clear version error instead of both sides waiting.
/// 3: entries may say they were renamed (`Entry::renamed_from`), and `EntriesReply`
/// lists the renames applied. 4: frames may be zstd-compressed (`compress_frame`).
/// 5: `HelloAck` names the target tree (`tree_id`).
pub const PROTOCOL_VERSION: u8 = 5;
/// Largest payload of any frame: one max-size chunk (16 MiB) plus its trailer, or
/// an entry batch.
pub const FRAME_PAYLOAD_BYTES_MAX: u32 = (16 << 20) + 4096;
/// Files a receiver keeps open (begun, not ended) per session; a sender keeps fewer
/// in flight.
pub const FILES_OPEN_PER_SESSION_MAX: usize = 4096;
/// Entries in one `Entries` frame.
pub const ENTRIES_PER_BATCH_MAX: usize = 4096;
/// Chunks listed in one `Segment` frame.
pub const CHUNKS_PER_SEGMENT_MAX: usize = 1024;
/// Extended attributes per entry, and bytes per value.
pub const XATTRS_PER_ENTRY_MAX: usize = 64;
pub const XATTR_VALUE_BYTES_MAX: usize = 64 * 1024;
/// Names listed for one directory (for deletion propagation).
pub const DIR_CHILDREN_MAX: usize = 1 << 20;

/// Why bytes could not be decoded. Each variant closes the session that sent them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of protocol version {0}, this build speaks version {PROTOCOL_VERSION}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("frame header reserved bits are set ({0:#x})")]
    Reserved(u16),
    #[error("frame payload of {0} bytes exceeds the maximum of {FRAME_PAYLOAD_BYTES_MAX}")]
    Oversized(u32),
    #[error("frame is truncated: {0} needs more bytes than the payload has")]
    Truncated(&'static str),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error("invalid path {path:?}: {reason}")]
    Path { path: String, reason: &'static str },
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

#[cfg(test)]
mod tests;
