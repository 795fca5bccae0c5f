//! `cargo xtask interop`: fileuploader against protocol peers nobody here
//! wrote, each started on 127.0.0.1 by this task:
//!
//! - our client (`fileuploader upload --protocol tus`) to `@tus/server` with
//!   `@tus/file-store` (npm; one stream, it has no concatenation), to
//!   `tuspyserver` (PyPI; concatenation) and to `resumable-upload` (PyPI;
//!   the checksum extension and concatenation), one and four blocks in
//!   flight; and a client killed mid-upload and run again, the bytes the
//!   server took counted;
//! - `tus-js-client` (npm, under Node) to our receiver in its `tus-v1` mode
//!   with `parallelUploads` 1 (aborted halfway and started again) and 3,
//!   and in its `ietf-draft-05` mode (aborted and started again);
//! - a same-name race on our receiver (which refuses a taken name): two
//!   `tus-js-client`s with Uppy's retries and our client, in each of the
//!   two modes, send different bytes under one name at once; exactly one
//!   may say it succeeded, and the file there must be its bytes;
//! - Uppy 6 in a real browser (Debian's `chromium`, headless, driven by
//!   `puppeteer-core`) to our receiver across origins: a tus upload lands;
//!   one whose name a folder takes as it uploads is shown failed, not
//!   uploaded; three files in one `XHRUpload` bundle are refused and shown
//!   failed, and none lands.
//!
//! Sizes run from 0 bytes to 100 MiB; every landing is compared byte for
//! byte. The peers are installed when missing into a cache outside the
//! repository (`$FILEUPLOADER_INTEROP_CACHE`, else
//! `~/.cache/fileuploader-interop`), at pinned versions.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::root;

/// The npm packages, pinned.
const NPM: &[&str] = &[
    "tus-js-client@4.3.1",
    "@tus/server@1.10.2",
    "@tus/file-store@1.5.1",
    "uppy@6.0.1",
    "puppeteer-core@25.16.0",
    "@uppy/companion@6.2.2",
];
/// Uppy as a page that uploads straight to a bucket loads it: its core,
/// Dashboard and `@uppy/aws-s3`, bundled here with esbuild (no `uppy`
/// bundle carries this `@uppy/aws-s3` yet), apart from the packages above
/// (whose `uppy` bundle pins an older core).
const NPM_AWS_S3: &[&str] = &[
    "@uppy/core@6.3.1",
    AWS_S3,
    "@uppy/dashboard@6.0.3",
    "esbuild@0.28.2",
];
/// The `@uppy/aws-s3` the browser checks run.
pub(crate) const AWS_S3: &str = "@uppy/aws-s3@6.3.1";
/// The browser Uppy runs in: Debian's `chromium`, headless.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// The PyPI packages, pinned.
const PYPI: &[&str] = &[
    "resumable-upload==0.3.0",
    "tuspyserver==4.4.3",
    "fastapi==0.165.0",
    "uvicorn==0.54.0",
];
const MIB: usize = 1 << 20;

/// A child process killed when dropped.
pub(crate) struct Peer(pub(crate) Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn cache() -> PathBuf {
    std::env::var_os("FILEUPLOADER_INTEROP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/fileuploader-interop")
        })
}

pub(crate) fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Installs the peers that are missing.
pub(crate) fn install(cache: &Path) -> Result<(), String> {
    let node = cache.join("node");
    if !node.join("node_modules/@uppy/companion").exists() {
        std::fs::create_dir_all(&node).map_err(|e| e.to_string())?;
        eprintln!("interop: installing {} with npm", NPM.join(" "));
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&node)
                .args(NPM),
            "npm install",
        )?;
    }
    let bundled = aws_s3_bundle(cache);
    if !bundled.join("uppy.min.css").exists() {
        let node = cache.join("node-aws-s3");
        std::fs::create_dir_all(&node).map_err(|e| e.to_string())?;
        eprintln!("interop: installing {} with npm", NPM_AWS_S3.join(" "));
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&node)
                .args(NPM_AWS_S3),
            "npm install",
        )?;
        // Beside its packages, for esbuild to find them.
        let entry = node.join("uppy-aws-s3.mjs");
        std::fs::copy(root().join("xtask/interop/uppy-aws-s3.mjs"), &entry)
            .map_err(|e| e.to_string())?;
        let esbuild = node.join("node_modules/.bin/esbuild");
        for (format, out) in [("esm", "uppy.min.mjs"), ("iife", "uppy.min.js")] {
            run(
                Command::new(&esbuild)
                    .arg(&entry)
                    .args(["--bundle", "--minify", "--global-name=Uppy"])
                    .arg(format!("--format={format}"))
                    .arg(format!("--outfile={}", bundled.join(out).display())),
                "esbuild",
            )?;
        }
        let mut css = Vec::new();
        for package in ["core", "dashboard"] {
            let style = node.join(format!("node_modules/@uppy/{package}/dist/style.min.css"));
            css.extend(std::fs::read(&style).map_err(|e| format!("{}: {e}", style.display()))?);
            css.push(b'\n');
        }
        std::fs::write(bundled.join("uppy.min.css"), css).map_err(|e| e.to_string())?;
    }
    let venv = cache.join("venv");
    if !venv.join("bin/uvicorn").exists() {
        eprintln!("interop: installing {} with pip", PYPI.join(" "));
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        )?;
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(PYPI),
            "pip install",
        )?;
    }
    Ok(())
}

/// Where the bundle of [`NPM_AWS_S3`] is: `uppy.min.js` (the global
/// `Uppy`), `uppy.min.mjs` and `uppy.min.css`.
pub(crate) fn aws_s3_bundle(cache: &Path) -> PathBuf {
    let version = AWS_S3.rsplit('@').next().unwrap_or_default();
    cache.join(format!("node-aws-s3/dist-{version}"))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// Starts a peer and waits until it accepts connections on `port`.
pub(crate) fn start(command: &mut Command, port: u16, what: &str) -> Result<Peer, String> {
    let child = command
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let mut peer = Peer(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = peer.0.try_wait() {
            return Err(format!("{what} exited: {status}"));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("{what} did not listen on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(peer)
}

/// `@tus/server` with its file store in `store`: the peer and its port.
pub(crate) fn tus_server(cache: &Path, store: &Path) -> Result<(Peer, u16), String> {
    let port = free_port();
    let peer = start(
        Command::new("node")
            .env("NODE_PATH", cache.join("node/node_modules"))
            .arg(root().join("xtask/interop/tus-server.cjs"))
            .arg(port.to_string())
            .arg(store),
        port,
        "@tus/server",
    )?;
    Ok((peer, port))
}

/// A file of `len` bytes that no two offsets of one block share.
pub(crate) fn make_file(dir: &Path, name: &str, len: usize) -> Result<PathBuf, String> {
    let data: Vec<u8> = (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, data).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Whether some file under `dir` has exactly the bytes of `file`.
fn landed(dir: &Path, file: &Path) -> bool {
    let Ok(want) = std::fs::read(file) else {
        return false;
    };
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.len() == want.len() as u64
                && path.extension().is_none_or(|e| e != "json")
                && std::fs::read(&path).is_ok_and(|got| got == want)
            {
                return true;
            }
        }
    }
    false
}

/// The sizes every peer is sent, with names.
const SIZES: &[(&str, usize)] = &[
    ("empty", 0),
    ("one-byte", 1),
    ("odd", 3 * MIB + 13),
    ("large", 100 * MIB),
];

pub(crate) struct Matrix {
    rows: Vec<(String, String, Result<(), String>)>,
}

impl Matrix {
    pub(crate) fn record(&mut self, peer: &str, case: &str, result: Result<(), String>) {
        match &result {
            Ok(()) => eprintln!("interop: {peer:<28} {case:<34} ok"),
            Err(why) => eprintln!("interop: {peer:<28} {case:<34} FAIL: {why}"),
        }
        self.rows.push((peer.to_owned(), case.to_owned(), result));
    }
}

fn upload(binary: &Path, url: &str, file: &Path, threads: &str, block: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["upload", "--protocol", "tus", "--url", url, "--quiet"])
        .args(["--threads", threads, "--block-size", block])
        .arg(file);
    command
}

/// Our client to one tus server, over every size, one and four blocks in
/// flight.
fn client_to(
    matrix: &mut Matrix,
    binary: &Path,
    peer: &str,
    url: &str,
    store: &Path,
    files: &[(String, PathBuf)],
) {
    for (name, file) in files {
        for threads in ["1", "4"] {
            let result = run(
                &mut upload(binary, url, file, threads, "1MiB"),
                "fileuploader upload",
            )
            .and_then(|()| {
                landed(store, file)
                    .then_some(())
                    .ok_or_else(|| "no identical file landed".to_owned())
            });
            matrix.record(
                peer,
                &format!("our client, {name}, {threads} threads"),
                result,
            );
        }
    }
}

/// Kills our client mid-upload to @tus/server, runs it again, and counts
/// what the server took.
fn resume_to_tus_server(
    binary: &Path,
    port: u16,
    store: &Path,
    file: &Path,
    journals: &Path,
) -> Result<(), String> {
    let received = || -> Result<u64, String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        write!(
            s,
            "GET /received HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        answer
            .rsplit("\r\n\r\n")
            .next()
            .and_then(|b| b.trim().parse().ok())
            .ok_or_else(|| format!("bad /received answer {answer:?}"))
    };
    let before = received()?;
    let url = format!("http://127.0.0.1:{port}/files");
    let client = || {
        let mut c = upload(binary, &url, file, "1", "1MiB");
        c.arg("--resume").env("FILEUPLOADER_JOURNAL_DIR", journals);
        c
    };
    let len = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    let mut first = client().spawn().map_err(|e| e.to_string())?;
    let started = Instant::now();
    while received()? - before < len / 3 {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = first.kill();
            return Err("the first run made no progress".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().map_err(|e| e.to_string())?;
    let _ = first.wait();
    let at_kill = received()? - before;
    if at_kill >= len {
        return Err(format!(
            "the client was killed too late ({at_kill} of {len} bytes)"
        ));
    }
    run(&mut client(), "the resumed run")?;
    let total = received()? - before;
    if !landed(store, file) {
        return Err("no identical file landed".into());
    }
    // The block in flight at the kill may arrive twice, at most.
    if total > len + MIB as u64 {
        return Err(format!(
            "the server took {total} bytes for a {len}-byte file: the resume sent more than it lacked"
        ));
    }
    eprintln!("interop: resume: {at_kill} bytes before the kill, {total} in all, for {len}");
    Ok(())
}

/// tus-js-client to our receiver.
fn js_client_to_us(
    matrix: &mut Matrix,
    node: &Path,
    url: &str,
    store: &Path,
    files: &[(String, PathBuf)],
    scratch: &Path,
) {
    let script = root().join("xtask/interop/tus-js-client.cjs");
    for (name, file) in files {
        // tus-js-client aborted in parallel mode may stop without a word:
        // parallel uploads run through, the others are aborted halfway.
        for (protocol, parallel, abort) in [
            ("tus-v1", "1", "abort"),
            ("tus-v1", "3", "through"),
            ("ietf-draft-05", "1", "abort"),
        ] {
            // A name of its own, so the receiver lands each upload apart.
            let copy = scratch.join(format!("{protocol}-{parallel}-{name}.bin"));
            let result = std::fs::copy(file, &copy)
                .map_err(|e| e.to_string())
                .and_then(|_| {
                    run(
                        Command::new("node")
                            .env("NODE_PATH", node.join("node_modules"))
                            .arg(&script)
                            .args([url, copy.to_str().unwrap_or("")])
                            .args([protocol, parallel, "1048576", abort]),
                        "tus-js-client",
                    )
                })
                .and_then(|()| {
                    let landed_as = store.join(copy.file_name().unwrap_or_default());
                    match std::fs::read(&landed_as) {
                        Ok(got) if std::fs::read(file).is_ok_and(|want| want == got) => Ok(()),
                        Ok(_) => Err(format!("{} differs", landed_as.display())),
                        Err(e) => Err(format!("{}: {e}", landed_as.display())),
                    }
                });
            let case = format!("tus-js-client {protocol} x{parallel}, {name}, {abort}");
            matrix.record("fileuploader serve", &case, result);
        }
    }
}

/// Three clients, two tus-js-clients (with Uppy's retry delays) and ours,
/// race to land different bytes under one name on our receiver at `url`:
/// exactly one may succeed, and the landed file must be its. Ours starts
/// once both tus-js-clients have created their uploads, so whoever lands
/// first, the others find the name taken as they finish, not as they
/// begin.
fn same_name_race(
    node: &Path,
    binary: &Path,
    url: &str,
    store: &Path,
    scratch: &Path,
) -> Result<(), String> {
    let script = root().join("xtask/interop/tus-js-client.cjs");
    let mut report = Vec::new();
    for (protocol, ours) in [("tus-v1", "tus"), ("ietf-draft-05", "ietf")] {
        let name = format!("race-{protocol}.bin");
        let mut racers = Vec::new();
        let before = partial_uploads(store);
        for k in 0..3u8 {
            let file = scratch.join(format!("{protocol}-{k}.bin"));
            let data: Vec<u8> = (0..32 * MIB as u32)
                .map(|i| ((i.wrapping_mul(2_654_435_761) >> 24) as u8) ^ (k + 1))
                .collect();
            std::fs::write(&file, &data).map_err(|e| e.to_string())?;
            let mut command = if k < 2 {
                let mut c = Command::new("node");
                c.env("NODE_PATH", node.join("node_modules"))
                    .arg(&script)
                    .args([url, file.to_str().unwrap_or("")])
                    .args([protocol, "1", "262144", "through", &name, "0,200,500"]);
                c
            } else {
                let begun = Instant::now();
                while partial_uploads(store) < before + 2
                    && begun.elapsed() < Duration::from_secs(20)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let mut c = Command::new(binary);
                c.args(["upload", "--quiet", "--protocol", ours, "--url", url])
                    .args(["--block-size", "1MiB", "--threads", "4", "--name", &name])
                    .arg(&file);
                c
            };
            let child = command
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("race client {k}: {e}"))?;
            racers.push((child, data));
        }
        let mut winners = Vec::new();
        let mut said = Vec::new();
        for (k, (child, data)) in racers.into_iter().enumerate() {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            said.push(format!(
                "client {k}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            if out.status.success() {
                winners.push((k, data));
            }
        }
        let landed = std::fs::read(store.join(&name)).map_err(|e| format!("{name}: {e}"))?;
        match winners.as_slice() {
            [(_, data)] if *data == landed => {
                report.push(format!("{protocol}: one landed, two told it did not"));
            }
            _ => {
                return Err(format!(
                    "{protocol}: {} clients said they succeeded ({:?}); the file is {}; {}",
                    winners.len(),
                    winners.iter().map(|w| w.0).collect::<Vec<_>>(),
                    winners
                        .iter()
                        .find(|w| w.1 == landed)
                        .map_or("none of theirs".to_owned(), |w| format!("client {}'s", w.0)),
                    said.join("; ")
                ))
            }
        }
    }
    eprintln!("interop: same-name race: {}", report.join(", "));
    Ok(())
}

/// Uppy in headless chromium against our receiver on `port` (landing in
/// `store`), and through nginx on `balancer` (logging in `balancer_dir`):
/// each case the page ran, and whether Uppy said what it must.
fn uppy_in_a_browser(
    node: &Path,
    port: u16,
    store: &Path,
    (balancer, balancer_dir): (u16, &Path),
) -> Vec<(String, Result<(), String>)> {
    if !Path::new(CHROMIUM).exists() {
        let missing = format!("{CHROMIUM} is missing (Debian: apt-get install chromium)");
        return vec![("Uppy".into(), Err(missing))];
    }
    let out = Command::new("node")
        .env("NODE_PATH", node.join("node_modules"))
        .env("CHROMIUM", CHROMIUM)
        .arg(root().join("xtask/interop/uppy-browser.cjs"))
        .arg(format!("http://127.0.0.1:{port}"))
        .arg(store)
        .arg(format!("http://127.0.0.1:{balancer}"))
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => return vec![("Uppy".into(), Err(format!("node: {e}")))],
    };
    let mut cases: Vec<(String, Result<(), String>)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|case| {
            let name = format!("Uppy {}", case["case"].as_str().unwrap_or("?"));
            let result = if case["ok"] == true {
                Ok(())
            } else {
                Err(format!("Uppy said {case}"))
            };
            (name, result)
        })
        .collect();
    // The page fills a file named N with bytes (i * 31 + len(N)) & 255.
    let name = "uppy-landed.bin";
    let want: Vec<u8> = (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(31) + name.len() as u32) as u8)
        .collect();
    if std::fs::read(store.join(name)).ok() != Some(want) {
        cases.push(("Uppy tus".into(), Err(format!("{name} did not land whole"))));
    }
    let bundled = ["uppy-a.bin", "uppy-b.bin", "uppy-c.bin"];
    if let Some(landed) = bundled.iter().find(|n| store.join(n).exists()) {
        cases.push(("Uppy bundle".into(), Err(format!("{landed} landed"))));
    }
    // Paused and resumed: the file lands whole, and what was sent before
    // the pause is not sent again (the resumed PATCH found the bytes the
    // paused one delivered, at once, not 503 behind its lock).
    let paused = "uppy-paused.bin";
    let want: Vec<u8> = (0..50u32 << 20)
        .map(|i| (i.wrapping_mul(31) + paused.len() as u32) as u8)
        .collect();
    if std::fs::read(store.join(paused)).ok() != Some(want) {
        cases.push((
            "Uppy pause-resume".into(),
            Err(format!("{paused} did not land whole")),
        ));
    }
    let sent: u64 = std::fs::read_to_string(balancer_dir.join("requests.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("PATCH "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    if sent > 75 << 20 {
        cases.push((
            "Uppy pause-resume".into(),
            Err(format!(
                "{} MiB of PATCHes through nginx for a 50 MiB file",
                sent >> 20
            )),
        ));
    }
    eprintln!(
        "interop: Uppy paused and resumed behind nginx: {:.1} MiB of PATCHes for 50 MiB",
        sent as f64 / (1 << 20) as f64
    );
    if !out.status.success() || cases.len() < 4 {
        let said = String::from_utf8_lossy(&out.stderr);
        cases.push((
            "Uppy".into(),
            Err(format!("the page did not run: {}", said.trim())),
        ));
    }
    cases
}

/// How many uploads our receiver on `store` has in progress.
fn partial_uploads(store: &Path) -> usize {
    std::fs::read_dir(store.join(".fileuploader-partial")).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("id-"))
            .count()
    })
}

/// Runs the matrix, or the part of it `scope` names; fails on
/// any failed case.
pub fn interop(scope: Scope) -> Result<(), String> {
    let cache = cache();
    install(&cache)?;
    let binary = crate::release_binary()?;
    let work = std::env::temp_dir().join(format!("fileuploader-interop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let mut matrix = Matrix { rows: Vec::new() };
    match scope {
        Scope::Companion => crate::s3::direct_checks(&mut matrix, &cache, &binary, &work)?,
        Scope::All | Scope::S3 => crate::s3::checks(&mut matrix, &cache, &binary, &work)?,
        Scope::Peers => {}
    }
    if matches!(scope, Scope::All | Scope::Peers) {
        peers(&mut matrix, &cache, &binary, &work)?;
    }
    let _ = std::fs::remove_dir_all(&work);
    report(&matrix)
}

/// Which checks `cargo xtask interop` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every one.
    All,
    /// Those on Garage.
    S3,
    /// Only the direct uploads to Garage (Companion routes and peers).
    Companion,
    /// Those with no Garage: tus peers, browsers, nginx before our
    /// receiver.
    Peers,
}

impl Scope {
    /// The scope its argument names.
    pub fn from_arg(arg: Option<&str>) -> Result<Self, String> {
        match arg {
            None => Ok(Scope::All),
            Some("s3") => Ok(Scope::S3),
            Some("companion") => Ok(Scope::Companion),
            Some("peers") => Ok(Scope::Peers),
            Some(other) => Err(format!(
                "no interop scope {other:?}; give s3, companion, peers or none"
            )),
        }
    }
}

/// Our client and receiver against the tus peers.
fn peers(matrix: &mut Matrix, cache: &Path, binary: &Path, work: &Path) -> Result<(), String> {
    let dir = |name: &str| -> Result<PathBuf, String> {
        let d = work.join(name);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        Ok(d)
    };
    let sources = dir("sources")?;
    let files = SIZES
        .iter()
        .map(|(name, len)| {
            Ok((
                (*name).to_owned(),
                make_file(&sources, &format!("{name}.bin"), *len)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let node = cache.join("node");
    let python = cache.join("venv/bin/python");
    let py_script = root().join("xtask/interop/py-server.py");

    {
        let store = dir("tus-server")?;
        let (_peer, port) = tus_server(cache, &store)?;
        let url = format!("http://127.0.0.1:{port}/files");
        client_to(matrix, binary, "@tus/server", &url, &store, &files);
        let large = &files[files.len() - 1].1;
        let result = resume_to_tus_server(binary, port, &store, large, &dir("journals")?);
        matrix.record("@tus/server", "our client killed, resumed, large", result);
    }
    for (peer, path) in [("tuspyserver", "/files/"), ("resumable-upload", "/files")] {
        let (port, store) = (free_port(), dir(peer)?);
        let _peer = start(
            Command::new(&python)
                .arg(&py_script)
                .args([peer, &port.to_string()])
                .arg(&store),
            port,
            peer,
        )?;
        let url = format!("http://127.0.0.1:{port}{path}");
        client_to(matrix, binary, peer, &url, &store, &files);
        if peer == "tuspyserver" {
            // Its `/files` (no slash) refuses OPTIONS with 405 and takes
            // creation: our client goes on without discovery, as
            // tus-js-client does.
            let url = format!("http://127.0.0.1:{port}/files");
            let (name, file) = &files[1];
            let result = run(
                &mut upload(binary, &url, file, "4", "1MiB"),
                "fileuploader upload",
            )
            .and_then(|()| {
                landed(&store, file)
                    .then_some(())
                    .ok_or_else(|| "no identical file landed".to_owned())
            });
            matrix.record(
                peer,
                &format!("our client, {name}, OPTIONS refused"),
                result,
            );
        }
    }
    {
        let store = dir("serve")?;
        let (_serve, port) = serve_dir(binary, &store, &[])?;
        let url = format!("http://127.0.0.1:{port}/files");
        js_client_to_us(matrix, &node, &url, &store, &files, &dir("js")?);
        let race = same_name_race(&node, binary, &url, &store, &dir("race")?);
        matrix.record(
            "fileuploader serve",
            "same-name race, 2 tus-js-client + ours",
            race,
        );
    }
    {
        let store = dir("body-limit")?;
        let (_serve, port) = serve_dir(binary, &store, &[])?;
        let (front, front_dir) = (free_port(), dir("body-limit-nginx")?);
        let _nginx = crate::garage::nginx_bounded(&front_dir, front, &[port], "1m")?;
        for (case, result) in behind_a_body_limit(binary, front, &store, &files[2].1) {
            matrix.record("nginx, 1 MiB body limit", &case, result);
        }
    }
    {
        let store = dir("browser")?;
        let (_serve, port) = serve_dir(binary, &store, &["--cors-origin", "*"])?;
        let (balancer, balancer_dir) = (free_port(), dir("browser-nginx")?);
        let _nginx = crate::garage::nginx(&balancer_dir, balancer, &[port])?;
        for (case, result) in uppy_in_a_browser(&node, port, &store, (balancer, &balancer_dir)) {
            matrix.record("Uppy in chromium", &case, result);
        }
    }
    Ok(())
}

/// Our receiver on a port of its own, landing in `store`, with `flags`.
fn serve_dir(binary: &Path, store: &Path, flags: &[&str]) -> Result<(Peer, u16), String> {
    let port = free_port();
    let served = start(
        Command::new(binary)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(store)
            .args(flags),
        port,
        "fileuploader serve",
    )?;
    Ok((served, port))
}

/// Our client through nginx on `front` with nginx's default body limit
/// (1 MiB) before our receiver landing in `store`, `file` in blocks of 2
/// MiB: the draft, tus in one stream and tus in parts (concatenation) go
/// on in smaller pieces once the limit's 413 comes, and land; the
/// segmented protocol (one request a block) fails, and its message says
/// to send smaller blocks.
fn behind_a_body_limit(
    binary: &Path,
    front: u16,
    store: &Path,
    file: &Path,
) -> Vec<(String, Result<(), String>)> {
    let send = |protocol: &str, path: &str, threads: &str| {
        Command::new(binary)
            .args(["upload", "--protocol", protocol, "--quiet"])
            .args(["--url", &format!("http://127.0.0.1:{front}{path}")])
            .args(["--threads", threads, "--block-size", "2MiB"])
            .args(["--name", &format!("{protocol}-{threads}.bin")])
            .arg(file)
            .output()
            .map_err(|e| format!("fileuploader upload: {e}"))
    };
    let want = std::fs::read(file).unwrap_or_default();
    let mut cases = Vec::new();
    for (protocol, threads, how) in [
        ("ietf", "4", "ietf"),
        ("tus", "1", "tus in one stream"),
        ("tus", "4", "tus in parts"),
    ] {
        let result = send(protocol, "/files", threads).and_then(|out| {
            let landed = std::fs::read(store.join(format!("{protocol}-{threads}.bin"))).ok();
            match (out.status.success(), landed) {
                (true, Some(l)) if l == want => Ok(()),
                (ok, _) => Err(format!(
                    "exit {ok}, no identical file landed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        });
        cases.push((format!("{how}, 2 MiB blocks, land in pieces"), result));
    }
    let result = send("segmented", "/upload", "4").and_then(|out| {
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        match (out.status.success(), store.join("segmented-4.bin").exists()) {
            (false, false) if said.contains("send smaller blocks") => Ok(()),
            (ok, landed) => Err(format!(
                "exit {ok}, landed {landed}, said {:?}",
                said.trim()
            )),
        }
    });
    cases.push((
        "segmented, 2 MiB blocks, fails saying what to do".to_owned(),
        result,
    ));
    cases
}

/// Prints the matrix; fails on any failed case.
fn report(matrix: &Matrix) -> Result<(), String> {
    let failed: Vec<_> = matrix.rows.iter().filter(|r| r.2.is_err()).collect();
    println!("\n| peer | case | outcome |\n|---|---|---|");
    for (peer, case, result) in &matrix.rows {
        let outcome = match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("FAIL: {}", e.lines().next().unwrap_or("")),
        };
        println!("| {peer} | {case} | {outcome} |");
    }
    if failed.is_empty() {
        println!("\n{} cases, all passed", matrix.rows.len());
        Ok(())
    } else {
        // Last, so a log cut to its tail still says which case failed and why.
        println!("\nfailed:");
        for (peer, case, result) in &failed {
            if let Err(why) = result {
                println!("- {peer}, {case}: {why}");
            }
        }
        Err(format!(
            "{} of {} cases failed",
            failed.len(),
            matrix.rows.len()
        ))
    }
}
