//! The object-store part of `cargo xtask interop`: `fileuploader serve
//! --store s3://…` on a real Garage cluster (three nodes, every object on
//! all three), two receivers behind nginx (round robin, no stickiness), one
//! of them killed with SIGKILL in the middle of an upload; and the store's
//! rules (`DELETE`, expiry, quota, same-name policy, refused credentials)
//! checked in the bucket itself.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::garage::{nginx, Bucketeer, Garage, REGION};
use crate::interop::{free_port, make_file, start, Matrix, Peer};

pub(crate) const BUCKET: &str = "uploads";
/// The balanced receivers' settings: uploads abandoned by the kills expire
/// within the run.
const BALANCED: &[&str] = &["--expire", "30s"];
pub(crate) const MIB: usize = 1 << 20;

/// `fileuploader serve` on the cluster's node `node`, files landing below
/// `prefix`.
pub(crate) fn serve(
    binary: &Path,
    garage: &Garage,
    node: usize,
    port: u16,
    prefix: &str,
    extra: &[&str],
) -> Result<Peer, String> {
    let mut command = Command::new(binary);
    command
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--store", &format!("s3://{BUCKET}/{prefix}")])
        .args([
            "--s3-endpoint",
            &garage.endpoints[node],
            "--s3-region",
            REGION,
        ])
        .args(extra);
    garage.credentials(&mut command);
    start(&mut command, port, "fileuploader serve --store")
}

/// `fileuploader upload` of `file` to `url`.
fn upload(
    binary: &Path,
    url: &str,
    file: &Path,
    protocol: &str,
    threads: &str,
    block: &str,
) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["upload", "--quiet", "--protocol", protocol, "--url", url])
        .args([
            "--threads",
            threads,
            "--block-size",
            block,
            "--retries",
            "40",
        ])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Whether `prefix/name` in the bucket holds exactly `file`'s bytes.
fn landed_as(bucket: &Bucketeer, prefix: &str, name: &str, file: &Path) -> Result<(), String> {
    let want = std::fs::read(file).map_err(|e| e.to_string())?;
    match bucket.get(BUCKET, &format!("{prefix}/{name}"))? {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(format!(
            "{prefix}/{name} differs: {} bytes, {} expected",
            got.len(),
            want.len()
        )),
        None => Err(format!("nothing landed as {prefix}/{name}")),
    }
}

/// Nothing partial left below `prefix`: no upload records or bytes, no
/// open multipart upload.
fn nothing_partial(bucket: &Bucketeer, prefix: &str) -> Result<(), String> {
    let mut left = bucket.keys(BUCKET, &format!("{prefix}/.fileuploader-state/u/"))?;
    left.extend(bucket.keys(BUCKET, &format!("{prefix}/.fileuploader-state/d/"))?);
    left.extend(bucket.open_multipart(BUCKET, &format!("{prefix}/"))?);
    match left.as_slice() {
        [] => Ok(()),
        [first, ..] => Err(format!("{} left behind, such as {first}", left.len())),
    }
}

fn finish(child: Child, what: &str) -> Result<(), String> {
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One answer of a plain HTTP/1.1 request: status and head. Requests to
/// the tus door (any path but the segmented `/upload`) say `Tus-Resumable`.
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    if !path.starts_with("/upload") {
        head.push_str("tus-resumable: 1.0.0\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))?;
    Ok((status, answer))
}

/// A tus upload of `total` bytes begun, with `sent` of them sent; returns
/// its path.
fn begin_tus(port: u16, name: &str, total: usize, sent: usize) -> Result<String, String> {
    use base64::Engine as _;
    let metadata = format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode(name)
    );
    let (status, answer) = request(
        port,
        "POST",
        "/files",
        &[
            ("upload-length", total.to_string()),
            ("upload-metadata", metadata),
        ],
        &[],
    )?;
    if status != 201 {
        return Err(format!("creation answered {status}: {answer}"));
    }
    let location = answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .ok_or("no Location")?;
    if sent > 0 {
        let (status, answer) = request(
            port,
            "PATCH",
            &location,
            &[
                ("upload-offset", "0".into()),
                ("content-type", "application/offset+octet-stream".into()),
            ],
            &vec![7u8; sent],
        )?;
        if status != 204 {
            return Err(format!("PATCH answered {status}: {answer}"));
        }
    }
    Ok(location)
}

/// Waits up to `within` for `check` to pass.
pub(crate) fn eventually(
    within: Duration,
    check: impl Fn() -> Result<(), String>,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() > within => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Posts `form` with `fields` changed as `change` says and a file part of
/// `bytes` to node 0; the status and the whole answer.
pub(crate) fn post_form(
    garage: &Garage,
    form: &fileuploader_store_s3::post_policy::PostForm,
    change: &[(&str, &str)],
    bytes: &[u8],
) -> Result<(u16, String), String> {
    let mut body = Vec::new();
    for (name, value) in &form.fields {
        let value = change
            .iter()
            .find(|(n, _)| n == name)
            .map_or(value.as_str(), |(_, v)| v);
        body.extend_from_slice(
            format!("--p\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    body.extend_from_slice(
        b"--p\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\n",
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(b"\r\n--p--\r\n");
    let port: u16 = garage.endpoints[0]
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("no port in the endpoint")?;
    let path = form
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| rest[at..].to_owned()))
        .ok_or("no path in the form's URL")?;
    let kind = [("content-type", "multipart/form-data; boundary=p".to_owned())];
    request(port, "POST", &path, &kind, &body)
}

/// A form signed for one key, 1 KiB, ten minutes: lands its bytes; a body
/// too large, another key, an expired form and a changed signature are
/// refused, and land nothing.
fn post_policy(garage: &Garage, bucket: &Bucketeer) -> Result<(), String> {
    use fileuploader_store_s3::post_policy::{PostPolicy, Signer};
    let signer = Signer {
        key_id: garage.key_id.clone(),
        secret: garage.secret.clone(),
        session_token: None,
        region: REGION.to_owned(),
    };
    let policy = |key: &str, valid_for: Duration| PostPolicy {
        bucket: BUCKET.to_owned(),
        key: key.to_owned(),
        max_size: 1024,
        valid_for,
        content_type: None,
        success_status: None,
    };
    let url = format!("{}/{BUCKET}", garage.endpoints[0]);
    let now = std::time::SystemTime::now();
    let form = policy("post/small.bin", Duration::from_secs(600)).form(&url, &signer, now);
    let (status, answer) = post_form(garage, &form, &[], b"posted straight to the bucket")?;
    if !(200..300).contains(&status) {
        return Err(format!("the signed form was answered {answer:?}"));
    }
    match bucket.get(BUCKET, "post/small.bin")? {
        Some(got) if got == b"posted straight to the bucket" => {}
        other => return Err(format!("the posted object reads {other:?}")),
    }
    let zeros = "0".repeat(64);
    // What is wrong, the key the form is signed for, a field changed, the
    // body, and the key that must stay empty.
    type Refused<'a> = (
        &'a str,
        &'a str,
        Option<(&'a str, &'a str)>,
        &'a [u8],
        &'a str,
    );
    let refusals: [Refused; 3] = [
        (
            "too large a body",
            "post/large.bin",
            None,
            &[7; 2048],
            "post/large.bin",
        ),
        (
            "another key",
            "post/mine.bin",
            Some(("key", "post/other.bin")),
            b"x",
            "post/other.bin",
        ),
        (
            "a changed signature",
            "post/forged.bin",
            Some(("x-amz-signature", &zeros)),
            b"x",
            "post/forged.bin",
        ),
    ];
    for (what, signed_for, change, bytes, empty) in refusals {
        let form = policy(signed_for, Duration::from_secs(600)).form(&url, &signer, now);
        let (status, _) = post_form(garage, &form, change.as_slice(), bytes)?;
        if (200..300).contains(&status) || bucket.get(BUCKET, empty)?.is_some() {
            return Err(format!("a form with {what} was let through ({status})"));
        }
    }
    let stale = policy("post/stale.bin", Duration::from_secs(1)).form(
        &url,
        &signer,
        now - Duration::from_secs(120),
    );
    let (status, _) = post_form(garage, &stale, &[], b"late")?;
    if (200..300).contains(&status) || bucket.get(BUCKET, "post/stale.bin")?.is_some() {
        return Err(format!("an expired form was let through ({status})"));
    }
    Ok(())
}

/// Whether the hook's log `events` names `landings` landings of the
/// `balanced-`/`plain-` files, each once but for at most `repeats` told
/// twice (a receiver killed between telling and recording it).
fn told_once(events: &Path, landings: usize, repeats: usize) -> Result<(), String> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let mut told: std::collections::BTreeMap<String, usize> = Default::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let event: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        *told
            .entry(event["key"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    let twice = told.values().filter(|&&n| n > 1).count();
    match (told.len(), twice) {
        (n, t) if n == landings && t <= repeats => Ok(()),
        (n, t) => Err(format!(
            "{n} landings told of ({landings} landed), {t} of them more than once"
        )),
    }
}

/// Whether the receipt kept for `name` in `receipts` verifies with the
/// receivers' key (`KEY.pub`) against `file`.
fn receipt_holds(
    binary: &Path,
    receipts: &Path,
    name: &str,
    file: &Path,
    key: &str,
) -> Result<(), String> {
    let out = Command::new(binary)
        .arg("verify")
        .arg(receipts.join(format!("{name}.receipt")))
        .arg(file)
        .args(["--key", &format!("{key}.pub")])
        .output()
        .map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "the receipt of {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Two receivers behind nginx; the upload runs through nginx, and one
/// receiver is killed with SIGKILL in the middle of it, then started
/// again for the next case.
struct Balanced<'a> {
    binary: &'a Path,
    garage: &'a Garage,
    ports: [u16; 2],
    receivers: [Option<Peer>; 2],
    /// The receivers' flags.
    flags: &'a [&'a str],
    nginx_port: u16,
    _nginx: Peer,
}

impl Balanced<'_> {
    fn kill_during(
        &mut self,
        victim: usize,
        case: &str,
        mut client: Command,
        file: &Path,
        name: &str,
    ) -> Result<(), String> {
        let started = Instant::now();
        let child = client.spawn().map_err(|e| e.to_string())?;
        // The client is rate-limited: it is well under way, not done.
        std::thread::sleep(Duration::from_millis(1500));
        if let Some(mut receiver) = self.receivers[victim].take() {
            receiver.0.kill().map_err(|e| e.to_string())?;
            let _ = receiver.0.wait();
        }
        let result = finish(child, case);
        eprintln!(
            "s3: {case}: {:.1} s with a receiver killed at 1.5 s",
            started.elapsed().as_secs_f64()
        );
        self.receivers[victim] = Some(serve(
            self.binary,
            self.garage,
            victim,
            self.ports[victim],
            "in",
            self.flags,
        )?);
        result?;
        landed_as(&self.garage.client(2), "in", name, file)
    }
}

/// The object-store checks, recorded in `matrix`.
/// Only the direct uploads' checks, on a cluster of their own.
pub(crate) fn direct_checks(
    matrix: &mut Matrix,
    cache: &Path,
    binary: &Path,
    work: &Path,
) -> Result<(), String> {
    let garage = Garage::start(&work.join("garage"), 3, &[BUCKET])?;
    let bucket = garage.client(1);
    crate::companion::checks(matrix, cache, binary, &garage, &bucket, work)
}

pub(crate) fn checks(
    matrix: &mut Matrix,
    cache: &Path,
    binary: &Path,
    work: &Path,
) -> Result<(), String> {
    let mut garage = Garage::start(&work.join("garage"), 3, &[BUCKET])?;
    let bucket = garage.client(1);
    matrix.record(
        "Garage",
        "store conformance suite (S3Store)",
        crate::store_suite::run(&garage, BUCKET),
    );
    let sources = work.join("s3-sources");
    std::fs::create_dir_all(&sources).map_err(|e| e.to_string())?;
    matrix.record(
        "Garage",
        "POST policy: a signed form lands its object, and no other key, size or time",
        post_policy(&garage, &bucket),
    );
    crate::companion::checks(matrix, cache, binary, &garage, &bucket, work)?;

    let port = free_port();
    {
        let _receiver = serve(
            binary,
            &garage,
            0,
            port,
            "rules",
            &["--expire", "3s", "--quota", "10MiB"],
        )?;
        let result = (|| {
            let location = begin_tus(port, "deleted.bin", 3 * MIB, MIB)?;
            let id = location.rsplit('/').next().unwrap_or_default().to_owned();
            let held = bucket.keys(BUCKET, &format!("rules/.fileuploader-state/d/{id}/"))?;
            if held.is_empty() || bucket.open_multipart(BUCKET, "rules/")?.is_empty() {
                return Err("the partial upload holds no bytes or no multipart upload".into());
            }
            let (status, answer) = request(port, "DELETE", &location, &[], &[])?;
            if status != 204 {
                return Err(format!("DELETE answered {status}: {answer}"));
            }
            // Through the receiver's node within a moment (a three-node
            // cluster's listing can trail a delete by a few hundred ms even
            // there: seen once in five runs), then through any node. A
            // record that stays, or comes back, fails both.
            eventually(Duration::from_secs(3), || {
                nothing_partial(&garage.client(0), "rules")
            })?;
            eventually(Duration::from_secs(10), || {
                nothing_partial(&bucket, "rules")
            })
        })();
        matrix.record(
            "Garage",
            "DELETE removes bytes, records, multipart upload",
            result,
        );

        let result = (|| {
            begin_tus(port, "abandoned.bin", 2 * MIB, MIB)?;
            bucket.leave_multipart_open(BUCKET, "rules/left-open.bin")?;
            // A direct upload a browser began and left.
            let create = br#"{"filename": "left-direct.bin", "type": ""}"#;
            let json = [("content-type", "application/json".to_owned())];
            let (status, answer) = request(port, "POST", "/s3/multipart", &json, create)?;
            if status != 200 {
                return Err(format!("a direct upload's creation answered {answer}"));
            }
            eventually(Duration::from_secs(20), || {
                nothing_partial(&bucket, "rules")
            })
        })();
        matrix.record(
            "Garage",
            "expiry removes stale uploads (direct ones too) and open multipart uploads",
            result,
        );

        let result = (|| {
            let first = begin_tus(port, "quota-1.bin", 8 * MIB, 0)?;
            let refused = match begin_tus(port, "quota-2.bin", 8 * MIB, 0) {
                Err(e) if e.contains("507") => Ok(()),
                Err(e) => Err(format!("refused, but not with 507: {e}")),
                Ok(_) => Err("a second 8 MiB upload was let in under a 10 MiB quota".into()),
            };
            request(port, "DELETE", &first, &[], &[])?;
            refused
        })();
        matrix.record("Garage", "quota: 507 past 10 MiB held", result);

        let result = (|| {
            let mut body = b"--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"whole-quota.bin\"\r\n\r\n".to_vec();
            body.extend(std::iter::repeat_n(5u8, 12 * MIB));
            body.extend_from_slice(b"\r\n--q--\r\n");
            let form = [("content-type", "multipart/form-data; boundary=q".to_owned())];
            let (status, answer) = request(port, "POST", "/upload", &form, &body)?;
            if status != 507 {
                return Err(format!(
                    "a 12 MiB whole file under a 10 MiB quota answered {status}: {answer}"
                ));
            }
            match bucket.keys(BUCKET, "rules/whole-quota.bin")?.is_empty() {
                true => Ok(()),
                false => Err("the whole file landed past the quota".into()),
            }
        })();
        matrix.record(
            "Garage",
            "quota: a whole file is charged as it arrives",
            result,
        );
    }

    for (policy, second_name, first_kept) in [
        ("refuse", None, true),
        ("rename", Some("same (1).bin"), true),
        ("overwrite", Some("same.bin"), false),
    ] {
        let prefix = format!("policy-{policy}");
        let port = free_port();
        let _receiver = serve(
            binary,
            &garage,
            0,
            port,
            &prefix,
            &["--on-conflict", policy],
        )?;
        let result = (|| {
            let url = format!("http://127.0.0.1:{port}/");
            let (a, b) = (sources.join("a"), sources.join("b"));
            std::fs::create_dir_all(&a).map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&b).map_err(|e| e.to_string())?;
            let first = make_file(&a, "same.bin", 3 * MIB)?;
            let second = b.join("same.bin");
            std::fs::write(&second, vec![1u8; 2 * MIB + 5]).map_err(|e| e.to_string())?;
            let run = |file: &PathBuf| {
                let child = upload(binary, &url, file, "segmented", "4", "1MiB")
                    .spawn()
                    .map_err(|e| e.to_string())?;
                finish(child, "upload")
            };
            run(&first)?;
            let again = run(&second);
            match (second_name, again) {
                (None, Err(e)) if e.contains("409") => {}
                (None, other) => {
                    return Err(format!("the second upload was not refused: {other:?}"))
                }
                (Some(name), Ok(())) => landed_as(&bucket, &prefix, name, &second)?,
                (Some(_), Err(e)) => return Err(e),
            }
            if first_kept {
                landed_as(&bucket, &prefix, "same.bin", &first)?;
            }
            nothing_partial(&bucket, &prefix)
        })();
        matrix.record(
            "Garage",
            &format!("same name, --on-conflict {policy}"),
            result,
        );
    }

    {
        let ports = [free_port(), free_port()];
        // Both receivers tell one hook of each landing, through the
        // bucket's outbox, and sign receipts with one key.
        let events = work.join("s3-events.jsonl");
        let _ = std::fs::remove_file(&events);
        // One write per event (awk's buffer), so two receivers' lines
        // never interleave.
        let hook = format!("awk 1 >> '{}'", events.display());
        let key = work.join("s3-receipts.key");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("key.pub"));
        let made = Command::new(binary).arg("receipt-key").arg(&key).output();
        if !made.as_ref().is_ok_and(|o| o.status.success()) {
            return Err(format!("fileuploader receipt-key: {made:?}"));
        }
        let key = key.display().to_string();
        let flags: Vec<&str> = BALANCED
            .iter()
            .copied()
            .chain(["--after-landing", &hook, "--receipt-key", &key])
            .collect();
        let receipts = work.join("s3-receipts");
        let receivers = [
            Some(serve(binary, &garage, 0, ports[0], "in", &flags)?),
            Some(serve(binary, &garage, 1, ports[1], "in", &flags)?),
        ];
        let nginx_port = free_port();
        let nginx = nginx(&work.join("nginx"), nginx_port, &ports)?;
        let mut balanced = Balanced {
            binary,
            garage: &garage,
            ports,
            receivers,
            flags: &flags,
            nginx_port,
            _nginx: nginx,
        };
        let url = format!("http://127.0.0.1:{}/files", balanced.nginx_port);
        let cases: [(&str, &str, usize, &str, &str, &str); 3] = [
            (
                "segmented, 100 MiB in 1 MiB blocks, 8 in flight",
                "segmented",
                100 * MIB,
                "1MiB",
                "8",
                "40MiB",
            ),
            (
                "tus concatenation, 100 MiB in 1 MiB blocks, 4 in flight",
                "tus",
                100 * MIB,
                "1MiB",
                "4",
                "40MiB",
            ),
            (
                "segmented, 20 MiB in 10 KiB blocks, 8 in flight",
                "segmented",
                20 * MIB,
                "10KiB",
                "8",
                "4MiB",
            ),
        ];
        for (n, (case, protocol, len, block, threads, rate)) in cases.into_iter().enumerate() {
            let name = format!("balanced-{n}.bin");
            let file = make_file(&sources, &name, len)?;
            let mut client = upload(binary, &url, &file, protocol, threads, block);
            client
                .args(["--limit-rate", rate])
                .arg("--receipt-dir")
                .arg(&receipts);
            let result = balanced.kill_during(n % 2, case, client, &file, &name);
            matrix.record("2 receivers, nginx, Garage x3", case, result);
        }
        // Every protocol, blocks from 1 byte to 64 MiB, any block through
        // either receiver.
        let plain: [(&str, &str, usize, &str, &str); 4] = [
            (
                "IETF draft, 30 MiB in 1 MiB blocks",
                "ietf",
                30 * MIB,
                "1MiB",
                "4",
            ),
            (
                "tus, one stream, 30 MiB in 4 MiB blocks",
                "tus",
                30 * MIB,
                "4MiB",
                "1",
            ),
            (
                "segmented, 130 MiB in 64 MiB blocks",
                "segmented",
                130 * MIB,
                "64MiB",
                "2",
            ),
            (
                "segmented, 700 bytes in 1-byte blocks",
                "segmented",
                700,
                "1B",
                "8",
            ),
        ];
        for (n, (case, protocol, len, block, threads)) in plain.into_iter().enumerate() {
            let name = format!("plain-{n}.bin");
            let result = make_file(&sources, &name, len).and_then(|file| {
                let child = upload(binary, &url, &file, protocol, threads, block)
                    .arg("--receipt-dir")
                    .arg(&receipts)
                    .spawn()
                    .map_err(|e| e.to_string())?;
                finish(child, case)?;
                landed_as(&bucket, "in", &name, &file)?;
                receipt_holds(binary, &receipts, &name, &file, &key)
            });
            matrix.record("2 receivers, nginx, Garage x3", case, result);
        }
        let result = eventually(Duration::from_secs(60), || {
            told_once(&events, cases.len() + plain.len(), 3)
        });
        matrix.record(
            "2 receivers, nginx, Garage x3",
            "every landing's event told once by the two (kills aside), receipts signed",
            result,
        );
        // What the killed receivers' requests in flight left (tus parts
        // sent again, bytes never acknowledged) goes with expiry.
        let result = eventually(Duration::from_secs(90), || nothing_partial(&bucket, "in"));
        matrix.record(
            "2 receivers, nginx, Garage x3",
            "nothing partial left after expiry",
            result,
        );
    }

    let result = (|| {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--store", &format!("s3://{BUCKET}/x")])
            .args(["--s3-endpoint", &garage.endpoints[0], "--s3-region", REGION]);
        garage.credentials(&mut command);
        command.env("AWS_SECRET_ACCESS_KEY", "0".repeat(64));
        let out = command.output().map_err(|e| e.to_string())?;
        let said = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && said.contains("cannot use s3://uploads/x") {
            Ok(())
        } else {
            Err(format!("{}: {said}", out.status))
        }
    })();
    matrix.record("Garage", "refused credentials stop start-up", result);

    let port = free_port();
    let _receiver = serve(binary, &garage, 0, port, "failing", &[])?;
    let result = (|| {
        let name = "outage.bin";
        let file = make_file(&sources, name, 30 * MIB)?;
        let mut client = upload(
            binary,
            &format!("http://127.0.0.1:{port}/"),
            &file,
            "segmented",
            "4",
            "1MiB",
        );
        let child = client
            .args(["--limit-rate", "10MiB"])
            .spawn()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(1000));
        garage.kill();
        let asked = request(port, "HEAD", "/files/anything", &[], &[]);
        std::thread::sleep(Duration::from_millis(2000));
        garage.restart()?;
        let finished = finish(child, "upload through the outage");
        let (status, head) = asked?;
        if status != 503 || !head.to_ascii_lowercase().contains("retry-after: 1") {
            return Err(format!("with the store down, a HEAD got {status}: {head}"));
        }
        finished?;
        landed_as(&bucket, "failing", name, &file)
    })();
    matrix.record(
        "Garage",
        "store down 2 s mid-upload: 503 + Retry-After, then lands",
        result,
    );
    Ok(())
}
