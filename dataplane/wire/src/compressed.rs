//! Compressed frames. Any message but chunk data (compressed per chunk, where it pays)
//! may travel as a `Compressed` frame whose payload is `[inner kind u8][raw_len u32
//! LE][zstd frame]`. Entry batches are most of what a pass over an unchanged tree
//! sends — about 140 bytes per file, with shared path prefixes, similar metadata and
//! whole directory listings — and they compress several times over.
//!
//! Decoding stays bounded: the inner payload may not exceed `FRAME_PAYLOAD_BYTES_MAX`,
//! and decompression writes into a buffer of exactly the announced size.

use crate::codec::{put_u32, put_u8, Reader};
use crate::frame::{encode_frame, FRAME_HEADER_BYTES};
use crate::kind;
use crate::{WireError, FRAME_PAYLOAD_BYTES_MAX};

/// Frames smaller than this are sent as they are (too little to gain).
pub const COMPRESSIBLE_FRAME_BYTES_MIN: usize = 1024;

/// The whole encoded `frame` (header and payload) as a compressed frame at zstd
/// `level`, or `None` when it is chunk data, too small, or would not shrink.
pub fn compress_frame(frame: &[u8], level: i32) -> Option<Vec<u8>> {
    let (header, payload) = frame.split_at_checked(FRAME_HEADER_BYTES)?;
    let inner = header[1];
    if frame.len() < COMPRESSIBLE_FRAME_BYTES_MIN || inner == kind::CHUNK_DATA || inner == kind::COMPRESSED {
        return None;
    }
    let packed = zstd::bulk::compress(payload, level).ok()?;
    if packed.len() + 5 >= payload.len() {
        return None;
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + 5 + packed.len());
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    put_u8(&mut out, inner);
    put_u32(&mut out, payload.len() as u32);
    out.extend_from_slice(&packed);
    encode_frame(&mut out, 0, kind::COMPRESSED);
    Some(out)
}

/// The inner kind and payload of a compressed frame's payload.
pub(crate) fn decompress_payload(payload: &[u8]) -> Result<(u8, Vec<u8>), WireError> {
    let mut r = Reader::new(payload);
    let inner = r.u8("compressed.kind")?;
    if inner == kind::COMPRESSED || inner == kind::CHUNK_DATA {
        return Err(WireError::Invalid("compressed.kind"));
    }
    let raw_len = r.u32("compressed.raw_len")?;
    if raw_len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(WireError::Oversized(raw_len));
    }
    let packed = &payload[5..];
    let raw = zstd::bulk::decompress(packed, raw_len as usize).map_err(|_| WireError::Invalid("compressed.data"))?;
    if raw.len() != raw_len as usize {
        return Err(WireError::Invalid("compressed.raw_len"));
    }
    Ok((inner, raw))
}
