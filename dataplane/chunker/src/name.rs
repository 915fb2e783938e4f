//! Chunk names and file digests.

use std::fmt;

/// The BLAKE3 hash of a chunk's raw bytes: its name everywhere (wire, index, cache).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkName(pub [u8; 32]);

impl ChunkName {
    pub fn of(data: &[u8]) -> ChunkName {
        ChunkName(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl fmt::Debug for ChunkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkName({})", &self.to_hex()[..16])
    }
}

/// Incremental file digest: BLAKE3 over (name, length) of each chunk in order. Two
/// files with the same digest have the same content (up to BLAKE3 collisions).
#[derive(Default, Clone)]
pub struct DigestBuilder {
    hasher: blake3::Hasher,
}

impl DigestBuilder {
    pub fn push(&mut self, name: &ChunkName, len: u32) {
        self.hasher.update(&name.0);
        self.hasher.update(&len.to_le_bytes());
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }
}

/// The digest of a whole chunk list.
pub fn content_digest<'a>(chunks: impl IntoIterator<Item = (&'a ChunkName, u32)>) -> [u8; 32] {
    let mut d = DigestBuilder::default();
    for (name, len) in chunks {
        d.push(name, len);
    }
    d.finish()
}
