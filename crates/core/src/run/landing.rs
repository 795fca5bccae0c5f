//! Where a source ends: the session's finish says whether the file landed,
//! and the landing is checked against the source (length, and the CRC32C
//! the blocks sent make up) before the source counts as landed.

use std::sync::atomic::Ordering;

use super::attempt;
use super::begin::covered;
use super::cursor::{Event, Scheduler};
use super::RunContext;
use crate::answer::FinalAnswer;
use crate::error::{code, Error, ErrorKind};
use crate::job::SourceLanding;
use crate::protocol::{Finish, Integrity, Landing};
use crate::resume::{crc32c_of, digests_of};
use crate::source::lock;

/// How a source's finish came out.
pub(super) enum Finished {
    /// It landed, and the landing was checked.
    Landed,
    /// The receiver does not hold it whole after all: begin it again.
    Resync(Error),
}

/// Confirms that source `i` landed (and checks the landing), or says why
/// it must begin again.
pub(super) async fn finish(
    ctx: &RunContext,
    scheduler: &Scheduler,
    i: usize,
) -> Result<Finished, Error> {
    let session = &ctx.sources[i].session;
    match attempt::exchange(ctx, || session.finish(&*ctx.transport)).await? {
        Finish::Landed(landing) => {
            conclude(ctx, scheduler, i, landing).await?;
            Ok(Finished::Landed)
        }
        Finish::Resync(reason) => Ok(Finished::Resync(reason)),
    }
}

/// Checks what the receiver says landed against the source, and marks the
/// source done.
pub(super) async fn conclude(
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
        let receipt = checked_receipt(ctx, i, landing.answer.as_ref()).await?;
        state.confirmed.fetch_add(1, Ordering::Relaxed);
        lock(&state.landings).push(SourceLanding {
            source: source.name.clone(),
            name: landing.name.clone(),
            confirmed: true,
            url: source.session.location(),
            answer: landing.answer.map(|a| a.bounded(ctx.job.answer_limit)),
            receipt,
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
            answer: landing.answer.map(|a| a.bounded(ctx.job.answer_limit)),
            receipt: None,
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

/// The receipt in the answer that reported source `i`'s landing, if the
/// receiver signed one, once it is checked against the source: its length,
/// CRC32C and SHA-256 (the source is read again for them). A receipt that
/// does not vouch for these bytes, or is not a receipt, fails the source
/// ([`code::RECEIPT_MISMATCH`]). The signature is the reader's to check,
/// with the receiver's public key (`fileuploader verify`).
async fn checked_receipt(
    ctx: &RunContext,
    i: usize,
    answer: Option<&FinalAnswer>,
) -> Result<Option<String>, Error> {
    use fileuploader_wire::receipt::{Signed, RECEIPT_HEADER};
    let Some(value) = answer.and_then(|a| a.headers.get(RECEIPT_HEADER)) else {
        return Ok(None);
    };
    let source = &ctx.sources[i];
    let refused = |why: String| {
        Error::new(
            ErrorKind::Status,
            code::RECEIPT_MISMATCH,
            format!(
                "the receiver's receipt for {:?} does not vouch for what was sent: {why}",
                source.name
            ),
        )
    };
    let compact = value
        .to_str()
        .map_err(|_| refused("it is not text".to_owned()))?;
    let signed = Signed::parse(compact).map_err(|e| refused(e.to_string()))?;
    let (crc, sha256) = digests_of(&*source.source).await?;
    signed
        .receipt
        .check(source.source.len(), crc, &sha256)
        .map_err(refused)?;
    Ok(Some(compact.to_owned()))
}

/// The CRC32C of the whole source as the blocks sent make it up, reading
/// from the source only blocks whose CRC was not seen (held from an earlier
/// run without a journal receipt).
async fn source_crc32c(ctx: &RunContext, scheduler: &Scheduler, i: usize) -> Result<u32, Error> {
    let (mut crc, next, pending, mut joiner) = {
        let cursors = lock(&scheduler.cursors);
        let fold = &cursors[i].crcs;
        (fold.crc, fold.next, fold.pending.clone(), fold.joiner)
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
        crc = joiner.join(crc, block_crc, block.len);
    }
    Ok(crc)
}
