//! The least work any durable receiver does for a block, as a sink for
//! `cargo xtask bench --only durable`: it reads a request's body, writes it
//! into a file, and answers `200` only once an `fdatasync` that began after
//! the write has returned. Requests that wait at once share one sync (group
//! commit), and the file is written in full and synced before the first
//! request, so that a sync flushes data and never the file's size or
//! extents.
//!
//! It keeps no record of what came and parses nothing: a receiver that
//! keeps its records in the same file as the bytes needs at least this. Its
//! speed beside `fileuploader serve --discard` is the best a durable
//! receiver can reach on the machine and disk it runs on.
//!
//! `cargo run --release -p fileuploader-server --example durable_floor --
//! 127.0.0.1:PORT FILE`

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::sync::oneshot;

/// How much of the file the bodies take turns in.
const RING: u64 = 256 << 20;
/// The most of one body kept: bodies follow each other in the file, as in
/// a log, and start again at its beginning when the next would not fit.
const MOST: u64 = 16 << 20;
/// What the file is written with before the first request, at a time.
const CHUNK: usize = 1 << 20;

/// A written body waiting for a sync, and how to tell it that it is done.
type Waiting = oneshot::Sender<io::Result<()>>;

/// Syncs `file` for every group of bodies waiting at once, then answers
/// each of them.
fn group_commit(file: Arc<File>, waiting: mpsc::Receiver<Waiting>) {
    while let Ok(first) = waiting.recv() {
        let mut group = vec![first];
        group.extend(waiting.try_iter());
        let synced = file.sync_data();
        for done in group {
            let answer = match &synced {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = done.send(answer);
        }
    }
}

/// The file the bodies go into, written in full and synced.
fn prepared(path: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; CHUNK];
    for chunk in 0..RING / CHUNK as u64 {
        file.write_all_at(&zeros, chunk * CHUNK as u64)?;
    }
    file.sync_all()?;
    Ok(file)
}

/// Where the bodies go and how they are synced, shared by every request.
struct Floor {
    file: Arc<File>,
    next: AtomicU64,
    syncer: mpsc::Sender<Waiting>,
}

impl Floor {
    /// Writes `body` and waits for a sync that began after the write.
    async fn keep(&self, body: Bytes) -> io::Result<()> {
        let len = (body.len() as u64).min(MOST);
        let at = self.next.fetch_add(len, Ordering::Relaxed) % (RING - MOST);
        self.file.write_all_at(&body[..len as usize], at)?;
        let (done, synced) = oneshot::channel();
        if self.syncer.send(done).is_err() {
            return Err(io::Error::other("the syncing thread has stopped"));
        }
        synced
            .await
            .map_err(|_| io::Error::other("the syncing thread has stopped"))?
    }

    async fn answer(
        &self,
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let body = request.into_body().collect().await?.to_bytes();
        let (status, text) = match self.keep(body).await {
            Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("not kept: {e}\n"),
            ),
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        Ok(response)
    }
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: durable_floor ADDR FILE (for example 127.0.0.1:8080 /tmp/floor.bin)");
        std::process::exit(2);
    };
    let file = Arc::new(prepared(&path)?);
    let (syncer, waiting) = mpsc::channel();
    let synced = file.clone();
    std::thread::spawn(move || group_commit(synced, waiting));
    let floor = Arc::new(Floor {
        file,
        next: AtomicU64::new(0),
        syncer,
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("durable floor on {addr}, writing into {path}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let floor = floor.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let floor = floor.clone();
                async move { floor.answer(request).await }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                eprintln!("connection ended: {e}");
            }
        });
    }
}
