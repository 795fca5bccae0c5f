//! Cutting sources into blocks, and handing the blocks out to workers.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The `Content-Range` header value, `bytes first-last/total`, or `None`
    /// when the source is a single block and is sent whole.
    pub fn content_range(&self) -> Option<String> {
        (self.count > 1).then(|| {
            format!(
                "bytes {}-{}/{}",
                self.offset,
                self.offset + self.len - 1,
                self.total
            )
        })
    }
}

/// The blocks of every source of a job, handed out once each, in order,
/// to whichever worker asks next. Nothing is stored per block.
#[derive(Debug)]
pub struct BlockPlan {
    block_size: u64,
    lens: Vec<u64>,
    /// `starts[i]` is the job-wide number of source `i`'s first block.
    starts: Vec<u64>,
    total_blocks: u64,
    next: AtomicU64,
    /// Job-wide block numbers already acknowledged in an earlier run, one
    /// bit each.
    done: Vec<u64>,
}

impl BlockPlan {
    /// A plan for sources of the given lengths, cut into `block_size` blocks.
    ///
    /// # Panics
    ///
    /// If `block_size` is 0; jobs are validated before they are planned.
    pub fn new(lens: Vec<u64>, block_size: u64) -> Self {
        assert!(block_size > 0, "block size must be positive");
        let mut starts = Vec::with_capacity(lens.len());
        let mut total_blocks = 0;
        for &len in &lens {
            starts.push(total_blocks);
            total_blocks += Self::blocks_of(len, block_size);
        }
        BlockPlan {
            block_size,
            lens,
            starts,
            total_blocks,
            next: AtomicU64::new(0),
            done: Vec::new(),
        }
    }

    /// Marks block `index` of `source` as acknowledged already: it is not
    /// handed out. Returns its length, or `None` if there is no such block
    /// or it was marked before.
    pub fn mark_done(&mut self, source: usize, index: u64) -> Option<u64> {
        let start = *self.starts.get(source)?;
        let total = self.lens[source];
        if index >= Self::blocks_of(total, self.block_size) {
            return None;
        }
        let n = start + index;
        if self.done.is_empty() {
            self.done = vec![0; self.total_blocks.div_ceil(64) as usize];
        }
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if self.done[word] & bit != 0 {
            return None;
        }
        self.done[word] |= bit;
        Some(self.block(n).map_or(0, |b| b.len))
    }

    fn is_done(&self, n: u64) -> bool {
        self.done
            .get((n / 64) as usize)
            .is_some_and(|w| w & (1 << (n % 64)) != 0)
    }

    fn blocks_of(len: u64, block_size: u64) -> u64 {
        len.div_ceil(block_size).max(1)
    }

    /// How many blocks the whole job has.
    pub fn total_blocks(&self) -> u64 {
        self.total_blocks
    }

    /// The job-wide block number `n`, or `None` past the end.
    pub fn block(&self, n: u64) -> Option<Block> {
        if n >= self.total_blocks {
            return None;
        }
        let source = self.starts.partition_point(|&s| s <= n) - 1;
        let total = self.lens[source];
        let index = n - self.starts[source];
        let offset = index * self.block_size;
        Some(Block {
            source,
            index,
            count: Self::blocks_of(total, self.block_size),
            offset,
            len: self.block_size.min(total - offset),
            total,
        })
    }

    /// The next block nobody has taken yet and no earlier run completed.
    pub fn next_block(&self) -> Option<Block> {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            if !self.is_done(n) {
                return self.block(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(plan: &BlockPlan) -> Vec<Block> {
        std::iter::from_fn(|| plan.next_block()).collect()
    }

    #[test]
    fn cuts_sources_into_exact_ranges() {
        let plan = BlockPlan::new(vec![25, 10, 0, 11], 10);
        let blocks = all(&plan);
        assert_eq!(plan.total_blocks(), 7);
        let ranges: Vec<_> = blocks
            .iter()
            .map(|b| (b.source, b.index, b.offset, b.len, b.content_range()))
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
        assert_eq!(plan.next_block(), None);
    }

    #[test]
    fn blocks_marked_done_are_skipped() {
        let mut plan = BlockPlan::new(vec![25, 30], 10);
        assert_eq!(plan.mark_done(0, 2), Some(5));
        assert_eq!(plan.mark_done(0, 2), None, "counted once");
        assert_eq!(plan.mark_done(1, 0), Some(10));
        assert_eq!(plan.mark_done(1, 3), None);
        assert_eq!(plan.mark_done(2, 0), None);
        let left: Vec<_> = all(&plan).iter().map(|b| (b.source, b.index)).collect();
        assert_eq!(left, [(0, 0), (0, 1), (1, 1), (1, 2)]);
    }

    #[test]
    fn huge_files_need_no_per_block_storage() {
        let plan = BlockPlan::new(vec![1 << 40], 10240);
        assert_eq!(plan.total_blocks(), (1u64 << 40).div_ceil(10240));
        let last = plan.block(plan.total_blocks() - 1).unwrap();
        assert_eq!(last.offset + last.len, 1 << 40);
    }
}
