//! `cargo xtask bench`: `fileuploader upload` side by side with curl, against
//! the same sink on 127.0.0.1, alternating runs, with the loopback ceiling.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufWriter, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::curl8::Curl;

const MIB: u64 = 1 << 20;

/// A part of the bench run alone (`--only NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Only {
    /// Uploads straight to a bucket (`direct`).
    Direct,
    /// Receivers on a bucket and on a directory (`stores`).
    Stores,
    /// The big file through a stalling proxy, with and without hedging
    /// (`stalls`).
    Stalls,
    /// Small blocks into a receiver on a directory, durable, beside the
    /// same receiver with `--discard` and the durable floor (`durable`).
    Durable,
    /// The big file over TLS, HTTP/1.1 and HTTP/2, against both curls
    /// (`https`).
    Https,
    /// Many small files and the rate limit, against both curls (`files`).
    Files,
}

/// Sizes and repetitions for one bench run.
pub struct Plan {
    quick: bool,
    only: Option<Only>,
    runs: usize,
    big_file: u64,
    big_block: u64,
    small_file: u64,
    small_block: u64,
    threads: u32,
}

impl Plan {
    /// The plan `--quick` and `--runs N` ask for.
    pub fn from_args(mut args: impl Iterator<Item = String>) -> Result<Self, String> {
        let (mut quick, mut runs, mut only) = (false, None, None);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => quick = true,
                "--only" => {
                    only = Some(match args.next().as_deref() {
                        Some("direct") => Only::Direct,
                        Some("stores") => Only::Stores,
                        Some("stalls") => Only::Stalls,
                        Some("durable") => Only::Durable,
                        Some("https") => Only::Https,
                        Some("files") => Only::Files,
                        _ => {
                            return Err(
                                "--only takes direct, stores, stalls, durable, https or files"
                                    .into(),
                            )
                        }
                    })
                }
                "--runs" => {
                    let n = args.next().and_then(|n| n.parse::<usize>().ok());
                    match n {
                        Some(n) if n >= 3 => runs = Some(n),
                        _ => return Err("--runs takes a number of at least 3".into()),
                    }
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let mut plan = Plan::new(quick);
        plan.runs = runs.unwrap_or(plan.runs);
        plan.only = only;
        Ok(plan)
    }

    fn new(quick: bool) -> Self {
        Plan {
            quick,
            only: None,
            runs: if quick { 3 } else { 5 },
            big_file: if quick { 256 * MIB } else { 1024 * MIB },
            big_block: 8 * MIB,
            small_file: if quick { 10 * MIB } else { 100 * MIB },
            small_block: 10 * 1024,
            threads: 4,
        }
    }
}

/// What one timed process cost.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    cpu_seconds: f64,
    max_rss_kib: u64,
}

/// Measures one run; a failed run is noted and left out of the figures.
fn attempt(mut command: Command, failures: &mut Vec<String>) -> Option<Sample> {
    measure(&mut command).map_err(|e| failures.push(e)).ok()
}

/// Runs a command to the end and measures it: time, and CPU from `wait4`;
/// peak memory from `VmHWM`, read every 10 ms while it runs, because
/// `wait4`'s figure for a child spawned with this process's memory shared
/// until `exec` counts this process's own peak.
fn measure(command: &mut Command) -> Result<Sample, String> {
    let started = Instant::now();
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let ended = Arc::new(AtomicBool::new(false));
    let watcher = {
        let ended = ended.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !ended.load(Ordering::Acquire) {
                peak = crate::chaos::peak_rss_kib(pid as u32).map_or(peak, |kib| kib.max(peak));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not yet waited for; the pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = started.elapsed().as_secs_f64();
    ended.store(true, Ordering::Release);
    let peak_kib = watcher.join().unwrap_or(0);
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    if waited != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{command:?} failed: {}", stderr.trim()));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Sample {
        seconds,
        cpu_seconds: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: peak_kib,
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(18_080)
}

fn wait_for_port(port: u16) -> Result<(), String> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("nothing listens on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Installs Debian's `package` when `program` is missing.
fn ensure(program: &str, package: &str) -> Result<(), String> {
    if has(program) {
        return Ok(());
    }
    eprintln!("bench: installing {package} ({program}) with apt-get");
    crate::interop::run(
        Command::new("apt-get")
            .args(["install", "-y", package])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {package}"),
    )
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
        || Command::new(program)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

/// A sink process, killed when dropped.
struct Sink {
    child: Child,
    url: String,
    name: &'static str,
}

impl Drop for Sink {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: nginx's master then stops its workers too.
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// nginx answering 200 to every POST after reading and discarding the body.
fn nginx(work: &Path) -> Result<Sink, String> {
    nginx_serving(work, None)
}

/// [`nginx`], over TLS when given a certificate.
fn nginx_serving(work: &Path, tls: Option<&Tls>) -> Result<Sink, String> {
    let port = free_port();
    let dir = work.join(if tls.is_some() { "nginx-tls" } else { "nginx" });
    fs::create_dir_all(dir.join("body")).map_err(|e| e.to_string())?;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\ndaemon off;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; client_max_body_size 0;\n\
         keepalive_requests 1000000;\n\
         server {{ listen 127.0.0.1:{port}{ssl}; location / {{ return 200 \"ok\\n\"; }} }} }}\n",
        ssl = tls.map_or(String::new(), |t| format!(
            " ssl; ssl_certificate {}; ssl_certificate_key {}",
            t.cert.display(),
            t.key.display()
        ))
    );
    fs::write(dir.join("nginx.conf"), conf).map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .args([
            "-p",
            &dir.to_string_lossy(),
            "-c",
            &dir.join("nginx.conf").to_string_lossy(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("nginx: {e}"))?;
    let sink = Sink {
        child,
        url: format!(
            "{}://127.0.0.1:{port}/upload",
            if tls.is_some() { "https" } else { "http" }
        ),
        name: if tls.is_some() {
            "nginx 'return 200' over TLS"
        } else {
            "nginx 'return 200'"
        },
    };
    wait_for_port(port)?;
    Ok(sink)
}

/// Our receiver in discard mode (HTTP/1.1 and HTTP/2 by prior knowledge).
fn serve_sink(bin: &Path, work: &Path, discard: bool) -> Result<Sink, String> {
    serve_sink_over(bin, work, discard, None)
}

/// [`serve_sink`], over TLS when given a certificate.
fn serve_sink_over(
    bin: &Path,
    work: &Path,
    discard: bool,
    tls: Option<&Tls>,
) -> Result<Sink, String> {
    let port = free_port();
    let mode = if discard {
        "--discard"
    } else {
        // Each run lands the same name again.
        "--on-conflict=overwrite"
    };
    let mut command = Command::new(bin);
    command
        .args([
            "serve",
            mode,
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--dir",
        ])
        .arg(work.join(if discard { "landing" } else { "landing-disk" }));
    if let Some(tls) = tls {
        command
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key);
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("fileuploader serve: {e}"))?;
    let sink = Sink {
        child,
        url: format!(
            "{}://127.0.0.1:{port}/upload",
            if tls.is_some() { "https" } else { "http" }
        ),
        name: match (discard, tls.is_some()) {
            (true, false) => "fileuploader serve --discard",
            (true, true) => "fileuploader serve --discard over TLS",
            (false, _) => "fileuploader serve, landing on disk",
        },
    };
    wait_for_port(port)?;
    Ok(sink)
}

/// A CA and a server certificate it signed for 127.0.0.1 (ECDSA P-256),
/// made with the openssl command.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    fn make(work: &Path) -> Result<Tls, String> {
        let dir = work.join("tls");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let tls = Tls {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        let ext = dir.join("ext.cnf");
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(|e| e.to_string())?;
        let key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let openssl = |args: &[&str], what: &str| {
            crate::interop::run(Command::new("openssl").current_dir(&dir).args(args), what)
        };
        openssl(
            &[
                &["req", "-x509"][..],
                &key,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "30",
                    "-subj",
                    "/CN=fileuploader bench CA",
                ],
            ]
            .concat(),
            "openssl req (CA)",
        )?;
        openssl(
            &[
                &["req"][..],
                &key,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
            "openssl req (server)",
        )?;
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "30",
                "-extfile",
                "ext.cnf",
            ],
            "openssl x509",
        )?;
        Ok(tls)
    }
}

/// Writes `len` pseudo-random bytes (xorshift) to `path`.
fn make_file(path: &Path, len: u64) -> std::io::Result<()> {
    if fs::metadata(path).is_ok_and(|m| m.len() == len) {
        return Ok(());
    }
    let mut out = BufWriter::with_capacity(MIB as usize, fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = len;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = left.min(8) as usize;
        out.write_all(&x.to_le_bytes()[..n])?;
        left -= n as u64;
    }
    out.flush()
}

/// Cuts `file` into block files and writes a curl config that posts each as
/// multipart with its `Content-Range`, as fileuploader does.
fn curl_config(file: &Path, block: u64, url: &str, dir: &Path) -> Result<PathBuf, String> {
    curl_config_trusting(file, block, url, dir, None)
}

/// [`curl_config`], each transfer trusting the CA in `ca` (curl's `next`
/// ends every option given before it, so each transfer names it).
fn curl_config_trusting(
    file: &Path,
    block: u64,
    url: &str,
    dir: &Path,
    ca: Option<&Path>,
) -> Result<PathBuf, String> {
    let total = fs::metadata(file).map_err(|e| e.to_string())?.len();
    let blocks = dir.join(format!("blocks-{block}"));
    fs::create_dir_all(&blocks).map_err(|e| e.to_string())?;
    // Read block by block: a child's peak RSS on Linux includes what this
    // process holds when it forks, so the bench must stay small.
    let mut reader = fs::File::open(file).map_err(|e| e.to_string())?;
    let mut chunk = vec![0u8; block as usize];
    let mut config = String::new();
    for i in 0..total.div_ceil(block) as usize {
        let len = block.min(total - i as u64 * block) as usize;
        let chunk = &mut chunk[..len];
        std::io::Read::read_exact(&mut reader, chunk).map_err(|e| e.to_string())?;
        if i > 0 {
            config.push_str("next\n");
        }
        let path = blocks.join(format!("{i:06}"));
        if !fs::metadata(&path).is_ok_and(|m| m.len() == len as u64) {
            fs::write(&path, &*chunk).map_err(|e| e.to_string())?;
        }
        let first = i as u64 * block;
        let last = first + chunk.len() as u64 - 1;
        let _ = write!(
            config,
            "url = \"{url}\"\nform = \"RemoteFile=@{};filename=bench.bin\"\nheader = \"Content-Range: bytes {first}-{last}/{total}\"\nheader = \"Expect:\"\noutput = \"/dev/null\"\n",
            path.display()
        );
        if let Some(ca) = ca {
            let _ = writeln!(config, "cacert = \"{}\"", ca.display());
        }
    }
    let path = dir.join(format!("curl-{block}-{}-{}.cfg", url.len(), ca.is_some()));
    fs::write(&path, config).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Our client uploading `file` to `url`, `threads` (a number or `auto`)
/// blocks in flight.
fn ours(
    bin: &Path,
    url: &str,
    file: &Path,
    block: u64,
    threads: impl std::fmt::Display,
    http2: bool,
) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "upload",
        "--quiet",
        "--url",
        url,
        "--block-size",
        &block.to_string(),
        "--threads",
        &threads.to_string(),
    ]);
    if http2 {
        c.arg("--http2");
    }
    c.arg(file)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    c
}

fn curl(curl: &Curl, config: &Path, threads: u32, http2: bool) -> Command {
    let mut c = curl.command();
    c.args([
        "--silent",
        "--show-error",
        "--fail",
        "--parallel",
        "--parallel-max",
        &threads.to_string(),
    ]);
    if http2 {
        c.arg("--http2-prior-knowledge");
    }
    c.arg("-K").arg(config).env("NO_PROXY", "*");
    c
}

/// The most requests a second the sink at `url` answers: h2load over
/// HTTP/1.1, `threads` connections, each request posting `body` (installed
/// from Debian's nghttp2-client when missing).
fn request_ceiling(url: &str, body: &Path, requests: u64, threads: u32) -> Result<f64, String> {
    ensure("h2load", "nghttp2-client")?;
    let out = Command::new("h2load")
        .args([
            "--h1",
            "-n",
            &requests.to_string(),
            "-c",
            &threads.to_string(),
            "-d",
        ])
        .arg(body)
        .arg(url)
        .output()
        .map_err(|e| format!("h2load: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "finished in 1.23s, 8123.45 req/s, 80.12MB/s"
    text.lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .filter(|_| text.contains(&format!("{requests} succeeded")))
        .ok_or_else(|| format!("h2load did not finish every request: {text}"))
}

/// The loopback ceiling from iperf3, in MB/s.
fn loopback_ceiling() -> Option<f64> {
    let port = free_port().to_string();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    // No port probe: the one-off server would take it for its client.
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("iperf3")
        .args(["-c", "127.0.0.1", "-p", &port, "-t", "3", "-J"])
        .output()
        .ok()?;
    let _ = server.wait();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(json["end"]["sum_received"]["bits_per_second"].as_f64()? / 8.0 / 1e6)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A figure measured for both contenders over several runs.
struct Figure {
    name: String,
    unit: &'static str,
    ours: Vec<f64>,
    /// curl 8 (or the other contender).
    curl: Vec<f64>,
    /// The system's curl 7.88, where it ran too.
    old: Vec<f64>,
}

/// The median of a figure's values, if any were measured.
fn median_of(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| median(&mut values.to_vec()))
}

impl Figure {
    /// A figure to measure, nothing measured yet.
    fn new(name: String, unit: &'static str) -> Self {
        Figure {
            name,
            unit,
            ours: vec![],
            curl: vec![],
            old: vec![],
        }
    }

    /// A figure curl has no counterpart for.
    fn solo(name: String, unit: &'static str, ours: Vec<f64>) -> Self {
        Figure {
            ours,
            ..Figure::new(name, unit)
        }
    }

    /// The figure as a table row; with `old`, a column for curl 7.88.
    fn row(&self, old: bool) -> String {
        let stat = |v: &[f64]| -> Option<(f64, f64, f64)> {
            let mut v = v.to_vec();
            if v.is_empty() {
                return None;
            }
            let m = median(&mut v);
            Some((m, v[0], v[v.len() - 1]))
        };
        let cell = |s: Option<(f64, f64, f64)>| match s {
            Some((m, lo, hi)) => format!("{m:.1} {} ({lo:.1}–{hi:.1})", self.unit),
            None => "failed".to_owned(),
        };
        let (o, c) = (stat(&self.ours), stat(&self.curl));
        let ratio = match (o, c) {
            (Some((o, ..)), Some((c, ..))) => format!("{:.2}", o / c),
            _ => "–".to_owned(),
        };
        let solo = self.curl.is_empty() && !self.ours.is_empty();
        let curl_cell = if solo { "–".to_owned() } else { cell(c) };
        let old_cell = match (old, self.old.is_empty()) {
            (false, _) => String::new(),
            (true, true) => " – |".to_owned(),
            (true, false) => format!(" {} |", cell(stat(&self.old))),
        };
        format!(
            "| {} | {} | {curl_cell} |{old_cell} {ratio} |",
            self.name,
            cell(o)
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "figure": self.name, "unit": self.unit, "ours": self.ours, "curl": self.curl, "curl_7_88": self.old })
    }
}

/// Runs the benchmark and prints the table; returns an error message on failure.
pub fn run(plan: Plan) -> Result<(), String> {
    let quick = plan.quick;
    let root = crate::root();
    let bin = crate::release_binary()?;
    if !has("curl") {
        return Err("curl is not installed (apt-get install curl)".into());
    }
    let curl7 = Curl::system()?;
    let curl8 = crate::curl8::curl8(&crate::interop::cache())?;
    println!("curls: {} (the baseline), {}", curl8.version, curl7.version);
    let out_dir = root.join("target/bench");
    let work = out_dir.join("work");
    fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    if let Some(only) = plan.only {
        let mut failures = Vec::new();
        let figures = match only {
            Only::Stores => store_figures(&bin, &work, &plan, &curl8, false, &mut failures)?,
            Only::Direct => {
                let garage_dir = work.join("garage");
                let _ = fs::remove_dir_all(&garage_dir);
                let garage = crate::garage::Garage::start(&garage_dir, 1, &["bench"])?;
                direct_figures(&bin, &work, &plan, &garage, &mut failures)?
            }
            Only::Stalls => {
                let big = work.join(format!("big-{}.bin", plan.big_file));
                make_file(&big, plan.big_file).map_err(|e| e.to_string())?;
                ensure("nginx", "nginx-light")?;
                let sink = nginx(&work)?;
                vec![stall_figure(&bin, &big, &sink, &plan, &mut failures)?]
            }
            Only::Durable => {
                let small = work.join(format!("small-{}.bin", plan.small_file));
                make_file(&small, plan.small_file).map_err(|e| e.to_string())?;
                durable_figures(&bin, &work, &small, &plan, &mut failures)?
            }
            Only::Https => {
                let big = work.join(format!("big-{}.bin", plan.big_file));
                make_file(&big, plan.big_file).map_err(|e| e.to_string())?;
                ensure("nginx", "nginx-light")?;
                https_figures(&bin, &work, &big, &plan, [&curl8, &curl7], &mut failures)?
            }
            Only::Files => {
                ensure("nginx", "nginx-light")?;
                let sink = nginx(&work)?;
                let curls = [&curl8, &curl7];
                many_files_figures(&bin, &work, &sink.url, &plan, curls, &mut failures)?
            }
        };
        println!(
            "\n{} runs each, alternating; medians, with the range in parentheses.\n",
            plan.runs
        );
        let third = figures.iter().any(|f| !f.old.is_empty());
        match third {
            true => println!(
                "| {only:?} | ours (min–max) | other (min–max) | third (min–max) | ours / other |\n|---|---|---|---|---|"
            ),
            false => println!(
                "| {only:?} | ours (min–max) | other (min–max) | ours / other |\n|---|---|---|---|"
            ),
        }
        for f in &figures {
            println!("{}", f.row(third));
        }
        for failure in &failures {
            eprintln!("bench: {failure}");
        }
        return Ok(());
    }
    let big = work.join(format!("big-{}.bin", plan.big_file));
    let small = work.join(format!("small-{}.bin", plan.small_file));
    make_file(&big, plan.big_file).map_err(|e| e.to_string())?;
    make_file(&small, plan.small_file).map_err(|e| e.to_string())?;

    let receiver = serve_sink(&bin, &work, true)?;
    let nginx = if has("nginx") {
        nginx(&work).ok()
    } else {
        None
    };
    let h1 = nginx.as_ref().unwrap_or(&receiver);
    println!("sink over HTTP/1.1: {}; over HTTP/2: {} (nginx's 'return 200' does not drain HTTP/2 bodies)", h1.name, receiver.name);
    let iperf3 = match ensure("iperf3", "iperf3") {
        Ok(()) => true,
        Err(e) => {
            eprintln!("bench: no loopback ceiling: {e}");
            false
        }
    };
    let mut ceilings = Vec::new();
    let mut request_ceilings = Vec::new();

    let mut figures = Vec::new();
    let mut shares = String::new();
    let mut failures = Vec::new();
    let mut ours_rss = Vec::new();
    let (mut our_cpu_gib, mut curl_cpu_gib, mut our_cpu_k, mut curl_cpu_k) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let gib = plan.big_file as f64 / (1u64 << 30) as f64;
    let small_requests = plan.small_file.div_ceil(plan.small_block) as f64;
    for (label, http2, sink) in [("HTTP/1.1", false, h1), ("HTTP/2", true, &receiver)] {
        let big_cfg = curl_config(&big, plan.big_block, &sink.url, &work)?;
        let small_cfg = curl_config(&small, plan.small_block, &sink.url, &work)?;
        let mut mbps = Figure::new(
            format!(
                "{} MiB file, 8 MiB blocks, {} in flight, {label}",
                plan.big_file / MIB,
                plan.threads
            ),
            "MB/s",
        );
        let mut rps = Figure::new(
            format!(
                "{} MiB file, 10 KiB blocks, {} in flight, {label}",
                plan.small_file / MIB,
                plan.threads
            ),
            "req/s",
        );
        // curl sends no checksum; ours without one is the like-for-like
        // figure, measured over HTTP/1.1.
        let mut unchecked = Figure::new(format!("{}, no checksum (as curl)", mbps.name), "MB/s");
        for _ in 0..plan.runs {
            let big_ours = ours(&bin, &sink.url, &big, plan.big_block, plan.threads, http2);
            if let Some(s) = attempt(big_ours, &mut failures) {
                mbps.ours.push(plan.big_file as f64 / 1e6 / s.seconds);
                if !http2 {
                    ours_rss.push(s.max_rss_kib as f64 / 1024.0);
                    our_cpu_gib.push(s.cpu_seconds / gib);
                }
            }
            if !http2 && iperf3 {
                ceilings.extend(loopback_ceiling());
            }
            if !http2 {
                let mut plain = ours(&bin, &sink.url, &big, plan.big_block, plan.threads, http2);
                plain.arg("--no-checksum");
                if let Some(s) = attempt(plain, &mut failures) {
                    unchecked.ours.push(plan.big_file as f64 / 1e6 / s.seconds);
                }
            }
            if let Some(s) = attempt(curl(&curl8, &big_cfg, plan.threads, http2), &mut failures) {
                mbps.curl.push(plan.big_file as f64 / 1e6 / s.seconds);
                if !http2 {
                    curl_cpu_gib.push(s.cpu_seconds / gib);
                }
            }
            if let Some(s) = attempt(curl(&curl7, &big_cfg, plan.threads, http2), &mut failures) {
                mbps.old.push(plan.big_file as f64 / 1e6 / s.seconds);
            }
            let small_ours = ours(
                &bin,
                &sink.url,
                &small,
                plan.small_block,
                plan.threads,
                http2,
            );
            if let Some(s) = attempt(small_ours, &mut failures) {
                rps.ours.push(small_requests / s.seconds);
                if !http2 {
                    our_cpu_k.push(s.cpu_seconds / small_requests * 1000.0);
                }
            }
            if let Some(s) = attempt(curl(&curl8, &small_cfg, plan.threads, http2), &mut failures) {
                rps.curl.push(small_requests / s.seconds);
                if !http2 {
                    curl_cpu_k.push(s.cpu_seconds / small_requests * 1000.0);
                }
            }
            if let Some(s) = attempt(curl(&curl7, &small_cfg, plan.threads, http2), &mut failures) {
                rps.old.push(small_requests / s.seconds);
            }
            if !http2 {
                let block = work.join(format!("blocks-{}/000000", plan.small_block));
                match request_ceiling(&sink.url, &block, small_requests as u64, plan.threads) {
                    Ok(ceiling) => request_ceilings.push(ceiling),
                    Err(e) => failures.push(e),
                }
            }
        }
        unchecked.curl = mbps.curl.clone();
        unchecked.old = mbps.old.clone();
        if !http2 {
            if let Some(ceiling) = median_of(&ceilings) {
                let share = |v: &[f64]| median_of(v).map_or(0.0, |m| m / ceiling);
                shares = format!(
                    "Share of the loopback ceiling, 8 MiB blocks over HTTP/1.1: ours {:.2}, \
                     ours without checksum {:.2}, curl {:.2}.\n",
                    share(&mbps.ours),
                    share(&unchecked.ours),
                    share(&mbps.curl)
                );
            }
            if let Some(ceiling) = median_of(&request_ceilings) {
                let share = |v: &[f64]| median_of(v).map_or(0.0, |m| m / ceiling);
                let _ = writeln!(
                    shares,
                    "Share of the request-rate ceiling, 10 KiB blocks over HTTP/1.1: ours {:.2}, {} {:.2}, {} {:.2}.",
                    share(&rps.ours),
                    curl8.version,
                    share(&rps.curl),
                    curl7.version,
                    share(&rps.old)
                );
            }
        }
        figures.push(mbps);
        if !unchecked.ours.is_empty() {
            figures.push(unchecked);
        }
        figures.push(rps);
    }
    let stalls = stall_figure(&bin, &big, h1, &plan, &mut failures)?;
    figures.extend(https_figures(
        &bin,
        &work,
        &big,
        &plan,
        [&curl8, &curl7],
        &mut failures,
    )?);
    // The receiver's own cost: durable acknowledgements and landing on disk.
    let disk = serve_sink(&bin, &work, false)?;
    let mut ingest_mbps = Vec::new();
    for _ in 0..plan.runs {
        let big_ours = ours(&bin, &disk.url, &big, plan.big_block, plan.threads, false);
        if let Some(s) = attempt(big_ours, &mut failures) {
            ingest_mbps.push(plan.big_file as f64 / 1e6 / s.seconds);
        }
    }
    drop(disk);
    figures.push(Figure::solo(
        format!(
            "receiver landing on disk, durable acks: {} MiB file, 8 MiB blocks, {} in flight",
            plan.big_file / MIB,
            plan.threads
        ),
        "MB/s",
        ingest_mbps,
    ));
    figures.push(Figure {
        name: "client CPU seconds per GiB (8 MiB blocks, HTTP/1.1)".into(),
        unit: "s",
        ours: our_cpu_gib,
        curl: curl_cpu_gib,
        old: vec![],
    });
    figures.push(Figure {
        name: "client CPU seconds per 1000 requests (10 KiB, HTTP/1.1)".into(),
        unit: "s",
        ours: our_cpu_k,
        curl: curl_cpu_k,
        old: vec![],
    });
    let bound = (plan.threads as u64 * plan.big_block + 32 * MIB) as f64 / MIB as f64;
    figures.push(Figure::solo(
        format!(
            "peak RSS of our {} MiB upload (bound {bound:.0} MiB)",
            plan.big_file / MIB
        ),
        "MiB",
        ours_rss,
    ));
    if !ceilings.is_empty() {
        figures.push(Figure::solo(
            "loopback ceiling (iperf3, one stream, once per run)".into(),
            "MB/s",
            ceilings.clone(),
        ));
    }
    figures.push(Figure::solo(
        format!(
            "request-rate ceiling (h2load --h1, {} connections, 10 KiB POST bodies, once per run)",
            plan.threads
        ),
        "req/s",
        request_ceilings.clone(),
    ));

    figures.extend(many_files_figures(
        &bin,
        &work,
        &h1.url,
        &plan,
        [&curl8, &curl7],
        &mut failures,
    )?);
    let mut protocols = vec![stalls];
    protocols.extend(durable_figures(&bin, &work, &small, &plan, &mut failures)?);
    protocols.extend(protocol_figures(&bin, &work, &big, &plan, &mut failures)?);
    protocols.extend(store_figures(
        &bin,
        &work,
        &plan,
        &curl8,
        true,
        &mut failures,
    )?);

    let mut table = format!(
        "| figure | ours (min–max) | {} (min–max) | {} (min–max) | ours / {} |\n|---|---|---|---|---|\n",
        curl8.version, curl7.version, curl8.version
    );
    for f in &figures {
        table.push_str(&f.row(true));
        table.push('\n');
    }
    table.push_str(
        "\n| protocols | ours (min–max) | other (min–max) | ours / other |\n|---|---|---|---|\n",
    );
    for f in &protocols {
        table.push_str(&f.row(false));
        table.push('\n');
    }
    println!(
        "\n{} runs each, alternating; medians, with the range in parentheses.\n\n{table}\n{shares}",
        plan.runs
    );
    let json = serde_json::json!({
        "quick": quick,
        "runs": plan.runs,
        "sink_http1": h1.name,
        "sink_http2": receiver.name,
        "loopback_mb_per_s": ceilings,
        "request_ceiling_per_s": request_ceilings,
        "curl": curl8.version,
        "curl_old": curl7.version,
        "figures": figures.iter().chain(&protocols).map(Figure::json).collect::<Vec<_>>(),
        "failed_runs": failures,
    });
    let path = out_dir.join(if quick {
        "bench-quick.json"
    } else {
        "bench.json"
    });
    fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    println!("written to {}", path.display());
    Ok(())
}

/// The durable floor (`crates/server/examples/durable_floor.rs`): a body
/// written and group-synced before each answer, nothing else; the best a
/// durable receiver can do on this machine and disk.
fn durable_floor(work: &Path) -> Result<Sink, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(crate::root())
        .args(["build", "--release", "-q", "-p", "fileuploader-server"])
        .args(["--example", "durable_floor"])
        .status();
    if !built.is_ok_and(|s| s.success()) {
        return Err("cargo build --release --example durable_floor failed".into());
    }
    let bin = crate::release_dir().join("examples/durable_floor");
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("127.0.0.1:{port}"))
        .arg(work.join("durable-floor.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let sink = Sink {
        child,
        url: format!("http://127.0.0.1:{port}/upload"),
        name: "durable floor",
    };
    wait_for_port(port)?;
    Ok(sink)
}

/// The receiver's durable ingest of small blocks, 16 and 4 in flight: our
/// receiver on a directory against the same receiver with `--discard` (the
/// issue's ratio), with the durable floor third; and the floor against
/// `--discard`, the most that ratio can be here.
fn durable_figures(
    bin: &Path,
    work: &Path,
    small: &Path,
    plan: &Plan,
    failures: &mut Vec<String>,
) -> Result<Vec<Figure>, String> {
    let discard = serve_sink(bin, work, true)?;
    let disk = serve_sink(bin, work, false)?;
    let floor = durable_floor(work)?;
    let requests = plan.small_file.div_ceil(plan.small_block) as f64;
    let mut figures = Vec::new();
    for in_flight in [16, 4] {
        let what = format!(
            "{} MiB file, 10 KiB blocks, {in_flight} in flight",
            plan.small_file / MIB
        );
        let mut ingest = Figure::new(
            format!(
                "receiver on a directory, durable: {what} (other: --discard; third: durable floor)"
            ),
            "req/s",
        );
        let mut most = Figure::new(
            format!(
                "durable floor, a write and a group fdatasync a block: {what} (other: --discard)"
            ),
            "req/s",
        );
        for _ in 0..plan.runs {
            for (sink, into) in [
                (&discard, &mut ingest.curl),
                (&floor, &mut ingest.old),
                (&disk, &mut ingest.ours),
            ] {
                let run = ours(bin, &sink.url, small, plan.small_block, in_flight, false);
                if let Some(s) = attempt(run, failures) {
                    into.push(requests / s.seconds);
                }
            }
        }
        most.ours = ingest.old.clone();
        most.curl = ingest.curl.clone();
        figures.push(ingest);
        figures.push(most);
    }
    Ok(figures)
}

/// Tail latency: the big file through a proxy that stalls about one 8 MiB
/// request in fifty for 2 s: ours with `--threads auto --hedge` against
/// ours with fixed threads (the "other" column) and fixed threads with
/// `--hedge` (the third).
fn stall_figure(
    bin: &Path,
    big: &Path,
    sink: &Sink,
    plan: &Plan,
    failures: &mut Vec<String>,
) -> Result<Figure, String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let upstream: u16 = sink
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next()?.parse().ok())
        .ok_or_else(|| format!("no port in {}", sink.url))?;
    let mut figure = Figure::new(format!(
            "{} MiB file, 8 MiB blocks, HTTP/1.1, through a proxy stalling about 2 % of requests for 2 s: --threads auto --hedge (other: --threads {n}; third: --threads {n} --hedge)",
            plan.big_file / MIB,
            n = plan.threads
        ), "MB/s");
    let fixed = plan.threads.to_string();
    for run in 0..plan.runs {
        // Alike stalls for all three: each run's proxies have one seed.
        for (threads, hedge, column) in [
            ("auto", true, &mut figure.ours),
            (fixed.as_str(), false, &mut figure.curl),
            (fixed.as_str(), true, &mut figure.old),
        ] {
            let port = crate::chaos::stalling_proxy(&runtime, upstream, run as u64 + 1)
                .map_err(|e| e.to_string())?;
            let url = format!("http://127.0.0.1:{port}/upload");
            let mut c = ours(bin, &url, big, plan.big_block, threads, false);
            if hedge {
                c.arg("--hedge");
            }
            if let Some(s) = attempt(c, failures) {
                column.push(plan.big_file as f64 / 1e6 / s.seconds);
            }
        }
    }
    Ok(figure)
}

/// HTTPS: the big file to nginx over TLS (HTTP/1.1) and to our receiver
/// over TLS (HTTP/2, which nginx's 'return 200' does not drain), ours
/// against both curls, with each client's CPU per GiB over HTTP/1.1.
fn https_figures(
    bin: &Path,
    work: &Path,
    big: &Path,
    plan: &Plan,
    [curl8, curl7]: [&Curl; 2],
    failures: &mut Vec<String>,
) -> Result<Vec<Figure>, String> {
    let tls = Tls::make(work)?;
    let h1 = nginx_serving(work, Some(&tls))?;
    let h2 = serve_sink_over(bin, work, true, Some(&tls))?;
    let gib = plan.big_file as f64 / (1u64 << 30) as f64;
    let mut figures = Vec::new();
    let (mut ours_cpu, mut curl_cpu) = (Vec::new(), Vec::new());
    for (label, http2, sink) in [("HTTP/1.1", false, &h1), ("HTTP/2", true, &h2)] {
        let cfg = curl_config_trusting(big, plan.big_block, &sink.url, work, Some(&tls.ca))?;
        let mut mbps = Figure::new(
            format!(
                "HTTPS: {} MiB file, 8 MiB blocks, {} in flight, {label} ({})",
                plan.big_file / MIB,
                plan.threads,
                sink.name
            ),
            "MB/s",
        );
        for _ in 0..plan.runs {
            let mut c = ours(bin, &sink.url, big, plan.big_block, plan.threads, http2);
            c.arg("--cacert").arg(&tls.ca);
            if let Some(s) = attempt(c, failures) {
                mbps.ours.push(plan.big_file as f64 / 1e6 / s.seconds);
                if !http2 {
                    ours_cpu.push(s.cpu_seconds / gib);
                }
            }
            if let Some(s) = attempt(curl(curl8, &cfg, plan.threads, http2), failures) {
                mbps.curl.push(plan.big_file as f64 / 1e6 / s.seconds);
                if !http2 {
                    curl_cpu.push(s.cpu_seconds / gib);
                }
            }
            if let Some(s) = attempt(curl(curl7, &cfg, plan.threads, http2), failures) {
                mbps.old.push(plan.big_file as f64 / 1e6 / s.seconds);
            }
        }
        figures.push(mbps);
    }
    figures.push(Figure {
        name: "HTTPS: client CPU seconds per GiB (8 MiB blocks, HTTP/1.1)".into(),
        unit: "s",
        ours: ours_cpu,
        curl: curl_cpu,
        old: vec![],
    });
    Ok(figures)
}

/// Many small files: 1 000 files of 64 KiB, 4 in flight, ours (one run,
/// `--files 4`) against curl `--parallel --parallel-max 4` (one form post
/// per file); and how closely `--limit-rate` holds an upload to its rate.
fn many_files_figures(
    bin: &Path,
    work: &Path,
    url: &str,
    plan: &Plan,
    [curl8, curl7]: [&Curl; 2],
    failures: &mut Vec<String>,
) -> Result<Vec<Figure>, String> {
    const FILES: usize = 1000;
    let folder = work.join("many");
    let _ = fs::remove_dir_all(&folder);
    let mut config = String::new();
    for i in 0..FILES {
        let path = folder.join(format!("d{}/f{i:04}.bin", i % 10));
        fs::create_dir_all(path.parent().unwrap_or(&folder)).map_err(|e| e.to_string())?;
        let data: Vec<u8> = (0..64 * 1024u32).map(|j| (j ^ i as u32) as u8).collect();
        fs::write(&path, data).map_err(|e| e.to_string())?;
        if i > 0 {
            config.push_str("next\n");
        }
        let _ = write!(
            config,
            "url = \"{url}\"\nform = \"RemoteFile=@{}\"\nheader = \"Expect:\"\noutput = \"/dev/null\"\n",
            path.display()
        );
    }
    let curl_cfg = work.join("curl-many.cfg");
    fs::write(&curl_cfg, config).map_err(|e| e.to_string())?;
    let mut many = Figure::new(
        format!("{FILES} files of 64 KiB, 4 in flight (curl --parallel-max 4)"),
        "files/s",
    );
    for _ in 0..plan.runs {
        let mut ours = Command::new(bin);
        ours.args([
            "upload",
            "--quiet",
            "-r",
            "--url",
            url,
            "--files",
            "4",
            "--threads",
            "4",
        ])
        .arg(&folder)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
        if let Some(s) = attempt(ours, failures) {
            many.ours.push(FILES as f64 / s.seconds);
        }
        if let Some(s) = attempt(curl(curl8, &curl_cfg, 4, false), failures) {
            many.curl.push(FILES as f64 / s.seconds);
        }
        if let Some(s) = attempt(curl(curl7, &curl_cfg, 4, false), failures) {
            many.old.push(FILES as f64 / s.seconds);
        }
    }
    // --limit-rate: 200 MiB at 20 MiB/s is 10 s (the quick run: 50 MiB,
    // 2.5 s); the figure is the run's time over that.
    let mib = if plan.quick { 50 } else { 200 };
    let rated = work.join(format!("rated-{mib}.bin"));
    make_file(&rated, mib * MIB).map_err(|e| e.to_string())?;
    let expected = mib as f64 / 20.0;
    let mut held = Vec::new();
    for _ in 0..plan.runs {
        let mut c = ours(bin, url, &rated, plan.big_block, plan.threads, false);
        c.args(["--limit-rate", "20MiB"]);
        if let Some(s) = attempt(c, failures) {
            held.push((s.seconds / expected - 1.0) * 100.0);
        }
    }
    let rate = Figure::solo(
        format!(
            "--limit-rate 20MiB, {mib} MiB: time beyond the {expected} s the rate allows (negative: sooner)"
        ),
        "%",
        held,
    );
    Ok(vec![many, rate])
}

/// tus figures: our client against tus-js-client, both to @tus/server with
/// the same file and chunk size; and our receiver taking tus with 4 blocks
/// in flight (concatenation) against taking the segmented protocol.
fn protocol_figures(
    bin: &Path,
    work: &Path,
    file: &Path,
    plan: &Plan,
    failures: &mut Vec<String>,
) -> Result<Vec<Figure>, String> {
    let cache = crate::interop::cache();
    crate::interop::install(&cache)?;
    let node_path = cache.join("node/node_modules");
    let size = fs::metadata(file).map_err(|e| e.to_string())?.len() as f64;
    let block = plan.big_block;
    let tus_upload = |url: &str, threads: u32| {
        let mut c = ours(bin, url, file, block, threads, false);
        c.args(["--protocol", "tus"]);
        c
    };

    let store = work.join("tus-server");
    let _ = fs::remove_dir_all(&store);
    fs::create_dir_all(&store).map_err(|e| e.to_string())?;
    let (peer, port) = crate::interop::tus_server(&cache, &store)?;
    let url = format!("http://127.0.0.1:{port}/files");
    let mut vs_js = Figure::new(
        format!(
            "to @tus/server: {} MiB file, {} MiB chunks, one stream (other: tus-js-client 4.3)",
            plan.big_file / MIB,
            block / MIB
        ),
        "MB/s",
    );
    for _ in 0..plan.runs {
        if let Some(s) = attempt(tus_upload(&url, 1), failures) {
            vs_js.ours.push(size / 1e6 / s.seconds);
        }
        let mut js = Command::new("node");
        js.env("NODE_PATH", &node_path)
            .arg(crate::root().join("xtask/interop/tus-js-client.cjs"))
            .arg(&url)
            .arg(file)
            .args(["tus-v1", "1", &block.to_string(), "through"]);
        if let Some(s) = attempt(js, failures) {
            vs_js.curl.push(size / 1e6 / s.seconds);
        }
        // Each run leaves a copy; keep the disk from filling.
        let _ = fs::remove_dir_all(&store);
        let _ = fs::create_dir_all(&store);
    }
    drop(peer);

    let disk = serve_sink(bin, work, false)?;
    let tus_url = disk.url.replace("/upload", "/files");
    let mut tus_vs_segmented = Figure::new(format!(
            "to our receiver, landing on disk: {} MiB file, {} MiB blocks, {} in flight, tus by concatenation (other: segmented)",
            plan.big_file / MIB,
            block / MIB,
            plan.threads
        ), "MB/s");
    for _ in 0..plan.runs {
        if let Some(s) = attempt(tus_upload(&tus_url, plan.threads), failures) {
            tus_vs_segmented.ours.push(size / 1e6 / s.seconds);
        }
        let segmented = ours(bin, &disk.url, file, block, plan.threads, false);
        if let Some(s) = attempt(segmented, failures) {
            tus_vs_segmented.curl.push(size / 1e6 / s.seconds);
        }
    }
    Ok(vec![vs_js, tus_vs_segmented])
}

/// The receiver's stores: ingest into a one-node Garage bucket against
/// ingest into a directory, through one receiver and through two behind
/// nginx (round robin; the two share the bucket, or the directory): 1 GiB
/// in 8 MiB blocks and 100 MiB in 64 KiB blocks, 8 in flight.
fn store_figures(
    bin: &Path,
    work: &Path,
    plan: &Plan,
    curl: &Curl,
    direct: bool,
    failures: &mut Vec<String>,
) -> Result<Vec<Figure>, String> {
    let garage_dir = work.join("garage");
    let _ = fs::remove_dir_all(&garage_dir);
    let garage = crate::garage::Garage::start(&garage_dir, 1, &["bench"])?;
    let (mut latencies, mut rates) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        match put_latency(curl, &garage, work, 1) {
            Ok(seconds) => latencies.push(seconds * 1000.0),
            Err(e) => failures.push(e),
        }
        match put_latency(curl, &garage, work, 8) {
            Ok(seconds) => rates.push(1.0 / seconds),
            Err(e) => failures.push(e),
        }
    }
    let files = [
        (1024 * MIB, 8 * MIB, "1 GiB in 8 MiB blocks"),
        (100 * MIB, 64 * 1024, "100 MiB in 64 KiB blocks"),
    ];
    let mut figures = Vec::new();
    // What one receiver asks of the store per 64 KiB block, from Garage's
    // own request counts: listings, writes and reads.
    let mut per_block: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for receivers in [1, 2] {
        let landing = work.join("landing-shared");
        let _ = fs::remove_dir_all(&landing);
        let mut started = Vec::new();
        let mut ports = Vec::new();
        for kind in ["s3", "fs"] {
            let mut kind_ports = Vec::new();
            for _ in 0..receivers {
                let port = free_port();
                let log = work.join(format!("serve-{kind}-{port}.log"));
                let mut c = Command::new(bin);
                c.args(["serve", "--on-conflict=overwrite"])
                    .args(["--addr", &format!("127.0.0.1:{port}")])
                    .stdout(Stdio::null())
                    .stderr(fs::File::create(&log).map_err(|e| e.to_string())?);
                if kind == "s3" {
                    c.args([
                        "--store",
                        "s3://bench/in",
                        "--s3-region",
                        crate::garage::REGION,
                    ])
                    .args(["--s3-endpoint", &garage.endpoints[0]]);
                    garage.credentials(&mut c);
                } else {
                    c.arg("--dir").arg(&landing);
                }
                let peer =
                    crate::interop::start(&mut c, port, "fileuploader serve").map_err(|e| {
                        let said = fs::read_to_string(&log).unwrap_or_default();
                        format!("{e}; it said: {}", said.trim())
                    })?;
                started.push(peer);
                kind_ports.push(port);
            }
            ports.push(kind_ports);
        }
        let mut balancers = Vec::new();
        let urls: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if receivers == 1 {
                    return Ok(format!("http://127.0.0.1:{}/", p[0]));
                }
                let port = free_port();
                balancers.push(crate::garage::nginx(
                    &work.join(format!("balancer-{i}")),
                    port,
                    p,
                )?);
                Ok(format!("http://127.0.0.1:{port}/"))
            })
            .collect::<Result<_, String>>()?;
        for (len, block, what) in files {
            let file = work.join(format!("store-{len}.bin"));
            make_file(&file, len).map_err(|e| e.to_string())?;
            let mut figure = Figure::new(format!(
                    "ingest, {what}, 8 in flight, {receivers} receiver{}: Garage (other: a directory)",
                    if receivers == 1 { "" } else { "s behind nginx" }
                ), "MB/s");
            let counted = receivers == 1 && block < MIB;
            for _ in 0..plan.runs {
                for (i, url) in urls.iter().enumerate() {
                    let before = (counted && i == 0).then(|| garage.requests()).transpose()?;
                    if let Some(s) = attempt(ours(bin, url, &file, block, 8, false), failures) {
                        if let Some(before) = &before {
                            let after = garage.requests()?;
                            let blocks = len.div_ceil(block) as f64;
                            for kind in STORE_REQUESTS {
                                let n =
                                    after.get(kind).unwrap_or(&0) - before.get(kind).unwrap_or(&0);
                                per_block.entry(kind).or_default().push(n as f64 / blocks);
                            }
                        }
                        let mbps = len as f64 / 1e6 / s.seconds;
                        if i == 0 {
                            figure.ours.push(mbps);
                        } else {
                            figure.curl.push(mbps);
                        }
                    }
                }
            }
            figures.push(figure);
            let _ = fs::remove_file(&file);
        }
    }
    for (kind, counts) in per_block {
        figures.push(Figure::solo(
            format!("Garage {kind} requests per 64 KiB block, one receiver"),
            "requests",
            counts,
        ));
    }
    let bound: Vec<f64> = latencies
        .iter()
        .map(|ms| 8.0 * 65_536.0 / 1e6 / (ms / 1000.0))
        .collect();
    figures.push(Figure::solo(
        "Garage PUT of 64 KiB, one at a time on one connection (curl --aws-sigv4)".into(),
        "ms",
        latencies,
    ));
    figures.push(Figure::solo(
        "bound for 64 KiB blocks, 8 in flight: 8 × 64 KiB ÷ PUT latency".into(),
        "MB/s",
        bound,
    ));
    figures.push(Figure::solo(
        "Garage PUTs of 64 KiB a second, 8 at a time (curl --parallel-max 8)".into(),
        "PUT/s",
        rates,
    ));
    if direct {
        figures.extend(direct_figures(bin, work, plan, &garage, failures)?);
    }
    Ok(figures)
}

/// The kinds of request the store rows count per block.
const STORE_REQUESTS: [&str; 3] = ["ListObjectsV2", "PutObject", "GetObject"];

/// Garage's time per `PUT` of 64 KiB, in seconds: 100 of them, `at_once`
/// at a time (one: the latency of one on one connection; more: the time
/// the store takes per `PUT` when they overlap).
fn put_latency(
    curl: &Curl,
    garage: &crate::garage::Garage,
    work: &Path,
    at_once: u32,
) -> Result<f64, String> {
    const PUTS: usize = 100;
    let body = work.join("put-64k.bin");
    make_file(&body, 65_536).map_err(|e| e.to_string())?;
    let mut config = format!(
        "aws-sigv4 = \"aws:amz:{}:s3\"\nuser = \"{}:{}\"\n",
        crate::garage::REGION,
        garage.key_id,
        garage.secret
    );
    for i in 0..PUTS {
        let _ = write!(
            config,
            "url = \"{}/bench/put-latency-{i}\"\nupload-file = \"{}\"\noutput = \"/dev/null\"\n",
            garage.endpoints[0],
            body.display()
        );
    }
    let cfg = work.join("curl-put-latency.cfg");
    fs::write(&cfg, config).map_err(|e| e.to_string())?;
    let mut c = curl.command();
    c.args(["--silent", "--show-error", "--fail"]);
    if at_once > 1 {
        c.args(["--parallel", "--parallel-max", &at_once.to_string()]);
    }
    c.arg("-K").arg(&cfg).env("NO_PROXY", "*");
    Ok(measure(&mut c)?.seconds / PUTS as f64)
}

/// `upload --protocol s3` of `file` to `key` in Garage's bench bucket, in
/// 8 MiB parts, 8 in flight.
fn straight(bin: &Path, garage: &crate::garage::Garage, file: &Path, key: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(["upload", "--quiet", "--protocol", "s3"])
        .args(["--url", &format!("s3://bench/{key}")])
        .args(["--s3-endpoint", &garage.endpoints[0]])
        .args(["--s3-region", crate::garage::REGION])
        .args(["--block-size", "8MiB", "--threads", "8"])
        .arg(file);
    garage.credentials(&mut c);
    c
}

/// 1 GiB to Garage in 8 MiB parts, 8 in flight: our client straight to
/// the bucket (`--protocol s3`) against the same through our receiver's
/// Companion routes, and against rclone (Debian's, when installed).
fn direct_figures(
    bin: &Path,
    work: &Path,
    plan: &Plan,
    garage: &crate::garage::Garage,
    failures: &mut Vec<String>,
) -> Result<Vec<Figure>, String> {
    let len = plan.big_file;
    let file = work.join("direct.bin");
    make_file(&file, len).map_err(|e| e.to_string())?;
    let port = free_port();
    let mut c = Command::new(bin);
    c.args(["serve", "--on-conflict=overwrite"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args([
            "--store",
            "s3://bench/signed",
            "--s3-region",
            crate::garage::REGION,
        ])
        .args(["--s3-endpoint", &garage.endpoints[0]])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    garage.credentials(&mut c);
    let _receiver = crate::interop::start(&mut c, port, "fileuploader serve")?;
    let size = format!("{} MiB", len / MIB);
    let mut through = Figure::new(format!("{size} to Garage in 8 MiB parts, 8 in flight: --protocol s3 straight (other: --protocol companion through our receiver)"), "MB/s");
    let rclone = Command::new("rclone")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut versus = Figure::new(format!("{size} to Garage in 8 MiB parts, 8 in flight: --protocol s3 (other: rclone copyto, Debian's)"), "MB/s");
    if !rclone {
        failures.push("rclone is not installed (apt-get install rclone): no rclone row".into());
    }
    let mbps = |s: Sample| len as f64 / 1e6 / s.seconds;
    for _ in 0..plan.runs {
        if let Some(s) = attempt(
            straight(bin, garage, &file, "straight/direct.bin"),
            failures,
        ) {
            through.ours.push(mbps(s));
            versus.ours.push(mbps(s));
        }
        let mut signed = Command::new(bin);
        signed
            .args(["upload", "--quiet", "--protocol", "companion"])
            .args(["--url", &format!("http://127.0.0.1:{port}/s3")])
            .args(["--block-size", "8MiB", "--threads", "8"])
            .arg(&file);
        if let Some(s) = attempt(signed, failures) {
            through.curl.push(mbps(s));
        }
        if rclone {
            let mut r = Command::new("rclone");
            r.args(["copyto", "--ignore-times", "--s3-chunk-size", "8M"])
                .args(["--s3-upload-concurrency", "8"])
                .args(["--s3-upload-cutoff", "0", "--s3-disable-checksum"])
                .arg(&file)
                .arg("garage:bench/rclone/direct.bin")
                .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
                .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
                .env("RCLONE_CONFIG_GARAGE_ENDPOINT", &garage.endpoints[0])
                .env("RCLONE_CONFIG_GARAGE_REGION", crate::garage::REGION)
                .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &garage.key_id)
                .env("RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY", &garage.secret)
                .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true")
                // rclone cannot use a CA bundle on a plain-http endpoint.
                .env_remove("AWS_CA_BUNDLE");
            if let Some(s) = attempt(r, failures) {
                versus.curl.push(mbps(s));
            }
        }
    }
    let _ = fs::remove_file(&file);
    Ok(vec![through, versus])
}

#[cfg(test)]
mod tests {
    use super::{Plan, MIB};

    fn plan(args: &[&str]) -> Result<Plan, String> {
        Plan::from_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn a_childs_peak_memory_is_its_own_not_the_benchs() {
        // This process holds 64 MiB while a small child runs.
        let held = vec![1u8; 64 << 20];
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg("0.3");
        let sample = super::measure(&mut sleep).unwrap();
        assert!(held.iter().all(|&b| b == 1));
        assert!(
            sample.max_rss_kib > 0 && sample.max_rss_kib < 32 * 1024,
            "sleep peaked at {} KiB",
            sample.max_rss_kib
        );
    }

    #[test]
    fn runs_default_by_size_and_can_be_raised_but_not_below_three() {
        let full = plan(&[]).unwrap();
        assert_eq!(
            (full.quick, full.runs, full.big_file),
            (false, 5, 1024 * MIB)
        );
        let quick = plan(&["--quick"]).unwrap();
        assert_eq!(
            (quick.quick, quick.runs, quick.big_file),
            (true, 3, 256 * MIB)
        );
        assert_eq!(plan(&["--runs", "15", "--quick"]).unwrap().runs, 15);
        for bad in [&["--runs", "2"][..], &["--runs"], &["--runs", "x"]] {
            assert_eq!(
                plan(bad).err().as_deref(),
                Some("--runs takes a number of at least 3")
            );
        }
        assert_eq!(
            plan(&["--fast"]).err().as_deref(),
            Some("unknown argument \"--fast\"")
        );
    }
}
