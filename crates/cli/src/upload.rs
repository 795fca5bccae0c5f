//! The `upload` command, and the one upload loop `demo` shares.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::prelude::{Engine, BASE64_STANDARD};
use fileuploader_core::protocol::{
    discover, Companion, IetfDraft, Protocol, SegmentedMultipart, Tus,
};
use fileuploader_core::{
    default_journal_dir, FileSource, FinalAnswer, Integrity, Job, Progress, Resume, RetryPolicy,
    UploadManager,
};
use fileuploader_transport_hyper::HyperTransport;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use crate::files::{self, Entry, Selection};
use crate::size::human;
use crate::{Failure, ProtocolArg, TransferArgs, UploadArgs};

/// What one file's upload came to.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) file: PathBuf,
    pub(crate) progress: Progress,
    pub(crate) http_version: &'static str,
    /// The name the file was sent under.
    pub(crate) sent_as: String,
    /// The name the receiver says the file landed under, when it says.
    pub(crate) landed_as: Option<String>,
    /// The upload's URL on the receiver, where the protocol has one.
    pub(crate) url: Option<String>,
    /// The receiver's answer that reported the landing.
    pub(crate) answer: Option<FinalAnswer>,
    /// The receiver's signed receipt, checked against the bytes sent.
    pub(crate) receipt: Option<String>,
    /// Where the receipt was kept (`--receipt-dir`).
    pub(crate) receipt_file: Option<PathBuf>,
}

impl Summary {
    pub(crate) fn rate(&self) -> String {
        format!("{}/s", human(self.progress.rate()))
    }

    /// Whether the receiver confirmed the landing: "confirmed" or
    /// "unconfirmed" (a receiver that cannot answer for its files).
    fn landing(&self) -> &'static str {
        if self.progress.landings_unconfirmed > 0 {
            "unconfirmed"
        } else {
            "confirmed"
        }
    }

    fn line(&self) -> String {
        let p = &self.progress;
        let resumed = match (p.resumed_blocks, p.journal_trusted) {
            (0, _) => String::new(),
            (n, false) => format!(" ({n} resumed)"),
            (n, true) => format!(" ({n} resumed on the local journal's word)"),
        };
        let landing = match self.landing() {
            "confirmed" => "landing confirmed",
            _ => "landing unconfirmed: the receiver cannot say",
        };
        let landed_as = match &self.landed_as {
            Some(name) => format!(" as {name:?}"),
            None => format!(" sent as {:?}", self.sent_as),
        };
        let landed_as = match &self.url {
            Some(url) => format!("{landed_as} at {url}"),
            None => landed_as,
        };
        let landing = match &self.receipt_file {
            Some(kept) => format!("{landing}, receipt kept in {}", kept.display()),
            None => landing.to_owned(),
        };
        format!(
            "uploaded {}{landed_as}: {} in {:.2} s ({}), {} blocks{resumed}, {} retries{hedged}, HTTP/{}, {landing}",
            self.file.display(),
            human(p.total_bytes as f64),
            p.elapsed.as_secs_f64(),
            self.rate(),
            p.total_blocks,
            p.retries,
            self.http_version,
            hedged = match p.hedges {
                0 => String::new(),
                n => format!(", {n} sent again beside a stalled request"),
            },
        )
    }

    fn json(&self) -> serde_json::Value {
        let p = &self.progress;
        let json = serde_json::json!({
            "file": self.file.display().to_string(),
            "bytes": p.total_bytes,
            "seconds": p.elapsed.as_secs_f64(),
            "bytes_per_second": p.rate(),
            "blocks": p.total_blocks,
            "resumed_blocks": p.resumed_blocks,
            "resumed_from": if p.journal_trusted { "journal" } else { "receiver" },
            "landing": self.landing(),
            "sent_as": self.sent_as,
            "landed_as": self.landed_as,
            "url": self.url,
            "retries": p.retries,
            "hedges": p.hedges,
            "thread_limit": p.thread_limit,
            "http_version": self.http_version,
            "receipt": self.receipt,
            "receipt_file": self.receipt_file.as_ref().map(|f| f.display().to_string()),
        });
        with_answer(json, self.answer.as_ref())
    }

    /// Prints the summary as the flags ask.
    pub(crate) fn report(&self, transfer: &TransferArgs) {
        if transfer.json {
            println!("{}", self.json());
        } else if !transfer.quiet {
            eprintln!("{}", self.line());
        }
    }
}

/// `json` with the receiver's final answer, where there was one: `status`,
/// `body` (UTF-8) or `body_base64`, and `body_cut_from` when the body was
/// cut to the bound.
fn with_answer(mut json: serde_json::Value, answer: Option<&FinalAnswer>) -> serde_json::Value {
    if let (Some(answer), Some(fields)) = (answer, json.as_object_mut()) {
        fields.insert("status".into(), answer.status.as_u16().into());
        match answer.text() {
            Some(text) => fields.insert("body".into(), text.into()),
            None => fields.insert(
                "body_base64".into(),
                BASE64_STANDARD.encode(&answer.body).into(),
            ),
        };
        if let Some(len) = answer.cut_from {
            fields.insert("body_cut_from".into(), len.into());
        }
    }
    json
}

/// How requests reach the server.
pub(crate) enum Route<'a> {
    /// Straight to it, whatever the environment says.
    Direct,
    /// Through this proxy.
    Proxy(&'a str),
    /// As `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` say.
    FromEnv,
}

/// What the connection needs beyond the transfer flags.
#[derive(Debug, Default)]
pub(crate) struct Connection<'a> {
    pub(crate) cacert: Option<&'a Path>,
    /// A client certificate chain and its key.
    pub(crate) identity: Option<(&'a Path, &'a Path)>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
    /// The low-speed limit: bytes per second, over a span.
    pub(crate) low_speed: Option<(u64, Duration)>,
}

impl<'a> Connection<'a> {
    fn of(args: &'a UploadArgs) -> Self {
        Connection {
            cacert: args.cacert.as_deref(),
            identity: args.cert.as_deref().zip(args.cert_key.as_deref()),
            connect_timeout: args.connect_timeout,
            idle_timeout: args.idle_timeout,
            low_speed: Some((low_speed_limit(args), args.speed_time)),
        }
    }
}

/// The slowest a request may go, in bytes per second: --speed-limit, or
/// under --limit-rate at most half of each request's share of it (so that
/// the limit the user asked for never reads as a stall).
fn low_speed_limit(args: &UploadArgs) -> u64 {
    let share = args.limit_rate.map_or(u64::MAX, |rate| {
        rate / u64::from(args.transfer.threads.most.max(1)) / 2
    });
    args.speed_limit.min(share)
}

/// The transport the flags describe.
pub(crate) fn transport(
    transfer: &TransferArgs,
    connection: &Connection<'_>,
    route: Route<'_>,
) -> Result<HyperTransport, Failure> {
    let mut builder = HyperTransport::builder()
        .http2(transfer.http2)
        .http2_connections(transfer.http2_connections.into());
    builder = match route {
        Route::Direct => builder,
        Route::Proxy(url) => builder.proxy(url),
        Route::FromEnv => builder.proxy_from_env(true),
    };
    if let Some(pem) = connection.cacert {
        builder = builder.add_root_pem(pem);
    }
    if let Some((cert, key)) = connection.identity {
        builder = builder.identity_pem(cert, key);
    }
    if let Some(t) = connection.connect_timeout {
        builder = builder.connect_timeout(t);
    }
    if let Some(t) = connection.idle_timeout {
        builder = builder.stall_timeout(t);
    }
    if let Some((bytes_per_second, over)) = connection.low_speed {
        builder = builder.low_speed_limit(bytes_per_second, over);
    }
    builder
        .build()
        .map_err(|e| Failure::new(fileuploader_core::code::INVALID_OPTION, e.to_string()))
}

/// What the terminal shows of a run: a bar for the whole run and one per
/// file in flight on a terminal; lines otherwise; JSON objects with
/// `--json`.
#[derive(Clone)]
pub(crate) struct Display {
    inner: Arc<Shown>,
}

struct Shown {
    bars: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    files: usize,
    done: std::sync::atomic::AtomicUsize,
    started: std::time::Instant,
    quiet: bool,
    json: bool,
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
        .expect("the template is valid")
        .progress_chars("=> ")
}

impl Display {
    /// The display of a run of `files` files of `bytes()` bytes in all,
    /// known before the first one starts (so the run's bar, its
    /// percentage and ETA are right from the start); asked only when a
    /// bar shows them.
    pub(crate) fn new(transfer: &TransferArgs, files: usize, bytes: impl FnOnce() -> u64) -> Self {
        let terminal = !transfer.quiet && !transfer.json && std::io::stderr().is_terminal();
        let bars = terminal.then(MultiProgress::new);
        let overall = bars.as_ref().filter(|_| files > 1).map(|m| {
            let bar = m.add(ProgressBar::new(bytes()).with_style(bar_style()));
            bar.set_message(format!("0/{files} files"));
            bar
        });
        Display {
            inner: Arc::new(Shown {
                bars,
                overall,
                files,
                done: 0.into(),
                started: std::time::Instant::now(),
                quiet: transfer.quiet,
                json: transfer.json,
            }),
        }
    }

    /// A bar for a file in flight, on a terminal.
    fn file_bar(&self, file: &Path) -> Option<ProgressBar> {
        let bar = self
            .inner
            .bars
            .as_ref()?
            .add(ProgressBar::new(0).with_style(bar_style()));
        bar.set_message(file.display().to_string());
        Some(bar)
    }

    /// Moves a file's bar, and the run's by as much.
    fn advance(&self, bar: &ProgressBar, progress: &Progress) {
        if bar.length() != Some(progress.total_bytes) {
            bar.set_length(progress.total_bytes);
        }
        let moved = progress.bytes_acknowledged.saturating_sub(bar.position());
        bar.set_position(progress.bytes_acknowledged);
        if let Some(overall) = &self.inner.overall {
            overall.inc(moved);
        }
    }

    fn say(&self, line: &str) {
        match &self.inner.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Says how one file ended, as the flags ask.
    fn report(&self, outcome: &Outcome, transfer: &TransferArgs) {
        let done = self
            .inner
            .done
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some(overall) = &self.inner.overall {
            overall.set_message(format!("{done}/{} files", self.inner.files));
        }
        match outcome {
            Outcome::Landed(summary) if transfer.json => println!("{}", summary.json()),
            Outcome::Landed(summary) if !transfer.quiet => self.say(&summary.line()),
            Outcome::Failed(file, e) if transfer.json => {
                let json = serde_json::json!({
                    "file": file.display().to_string(),
                    "error": { "code": e.code, "message": e.message },
                });
                println!("{}", with_answer(json, e.answer.as_deref()));
            }
            // One file's failure is the run's: main prints it.
            Outcome::Failed(file, e) if self.inner.files > 1 => {
                self.say(&format!(
                    "failed {}: error {}: {}",
                    file.display(),
                    e.code,
                    e.message
                ));
            }
            _ => {}
        }
    }

    /// Clears the bars and, for several files, says how the run went.
    /// The closing line (or JSON summary); `not_started` files were never
    /// begun because the run was stopped.
    fn finish(&self, tally: &Tally, not_started: usize, skipped: files::Skipped) {
        if let Some(overall) = &self.inner.overall {
            overall.finish_and_clear();
        }
        let (bytes, failed) = (tally.bytes, &tally.failed);
        let seconds = self.inner.started.elapsed().as_secs_f64();
        if self.inner.json {
            println!(
                "{}",
                serde_json::json!({ "summary": {
                    "files": tally.files,
                    "landed": tally.landed,
                    "failed": failed,
                    "not_started": not_started,
                    "left_out": {
                        "hidden": skipped.hidden,
                        "links": skipped.links,
                        "filtered": skipped.filtered,
                    },
                    "bytes": bytes,
                    "seconds": seconds,
                }})
            );
        } else if !self.inner.quiet && tally.files + not_started > 1 {
            eprintln!(
                "{} of {} files landed, {} in {seconds:.2} s ({}/s){}{}",
                tally.landed,
                tally.files + not_started,
                human(bytes as f64),
                human(bytes as f64 / seconds.max(1e-9)),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!("; did not land: {}", failed.join(", "))
                },
                if not_started == 0 {
                    String::new()
                } else {
                    format!("; {not_started} not started (the run was stopped)")
                }
            );
        }
    }
}

/// Runs `job`, showing its bar on a terminal, until it ends.
pub(crate) async fn drive(
    manager: &UploadManager,
    job: &Job,
    file: &Path,
    transfer: &TransferArgs,
    display: &Display,
) -> Result<Summary, Failure> {
    let handle = manager.run(job)?;
    let bar = display.file_bar(file);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            outcome = handle.wait() => break outcome,
            _ = tick.tick() => if let Some(bar) = &bar {
                display.advance(bar, &job.progress());
            },
        }
    };
    if let Some(bar) = bar {
        display.advance(&bar, &job.progress());
        bar.finish_and_clear();
    }
    if !transfer.quiet {
        for notice in job.notices() {
            display.say(&format!("note: {notice}"));
        }
    }
    outcome?;
    let landing = job.landings().into_iter().next();
    Ok(Summary {
        file: file.to_owned(),
        progress: job.progress(),
        http_version: job.http_version(),
        sent_as: landing
            .as_ref()
            .map(|l| l.source.clone())
            .unwrap_or_default(),
        landed_as: landing.as_ref().and_then(|l| l.name.clone()),
        url: landing.as_ref().and_then(|l| l.url.clone()),
        receipt: landing.as_ref().and_then(|l| l.receipt.clone()),
        answer: landing.and_then(|l| l.answer),
        receipt_file: None,
    })
}

/// Keeps the receipt of the file `summary` tells of in `dir`, as
/// `dir/<landed name>.receipt` (folders made as needed); a landing that
/// came without one fails (error 39), as does a receipt that cannot be
/// written.
fn keep_receipt(dir: &Path, mut summary: Summary) -> Result<Summary, Failure> {
    let Some(receipt) = &summary.receipt else {
        return Err(Failure::new(
            fileuploader_core::code::RECEIPT_MISMATCH,
            format!(
                "{} landed, but the receiver sent no receipt for it (it signs receipts when run with --receipt-key)",
                summary.file.display()
            ),
        ));
    };
    // The receiver names the file: only plain parts of that name are
    // taken, so no answer can put a receipt outside `dir`.
    let name = summary.landed_as.as_deref().unwrap_or(&summary.sent_as);
    let plain: PathBuf = Path::new(name)
        .components()
        .filter_map(|part| match part {
            std::path::Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect();
    let plain = match plain.file_name() {
        Some(_) => plain,
        None => PathBuf::from(summary.file.file_name().unwrap_or_default()),
    };
    let mut path = dir.join(plain).into_os_string();
    path.push(".receipt");
    let path = PathBuf::from(path);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&path, format!("{receipt}\n")));
    written.map_err(|e| {
        Failure::new(
            fileuploader_core::code::FAILED,
            format!(
                "{} landed, but its receipt cannot be kept in {}: {e}",
                summary.file.display(),
                path.display()
            ),
        )
    })?;
    summary.receipt_file = Some(path);
    Ok(summary)
}

/// How one file of a run ended.
enum Outcome {
    Landed(Box<Summary>),
    Failed(PathBuf, Failure),
}

/// The protocol `--protocol` names, asking the server for `auto`, and the
/// URL its jobs go to (a bucket's own address for `s3`).
async fn protocol(
    args: &UploadArgs,
    transport: &HyperTransport,
) -> Result<(Arc<dyn Protocol>, String), Failure> {
    let protocol: Arc<dyn Protocol> = match args.protocol {
        ProtocolArg::S3 => return crate::bucket_parts(args).await,
        ProtocolArg::Segmented => Arc::new(SegmentedMultipart),
        ProtocolArg::Tus => Arc::new(Tus),
        ProtocolArg::Ietf => Arc::new(IetfDraft::default()),
        ProtocolArg::Companion => Arc::new(Companion),
        ProtocolArg::Auto => {
            let url = args.url.parse().map_err(|e| {
                Failure::new(
                    fileuploader_core::code::INVALID_URL,
                    format!("--url {:?}: {e}", args.url),
                )
            })?;
            let mut headers = http::HeaderMap::new();
            if let Some(token) = &args.token {
                if let Ok(value) = format!("Bearer {token}").parse() {
                    headers.insert(http::header::AUTHORIZATION, value);
                }
            }
            discover(transport, &url, &headers).await?
        }
    };
    Ok((protocol, args.url.clone()))
}

/// The job for one file, as the flags say.
fn job_for(
    manager: &UploadManager,
    args: &UploadArgs,
    (protocol, url): &(Arc<dyn Protocol>, String),
    entry: &Entry,
) -> Result<Job, Failure> {
    let mut job = manager.create_job();
    job.server_url = url.clone();
    job.block_size = args.transfer.block_size;
    job.thread_num = args.transfer.threads.most.into();
    job.auto_threads = args.transfer.threads.auto;
    for (key, value) in &args.fields {
        job.form_field.add(key, value);
    }
    for (name, value) in &args.headers {
        job.http_header.insert(name, value);
    }
    if let Some(token) = &args.token {
        job.http_header
            .insert("Authorization", format!("Bearer {token}"));
    }
    if args.resume {
        // Kept until the whole run is done: a run interrupted after some
        // files landed resumes by asking the receiver about them.
        job.resume = Resume::KeptIn(default_journal_dir());
    }
    if args.no_checksum {
        job.integrity = Integrity::None;
    }
    if args.no_retry {
        job.retry = RetryPolicy::none();
    } else if let Some(n) = args.retries {
        job.retry = job.retry.with_max_attempts(n.saturating_add(1));
    }
    if args.hedge {
        job.retry = job.retry.with_hedging(true);
    }
    job.require_confirmation = args.require_confirmation;
    job.protocol = Some(protocol.clone());
    // Opened here, not by URL, so paths that are not UTF-8 work.
    let source = FileSource::open(&entry.path)?;
    let name = args.name.clone().unwrap_or_else(|| entry.name.clone());
    job.source_value
        .add_source(Arc::new(source), name, args.key.as_str());
    Ok(job)
}

/// `fileuploader upload`: every file of the paths given, `--files` at a
/// time, their blocks in flight bounded together by `--threads`. Each file
/// lands or fails on its own; the run fails if any did, with code -3 on
/// Ctrl-C (exit 130) and 11 past `--timeout`.
pub(crate) async fn run(args: UploadArgs) -> Result<(), Failure> {
    // Watched from the start and for the whole run: a Ctrl-C that comes
    // while a file's outcome is being told is still heard.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| {
        Failure::new(
            fileuploader_core::code::FAILED,
            format!("cannot watch Ctrl-C: {e}"),
        )
    })?;
    let selection = Selection {
        recursive: args.recursive,
        hidden: args.hidden,
        follow_symlinks: args.follow_symlinks,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
    };
    let (entries, skipped) = files::collect(&args.paths, &selection)?;
    let left_out = skipped.note();
    if entries.is_empty() {
        let why = left_out.unwrap_or_else(|| "the folders given are empty".to_owned());
        return Err(Failure::new(
            fileuploader_core::code::NO_SOURCES,
            format!("nothing to upload: {why}"),
        ));
    }
    if let Some(note) = &left_out {
        if !args.transfer.quiet && !args.transfer.json {
            eprintln!("note: {note}");
        }
    }
    if args.output.is_some() && entries.len() != 1 {
        return Err(Failure::new(
            fileuploader_core::code::INVALID_OPTION,
            format!(
                "-o/--output takes the answer to one file, but there are {}",
                entries.len()
            ),
        ));
    }
    if args.name.is_some() && entries.len() != 1 {
        return Err(Failure::new(
            fileuploader_core::code::INVALID_OPTION,
            format!(
                "--name names one remote file, but there are {}",
                entries.len()
            ),
        ));
    }
    let route = args.proxy.as_deref().map_or(Route::FromEnv, Route::Proxy);
    let transport = transport(&args.transfer, &Connection::of(&args), route)?;
    let protocol = protocol(&args, &transport).await?;
    let mut builder =
        UploadManager::builder(transport).max_in_flight(args.transfer.threads.most.into());
    if let Some(rate) = args.limit_rate {
        builder = builder.limit_rate(rate);
    }
    let manager = builder.build();
    let bytes = || {
        entries
            .iter()
            .filter(|e| e.problem.is_none())
            .filter_map(|e| std::fs::metadata(&e.path).ok())
            .map(|m| m.len())
            .sum()
    };
    let display = Display::new(&args.transfer, entries.len(), bytes);
    let files_at_once = Arc::new(tokio::sync::Semaphore::new(args.files.into()));
    // Tasks spawned ahead of their turn, so that a file ending starts the
    // next at once, without a trip through this loop.
    let ahead = 2 * usize::from(args.files);
    let args = Arc::new(args);
    let mut tally = Tally::default();
    // Jobs whose resume journals go once every file landed: only a run
    // that keeps journals needs them kept.
    let mut journaled = Vec::new();
    let mut queued = Vec::with_capacity(entries.len());
    for mut entry in entries {
        match entry.problem.take() {
            Some(problem) => {
                let outcome = Outcome::Failed(entry.path, problem);
                display.report(&outcome, &args.transfer);
                tally.add(outcome);
            }
            None => queued.push(entry),
        }
    }
    // Files are begun as earlier ones end, never more than --files at once
    // and only a few jobs ahead: a folder of any size is held as its list
    // of paths, the files in flight and the closing line's counts.
    queued.reverse();
    let mut running = tokio::task::JoinSet::new();
    let deadline = async {
        match args.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut stopped: Option<Failure> = None;
    let mut not_started = 0;
    loop {
        while stopped.is_none() && running.len() < ahead {
            let Some(entry) = queued.pop() else { break };
            let job = match job_for(&manager, &args, &protocol, &entry) {
                Ok(job) => job,
                Err(e) => {
                    let outcome = Outcome::Failed(entry.path, e);
                    display.report(&outcome, &args.transfer);
                    tally.add(outcome);
                    continue;
                }
            };
            if args.resume {
                journaled.push(job.clone());
            }
            let (manager, args, display, permits) = (
                manager.clone(),
                args.clone(),
                display.clone(),
                files_at_once.clone(),
            );
            running.spawn(async move {
                // Closed when the run is stopped: a file still waiting for
                // its turn is never begun.
                let _turn = permits.clone().acquire_owned().await.ok()?;
                if permits.is_closed() {
                    return None;
                }
                Some(
                    match drive(&manager, &job, &entry.path, &args.transfer, &display)
                        .await
                        .and_then(|summary| match &args.receipt_dir {
                            Some(dir) => keep_receipt(dir, summary),
                            None => Ok(summary),
                        }) {
                        Ok(summary) => Outcome::Landed(Box::new(summary)),
                        Err(e) => Outcome::Failed(entry.path, e),
                    },
                )
            });
        }
        tokio::select! {
            next = running.join_next() => match next {
                None => break,
                Some(Ok(Some(outcome))) => {
                    display.report(&outcome, &args.transfer);
                    tally.add(outcome);
                }
                Some(Ok(None)) => not_started += 1,
                Some(Err(e)) => {
                    return Err(Failure::new(fileuploader_core::code::FAILED, e.to_string()))
                }
            },
            _ = interrupt.recv(), if stopped.is_none() => {
                stopped = Some(Failure::new(
                    fileuploader_core::code::CANCELLED,
                    "interrupted: blocks in flight were abandoned; --resume goes on from what the receiver holds",
                ));
                files_at_once.close();
                manager.cancel_all_upload();
            }
            () = &mut deadline, if stopped.is_none() => {
                stopped = Some(Failure::new(
                    fileuploader_core::code::TIMEOUT,
                    format!("the run went past --timeout {:?}", args.timeout.unwrap_or_default()),
                ));
                files_at_once.close();
                manager.cancel_all_upload();
            }
        }
    }
    // Files not yet given a task when the run was stopped are never begun
    // either.
    not_started += queued.len();
    display.finish(&tally, not_started, skipped);
    let failed = tally.failed.len();
    if stopped.is_none() && failed == 0 {
        for job in &journaled {
            if let Err(e) = job.remove_journals() {
                eprintln!("warning: cannot remove a finished resume journal: {e}");
            }
        }
    }
    let written = match &args.output {
        Some(path) if stopped.is_none() => write_answer(path, tally.first.as_ref()),
        _ => Ok(()),
    };
    match (stopped, failed) {
        (Some(stop), _) => Err(stop),
        (None, 0) => written,
        (None, n) => match tally.first {
            Some(Outcome::Failed(_, e)) if tally.files == 1 => Err(e),
            _ => Err(Failure::new(
                fileuploader_core::code::FAILED,
                format!("{n} of the files did not land"),
            )),
        },
    }
}

/// What the closing line, the exit and `-o` need of the files told so
/// far: counts, the failed files' names and the first outcome whole, not
/// every file's summary.
#[derive(Default)]
struct Tally {
    files: usize,
    landed: usize,
    bytes: u64,
    failed: Vec<String>,
    /// The first file's outcome: `-o` writes its answer, and a run of one
    /// file fails with its error.
    first: Option<Outcome>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.files += 1;
        match &outcome {
            Outcome::Landed(summary) => {
                self.landed += 1;
                self.bytes += summary.progress.total_bytes;
            }
            Outcome::Failed(file, _) => self.failed.push(file.display().to_string()),
        }
        if self.first.is_none() {
            self.first = Some(outcome);
        }
    }
}

/// Writes the body of the receiver's final answer to the one file to
/// `path`, as curl's `-o` does: the answer that reported its landing (an
/// empty file when it had no body), or the one it failed on; nothing when
/// no answer came.
fn write_answer(path: &Path, first: Option<&Outcome>) -> Result<(), Failure> {
    let body = match first {
        Some(Outcome::Landed(summary)) => Some(
            summary
                .answer
                .as_ref()
                .map(|a| a.body.clone())
                .unwrap_or_default(),
        ),
        Some(Outcome::Failed(_, e)) => e.answer.as_ref().map(|a| a.body.clone()),
        None => None,
    };
    let Some(body) = body else {
        return Ok(());
    };
    std::fs::write(path, &body).map_err(|e| {
        Failure::new(
            fileuploader_core::code::FAILED,
            format!(
                "the receiver's answer cannot be written to {}: {e}",
                path.display()
            ),
        )
    })
}
