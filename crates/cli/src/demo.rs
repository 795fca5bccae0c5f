//! `fileuploader demo`: a receiver on 127.0.0.1, a sample file, an upload,
//! and a checksum comparison.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use fileuploader_core::{code, UploadManager};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::size::human;
use crate::upload::{drive, transport, Connection, Display, Route};
use crate::{DemoArgs, Failure};

fn io_failure(what: &str, path: &Path, e: io::Error) -> Failure {
    Failure::new(code::READ_FAILED, format!("{what} {}: {e}", path.display()))
}

/// Writes `size` random bytes to `path`, a megabyte at a time.
fn make_sample(path: &Path, size: u64) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    let mut rng = rand::rng();
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        rng.fill_bytes(&mut chunk[..n]);
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.into_inner()?.sync_all()
}

/// The SHA-256 of a file, read in 1 MiB pieces.
fn sha256(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), Failure> {
    let work = tempfile::tempdir().map_err(|e| {
        Failure::new(
            code::FAILED,
            format!("cannot make a temporary directory: {e}"),
        )
    })?;
    let landing = work.path().join("received");
    let receiver = fileuploader_server::Receiver::new(&landing)
        .map_err(|e| io_failure("cannot create", &landing, e))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Failure::new(code::CONNECT, format!("cannot listen on 127.0.0.1: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(code::CONNECT, e.to_string()))?;
    let server = tokio::spawn(receiver.serve(listener));

    let source: PathBuf = match &args.file {
        Some(file) => file.clone(),
        None => {
            let sample = work.path().join("sample.bin");
            let size = args.size;
            let path = sample.clone();
            tokio::task::spawn_blocking(move || make_sample(&path, size))
                .await
                .map_err(|e| Failure::new(code::FAILED, e.to_string()))?
                .map_err(|e| io_failure("cannot write", &sample, e))?;
            sample
        }
    };
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload.bin".into());
    let url = format!("http://{addr}/upload");
    let t = &args.transfer;
    if !t.quiet {
        eprintln!(
            "fileuploader demo: receiver at {url}, landing in {}",
            landing.display()
        );
    }

    let manager = UploadManager::new(transport(t, &Connection::default(), Route::Direct)?);
    let mut job = manager.create_job();
    job.server_url = url;
    job.block_size = t.block_size;
    job.thread_num = t.threads.most.into();
    job.auto_threads = t.threads.auto;
    job.source_value.add(&source, name.as_str(), None);
    let summary = drive(&manager, &job, &source, t, &Display::new(t, 1, || 0)).await?;
    server.abort();

    let landed = landing.join(&name);
    let (sent, got) = tokio::task::spawn_blocking(move || (sha256(&source), sha256(&landed)))
        .await
        .map_err(|e| Failure::new(code::FAILED, e.to_string()))?;
    let sent =
        sent.map_err(|e| Failure::new(code::READ_FAILED, format!("cannot hash the source: {e}")))?;
    let got =
        got.map_err(|e| Failure::new(code::PARTIAL_FILE, format!("the file did not land: {e}")))?;
    if t.json {
        summary.report(t);
    } else if !t.quiet {
        let p = &summary.progress;
        eprintln!(
            "  size        {} ({} bytes)",
            human(p.total_bytes as f64),
            p.total_bytes
        );
        eprintln!("  time        {:.3} s", p.elapsed.as_secs_f64());
        eprintln!("  throughput  {}", summary.rate());
        eprintln!(
            "  blocks      {} of {}, {} in flight{}, HTTP/{}",
            p.total_blocks,
            human(t.block_size as f64),
            t.threads,
            match t.threads.auto {
                true => format!(", {} at the end", p.thread_limit),
                false => String::new(),
            },
            summary.http_version
        );
        eprintln!("  retries     {}", p.retries);
        eprintln!("  sha256      sent   {sent}");
        eprintln!("              landed {got}");
    }
    if sent != got {
        return Err(Failure::new(
            code::PARTIAL_FILE,
            "the landed file differs from the source",
        ));
    }
    if !t.quiet && !t.json {
        eprintln!("  ok: the landed file is identical to the source");
    }
    Ok(())
}
