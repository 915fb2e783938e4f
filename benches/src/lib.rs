//! Micro-benchmarks of the data plane's primitives (`cargo bench -p xtsync-benches`):
//! FastCDC chunking, BLAKE3 naming, zstd per-chunk compression, and the frame codec.
//! Each prints MB/s (criterion's throughput); figures are recorded in
//! `perf/RESULTS.md` next to the budget of `DESIGN.md`.

/// Deterministic incompressible bytes.
pub fn random_bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(blake3::keyed_hash(&[seed; 32], &i.to_le_bytes()).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

/// Deterministic source-code-like text (compresses about 3-4x with zstd -1).
pub fn text_bytes(len: usize) -> Vec<u8> {
    let words = [
        "fn", "let", "mut", "struct", "impl", "return", "match", "Some", "None", "self", "u64", "Vec<u8>", "{", "}",
        "=>", ";",
    ];
    let mut out = Vec::with_capacity(len + 64);
    let mut x = 0x2545F4914F6CDD1Du64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
        out.push(if x % 9 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}
