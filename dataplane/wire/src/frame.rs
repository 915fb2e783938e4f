//! The 8-byte frame header.

use crate::{WireError, FRAME_PAYLOAD_BYTES_MAX, PROTOCOL_VERSION};

pub const FRAME_HEADER_BYTES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: u8,
    pub payload_bytes: u32,
}

/// Checks a header: version, reserved bits, size limit. The kind is checked when the
/// payload is decoded.
pub fn decode_header(bytes: &[u8; FRAME_HEADER_BYTES]) -> Result<FrameHeader, WireError> {
    if bytes[0] != PROTOCOL_VERSION {
        return Err(WireError::Version(bytes[0]));
    }
    let reserved = u16::from_le_bytes([bytes[2], bytes[3]]);
    if reserved != 0 {
        return Err(WireError::Reserved(reserved));
    }
    let payload_bytes = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if payload_bytes > FRAME_PAYLOAD_BYTES_MAX {
        return Err(WireError::Oversized(payload_bytes));
    }
    Ok(FrameHeader { kind: bytes[1], payload_bytes })
}

/// Appends a header for a payload that the caller has already appended after
/// `header_at` (reserve 8 bytes there first): lets messages encode in place.
pub fn encode_frame(out: &mut [u8], header_at: usize, kind: u8) {
    let payload_bytes = (out.len() - header_at - FRAME_HEADER_BYTES) as u32;
    let h = &mut out[header_at..header_at + FRAME_HEADER_BYTES];
    h[0] = PROTOCOL_VERSION;
    h[1] = kind;
    h[2..4].copy_from_slice(&0u16.to_le_bytes());
    h[4..8].copy_from_slice(&payload_bytes.to_le_bytes());
}
