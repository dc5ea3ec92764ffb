//! Turning the blobs a restore needs from one pack into few ranged reads:
//! blobs are taken in pack order and each is merged into the range before it
//! when the unneeded gap between them is small and the merged range stays
//! within a cap. A pure function, so that the rules are easy to test.

/// Neighbouring blobs separated by at most this many unneeded bytes are read
/// in one range. On Telegram a ranged read is a series of `upload.getFile`
/// requests of up to 512 KiB each, so reading a gap of 256 KiB costs at most
/// half a request's worth of bytes, while a separate read costs at least one
/// more round trip (and its start is aligned down anyway). On a local disk
/// 256 KiB more in one sequential read is cheaper than another read call. The
/// gap is also the chunker's default minimum chunk size: skipping anything
/// smaller than one blob of a large file is not worth a round trip.
pub const MAX_RANGE_GAP: u64 = 256 << 10;

/// A merged range never grows beyond this many bytes; a single blob that is
/// larger is read alone. 8 MiB holds two of the largest chunks the default
/// chunker makes (4 MiB), amortises a read over 16 Telegram requests, and
/// keeps memory bounded: a restore holds at most one range of sealed data per
/// worker.
pub const MAX_RANGE_LEN: u64 = 8 << 20;

/// `len` bytes of a pack from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub offset: u64,
    pub len: u64,
}

impl Span {
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// One read: the span to fetch and which blobs (indices into the input) it
/// covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergedRange {
    pub span: Span,
    pub blobs: std::ops::Range<usize>,
}

/// Merges `blobs`, sorted by offset, into ranges: a blob joins the range
/// before it when the gap between them is at most `max_gap` and the range
/// would then be at most `max_len` bytes long; otherwise it starts a new
/// range. Every blob lies in exactly one range, and ranges start at their
/// first blob and end at their last, so no bytes are read beyond the blobs
/// and the gaps between them.
pub fn merge_ranges(blobs: &[Span], max_gap: u64, max_len: u64) -> Vec<MergedRange> {
    debug_assert!(blobs.windows(2).all(|w| w[0].offset <= w[1].offset), "blobs must be sorted by offset");
    let mut ranges: Vec<MergedRange> = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        if let Some(last) = ranges.last_mut() {
            let gap = blob.offset.saturating_sub(last.span.end());
            let end = last.span.end().max(blob.end());
            if gap <= max_gap && end - last.span.offset <= max_len {
                last.span.len = end - last.span.offset;
                last.blobs.end = i + 1;
                continue;
            }
        }
        ranges.push(MergedRange { span: *blob, blobs: i..i + 1 });
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn span(offset: u64, len: u64) -> Span {
        Span { offset, len }
    }

    #[test]
    fn close_blobs_merge_and_distant_ones_do_not() {
        let blobs = [span(0, 100), span(100, 50), span(160, 40), span(10_000, 10), span(10_015, 5)];
        let ranges = merge_ranges(&blobs, 20, 1 << 20);
        assert_eq!(
            ranges,
            vec![MergedRange { span: span(0, 200), blobs: 0..3 }, MergedRange { span: span(10_000, 20), blobs: 3..5 },]
        );
    }

    #[test]
    fn the_cap_splits_a_contiguous_run() {
        let blobs: Vec<Span> = (0..10).map(|i| span(i * 100, 100)).collect();
        let ranges = merge_ranges(&blobs, 0, 300);
        let lens: Vec<u64> = ranges.iter().map(|r| r.span.len).collect();
        assert_eq!(lens, vec![300, 300, 300, 100]);
        assert_eq!(ranges[3].blobs, 9..10);
    }

    #[test]
    fn a_blob_larger_than_the_cap_is_read_alone() {
        let blobs = [span(0, 10), span(10, 1000), span(1010, 10)];
        let ranges = merge_ranges(&blobs, 0, 100);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges[1], MergedRange { span: span(10, 1000), blobs: 1..2 });
    }

    #[test]
    fn nothing_in_gives_nothing_out() {
        assert!(merge_ranges(&[], MAX_RANGE_GAP, MAX_RANGE_LEN).is_empty());
    }

    /// Sorted, non-overlapping blobs from (gap before, length) pairs.
    fn layout(parts: &[(u64, u64)]) -> Vec<Span> {
        let mut pos = 0;
        parts
            .iter()
            .map(|&(gap, len)| {
                let s = span(pos + gap, len);
                pos = s.end();
                s
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_blob_is_covered_once_and_ranges_respect_the_limits(
            parts in proptest::collection::vec((0u64..3000, 1u64..2000), 0..60),
            max_gap in 0u64..2000,
            max_len in 1u64..8000,
        ) {
            let blobs = layout(&parts);
            let ranges = merge_ranges(&blobs, max_gap, max_len);
            // The blob index ranges partition 0..n in order.
            let mut next = 0;
            for r in &ranges {
                prop_assert_eq!(r.blobs.start, next);
                prop_assert!(r.blobs.end > r.blobs.start);
                next = r.blobs.end;
                let covered = &blobs[r.blobs.clone()];
                // Tight: from the first blob's start to the last blob's end.
                prop_assert_eq!(r.span.offset, covered[0].offset);
                prop_assert_eq!(r.span.end(), covered[covered.len() - 1].end());
                prop_assert!(r.span.len <= max_len || covered.len() == 1);
                for pair in covered.windows(2) {
                    prop_assert!(pair[1].offset - pair[0].end() <= max_gap);
                }
            }
            prop_assert_eq!(next, blobs.len());
            for pair in ranges.windows(2) {
                prop_assert!(pair[0].span.end() <= pair[1].span.offset, "sorted and non-overlapping");
                // Split only where merging was not allowed.
                let gap = pair[1].span.offset - pair[0].span.end();
                let merged_len = blobs[pair[1].blobs.start].end() - pair[0].span.offset;
                prop_assert!(gap > max_gap || merged_len > max_len);
            }
        }
    }
}
