//! Cutting sources into blocks.

use fileuploader_wire::{ContentRange, RangeSet};

/// One request's worth of a source: bytes `offset .. offset + len` of a source
/// of `total` bytes, block `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Which source of the job, in the order they were added.
    pub source: usize,
    /// The block's number within its source, from 0.
    pub index: u64,
    /// How many blocks the source has (at least 1: an empty source is one
    /// empty block).
    pub count: u64,
    /// The offset of the first byte.
    pub offset: u64,
    /// The number of bytes.
    pub len: u64,
    /// The length of the whole source.
    pub total: u64,
}

impl Block {
    /// The block's `Content-Range`, or `None` when the source is a single
    /// block and is sent whole.
    pub fn content_range(&self) -> Option<ContentRange> {
        (self.count > 1).then_some(ContentRange {
            start: self.offset,
            end: self.offset + self.len,
            total: self.total,
        })
    }
}

/// How the sources of a job are cut into blocks: block `index` of source
/// `source` covers bytes `index × block_size ..` of it. Nothing is stored per
/// block, so a source of any size costs the same.
#[derive(Debug, Clone)]
pub struct BlockPlan {
    block_size: u64,
    lens: Vec<u64>,
}

impl BlockPlan {
    /// A plan for sources of the given lengths, cut into `block_size` blocks.
    ///
    /// # Panics
    ///
    /// If `block_size` is 0; jobs are validated before they are planned.
    pub fn new(lens: Vec<u64>, block_size: u64) -> Self {
        assert!(block_size > 0, "block size must be positive");
        BlockPlan { block_size, lens }
    }

    /// How many blocks source `source` has (an empty source is one empty
    /// block); 0 for no such source.
    pub fn count(&self, source: usize) -> u64 {
        self.lens
            .get(source)
            .map_or(0, |&len| len.div_ceil(self.block_size).max(1))
    }

    /// How many blocks the whole job has.
    pub fn total_blocks(&self) -> u64 {
        (0..self.lens.len()).map(|i| self.count(i)).sum()
    }

    /// Block `index` of source `source`, or `None` past its end.
    pub fn block(&self, source: usize, index: u64) -> Option<Block> {
        let count = self.count(source);
        if index >= count {
            return None;
        }
        let total = self.lens[source];
        let offset = index * self.block_size;
        Some(Block {
            source,
            index,
            count,
            offset,
            len: self.block_size.min(total - offset),
            total,
        })
    }

    /// The blocks of `source` that lie wholly inside `held` byte ranges, as
    /// half-open ranges of block indices.
    pub fn blocks_within(&self, source: usize, held: &RangeSet) -> RangeSet {
        let mut blocks = RangeSet::default();
        let (Some(&total), count) = (self.lens.get(source), self.count(source)) else {
            return blocks;
        };
        for &(start, end) in held.ranges() {
            let first = start.div_ceil(self.block_size);
            let last = if end >= total {
                count
            } else {
                end / self.block_size
            };
            blocks.insert(first, last.min(count));
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(plan: &BlockPlan, sources: usize) -> Vec<Block> {
        (0..sources)
            .flat_map(|s| (0..plan.count(s)).map(move |i| (s, i)))
            .map(|(s, i)| plan.block(s, i).unwrap())
            .collect()
    }

    #[test]
    fn cuts_sources_into_exact_ranges() {
        let plan = BlockPlan::new(vec![25, 10, 0, 11], 10);
        assert_eq!(plan.total_blocks(), 7);
        let ranges: Vec<_> = all(&plan, 4)
            .iter()
            .map(|b| {
                let range = b.content_range().map(|r| r.to_string());
                (b.source, b.index, b.offset, b.len, range)
            })
            .collect();
        assert_eq!(
            ranges,
            vec![
                (0, 0, 0, 10, Some("bytes 0-9/25".into())),
                (0, 1, 10, 10, Some("bytes 10-19/25".into())),
                (0, 2, 20, 5, Some("bytes 20-24/25".into())),
                (1, 0, 0, 10, None),
                (2, 0, 0, 0, None),
                (3, 0, 0, 10, Some("bytes 0-9/11".into())),
                (3, 1, 10, 1, Some("bytes 10-10/11".into())),
            ]
        );
        assert_eq!(plan.block(0, 3), None);
        assert_eq!(plan.count(4), 0);
    }

    #[test]
    fn held_ranges_cover_only_whole_blocks() {
        let plan = BlockPlan::new(vec![45], 10);
        let mut held = RangeSet::default();
        held.insert(0, 20);
        held.insert(25, 45);
        assert_eq!(plan.blocks_within(0, &held).ranges(), [(0, 2), (3, 5)]);
        let mut partial = RangeSet::default();
        partial.insert(5, 19);
        assert!(plan.blocks_within(0, &partial).ranges().is_empty());
    }

    #[test]
    fn huge_files_need_no_per_block_storage() {
        let plan = BlockPlan::new(vec![1 << 40], 10240);
        assert_eq!(plan.total_blocks(), (1u64 << 40).div_ceil(10240));
        let last = plan.block(0, plan.total_blocks() - 1).unwrap();
        assert_eq!(last.offset + last.len, 1 << 40);
    }
}
