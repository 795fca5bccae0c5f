//! Workers, the job-wide bound, per-source cursors, and the one outcome.
//!
//! Up to `thread_num` workers take tasks from the cursors, sources in the
//! order they were added: begin a source (ask the receiver what it holds),
//! send one of its blocks within its session's constraints, or finish it
//! once all its blocks are acknowledged. A resync re-plans one source from
//! what the receiver says it holds.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fileuploader_wire::{crc32c_join, CrcShift, RangeSet};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use crate::attempt::{self, Sent};
use crate::error::{code, Error, ErrorKind};
use crate::job::SourceLanding;
use crate::journal::{JournaledAck, Resume};
use crate::plan::Block;
use crate::progress::Percentage;
use crate::protocol::{Finish, Holding, Integrity, Landing};
use crate::resume::crc32c_of;
use crate::run::RunContext;
use crate::source::lock;

/// How many times one source may start over because the receiver lost it.
const MAX_RESYNCS: u32 = 3;
/// How long an abort may take before the run reports anyway.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// Where a source is in its life: moved only by [`Phase::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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
enum Event {
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
    fn next(self, event: Event) -> Option<Phase> {
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
struct Cursor {
    phase: Phase,
    /// Block indices still to send.
    todo: RangeSet,
    /// Block indices acknowledged (in this run, or held by the receiver).
    acked: RangeSet,
    in_flight: usize,
    acked_bytes: u64,
    crcs: CrcFold,
    resyncs: u32,
}

impl Cursor {
    /// Moves the source's phase by `event`; says whether it moved.
    fn advance(&mut self, event: Event) -> bool {
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

/// Block CRC32Cs of one source, combined in order as they arrive.
#[derive(Debug)]
struct CrcFold {
    /// Joins a block of the job's block size, the length of all but the
    /// last.
    shift: CrcShift,
    /// The first block not folded in yet.
    next: u64,
    crc: u32,
    /// Blocks that arrived ahead of `next`: CRC and length.
    pending: BTreeMap<u64, (u32, u64)>,
}

impl CrcFold {
    fn new(block_size: u64) -> Self {
        CrcFold {
            shift: CrcShift::new(block_size),
            next: 0,
            crc: 0,
            pending: BTreeMap::new(),
        }
    }

    fn add(&mut self, index: u64, crc: u32, len: u64) {
        if index < self.next {
            return;
        }
        if index == self.next && self.pending.is_empty() {
            // In order, as most blocks arrive: nothing to keep.
            self.crc = self.join(self.crc, crc, len);
            self.next += 1;
            return;
        }
        self.pending.insert(index, (crc, len));
        while let Some((crc, len)) = self.pending.remove(&self.next) {
            self.crc = self.join(self.crc, crc, len);
            self.next += 1;
        }
    }

    fn join(&self, a: u32, b: u32, len: u64) -> u32 {
        if len == self.shift.len() {
            self.shift.join(a, b)
        } else {
            crc32c_join(a, b, len)
        }
    }
}

enum Task {
    Begin(usize),
    Block(Block),
    Finish(usize),
    Wait,
    Done,
}

/// The cursors of every source, and a wake-up for workers waiting on them.
struct Scheduler {
    cursors: Mutex<Vec<Cursor>>,
    changed: Notify,
    /// Pings the supervisor to report progress.
    progress: mpsc::UnboundedSender<()>,
}

impl Scheduler {
    fn take(&self, ctx: &RunContext) -> Task {
        let mut cursors = lock(&self.cursors);
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
                    if c.in_flight < limit {
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

    fn changed(&self) {
        self.changed.notify_waiters();
        let _ = self.progress.send(());
    }
}

/// Starts the workers, reports progress, and settles the one outcome.
pub(crate) async fn supervise(ctx: Arc<RunContext>) -> Result<(), Error> {
    let state = &ctx.job.state;
    let total_blocks = ctx.plan.total_blocks();
    state.start(ctx.total_bytes, total_blocks);
    let mut percentage = Percentage::NotStarted;
    ctx.events.percent(&ctx.job, percentage.start());

    let (progress, mut pings) = mpsc::unbounded_channel();
    let cursors = (0..ctx.sources.len())
        .map(|_| Cursor {
            phase: Phase::New,
            todo: RangeSet::default(),
            acked: RangeSet::default(),
            in_flight: 0,
            acked_bytes: 0,
            crcs: CrcFold::new(ctx.job.block_size),
            resyncs: 0,
        })
        .collect();
    let scheduler = Arc::new(Scheduler {
        cursors: Mutex::new(cursors),
        changed: Notify::new(),
        progress,
    });
    let mut workers = JoinSet::new();
    for _ in 0..ctx.job.thread_num {
        workers.spawn(worker(ctx.clone(), scheduler.clone()));
    }

    let outcome = loop {
        tokio::select! {
            biased;
            () = ctx.cancel.notify.notified() => break Err(Error::cancelled()),
            Some(()) = pings.recv() => {
                let acked = state.acked.load(Ordering::Relaxed);
                ctx.events.percent(&ctx.job, percentage.advance(acked, ctx.total_bytes));
            }
            joined = workers.join_next() => match joined {
                None => break Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => break Err(e),
                Some(Err(e)) => break Err(Error::new(
                    ErrorKind::Run,
                    code::FAILED,
                    format!("an upload task failed: {e}"),
                )),
            },
        }
    };
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    let all_done = lock(&scheduler.cursors)
        .iter()
        .all(|c| c.phase == Phase::Done);
    match outcome {
        Ok(()) if all_done => {
            if matches!(ctx.job.resume, Resume::In(_)) {
                let job = ctx.job.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || job.remove_journals()).await
                {
                    tracing::warn!("cannot remove a finished resume journal: {e}");
                }
            }
            ctx.events.percent(&ctx.job, percentage.complete());
            Ok(())
        }
        // Workers only stop early when told to.
        Ok(()) => Err(Error::cancelled()),
        Err(e) => {
            abort_unfinished(&ctx, &scheduler).await;
            Err(e)
        }
    }
}

/// Discards what the receiver holds of sources that will not land, when
/// nothing could resume them later.
async fn abort_unfinished(ctx: &RunContext, scheduler: &Scheduler) {
    if ctx.job.resume != Resume::Off {
        return;
    }
    let begun: Vec<usize> = lock(&scheduler.cursors)
        .iter()
        .enumerate()
        .filter(|(_, c)| !matches!(c.phase, Phase::New | Phase::Done))
        .map(|(i, _)| i)
        .collect();
    for i in begun {
        let source = &ctx.sources[i];
        let aborted = tokio::time::timeout(ABORT_WAIT, source.session.abort(&*ctx.transport));
        match aborted.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot discard the upload of {:?}: {e}", source.name),
            Err(_) => tracing::warn!("discarding the upload of {:?} timed out", source.name),
        }
    }
}

/// Takes tasks until none is left, the job is cancelled, or one fails.
async fn worker(ctx: Arc<RunContext>, scheduler: Arc<Scheduler>) -> Result<(), Error> {
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok(());
        }
        let changed = scheduler.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match scheduler.take(&ctx) {
            Task::Begin(i) => begin(&ctx, &scheduler, i, None).await?,
            Task::Block(block) => send(&ctx, &scheduler, block).await?,
            Task::Finish(i) => finish(&ctx, &scheduler, i).await?,
            Task::Wait => changed.await,
            Task::Done => return Ok(()),
        }
    }
}

/// Sends one block and records its acknowledgement, or resyncs its source.
async fn send(ctx: &RunContext, scheduler: &Scheduler, block: Block) -> Result<(), Error> {
    let sent = attempt::send_block(ctx, &block).await;
    let release = |requeue: bool| {
        let mut cursors = lock(&scheduler.cursors);
        let c = &mut cursors[block.source];
        c.in_flight -= 1;
        if requeue {
            c.todo.insert(block.index, block.index + 1);
        }
    };
    match sent {
        Err(e) => {
            release(false);
            Err(e)
        }
        Ok(Sent::Cancelled) => {
            release(true);
            Ok(())
        }
        Ok(Sent::Resync(reason, unknown_outcome)) => {
            release(true);
            let resync = {
                let mut cursors = lock(&scheduler.cursors);
                // Only a source that is sending is asked again: one being
                // asked already, or finishing, hears the receiver anyway.
                cursors[block.source].advance(Event::Resync)
            };
            if resync {
                begin(
                    ctx,
                    scheduler,
                    block.source,
                    Some((reason, unknown_outcome)),
                )
                .await?;
            }
            scheduler.changed();
            Ok(())
        }
        Ok(Sent::Acked(crc, receipt)) => {
            let source = &ctx.sources[block.source];
            if let Some(journal) = source.journal.clone() {
                let ack = JournaledAck {
                    index: block.index,
                    crc32c: crc,
                    receipt: receipt.0,
                };
                // A lost journal line only means the receiver is asked again.
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || journal.ack(&ack)).await {
                    tracing::warn!(
                        "cannot record block {} in the resume journal: {e}",
                        block.index
                    );
                }
            }
            {
                let mut cursors = lock(&scheduler.cursors);
                let c = &mut cursors[block.source];
                c.in_flight -= 1;
                if let Some(crc) = crc {
                    c.crcs.add(block.index, crc, block.len);
                }
                if !c.acked.contains(block.index, block.index + 1) {
                    c.acked.insert(block.index, block.index + 1);
                    c.acked_bytes += block.len;
                    let state = &ctx.job.state;
                    state.acked.fetch_add(block.len, Ordering::Relaxed);
                    state.blocks_acked.fetch_add(1, Ordering::Relaxed);
                }
            }
            scheduler.changed();
            Ok(())
        }
    }
}

/// Asks the receiver what it holds of source `i` and plans what to send;
/// `resync` is why it is asked again mid-run, and whether the outcome of a
/// request is unknown.
async fn begin(
    ctx: &RunContext,
    scheduler: &Scheduler,
    i: usize,
    resync: Option<(Error, bool)>,
) -> Result<(), Error> {
    let source = &ctx.sources[i];
    if let Some((reason, _)) = &resync {
        let resyncs = {
            let mut cursors = lock(&scheduler.cursors);
            cursors[i].resyncs += 1;
            cursors[i].resyncs
        };
        if resyncs > MAX_RESYNCS {
            return Err(reason.clone().extend_message(&format!(
                " (the receiver lost the upload again after {MAX_RESYNCS} fresh starts)"
            )));
        }
        tracing::info!(
            "asking the receiver again about {:?}: {reason}",
            source.name
        );
    }
    let holding = attempt::exchange(ctx, || source.session.begin(&*ctx.transport)).await?;
    for notice in source.session.notices() {
        ctx.job.state.notice(notice);
    }
    if let Some(journal) = &source.journal {
        let handle = source.session.saved().handle;
        let journal = journal.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || journal.keep_session(&handle)).await
        {
            ctx.job.state.notice(format!(
                "cannot keep the resume journal of {:?}: {e}",
                source.name
            ));
        }
    }
    let count = ctx.plan.count(i);
    let acked = match holding {
        Holding::Landed(landing) => return conclude(ctx, scheduler, i, landing).await,
        Holding::Ranges(ranges) => {
            let mut held = RangeSet::default();
            for (start, end) in ranges {
                held.insert(start, end);
            }
            let acked = ctx.plan.blocks_within(i, &held);
            let journaled = source.journaled.len() as u64;
            if resync.is_none() && journaled > 0 && journaled != covered(&acked) {
                ctx.job.state.notice(format!(
                    "the receiver holds {} of the blocks of {:?}, the resume journal listed {journaled}; sending what the receiver lacks",
                    covered(&acked), source.name
                ));
            }
            acked
        }
        Holding::Unknown => match resync {
            Some((reason, true)) => {
                return Err(reason.extend_message(
                    " (the request may have arrived, the receiver cannot say, and sending it again could land it twice)",
                ))
            }
            Some(_) => RangeSet::default(),
            None => {
                let mut acked = RangeSet::default();
                for ack in &source.journaled {
                    if ack.index < count {
                        acked.insert(ack.index, ack.index + 1);
                    }
                }
                if !source.journaled.is_empty() {
                    ctx.job.state.journal_trusted.store(true, Ordering::Relaxed);
                    ctx.job.state.notice(format!(
                        "the receiver cannot say what it holds of {:?}; resumed {} blocks on the word of the local journal",
                        source.name,
                        covered(&acked)
                    ));
                }
                acked
            }
        },
    };
    {
        let mut cursors = lock(&scheduler.cursors);
        let c = &mut cursors[i];
        let state = &ctx.job.state;
        // A run of blocks is a run of bytes: from its first block's start to
        // its last block's end.
        let bytes: u64 = acked
            .ranges()
            .iter()
            .filter_map(|&(s, e)| Some((ctx.plan.block(i, s)?, ctx.plan.block(i, e - 1)?)))
            .map(|(first, last)| last.offset + last.len - first.offset)
            .sum();
        let blocks = covered(&acked);
        state.acked.fetch_sub(c.acked_bytes, Ordering::Relaxed);
        state.acked.fetch_add(bytes, Ordering::Relaxed);
        state
            .blocks_acked
            .fetch_sub(covered(&c.acked), Ordering::Relaxed);
        state.blocks_acked.fetch_add(blocks, Ordering::Relaxed);
        if resync.is_none() {
            state.resumed_blocks.fetch_add(blocks, Ordering::Relaxed);
            for ack in &source.journaled {
                if let (Some(crc), Some(block)) = (ack.crc32c, ctx.plan.block(i, ack.index)) {
                    c.crcs.add(ack.index, crc, block.len);
                }
            }
        }
        let mut todo = RangeSet::default();
        todo.insert(0, count);
        for &(s, e) in acked.ranges() {
            todo.remove(s, e);
        }
        c.todo = todo;
        c.acked = acked;
        c.acked_bytes = bytes;
        c.advance(Event::Planned);
    }
    scheduler.changed();
    Ok(())
}

fn covered(set: &RangeSet) -> u64 {
    set.ranges().iter().map(|&(s, e)| e - s).sum()
}

/// Confirms that source `i` landed, or re-plans it.
async fn finish(ctx: &RunContext, scheduler: &Scheduler, i: usize) -> Result<(), Error> {
    let session = &ctx.sources[i].session;
    match attempt::exchange(ctx, || session.finish(&*ctx.transport)).await? {
        Finish::Landed(landing) => conclude(ctx, scheduler, i, landing).await,
        Finish::Resync(reason) => {
            begin(ctx, scheduler, i, Some((reason, false))).await?;
            scheduler.changed();
            Ok(())
        }
    }
}

/// Checks what the receiver says landed against the source, and marks the
/// source done.
async fn conclude(
    ctx: &RunContext,
    scheduler: &Scheduler,
    i: usize,
    landing: Landing,
) -> Result<(), Error> {
    let source = &ctx.sources[i];
    let state = &ctx.job.state;
    let len = source.source.len();
    let mismatch = |what: String| {
        Error::new(
            ErrorKind::Status,
            code::PARTIAL_FILE,
            format!("the receiver landed {:?} {what}", source.name),
        )
    };
    if landing.confirmed {
        if let Some(length) = landing.length.filter(|&l| l != len) {
            return Err(mismatch(format!(
                "with {length} bytes; the source has {len}"
            )));
        }
        if let (Some(theirs), Integrity::BlockCrc32c) = (landing.crc32c, ctx.job.integrity) {
            let ours = source_crc32c(ctx, scheduler, i).await?;
            if theirs != ours {
                return Err(mismatch(format!(
                    "with CRC32C {theirs:08x}; the blocks sent have {ours:08x}"
                )));
            }
        }
        state.confirmed.fetch_add(1, Ordering::Relaxed);
        lock(&state.landings).push(SourceLanding {
            source: source.name.clone(),
            name: landing.name.clone(),
            confirmed: true,
            url: source.session.location(),
        });
    } else if ctx.job.require_confirmation {
        return Err(Error::new(
            ErrorKind::Status,
            code::UNCONFIRMED,
            format!(
                "the receiver acknowledged every block of {:?} but cannot confirm that it landed",
                source.name
            ),
        ));
    } else {
        state.unconfirmed.fetch_add(1, Ordering::Relaxed);
        lock(&state.landings).push(SourceLanding {
            source: source.name.clone(),
            name: None,
            confirmed: false,
            url: None,
        });
    }
    {
        let mut cursors = lock(&scheduler.cursors);
        let c = &mut cursors[i];
        if c.acked_bytes < len || covered(&c.acked) < ctx.plan.count(i) {
            let blocks = ctx.plan.count(i) - covered(&c.acked);
            state
                .acked
                .fetch_add(len - c.acked_bytes, Ordering::Relaxed);
            state.blocks_acked.fetch_add(blocks, Ordering::Relaxed);
            state.resumed_blocks.fetch_add(blocks, Ordering::Relaxed);
        }
        c.advance(Event::Landed);
    }
    // The journal stays until the job is done: a run that fails after this
    // source landed resumes by asking the receiver, not by sending it again.
    scheduler.changed();
    Ok(())
}

/// The CRC32C of the whole source as the blocks sent make it up, reading
/// from the source only blocks whose CRC was not seen (held from an earlier
/// run without a journal receipt).
async fn source_crc32c(ctx: &RunContext, scheduler: &Scheduler, i: usize) -> Result<u32, Error> {
    let (mut crc, next, pending, shift) = {
        let cursors = lock(&scheduler.cursors);
        let fold = &cursors[i].crcs;
        (fold.crc, fold.next, fold.pending.clone(), fold.shift)
    };
    let source = &*ctx.sources[i].source;
    for index in next..ctx.plan.count(i) {
        let Some(block) = ctx.plan.block(i, index) else {
            break;
        };
        let block_crc = match pending.get(&index) {
            Some(&(c, _)) => c,
            None => crc32c_of(source, block.offset, block.len).await?,
        };
        crc = if block.len == shift.len() {
            shift.join(crc, block_crc)
        } else {
            crc32c_join(crc, block_crc, block.len)
        };
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::{CrcFold, Event, Phase};

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
}
