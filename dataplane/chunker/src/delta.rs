//! Bytes below the chunk: a chunk the target lacks, sent as a delta against the
//! previous version of its file that the target holds (the rsync algorithm, per file).
//!
//! The target describes its copy (the *basis*) by a [`Signature`]: for every whole block
//! of `block_bytes`, a rolling checksum and a short strong hash. The source slides a
//! window over the chunk, and wherever a window matches a block it says "copy block
//! *i*" instead of sending the bytes ([`encode`]); everything else goes as literals.
//! The target rebuilds the chunk from its blocks and the literals ([`apply`]) and, as
//! for every chunk, hashes it again: a wrong match (a collision of both sums) fails that
//! chunk's check instead of corrupting the file.
//!
//! Pure code: no I/O, decoding bounded by the caller's lengths.

use std::collections::HashMap;

/// Smallest and largest block of a signature.
pub const BLOCK_BYTES_MIN: u32 = 512;
pub const BLOCK_BYTES_MAX: u32 = 16 << 10;
/// Blocks in one signature at most (bounds what a target sends and a source indexes).
pub const SIGNATURE_BLOCKS_MAX: usize = 64 << 10;

/// The block size for a basis of `basis_bytes`: about its square root (as rsync),
/// a multiple of 64 within [`BLOCK_BYTES_MIN`], [`BLOCK_BYTES_MAX`].
pub fn block_bytes_for(basis_bytes: u64) -> u32 {
    let root = (basis_bytes as f64).sqrt() as u64;
    (root.div_ceil(64) * 64).clamp(BLOCK_BYTES_MIN as u64, BLOCK_BYTES_MAX as u64) as u32
}

/// The rolling checksum of rsync: `a` = sum of the bytes, `b` = sum of the prefix sums.
#[derive(Debug, Clone, Copy)]
struct Rolling {
    a: u32,
    b: u32,
    len: u32,
}

impl Rolling {
    fn of(window: &[u8]) -> Rolling {
        let (mut a, mut b) = (0u32, 0u32);
        for &x in window {
            a = a.wrapping_add(x as u32);
            b = b.wrapping_add(a);
        }
        Rolling { a, b, len: window.len() as u32 }
    }

    /// Slides the window one byte: `out` leaves it, `into` enters.
    fn roll(&mut self, out: u8, into: u8) {
        self.a = self.a.wrapping_sub(out as u32).wrapping_add(into as u32);
        self.b = self.b.wrapping_sub(self.len.wrapping_mul(out as u32)).wrapping_add(self.a);
    }

    fn value(&self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

fn strong(block: &[u8]) -> u32 {
    u32::from_le_bytes(blake3::hash(block).as_bytes()[..4].try_into().expect("4 bytes"))
}

/// What the target holds, block by block: (rolling checksum, strong hash) per whole block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub block_bytes: u32,
    pub blocks: Vec<(u32, u32)>,
}

impl Signature {
    /// The signature of `basis` (its last partial block is left out).
    pub fn of(basis: &[u8], block_bytes: u32) -> Signature {
        let blocks = basis
            .chunks_exact(block_bytes as usize)
            .take(SIGNATURE_BLOCKS_MAX)
            .map(|b| (Rolling::of(b).value(), strong(b)))
            .collect();
        Signature { block_bytes, blocks }
    }
}

/// Delta records: a literal run, or a run of consecutive basis blocks.
const OP_LITERAL: u8 = 0;
const OP_COPY: u8 = 1;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or(DeltaError::Truncated)?;
        *at += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DeltaError::Invalid("varint"))
}

struct Writer {
    out: Vec<u8>,
    /// A copy run being extended: (first block, count).
    run: Option<(u32, u32)>,
}

impl Writer {
    fn literal(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.flush_run();
        self.out.push(OP_LITERAL);
        put_varint(&mut self.out, bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }

    fn copy(&mut self, block: u32) {
        match &mut self.run {
            Some((first, count)) if *first + *count == block => *count += 1,
            _ => {
                self.flush_run();
                self.run = Some((block, 1));
            }
        }
    }

    fn flush_run(&mut self) {
        if let Some((first, count)) = self.run.take() {
            self.out.push(OP_COPY);
            put_varint(&mut self.out, first as u64);
            put_varint(&mut self.out, count as u64);
        }
    }
}

/// The delta of `data` against the basis `sig` describes, and how many of its bytes
/// are literals. Worth sending only if it is smaller than `data` compressed. To encode
/// several chunks against one signature, build its [`SignatureIndex`] once.
pub fn encode(sig: &Signature, data: &[u8]) -> (Vec<u8>, usize) {
    SignatureIndex::new(sig).encode(data)
}

/// A signature indexed for encoding: its blocks by rolling checksum, behind a bitmap of
/// the checksums present, so that the common case — a window that matches nothing —
/// costs one roll and one bit test.
pub struct SignatureIndex<'s> {
    sig: &'s Signature,
    present: Vec<u64>,
    blocks: HashMap<u32, Vec<u32>>,
}

/// Bits of the presence bitmap (2^20: 128 KiB, < 7 % filled at the most blocks).
const PRESENT_BITS_LOG2: u32 = 20;

fn present_bit(weak: u32) -> usize {
    (weak.wrapping_mul(0x9E37_79B1) >> (32 - PRESENT_BITS_LOG2)) as usize
}

impl<'s> SignatureIndex<'s> {
    pub fn new(sig: &'s Signature) -> SignatureIndex<'s> {
        let mut present = vec![0u64; (1 << PRESENT_BITS_LOG2) / 64];
        let mut blocks: HashMap<u32, Vec<u32>> = HashMap::with_capacity(sig.blocks.len());
        for (i, (weak, _)) in sig.blocks.iter().enumerate() {
            let bit = present_bit(*weak);
            present[bit / 64] |= 1 << (bit % 64);
            blocks.entry(*weak).or_default().push(i as u32);
        }
        SignatureIndex { sig, present, blocks }
    }

    fn lookup(&self, weak: u32, window: &[u8]) -> Option<u32> {
        let bit = present_bit(weak);
        if self.present[bit / 64] & (1 << (bit % 64)) == 0 {
            return None;
        }
        let candidates = self.blocks.get(&weak)?;
        let s = strong(window);
        candidates.iter().copied().find(|&i| self.sig.blocks[i as usize].1 == s)
    }

    /// See [`encode`].
    pub fn encode(&self, data: &[u8]) -> (Vec<u8>, usize) {
        let block = self.sig.block_bytes as usize;
        let mut w = Writer { out: Vec::with_capacity(data.len() / 4 + 16), run: None };
        if block == 0 || self.sig.blocks.is_empty() || data.len() < block {
            w.literal(data);
            return (w.out, data.len());
        }
        let (mut at, mut literal_from, mut literal_bytes) = (0usize, 0usize, 0usize);
        let mut rolling = Rolling::of(&data[..block]);
        while at + block <= data.len() {
            if let Some(i) = self.lookup(rolling.value(), &data[at..at + block]) {
                literal_bytes += at - literal_from;
                w.literal(&data[literal_from..at]);
                w.copy(i);
                at += block;
                literal_from = at;
                if at + block <= data.len() {
                    rolling = Rolling::of(&data[at..at + block]);
                }
                continue;
            }
            if at + block < data.len() {
                rolling.roll(data[at], data[at + block]);
            }
            at += 1;
        }
        literal_bytes += data.len() - literal_from;
        w.literal(&data[literal_from..]);
        w.flush_run();
        (w.out, literal_bytes)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    #[error("delta is truncated")]
    Truncated,
    #[error("delta has an invalid {0}")]
    Invalid(&'static str),
    #[error("delta names block {block}, the basis has {blocks}")]
    NoSuchBlock { block: u64, blocks: u64 },
    #[error("delta builds {actual} bytes, the chunk has {expected}")]
    LengthMismatch { expected: usize, actual: usize },
}

/// Rebuilds a chunk of exactly `raw_len` bytes from `delta` and the basis, whose
/// `blocks` blocks of `block_bytes` `read_block` returns (whole, or an error).
pub fn apply(
    delta: &[u8],
    block_bytes: u32,
    blocks: u64,
    raw_len: usize,
    mut read_block: impl FnMut(u64, &mut Vec<u8>) -> Result<(), DeltaError>,
) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::with_capacity(raw_len);
    let mut at = 0;
    let too_long = |len: usize| DeltaError::LengthMismatch { expected: raw_len, actual: len };
    while at < delta.len() {
        let op = delta[at];
        at += 1;
        match op {
            OP_LITERAL => {
                let len = read_varint(delta, &mut at)? as usize;
                let bytes =
                    delta.get(at..at.checked_add(len).ok_or(DeltaError::Truncated)?).ok_or(DeltaError::Truncated)?;
                if out.len() + len > raw_len {
                    return Err(too_long(out.len() + len));
                }
                out.extend_from_slice(bytes);
                at += len;
            }
            OP_COPY => {
                let (first, count) = (read_varint(delta, &mut at)?, read_varint(delta, &mut at)?);
                let end = first.checked_add(count).ok_or(DeltaError::Invalid("block run"))?;
                if end > blocks {
                    return Err(DeltaError::NoSuchBlock { block: end - 1, blocks });
                }
                let len = (count as usize).saturating_mul(block_bytes as usize);
                if out.len().saturating_add(len) > raw_len {
                    return Err(too_long(out.len().saturating_add(len)));
                }
                for b in first..end {
                    let before = out.len();
                    read_block(b, &mut out)?;
                    if out.len() - before != block_bytes as usize {
                        return Err(DeltaError::Invalid("basis block"));
                    }
                }
            }
            _ => return Err(DeltaError::Invalid("record")),
        }
    }
    if out.len() != raw_len {
        return Err(DeltaError::LengthMismatch { expected: raw_len, actual: out.len() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut x = seed;
        for i in 0..lines {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            out.extend_from_slice(format!("line {i}: value {} of the source file\n", x >> 40).as_bytes());
        }
        out
    }

    fn rebuild(basis: &[u8], sig: &Signature, delta: &[u8], raw_len: usize) -> Result<Vec<u8>, DeltaError> {
        let b = sig.block_bytes as usize;
        apply(delta, sig.block_bytes, sig.blocks.len() as u64, raw_len, |i, out| {
            out.extend_from_slice(&basis[i as usize * b..(i as usize + 1) * b]);
            Ok(())
        })
    }

    #[test]
    fn an_insertion_costs_about_the_inserted_bytes_and_rebuilds_exactly() {
        let basis = text(2000, 1);
        let mut new = basis.clone();
        let inserted = b"a new line inserted in the middle of the file\n";
        let at = new.len() / 2 + 17;
        new.splice(at..at, inserted.iter().copied());
        let sig = Signature::of(&basis, block_bytes_for(basis.len() as u64));
        let (delta, literal) = encode(&sig, &new);
        // The literal is the insertion plus at most the two blocks it breaks.
        assert!(literal < inserted.len() + 2 * sig.block_bytes as usize, "{literal} literal bytes");
        assert!(delta.len() < new.len() / 10, "{} of {}", delta.len(), new.len());
        assert_eq!(rebuild(&basis, &sig, &delta, new.len()).unwrap(), new);
    }

    #[test]
    fn unrelated_data_and_tiny_inputs_go_as_literals() {
        let basis = text(500, 1);
        let sig = Signature::of(&basis, 512);
        for new in [text(500, 2), b"short".to_vec(), Vec::new()] {
            let (delta, literal) = encode(&sig, &new);
            assert_eq!(literal, new.len());
            assert_eq!(rebuild(&basis, &sig, &delta, new.len()).unwrap(), new);
        }
        let empty = Signature::of(b"", 512);
        let (delta, _) = encode(&empty, &basis);
        assert_eq!(rebuild(b"", &empty, &delta, basis.len()).unwrap(), basis);
    }

    #[test]
    fn a_lying_delta_is_an_error_never_a_bigger_buffer() {
        let basis = text(200, 1);
        let sig = Signature::of(&basis, 512);
        let (delta, _) = encode(&sig, &basis);
        assert!(matches!(rebuild(&basis, &sig, &delta, basis.len() - 1), Err(DeltaError::LengthMismatch { .. })));
        assert!(matches!(rebuild(&basis, &sig, &delta, basis.len() + 1), Err(DeltaError::LengthMismatch { .. })));
        let mut no_block = vec![OP_COPY];
        put_varint(&mut no_block, sig.blocks.len() as u64);
        put_varint(&mut no_block, 1);
        assert!(matches!(rebuild(&basis, &sig, &no_block, 512), Err(DeltaError::NoSuchBlock { .. })));
        let mut huge = vec![OP_LITERAL];
        put_varint(&mut huge, u64::MAX);
        assert!(rebuild(&basis, &sig, &huge, 10).is_err());
        assert!(rebuild(&basis, &sig, &[7], 10).is_err());
        assert!(rebuild(&basis, &sig, &[OP_COPY, 0x80], 10).is_err());
        // Every truncation and every byte flip decodes to an error or to some bytes of
        // exactly the asked length (which the chunk's name then checks), never a panic.
        for cut in 0..delta.len() {
            let _ = rebuild(&basis, &sig, &delta[..cut], basis.len());
        }
        for i in 0..delta.len() {
            let mut bad = delta.clone();
            bad[i] ^= 0x5a;
            if let Ok(out) = rebuild(&basis, &sig, &bad, basis.len()) {
                assert_eq!(out.len(), basis.len());
            }
        }
    }

    #[test]
    fn block_sizes_follow_the_square_root_within_bounds() {
        assert_eq!(block_bytes_for(0), BLOCK_BYTES_MIN);
        assert_eq!(block_bytes_for(1 << 20), 1024);
        assert_eq!(block_bytes_for(1 << 40), BLOCK_BYTES_MAX);
        assert_eq!(block_bytes_for(1 << 20) % 64, 0);
    }
}
