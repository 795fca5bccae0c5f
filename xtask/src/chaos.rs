//! `cargo xtask chaos`: seeded faults between and inside real processes,
//! judged by what landed.
//!
//! Each run takes a seed and a scenario:
//!
//! - `proxy`: clients reach the receiver through a fault proxy that gives
//!   each direction of each connection latency with jitter, a bandwidth
//!   cap, a trickle, a reset, a stall, a half-close, or nothing, and logs
//!   every fault it fires;
//! - `receiver-kill`: the receiver is killed with SIGKILL (by time on odd
//!   seeds, by acknowledged blocks on even ones) and started again on the
//!   same directory; what the clients' journals say it acknowledged must
//!   still be there;
//! - `receiver-term`: the same with SIGTERM: the receiver must exit 0
//!   within its grace;
//! - `pair-kill`: two receivers share the directory behind nginx (round
//!   robin, no stickiness), so one upload's requests cross both; one of
//!   them is killed as in `receiver-kill` and started again while the
//!   other serves on;
//! - `client-kill`: each client is killed with SIGKILL, half of them by
//!   time, half by progress (once their journal lists a seeded number of
//!   acknowledged blocks, from one to all);
//! - `disk-full`: the receiver's directory is a small tmpfs (mounted by the
//!   harness, which needs root) that fills up during the run;
//! - `same-name`: clients in pairs send different bytes under one name at
//!   once, each of any protocol; the receiver refuses a taken name, so one
//!   of each pair lands and the other must say it did not;
//! - `stranger`: the receiver wants a token; while the clients upload with
//!   theirs, a stranger with another token aims whole files, status
//!   queries, discards, `HEAD`s, `PATCH`es and `DELETE`s at their upload
//!   ids, and sends forms with several file parts: none may be answered
//!   as if a client's upload were the stranger's, nor change what lands;
//! - `liar`: each client's answers pass a proxy (HTTP/1.1) that, on a
//!   seeded share of connections, lies: every `Upload-Offset` reads as all
//!   nines, a landed statement's `length` and `crc32c` are off by one
//!   digit. A client may fail; it may never say a file landed that did
//!   not, and its extra run (honest answers by then) must land it;
//! - `concat-kill`: tus clients concatenating parallel parts, the receiver
//!   killed with SIGKILL as one of them sends its final request;
//! - `noisy-neighbour`: while the clients upload with their token, another
//!   tenant with its own attacks the service's bounds: bodies trickled a
//!   byte at a time, requests pipelined and never read, requests held in
//!   flight by the hundred, uploads declared and never sent, a final
//!   naming one part many times, a duplicate block holding a range while
//!   its upload's last block lands. Every honest upload must land, none may
//!   hang, every attack must be answered within its bound, and the
//!   receiver's peak memory must stay under 64 MiB;
//! - `folder-kill`: one client sends the clients' files as a folder
//!   (`-r --files 3`, one protocol), stopped by SIGINT (even seeds) or
//!   SIGKILL (odd ones) at a seeded moment, then, if that stopped it, run
//!   once more, the same command: the files that landed before the stop
//!   count as landed (the receiver is asked), the rest are sent, and the
//!   run must exit 0 with every file whole;
//! - `expiring`: the receiver expires uploads untouched for 1 s while
//!   every client is paced (`--limit-rate`) to take 2-4 s, half of them
//!   one block at a time: an upload expired before the last client's file
//!   landed is a violation (`Expired`), whatever the client made of it;
//! - `bucket`: files go straight to a bucket of the run's own Garage,
//!   signed by a receiver's Companion routes or by the clients themselves,
//!   every connection to the bucket through a fault proxy, the receiver or
//!   the clients killed with SIGKILL (see [`bucket`]).
//!
//! After each run a receiver with a short expiry serves the directory for
//! a moment: no partial data may be left, nor more than a few dozen files
//! open (a leak otherwise).
//!
//! Several clients upload at once (sizes from 0 bytes up, block sizes from
//! 1 KiB, the segmented protocol, tus and the IETF draft, HTTP/1.1 and
//! HTTP/2, 4 blocks in flight or `--threads auto`, half of them with
//! `--hedge`), each with `--resume`; a client that fails is run once more.
//! Every file then is landed byte-identical, or (on a full disk) failed
//! with a non-zero exit and nothing landed under its name; anything else is
//! a violation: a false success (exit 0, file missing or different),
//! corruption, a lost acknowledgement, a file its extra run did not land,
//! a hang (no exit within the bound), a leak, a landed file whose
//! after-landing hook (a command every receiver runs) never heard of it
//! (`LostEvent`), or a file a client says landed whose kept receipt (every
//! receiver signs them, every client keeps them) does not verify against
//! the landed bytes with the receiver's key (`BadReceipt`). Every receiver
//! also asks a before-creation hook (a command that lets all in) about each
//! upload. `--seed S --scenario NAME`
//! replays one run's plan; the table and each violation's seed are printed
//! and written to `target/chaos/report.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fileuploader_core::protocol::Handle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod bucket;

const SCENARIOS: [&str; 14] = [
    "proxy",
    "receiver-kill",
    "receiver-term",
    "client-kill",
    "disk-full",
    "same-name",
    "stranger",
    "liar",
    "concat-kill",
    "noisy-neighbour",
    "folder-kill",
    "expiring",
    "bucket",
    "pair-kill",
];
/// The receiver's time to live for uploads in `expiring`: shorter than
/// every client's upload, longer than any pause between its requests.
const EXPIRING_TTL: &str = "1s";
/// The most memory a receiver may take (`VmHWM`) in `noisy-neighbour`.
const MAX_RSS_KIB: u64 = 64 * 1024;
/// The receiver's limits in `noisy-neighbour`, tightened so attacks bite
/// within a run: a body must bring 256 bytes/s over 2 s, an answer be read
/// within 3 s; each tenant may hold 1 100 MiB (the clients' 16 files of up
/// to 64 MiB fit) of the receiver's 2 300, and 64 requests at once.
const NOISY_LIMITS: [&str; 10] = [
    "--rate-window",
    "2s",
    "--send-timeout",
    "3s",
    "--quota",
    "2300MiB",
    "--quota-per-credential",
    "1100MiB",
    "--max-requests-per-credential",
    "64",
];
/// The clients' token in `stranger` and `noisy-neighbour`, and the other
/// tenant's.
const TOKENS: [&str; 2] = ["victim-token", "stranger-token"];
/// The most files an idle receiver may hold open.
const MAX_IDLE_FDS: usize = 64;
/// How long one client run may take before it counts as a hang.
const RUN_BOUND: Duration = Duration::from_secs(90);
/// How long a landing's event may take to reach the hook before it
/// counts as lost, where no receiver died holding it.
const EVENTS_WAIT: Duration = Duration::from_secs(10);
/// The most blocks one file is cut into.
const MAX_BLOCKS: u64 = 2048;
/// The most blocks of a `concat-kill` file: fewer than the client joins
/// in one final request (145 parts at `/files/`).
const CONCAT_PARTS: u64 = 128;

/// A small seeded generator (splitmix64): the same seed, the same run.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the proxy does to one direction of one connection.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// Each read waits `base` plus up to `jitter` before it passes on.
    Latency {
        base: Duration,
        jitter: Duration,
    },
    /// At most this many bytes a second.
    Cap(u64),
    /// The first `upto` bytes pass `piece` bytes at a time, a millisecond
    /// apart.
    Trickle {
        upto: u64,
        piece: usize,
    },
    /// The connection is reset (RST both ways) after this many bytes.
    Reset(u64),
    /// Nothing passes for `stall` once this many bytes have.
    Stall {
        at: u64,
        stall: Duration,
    },
    /// A read waits `stall` before it passes on, about once in this many
    /// bytes (by bytes, not reads: reads shrink as more connections share
    /// the proxy, and a stall per read would fall more often on more of
    /// them; the bench's stalls: about one request in fifty of 8 MiB).
    Stalls {
        every: u64,
        stall: Duration,
    },
    /// This direction ends (FIN) after this many bytes; the other goes on.
    HalfClose(u64),
    /// Every answer lies (see [`lie`]).
    Lie,
}

impl Fault {
    /// A fault for a direction that carries up to about `scale` bytes per
    /// connection: requests carry blocks, answers a few hundred bytes each.
    fn pick(rng: &mut Rng, scale: u64) -> Fault {
        match rng.below(9) {
            0..=2 => Fault::None,
            3 => Fault::Latency {
                base: Duration::from_millis(1 + rng.below(10)),
                jitter: Duration::from_millis(rng.below(10)),
            },
            // At least 2 MiB/s: 64 MiB through one capped connection ends
            // within the run's bound.
            4 => Fault::Cap((2 << 20) + rng.below(6 << 20)),
            5 => Fault::Trickle {
                upto: rng.below(scale.min(1 << 20)),
                piece: 1 + rng.below(512) as usize,
            },
            6 => Fault::Reset(rng.below(scale)),
            // Mostly shorter than the clients' idle timeout (3 s), one in
            // eight the 40 s of a dead link.
            7 => Fault::Stall {
                at: rng.below(scale),
                stall: if rng.below(8) == 0 {
                    Duration::from_secs(40)
                } else {
                    Duration::from_millis(500 + rng.below(3000))
                },
            },
            _ => Fault::HalfClose(rng.below(scale)),
        }
    }

    /// Whether this fault ends its connection with a reset.
    fn resets(self) -> bool {
        matches!(self, Fault::Reset(_))
    }
}

/// Which faults a proxy gives each connection: one per direction, up
/// (requests) and down (answers).
#[derive(Debug, Clone, Copy)]
enum Faults {
    /// Any of the network's faults, both ways (`proxy`).
    Network,
    /// Lies in the answers of a third of the connections (`liar`).
    Lies,
    /// Requests stall now and then, answers pass (`cargo xtask bench`).
    Stalls,
}

impl Faults {
    fn pick(self, rng: &mut Rng) -> (Fault, Fault) {
        match self {
            Faults::Network => (Fault::pick(rng, 8 << 20), Fault::pick(rng, 4096)),
            Faults::Lies if rng.below(3) == 0 => (Fault::None, Fault::Lie),
            Faults::Lies => (Fault::None, Fault::None),
            Faults::Stalls => (STALLS, Fault::None),
        }
    }
}

/// The bench's stalls: 2 s, about once in fifty requests of 8 MiB.
const STALLS: Fault = Fault::Stalls {
    every: 50 * (8 << 20),
    stall: Duration::from_secs(2),
};

/// A proxy to `upstream` whose requests stall as [`Faults::Stalls`] says,
/// seeded by `seed`; its port. It runs on `runtime` until that ends.
pub(crate) fn stalling_proxy(
    runtime: &tokio::runtime::Runtime,
    upstream: u16,
    seed: u64,
) -> std::io::Result<u16> {
    let calm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    runtime.block_on(fault_proxy(
        upstream,
        (seed, Faults::Stalls),
        FaultLog::default(),
        "stalls".into(),
        calm,
    ))
}

/// The faults a proxy fired, one line each.
type FaultLog = Arc<Mutex<Vec<String>>>;

/// How one direction of a proxied connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The source closed or failed; the end was passed on.
    Closed,
    /// The fault reset the connection.
    Reset,
}

/// Moves bytes one way through `fault`, logging the moment it fires.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    fault: Fault,
    mut jitter: Rng,
    log: (FaultLog, String),
) -> End {
    let fire = |what: String| {
        if let Ok(mut lines) = log.0.lock() {
            lines.push(format!("{}: {what}", log.1));
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut moved = 0u64;
    let mut stalled = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if matches!(fault, Fault::Lie) {
            let told = buf[..n].to_vec();
            lie(&mut buf[..n]);
            if buf[..n] != told[..] {
                fire(format!(
                    "lied in an answer {:?}…",
                    String::from_utf8_lossy(&buf[..n.min(12)])
                ));
            }
        }
        let mut chunk = &buf[..n];
        match fault {
            Fault::Latency { base, jitter: j } => {
                let extra = jitter.below(j.as_micros() as u64 + 1);
                tokio::time::sleep(base + Duration::from_micros(extra)).await;
            }
            Fault::Stalls { every, stall } if jitter.below(every) < n as u64 => {
                fire(format!("stall of {stall:?}"));
                tokio::time::sleep(stall).await;
            }
            Fault::Cap(rate) => {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
            Fault::Trickle { upto, piece } if moved < upto => {
                for part in chunk.chunks(piece) {
                    if to.write_all(part).await.is_err() {
                        return End::Closed;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                moved += n as u64;
                continue;
            }
            Fault::Reset(at) if moved + n as u64 > at => {
                fire(format!("reset after {at} bytes"));
                return End::Reset;
            }
            Fault::Stall { at, stall } if !stalled && moved + n as u64 > at => {
                stalled = true;
                fire(format!("stall of {stall:?} after {at} bytes"));
                let before = (at - moved) as usize;
                if to.write_all(&chunk[..before]).await.is_err() {
                    return End::Closed;
                }
                chunk = &chunk[before..];
                tokio::time::sleep(stall).await;
            }
            Fault::HalfClose(at) if moved + n as u64 > at => {
                fire(format!("half-close after {at} bytes"));
                let _ = to.write_all(&chunk[..(at - moved) as usize]).await;
                let _ = to.shutdown().await;
                // The source is no longer read: its sender stalls until the
                // other direction ends.
                return End::Closed;
            }
            _ => {}
        }
        moved += n as u64;
        if to.write_all(chunk).await.is_err() {
            return End::Closed;
        }
    }
    let _ = to.shutdown().await;
    End::Closed
}

/// A TCP proxy on 127.0.0.1 that gives each connection, in the order they
/// come, a seeded fault of `faults` per direction; returns its port. Each
/// fault that fires is logged, under `name`.
async fn fault_proxy(
    upstream: u16,
    (seed, faults): (u64, Faults),
    log: FaultLog,
    name: String,
    calm: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        let mut number = 0u64;
        while let Ok((client, _)) = listener.accept().await {
            number += 1;
            let (mut up, mut down) = faults.pick(&mut rng);
            if calm.load(std::sync::atomic::Ordering::Relaxed) {
                (up, down) = (Fault::None, Fault::None);
            }
            let jitter = Rng(rng.next());
            let (log, name) = (log.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                for s in [&client, &server] {
                    let _ = s.set_nodelay(true);
                    if up.resets() || down.resets() {
                        // Closed with RST rather than FIN.
                        let _ = s.set_zero_linger();
                    }
                }
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let name = |way: &str| (log.clone(), format!("{name} connection {number} {way}"));
                let up = pump(cr, sw, up, jitter.clone(), name("up"));
                let down = pump(sr, cw, down, jitter, name("down"));
                tokio::pin!(up, down);
                let (mut up_open, mut down_open) = (true, true);
                while up_open || down_open {
                    let end = tokio::select! {
                        end = &mut up, if up_open => { up_open = false; end }
                        end = &mut down, if down_open => { down_open = false; end }
                    };
                    if end == End::Reset {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// A port nothing listens on, never the same twice in this process (runs
/// side by side each restart their receiver on their own).
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_or(0, |a| a.port());
        if given.insert(port) {
            return port;
        }
    }
}

/// A `fileuploader serve` process, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(bin: &Path, dir: &Path, port: u16, extra: &[&str]) -> Result<Serve, String> {
    // Its log beside its directory, appended across restarts: what a
    // violation's replay reads first.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .map_err(|e| format!("serve's log: {e}"))?;
    let child = Command::new(bin)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("serve: {e}"))?;
    let served = Serve(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("serve did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(served)
}

/// One client's file and how it is sent.
struct Upload {
    path: PathBuf,
    /// The name it lands under (`--name`).
    name: String,
    data: Vec<u8>,
    block: u64,
    protocol: &'static str,
    http2: bool,
    /// `--threads`: 4, or `auto`.
    threads: &'static str,
    /// Whether it sends a stalled block again beside itself (`--hedge`).
    hedge: bool,
    /// `--limit-rate`, when its bytes are paced.
    rate: Option<String>,
    journals: PathBuf,
    /// Where its client keeps receipts (`--receipt-dir`).
    receipts: PathBuf,
    token: Option<&'static str>,
}

impl Upload {
    fn blocks(&self) -> u64 {
        (self.data.len() as u64).div_ceil(self.block)
    }

    /// Where the client's runs write their messages.
    fn said(&self) -> PathBuf {
        self.journals.with_extension("stderr")
    }

    /// A run of this upload's client: `upload` in the journals it keeps,
    /// its messages appended to [`said`](Self::said).
    fn command(&self, bin: &Path) -> Command {
        let mut c = Command::new(bin);
        c.arg("upload")
            .env("FILEUPLOADER_JOURNAL_DIR", &self.journals)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.said())
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            );
        c
    }
}

/// A file's seeded bytes: every 8 bytes drawn afresh, so a block written
/// at the wrong offset never reads the same as the right one.
fn content(seed: u64, client: usize, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.rotate_left(32) ^ client as u64);
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
    }
    data
}

fn client(bin: &Path, port: u16, u: &Upload) -> Command {
    let path = url_path(u.protocol);
    let mut c = u.command(bin);
    c.args(["--quiet", "--resume", "--retries", "8"])
        .args(["--idle-timeout", "3s", "--protocol", u.protocol])
        .args(["--url", &format!("http://127.0.0.1:{port}/{path}")])
        .args(["--block-size", &u.block.to_string(), "--threads", u.threads])
        .args(u.http2.then_some("--http2"))
        .args(u.hedge.then_some("--hedge"))
        .args(u.rate.iter().flat_map(|r| ["--limit-rate", r.as_str()]))
        .args(["--name", &u.name])
        .arg("--receipt-dir")
        .arg(&u.receipts)
        .args(u.token.iter().flat_map(|t| ["--token", t]))
        .arg(&u.path);
    c
}

/// The receiver's path for `protocol`: the segmented convention's, or the
/// creation URL of tus and the draft.
fn url_path(protocol: &str) -> &'static str {
    if protocol == "segmented" {
        "upload"
    } else {
        "files"
    }
}

/// The `folder-kill` client: every file of `src` at once, `--files 3`,
/// its journals in `journals`, at most `rate` bytes a second when given.
fn folder_client(
    bin: &Path,
    port: u16,
    src: &Path,
    journals: &Path,
    u: &Upload,
    rate: Option<&str>,
) -> Command {
    let path = url_path(u.protocol);
    let mut c = Command::new(bin);
    c.args(["upload", "--quiet", "--resume", "--retries", "8", "-r"])
        .args([
            "--files",
            "3",
            "--idle-timeout",
            "3s",
            "--protocol",
            u.protocol,
        ])
        .args(["--url", &format!("http://127.0.0.1:{port}/{path}")])
        .args(["--block-size", &u.block.to_string(), "--threads", "4"])
        .args(rate.iter().flat_map(|r| ["--limit-rate", r]))
        .arg("--receipt-dir")
        .arg(&u.receipts)
        .arg(src)
        .env("FILEUPLOADER_JOURNAL_DIR", journals)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(journals.with_extension("stderr"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
        );
    c
}

/// Waits for a child up to the bound; `None` is a hang (the child is
/// killed).
fn wait_bounded(mut child: Child) -> Option<bool> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.success()),
            Ok(None) if started.elapsed() > RUN_BOUND => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return Some(false),
        }
    }
}

/// The landed files of `landed` whose event the hook's log `events`
/// does not name within `wait` (the receiver still runs, delivering what
/// its outbox holds, from before any kill too).
fn lost_events(landed: BTreeSet<&str>, events: &Path, wait: Duration) -> Vec<(String, Verdict)> {
    let told = || -> BTreeSet<String> {
        std::fs::read_to_string(events)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    };
    let started = Instant::now();
    let mut heard = told();
    while landed.iter().any(|n| !heard.contains(*n)) && started.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(50));
        heard = told();
    }
    landed
        .into_iter()
        .filter(|n| !heard.contains(*n))
        .map(|n| {
            (
                format!("{n} landed; its hook never heard of it"),
                Verdict::LostEvent,
            )
        })
        .collect()
}

/// Whether the receipt `u`'s client kept (found by the landed name under
/// its receipts folder) verifies with the receiver's `public` key against
/// the bytes sent, which landed; `Err` says why not.
fn receipt_holds(u: &Upload, public: &[u8]) -> Result<(), String> {
    use sha2::Digest;
    let wanted = format!("{}.receipt", u.name);
    let mut folders = vec![u.receipts.clone()];
    let mut found = None;
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else if entry.file_name().to_string_lossy() == wanted {
                found = Some(path);
            }
        }
    }
    let path = found.ok_or_else(|| format!("no receipt kept under {}", u.receipts.display()))?;
    let compact = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
    let bytes = (
        u.data.len() as u64,
        crc32c::crc32c(&u.data),
        sha2::Sha256::digest(&u.data).into(),
    );
    fileuploader_server::receipts::verify(&compact, public, Some(bytes))
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A receipt key made afresh at `key` (`fileuploader receipt-key`): its
/// public half, to verify receipts with.
fn receipt_key(bin: &Path, key: &Path) -> Result<Vec<u8>, String> {
    let public = key.with_extension("key.pub");
    let _ = (std::fs::remove_file(key), std::fs::remove_file(&public));
    let made = Command::new(bin)
        .arg("receipt-key")
        .arg(key)
        .stderr(Stdio::null())
        .status();
    if !made.is_ok_and(|s| s.success()) {
        return Err("fileuploader receipt-key failed".into());
    }
    fileuploader_server::receipts::public_key_from_pem_file(&public)
}

/// How one file's runs came out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Landed,
    FailedCleanly,
    FalseSuccess,
    Corruption,
    LostAck,
    Hang,
    /// Partial data left after expiry, or a receiver that did not stop on
    /// SIGTERM.
    Leak,
    /// A file landed, but its after-landing hook never heard of it.
    LostEvent,
    /// A file a client says landed has no receipt, or one that does not
    /// verify against the landed bytes with the receiver's key.
    BadReceipt,
    /// A file whose one extra run did not land it and say so, though
    /// nothing stood in its way any more (every scenario but `disk-full`).
    NotResumed,
    /// A request of other credentials was answered as if the upload were
    /// theirs, or a form's dropped part or a stranger's file landed.
    Takeover,
    /// A bound the receiver promises did not hold under a noisy tenant:
    /// an attack answered late or let through, or memory over its bound.
    Unbounded,
    /// An upload was expired while its client was sending it (`expiring`).
    Expired,
}

impl Verdict {
    fn is_violation(&self) -> bool {
        !matches!(self, Verdict::Landed | Verdict::FailedCleanly)
    }
}

/// What a client's journal says the receiver acknowledged: the session's
/// handle (an upload id, a URL, or how a resumable upload was sent) and
/// each acknowledged block with its receipt.
struct Journaled {
    handle: Handle,
    acked: Vec<(u64, Option<String>)>,
}

impl Journaled {
    /// The upload id or URL the handle names, if it names one.
    fn named(&self) -> Option<&str> {
        match &self.handle {
            Handle::Id { id } => Some(id),
            Handle::Url { url } => Some(url),
            _ => None,
        }
    }
}

fn journaled(journals: &Path) -> Option<Journaled> {
    let entry = std::fs::read_dir(journals).ok()?.next()?.ok()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    // The first line's eighth field is the handle, as JSON.
    let handle = serde_json::from_str(text.lines().next()?.split('\t').nth(7)?).ok()?;
    // A line without its end is one a killed client was writing.
    let acked = text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n')?.strip_prefix("ack "))
        .filter_map(|l| {
            let mut words = l.split(' ');
            let index = words.next()?.parse().ok()?;
            Some((index, words.nth(1).map(unescape)))
        })
        .collect();
    Some(Journaled { handle, acked })
}

/// A journal's receipt with its `%XX` escapes undone.
fn unescape(text: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        let hex = (b == b'%')
            .then(|| {
                let pair = [bytes.next()?, bytes.next()?];
                u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()
            })
            .flatten();
        out.push(hex.unwrap_or(b));
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How many of the clients' blocks are acknowledged: those their
/// journals list, and all of a client that has ended.
fn acked_blocks(uploads: &[Upload], children: &mut [Child]) -> u64 {
    uploads
        .iter()
        .zip(children)
        .map(|(u, c)| match c.try_wait() {
            Ok(Some(_)) => u.blocks(),
            _ => journaled(&u.journals).map_or(0, |j| j.acked.len() as u64),
        })
        .sum()
}

/// The answer of the receiver at `port` to a bodiless request for `target`
/// (a path, or a URL whose path is taken): its head, lower-cased, and body.
fn ask(port: u16, method: &str, target: &str, headers: &str) -> Option<(String, String)> {
    request(port, method, target, headers, b"")
}

/// The same, for a request with `body`.
fn request(
    port: u16,
    method: &str,
    target: &str,
    headers: &str,
    body: &[u8],
) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let path = match target.find("://") {
        Some(at) => &target[at + 3 + target[at + 3..].find('/')?..],
        None => target,
    };
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    // An answer that never comes is a finding, not a harness that hangs.
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: x\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    Some((head.to_ascii_lowercase(), body.to_owned()))
}

/// The `Upload-Offset` a resumable upload's `HEAD` answers, if any.
fn offset(port: u16, url: &str) -> Option<u64> {
    let (head, _) = ask(port, "HEAD", url, "tus-resumable: 1.0.0\r\n")?;
    head.lines()
        .find_map(|l| l.strip_prefix("upload-offset:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether the receiver at `port` holds every block `journal` lists as
/// acknowledged (or the landed file): asked by upload id (segmented), by
/// each part's offset (tus concatenation) or by the upload's offset.
fn acks_kept(port: u16, u: &Upload, journal: &Journaled) -> bool {
    let total = u.data.len() as u64;
    let end = |index: u64| ((index + 1) * u.block).min(total);
    match u.protocol {
        "segmented" => {
            let Some((_, body)) = ask(
                port,
                "GET",
                &format!("/upload?upload_id={}", journal.named().unwrap_or("")),
                "",
            ) else {
                return false;
            };
            let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
                return false;
            };
            if status["state"] == "landed" {
                return true;
            }
            let held: Vec<(u64, u64)> =
                serde_json::from_value(status["received"].clone()).unwrap_or_default();
            journal.acked.iter().all(|&(b, _)| {
                held.iter()
                    .any(|&(hs, he)| hs <= b * u.block && end(b) <= he)
            })
        }
        _ if journal.handle == Handle::Parts => journal.acked.iter().all(|(_, receipt)| {
            let mut words = receipt.as_deref().unwrap_or("").splitn(3, ' ');
            let (Some(start), Some(stop), Some(url)) = (words.next(), words.next(), words.next())
            else {
                return false;
            };
            let len = stop.parse::<u64>().ok().zip(start.parse::<u64>().ok());
            len.is_some_and(|(stop, start)| offset(port, url) == Some(stop - start))
        }),
        _ => {
            // A creation with upload is journaled with its idempotency key
            // until block 0's receipt names the URL.
            let url = match journal.named() {
                Some(url) => url.to_owned(),
                None => journal
                    .acked
                    .iter()
                    .find_map(|(i, r)| (*i == 0).then(|| r.clone()).flatten())
                    .unwrap_or_default(),
            };
            let needed = journal.acked.iter().map(|&(b, _)| end(b)).max();
            needed.is_none_or(|needed| offset(port, &url).is_some_and(|o| o >= needed))
        }
    }
}

/// Where `data` has `what` followed by digits (or hex digits), the span of
/// those digits; from `from` on.
fn digits_after(data: &[u8], what: &[u8], from: usize, hex: bool) -> Option<(usize, usize)> {
    let lower = data.to_ascii_lowercase();
    let at = from + lower[from..].windows(what.len()).position(|w| w == what)? + what.len();
    let len = data[at..]
        .iter()
        .take_while(|b| {
            if hex {
                b.is_ascii_hexdigit()
            } else {
                b.is_ascii_digit()
            }
        })
        .count();
    Some((at, at + len))
}

/// An answer as the liar tells it: each `Upload-Offset` all nines, each
/// landed statement's `length` and `crc32c` one digit off; the same number
/// of bytes, so the framing holds.
fn lie(data: &mut [u8]) {
    let mut from = 0;
    while let Some((start, end)) = digits_after(data, b"upload-offset: ", from, false) {
        data[start..end].fill(b'9');
        from = end;
    }
    if let Some((start, end)) = digits_after(data, b"\"length\":", 0, false) {
        if end > start {
            data[end - 1] = b'0' + (data[end - 1] - b'0' + 1) % 10;
        }
    }
    if let Some((start, end)) = digits_after(data, b"\"crc32c\":\"", 0, true) {
        if end > start {
            data[start] = if data[start] == b'0' { b'1' } else { b'0' };
        }
    }
}

/// A `multipart/form-data` body of these files, and its content type.
fn form(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend_from_slice(
            format!("--chaos\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"{name}\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--chaos--\r\n");
    (
        "content-type: multipart/form-data; boundary=chaos\r\n".into(),
        body,
    )
}

/// The upload ids and URLs a client's journal names: what a stranger who
/// watched the wire would know.
fn live(u: &Upload, journal: &Journaled) -> (Vec<String>, Vec<String>) {
    let words = journal
        .named()
        .into_iter()
        .chain(journal.acked.iter().filter_map(|(_, r)| r.as_deref()))
        .flat_map(|w| w.split(' '));
    let urls: Vec<String> = words
        .filter(|w| w.contains("://") || w.starts_with('/'))
        .map(str::to_owned)
        .collect();
    let mut ids: Vec<String> = urls
        .iter()
        .filter_map(|u| u.split('?').next()?.rsplit('/').next().map(str::to_owned))
        .collect();
    if let (Handle::Id { id }, "segmented") = (&journal.handle, u.protocol) {
        ids.push(id.clone());
    }
    (ids, urls)
}

/// The stranger of `stranger`: until `done`, aims requests with the other
/// token at the clients' uploads, and forms of several file parts at the
/// receiver; each answer that treated a client's upload as the stranger's.
/// (Upload ids are kept per credential: under any id a client names, the
/// stranger may land its own `evil-N.bin`, and hear of that landing, but
/// of nothing of the client's.)
fn stranger(port: u16, uploads: &[Upload], done: &std::sync::atomic::AtomicBool) -> Vec<String> {
    let auth = format!("authorization: Bearer {}\r\n", TOKENS[1]);
    let tus = format!("{auth}tus-resumable: 1.0.0\r\n");
    let ok = |answer: Option<(String, String)>| {
        answer.and_then(|(head, body)| {
            let status = head.split(' ').nth(1)?.to_owned();
            let its_own =
                body.contains("\"name\":\"evil-") || head.contains("x-landed-name: evil-");
            (status.starts_with('2') && !its_own).then_some(status)
        })
    };
    let mut found = Vec::new();
    let mut round = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        round += 1;
        for u in uploads {
            let Some(journal) = journaled(&u.journals) else {
                continue;
            };
            let (ids, urls) = live(u, &journal);
            for id in &ids {
                let (kind, body) = form(&[(&format!("evil-{round}.bin"), b"evil")]);
                let headers = format!("{auth}{kind}x-upload-id: {id}\r\n");
                if let Some(s) = ok(request(port, "POST", "/upload", &headers, &body)) {
                    found.push(format!("a whole file onto {}'s upload {id}: {s}", u.name));
                }
                let query = format!("/upload?upload_id={id}");
                if let Some(s) = ok(ask(port, "GET", &query, &auth)) {
                    found.push(format!("the status of {}'s upload {id}: {s}", u.name));
                }
                let _ = ask(port, "DELETE", &query, &auth);
            }
            for url in &urls {
                for (method, body) in [("HEAD", &b""[..]), ("PATCH", b"evil"), ("DELETE", b"")] {
                    let headers = format!(
                        "{tus}upload-offset: 0\r\ncontent-type: application/offset+octet-stream\r\n"
                    );
                    if let Some(s) = ok(request(port, method, url, &headers, body)) {
                        found.push(format!("{method} of {}'s upload {url}: {s}", u.name));
                    }
                }
            }
        }
        let (kind, body) = form(&[
            (&format!("multi-a-{round}.bin"), b"aaaa"),
            (&format!("multi-b-{round}.bin"), b"bbbb"),
        ]);
        if let Some(s) = ok(request(
            port,
            "POST",
            "/upload",
            &format!("{auth}{kind}"),
            &body,
        )) {
            found.push(format!("a form of two file parts: {s}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    found
}

/// The other tenant of `noisy-neighbour`: attacks the receiver's bounds
/// with its own token until `done`, in rounds whose mix follows `seed`;
/// returns each bound that did not hold.
fn noisy(port: u16, seed: u64, done: &std::sync::atomic::AtomicBool) -> Vec<String> {
    use std::io::Write;
    let auth = format!("authorization: Bearer {}\r\n", TOKENS[1]);
    let tus = format!("{auth}tus-resumable: 1.0.0\r\n");
    let status = |answer: &Option<(String, String)>| -> String {
        answer
            .as_ref()
            .and_then(|(head, _)| head.split(' ').nth(1).map(str::to_owned))
            .unwrap_or_else(|| "no answer".into())
    };
    let connect = || {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        tcp.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        Some(tcp)
    };
    let mut rng = Rng(seed ^ 0x0a15e);
    let mut found = Vec::new();
    let mut tricklers: Vec<std::net::TcpStream> = Vec::new();
    let mut pipeliners = Vec::new();
    let mut round = 0u64;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        round += 1;
        // Bodies at a byte a round: each is cut off by the minimum rate,
        // and replaced, so about a hundred stay open.
        tricklers.retain_mut(|t| t.write_all(b"x").is_ok());
        while tricklers.len() < 100 {
            let Some(mut t) = connect() else { break };
            let (kind, _) = form(&[]);
            let head = format!(
                "POST /upload HTTP/1.1\r\nhost: x\r\n{auth}{kind}content-length: 100000\r\n\r\n--chaos\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"trickled.bin\"\r\n\r\n"
            );
            if t.write_all(head.as_bytes()).is_ok() {
                tricklers.push(t);
            }
        }
        match rng.below(4) {
            0 => {
                // Status queries pipelined by the thousand, never read.
                if let Some(mut p) = connect() {
                    let one = format!(
                        "GET /upload?upload_id=noisy-{round:08} HTTP/1.1\r\nhost: x\r\n{auth}\r\n"
                    );
                    let _ = p.write_all(one.repeat(5000).as_bytes());
                    pipeliners.push(p);
                    if pipeliners.len() > 4 {
                        pipeliners.remove(0);
                    }
                }
            }
            1 => {
                // Room declared and never used: refused once the tenant's
                // quota is spent, never answered past its bound.
                let started = Instant::now();
                let headers = format!("{tus}upload-length: {}\r\n", 120 << 20);
                let answer = request(port, "POST", "/files", &headers, b"");
                let s = status(&answer);
                if !matches!(s.as_str(), "201" | "503" | "507")
                    || started.elapsed() > Duration::from_secs(10)
                {
                    found.push(format!(
                        "a creation of 120 MiB answered {s} after {:?}",
                        started.elapsed()
                    ));
                }
            }
            2 => {
                // A final naming one finished part many times.
                let headers = format!("{tus}upload-length: 1024\r\nupload-concat: partial\r\n");
                let created = request(port, "POST", "/files", &headers, b"");
                let url = created.as_ref().and_then(|(head, _)| {
                    head.lines()
                        .find_map(|l| l.strip_prefix("location:"))
                        .map(|l| l.trim().to_owned())
                });
                if let Some(url) = url {
                    let patch = format!("{tus}upload-offset: 0\r\ncontent-type: application/offset+octet-stream\r\n");
                    let _ = request(port, "PATCH", &url, &patch, &[7u8; 1024]);
                    let parts = vec![url.as_str(); 50].join(" ");
                    let final_ = request(
                        port,
                        "POST",
                        "/files",
                        &format!("{tus}upload-concat: final;{parts}\r\n"),
                        b"",
                    );
                    let s = status(&final_);
                    if s.starts_with('2') {
                        found.push(format!("a final naming one part 50 times answered {s}"));
                    }
                    let _ = ask(port, "DELETE", &url, &tus);
                }
            }
            _ => {
                // A duplicate block holds a range while the last block
                // lands: the landing waits boundedly, never for good.
                let id = format!("noisy-held-{seed}-{round}");
                let (kind, first) = form(&[("noisy.bin", &[1u8; 1024])]);
                let block = |range: &str| {
                    format!(
                        "{auth}{kind}x-upload-id: {id}\r\ncontent-range: bytes {range}/2048\r\n"
                    )
                };
                let _ = request(port, "POST", "/upload", &block("0-1023"), &first);
                if let Some(mut holder) = connect() {
                    let head = format!(
                        "POST /upload HTTP/1.1\r\nhost: x\r\n{}content-length: {}\r\n\r\n",
                        block("0-1023"),
                        first.len() + 100
                    );
                    let _ = holder.write_all(head.as_bytes());
                    let _ = holder.write_all(&first[..first.len() - 11]);
                    let started = Instant::now();
                    let (_, last) = form(&[("noisy.bin", &[2u8; 1024])]);
                    let answer = request(port, "POST", "/upload", &block("1024-2047"), &last);
                    if answer.is_none() || started.elapsed() > Duration::from_secs(10) {
                        found.push(format!(
                            "a landing behind a held range answered {} after {:?}",
                            status(&answer),
                            started.elapsed()
                        ));
                    }
                    drop(holder);
                }
                let _ = ask(port, "DELETE", &format!("/upload?upload_id={id}"), &auth);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    found
}

/// The peak memory of process `pid`, in KiB (`VmHWM`).
pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One seeded run of one scenario: every client's verdict.
fn run_once(
    bin: &Path,
    scenario: &str,
    seed: u64,
    clients: usize,
    max_size: u64,
    out: &Path,
) -> Result<Vec<(String, Verdict)>, String> {
    // Of this process: two harnesses (a replay beside a long run) never
    // share a run's files.
    let work = work_root().join(format!(
        "{WORK_PREFIX}{}-{scenario}-{seed}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&work);
    if scenario == "bucket" {
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let verdicts = bucket::run_once(bin, seed, clients, max_size, &work, out);
        let _ = std::fs::remove_dir_all(&work);
        return verdicts;
    }
    let (dir, src) = (work.join("landing"), work.join("sources"));
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let mut rng = Rng(seed);
    let mut uploads = Vec::new();
    for i in 0..clients {
        let len = match rng.below(5) {
            0 => rng.below(2),
            _ => rng.below(max_size),
        } as usize;
        let data = content(seed, i, len);
        let path = src.join(format!("c{i}.bin"));
        std::fs::write(&path, &data).map_err(|e| e.to_string())?;
        let journals = work.join(format!("journals-{i}"));
        std::fs::create_dir_all(&journals).map_err(|e| e.to_string())?;
        // At most MAX_BLOCKS blocks: a single stream of 32 000 blocks of
        // 1 KiB cannot finish within RUN_BOUND, loaded or not.
        let mut block = (1024 << rng.below(if max_size > 8 << 20 { 14 } else { 11 }))
            .max((len as u64).div_ceil(MAX_BLOCKS).next_power_of_two());
        let mut protocol = ["segmented", "tus", "ietf"][rng.below(3) as usize];
        // The liar's proxy and nginx (before `pair-kill`'s receivers)
        // speak HTTP/1.1 only.
        let http2 = rng.below(2) == 1 && !matches!(scenario, "liar" | "pair-kill");
        if scenario == "concat-kill" {
            // Parts in parallel: tus, a few blocks at least, and few
            // enough for one final request to name (the client sends more
            // as one stream).
            protocol = "tus";
            block = block
                .min((len as u64 / 4).max(1024))
                .max((len as u64).div_ceil(CONCAT_PARTS));
        }
        if scenario == "folder-kill" {
            // One command for the folder: one protocol and block size.
            protocol = ["segmented", "tus", "ietf"][(seed % 3) as usize];
            block = 64 << 10;
        }
        // Drawn apart from the plan above, so a seed's files, blocks and
        // protocols stay what they were.
        let mut knobs = Rng(seed.rotate_left(17) ^ (i as u64 + 1));
        let mut threads = ["4", "4", "auto"][knobs.below(3) as usize];
        let hedge = knobs.below(2) == 1;
        let mut rate = None;
        if scenario == "expiring" {
            // Paced to last 2-4 times the time to live, one block at a
            // time for half of them (gaps between blocks where no
            // request holds the upload).
            let seconds = 2 + knobs.below(3);
            rate = Some((len as u64 / seconds).max(8 << 10).to_string());
            if i % 2 == 0 {
                threads = "1";
            }
        }
        uploads.push(Upload {
            path,
            threads,
            hedge,
            rate,
            name: match scenario {
                "same-name" => format!("shared-{}.bin", i / 2),
                _ => format!("c{i}.bin"),
            },
            data,
            block,
            protocol,
            http2,
            journals,
            receipts: work.join(match scenario {
                "folder-kill" => "receipts-folder".to_owned(),
                _ => format!("receipts-{i}"),
            }),
            token: matches!(scenario, "stranger" | "noisy-neighbour").then_some(TOKENS[0]),
        });
    }
    let noisy_flags: Vec<&str> = ["--token", TOKENS[0], "--token", TOKENS[1]]
        .into_iter()
        .chain(NOISY_LIMITS)
        .collect();
    let tokens: &[&str] = match scenario {
        "stranger" => &["--token", TOKENS[0], "--token", TOKENS[1]],
        "noisy-neighbour" => &noisy_flags,
        "expiring" => &["--expire", EXPIRING_TTL],
        _ => &[],
    };
    let port = free_port();
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let tmpfs = scenario == "disk-full";
    if tmpfs {
        // Smaller than what the clients send together.
        let size = format!("size={}", (max_size * clients as u64 / 3).max(2 << 20));
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(&dir)
            .status();
        if !mounted.is_ok_and(|s| s.success()) {
            return Err("disk-full mounts a tmpfs and needs root".into());
        }
    }
    // Every receiver tells a command hook of each landing: the events'
    // log must name every file that landed.
    let events = work.join(format!("events-{scenario}-{seed}.jsonl"));
    let _ = std::fs::remove_file(&events);
    // One write per event (awk's buffer): two receivers' lines never
    // interleave.
    let hook = format!("awk 1 >> '{}'", events.display());
    // Every receiver signs receipts with a key of this run's.
    let key = work.join(format!("receipts-{scenario}-{seed}.key"));
    let public = receipt_key(bin, &key)?;
    let key_flag = key.display().to_string();
    // Half the seeds bound what one request of the draft carries, to an
    // odd size: its clients send their blocks in pieces.
    let bounded = seed % 2 == 1;
    let flags: Vec<&str> = tokens
        .iter()
        .copied()
        .chain(["--after-landing", &hook, "--receipt-key", &key_flag])
        .chain(["--before-creation", "cat > /dev/null"])
        .chain(
            bounded
                .then_some(["--max-append-size", "40000"])
                .into_iter()
                .flatten(),
        )
        .collect();
    // `pair-kill`: the receiver the run stops listens on a port of its
    // own, its partner on another, and nginx in front of both on `port`.
    let own_port = match scenario {
        "pair-kill" => free_port(),
        _ => port,
    };
    let mut receiver = Some(serve(bin, &dir, own_port, &flags)?);
    let partner = match scenario {
        "pair-kill" => {
            let other = free_port();
            let partner = serve(bin, &dir, other, &flags)?;
            let balancer = crate::garage::nginx(&work.join("nginx"), port, &[own_port, other])?;
            Some((partner, balancer))
        }
        _ => None,
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let log = FaultLog::default();
    // Each client has a proxy of its own, so the faults its connections
    // meet follow its seed, not the order all clients connect in.
    // The extra runs go through the same proxies, calm by then: the same
    // URL, so the same journal.
    let calm = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut children = Vec::new();
    let mut targets = Vec::new();
    let folder_journals = work.join("journals-folder");
    if scenario == "folder-kill" {
        std::fs::create_dir_all(&folder_journals).map_err(|e| e.to_string())?;
    }
    for (i, u) in uploads.iter().enumerate() {
        if scenario == "folder-kill" {
            targets.push(port);
            continue;
        }
        let target = match scenario {
            "proxy" | "liar" => {
                let plan = match scenario {
                    "proxy" => (Rng(seed ^ 0xfa17).next() ^ i as u64, Faults::Network),
                    _ => (Rng(seed ^ 0x11a2).next() ^ i as u64, Faults::Lies),
                };
                let proxy = fault_proxy(port, plan, log.clone(), u.name.clone(), calm.clone());
                runtime.block_on(proxy).map_err(|e| e.to_string())?
            }
            _ => port,
        };
        children.push(client(bin, target, u).spawn().map_err(|e| e.to_string())?);
        targets.push(target);
    }
    let mut lost = vec![false; uploads.len()];
    let mut unclean = Vec::new();
    let first: Vec<Option<bool>> = match scenario {
        "concat-kill" | "receiver-kill" | "receiver-term" | "pair-kill" => {
            let started = Instant::now();
            if scenario == "concat-kill" {
                // Once one client's journal lists every part, its final
                // request is on its way: the kill lands a few ms into it.
                let within = Duration::from_millis(rng.below(30));
                while started.elapsed() < Duration::from_secs(20)
                    && !uploads.iter().zip(&mut children).any(|(u, c)| {
                        c.try_wait().ok().flatten().is_some()
                            || journaled(&u.journals)
                                .is_some_and(|j| j.acked.len() as u64 >= u.blocks())
                    })
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(within);
            } else {
                // Odd seeds by time; even ones by progress, once the
                // journals list a seeded share of all blocks as
                // acknowledged.
                let by_time = Duration::from_millis(50 + rng.below(1500));
                let blocks: u64 = uploads.iter().map(Upload::blocks).sum();
                let by_progress = 1 + rng.below(blocks);
                while started.elapsed() < by_time
                    || (seed % 2 == 0
                        && acked_blocks(&uploads, &mut children) < by_progress
                        && started.elapsed() < Duration::from_secs(20))
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            if scenario == "receiver-term" {
                if let Some(Serve(child)) = &mut receiver {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                    let stopped = (0..400).find_map(|_| {
                        std::thread::sleep(Duration::from_millis(100));
                        child.try_wait().ok().flatten()
                    });
                    if !stopped.is_some_and(|s| s.success()) {
                        unclean.push(("serve did not exit 0 on SIGTERM".to_owned(), Verdict::Hang));
                    }
                }
            }
            drop(receiver.take());
            // What the journals say while no receiver answers is what it
            // acknowledged before it stopped.
            let said: Vec<Option<Journaled>> =
                uploads.iter().map(|u| journaled(&u.journals)).collect();
            receiver = Some(serve(bin, &dir, own_port, &flags)?);
            for (i, (u, journal)) in uploads.iter().zip(&said).enumerate() {
                lost[i] = journal.as_ref().is_some_and(|j| {
                    // Checked before the file is looked for: a client may
                    // land it meanwhile and its state go.
                    !acks_kept(port, u, j) && !dir.join(&u.name).exists()
                });
            }
            children.into_iter().map(wait_bounded).collect()
        }
        "client-kill" => {
            let started = Instant::now();
            let by_time = Duration::from_millis(50 + rng.below(1500));
            // Half by time; half by progress, once the journal lists a
            // seeded number of acknowledged blocks (from one to all).
            let acked_by_then: Vec<usize> = uploads
                .iter()
                .map(|u| 1 + rng.below(u.blocks()) as usize)
                .collect();
            children
                .into_iter()
                .zip(&uploads)
                .enumerate()
                .map(|(i, (mut c, u))| {
                    while started.elapsed() < by_time
                        || (i % 2 == 1
                            && journaled(&u.journals)
                                .is_none_or(|j| j.acked.len() < acked_by_then[i])
                            && started.elapsed() < by_time * 4)
                    {
                        if c.try_wait().ok().flatten().is_some() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = c.kill();
                    wait_bounded(c)
                })
                .collect()
        }
        "stranger" => {
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                let attacker = scope.spawn(|| stranger(port, &uploads, &done));
                let outcomes = children.into_iter().map(wait_bounded).collect();
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                let found = attacker.join().unwrap_or_default();
                unclean.extend(found.into_iter().map(|f| (f, Verdict::Takeover)));
                outcomes
            })
        }
        "noisy-neighbour" => {
            let done = std::sync::atomic::AtomicBool::new(false);
            let outcomes = std::thread::scope(|scope| {
                let attacker = scope.spawn(|| noisy(port, seed, &done));
                let outcomes = children.into_iter().map(wait_bounded).collect();
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                let found = attacker.join().unwrap_or_default();
                unclean.extend(found.into_iter().map(|f| (f, Verdict::Unbounded)));
                outcomes
            });
            if let Some(Serve(child)) = &receiver {
                let kib = peak_rss_kib(child.id()).unwrap_or(0);
                eprintln!(
                    "chaos: noisy-neighbour seed {seed}: the receiver peaked at {} MiB",
                    kib / 1024
                );
                if kib > MAX_RSS_KIB {
                    unclean.push((
                        format!("the receiver peaked at {} MiB", kib / 1024),
                        Verdict::Unbounded,
                    ));
                }
            }
            outcomes
        }
        "folder-kill" => {
            // Paced the first time, so the stop finds it mid-folder.
            let folder = |rate| folder_client(bin, port, &src, &folder_journals, &uploads[0], rate);
            let mut child = folder(Some("4MiB")).spawn().map_err(|e| e.to_string())?;
            let started = Instant::now();
            let by_time = Duration::from_millis(50 + rng.below(1500));
            while started.elapsed() < by_time && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            if child.try_wait().ok().flatten().is_none() {
                let signal = if seed % 2 == 0 {
                    libc::SIGINT
                } else {
                    libc::SIGKILL
                };
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child.id() as i32, signal) };
            }
            let finished = child.wait().is_ok_and(|s| s.success());
            // Stopped: the same command again must land every file and
            // say so.
            let outcome = if finished {
                Some(true)
            } else {
                folder(None).spawn().ok().and_then(wait_bounded)
            };
            vec![outcome; uploads.len()]
        }
        _ => children.into_iter().map(wait_bounded).collect(),
    };
    // A resumed file must land after at most one more run (the folder's
    // was its second run already).
    let mut outcomes = first;
    for (i, u) in uploads.iter().enumerate() {
        if outcomes[i] == Some(false) && scenario != "folder-kill" {
            calm.store(true, std::sync::atomic::Ordering::Relaxed);
            outcomes[i] = client(bin, targets[i], u)
                .spawn()
                .ok()
                .and_then(wait_bounded);
        }
    }
    let mut verdicts = Vec::new();
    for (i, u) in uploads.iter().enumerate() {
        let outcome = outcomes[i];
        let landed = std::fs::read(dir.join(&u.name)).ok();
        // Another client's file of the same name landed: this one is
        // right to fail (the other is judged on its own line).
        let beaten = uploads.iter().any(|other| {
            !std::ptr::eq(other, u) && other.name == u.name && landed.as_ref() == Some(&other.data)
        });
        let found = match &landed {
            None => "nothing landed".to_owned(),
            Some(l) if *l == u.data => "landed whole".to_owned(),
            Some(l) => format!(
                "landed {} B, first differing at byte {}",
                l.len(),
                l.iter().zip(&u.data).take_while(|(a, b)| a == b).count()
            ),
        };
        let verdict = match (outcome, landed) {
            _ if lost[i] => Verdict::LostAck,
            (None, _) => Verdict::Hang,
            (Some(true), Some(l)) if l == u.data => Verdict::Landed,
            (Some(true), _) => Verdict::FalseSuccess,
            (Some(false), _) if beaten => Verdict::FailedCleanly,
            (Some(false), Some(l)) if l != u.data => Verdict::Corruption,
            // Only a full disk may stop a resumed run from landing, and
            // from saying so.
            (Some(false), _) if !tmpfs => Verdict::NotResumed,
            (Some(false), Some(_)) => Verdict::Landed,
            (Some(false), None) => Verdict::FailedCleanly,
        };
        let verdict = match (verdict, outcome) {
            (Verdict::Landed, Some(true)) => match receipt_holds(u, &public) {
                Ok(()) => Verdict::Landed,
                Err(why) => {
                    verdicts.push((format!("{}: {why}", u.name), Verdict::BadReceipt));
                    Verdict::Landed
                }
            },
            (verdict, _) => verdict,
        };
        let mut file = format!(
            "{} {}, {} B, {} B blocks{}{}",
            u.name,
            u.protocol,
            u.data.len(),
            u.block,
            if u.http2 { ", HTTP/2" } else { "" },
            if bounded && u.protocol == "ietf" {
                ", appends of at most 40000 B"
            } else {
                ""
            }
        );
        if verdict.is_violation() {
            // The folder's one client speaks for every file of it.
            let said = match scenario {
                "folder-kill" => folder_journals.with_extension("stderr"),
                _ => u.said(),
            };
            let said = std::fs::read_to_string(said).unwrap_or_default();
            file += &format!(": {found}; the client said {:?}", said.trim());
        }
        verdicts.push((file, verdict));
    }
    if scenario == "expiring" {
        // No client pauses as long as the time to live: whatever expired
        // while a client was still to land its file was being sent. Once
        // the last file landed, what is left (a part sent twice, which no
        // final names) may go.
        let said = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = said.lines().collect();
        let last_landing = lines.iter().rposition(|l| l.contains(" landed \""));
        verdicts.extend(
            lines
                .iter()
                .take(last_landing.unwrap_or(0))
                .filter(|l| l.contains(" expired: "))
                .map(|l| ((*l).to_owned(), Verdict::Expired)),
        );
    }
    let landed = uploads
        .iter()
        .map(|u| u.name.as_str())
        .filter(|name| dir.join(name).is_file())
        .collect();
    // On a directory a receiver that died holding events is known dead at
    // once: its events are told again within moments.
    verdicts.extend(lost_events(landed, &events, EVENTS_WAIT));
    drop(receiver);
    drop(partner);
    verdicts.extend(unclean);
    // No part of a form of several file parts may land.
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("multi-") {
            verdicts.push((format!("{name} landed"), Verdict::Takeover));
        }
    }
    // Expiry must leave no partial data behind.
    let expiring = serve(bin, &dir, port, &["--expire", "300ms"])?;
    std::thread::sleep(Duration::from_millis(1500));
    // Nor open files: a receiver with no request in flight holds its
    // listener, its records and its runtime's own, a few dozen at most.
    let open = std::fs::read_dir(format!("/proc/{}/fd", expiring.0.id())).map_or(0, |d| d.count());
    if open > MAX_IDLE_FDS {
        verdicts.push((
            format!("{open} files open by an idle receiver"),
            Verdict::Leak,
        ));
    }
    drop(expiring);
    let left: Vec<String> = std::fs::read_dir(dir.join(".fileuploader-partial"))
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    if !left.is_empty() {
        verdicts.push((
            format!(
                "{} partial files after expiry ({})",
                left.len(),
                left.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            ),
            Verdict::Leak,
        ));
    }
    if tmpfs {
        let _ = Command::new("umount").arg(&dir).status();
    }
    if matches!(scenario, "proxy" | "liar") {
        let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
        let file = out.join(format!("faults-{scenario}-{seed}.log"));
        std::fs::write(&file, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
        eprintln!(
            "chaos: {scenario} seed {seed}: {} faults fired, logged in {}",
            lines.len(),
            file.display()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(verdicts)
}

/// What the runs so far came to.
#[derive(Default)]
struct Tally {
    table: BTreeMap<(String, String), u64>,
    per_scenario: BTreeMap<String, u64>,
    violations: Vec<serde_json::Value>,
    done: usize,
}

impl Tally {
    fn add(&mut self, scenario: &str, seed: u64, verdicts: Vec<(String, Verdict)>) {
        self.done += 1;
        *self.per_scenario.entry(scenario.to_owned()).or_default() += 1;
        for (file, verdict) in verdicts {
            *self
                .table
                .entry((scenario.to_owned(), format!("{verdict:?}")))
                .or_default() += 1;
            if verdict.is_violation() {
                eprintln!("chaos: VIOLATION {verdict:?}: {scenario} seed {seed}: {file}");
                self.violations.push(serde_json::json!({
                    "scenario": scenario, "seed": seed, "file": file, "verdict": format!("{verdict:?}"),
                    "replay": format!("cargo xtask chaos --seed {seed} --scenario {scenario}"),
                }));
            }
        }
    }

    /// `report.json` as it stands: rewritten after every run, so a long
    /// run stopped early still says what it found.
    fn write(&self, out: &Path, setup: &serde_json::Value, seconds: u64) -> Result<(), String> {
        let report = serde_json::json!({
            "setup": setup,
            "runs_done": self.done,
            "seconds": seconds,
            "runs_per_scenario": self.per_scenario,
            "table": self.table.iter().map(|((s, o), n)| serde_json::json!({"scenario": s, "outcome": o, "files": n})).collect::<Vec<_>>(),
            "violations": self.violations,
        });
        std::fs::write(
            out.join("report.json"),
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| e.to_string())
    }
}

/// Where runs work: in memory where there is a tmpfs for it (a SIGKILL of
/// a process leaves the page cache as it was, so what the scenarios test
/// is the same, without waiting on a disk; fsync is free there).
fn work_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}

/// How a run's work directory begins, before its harness's process id.
const WORK_PREFIX: &str = "fileuploader-chaos-";

/// Removes the work directories of harnesses no longer running (stopped
/// by a kill, say): memory, where they are in a tmpfs.
fn sweep_stale_work() {
    let Ok(entries) = std::fs::read_dir(work_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(WORK_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_none_or(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs the harness: `--quick` (a fixed set of seeds), `--runs N` (N runs
/// in all, the scenarios taking turns, seeds counting up from 1; `--from
/// K` starts at the run after the first K, to finish a long run stopped
/// early), or one run replayed with `--seed S --scenario NAME`; `--jobs J`
/// runs J at once.
/// Fails on any violation.
pub fn chaos(args: impl Iterator<Item = String>) -> Result<(), String> {
    let (mut quick, mut runs, mut seed, mut only, mut jobs) = (false, None, None, None, 1);
    let mut from = 0;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} takes a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{arg} takes a number"))
        };
        match arg.as_str() {
            "--quick" => quick = true,
            "--runs" => runs = Some(number(value()?)?),
            "--seed" => seed = Some(number(value()?)?),
            "--jobs" => jobs = number(value()?)?.max(1) as usize,
            "--from" => from = number(value()?)?,
            "--scenario" => only = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let root = crate::root();
    let bin = crate::release_binary()?;
    sweep_stale_work();
    let scenarios: Vec<&str> = match &only {
        Some(name) => vec![*SCENARIOS
            .iter()
            .find(|s| *s == name)
            .ok_or_else(|| format!("no scenario {name:?}; there are {SCENARIOS:?}"))?],
        None => SCENARIOS.to_vec(),
    };
    let (clients, max_size) = if quick { (4, 4 << 20) } else { (16, 64 << 20) };
    let count = scenarios.len() as u64;
    let plan: Vec<(&str, u64)> = match (seed, runs) {
        (Some(s), _) => scenarios.iter().map(|&n| (n, s)).collect(),
        (None, runs) => {
            let runs = runs.unwrap_or(if quick { 8 * count } else { 30 });
            (from..from + runs)
                .map(|k| (scenarios[(k % count) as usize], k / count + 1))
                .collect()
        }
    };
    let out = root.join("target/chaos");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let setup = serde_json::json!({
        "runs": plan.len(), "jobs": jobs, "clients_per_run": clients, "largest_file": max_size,
    });
    let tally = Mutex::new(Tally::default());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let failed: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(plan.len()) {
            scope.spawn(|| {
                while let Some(&(scenario, s)) =
                    plan.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let verdicts = match run_once(&bin, scenario, s, clients, max_size, &out) {
                        Ok(v) => v,
                        Err(e) => {
                            *failed.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(format!("{scenario} seed {s}: {e}"));
                            return;
                        }
                    };
                    let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                    tally.add(scenario, s, verdicts);
                    let seconds = started.elapsed().as_secs();
                    if let Err(e) = tally.write(&out, &setup, seconds) {
                        eprintln!("chaos: cannot write the report: {e}");
                    }
                    eprintln!(
                        "chaos: {} of {} runs done: {scenario} seed {s} ({seconds} s in)",
                        tally.done,
                        plan.len()
                    );
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let tally = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    println!("| scenario | runs | outcome | files |\n|---|---|---|---|");
    for ((scenario, outcome), n) in &tally.table {
        let runs = tally.per_scenario.get(scenario).copied().unwrap_or(0);
        println!("| {scenario} | {runs} | {outcome} | {n} |");
    }
    if tally.violations.is_empty() {
        println!("\nno violations");
        Ok(())
    } else {
        Err(format!(
            "{} violations; each line above replays with its seed",
            tally.violations.len()
        ))
    }
}
