//! Where a source's session begins (and begins again): the receiver says
//! what it holds, the journal fills in only what the receiver cannot say,
//! and the source's cursor is planned from that.

use std::sync::atomic::Ordering;

use fileuploader_wire::RangeSet;

use super::attempt;
use super::cursor::{Event, Scheduler, MAX_RESYNCS};
use super::{RunContext, RunSource};
use crate::error::Error;
use crate::protocol::{Handle, Holding, Landing};
use crate::source::lock;

/// Asks the receiver what it holds of source `i` and plans what to send;
/// `resync` is why it is asked again mid-run, and whether the outcome of a
/// request is unknown. A source the receiver says landed already is not
/// planned: its landing is returned, for the scheduler to conclude.
pub(super) async fn begin(
    ctx: &RunContext,
    scheduler: &Scheduler,
    i: usize,
    resync: Option<(Error, bool)>,
) -> Result<Option<Landing>, Error> {
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
    let created_under_key = matches!(source.session.saved().handle, Handle::FirstRequest { .. });
    if resync.is_none() && source.source.is_empty() && created_under_key {
        // An empty upload created under a key lands as it is created, in
        // `begin`: the key is kept first, so that a run stopped before the
        // answer creates under it again and finds that landing, rather
        // than its name taken.
        keep_session(ctx, source).await;
    }
    let holding = attempt::exchange(ctx, || source.session.begin(&*ctx.transport)).await?;
    for notice in source.session.notices() {
        ctx.job.state.notice(notice);
    }
    keep_session(ctx, source).await;
    let count = ctx.plan.count(i);
    let acked = match holding {
        Holding::Landed(landing) => return Ok(Some(landing)),
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
    Ok(None)
}

/// How many block indices `set` holds.
pub(super) fn covered(set: &RangeSet) -> u64 {
    set.ranges().iter().map(|&(s, e)| e - s).sum()
}

/// Keeps `source`'s session as it is now in its journal, if it has one; a
/// journal that cannot be written is told, and the run goes on.
async fn keep_session(ctx: &RunContext, source: &RunSource) {
    let Some(journal) = source.journal.clone() else {
        return;
    };
    let handle = source.session.saved().handle;
    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || journal.keep_session(&handle)).await {
        ctx.job.state.notice(format!(
            "cannot keep the resume journal of {:?}: {e}",
            source.name
        ));
    }
}
