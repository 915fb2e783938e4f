//! Per-chunk zstd compression with the `auto | always | never` policy.

/// How a chunk payload is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Encoding {
    Raw = 0,
    Zstd = 1,
}

impl Encoding {
    pub fn from_u8(v: u8) -> Option<Encoding> {
        match v {
            0 => Some(Encoding::Raw),
            1 => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("zstd payload does not decode: {0}")]
    Corrupt(std::io::Error),
    #[error("decoded chunk is {actual} bytes, the frame said {expected}")]
    LengthMismatch { expected: usize, actual: usize },
}

/// The `auto` policy's memory of one file: after a run of chunks that zstd could not
/// shrink (random data, media, archives), stop trying and probe only every
/// [`CompressProbe::PROBE_EVERY`]th chunk, so that a file of incompressible data costs
/// a fraction of one zstd attempt per chunk and a compressible stretch later in the
/// same file is found again within a few chunks. (Btrfs gives up on a file after one
/// incompressible extent; rsync decides by file suffix.)
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompressProbe {
    misses_in_a_row: u32,
    skipped: u32,
}

impl CompressProbe {
    /// Incompressible chunks in a row before the probing starts.
    pub const MISSES_BEFORE_PROBING: u32 = 4;
    /// While probing, one attempt per this many chunks.
    pub const PROBE_EVERY: u32 = 16;

    /// Whether to try compressing the file's next chunk.
    pub fn should_try(&mut self) -> bool {
        if self.misses_in_a_row < Self::MISSES_BEFORE_PROBING {
            return true;
        }
        self.skipped += 1;
        if self.skipped >= Self::PROBE_EVERY {
            self.skipped = 0;
            return true;
        }
        false
    }

    /// What the attempt gave: compressed, or not worth it.
    pub fn observe(&mut self, encoding: Encoding) {
        match encoding {
            Encoding::Zstd => *self = CompressProbe::default(),
            Encoding::Raw => self.misses_in_a_row = self.misses_in_a_row.saturating_add(1),
        }
    }
}

/// Reusable zstd contexts for one session (creating a context per chunk would
/// reallocate its tables every time). Lives on one executor; not `Sync`.
pub struct ChunkCodec {
    cctx: zstd::zstd_safe::CCtx<'static>,
    dctx: zstd::zstd_safe::DCtx<'static>,
}

impl Default for ChunkCodec {
    fn default() -> Self {
        ChunkCodec { cctx: zstd::zstd_safe::CCtx::create(), dctx: zstd::zstd_safe::DCtx::create() }
    }
}

impl ChunkCodec {
    /// Encodes `data` into `out`. With `allow_raw`, compression that saves less than
    /// 1/32 of the size is dropped (incompressible data costs one fast zstd attempt):
    /// the answer is then `Raw` and `out` is left empty — send `data` itself.
    pub fn compress(&mut self, data: &[u8], level: i32, allow_raw: bool, out: &mut Vec<u8>) -> Encoding {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        let _ = self.cctx.set_parameter(zstd::zstd_safe::CParameter::CompressionLevel(level));
        // `zstd_safe` writes into the Vec's spare capacity: no zero-fill of the buffer.
        match self.cctx.compress2(out, data) {
            Ok(n) if !allow_raw || n + data.len() / 32 < data.len() => {
                out.truncate(n);
                Encoding::Zstd
            }
            _ => {
                out.clear();
                Encoding::Raw
            }
        }
    }

    /// Decodes a payload that must produce exactly `raw_len` bytes; a payload that
    /// would produce more fails instead of growing the buffer.
    pub fn decompress(
        &mut self,
        encoding: Encoding,
        payload: &[u8],
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        out.clear();
        match encoding {
            Encoding::Raw => out.extend_from_slice(payload),
            Encoding::Zstd => {
                out.reserve_exact(raw_len);
                self.dctx.decompress(out, payload).map_err(|code| {
                    CompressError::Corrupt(std::io::Error::other(zstd::zstd_safe::get_error_name(code)))
                })?;
            }
        }
        if out.len() != raw_len {
            return Err(CompressError::LengthMismatch { expected: raw_len, actual: out.len() });
        }
        Ok(())
    }

    /// Decodes a zstd payload of unknown length, failing if it would produce more than
    /// `bytes_max` bytes.
    pub fn decompress_at_most(
        &mut self,
        payload: &[u8],
        bytes_max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        out.clear();
        out.reserve_exact(bytes_max);
        self.dctx
            .decompress(out, payload)
            .map_err(|code| CompressError::Corrupt(std::io::Error::other(zstd::zstd_safe::get_error_name(code))))?;
        if out.len() > bytes_max {
            return Err(CompressError::LengthMismatch { expected: bytes_max, actual: out.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_incompressible_chunks_is_probed_not_compressed_and_found_again_when_it_changes() {
        let mut probe = CompressProbe::default();
        let mut tried = 0;
        for _ in 0..4 + 160 {
            if probe.should_try() {
                tried += 1;
                probe.observe(Encoding::Raw);
            }
        }
        assert_eq!(tried, 4 + 10, "four misses, then one attempt in sixteen");
        // The data turns compressible: the next probe finds it, and every chunk is tried again.
        let mut until_found = 0;
        while !probe.should_try() {
            until_found += 1;
        }
        assert!(until_found < CompressProbe::PROBE_EVERY);
        probe.observe(Encoding::Zstd);
        assert!((0..10).all(|_| probe.should_try()));
    }

    #[test]
    fn text_compresses_and_round_trips() {
        let data = b"hello world, hello world, hello world. ".repeat(500);
        let mut enc = Vec::new();
        assert_eq!(ChunkCodec::default().compress(&data, 1, true, &mut enc), Encoding::Zstd);
        assert!(enc.len() < data.len() / 10);
        let mut dec = Vec::new();
        ChunkCodec::default().decompress(Encoding::Zstd, &enc, data.len(), &mut dec).unwrap();
        assert_eq!(dec, data);
    }

    #[test]
    fn incompressible_goes_raw() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let data = *blake3::hash(&data).as_bytes();
        let big: Vec<u8> =
            (0..2048).flat_map(|i| *blake3::keyed_hash(&data, &[i as u8, (i >> 8) as u8]).as_bytes()).collect();
        let mut enc = Vec::new();
        assert_eq!(ChunkCodec::default().compress(&big, 1, true, &mut enc), Encoding::Raw);
        assert!(enc.is_empty(), "raw chunks are sent from the caller's bytes, not copied");
    }

    #[test]
    fn wrong_length_or_garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        assert!(ChunkCodec::default().decompress(Encoding::Zstd, b"not zstd at all", 10, &mut out).is_err());
        let mut enc = Vec::new();
        let mut codec = ChunkCodec::default();
        codec.compress(&[7u8; 1000], 1, false, &mut enc);
        assert!(matches!(
            codec.decompress(Encoding::Zstd, &enc, 999, &mut out),
            Err(CompressError::LengthMismatch { .. }) | Err(CompressError::Corrupt(_))
        ));
    }
}
