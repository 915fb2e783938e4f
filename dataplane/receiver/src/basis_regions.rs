//! Where the old version of wanted bytes probably lies, for a delta basis beyond the
//! small files that serve whole (`crate::basis`).
//!
//! When a large file changes, most of its chunks are found at the target (they are
//! copied locally) and a few are wanted. The chunks around a run of wanted ones — its
//! *anchors* — are copied from some local file, usually the file's previous version;
//! between the copies of the anchor before and the anchor after lies what the wanted run
//! replaced. That stretch, read from the target's own copy, is the run's basis: an edit
//! inside a chunk then costs the edited bytes, not the chunk (a disk image whose
//! filesystem moved files around, a database file with pages rewritten in place).
//!
//! Pure planning: slots in, regions out. Reading them is `crate::basis`.

/// Bytes looked at around a run beyond its own length (an edit may have grown or shrunk
/// what it replaced).
pub(crate) const REGION_SLACK_BYTES: u64 = 128 << 10;
/// Bytes one segment's regions cover at most (a segment carries ≤ 8 MiB of new data).
pub(crate) const SEGMENT_REGION_BYTES_MAX: u64 = 16 << 20;

/// A chunk of a segment, as the target resolved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot<'a> {
    /// Copied from a local file (`path`), `len` bytes at `offset`.
    Anchor { path: &'a [u8], offset: u64, len: u32 },
    /// Must come from the source.
    Wanted { len: u32 },
    /// A hole, a repeat within the file, or nothing to write.
    Other { len: u32 },
}

/// Bytes `[offset, offset + bytes)` of the local file `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Region {
    pub path: Vec<u8>,
    pub offset: u64,
    pub bytes: u64,
}

/// Where the last anchor of the file so far ended: carried from segment to segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AnchorEnd {
    pub path: Vec<u8>,
    pub end: u64,
}

/// The regions for the runs of wanted chunks in `slots`, given the anchor that ended
/// the file's previous segments (`before`). Sorted, merged where they overlap, and cut
/// at [`SEGMENT_REGION_BYTES_MAX`]. Returns the anchor end to carry to the next segment.
pub(crate) fn plan(before: Option<AnchorEnd>, slots: &[Slot<'_>]) -> (Vec<Region>, Option<AnchorEnd>) {
    let mut regions = Vec::new();
    let mut prev = before;
    let mut i = 0;
    while i < slots.len() {
        match slots[i] {
            Slot::Anchor { path, offset, len } => {
                prev = Some(AnchorEnd { path: path.to_vec(), end: offset + u64::from(len) });
                i += 1;
            }
            Slot::Other { .. } => i += 1,
            Slot::Wanted { .. } => {
                let mut run_bytes = 0u64;
                while let Some(Slot::Wanted { len } | Slot::Other { len }) = slots.get(i) {
                    run_bytes += u64::from(*len);
                    i += 1;
                }
                let next = match slots.get(i) {
                    Some(Slot::Anchor { path, offset, .. }) => Some((*path, *offset)),
                    _ => None,
                };
                let reach = run_bytes + REGION_SLACK_BYTES;
                let region = match (&prev, next) {
                    (Some(p), Some((path, start)))
                        if p.path == path
                            && start >= p.end
                            && start - p.end <= 2 * run_bytes + 2 * REGION_SLACK_BYTES =>
                    {
                        Region { path: p.path.clone(), offset: p.end, bytes: start - p.end }
                    }
                    (Some(p), _) => Region { path: p.path.clone(), offset: p.end, bytes: reach },
                    (None, Some((path, start))) => {
                        let offset = start.saturating_sub(reach);
                        Region { path: path.to_vec(), offset, bytes: start - offset }
                    }
                    (None, None) => continue,
                };
                if region.bytes > 0 {
                    regions.push(region);
                }
            }
        }
    }
    (merge_and_cap(regions), prev)
}

/// True when the absolute `path` lies under the directory `root`: a basis is read only
/// from the session's own tree (its signature tells the source about those bytes).
pub(crate) fn within(root: &[u8], path: &[u8]) -> bool {
    let root = root.strip_suffix(b"/").unwrap_or(root);
    path.strip_prefix(root).is_some_and(|rest| rest.first() == Some(&b'/'))
}

fn merge_and_cap(mut regions: Vec<Region>) -> Vec<Region> {
    regions.sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
    let mut merged: Vec<Region> = Vec::with_capacity(regions.len());
    for r in regions {
        match merged.last_mut() {
            Some(last) if last.path == r.path && r.offset <= last.offset + last.bytes => {
                last.bytes = last.bytes.max(r.offset + r.bytes - last.offset);
            }
            _ => merged.push(r),
        }
    }
    let mut left = SEGMENT_REGION_BYTES_MAX;
    merged.retain_mut(|r| {
        r.bytes = r.bytes.min(left);
        left -= r.bytes;
        r.bytes > 0
    });
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &[u8] = b"/t/disk.img";
    const OTHER: &[u8] = b"/t/other.img";

    fn anchor(path: &[u8], offset: u64, len: u32) -> Slot<'_> {
        Slot::Anchor { path, offset, len }
    }

    #[test]
    fn a_run_between_two_anchors_of_one_file_gets_the_stretch_between_their_copies() {
        // Old file: A at 0..100k, the old middle 100k..160k, B at 160k..260k.
        // New file: A, two wanted chunks (70k), B.
        let slots = [
            anchor(OLD, 0, 100_000),
            Slot::Wanted { len: 30_000 },
            Slot::Wanted { len: 40_000 },
            anchor(OLD, 160_000, 100_000),
        ];
        let (regions, carry) = plan(None, &slots);
        assert_eq!(regions, vec![Region { path: OLD.to_vec(), offset: 100_000, bytes: 60_000 }]);
        assert_eq!(carry, Some(AnchorEnd { path: OLD.to_vec(), end: 260_000 }));
    }

    #[test]
    fn a_run_with_one_anchor_looks_beyond_it_and_the_anchor_carries_over_segments() {
        // Segment 1 ends with an anchor; segment 2 starts with wanted bytes and no
        // anchor after them.
        let (_, carry) = plan(None, &[anchor(OLD, 1 << 20, 65_536)]);
        let (regions, carry2) = plan(carry.clone(), &[Slot::Wanted { len: 50_000 }, Slot::Other { len: 4096 }]);
        let start = (1 << 20) + 65_536;
        assert_eq!(regions, vec![Region { path: OLD.to_vec(), offset: start, bytes: 54_096 + REGION_SLACK_BYTES }]);
        assert_eq!(carry2, carry, "no anchor in the segment: the old one still stands");
        // Only an anchor after: the stretch before its copy.
        let (regions, _) = plan(None, &[Slot::Wanted { len: 10_000 }, anchor(OLD, 50_000, 100)]);
        assert_eq!(regions, vec![Region { path: OLD.to_vec(), offset: 0, bytes: 50_000 }]);
    }

    #[test]
    fn anchors_that_disagree_fall_back_to_the_one_before() {
        // The anchor after is in another file, or before the first, or far away.
        for next in [anchor(OTHER, 500_000, 100), anchor(OLD, 10, 100), anchor(OLD, 900 << 20, 100)] {
            let (regions, _) = plan(None, &[anchor(OLD, 0, 100), Slot::Wanted { len: 1000 }, next]);
            assert_eq!(regions, vec![Region { path: OLD.to_vec(), offset: 100, bytes: 1000 + REGION_SLACK_BYTES }]);
        }
    }

    #[test]
    fn only_the_sessions_own_tree_serves() {
        assert!(within(b"/t/job-a", b"/t/job-a/disk.img"));
        assert!(within(b"/t/job-a/", b"/t/job-a/d/disk.img"));
        assert!(!within(b"/t/job-a", b"/t/job-ab/disk.img"), "a sibling sharing the prefix");
        assert!(!within(b"/t/job-a", b"/t/job-b/disk.img"));
        assert!(!within(b"/t/job-a", b"/t/job-a"));
    }

    #[test]
    fn no_anchor_no_region_and_no_wanted_no_region() {
        assert_eq!(plan(None, &[Slot::Wanted { len: 1 << 20 }, Slot::Other { len: 10 }]).0, vec![]);
        assert_eq!(plan(None, &[anchor(OLD, 0, 10), Slot::Other { len: 10 }, anchor(OLD, 10, 10)]).0, vec![]);
    }

    #[test]
    fn overlapping_regions_merge_and_the_total_is_capped() {
        let slots = [
            anchor(OLD, 0, 1000),
            Slot::Wanted { len: 1000 },
            anchor(OLD, 3000, 1000),
            Slot::Wanted { len: 1000 },
            anchor(OLD, 20_000_000, 1000),
        ];
        let (regions, _) = plan(None, &slots);
        // [1000, 3000) and [4000, 4000 + 1000 + slack) are separate; the far anchor is
        // ignored for the second run.
        assert_eq!(regions.len(), 2);
        let (regions, _) = plan(
            None,
            &[anchor(OLD, 0, 1000), Slot::Wanted { len: 1000 }, anchor(OLD, 500, 10), Slot::Wanted { len: 1000 }],
        );
        assert_eq!(regions, vec![Region { path: OLD.to_vec(), offset: 510, bytes: 490 + 1000 + REGION_SLACK_BYTES }]);

        let big: Vec<Slot<'_>> =
            (0..40u64).flat_map(|k| [anchor(OLD, k * (4 << 20), 1), Slot::Wanted { len: 1 << 20 }]).collect();
        let (regions, _) = plan(None, &big);
        assert_eq!(regions.iter().map(|r| r.bytes).sum::<u64>(), SEGMENT_REGION_BYTES_MAX);
    }
}
