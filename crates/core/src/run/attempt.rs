//! One block, one request at a time: its verdict, its retries and their
//! backoff. Also the retries of a session's own exchanges (begin, finish).

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::body::{BlockData, BodyReport, Meter};
use crate::error::Error;
use crate::plan::Block;
use crate::protocol::{Integrity, Receipt, Verdict};
use crate::run::{InFlight, RunContext};
use crate::transport::{Request, Response, TransportError};

/// How a block's sending ended, short of failing the job.
#[derive(Debug)]
pub(crate) enum Sent {
    /// The receiver acknowledged it: the CRC32C of its bytes, when
    /// computed, and the receipt it gave.
    Acked(Option<u32>, Receipt),
    /// The receiver holds other ranges than thought, or a request that is
    /// not idempotent has an unknown outcome (`true`): begin again.
    Resync(Error, bool),
    /// The job was cancelled.
    Cancelled,
}

/// What to do after a failed try.
enum Next {
    Retry(Error, Option<Duration>),
    Fail(Error),
}

/// Sends one block until it is acknowledged, resynced, cancelled, or fails
/// for good. Each attempt reads the block again, so no copy is kept between
/// attempts.
pub(crate) async fn send_block(ctx: &RunContext, block: &Block) -> Result<Sent, Error> {
    let state = &ctx.job.state;
    let source = &ctx.sources[block.source];
    let session = &*source.session;
    let mut attempt = 1;
    loop {
        let prepared = prepare(ctx, block).await?;
        if ctx.cancel.is_cancelled() {
            return Ok(Sent::Cancelled);
        }
        let started = tokio::time::Instant::now();
        let (sent, report, whole) = {
            let _in_flight = InFlight::enter(state);
            tokio::select! {
                raced = race(ctx, block, prepared) => raced?,
                () = ctx.cancel.cancelled() => return Ok(Sent::Cancelled),
            }
        };
        // A piece of the source that could not be read is the block's
        // error, whatever the transport or the server made of the cut body.
        if let Some(e) = report.read_failure.get() {
            return Err(e.clone());
        }
        let next = match sent {
            Ok(response) => {
                state.set_version(response.version());
                let verdict = session.judge(block, &response);
                // What the answer taught the session (a limit, a version
                // stepped down to) is told as it is learnt.
                for notice in session.notices() {
                    state.notice(notice);
                }
                match verdict {
                    Verdict::Ack(receipt) => {
                        ctx.hedging.record(started.elapsed());
                        ctx.pace.acked(block.len, started.elapsed());
                        let crc = report.crc32c.get().copied().filter(|_| whole);
                        return Ok(Sent::Acked(crc, receipt));
                    }
                    Verdict::More => continue,
                    Verdict::Resync(e) => return Ok(Sent::Resync(e, false)),
                    Verdict::Retry { error, after } => Next::Retry(error, after),
                    Verdict::Fail(e) => Next::Fail(e),
                }
            }
            Err(e) => {
                let error = Error::from(e);
                if error.is_retryable() && session.resumable_after_cut(block) {
                    return Ok(Sent::Resync(error, false));
                }
                let body_left = report.complete.load(Ordering::SeqCst);
                if body_left && error.is_retryable() && !session.idempotent(block) {
                    // The receiver may have it: only it can say.
                    return Ok(Sent::Resync(error, true));
                }
                if error.is_retryable() {
                    Next::Retry(error, None)
                } else {
                    Next::Fail(error)
                }
            }
        };
        match next {
            Next::Fail(e) => return Err(e),
            Next::Retry(error, after) => {
                let reason = error.to_string();
                let wait = may_retry(ctx, error, attempt, after)?;
                tracing::warn!(
                    target: "fileuploader::retry",
                    "retrying block {} of {} of {:?} in {:.1} s (attempt {}): {reason}",
                    block.index + 1,
                    block.count,
                    source.name,
                    wait.as_secs_f64(),
                    attempt + 1
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

/// A block's request ready to go, with what its body reports and whether
/// the body carries the whole block (a body that carries part of it, the
/// receiver holding the rest or taking it in pieces, has no CRC of the
/// block's own).
struct Prepared {
    request: Request,
    report: Arc<BodyReport>,
    whole: bool,
}

/// Reads (or starts reading) block's bytes and encodes its request.
async fn prepare(ctx: &RunContext, block: &Block) -> Result<Prepared, Error> {
    let source = &ctx.sources[block.source];
    let session = &*source.session;
    let data = if session.constraints().in_memory {
        BlockData::memory(
            source
                .source
                .read_at(block.offset, block.len as usize)
                .await?,
        )
    } else {
        BlockData::read(&source.source, block.offset, block.len).await?
    };
    let mut request = session.encode(block, data)?;
    let whole = request.body().carried() == block.len;
    let report = Arc::new(BodyReport::default());
    request.body_mut().measure(Meter {
        sent: Some(ctx.job.state.sent.clone()),
        report: Some(report.clone()),
        crc32c: ctx.job.integrity == Integrity::BlockCrc32c,
        rate: ctx.rate.clone(),
    });
    Ok(Prepared {
        request,
        report,
        whole,
    })
}

/// What a block's request (or its hedge, if that answered well first)
/// came to, with its body's report and whether it carried the whole block.
type Raced = (Result<Response, TransportError>, Arc<BodyReport>, bool);

/// Sends `first`; if it runs far past the job's recent requests, sends the
/// block again beside it (blocks the protocol may send twice at once only, one
/// hedge at a time per job, one block in twenty at most, and none while
/// the job is retrying failures: a failing receiver is not a straggler) and
/// takes the first good answer, or else the other's.
async fn race(ctx: &RunContext, block: &Block, first: Prepared) -> Result<Raced, Error> {
    let session = &*ctx.sources[block.source].session;
    let Prepared {
        request,
        report,
        whole,
    } = first;
    let retries = ctx.job.state.retries.load(Ordering::Relaxed);
    let one = ctx.transport.send(request);
    let Some(after) = ctx.hedging.after().filter(|_| session.hedgeable(block)) else {
        return Ok((one.await, report, whole));
    };
    tokio::pin!(one);
    tokio::select! {
        sent = &mut one => return Ok((sent, report, whole)),
        () = tokio::time::sleep(after) => {}
    }
    let failing = ctx.job.state.retries.load(Ordering::Relaxed) != retries;
    let Some(_slot) = ctx.hedging.take().filter(|_| !failing) else {
        return Ok((one.await, report, whole));
    };
    ctx.job.state.hedges.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        target: "fileuploader::retry",
        "block {} of {} of {:?} has waited {:.1} s, far past the recent requests: sending it again beside itself",
        block.index + 1,
        block.count,
        ctx.sources[block.source].name,
        after.as_secs_f64()
    );
    let other = prepare(ctx, block).await?;
    let two = ctx.transport.send(other.request);
    tokio::pin!(two);
    let good = |sent: &Result<Response, TransportError>| {
        sent.as_ref().is_ok_and(|r| r.status().is_success())
    };
    Ok(tokio::select! {
        sent = &mut one => if good(&sent) {
            (sent, report, whole)
        } else {
            (two.await, other.report, other.whole)
        },
        sent = &mut two => if good(&sent) {
            (sent, other.report, other.whole)
        } else {
            (one.await, report, whole)
        },
    })
}

/// Runs one of a session's own exchanges (begin, finish), retrying
/// retryable failures under the job's policy.
pub(crate) async fn exchange<T, F, Fut>(ctx: &RunContext, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => {
                let reason = e.to_string();
                let server_wait = e.retry_after();
                let wait = may_retry(ctx, e, attempt, server_wait)?;
                tracing::warn!(
                    target: "fileuploader::retry",
                    "asking the receiver again in {:.1} s (attempt {}): {reason}",
                    wait.as_secs_f64(),
                    attempt + 1
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The wait before trying again after `error` on try number `attempt`, or
/// the error to fail with when the policy or the budget says no more.
fn may_retry(
    ctx: &RunContext,
    error: Error,
    attempt: u32,
    server_wait: Option<Duration>,
) -> Result<Duration, Error> {
    let policy = &ctx.job.retry;
    if attempt >= policy.max_attempts {
        return Err(if attempt > 1 {
            error.extend_message(&format!(" (gave up after {attempt} attempts)"))
        } else {
            error
        });
    }
    if server_wait.is_some_and(|w| w > policy.max_retry_after) {
        return Err(error.extend_message(" (the server asked to wait longer than max_retry_after)"));
    }
    if !ctx.take_retry() {
        return Err(error.extend_message(" (the job's retry budget is spent)"));
    }
    ctx.job.state.retries.fetch_add(1, Ordering::Relaxed);
    ctx.pace.failed();
    Ok(policy.backoff(attempt).max(server_wait.unwrap_or_default()))
}
