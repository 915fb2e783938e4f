//! Pure content logic of the data plane: content-defined chunking (FastCDC 2020),
//! chunk names (BLAKE3), file digests, per-chunk compression, and deltas below the
//! chunk (`delta`). No I/O: callers feed
//! bytes in and get boundaries, names and encoded payloads out.

mod compress;
pub mod delta;
mod name;
mod stream;

pub use compress::{ChunkCodec, CompressError, CompressProbe, Encoding};
pub use name::{content_digest, ChunkName, DigestBuilder};
pub use stream::{ChunkParams, ChunkParamsError, StreamChunker, CHUNK_BYTES_MAX};

/// True when every byte is zero: such chunks become holes at the target.
pub fn is_all_zero(data: &[u8]) -> bool {
    // Fast path: compare 16-byte words, then the ends.
    // SAFETY: every bit pattern is a valid u128, and `align_to` puts in `body` only
    // the aligned, whole words inside `data`; `head` and `tail` are the bytes around.
    let (head, body, tail) = unsafe { data.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && body.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_detection() {
        assert!(super::is_all_zero(&[0u8; 1000]));
        let mut v = vec![0u8; 1000];
        v[777] = 1;
        assert!(!super::is_all_zero(&v));
        assert!(super::is_all_zero(&[]));
    }
}
