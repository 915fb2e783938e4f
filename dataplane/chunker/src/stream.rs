//! Streaming FastCDC 2020: feed a file block by block, get chunks whose boundaries do
//! not depend on the block size (so the same content always gives the same chunks).

use fastcdc::v2020::FastCDC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    pub chunk_bytes_min: u32,
    pub chunk_bytes_avg: u32,
    pub chunk_bytes_max: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkParamsError {
    #[error("chunk sizes must satisfy 64 <= min <= avg <= max <= 16 MiB (min {min}, avg {avg}, max {max})")]
    OutOfRange { min: u32, avg: u32, max: u32 },
}

/// Largest chunk any parameters allow: one chunk must fit one frame
/// (`xtsync_wire::FRAME_PAYLOAD_BYTES_MAX`, checked where both are known).
pub const CHUNK_BYTES_MAX: u32 = 16 << 20;

impl ChunkParams {
    /// Sizes from an average: min = avg/4, max = avg*4 (FastCDC's recommended spread).
    pub fn from_avg(chunk_bytes_avg: u32) -> Result<ChunkParams, ChunkParamsError> {
        ChunkParams::new(chunk_bytes_avg / 4, chunk_bytes_avg, chunk_bytes_avg.saturating_mul(4))
    }

    pub fn new(min: u32, avg: u32, max: u32) -> Result<ChunkParams, ChunkParamsError> {
        let ok =
            (64..=1 << 20).contains(&min) && (256..=4 << 20).contains(&avg) && (1024..=CHUNK_BYTES_MAX).contains(&max);
        if !ok || min > avg || avg > max {
            return Err(ChunkParamsError::OutOfRange { min, avg, max });
        }
        Ok(ChunkParams { chunk_bytes_min: min, chunk_bytes_avg: avg, chunk_bytes_max: max })
    }
}

impl Default for ChunkParams {
    /// 64 KiB average: measured on the project machine as the best trade between
    /// chunking speed (~1.45 GB/s/core) and dedup granularity (see perf/RESULTS.md).
    fn default() -> Self {
        ChunkParams { chunk_bytes_min: 16 << 10, chunk_bytes_avg: 64 << 10, chunk_bytes_max: 256 << 10 }
    }
}

/// Buffers input until a chunk boundary is certain. Memory: at most one block plus one
/// max-size chunk.
pub struct StreamChunker {
    params: ChunkParams,
    pending: Vec<u8>,
}

impl StreamChunker {
    pub fn new(params: ChunkParams) -> StreamChunker {
        StreamChunker { params, pending: Vec::new() }
    }

    /// Appends `block` and calls `emit` with every chunk that is now complete. Chunks
    /// that may still grow with more input stay buffered. `eof` flushes everything.
    pub fn push(&mut self, block: &[u8], eof: bool, mut emit: impl FnMut(&[u8])) {
        if self.pending.is_empty() && !block.is_empty() {
            let consumed = self.cut(block, eof, &mut emit);
            self.pending.extend_from_slice(&block[consumed..]);
        } else {
            self.pending.extend_from_slice(block);
            let data = std::mem::take(&mut self.pending);
            let consumed = self.cut(&data, eof, &mut emit);
            self.pending = data;
            self.pending.drain(..consumed);
        }
        if eof && !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            emit(&rest);
        }
    }

    /// Emits the chunks of `data` that are final; returns how many bytes were emitted.
    fn cut(&self, data: &[u8], eof: bool, emit: &mut impl FnMut(&[u8])) -> usize {
        let p = self.params;
        let mut consumed = 0;
        for chunk in FastCDC::new(data, p.chunk_bytes_min, p.chunk_bytes_avg, p.chunk_bytes_max) {
            let end = chunk.offset + chunk.length;
            // A chunk that reaches the end of the buffer may have been cut short by the
            // buffer, not by content: keep it until more data (or EOF) arrives.
            if end == data.len() && !eof && chunk.length < p.chunk_bytes_max as usize {
                break;
            }
            emit(&data[chunk.offset..end]);
            consumed = end;
        }
        consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn chunks_with_block(data: &[u8], block: usize) -> Vec<Vec<u8>> {
        let mut c = StreamChunker::new(ChunkParams::new(1024, 4096, 16384).unwrap());
        let mut out = Vec::new();
        let blocks: Vec<&[u8]> = data.chunks(block).collect();
        for (i, b) in blocks.iter().enumerate() {
            c.push(b, i + 1 == blocks.len(), |ch| out.push(ch.to_vec()));
        }
        if data.is_empty() {
            c.push(&[], true, |ch| out.push(ch.to_vec()));
        }
        out
    }

    #[test]
    fn boundaries_do_not_depend_on_block_size() {
        let data = pseudo_random(300_000, 7);
        let a = chunks_with_block(&data, 1 << 20);
        for block in [1, 1000, 4096, 16383, 16384, 16385, 20_000, 65536, 99_999] {
            assert_eq!(chunks_with_block(&data, block), a, "block {block}");
        }
        assert_eq!(a.concat(), data);
        // Runs of zeros: chunks cut at the maximum size.
        let mut zeros = vec![0u8; 100_000];
        zeros.extend_from_slice(&data[..50_000]);
        zeros.extend(std::iter::repeat_n(0u8, 70_000));
        let z = chunks_with_block(&zeros, 1 << 20);
        assert!(z.iter().filter(|c| c.len() == 16384).count() >= 8, "max-size chunks expected");
        for block in [1, 1000, 16383, 16384, 16385, 65536] {
            assert_eq!(chunks_with_block(&zeros, block), z, "zeros, block {block}");
        }
        assert_eq!(z.concat(), zeros);
        assert!(a.len() > 30, "expected ~73 chunks, got {}", a.len());
    }

    #[test]
    fn an_insertion_only_changes_nearby_chunks() {
        let data = pseudo_random(400_000, 9);
        let mut edited = data.clone();
        edited.splice(200_000..200_000, b"inserted line\n".iter().copied());
        let a = chunks_with_block(&data, 65536);
        let b = chunks_with_block(&edited, 65536);
        let shared = b.iter().filter(|c| a.contains(c)).count();
        assert!(shared + 3 >= b.len(), "only {shared} of {} chunks shared", b.len());
    }

    #[test]
    fn empty_input_gives_no_chunk() {
        assert!(chunks_with_block(&[], 4096).is_empty());
    }

    #[test]
    fn invalid_params_are_refused() {
        assert!(ChunkParams::new(10, 4096, 16384).is_err());
        assert!(ChunkParams::new(8192, 4096, 16384).is_err());
        assert!(ChunkParams::from_avg(64 << 10).is_ok());
    }
}
