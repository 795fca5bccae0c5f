//! Workers, the job-wide bound, and the one outcome.
//!
//! Up to `thread_num` workers (no more than there can ever be tasks at
//! once) take tasks from the cursors, sources in the order they were added: begin a source (ask the receiver what it holds),
//! send one of its blocks within its session's constraints, or finish it
//! once all its blocks are acknowledged. A resync re-plans one source from
//! what the receiver says it holds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fileuploader_wire::RangeSet;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::attempt::{self, Sent};
use super::begin::begin;
use super::cursor::{CrcFold, Cursor, Event, Phase, Scheduler, Task, ABORT_WAIT};
use super::landing::{conclude, finish, Finished};
use super::RunContext;
use crate::error::{code, Error, ErrorKind};
use crate::journal::{JournaledAck, Resume};
use crate::plan::Block;
use crate::progress::Percentage;
use crate::source::lock;

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
    for _ in 0..worker_count(ctx.job.thread_num, total_blocks, ctx.sources.len()) {
        workers.spawn(worker(ctx.clone(), scheduler.clone()));
    }

    let outcome = loop {
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => break Err(Error::cancelled()),
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
    if ctx.cancel.is_cancelled() {
        // A source being begun by a creation nothing could find again ends
        // its beginning first (within a bound): what it made is then known,
        // to be discarded below or kept for a resume. Blocks in flight
        // stopped at once.
        let begun = async {
            loop {
                let changed = scheduler.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let beginning = lock(&scheduler.cursors)
                    .iter()
                    .zip(&ctx.sources)
                    .any(|(c, s)| c.phase == Phase::Beginning && s.session.begin_may_create());
                if !beginning {
                    break;
                }
                tokio::select! {
                    () = &mut changed => {}
                    joined = workers.join_next() => if joined.is_none() { break },
                }
            }
        };
        let _ = tokio::time::timeout(ABORT_WAIT, begun).await;
    }
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

/// Begins (or begins again) source `i`, and concludes it at once when the
/// receiver says it landed already.
async fn start(
    ctx: &RunContext,
    scheduler: &Scheduler,
    i: usize,
    resync: Option<(Error, bool)>,
) -> Result<(), Error> {
    match begin(ctx, scheduler, i, resync).await? {
        Some(landing) => conclude(ctx, scheduler, i, landing).await,
        None => Ok(()),
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
            Task::Begin(i) => start(&ctx, &scheduler, i, None).await?,
            Task::Block(block) => send(&ctx, &scheduler, block).await?,
            Task::Finish(i) => {
                if let Finished::Resync(reason) = finish(&ctx, &scheduler, i).await? {
                    start(&ctx, &scheduler, i, Some((reason, false))).await?;
                    scheduler.changed();
                }
            }
            Task::Wait => changed.await,
            Task::Done => return Ok(()),
        }
    }
}

/// How many workers a run needs: `thread_num`, but never more than there
/// can be tasks at once (a beginning or an end of each source, and its
/// blocks), so a small file does not start workers that only wait: a
/// folder of one-block files started four tasks a file where two do.
fn worker_count(thread_num: usize, total_blocks: u64, sources: usize) -> usize {
    let tasks = total_blocks.saturating_add(sources as u64).max(1);
    thread_num.min(usize::try_from(tasks).unwrap_or(usize::MAX))
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
                start(
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

#[cfg(test)]
mod tests {
    use super::worker_count;

    #[test]
    fn a_run_starts_no_more_workers_than_it_can_ever_have_tasks() {
        // One file of one block: its block, then its end.
        assert_eq!(worker_count(4, 1, 1), 2);
        // An empty file: its end only.
        assert_eq!(worker_count(4, 0, 1), 1);
        assert_eq!(worker_count(4, 100, 1), 4);
        assert_eq!(worker_count(8, 3, 2), 5);
    }
}
