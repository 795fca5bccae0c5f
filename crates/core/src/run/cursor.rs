//! Where each source of a run stands: its [`Phase`] (moved only by
//! [`Phase::next`]), the blocks still to send and those acknowledged, the
//! CRC32Cs folded so far, and the [`Scheduler`] that hands out the next
//! task from them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use fileuploader_wire::{crc32c_join, CrcShift, RangeSet};
use tokio::sync::{mpsc, Notify};

use super::RunContext;
use crate::plan::Block;
use crate::source::lock;

/// How many times one source may start over because the receiver lost it.
pub(super) const MAX_RESYNCS: u32 = 3;
/// How long an abort may take before the run reports anyway.
pub(super) const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Where a source is in its life: moved only by [`Phase::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not asked about yet.
    New,
    /// Its receiver is being asked what it holds.
    Beginning,
    /// Blocks are going out.
    Sending,
    /// Every block is acknowledged; its landing is being confirmed.
    Finishing,
    /// It landed.
    Done,
}

/// What happens to a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A worker takes it up to ask the receiver.
    Taken,
    /// The receiver said what it holds and the rest is planned.
    Planned,
    /// Its last block is acknowledged and none is in flight.
    AllSent,
    /// A block's answer says the receiver lost track: ask it again.
    Resync,
    /// The receiver confirmed it landed (at its beginning, or its finish).
    Landed,
}

impl Phase {
    /// The phase after `event`, or `None` where the event cannot move this
    /// phase (a resync while it is being asked already, say): the phase
    /// stays.
    pub(super) fn next(self, event: Event) -> Option<Phase> {
        match (self, event) {
            (Phase::New, Event::Taken) => Some(Phase::Beginning),
            // A finish that finds the upload incomplete asks again from
            // Finishing, and plans from there.
            (Phase::Beginning | Phase::Finishing, Event::Planned) => Some(Phase::Sending),
            (Phase::Sending, Event::AllSent) => Some(Phase::Finishing),
            (Phase::Sending, Event::Resync) => Some(Phase::Beginning),
            (Phase::Beginning | Phase::Finishing, Event::Landed) => Some(Phase::Done),
            _ => None,
        }
    }
}

/// Where one source stands.
#[derive(Debug)]
pub(super) struct Cursor {
    pub(super) phase: Phase,
    /// Block indices still to send.
    pub(super) todo: RangeSet,
    /// Block indices acknowledged (in this run, or held by the receiver).
    pub(super) acked: RangeSet,
    pub(super) in_flight: usize,
    pub(super) acked_bytes: u64,
    pub(super) crcs: CrcFold,
    pub(super) resyncs: u32,
}

impl Cursor {
    /// Moves the source's phase by `event`; says whether it moved.
    pub(super) fn advance(&mut self, event: Event) -> bool {
        match self.phase.next(event) {
            Some(next) => {
                self.phase = next;
                true
            }
            None => {
                tracing::debug!("{event:?} leaves a source {:?}", self.phase);
                false
            }
        }
    }
}

/// Joins block CRC32Cs one after another. The shift for the job's block
/// size is computed once, when first needed: joining onto nothing (a CRC
/// of 0) gives the block's own CRC, so a file of one block never needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Joiner {
    block_size: u64,
    shift: Option<CrcShift>,
}

impl Joiner {
    pub(super) fn new(block_size: u64) -> Self {
        Joiner {
            block_size,
            shift: None,
        }
    }

    /// The CRC32C of `A‖B` from `a` and `b`, `B` being `len` bytes long.
    pub(super) fn join(&mut self, a: u32, b: u32, len: u64) -> u32 {
        if a == 0 {
            return b;
        }
        if len != self.block_size {
            return crc32c_join(a, b, len);
        }
        self.shift
            .get_or_insert_with(|| CrcShift::new(len))
            .join(a, b)
    }
}

/// Block CRC32Cs of one source, combined in order as they arrive.
#[derive(Debug)]
pub(super) struct CrcFold {
    /// Joins blocks onto what came before.
    pub(super) joiner: Joiner,
    /// The first block not folded in yet.
    pub(super) next: u64,
    pub(super) crc: u32,
    /// Blocks that arrived ahead of `next`: CRC and length.
    pub(super) pending: BTreeMap<u64, (u32, u64)>,
}

impl CrcFold {
    pub(super) fn new(block_size: u64) -> Self {
        CrcFold {
            joiner: Joiner::new(block_size),
            next: 0,
            crc: 0,
            pending: BTreeMap::new(),
        }
    }

    pub(super) fn add(&mut self, index: u64, crc: u32, len: u64) {
        if index < self.next {
            return;
        }
        if index == self.next && self.pending.is_empty() {
            // In order, as most blocks arrive: nothing to keep.
            self.crc = self.joiner.join(self.crc, crc, len);
            self.next += 1;
            return;
        }
        self.pending.insert(index, (crc, len));
        while let Some((crc, len)) = self.pending.remove(&self.next) {
            self.crc = self.joiner.join(self.crc, crc, len);
            self.next += 1;
        }
    }
}

pub(super) enum Task {
    Begin(usize),
    Block(Block),
    Finish(usize),
    Wait,
    Done,
}

/// The cursors of every source, and a wake-up for workers waiting on them.
pub(super) struct Scheduler {
    pub(super) cursors: Mutex<Vec<Cursor>>,
    pub(super) changed: Notify,
    /// Pings the supervisor to report progress.
    pub(super) progress: mpsc::UnboundedSender<()>,
}

impl Scheduler {
    pub(super) fn take(&self, ctx: &RunContext) -> Task {
        let mut cursors = lock(&self.cursors);
        // Blocks in flight are counted only while the limit is below the
        // workers' number, which bounds them otherwise.
        let pace_limit = ctx.pace.limit();
        let busy: usize = match pace_limit < ctx.job.thread_num {
            true => cursors.iter().map(|c| c.in_flight).sum(),
            false => 0,
        };
        let mut all_done = true;
        for (i, c) in cursors.iter_mut().enumerate() {
            all_done &= c.phase == Phase::Done;
            match c.phase {
                Phase::New => {
                    c.advance(Event::Taken);
                    return Task::Begin(i);
                }
                Phase::Sending => {
                    // Asked each time: a session may change them once it
                    // has begun (tus learns whether it can concatenate).
                    let limits = ctx.sources[i].session.constraints();
                    let limit = if limits.sequential {
                        1
                    } else {
                        limits.max_in_flight
                    };
                    if c.in_flight < limit && busy < pace_limit {
                        if let Some(index) = c.todo.pop_first() {
                            c.in_flight += 1;
                            if let Some(block) = ctx.plan.block(i, index) {
                                return Task::Block(block);
                            }
                        }
                    }
                    if c.todo.ranges().is_empty() && c.in_flight == 0 {
                        c.advance(Event::AllSent);
                        return Task::Finish(i);
                    }
                }
                _ => {}
            }
        }
        if all_done {
            Task::Done
        } else {
            Task::Wait
        }
    }

    pub(super) fn changed(&self) {
        self.changed.notify_waiters();
        let _ = self.progress.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::{CrcFold, Event, Joiner, Phase};

    #[test]
    fn each_phase_moves_only_on_its_events() {
        use Event::*;
        use Phase::*;
        let moves = [
            (New, Taken, Some(Beginning)),
            (Beginning, Planned, Some(Sending)),
            (Beginning, Landed, Some(Done)),
            (Sending, AllSent, Some(Finishing)),
            (Sending, Resync, Some(Beginning)),
            (Finishing, Planned, Some(Sending)),
            (Finishing, Landed, Some(Done)),
        ];
        let all_phases = [New, Beginning, Sending, Finishing, Done];
        let all_events = [Taken, Planned, AllSent, Resync, Landed];
        for phase in all_phases {
            for event in all_events {
                let expected = moves
                    .iter()
                    .find(|(p, e, _)| *p == phase && *e == event)
                    .and_then(|(_, _, to)| *to);
                assert_eq!(phase.next(event), expected, "{phase:?} on {event:?}");
            }
        }
        // A resync while the receiver is being asked, or the source
        // finishing, starts no second asking; nothing leaves Done.
        assert_eq!(Beginning.next(Resync), None);
        assert_eq!(Finishing.next(Resync), None);
        assert!(all_events.iter().all(|&e| Done.next(e).is_none()));
    }

    #[test]
    fn block_crcs_fold_into_the_whole_crc_in_any_order() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let blocks: Vec<&[u8]> = data.chunks(1024).collect();
        for order in [
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
            vec![3, 0, 2, 1, 9, 4, 8, 5, 7, 6],
        ] {
            let mut fold = CrcFold::new(1024);
            for &i in &order {
                let block = blocks[i];
                fold.add(i as u64, crc32c::crc32c(block), block.len() as u64);
                fold.add(i as u64, crc32c::crc32c(block), block.len() as u64);
            }
            assert_eq!(fold.next, 10, "{order:?}");
            assert!(fold.pending.is_empty());
            assert_eq!(fold.crc, crc32c::crc32c(&data), "{order:?}");
        }
    }

    #[test]
    fn joining_onto_a_crc_of_zero_is_the_block_and_needs_no_shift() {
        let mut joiner = Joiner::new(1024);
        for (b, len) in [(0x1234_5678, 1024), (0xdead_beef, 100), (0, 1024)] {
            assert_eq!(
                joiner.join(0, b, len),
                fileuploader_wire::crc32c_join(0, b, len)
            );
        }
        assert!(
            joiner.shift.is_none(),
            "a one-block source computes no shift"
        );
        assert_eq!(
            joiner.join(7, 9, 1024),
            fileuploader_wire::crc32c_join(7, 9, 1024)
        );
        assert!(joiner.shift.is_some());
    }
}
