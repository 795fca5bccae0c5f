//! The `bucket` scenario: uploads straight to a bucket, judged by what
//! the bucket holds.
//!
//! A one-node Garage cluster of the run's own holds the files. Clients
//! send them as direct multipart uploads, either signed by a receiver on
//! the bucket (`--protocol companion`, through its Companion routes, its
//! landings recorded, told to its after-landing hook and signed as
//! receipts) or signed by themselves (`--protocol s3`), or in blocks
//! through the receiver, which stores them in the bucket (segmented, tus
//! and the draft; blocks of 64 KiB to 5 MiB). Two seeds in four put two
//! receivers on the bucket behind nginx (round robin, no stickiness), so
//! that one upload's requests cross both. Every connection
//! to the bucket (the receivers' own and every part) passes a fault
//! proxy; odd seeds kill a receiver with SIGKILL at a seeded moment and
//! start it again, even seeds kill each client with SIGKILL at one of its
//! own. Seeds 4 to 7 of every eight close the receivers to all but two
//! tokens, give the clients one and a stranger the other, who aims
//! requests at the clients' uploads throughout (as in `stranger`). A
//! client that failed is run once more, calm by then.
//!
//! Each file then must be in the bucket byte for byte if its client said
//! so, and after the extra run in any case; a receiver's landing must
//! have been told to its hook and its receipt verify. A receiver with a
//! short expiry then must leave no direct upload's record nor any open
//! multipart upload behind.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    content, fault_proxy, free_port, lost_events, receipt_holds, receipt_key, stranger,
    wait_bounded, FaultLog, Faults, Rng, Upload, Verdict, EVENTS_WAIT, TOKENS,
};
use crate::garage::{Garage, REGION};

/// The run's bucket.
const BUCKET: &str = "chaos";
/// S3's smallest part but the last: blocks are at least this.
const PART: u64 = 5 << 20;

/// A receiver on the run's bucket, its S3 traffic through `endpoint`.
fn serve_on_bucket(
    bin: &Path,
    garage: &Garage,
    endpoint: &str,
    port: u16,
    prefix: &str,
    flags: &[&str],
) -> Result<Child, String> {
    let mut command = Command::new(bin);
    command
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--store", &format!("s3://{BUCKET}/{prefix}")])
        .args(["--s3-endpoint", endpoint, "--s3-region", REGION])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    garage.credentials(&mut command);
    let mut child = command.spawn().map_err(|e| format!("serve: {e}"))?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) || child.try_wait().ok().flatten().is_some()
        {
            let _ = (child.kill(), child.wait());
            return Err("serve --store s3:// did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

/// The client of `u`: `--protocol companion` (or a protocol in blocks)
/// through the receiver on `port`, or `--protocol s3` through the
/// bucket's `endpoint` to `key`.
fn client(
    bin: &Path,
    garage: &Garage,
    port: u16,
    endpoint: &str,
    u: &Upload,
    key: &str,
) -> Command {
    if !matches!(u.protocol, "s3" | "companion") {
        return super::client(bin, port, u);
    }
    let mut c = u.command(bin);
    c.args(["--quiet", "--resume", "--retries", "8"])
        .args(["--idle-timeout", "3s", "--protocol", u.protocol])
        .args(["--block-size", &u.block.to_string(), "--threads", u.threads])
        .args(u.hedge.then_some("--hedge"))
        .args(["--name", &u.name]);
    if u.protocol == "s3" {
        c.args(["--url", &format!("s3://{BUCKET}/{key}")]).args([
            "--s3-endpoint",
            endpoint,
            "--s3-region",
            REGION,
        ]);
        garage.credentials(&mut c);
    } else {
        c.args(["--url", &format!("http://127.0.0.1:{port}/s3")])
            .arg("--receipt-dir")
            .arg(&u.receipts)
            .args(u.token.iter().flat_map(|t| ["--token", t]));
    }
    c.arg(&u.path);
    c
}

/// One run of the `bucket` scenario in `work`: each file's verdict.
pub(super) fn run_once(
    bin: &Path,
    seed: u64,
    clients: usize,
    max_size: u64,
    work: &Path,
    out: &Path,
) -> Result<Vec<(String, Verdict)>, String> {
    let garage = Garage::start(&work.join("garage"), 1, &[BUCKET])?;
    let bucket = garage.client(0);
    let prefix = format!("run-{seed}");
    let src = work.join("sources");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let mut rng = Rng(seed ^ 0xb0c4);
    let strangers = seed % 8 >= 4;
    let mut uploads = Vec::new();
    let mut keys = Vec::new();
    for i in 0..clients {
        let protocol = ["companion", "s3", "segmented", "tus", "ietf"][rng.below(5) as usize];
        let straight = matches!(protocol, "companion" | "s3");
        // Past one part often: up to three parts in a quick run. Bytes
        // through the receiver, every block a listing and one write (256
        // KiB at most) or two in the bucket, are held to the other scenarios' sizes, so that a
        // run's every client ends within the bound.
        let most = match straight {
            true => (max_size * 4).max(3 * PART),
            false => max_size.max(PART),
        };
        let len = match rng.below(5) {
            0 => rng.below(2),
            _ => rng.below(most),
        } as usize;
        let data = content(seed, i, len);
        let path = src.join(format!("c{i}.bin"));
        std::fs::write(&path, &data).map_err(|e| e.to_string())?;
        let journals = work.join(format!("journals-{i}"));
        std::fs::create_dir_all(&journals).map_err(|e| e.to_string())?;
        let name = format!("c{i}.bin");
        keys.push(match protocol {
            "s3" => format!("{prefix}/straight/{name}"),
            _ => format!("{prefix}/{name}"),
        });
        // Apart from the plan, as in the other scenarios; --hedge must
        // leave parts alone.
        let mut knobs = Rng(seed.rotate_left(17) ^ (i as u64 + 1));
        // Blocks through the receiver: small ones too (for small files),
        // many listings and acknowledgements in the bucket, 64 KiB ones
        // stored as their own acknowledgements (tus puts them together
        // from its parts'); parts are 5 MiB at least.
        let block = match (straight, len < 8 << 20) {
            (true, _) => PART,
            (false, true) => [64 << 10, 1 << 20, PART][rng.below(3) as usize],
            (false, false) => [1 << 20, PART][rng.below(2) as usize],
        };
        uploads.push(Upload {
            path,
            name,
            data,
            block,
            protocol,
            http2: false,
            threads: ["4", "4", "auto"][knobs.below(3) as usize],
            hedge: knobs.below(2) == 1,
            rate: None,
            journals,
            receipts: work.join(format!("receipts-{i}")),
            token: strangers.then_some(TOKENS[0]),
        });
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let log = FaultLog::default();
    let calm = Arc::new(AtomicBool::new(false));
    let garage_port: u16 = garage.endpoints[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("Garage's endpoint has no port")?;
    // The bucket as the receiver reaches it (and the parts it signs), and
    // as each `--protocol s3` client does: a proxy each.
    let proxy = |n: u64, name: String| -> Result<String, String> {
        let plan = (Rng(seed ^ 0x00b0_c4e7).next() ^ n, Faults::Network);
        let port = runtime
            .block_on(fault_proxy(
                garage_port,
                plan,
                log.clone(),
                name,
                calm.clone(),
            ))
            .map_err(|e| e.to_string())?;
        Ok(format!("http://127.0.0.1:{port}"))
    };
    let receiver_endpoint = proxy(u64::MAX, "receiver".into())?;
    let endpoints: Vec<String> = uploads
        .iter()
        .enumerate()
        .map(|(i, u)| match u.protocol {
            "s3" => proxy(i as u64, u.name.clone()),
            _ => Ok(receiver_endpoint.clone()),
        })
        .collect::<Result<_, _>>()?;

    let events = work.join("events.jsonl");
    // One write per event (awk's buffer): two receivers' lines never
    // interleave.
    let hook = format!("awk 1 >> '{}'", events.display());
    let key = work.join("receipts.key");
    let public = receipt_key(bin, &key)?;
    let key_flag = key.display().to_string();
    let mut flags = vec!["--after-landing", &hook, "--receipt-key", &key_flag];
    if strangers {
        flags.extend(["--token", TOKENS[0], "--token", TOKENS[1]]);
    }
    let ports: Vec<u16> = match seed % 4 {
        2 | 3 => vec![free_port(), free_port()],
        _ => vec![free_port()],
    };
    let serve = |port: u16, flags: &[&str]| {
        serve_on_bucket(bin, &garage, &receiver_endpoint, port, &prefix, flags)
    };
    let mut receivers = ports
        .iter()
        .map(|&p| serve(p, &flags))
        .collect::<Result<Vec<_>, _>>()?;
    let (port, _balancer) = match ports.as_slice() {
        [one] => (*one, None),
        two => {
            let port = free_port();
            let nginx = crate::garage::nginx(&work.join("nginx"), port, two)?;
            (port, Some(nginx))
        }
    };
    let spawn = |i: usize| client(bin, &garage, port, &endpoints[i], &uploads[i], &keys[i]).spawn();
    let children = (0..uploads.len())
        .map(spawn)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let first_run = || -> Result<Vec<Option<bool>>, String> {
        Ok(if seed % 2 == 1 {
            let by_time = Duration::from_millis(300 + rng.below(2500));
            while started.elapsed() < by_time {
                std::thread::sleep(Duration::from_millis(5));
            }
            let victim = rng.below(ports.len() as u64) as usize;
            let receiver = &mut receivers[victim];
            let _ = (receiver.kill(), receiver.wait());
            *receiver = serve(ports[victim], &flags)?;
            children.into_iter().map(wait_bounded).collect()
        } else {
            let times: Vec<Duration> = uploads
                .iter()
                .map(|_| Duration::from_millis(300 + rng.below(2500)))
                .collect();
            children
                .into_iter()
                .zip(times)
                .map(|(mut c, at)| {
                    while started.elapsed() < at && c.try_wait().ok().flatten().is_none() {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let _ = c.kill();
                    wait_bounded(c)
                })
                .collect()
        })
    };
    let done = AtomicBool::new(false);
    let (first, found) = std::thread::scope(|scope| {
        let attacker = strangers.then(|| scope.spawn(|| stranger(port, &uploads, &done)));
        let first = first_run();
        done.store(true, Ordering::Relaxed);
        let found = attacker.map_or_else(Vec::new, |a| a.join().unwrap_or_default());
        (first, found)
    });
    let mut outcomes = first?;
    for (i, outcome) in outcomes.iter_mut().enumerate() {
        if *outcome == Some(false) {
            calm.store(true, Ordering::Relaxed);
            *outcome = spawn(i).ok().and_then(wait_bounded);
        }
    }

    let mut verdicts: Vec<(String, Verdict)> =
        found.into_iter().map(|f| (f, Verdict::Takeover)).collect();
    let mut landed_here = BTreeSet::new();
    for (i, u) in uploads.iter().enumerate() {
        let held = bucket.get(BUCKET, &keys[i])?;
        let found = match &held {
            None => "nothing in the bucket".to_owned(),
            Some(l) if *l == u.data => "in the bucket whole".to_owned(),
            Some(l) => format!(
                "{} B in the bucket, first differing at byte {}",
                l.len(),
                l.iter().zip(&u.data).take_while(|(a, b)| a == b).count()
            ),
        };
        let verdict = match (outcomes[i], &held) {
            (None, _) => Verdict::Hang,
            (Some(true), Some(l)) if *l == u.data => Verdict::Landed,
            (Some(true), _) => Verdict::FalseSuccess,
            (Some(false), Some(l)) if *l != u.data => Verdict::Corruption,
            (Some(false), _) => Verdict::NotResumed,
        };
        if verdict == Verdict::Landed && u.protocol != "s3" {
            landed_here.insert(u.name.as_str());
            if let Err(why) = receipt_holds(u, &public) {
                verdicts.push((format!("{}: {why}", u.name), Verdict::BadReceipt));
            }
        }
        let mut file = format!("{} {}, {} B", u.name, u.protocol, u.data.len());
        if verdict.is_violation() {
            let said = std::fs::read_to_string(u.said()).unwrap_or_default();
            file += &format!(": {found}; the client said {:?}", said.trim());
        }
        verdicts.push((file, verdict));
    }
    // A receiver killed holding a claim on an event keeps it from the
    // one started after it until the claim runs out (a bucket cannot
    // tell a dead receiver from a slow one): told late is not lost.
    let wait = match seed % 2 {
        1 => fileuploader_server::EVENT_LEASE + EVENTS_WAIT,
        _ => EVENTS_WAIT,
    };
    verdicts.extend(lost_events(landed_here, &events, wait));
    for mut receiver in receivers {
        let _ = (receiver.kill(), receiver.wait());
    }

    // Whatever the kills left open, a receiver's expiry removes: its
    // records of direct uploads, and every multipart upload below its
    // prefix (the straight clients' too).
    calm.store(true, Ordering::Relaxed);
    let mut expiring = serve(ports[0], &["--expire", "1s"])?;
    let state = format!("{prefix}/.fileuploader-state/u/");
    let left = crate::s3::eventually(Duration::from_secs(20), || {
        let mut left = bucket.keys(BUCKET, &state)?;
        left.extend(bucket.open_multipart(BUCKET, &format!("{prefix}/"))?);
        match left.as_slice() {
            [] => Ok(()),
            [first, ..] => Err(format!("{} left after expiry, such as {first}", left.len())),
        }
    });
    let _ = (expiring.kill(), expiring.wait());
    if let Err(e) = left {
        verdicts.push((e, Verdict::Leak));
    }
    let lines = log.lock().map(|l| l.clone()).unwrap_or_default();
    let faults = out.join(format!("faults-bucket-{seed}.log"));
    std::fs::write(&faults, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
    eprintln!(
        "chaos: bucket seed {seed}: {} receiver(s){}, {} faults fired, logged in {}",
        ports.len(),
        if strangers { " and a stranger" } else { "" },
        lines.len(),
        faults.display()
    );
    Ok(verdicts)
}
