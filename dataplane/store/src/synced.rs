//! Keys and values of the **synced** table: per job, what its target acknowledged, as
//! the source's stat of each entry when it was sent (see `xtsync_walk::synced`).
//!
//! Key of an entry: job (8 bytes, big-endian), its directory's path, `0x00`, its name.
//! The job's root itself is (dir "", name ""). A directory's entries are therefore one
//! contiguous range (`job ‖ dir ‖ 0x00`), read with one seek; the basis of a job is the
//! bare 8-byte job key, which sorts before all of them.

use crate::*;

/// 2: entries and the basis carry a generation.
const VERSION: u8 = 2;

/// The stat of a source entry as the walk saw it when it was sent and acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// An entry of the synced table: the stat, and the generation of the pass that wrote
/// it. Passes write as they go; only entries of a generation at most the basis's (that
/// of the last pass that succeeded) may be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncedEntry {
    pub stat: EntryStat,
    pub generation: u64,
}

/// What a job's acknowledgements are valid for: a token naming the target tree (and the
/// job's shape), when a pass last checked every entry at the target, and the generation
/// of the last pass that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedBasis {
    pub token: [u8; 32],
    pub verified_unix_s: u64,
    pub generation: u64,
}

pub fn job_key(job: u64) -> Vec<u8> {
    job.to_be_bytes().to_vec()
}

/// The prefix of every entry of directory `dir` of `job`.
pub fn dir_prefix(job: u64, dir: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + dir.len());
    k.extend_from_slice(&job.to_be_bytes());
    k.extend_from_slice(dir);
    k.push(0);
    k
}

pub fn entry_key(job: u64, dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = dir_prefix(job, dir);
    k.extend_from_slice(name);
    k
}

/// The path of entry (`dir`, `name`) below the job's root.
pub fn path_of(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

/// Key ranges `[from, to)` holding everything below path `path` (its entries and
/// theirs, recursively): `job ‖ path ‖ 0x00 …` and `job ‖ path ‖ / …`.
pub fn subtree_ranges(job: u64, path: &[u8]) -> [(Vec<u8>, Vec<u8>); 2] {
    let mut base = job.to_be_bytes().to_vec();
    base.extend_from_slice(path);
    let with = |b: u8| {
        let mut k = base.clone();
        k.push(b);
        k
    };
    [(with(0), with(1)), (with(b'/'), with(b'/' + 1))]
}

pub fn encode_entry(e: &SyncedEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(49);
    v.push(VERSION);
    let s = &e.stat;
    for x in [s.dev, s.ino, s.size, s.mtime_ns as u64, s.ctime_ns as u64, e.generation] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("length checked"))
}

pub fn decode_entry(b: &[u8]) -> Result<SyncedEntry, StoreError> {
    if b.len() != 49 || b[0] != VERSION {
        return Err(StoreError::Corrupt { what: "synced entry" });
    }
    let stat = EntryStat {
        dev: u64_at(b, 1),
        ino: u64_at(b, 9),
        size: u64_at(b, 17),
        mtime_ns: u64_at(b, 25) as i64,
        ctime_ns: u64_at(b, 33) as i64,
    };
    Ok(SyncedEntry { stat, generation: u64_at(b, 41) })
}

pub fn encode_basis(b: &SyncedBasis) -> Vec<u8> {
    let mut v = Vec::with_capacity(49);
    v.push(VERSION);
    v.extend_from_slice(&b.token);
    v.extend_from_slice(&b.verified_unix_s.to_le_bytes());
    v.extend_from_slice(&b.generation.to_le_bytes());
    v
}

pub fn decode_basis(b: &[u8]) -> Result<SyncedBasis, StoreError> {
    if b.len() != 49 || b[0] != VERSION {
        return Err(StoreError::Corrupt { what: "synced basis" });
    }
    Ok(SyncedBasis {
        token: b[1..33].try_into().expect("length checked"),
        verified_unix_s: u64_at(b, 33),
        generation: u64_at(b, 41),
    })
}

/// The entries of one directory from its key range: (name, entry). A record that does
/// not decode is left out (the table is a cache: the entry is then sent again).
pub fn entries_in_range<'a>(
    prefix: &[u8],
    range: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<(Vec<u8>, SyncedEntry)> {
    range
        .take_while(|(k, _)| k.starts_with(prefix))
        .filter_map(|(k, v)| Some((k[prefix.len()..].to_vec(), decode_entry(v).ok()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_one_range_and_its_subtree_two() {
        let job = 7;
        let mut keys = [
            entry_key(job, b"", b""),
            entry_key(job, b"", b"a"),
            entry_key(job, b"", b"a-b"),
            entry_key(job, b"a", b"x"),
            entry_key(job, b"a/x", b"y"),
            entry_key(job, b"a-b", b"z"),
            entry_key(job, b"a.c", b"z"),
            entry_key(job + 1, b"", b"a"),
        ];
        keys.sort();
        let in_range = |(from, to): &(Vec<u8>, Vec<u8>)| -> Vec<Vec<u8>> {
            keys.iter().filter(|k| *k >= from && *k < to).cloned().collect()
        };
        let [direct, deeper] = subtree_ranges(job, b"a");
        assert_eq!(in_range(&direct), vec![entry_key(job, b"a", b"x")]);
        assert_eq!(in_range(&deeper), vec![entry_key(job, b"a/x", b"y")]);
        let prefix = dir_prefix(job, b"");
        let root: Vec<_> = keys.iter().filter(|k| k.starts_with(&prefix)).collect();
        assert_eq!(root.len(), 3, "the root itself, a and a-b: {root:?}");
    }

    #[test]
    fn values_round_trip_and_garbage_is_corrupt() {
        let e = SyncedEntry { stat: EntryStat { dev: 1, ino: 2, size: 3, mtime_ns: -4, ctime_ns: 5 }, generation: 6 };
        assert_eq!(decode_entry(&encode_entry(&e)).unwrap(), e);
        let b = SyncedBasis { token: [3; 32], verified_unix_s: 9, generation: 6 };
        assert_eq!(decode_basis(&encode_basis(&b)).unwrap(), b);
        assert!(decode_entry(&[1, 2, 3]).is_err());
        assert!(decode_basis(&encode_entry(&e)[..40]).is_err());
    }
}
