//! The receiver's decisions on a segment and on a file's end, as pure functions: frame
//! facts in, what to do out. The session loop (`session.rs`) looks chunks up in the
//! store, writes, syncs and answers; these functions say what it must do.

use std::collections::HashMap;

use xtsync_chunker::ChunkName;
use xtsync_wire::ChunkRef;

use crate::assemble::ChunkSource;

/// Where each chunk of a segment comes from, before the chunk index is asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SegmentPlan {
    /// One per chunk: `Zero`, `Earlier` (a repeat within the file), or `Wire` for the
    /// ones listed in `lookup` until the index answers.
    pub sources: Vec<ChunkSource>,
    /// Indexes of the chunks to look up in the chunk index (each name once per file).
    pub lookup: Vec<usize>,
    /// Offset where the next segment starts.
    pub end_offset: u64,
}

/// A segment that goes past the size its file announced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PastTheEnd {
    pub end_offset: u64,
    pub size: u64,
}

/// Plans a segment of a file starting at `start` of `size` bytes. `takes_data`: the
/// file neither failed nor is already in place (otherwise its chunks are consumed but
/// not written). `placed` (names written into this file so far, at which offset)
/// learns the chunks this segment will place.
pub(crate) fn plan_segment(
    chunks: &[ChunkRef],
    start: u64,
    size: u64,
    takes_data: bool,
    placed: &mut HashMap<ChunkName, u64>,
) -> Result<SegmentPlan, PastTheEnd> {
    let mut sources = vec![ChunkSource::Zero; chunks.len()];
    let mut lookup = Vec::new();
    let mut offset = start;
    for (i, c) in chunks.iter().enumerate() {
        if c.zero || !takes_data {
            // Holes stay holes; a failed or unchanged file takes no data.
        } else if let Some(&earlier) = placed.get(&ChunkName(c.name)) {
            sources[i] = ChunkSource::Earlier { offset: earlier };
        } else {
            placed.insert(ChunkName(c.name), offset);
            sources[i] = ChunkSource::Wire;
            lookup.push(i);
        }
        offset += u64::from(c.len);
    }
    if offset > size {
        return Err(PastTheEnd { end_offset: offset, size });
    }
    Ok(SegmentPlan { sources, lookup, end_offset: offset })
}

/// What the source said and the receiver saw of a file when its `FileEnd` arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileEndFacts {
    /// The source saw the file change while reading it.
    pub aborted: bool,
    /// Bytes the segments covered, and the size the file announced.
    pub covered_bytes: u64,
    pub size: u64,
    /// The digest of the chunk names received matches the one in `FileEnd`.
    pub digest_matches: bool,
    /// The receiver already holds exactly this version.
    pub unchanged: bool,
    /// The file failed earlier (bad path, no space, a chunk that did not verify).
    pub failed_earlier: bool,
}

/// The verdict on a file at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileEndVerdict {
    /// Already in place, exactly: acknowledge, nothing to write or sync.
    AlreadyInPlace,
    /// Complete and verified: through the durability barrier, then acknowledged.
    Commit,
    /// Refused: the temporary copy goes (or stays, if checkpointed) and the source is
    /// told why (`None`: the earlier failure's reason stands).
    Fail(Option<String>),
}

/// Judges a file at its end. The first failure wins: an earlier one, then the
/// source's abort, then a manifest that does not cover the file, then the digest.
pub(crate) fn file_end(f: FileEndFacts) -> FileEndVerdict {
    let reason = if f.failed_earlier {
        return FileEndVerdict::Fail(None);
    } else if f.aborted {
        Some("the source saw the file change while reading it".to_string())
    } else if f.covered_bytes != f.size {
        Some(format!("manifest covers {} bytes, file has {}", f.covered_bytes, f.size))
    } else if !f.digest_matches {
        Some("manifest digest mismatch".to_string())
    } else {
        None
    };
    match (reason, f.unchanged) {
        (Some(reason), _) => FileEndVerdict::Fail(Some(reason)),
        (None, true) => FileEndVerdict::AlreadyInPlace,
        (None, false) => FileEndVerdict::Commit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u8, len: u32) -> ChunkRef {
        ChunkRef { name: [n; 32], len, zero: false }
    }

    #[test]
    fn a_repeated_chunk_is_copied_from_where_this_file_placed_it_and_looked_up_once() {
        let mut placed = HashMap::new();
        let plan = plan_segment(&[chunk(1, 10), chunk(2, 20), chunk(1, 10)], 100, 1_000, true, &mut placed).unwrap();
        assert_eq!(plan.sources, vec![ChunkSource::Wire, ChunkSource::Wire, ChunkSource::Earlier { offset: 100 }]);
        assert_eq!(plan.lookup, vec![0, 1]);
        assert_eq!(plan.end_offset, 140);
        // The next segment repeats a chunk of this one.
        let next = plan_segment(&[chunk(2, 20)], plan.end_offset, 1_000, true, &mut placed).unwrap();
        assert_eq!(next.sources, vec![ChunkSource::Earlier { offset: 110 }]);
        assert!(next.lookup.is_empty());
    }

    #[test]
    fn holes_and_files_that_take_no_data_ask_for_nothing() {
        let mut placed = HashMap::new();
        let hole = ChunkRef { zero: true, ..chunk(9, 4096) };
        let plan = plan_segment(&[hole, chunk(3, 5)], 0, 4101, false, &mut placed).unwrap();
        assert_eq!(plan.sources, vec![ChunkSource::Zero, ChunkSource::Zero]);
        assert!(plan.lookup.is_empty() && placed.is_empty());
        assert_eq!(plan.end_offset, 4101);
    }

    #[test]
    fn a_segment_past_the_announced_size_is_refused() {
        let mut placed = HashMap::new();
        assert_eq!(
            plan_segment(&[chunk(1, 10), chunk(2, 10)], 0, 15, true, &mut placed),
            Err(PastTheEnd { end_offset: 20, size: 15 })
        );
    }

    fn complete() -> FileEndFacts {
        FileEndFacts {
            aborted: false,
            covered_bytes: 50,
            size: 50,
            digest_matches: true,
            unchanged: false,
            failed_earlier: false,
        }
    }

    #[test]
    fn a_complete_verified_file_is_committed_and_an_identical_one_only_acknowledged() {
        assert_eq!(file_end(complete()), FileEndVerdict::Commit);
        assert_eq!(file_end(FileEndFacts { unchanged: true, ..complete() }), FileEndVerdict::AlreadyInPlace);
    }

    #[test]
    fn the_first_failure_is_the_one_reported() {
        let all_wrong = FileEndFacts { aborted: true, covered_bytes: 40, digest_matches: false, ..complete() };
        assert_eq!(file_end(FileEndFacts { failed_earlier: true, ..all_wrong }), FileEndVerdict::Fail(None));
        assert_eq!(
            file_end(all_wrong),
            FileEndVerdict::Fail(Some("the source saw the file change while reading it".into()))
        );
        assert_eq!(
            file_end(FileEndFacts { aborted: false, ..all_wrong }),
            FileEndVerdict::Fail(Some("manifest covers 40 bytes, file has 50".into()))
        );
        assert_eq!(
            file_end(FileEndFacts { digest_matches: false, ..complete() }),
            FileEndVerdict::Fail(Some("manifest digest mismatch".into()))
        );
    }

    #[test]
    fn an_unchanged_file_that_fails_its_checks_is_not_acknowledged_as_in_place() {
        let bad = FileEndFacts { unchanged: true, digest_matches: false, ..complete() };
        assert_eq!(file_end(bad), FileEndVerdict::Fail(Some("manifest digest mismatch".into())));
    }
}
