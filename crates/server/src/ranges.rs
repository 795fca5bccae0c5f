//! Which byte ranges of an upload have arrived.

/// Disjoint, sorted, half-open byte ranges, merged as they are added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(u64, u64)>,
}

impl RangeSet {
    /// Adds `start..end`, merging with ranges it touches or overlaps.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        let (mut lo, mut hi) = (start, end);
        if first < last {
            lo = lo.min(self.ranges[first].0);
            hi = hi.max(self.ranges[last - 1].1);
        }
        self.ranges.splice(first..last, [(lo, hi)]);
    }

    /// Whether `start..end` is wholly covered.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e < end);
        self.ranges
            .get(i)
            .is_some_and(|&(s, e)| s <= start && end <= e)
    }

    /// How many bytes the ranges cover.
    pub fn covered(&self) -> u64 {
        self.ranges.iter().map(|&(s, e)| e - s).sum()
    }

    /// The ranges, as half-open `(start, end)` pairs.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn merges_in_any_order() {
        let mut set = RangeSet::default();
        set.insert(20, 30);
        set.insert(0, 10);
        assert_eq!(set.ranges(), [(0, 10), (20, 30)]);
        set.insert(10, 20);
        assert_eq!(set.ranges(), [(0, 30)]);
        set.insert(5, 25);
        assert_eq!(set.ranges(), [(0, 30)]);
        set.insert(40, 50);
        set.insert(35, 45);
        assert_eq!(set.ranges(), [(0, 30), (35, 50)]);
        set.insert(7, 7);
        assert_eq!(set.covered(), 45);
        assert!(set.contains(35, 50) && set.contains(0, 30) && set.contains(3, 4));
        assert!(!set.contains(25, 36) && !set.contains(30, 35) && !set.contains(49, 51));
        set.insert(0, 100);
        assert_eq!(set.ranges(), [(0, 100)]);
    }
}
