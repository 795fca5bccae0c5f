//! `cargo xtask chaos`: seeded faults between and inside real processes,
//! judged by what landed.
//!
//! Each run takes a seed and a scenario:
//!
//! - `proxy`: clients reach the receiver through a fault proxy that, per
//!   connection, adds latency, caps bandwidth, resets after some bytes,
//!   stalls for a while, or passes untouched;
//! - `receiver-kill`: the receiver is killed with SIGKILL at a seeded moment
//!   and started again on the same directory; what the clients' journals
//!   say it acknowledged must still be there;
//! - `receiver-term`: the receiver gets SIGTERM at a seeded moment, must
//!   exit 0 within its grace, and is started again;
//! - `client-kill`: each client is killed with SIGKILL at a seeded moment,
//!   half of them by time, half by progress (once their journal lists a
//!   seeded number of acknowledged blocks, from one to all);
//! - `disk-full`: the receiver's directory is a small tmpfs (mounted by the
//!   harness, which needs root) that fills up during the run.
//!
//! After each run a receiver with a short expiry serves the directory for
//! a moment: no partial data may be left, nor more than a few dozen files
//! open (a leak otherwise).
//!
//! Several clients upload at once (sizes from 0 bytes up, block sizes from
//! 1 KiB, the segmented protocol, tus and the IETF draft), each with
//! `--resume`; a client that fails is run once more. Every file then is
//! either landed byte-identical, or failed with a non-zero exit and nothing
//! landed under its name; anything else is a violation: a false success
//! (exit 0, file missing or different), corruption, a lost acknowledgement,
//! or a hang (no exit within the bound). `--seed S --scenario NAME` replays
//! one run exactly; the table and each violation's seed are printed and
//! written to `target/chaos/report.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCENARIOS: [&str; 5] = [
    "proxy",
    "receiver-kill",
    "receiver-term",
    "client-kill",
    "disk-full",
];
/// The most files an idle receiver may hold open.
const MAX_IDLE_FDS: usize = 64;
/// How long one client run may take before it counts as a hang.
const RUN_BOUND: Duration = Duration::from_secs(90);
/// The most blocks one file is cut into.
const MAX_BLOCKS: u64 = 2048;

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

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Latency(Duration),
    Cap(u64),
    Reset(u64),
    Stall(u64, Duration),
}

impl Fault {
    fn pick(rng: &mut Rng) -> Fault {
        match rng.below(6) {
            0 | 1 => Fault::None,
            2 => Fault::Latency(Duration::from_millis(1 + rng.below(30))),
            3 => Fault::Cap(256 * 1024 + rng.below(4 << 20)),
            4 => Fault::Reset(1 + rng.below(2 << 20)),
            _ => Fault::Stall(
                rng.below(1 << 20),
                Duration::from_millis(500 + rng.below(3000)),
            ),
        }
    }
}

/// A TCP proxy on 127.0.0.1 that gives each connection a seeded fault in
/// the client-to-server direction; returns its port.
async fn fault_proxy(upstream: u16, seed: u64, fired: Arc<AtomicU64>) -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        while let Ok((client, _)) = listener.accept().await {
            let fault = Fault::pick(&mut rng);
            let fired = fired.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let back = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut moved = 0u64;
                let mut stalled = false;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    match fault {
                        Fault::Latency(d) => tokio::time::sleep(d).await,
                        Fault::Cap(rate) => {
                            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64))
                                .await;
                        }
                        Fault::Reset(at) if moved + n as u64 >= at => {
                            fired.fetch_add(1, Ordering::Relaxed);
                            back.abort();
                            return;
                        }
                        Fault::Stall(at, d) if !stalled && moved + n as u64 >= at => {
                            stalled = true;
                            fired.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(d).await;
                        }
                        _ => {}
                    }
                    moved += n as u64;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
                let _ = back.await;
            });
        }
    });
    Ok(port)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
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
    let child = Command::new(bin)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    name: String,
    data: Vec<u8>,
    block: u64,
    protocol: &'static str,
    http2: bool,
    journals: PathBuf,
}

fn client(bin: &Path, port: u16, u: &Upload) -> Command {
    let path = if u.protocol == "segmented" {
        "upload"
    } else {
        "files"
    };
    let mut c = Command::new(bin);
    c.args(["upload", "--quiet", "--resume", "--retries", "8"])
        .args(["--idle-timeout", "3s", "--protocol", u.protocol])
        .args(["--url", &format!("http://127.0.0.1:{port}/{path}")])
        .args(["--block-size", &u.block.to_string(), "--threads", "4"])
        .args(u.http2.then_some("--http2"))
        .arg(&u.path)
        .env("FILEUPLOADER_JOURNAL_DIR", &u.journals)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
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
}

impl Verdict {
    fn is_violation(&self) -> bool {
        !matches!(self, Verdict::Landed | Verdict::FailedCleanly)
    }
}

/// The acknowledged block starts a segmented journal lists, and its id.
fn journaled(journals: &Path) -> Option<(String, Vec<u64>)> {
    let entry = std::fs::read_dir(journals).ok()?.next()?.ok()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let id = text.lines().next()?.split('\t').nth(7)?.to_owned();
    let acked = text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n')?.strip_prefix("ack "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    Some((id, acked))
}

/// Whether the receiver at `port` holds every block the journal lists (or
/// the landed file).
fn acks_kept(port: u16, u: &Upload) -> bool {
    use std::io::{Read, Write};
    let Some((id, blocks)) = journaled(&u.journals) else {
        return true;
    };
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return true;
    };
    let _ = write!(
        s,
        "GET /upload?upload_id={id} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    );
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    let Ok(status) = serde_json::from_str::<serde_json::Value>(body) else {
        return true;
    };
    if status["state"] == "landed" {
        return true;
    }
    let held: Vec<(u64, u64)> =
        serde_json::from_value(status["received"].clone()).unwrap_or_default();
    let total = u.data.len() as u64;
    blocks.iter().all(|&b| {
        let (s, e) = (b * u.block, ((b + 1) * u.block).min(total));
        held.iter().any(|&(hs, he)| hs <= s && e <= he)
    })
}

/// One seeded run of one scenario: every client's verdict.
fn run_once(
    bin: &Path,
    scenario: &str,
    seed: u64,
    clients: usize,
    max_size: u64,
) -> Result<Vec<(String, Verdict)>, String> {
    let work = std::env::temp_dir().join(format!("fileuploader-chaos-{scenario}-{seed}"));
    let _ = std::fs::remove_dir_all(&work);
    let (dir, src) = (work.join("landing"), work.join("sources"));
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let mut rng = Rng(seed);
    let mut uploads = Vec::new();
    for i in 0..clients {
        let len = match rng.below(5) {
            0 => rng.below(2),
            _ => rng.below(max_size),
        } as usize;
        let data: Vec<u8> = (0..len)
            .map(|j| (j as u64 ^ seed ^ i as u64).wrapping_mul(31) as u8)
            .collect();
        let name = format!("c{i}.bin");
        let path = src.join(&name);
        std::fs::write(&path, &data).map_err(|e| e.to_string())?;
        let journals = work.join(format!("journals-{i}"));
        std::fs::create_dir_all(&journals).map_err(|e| e.to_string())?;
        uploads.push(Upload {
            path,
            name,
            data,
            // At most MAX_BLOCKS blocks: a single stream of 32 000 blocks of
            // 1 KiB cannot finish within RUN_BOUND, loaded or not.
            block: (1024 << rng.below(if max_size > 8 << 20 { 14 } else { 11 }))
                .max((len as u64).div_ceil(MAX_BLOCKS).next_power_of_two()),
            protocol: ["segmented", "tus", "ietf"][rng.below(3) as usize],
            http2: rng.below(2) == 1,
            journals,
        });
    }
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
    let mut receiver = Some(serve(bin, &dir, port, &[])?);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let fired = Arc::new(AtomicU64::new(0));
    let target = if scenario == "proxy" {
        runtime
            .block_on(fault_proxy(port, seed ^ 0xfa17, fired.clone()))
            .map_err(|e| e.to_string())?
    } else {
        port
    };
    let children: Vec<Child> = uploads
        .iter()
        .map(|u| client(bin, target, u).spawn().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut lost = vec![false; uploads.len()];
    let mut unclean = Vec::new();
    let first: Vec<Option<bool>> = match scenario {
        "receiver-kill" | "receiver-term" => {
            std::thread::sleep(Duration::from_millis(50 + rng.below(1500)));
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
            receiver = Some(serve(bin, &dir, port, &[])?);
            for (i, u) in uploads.iter().enumerate() {
                if u.protocol == "segmented" {
                    lost[i] = !acks_kept(port, u);
                }
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
                .map(|u| 1 + rng.below((u.data.len() as u64).div_ceil(u.block).max(1)) as usize)
                .collect();
            children
                .into_iter()
                .zip(&uploads)
                .enumerate()
                .map(|(i, (mut c, u))| {
                    while started.elapsed() < by_time
                        || (i % 2 == 1
                            && journaled(&u.journals)
                                .is_none_or(|(_, a)| a.len() < acked_by_then[i])
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
        _ => children.into_iter().map(wait_bounded).collect(),
    };
    let mut verdicts = Vec::new();
    for (i, u) in uploads.iter().enumerate() {
        let mut outcome = first[i];
        if outcome == Some(false) {
            // A resumed file must land after at most one more run.
            outcome = client(bin, port, u).spawn().ok().and_then(wait_bounded);
        }
        let landed = std::fs::read(dir.join(&u.name)).ok();
        let verdict = match (outcome, landed) {
            _ if lost[i] => Verdict::LostAck,
            (None, _) => Verdict::Hang,
            (Some(true), Some(l)) if l == u.data => Verdict::Landed,
            (Some(true), _) => Verdict::FalseSuccess,
            (Some(false), None) => Verdict::FailedCleanly,
            (Some(false), Some(l)) if l == u.data => Verdict::Landed,
            (Some(false), Some(_)) => Verdict::Corruption,
        };
        verdicts.push((
            format!("{} {} B, {} B blocks", u.protocol, u.data.len(), u.block),
            verdict,
        ));
    }
    drop(receiver);
    verdicts.extend(unclean);
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
    if scenario == "proxy" {
        eprintln!(
            "chaos: proxy seed {seed}: {} resets and stalls fired",
            fired.load(Ordering::Relaxed)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(verdicts)
}

/// Runs the harness: `--quick` (a fixed set of seeds), `--runs N`, or one
/// run replayed with `--seed S --scenario NAME`. Fails on any violation.
pub fn chaos(args: impl Iterator<Item = String>) -> Result<(), String> {
    let (mut quick, mut runs, mut seed, mut only) = (false, 30u64, None, None);
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} takes a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--runs" => runs = value()?.parse().map_err(|_| "--runs takes a number")?,
            "--seed" => {
                seed = Some(
                    value()?
                        .parse::<u64>()
                        .map_err(|_| "--seed takes a number")?,
                )
            }
            "--scenario" => only = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let root = crate::root();
    let bin = crate::release_binary()?;
    let scenarios: Vec<&str> = match &only {
        Some(name) if SCENARIOS.contains(&name.as_str()) => {
            vec![SCENARIOS[SCENARIOS.iter().position(|s| s == name).unwrap_or(0)]]
        }
        Some(name) => return Err(format!("no scenario {name:?}; there are {SCENARIOS:?}")),
        None => SCENARIOS.to_vec(),
    };
    let (clients, max_size, per) = if quick {
        (4, 4 << 20, 3)
    } else {
        (16, 64 << 20, runs)
    };
    let seeds: Vec<u64> = match seed {
        Some(s) => vec![s],
        None => (1..=per).collect(),
    };
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut violations = Vec::new();
    for scenario in &scenarios {
        for &s in &seeds {
            for (file, verdict) in run_once(&bin, scenario, s, clients, max_size)? {
                *table
                    .entry(((*scenario).to_owned(), format!("{verdict:?}")))
                    .or_default() += 1;
                if verdict.is_violation() {
                    eprintln!("chaos: VIOLATION {verdict:?}: {scenario} seed {s}: {file}");
                    violations.push(serde_json::json!({
                        "scenario": scenario, "seed": s, "file": file, "verdict": format!("{verdict:?}"),
                        "replay": format!("cargo xtask chaos --seed {s} --scenario {scenario}"),
                    }));
                }
            }
        }
    }
    println!("| scenario | outcome | files |\n|---|---|---|");
    for ((scenario, outcome), n) in &table {
        println!("| {scenario} | {outcome} | {n} |");
    }
    let report = serde_json::json!({
        "seeds": seeds,
        "clients_per_run": clients,
        "table": table.iter().map(|((s, o), n)| serde_json::json!({"scenario": s, "outcome": o, "files": n})).collect::<Vec<_>>(),
        "violations": violations,
    });
    let out = root.join("target/chaos");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    if violations.is_empty() {
        println!("\nno violations");
        Ok(())
    } else {
        Err(format!(
            "{} violations; each line above replays with its seed",
            violations.len()
        ))
    }
}
