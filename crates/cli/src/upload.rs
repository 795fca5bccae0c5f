//! The `upload` command, and the one upload loop `demo` shares.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fileuploader_core::protocol::{discover, IetfDraft, Protocol, SegmentedMultipart, Tus};
use fileuploader_core::{FileSource, Integrity, Job, Progress, Resume, UploadManager};
use fileuploader_transport_hyper::HyperTransport;
use indicatif::{ProgressBar, ProgressStyle};

use crate::size::human;
use crate::{Failure, ProtocolArg, TransferArgs, UploadArgs};

/// What one file's upload came to.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) file: PathBuf,
    pub(crate) progress: Progress,
    pub(crate) http_version: &'static str,
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
        format!(
            "uploaded {}: {} in {:.2} s ({}), {} blocks{resumed}, {} retries, HTTP/{}, {landing}",
            self.file.display(),
            human(p.total_bytes as f64),
            p.elapsed.as_secs_f64(),
            self.rate(),
            p.total_blocks,
            p.retries,
            self.http_version,
        )
    }

    fn json(&self) -> serde_json::Value {
        let p = &self.progress;
        serde_json::json!({
            "file": self.file.display().to_string(),
            "bytes": p.total_bytes,
            "seconds": p.elapsed.as_secs_f64(),
            "bytes_per_second": p.rate(),
            "blocks": p.total_blocks,
            "resumed_blocks": p.resumed_blocks,
            "resumed_from": if p.journal_trusted { "journal" } else { "receiver" },
            "landing": self.landing(),
            "retries": p.retries,
            "http_version": self.http_version,
        })
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

/// How requests reach the server.
pub(crate) enum Route<'a> {
    /// Straight to it, whatever the environment says.
    Direct,
    /// Through this proxy.
    Proxy(&'a str),
    /// As `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` say.
    FromEnv,
}

/// The transport the flags describe.
pub(crate) fn transport(
    transfer: &TransferArgs,
    cacert: Option<&Path>,
    route: Route<'_>,
) -> Result<HyperTransport, Failure> {
    let mut builder = HyperTransport::builder().http2(transfer.http2);
    builder = match route {
        Route::Direct => builder,
        Route::Proxy(url) => builder.proxy(url),
        Route::FromEnv => builder.proxy_from_env(true),
    };
    if let Some(pem) = cacert {
        builder = builder.add_root_pem(pem);
    }
    builder
        .build()
        .map_err(|e| Failure::new(fileuploader_core::code::INVALID_OPTION, e.to_string()))
}

/// Runs `job`, showing a progress bar on a terminal, until it ends or
/// Ctrl-C cancels it.
pub(crate) async fn drive(
    manager: &UploadManager,
    job: &Job,
    file: &Path,
    transfer: &TransferArgs,
) -> Result<Summary, Failure> {
    let handle = manager.run(job)?;
    let bar = (!transfer.quiet && !transfer.json && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(file.display().to_string());
        bar
    });
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let outcome = loop {
        tokio::select! {
            outcome = handle.wait() => break outcome,
            _ = tick.tick() => if let Some(bar) = &bar {
                let p = job.progress();
                bar.set_length(p.total_bytes);
                bar.set_position(p.bytes_acknowledged);
            },
            _ = tokio::signal::ctrl_c() => { manager.cancel(job); }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if !transfer.quiet {
        for notice in job.notices() {
            eprintln!("note: {notice}");
        }
    }
    outcome?;
    Ok(Summary {
        file: file.to_owned(),
        progress: job.progress(),
        http_version: job.http_version(),
    })
}

/// `fileuploader upload`: one job per file, in order; stops at the first failure.
pub(crate) async fn run(args: UploadArgs) -> Result<(), Failure> {
    let route = args.proxy.as_deref().map_or(Route::FromEnv, Route::Proxy);
    let transport = transport(&args.transfer, args.cacert.as_deref(), route)?;
    let protocol: Arc<dyn Protocol> = match args.protocol {
        ProtocolArg::Segmented => Arc::new(SegmentedMultipart),
        ProtocolArg::Tus => Arc::new(Tus),
        ProtocolArg::Ietf => Arc::new(IetfDraft::default()),
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
            discover(&transport, &url, &headers)
                .await
                .map_err(Failure::from)?
        }
    };
    let manager = UploadManager::new(transport);
    for file in &args.files {
        let mut job = manager.create_job();
        job.server_url = args.url.clone();
        job.block_size = args.transfer.block_size;
        job.thread_num = args.transfer.threads.into();
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
            job.resume = Resume::on();
        }
        if args.no_checksum {
            job.integrity = Integrity::None;
        }
        job.require_confirmation = args.require_confirmation;
        job.protocol = Some(protocol.clone());
        // Opened here, not by URL, so paths that are not UTF-8 work.
        let source = FileSource::open(file)?;
        job.source_value.add_source(
            Arc::new(source),
            args.name.clone().unwrap_or_default(),
            args.key.as_str(),
        );
        drive(&manager, &job, file, &args.transfer)
            .await?
            .report(&args.transfer);
    }
    Ok(())
}
