//! On-disk encoding of store values: one version byte, then fixed little-endian fields.

use crate::*;

const VERSION: u8 = 1;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("length checked"))
}

/// Chunk locations: version 2 adds the inode and ctime (version 1 entries read as
/// unknown: 0, 0).
const LOCATION_VERSION: u8 = 2;

pub fn encode_location(l: &ChunkLocation) -> Vec<u8> {
    let mut v = Vec::with_capacity(29 + l.path.len());
    v.push(LOCATION_VERSION);
    v.extend_from_slice(&l.offset.to_le_bytes());
    v.extend_from_slice(&l.len.to_le_bytes());
    v.extend_from_slice(&l.ino.to_le_bytes());
    v.extend_from_slice(&l.ctime_ns.to_le_bytes());
    v.extend_from_slice(&l.path);
    v
}

pub fn decode_location(b: &[u8]) -> Result<ChunkLocation, StoreError> {
    let (ino, ctime_ns, path_at) = match b.first() {
        Some(&VERSION) if b.len() >= 13 => (0, 0, 13),
        Some(&LOCATION_VERSION) if b.len() >= 29 => (u64_at(b, 13), u64_at(b, 21) as i64, 29),
        _ => return Err(StoreError::Corrupt { what: "chunk location" }),
    };
    Ok(ChunkLocation {
        offset: u64_at(b, 1),
        len: u32::from_le_bytes(b[9..13].try_into().expect("length checked")),
        ino,
        ctime_ns,
        path: b[path_at..].to_vec(),
    })
}

pub fn encode_target(r: &TargetRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(57);
    v.push(VERSION);
    for x in [r.ino, r.size, r.mtime_ns as u64] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&r.digest);
    v
}

pub fn decode_target(b: &[u8]) -> Result<TargetRecord, StoreError> {
    if b.len() != 57 || b[0] != VERSION {
        return Err(StoreError::Corrupt { what: "target record" });
    }
    Ok(TargetRecord {
        ino: u64_at(b, 1),
        size: u64_at(b, 9),
        mtime_ns: u64_at(b, 17) as i64,
        digest: b[25..57].try_into().expect("length checked"),
    })
}

pub fn encode_source(r: &SourceRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(73);
    v.push(VERSION);
    for x in [r.dev, r.ino, r.size, r.mtime_ns as u64, r.ctime_ns as u64] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&r.digest);
    v
}

pub fn decode_source(b: &[u8]) -> Result<SourceRecord, StoreError> {
    if b.len() != 73 || b[0] != VERSION {
        return Err(StoreError::Corrupt { what: "source record" });
    }
    Ok(SourceRecord {
        dev: u64_at(b, 1),
        ino: u64_at(b, 9),
        size: u64_at(b, 17),
        mtime_ns: u64_at(b, 25) as i64,
        ctime_ns: u64_at(b, 33) as i64,
        digest: b[41..73].try_into().expect("length checked"),
    })
}

/// Source index key of an inode: `i`, device, inode (big-endian).
pub fn inode_key(dev: u64, ino: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(b'i');
    k.extend_from_slice(&dev.to_be_bytes());
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// Source index prefix of a size: `s`, size (big-endian).
pub fn size_prefix(size: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(b's');
    k.extend_from_slice(&size.to_be_bytes());
    k
}

/// Source index key of a record by content: size prefix, digest, path.
pub fn size_digest_key(size: u64, digest: &[u8; 32], path: &[u8]) -> Vec<u8> {
    let mut k = size_prefix(size);
    k.extend_from_slice(digest);
    k.extend_from_slice(path);
    k
}

/// The (digest, path) of a key made by `size_digest_key`.
pub fn split_size_digest_key(key: &[u8]) -> Option<([u8; 32], Vec<u8>)> {
    let digest: [u8; 32] = key.get(9..41)?.try_into().ok()?;
    Some((digest, key[41..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip_and_entries_of_the_first_format_read_with_no_inode() {
        let l = ChunkLocation { path: b"/t/disk.img".to_vec(), offset: 1 << 33, len: 65_536, ino: 42, ctime_ns: -5 };
        assert_eq!(decode_location(&encode_location(&l)).unwrap(), l);
        // Written before inodes were recorded: [1][offset][len][path].
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&7u64.to_le_bytes());
        v1.extend_from_slice(&100u32.to_le_bytes());
        v1.extend_from_slice(b"/t/x");
        let old = decode_location(&v1).unwrap();
        assert_eq!(old, ChunkLocation { path: b"/t/x".to_vec(), offset: 7, len: 100, ino: 0, ctime_ns: 0 });
        for bad in [&b""[..], &[2u8; 28], &[9u8; 40], &v1[..12]] {
            assert!(decode_location(bad).is_err(), "{bad:?}");
        }
    }
}
