//! Sets of byte ranges: what a receiver holds of an upload.

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

    /// Removes `start..end`, splitting a range it falls inside.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let first = self.ranges.partition_point(|&(_, e)| e <= start);
        let last = self.ranges.partition_point(|&(s, _)| s < end);
        if first >= last {
            return;
        }
        let mut kept = Vec::with_capacity(2);
        if self.ranges[first].0 < start {
            kept.push((self.ranges[first].0, start));
        }
        if self.ranges[last - 1].1 > end {
            kept.push((end, self.ranges[last - 1].1));
        }
        self.ranges.splice(first..last, kept);
    }

    /// Removes and returns the smallest value covered, if any.
    pub fn pop_first(&mut self) -> Option<u64> {
        let &(start, _) = self.ranges.first()?;
        self.remove(start, start + 1);
        Some(start)
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

    #[test]
    fn removes_and_pops() {
        let mut set = RangeSet::default();
        set.insert(0, 10);
        set.insert(20, 30);
        set.remove(5, 25);
        assert_eq!(set.ranges(), [(0, 5), (25, 30)]);
        set.remove(2, 3);
        assert_eq!(set.ranges(), [(0, 2), (3, 5), (25, 30)]);
        set.remove(30, 40);
        set.remove(7, 7);
        assert_eq!(set.covered(), 9);
        let popped: Vec<u64> = std::iter::from_fn(|| set.pop_first()).collect();
        assert_eq!(popped, [0, 1, 3, 4, 25, 26, 27, 28, 29]);
        assert!(set.ranges().is_empty());
    }
}
