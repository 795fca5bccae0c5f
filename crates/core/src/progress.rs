//! The percentage a job reports: 0 first, rising on change only, 100 last.

/// Where a run's percentage stands. Each transition returns the percentage to
/// report, or `None` when nothing is to be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Percentage {
    /// Nothing reported yet.
    NotStarted,
    /// The last percentage reported; below 100 while blocks are outstanding.
    Running(u8),
    /// 100 was reported; nothing follows.
    Complete,
}

impl Percentage {
    /// The run starts: report 0.
    pub(crate) fn start(&mut self) -> Option<u8> {
        match self {
            Percentage::NotStarted => {
                *self = Percentage::Running(0);
                Some(0)
            }
            _ => None,
        }
    }

    /// `acked` of `total` bytes are acknowledged, but not every block yet:
    /// report the whole-number percentage if it rose, never 100.
    pub(crate) fn advance(&mut self, acked: u64, total: u64) -> Option<u8> {
        let Percentage::Running(last) = *self else {
            return None;
        };
        let now = if total == 0 {
            0
        } else {
            (u128::from(acked.min(total)) * 100 / u128::from(total)).min(99) as u8
        };
        (now > last).then(|| {
            *self = Percentage::Running(now);
            now
        })
    }

    /// Every block is acknowledged: report 100.
    pub(crate) fn complete(&mut self) -> Option<u8> {
        match self {
            Percentage::Running(_) => {
                *self = Percentage::Complete;
                Some(100)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Percentage::{self, *};

    #[test]
    fn not_started_reports_zero_once() {
        let mut p = NotStarted;
        assert_eq!(p.advance(5, 10), None, "nothing before start");
        assert_eq!(p.complete(), None, "no 100 before start");
        assert_eq!(p.start(), Some(0));
        assert_eq!(p, Running(0));
        assert_eq!(p.start(), None);
    }

    #[test]
    fn running_reports_rises_only() {
        let mut p = Running(0);
        assert_eq!(p.advance(0, 10), None);
        assert_eq!(p.advance(3, 10), Some(30));
        assert_eq!(p.advance(3, 10), None, "no repeat");
        assert_eq!(p.advance(2, 10), None, "never down");
        assert_eq!(p.advance(1001, 2000), Some(50));
        assert_eq!(p, Running(50));
    }

    #[test]
    fn running_never_reaches_100_before_complete() {
        let mut p = Running(0);
        assert_eq!(p.advance(10, 10), Some(99));
        assert_eq!(p.advance(0, 0), None, "empty sources stay at 0 / 99");
        assert_eq!(p.complete(), Some(100));
        assert_eq!(p, Complete);
    }

    #[test]
    fn complete_is_final() {
        let mut p: Percentage = Complete;
        assert_eq!(p.start(), None);
        assert_eq!(p.advance(1, 2), None);
        assert_eq!(p.complete(), None);
    }

    #[test]
    fn huge_totals_do_not_overflow() {
        let mut p = Running(0);
        assert_eq!(p.advance(u64::MAX / 2, u64::MAX), Some(49));
    }
}
