//! The `fileuploader` binary end to end, against the receiver on 127.0.0.1.

use std::path::Path;
use std::process::{Command, Output};

/// The binary, with no proxy variables from the machine in its way.
fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fileuploader"));
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command
}

fn fileuploader(args: &[&str]) -> Output {
    command().args(args).output().expect("the binary runs")
}

/// `upload --resume` of `file` to `url` in `block`-sized blocks, `threads`
/// at a time, keeping its journal in `journals`.
fn resuming(url: &str, file: &Path, block: &str, threads: &str, journals: &Path) -> Command {
    let mut command = command();
    command
        .args(["upload", "--url", url, "--block-size", block])
        .args(["--threads", threads, "--resume"])
        .arg(file)
        .env("FILEUPLOADER_JOURNAL_DIR", journals);
    command
}

/// `upload` to `url` over `protocol` in `block`-sized blocks: the
/// arguments before the rest of a run's.
fn upload_over<'a>(url: &'a str, protocol: &'a str, block: &'a str) -> [&'a str; 7] {
    [
        "upload",
        "--url",
        url,
        "--protocol",
        protocol,
        "--block-size",
        block,
    ]
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each line of a run's standard output, as JSON.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A receiver on its own runtime thread; returns its upload URL.
fn receiver(dir: &Path) -> String {
    receiver_with(dir, fileuploader_server::OnConflict::default())
}

/// A receiver with a same-name policy; returns its upload URL.
fn receiver_with(dir: &Path, policy: fileuploader_server::OnConflict) -> String {
    serving(
        fileuploader_server::Receiver::new(dir)
            .unwrap()
            .on_conflict(policy),
    )
}

/// `receiver` on 127.0.0.1, on a thread of its own; returns its upload URL.
fn serving(receiver: fileuploader_server::Receiver) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            receiver.serve(listener).await
        })
    });
    url
}

#[test]
fn upload_lands_files_with_names_and_prints_json() {
    let landing = tempfile::tempdir().unwrap();
    let url = receiver(landing.path());
    let src = tempfile::tempdir().unwrap();
    let a: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.path().join("a.bin"), &a).unwrap();
    std::fs::write(src.path().join("b.txt"), b"hello").unwrap();
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--block-size",
        "64KiB",
        "--threads",
        "3",
        "--field",
        "note=x=y",
        "--header",
        "X-Trace: 1",
        "--json",
        src.path().join("a.bin").to_str().unwrap(),
        src.path().join("b.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(landing.path().join("a.bin")).unwrap(), a);
    assert_eq!(
        std::fs::read(landing.path().join("b.txt")).unwrap(),
        b"hello"
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "two files and the summary");
    let of = |name: &str| {
        lines
            .iter()
            .find(|l| l["file"].as_str().is_some_and(|f| f.ends_with(name)))
            .unwrap_or_else(|| panic!("no line for {name}"))
    };
    assert_eq!(
        (
            of("a.bin")["bytes"].as_u64(),
            of("a.bin")["blocks"].as_u64()
        ),
        (Some(300_000), Some(5))
    );
    assert_eq!(of("b.txt")["blocks"].as_u64(), Some(1));
    assert_eq!(lines[2]["summary"]["landed"].as_u64(), Some(2));

    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--name",
        "renamed.bin",
        "--quiet",
        src.path().join("b.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "--quiet prints nothing"
    );
    assert_eq!(
        std::fs::read(landing.path().join("renamed.bin")).unwrap(),
        b"hello"
    );
}

#[test]
fn threads_auto_lands_the_file_and_says_where_it_settled() {
    let landing = tempfile::tempdir().unwrap();
    let url = receiver(landing.path());
    let src = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let path = src.path().join("paced.bin");
    std::fs::write(&path, &data).unwrap();
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--block-size",
        "16KiB",
        "--threads",
        "auto",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(landing.path().join("paced.bin")).unwrap(),
        data
    );
    let limit = json_lines(&out)[0]["thread_limit"].as_u64().unwrap();
    assert!((1..=16).contains(&limit), "{limit}");
}

#[test]
fn plain_output_is_one_line_per_file() {
    let landing = tempfile::tempdir().unwrap();
    let url = receiver(landing.path());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![1u8; 1000]).unwrap();
    let out = fileuploader(&["upload", "--url", &url, file.path().to_str().unwrap()]);
    assert!(out.status.success());
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("uploaded ") && text.contains("1 blocks"),
        "{text}"
    );
}

#[test]
fn bad_input_gets_a_code_and_a_message_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    let d = dir.path().to_str().unwrap();
    let cases: [(&[&str], i32, &str); 10] = [
        (
            &[
                "upload",
                "--url",
                "http://127.0.0.1:9/u",
                "--threads",
                "0",
                f,
            ],
            2,
            "--threads",
        ),
        (
            &[
                "upload",
                "--url",
                "http://127.0.0.1:9/u",
                "--threads",
                "17",
                f,
            ],
            2,
            "give 1 to 16, or auto",
        ),
        (
            &[
                "upload",
                "--url",
                "http://127.0.0.1:9/u",
                "--block-size",
                "0",
                f,
            ],
            2,
            "--block-size",
        ),
        (
            &[
                "upload",
                "--url",
                "http://127.0.0.1:9/u",
                "--header",
                "NoColon",
                f,
            ],
            2,
            "--header",
        ),
        (
            &[
                "upload",
                "--url",
                "http://127.0.0.1:9/u",
                "--name",
                "x",
                f,
                f,
            ],
            2,
            "--name",
        ),
        (
            &["upload", "--url", "ftp://127.0.0.1/u", f],
            1,
            "error -2: ",
        ),
        (
            &[
                "upload",
                "--url",
                "http://127.0.0.1:9/u",
                "--header",
                "X-A: b\r\nc",
                f,
            ],
            1,
            "error -10: ",
        ),
        (
            &["upload", "--url", "http://127.0.0.1:9/u", "/no/such/file"],
            1,
            "error 27: ",
        ),
        (
            &["upload", "--url", "http://127.0.0.1:9/u", d],
            1,
            "is a folder: add -r",
        ),
        (
            &["upload", "--url", "http://127.0.0.1:9/u", f],
            1,
            "error 4: ",
        ),
    ];
    for (args, code, words) in cases {
        let out = fileuploader(args);
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(words), "{words:?} not in {text:?}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

#[test]
fn demo_checks_the_landed_file() {
    let out = fileuploader(&["demo", "--size", "3MiB", "--block-size", "256KiB"]);
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("12 of 256.0 KiB"), "{text}");
    assert!(
        text.contains("ok: the landed file is identical to the source"),
        "{text}"
    );
    let sums: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|w| w.len() == 64)
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0], sums[1]);
}

#[test]
fn a_killed_upload_resumes_sending_only_the_rest() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(
        fileuploader_mock_server::MockUploadServer::builder()
            .delay(std::time::Duration::from_millis(40))
            .start(),
    );
    let journals = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big.bin");
    let data: Vec<u8> = (0..64 * 16384u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let url = server.url();
    let spawn = || {
        resuming(&url, &path, "16KiB", "2", journals.path())
            .arg("--quiet")
            .spawn()
            .unwrap()
    };

    let mut first = spawn();
    while server.recording().len() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let before = server.recording().len();
    assert!(before < 64, "killed mid-upload");
    assert_eq!(
        std::fs::read_dir(journals.path()).unwrap().count(),
        1,
        "a journal was kept"
    );

    let second = spawn().wait_with_output().unwrap();
    assert!(second.status.success());
    let resent = server.recording().len() - before;
    // At most the blocks in flight when it was killed are sent twice.
    assert!(
        resent <= 64 - before + 2,
        "{resent} sent again after {before}"
    );
    assert!(resent < 64, "the second run did not start over");
    assert_eq!(server.recording().reassembled("big.bin").unwrap(), data);
    assert_eq!(
        std::fs::read_dir(journals.path()).unwrap().count(),
        0,
        "journal removed on success"
    );
}

#[test]
fn serve_receives_what_upload_sends() {
    let landing = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = serve(landing.path(), &addr);
    let file = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
    std::fs::write(file.path(), &data).unwrap();
    let url = format!("http://{addr}/upload");
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--block-size",
        "32KiB",
        "--name",
        "served.bin",
        file.path().to_str().unwrap(),
    ]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(landing.path().join("served.bin")).unwrap(),
        data
    );
}

#[test]
fn blocks_carry_their_checksum_unless_told_not_to() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(fileuploader_mock_server::MockUploadServer::start());
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("sum.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let url = server.url();
    let upload = |extra: &[&str]| {
        let mut args = vec!["upload", "--url", &url, "--block-size", "100000", "--quiet"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        let out = fileuploader(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // Each upload's checksum fields, in block order, once its bytes are
    // checked against the file.
    let crcs = |from: usize| -> Vec<Option<String>> {
        let mut arrivals = server.recording().arrivals().split_off(from);
        arrivals.sort_by_key(|a| a.range.map(|r| r.first));
        let sent: Vec<u8> = arrivals.iter().flat_map(|a| a.data.to_vec()).collect();
        assert!(sent == data, "the blocks hold the file");
        arrivals.into_iter().map(|a| a.crc32c).collect()
    };

    upload(&[]);
    let expected: Vec<_> = data
        .chunks(100_000)
        .map(|c| Some(format!("{:08x}", crc32c::crc32c(c))))
        .collect();
    assert_eq!(crcs(0), expected);

    upload(&["--no-checksum"]);
    assert_eq!(crcs(2), [None, None]);
}

/// A `fileuploader serve` process landing in `dir` on `addr`, once it
/// listens.
fn serve(dir: &Path, addr: &str) -> std::process::Child {
    serve_with(dir, addr, &[])
}

/// `child` once something listens on `addr`.
fn listening(child: std::process::Child, addr: &str) -> std::process::Child {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "serve did not listen on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

/// The same, with more flags.
fn serve_with(dir: &Path, addr: &str, extra: &[&std::ffi::OsStr]) -> std::process::Child {
    let child = command()
        .args(["serve", "--dir", dir.to_str().unwrap(), "--addr", addr])
        .args(extra)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    listening(child, addr)
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Acknowledged blocks the journals in `dir` list.
fn journal_acks(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .map(|text| text.lines().filter(|l| l.starts_with("ack ")).count())
        .sum()
}

#[test]
fn a_receiver_that_lost_the_upload_gets_all_of_it_again_and_confirms_it() {
    let addr = free_addr();
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let journals = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("big30.bin");
    let data: Vec<u8> = (0..30 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let url = format!("http://{addr}/upload");
    let client = || resuming(&url, &path, "64KiB", "1", journals.path());

    let mut receiver = serve(first_dir.path(), &addr);
    let mut first = client()
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while journal_acks(journals.path()) < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let acked = journal_acks(journals.path());
    assert!(
        acked < 480,
        "interrupted mid-upload ({acked} of 480 blocks)"
    );
    receiver.kill().unwrap();
    receiver.wait().unwrap();

    // A new receiver on an empty disk at the same address.
    let mut receiver = serve(second_dir.path(), &addr);
    let second = client().output().unwrap();
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    let text = stderr(&second);
    assert!(second.status.success(), "{text}");
    assert_eq!(
        std::fs::read(second_dir.path().join("big30.bin")).unwrap(),
        data,
        "the file landed whole on the new receiver"
    );
    assert!(
        text.contains("480 blocks, ") && !text.contains("resumed"),
        "nothing counts as resumed: {text}"
    );
    assert!(text.contains("landing confirmed"), "{text}");
    assert!(
        text.contains("the receiver holds 0 of the blocks"),
        "the overridden journal is noted: {text}"
    );
}

#[test]
fn a_landing_the_receiver_refuses_fails_the_upload() {
    use fileuploader_server::OnConflict;
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("taken.bin");
    std::fs::write(&path, vec![5u8; 200_000]).unwrap();
    // Refused up front by the same-name policy; or, told to overwrite,
    // refused when the rename onto the directory fails.
    for (policy, words) in [
        (
            OnConflict::Refuse,
            "a file named taken.bin is in the receiver's directory",
        ),
        (OnConflict::Overwrite, "cannot land the file"),
    ] {
        let landing = tempfile::tempdir().unwrap();
        std::fs::create_dir(landing.path().join("taken.bin")).unwrap();
        let url = receiver_with(landing.path(), policy);
        for block_size in ["64KiB", "1MiB"] {
            let out = fileuploader(&[
                "upload",
                "--url",
                &url,
                "--block-size",
                block_size,
                path.to_str().unwrap(),
            ]);
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{block_size}: {text}");
            assert!(
                text.starts_with("error 26: ") && text.contains(words),
                "{policy:?} {block_size}: {text}"
            );
            assert!(landing.path().join("taken.bin").is_dir(), "nothing landed");
        }
    }
}

#[test]
fn each_file_is_reported_under_the_name_it_landed_as() {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("scan \"1\".pdf");
    std::fs::write(&path, vec![9u8; 70_000]).unwrap();
    let landing = tempfile::tempdir().unwrap();
    std::fs::write(landing.path().join("scan \"1\".pdf"), b"there first").unwrap();
    let url = receiver_with(landing.path(), fileuploader_server::OnConflict::Rename);
    let mut landed = Vec::new();
    for protocol in ["segmented", "tus", "ietf"] {
        let args = upload_over(&url, protocol, "32KiB");
        let plain = fileuploader(&[&args[..], &[path.to_str().unwrap()]].concat());
        assert!(plain.status.success(), "{}", stderr(&plain));
        let json = fileuploader(&[&args[..], &["--json", path.to_str().unwrap()]].concat());
        let line = &json_lines(&json)[0];
        let said = line["landed_as"].as_str().unwrap().to_owned();
        assert_eq!(line["sent_as"], "scan \"1\".pdf", "{protocol}");
        assert!(
            stderr(&plain).contains(" as \"scan \\\"1\\\" ("),
            "{protocol}: {}",
            stderr(&plain)
        );
        // tus and the draft have an upload URL, and both outputs give it.
        match protocol {
            "segmented" => assert!(line["url"].is_null(), "{line}"),
            _ => {
                let at = line["url"].as_str().unwrap();
                let base = url.trim_end_matches("/upload");
                assert!(at.starts_with(base), "{protocol}: {at}");
                assert!(
                    stderr(&plain).contains(&format!(" at {base}/")),
                    "{protocol}: {}",
                    stderr(&plain)
                );
            }
        }
        landed.push(said);
    }
    assert_eq!(
        landed,
        [
            "scan \"1\" (2).pdf",
            "scan \"1\" (4).pdf",
            "scan \"1\" (6).pdf"
        ]
    );
    for name in &landed {
        assert_eq!(
            std::fs::read(landing.path().join(name)).unwrap().len(),
            70_000
        );
    }
}

#[test]
fn a_receiver_that_cannot_answer_gives_unconfirmed_landings() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(fileuploader_mock_server::MockUploadServer::start());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![3u8; 100_000]).unwrap();
    let url = server.url();
    let upload = |extra: &[&str]| {
        let mut args = vec!["upload", "--url", &url, "--block-size", "40000"];
        args.extend_from_slice(extra);
        args.push(file.path().to_str().unwrap());
        fileuploader(&args)
    };

    let plain = upload(&[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(
        stderr(&plain).contains("landing unconfirmed: the receiver cannot say"),
        "{}",
        stderr(&plain)
    );
    let json = upload(&["--json"]);
    assert_eq!(json_lines(&json)[0]["landing"], "unconfirmed");

    let strict = upload(&["--require-confirmation"]);
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        stderr(&strict).starts_with("error 36: the receiver acknowledged every block"),
        "{}",
        stderr(&strict)
    );
}

#[test]
fn a_path_that_is_not_utf8_is_read_and_lands_under_a_lossy_name() {
    use std::os::unix::ffi::OsStrExt;
    let landing = tempfile::tempdir().unwrap();
    let url = receiver(landing.path());
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
    std::fs::write(&path, b"latin-1 name").unwrap();
    let out = command()
        .args(["upload", "--url", &url, "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(landing.path().join("caf\u{fffd}.txt")).unwrap(),
        b"latin-1 name",
        "the name is sent lossily; the bytes are read from the real path"
    );
}

/// Asks the receiver at `addr` what it holds of upload `id`.
fn status_of(addr: &str, id: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /upload?upload_id={id} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// The upload id and acknowledged blocks the journals in `dir` list.
fn journaled(dir: &Path) -> Option<(String, Vec<u64>)> {
    let entry = std::fs::read_dir(dir).ok()?.next()?.ok()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    // The first line's eighth field is the session's handle, as JSON.
    let handle = text.lines().next()?.split('\t').nth(7)?;
    let id = serde_json::from_str::<serde_json::Value>(handle).ok()?["id"]
        .as_str()?
        .to_owned();
    let acked = text
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n')?.strip_prefix("ack "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    Some((id, acked))
}

#[test]
fn acknowledged_blocks_survive_kill_9_of_the_receiver_at_20_moments() {
    const BLOCK: u64 = 16 * 1024;
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("k9.bin");
    let data: Vec<u8> = (0..16 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let mut seed = 0x2545_f491u64;
    for moment in 0..20 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let delay = 20 + (seed >> 33) % 460;
        let (dir, journals) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let addr = free_addr();
        let url = format!("http://{addr}/upload");
        let client = || {
            resuming(&url, &path, "16KiB", "8", journals.path())
                .arg("--quiet")
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let mut receiver = serve(dir.path(), &addr);
        let mut first = client();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        receiver.kill().unwrap(); // SIGKILL
        receiver.wait().unwrap();
        // Every line of the journal follows a 200 from the killed receiver.
        let acked = journaled(journals.path());

        let mut receiver = serve(dir.path(), &addr);
        if let Some((id, blocks)) = &acked {
            let status = status_of(&addr, id);
            if status["state"] != "landed" {
                let held: Vec<(u64, u64)> =
                    serde_json::from_value(status["received"].clone()).unwrap_or_default();
                for &b in blocks {
                    let (s, e) = (b * BLOCK, ((b + 1) * BLOCK).min(data.len() as u64));
                    assert!(
                        held.iter().any(|&(hs, he)| hs <= s && e <= he),
                        "moment {moment} ({delay} ms): acknowledged block {b} lost after kill -9; held {held:?}"
                    );
                }
            }
        }
        let mut landed = first.wait().unwrap().success();
        for _ in 0..2 {
            if landed {
                break;
            }
            landed = client().wait().unwrap().success();
        }
        receiver.kill().unwrap();
        receiver.wait().unwrap();
        assert!(
            landed,
            "moment {moment} ({delay} ms): the re-run did not land"
        );
        assert!(
            std::fs::read(dir.path().join("k9.bin")).unwrap() == data,
            "moment {moment} ({delay} ms): the landed file differs"
        );
    }
}

/// Sends one raw HTTP/1.1 request and returns the status line's code.
fn raw_request(addr: &str, head: &str, body: &[u8]) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .ok()?;
    stream.write_all(head.as_bytes()).ok()?;
    // The receiver may answer and close before the whole body went out.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let line = String::from_utf8_lossy(&answer);
    line.split(' ').nth(1)?.parse().ok()
}

/// A one-block request of a multi-block upload: it begins a partial upload.
fn partial_block(addr: &str, id: &str) -> Option<u16> {
    let body = "--B\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"p.bin\"\r\n\r\nx\r\n--B--\r\n";
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary=B\r\ncontent-range: bytes 0-0/2\r\nx-upload-id: {id}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    raw_request(addr, &head, body.as_bytes())
}

/// A child process killed when dropped, so a failed test leaves none behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `fileuploader serve` process under a descriptor limit.
fn serve_limited(dir: &Path, addr: &str, fds: u32, extra: &str) -> std::process::Child {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {fds} && exec \"$0\" serve --dir \"$1\" --addr \"$2\" {extra}"
        ))
        .arg(env!("CARGO_BIN_EXE_fileuploader"))
        .arg(dir)
        .arg(addr)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    listening(child, addr)
}

#[test]
fn a_receiver_out_of_descriptors_keeps_serving_and_closes_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut receiver = Reaped(serve_limited(dir.path(), &addr, 256, "--header-timeout 2s"));
    for n in 0..1500 {
        assert_eq!(
            partial_block(&addr, &format!("p{n}")),
            Some(200),
            "partial upload {n}"
        );
    }
    // Up to 1 000 idle connections, as many as the kernel's accept queue
    // takes on top of what the receiver holds (connects beyond it would
    // wait for SYN retries).
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let idle: Vec<std::net::TcpStream> = (0..1000)
        .map_while(|_| {
            std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(3)).ok()
        })
        .collect();
    assert!(
        idle.len() > 256,
        "{} idle connections: more than the receiver's descriptors",
        idle.len()
    );

    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("meanwhile.bin");
    let data = vec![9u8; 3 * 1024 * 1024];
    std::fs::write(&path, &data).unwrap();
    let url = format!("http://{addr}/upload");
    // Until the idle connections time out (2 s) the receiver turns new
    // ones away: one block at a time, with retries enough to outlast that
    // within the job's retry budget.
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--block-size",
        "256KiB",
        "--threads",
        "1",
        "--retries",
        "10",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dir.path().join("meanwhile.bin")).unwrap(),
        data
    );
    assert!(
        receiver.0.try_wait().unwrap().is_none(),
        "the receiver is still up"
    );

    // Every idle connection the receiver took was closed by its timeout.
    use std::io::Read;
    let mut first = idle.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    assert!(
        matches!(first.read(&mut [0u8; 16]), Ok(0) | Err(_)),
        "the first idle connection was closed"
    );
    drop(receiver);
}

/// The receiver's peak resident memory, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn hostile_bodies_leave_the_receivers_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut receiver = serve(dir.path(), &addr);
    let form_head = |len: u64| {
        format!(
            "POST /upload HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary=B\r\ncontent-length: {len}\r\n\r\n"
        )
    };
    // 1 GiB with no boundary line: refused after the preamble limit.
    let junk = vec![b'a'; 1 << 30];
    assert_eq!(raw_request(&addr, &form_head(1 << 30), &junk), Some(400));
    drop(junk);
    // A 10 MiB text field.
    let mut flood = b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n".to_vec();
    flood.resize(flood.len() + (10 << 20), b'x');
    flood.extend_from_slice(b"\r\n--B--\r\n");
    assert_eq!(
        raw_request(&addr, &form_head(flood.len() as u64), &flood),
        Some(400)
    );
    // 200 uploads at once.
    let threads: Vec<_> = (0..200)
        .map(|n| {
            let addr = addr.clone();
            std::thread::spawn(move || partial_block(&addr, &format!("c{n}")))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Some(200));
    }
    let peak = peak_rss_kib(receiver.id());
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[test]
fn a_receiver_with_tokens_and_signed_urls_lets_in_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("key");
    std::fs::write(&key, "signing-secret\n").unwrap();
    let addr = free_addr();
    let flags = ["--token", "t0ken", "--signing-key-file"].map(std::ffi::OsStr::new);
    let mut receiver = serve_with(
        dir.path(),
        &addr,
        &[flags[0], flags[1], flags[2], key.as_os_str()],
    );
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("in.bin");
    std::fs::write(&path, vec![4u8; 100_000]).unwrap();
    let url = format!("http://{addr}/upload");
    let upload = |url: &str, extra: &[&str]| {
        let mut args = vec!["upload", "--url", url, "--block-size", "40000"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        fileuploader(&args)
    };
    let refused = upload(&url, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));

    let with_token = upload(&url, &["--token", "t0ken", "--name", "by-token.bin"]);
    assert!(with_token.status.success(), "{}", stderr(&with_token));

    let signed = fileuploader(&[
        "sign",
        "--url",
        &url,
        "--key-file",
        key.to_str().unwrap(),
        "--name",
        "signed.bin",
        "--valid-for",
        "5m",
    ]);
    assert!(signed.status.success(), "{}", stderr(&signed));
    let signed_url = String::from_utf8(signed.stdout).unwrap().trim().to_owned();
    let with_url = upload(&signed_url, &["--name", "signed.bin"]);
    assert!(with_url.status.success(), "{}", stderr(&with_url));
    let wrong_name = upload(&signed_url, &["--name", "other.bin"]);
    assert!(
        stderr(&wrong_name).contains("403"),
        "{}",
        stderr(&wrong_name)
    );
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    let mut landed: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    landed.sort();
    assert_eq!(landed, ["by-token.bin", "signed.bin"]);
}

#[test]
fn serve_speaks_https_and_finishes_a_request_in_flight_on_sigterm() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_pem, key_pem) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let addr = free_addr();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let tls = [
        std::ffi::OsStr::new("--cert"),
        cert_pem.as_os_str(),
        std::ffi::OsStr::new("--key"),
        key_pem.as_os_str(),
    ];
    let receiver = Reaped(serve_with(dir.path(), &addr, &tls));
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("tls.bin");
    std::fs::write(&path, vec![6u8; 300_000]).unwrap();
    let url = format!("https://localhost:{port}/upload");
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--cacert",
        cert_pem.to_str().unwrap(),
        "--block-size",
        "64KiB",
        "--http2",
        "--json",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["http_version"], "2", "HTTP/2 by ALPN");
    assert_eq!(
        std::fs::read(dir.path().join("tls.bin")).unwrap().len(),
        300_000
    );
    drop(receiver);

    // Over plain HTTP: a request half sent when SIGTERM comes still lands,
    // and the receiver then exits 0.
    let plain = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut receiver = serve(plain.path(), &addr);
    let body = "--B\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"late.bin\"\r\n\r\nhello\r\n--B--\r\n";
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /upload HTTP/1.1\r\nhost: {addr}\r\ncontent-type: multipart/form-data; boundary=B\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body.as_bytes()[..20]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let term = Command::new("kill")
        .args(["-TERM", &receiver.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    stream.write_all(&body.as_bytes()[20..]).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = receiver.wait().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(
        std::fs::read(plain.path().join("late.bin")).unwrap(),
        b"hello"
    );
}

#[test]
fn an_upload_begun_on_one_serve_process_resumes_on_another_sharing_its_directory() {
    const BLOCK: u64 = 16 * 1024;
    let (src, dir, journals) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let path = src.path().join("shared.bin");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let (a, b) = (free_addr(), free_addr());
    let (first, second) = (Reaped(serve(dir.path(), &a)), Reaped(serve(dir.path(), &b)));
    let mut client = resuming(
        &format!("http://{a}/upload"),
        &path,
        "16KiB",
        "8",
        journals.path(),
    )
    .arg("--quiet")
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    while journaled(journals.path()).is_none_or(|(_, acked)| acked.len() < 50) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The first receiver dies with blocks in flight; so does the client.
    // What it acknowledged, the second receiver knows.
    drop(first);
    client.kill().unwrap();
    client.wait().unwrap();

    let (id, acked) = journaled(journals.path()).unwrap();
    let status = status_of(&b, &id);
    assert_eq!(status["state"], "partial", "{status}");
    let held: Vec<(u64, u64)> = serde_json::from_value(status["received"].clone()).unwrap();
    for block in acked {
        let (s, e) = (block * BLOCK, (block + 1) * BLOCK);
        assert!(
            held.iter().any(|&(hs, he)| hs <= s && e <= he),
            "block {block} acknowledged by the first receiver is unknown to the second: {held:?}"
        );
    }
    // A new process at the first address, beside the second, takes it up.
    let _third = Reaped(serve(dir.path(), &a));
    let out = resuming(
        &format!("http://{a}/upload"),
        &path,
        "16KiB",
        "8",
        journals.path(),
    )
    .output()
    .unwrap();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("landing confirmed") && text.contains("resumed"),
        "{text}"
    );
    assert!(std::fs::read(dir.path().join("shared.bin")).unwrap() == data);
    assert_eq!(status_of(&b, &id)["state"], "landed", "the second knows");
    drop(second);
}

/// Writes `files` under `root`, each path to its bytes.
fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

#[test]
fn a_folder_of_1000_files_lands_with_its_structure_in_one_run() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files: Vec<(String, Vec<u8>)> = (0..1000u32)
        .map(|i| {
            let path = format!("d{}/s{}/f{i}.bin", i % 10, (i / 10) % 10);
            let len = (i * 37 % 9000) as usize;
            (path, (0..len).map(|j| (j as u32 ^ i) as u8).collect())
        })
        .collect();
    let tree = src.path().join("tree");
    write_tree(&tree, &files);
    let url = receiver(dir.path());
    let out = command()
        .args([
            "upload",
            "--url",
            &url,
            "--json",
            "-r",
            "--block-size",
            "4KiB",
        ])
        .args(["--files", "8", "--threads", "8"])
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (path, bytes) in &files {
        let landed = std::fs::read(dir.path().join(path));
        assert!(
            landed.as_ref().is_ok_and(|l| l == bytes),
            "{path} did not land intact"
        );
    }
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1001, "one object per file and a summary");
    let summary = &lines[1000]["summary"];
    assert_eq!(
        (summary["files"].as_u64(), summary["landed"].as_u64()),
        (Some(1000), Some(1000))
    );
}

#[test]
fn a_file_that_cannot_be_read_fails_alone_and_the_summary_says_which() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tree = src.path().join("t");
    write_tree(
        &tree,
        &[
            ("ok.txt".into(), b"fine".to_vec()),
            (".hidden.txt".into(), b"h".to_vec()),
            ("sub/also.txt".into(), b"also".to_vec()),
        ],
    );
    std::os::unix::fs::symlink(src.path().join("gone"), tree.join("dangling")).unwrap();
    std::os::unix::fs::symlink(tree.join("ok.txt"), tree.join("link.txt")).unwrap();
    let missing = src.path().join("missing.bin");
    let url = receiver(dir.path());
    let run = |extra: &[&str]| {
        command()
            .args(["upload", "--url", &url, "--json", "-r"])
            .args(extra)
            .arg(&tree)
            .arg(&missing)
            .output()
            .unwrap()
    };
    let out = run(&["--follow-symlinks"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let failed: Vec<String> = serde_json::from_value(summary["summary"]["failed"].clone()).unwrap();
    assert_eq!(failed.len(), 2, "{text}");
    assert!(failed.iter().any(|f| f.ends_with("dangling")), "{failed:?}");
    assert!(
        failed.iter().any(|f| f.ends_with("missing.bin")),
        "{failed:?}"
    );
    assert!(
        text.contains("\"code\":27"),
        "the missing file is code 27: {text}"
    );
    for (name, bytes) in [
        ("ok.txt", "fine"),
        ("sub/also.txt", "also"),
        ("link.txt", "fine"),
    ] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            bytes
        );
    }
    assert!(
        !dir.path().join(".hidden.txt").exists(),
        "hidden files stay without --hidden"
    );
}

/// A server that takes each request, then answers one byte every `gap`.
fn trickling_server(gap: std::time::Duration) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                stream
                    .set_read_timeout(Some(std::time::Duration::from_millis(200)))
                    .unwrap();
                let mut buf = [0u8; 65536];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                    std::thread::sleep(gap);
                    if stream.write_all(&[*byte]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn a_server_that_accepts_and_never_answers_is_said_at_its_first_idle_timeout() {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("silent.bin");
    std::fs::write(&path, b"to nobody").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/upload", listener.local_addr().unwrap());
    // Takes connections and holds them, reading nothing, saying nothing.
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let upload = |extra: &[&str]| {
        command()
            .args(["upload", "--url", &url, "--idle-timeout", "300ms"])
            .args(["--retries", "1"])
            .args(extra)
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = upload(&[]);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let said = lines
        .iter()
        .position(|l| l.contains("again") && l.contains("idle timeout"))
        .unwrap_or_else(|| panic!("no line at the first idle timeout: {text}"));
    let failed = lines
        .iter()
        .position(|l| l.contains("error 11"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(said < failed, "{text}");
    let quiet = upload(&["--quiet"]);
    assert!(!stderr(&quiet).contains("again"), "{}", stderr(&quiet));
}

#[test]
fn a_trickling_server_is_given_up_on_at_the_idle_timeout_or_the_run_timeout() {
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("t.bin");
    std::fs::write(&path, b"trickle").unwrap();
    let idle = trickling_server(std::time::Duration::from_millis(700));
    let out = command()
        .args([
            "upload",
            "--url",
            &idle,
            "--no-retry",
            "--idle-timeout",
            "300ms",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error 11") && text.contains("idle timeout"),
        "{text}"
    );

    let slow = trickling_server(std::time::Duration::from_millis(100));
    let started = std::time::Instant::now();
    let out = command()
        .args([
            "upload",
            "--url",
            &slow,
            "--idle-timeout",
            "5s",
            "--timeout",
            "1s",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("error 11") && text.contains("--timeout"),
        "{text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn limit_rate_holds_an_upload_to_its_rate() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = src.path().join("rate.bin");
    std::fs::write(&path, vec![9u8; 1 << 20]).unwrap();
    let url = receiver(dir.path());
    let started = std::time::Instant::now();
    let out = command()
        .args([
            "upload",
            "--url",
            &url,
            "--limit-rate",
            "512KiB",
            "--block-size",
            "64KiB",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // 1 MiB at 512 KiB/s: two seconds, less the 50 ms burst.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn ctrl_c_stops_with_130_keeps_the_journal_and_the_next_run_goes_on() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(
        fileuploader_mock_server::MockUploadServer::builder()
            .delay(std::time::Duration::from_millis(40))
            .start(),
    );
    let (src, journals) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = src.path().join("int.bin");
    let data: Vec<u8> = (0..64 * 16384u32).map(|i| (i % 233) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let url = server.url();
    let first = resuming(&url, &path, "16KiB", "2", journals.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while server.recording().len() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(journals.path()).unwrap().count(),
        1,
        "journal kept"
    );
    let before = server.recording().len();
    let second = resuming(&url, &path, "16KiB", "2", journals.path())
        .output()
        .unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        server.recording().len() - before < 64,
        "the second run went on"
    );
    assert_eq!(server.recording().reassembled("int.bin").unwrap(), data);
}

#[test]
fn verbose_logs_requests_and_answers_and_completions_and_man_print() {
    let (src, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let path = src.path().join("v.bin");
    std::fs::write(&path, b"verbose").unwrap();
    let url = receiver(dir.path());
    let out = command()
        .args(["upload", "-v", "--url", &url])
        .arg(&path)
        .output()
        .unwrap();
    let text = stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("> POST http://") && text.contains("< 200 OK"),
        "{text}"
    );
    let bash = fileuploader(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&bash.stdout).contains("--limit-rate"));
    let man = fileuploader(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.starts_with(".ie"));
    for option in ["block\\-size", "speed\\-limit", "min\\-rate", "key\\-file"] {
        assert!(page.contains(option), "the manual lists {option}");
    }
}

#[test]
fn serve_refuses_to_start_open_on_an_empty_or_blank_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (empty, comments, blank) = (
        path("empty", ""),
        path("comments", "# tokens go here\n\n"),
        path("blank", "  \n"),
    );
    let tokens = path("tokens", "# the app\nt0ken\n");
    let landing = dir.path().join("in");
    let landing = landing.to_str().unwrap();
    let addr = free_addr();
    let start = |flags: &[&str]| {
        command()
            .args(["serve", "--dir", landing, "--addr", &addr])
            .args(flags)
            .output()
            .unwrap()
    };
    for (flags, says) in [
        (vec!["--token-file", &empty], "holds no token"),
        (vec!["--token-file", &comments], "holds no token"),
        (
            vec!["--signing-key-file", &blank],
            "signing key is empty or blank",
        ),
        (vec!["--token", ""], "bearer token is empty or blank"),
        (vec!["--token", "  "], "bearer token is empty or blank"),
        (
            vec!["--cors-origin", "http://app.example/"],
            "give http://app.example",
        ),
    ] {
        let out = start(&flags);
        let text = stderr(&out);
        assert!(!out.status.success(), "{flags:?} started");
        assert!(
            text.contains("error -10") && text.contains(says),
            "{flags:?}: {text}"
        );
    }
    // A comment line is not a token; the one token is.
    let mut server = serve_with(
        Path::new(landing),
        &addr,
        &["--token-file".as_ref(), tokens.as_ref()],
    );
    let url = format!("http://{addr}/upload");
    let file = path("f.bin", "data");
    let open = fileuploader(&[
        "upload",
        "--url",
        &url,
        "-H",
        "Authorization: Bearer # the app",
        &file,
    ]);
    assert!(!open.status.success(), "a comment let a request in");
    let ok = fileuploader(&[
        "upload",
        "--url",
        &url,
        "-H",
        "Authorization: Bearer t0ken",
        &file,
    ]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn serve_fits_its_limits_to_the_files_it_may_open_and_never_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let log = dir.path().join("serve.log");
    let landing = dir.path().join("in");
    // The limits need 1 024 + 2 × 512 + 128 descriptors; allow 256.
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 256 && exec "$@" 2>"$LOG""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_fileuploader"))
        .args(["serve", "--dir", landing.to_str().unwrap(), "--addr", &addr])
        .env("LOG", &log)
        .spawn()
        .unwrap();
    let mut server = listening(child, &addr);
    // Logged lines reach the file by their own writer, maybe after the
    // port opens: wait for the warning within a bound.
    let started = std::time::Instant::now();
    let warned = loop {
        let warned = std::fs::read_to_string(&log).unwrap();
        if warned.contains("raise `ulimit -n`")
            || started.elapsed() > std::time::Duration::from_secs(20)
        {
            break warned;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(warned.contains("raise `ulimit -n`"), "{warned}");
    // Far more connections than descriptors, each holding its request back.
    let hogs: Vec<_> = (0..400)
        .filter_map(|_| {
            let mut tcp = std::net::TcpStream::connect(&addr).ok()?;
            std::io::Write::write_all(&mut tcp, b"POST /upload HTTP/1.1\r\n").ok()?;
            Some(tcp)
        })
        .collect();
    assert!(hogs.len() > 200);
    let status = status_query(&addr);
    assert!(
        status == "503" || status == "404",
        "answered, not failed: {status}"
    );
    drop(hogs);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let file = dir.path().join("after.bin");
    std::fs::write(&file, b"still serving").unwrap();
    let url = format!("http://{addr}/upload");
    let out = fileuploader(&["upload", "--url", &url, file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    server.kill().unwrap();
    server.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// The status code of a status query to the receiver on `addr`.
fn status_query(addr: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut tcp,
        b"GET /upload?upload_id=nobody-0000001 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut tcp, &mut answer);
    answer.split(' ').nth(1).unwrap_or("none").to_owned()
}

#[test]
fn a_trickling_receiver_fails_the_low_speed_limit_the_flags_set() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = std::io::Read::read(&mut tcp, &mut request);
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n";
                let _ = std::io::Write::write_all(&mut tcp, head);
                while std::io::Write::write_all(&mut tcp, b"x").is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            });
        }
    });
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("t.bin");
    std::fs::write(&path, b"trickle").unwrap();
    let url = format!("http://{addr}/upload");
    let started = std::time::Instant::now();
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--no-retry",
        "--speed-limit",
        "1000",
        "--speed-time",
        "1s",
        path.to_str().unwrap(),
    ]);
    let text = stderr(&out);
    assert!(!out.status.success());
    assert!(
        text.contains("error 11") && text.contains("too slow"),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A folder of `n` files of `len` bytes each.
fn folder_of(n: usize, len: usize) -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    for i in 0..n {
        std::fs::write(src.path().join(format!("f{i:03}.bin")), vec![i as u8; len]).unwrap();
    }
    src
}

#[test]
fn ctrl_c_and_the_run_timeout_stop_queued_files_too() {
    let src = folder_of(120, 16 * 1024);
    for (stop, code) in [("ctrl-c", Some(130)), ("timeout", Some(1))] {
        let dir = tempfile::tempdir().unwrap();
        let url = receiver(dir.path());
        // One file at a time, 64 KiB/s: the whole folder would take 30 s.
        let mut cmd = command();
        cmd.args(["upload", "--url", &url, "-r", "--files", "1"])
            .args(["--limit-rate", "64KiB", "--speed-limit", "0"])
            .arg(src.path())
            .stderr(std::process::Stdio::piped());
        if stop == "timeout" {
            cmd.args(["--timeout", "1s"]);
        }
        let started = std::time::Instant::now();
        let child = cmd.spawn().unwrap();
        if stop == "ctrl-c" {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        let out = child.wait_with_output().unwrap();
        let took = started.elapsed();
        assert_eq!(out.status.code(), code, "{stop}: {}", stderr(&out));
        assert!(
            took < std::time::Duration::from_secs(4),
            "{stop}: exited after {took:?}"
        );
        assert!(
            stderr(&out).contains("not started"),
            "{stop}: {}",
            stderr(&out)
        );
        let landed = std::fs::read_dir(dir.path()).unwrap().count();
        // Give anything still being sent a moment to show up: at most the
        // one file in flight, whose bytes may all have arrived just before
        // the stop (the receiver lands it); nothing queued starts.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let after = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(
            after <= landed + 1,
            "{stop}: {landed} entries at the stop, {after} after"
        );
        assert!(after < 20, "{stop}: {after} entries landed");
    }
}

/// The receiver's URL for `protocol`: `/upload` for the segmented
/// convention, `/files` (the creation URL) for tus and the draft.
fn for_protocol(url: &str, protocol: &str) -> String {
    match protocol {
        "segmented" => url.to_owned(),
        _ => url.replace("/upload", "/files"),
    }
}

/// Files named `f*.bin` that landed in `dir`.
fn landed_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('f'))
        .count()
}

#[test]
fn resuming_an_interrupted_folder_counts_what_landed_and_sends_the_rest() {
    let src = folder_of(40, 16 * 1024);
    for protocol in ["segmented", "tus", "ietf"] {
        let (dir, journals) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let url = receiver(dir.path());
        let url = for_protocol(&url, protocol);
        let run = |rate: &str| {
            let mut cmd = command();
            cmd.args(["upload", "--url", &url, "--protocol", protocol, "-r"])
                .args(["--files", "2", "--block-size", "4KiB", "--resume", "--json"])
                .args(["--limit-rate", rate, "--speed-limit", "0"])
                .arg(src.path())
                .env("FILEUPLOADER_JOURNAL_DIR", journals.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd
        };
        // 40 files at 64 KiB/s would take 10 s: stopped once a few landed.
        let child = run("64KiB").spawn().unwrap();
        while landed_files(dir.path()) < 4 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let first = child.wait_with_output().unwrap();
        assert_eq!(
            first.status.code(),
            Some(130),
            "{protocol}: {}",
            stderr(&first)
        );
        let landed_first = landed_files(dir.path());
        assert!(
            std::fs::read_dir(journals.path()).unwrap().count() >= landed_first,
            "{protocol}: the journals of landed files stay until the run is done"
        );

        let second = run("1GiB").output().unwrap();
        assert!(second.status.success(), "{protocol}: {}", stderr(&second));
        let lines = json_lines(&second);
        let files: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["file"].is_string()).collect();
        assert_eq!(files.len(), 40, "{protocol}: every file reported once");
        let whole = files
            .iter()
            .filter(|l| l["resumed_blocks"] == 4 && l["blocks"] == 4)
            .count();
        assert!(
            whole >= landed_first,
            "{protocol}: {whole} files counted as held, {landed_first} had landed"
        );
        for i in 0..40 {
            let name = format!("f{i:03}.bin");
            assert_eq!(
                std::fs::read(dir.path().join(&name)).unwrap(),
                vec![i as u8; 16 * 1024],
                "{protocol}: {name}"
            );
        }
        assert_eq!(
            std::fs::read_dir(journals.path()).unwrap().count(),
            0,
            "{protocol}: journals removed once every file landed"
        );
    }
}

#[test]
fn limit_rate_holds_for_every_protocol_and_landed_files_get_one_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let src = tempfile::tempdir().unwrap();
    let big = src.path().join("rated.bin");
    std::fs::write(&big, vec![7u8; 2 << 20]).unwrap();
    for protocol in ["segmented", "tus", "ietf"] {
        let dir = tempfile::tempdir().unwrap();
        let url = receiver(dir.path());
        let url = for_protocol(&url, protocol);
        let started = std::time::Instant::now();
        let out = fileuploader(&[
            "upload",
            "--url",
            &url,
            "--protocol",
            protocol,
            "--limit-rate",
            "1MiB",
            "--block-size",
            "512KiB",
            big.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{protocol}: {}", stderr(&out));
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(1500),
            "{protocol}: 2 MiB at 1 MiB/s took {took:?}"
        );
    }
    // One request or several blocks: the same mode.
    let dir = tempfile::tempdir().unwrap();
    let url = receiver(dir.path());
    let small = src.path().join("small.bin");
    std::fs::write(&small, b"one request").unwrap();
    for file in [&small, &big] {
        let out = fileuploader(&[
            "upload",
            "--url",
            &url,
            "--block-size",
            "256KiB",
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("small.bin"), mode("rated.bin"));
    assert_ne!(mode("small.bin"), 0o600);
}

#[test]
fn a_wrong_token_is_told_as_401_not_as_a_network_fault() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = serve_with(dir.path(), &addr, &["--token".as_ref(), "right".as_ref()]);
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("refused.bin");
    std::fs::write(&path, vec![3u8; 8 << 20]).unwrap();
    let url = format!("http://{addr}/upload");
    for (protocol, url) in [
        ("segmented", url.clone()),
        ("tus", url.replace("/upload", "/files")),
    ] {
        for attempt in 0..6 {
            let out = fileuploader(&[
                "upload",
                "--url",
                &url,
                "--protocol",
                protocol,
                "--token",
                "wrong",
                "--block-size",
                "8MiB",
                path.to_str().unwrap(),
            ]);
            let text = stderr(&out);
            assert!(!out.status.success());
            assert!(text.contains("401"), "{protocol} attempt {attempt}: {text}");
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn nothing_to_upload_and_a_block_size_without_its_unit_are_said_not_silent() {
    let dir = tempfile::tempdir().unwrap();
    let url = receiver(dir.path());
    let empty = tempfile::tempdir().unwrap();
    let out = fileuploader(&[
        "upload",
        "--url",
        &url,
        "-r",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("error -4: nothing to upload"),
        "{}",
        stderr(&out)
    );

    let src = folder_of(2, 10);
    std::fs::write(src.path().join(".secret"), b"hidden").unwrap();
    std::os::unix::fs::symlink(src.path().join("f000.bin"), src.path().join("link.bin")).unwrap();
    let none = fileuploader(&[
        "upload",
        "--url",
        &url,
        "-r",
        "--include",
        "*.pdf",
        src.path().to_str().unwrap(),
    ]);
    let text = stderr(&none);
    assert!(!none.status.success(), "{text}");
    assert!(
        text.contains("nothing to upload")
            && text.contains("2 files that --include/--exclude leave out"),
        "{text}"
    );
    let some = fileuploader(&["upload", "--url", &url, "-r", src.path().to_str().unwrap()]);
    let text = stderr(&some);
    assert!(some.status.success(), "{text}");
    assert!(
        text.contains(
            "note: left out 1 hidden files or folders (--hidden takes them), 1 symbolic links"
        ),
        "{text}"
    );

    let tiny = fileuploader(&[
        "upload",
        "--url",
        &url,
        "--block-size",
        "8",
        src.path().to_str().unwrap(),
    ]);
    assert_eq!(tiny.status.code(), Some(2));
    assert!(
        stderr(&tiny).contains("did you mean 8KiB or 8MiB"),
        "{}",
        stderr(&tiny)
    );
}

#[test]
fn serve_logs_a_line_per_landed_file_and_listens_on_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr().replace("127.0.0.1", "localhost");
    let log = dir.path().join("serve.log");
    let child = command()
        .args([
            "serve",
            "--dir",
            dir.path().join("in").to_str().unwrap(),
            "--addr",
            &addr,
        ])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut server = listening(child, &addr);
    let file = dir.path().join("logged.bin");
    std::fs::write(&file, vec![1u8; 3000]).unwrap();
    let url = format!("http://{addr}/upload");
    let runs = [
        ("segmented", "1KiB", "segmented multipart"),
        ("segmented", "1MiB", "segmented multipart"),
        ("tus", "1KiB", "tus 1.0"),
        ("ietf", "1KiB", "IETF draft"),
    ];
    for (protocol, block, _) in runs {
        let out = fileuploader(&[
            "upload",
            "--url",
            &url,
            "--protocol",
            protocol,
            "--block-size",
            block,
            "--name",
            &format!("logged-{protocol}-{block}.bin"),
            file.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    for (protocol, block, over) in runs {
        let line = text
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "landed \"logged-{protocol}-{block}.bin\": 3000 bytes"
                ))
            })
            .unwrap_or_else(|| panic!("{protocol} {block}: {text}"));
        assert!(line.contains(&format!(" over {over}")), "{line}");
        assert!(line.contains("sent by anyone (open access)"), "{line}");
    }
}

#[test]
fn scheme_mix_ups_and_a_ca_certificate_served_as_the_servers_own_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("mixed.bin");
    std::fs::write(&path, b"mixed").unwrap();
    let plain = receiver(dir.path());
    let upload = |url: &str, extra: &[&str]| {
        let mut args = vec!["upload", "--url", url, "--no-retry"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        stderr(&fileuploader(&args))
    };
    let said = upload(&plain.replace("http://", "https://"), &[]);
    assert!(said.contains("try http:// in the URL"), "{said}");

    // What `openssl req -x509` makes: a CA certificate, served as the
    // server's own.
    let pki = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    let addr = free_addr();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let tls = [
        std::ffi::OsStr::new("--cert"),
        cert_pem.as_os_str(),
        std::ffi::OsStr::new("--key"),
        key_pem.as_os_str(),
    ];
    let landing = tempfile::tempdir().unwrap();
    let _receiver = Reaped(serve_with(landing.path(), &addr, &tls));
    let said = upload(
        &format!("https://localhost:{port}/upload"),
        &["--cacert", cert_pem.to_str().unwrap()],
    );
    assert!(
        said.contains("presents a CA certificate as its own"),
        "{said}"
    );
    let said = upload(&format!("http://localhost:{port}/upload"), &[]);
    assert!(said.contains("try https://"), "{said}");
}

#[test]
fn on_a_terminal_the_runs_bar_knows_its_total_before_the_first_file_starts() {
    let dir = tempfile::tempdir().unwrap();
    let url = receiver(dir.path());
    // 8 files of 256 KiB, one at a time at 1 MiB/s: 2 MiB in all.
    let src = folder_of(8, 256 * 1024);
    let typescript = dir.path().join("typescript");
    let line = format!(
        "{} upload --url {url} -r --files 1 --limit-rate 1MiB {}",
        env!("CARGO_BIN_EXE_fileuploader"),
        src.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &line])
        .arg(&typescript)
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let shown = std::fs::read_to_string(&typescript).unwrap();
    let first_of_run = shown
        .find("/8 files")
        .map(|at| &shown[at..(at + 200).min(shown.len())])
        .unwrap_or_default();
    assert!(
        first_of_run.contains("/2.00 MiB") || first_of_run.contains("/2 MiB"),
        "the run's first bar: {first_of_run:?}"
    );
    assert!(shown.contains("8 of 8 files landed"), "{shown}");
}

#[test]
fn the_receivers_final_answer_reaches_json_and_output_in_every_protocol() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("answer.bin");
    std::fs::write(&file, vec![7u8; 10_000]).unwrap();
    for protocol in ["segmented", "tus", "ietf"] {
        let dir = tempfile::tempdir().unwrap();
        let url = for_protocol(&receiver(dir.path()), protocol);
        let out_file = src.path().join(format!("{protocol}.answer"));
        let out = command()
            .args(["upload", "--url", &url, "--protocol", protocol])
            .args(["--block-size", "4KiB", "--json", "-o"])
            .arg(&out_file)
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{protocol}: {}", stderr(&out));
        let line = &json_lines(&out)[0];
        let status = line["status"].as_u64().expect("a status");
        assert!((200..300).contains(&status), "{protocol}: {line}");
        assert_eq!(line["landed_as"], "answer.bin", "{protocol}: {line}");
        let body = line["body"].as_str().expect("a text body");
        assert_eq!(
            std::fs::read_to_string(&out_file).unwrap(),
            body,
            "{protocol}: -o writes the body --json shows"
        );
        if protocol == "segmented" {
            let statement: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(
                (statement["state"].as_str(), statement["name"].as_str()),
                (Some("landed"), Some("answer.bin")),
                "the landing statement is the final answer: {body}"
            );
        }
    }
    let two = command()
        .args(["upload", "--url", "http://127.0.0.1:9/upload", "-o", "x"])
        .arg(&file)
        .arg(&file)
        .output()
        .unwrap();
    assert!(!two.status.success());
    assert!(
        stderr(&two).contains("-o/--output takes the answer to one file, but there are 2"),
        "{}",
        stderr(&two)
    );
}

#[test]
fn a_failed_files_json_carries_the_answer_it_failed_on() {
    use fileuploader_mock_server::{Action, Attempt, Fault, MockUploadServer, Target};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(
        MockUploadServer::builder()
            .fault(Fault::new(
                Target::RangeStart(0),
                Attempt::Always,
                Action::Status(403),
            ))
            .start(),
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), vec![1u8; 1000]).unwrap();
    let answer = tempfile::NamedTempFile::new().unwrap();
    let out = fileuploader(&[
        "upload",
        "--url",
        &server.url(),
        "--json",
        "-o",
        answer.path().to_str().unwrap(),
        file.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let line = &json_lines(&out)[0];
    assert_eq!(line["error"]["code"], 26, "{line}");
    assert_eq!(line["status"], 403, "{line}");
    assert_eq!(
        std::fs::read_to_string(answer.path()).unwrap(),
        line["body"].as_str().unwrap(),
        "-o keeps the answer a failure came of, as curl does"
    );
}

/// An application's hook endpoint on 127.0.0.1: records each event it
/// takes (its idempotency key and JSON), answering 503 while `down`.
struct HookEndpoint {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HookEndpoint {
    fn start() -> HookEndpoint {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/landed", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kept, is_down) = (seen.clone(), down.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let (mut key, mut len) = (String::new(), 0usize);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if let Some(v) = lower.strip_prefix("idempotency-key:") {
                        key = v.trim().to_owned();
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let status = if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                    "503 Service Unavailable"
                } else {
                    let event = serde_json::from_slice(&body).unwrap_or_default();
                    kept.lock().unwrap().push((key, event));
                    "200 OK"
                };
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        HookEndpoint { url, seen, down }
    }

    /// The landed names the events told of, each once, and how many
    /// events came in all.
    fn names(&self) -> (std::collections::BTreeSet<String>, usize) {
        let seen = self.seen.lock().unwrap();
        let names = seen
            .iter()
            .filter(|(key, event)| event["key"] == key.as_str())
            .filter_map(|(_, event)| event["name"].as_str().map(str::to_owned))
            .collect();
        (names, seen.len())
    }
}

#[test]
fn every_landing_reaches_the_hook_across_kill_9_and_a_hook_that_was_down() {
    const FILES: usize = 200;
    let src = folder_of(FILES, 16 * 1024);
    let (dir, journals) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let addr = free_addr();
    let hook = HookEndpoint::start();
    hook.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let url = format!("http://{addr}/upload");
    let serve = || {
        let flag = [std::ffi::OsStr::new("--after-landing"), hook.url.as_ref()];
        serve_with(dir.path(), &addr, &flag)
    };
    let upload = || {
        command()
            .args(["upload", "--url", &url, "-r", "--files", "4", "--resume"])
            .args(["--block-size", "8KiB", "--limit-rate", "1MiB", "--quiet"])
            .arg(src.path())
            .env("FILEUPLOADER_JOURNAL_DIR", journals.path())
            .spawn()
            .unwrap()
    };
    let landed = || landed_files(dir.path());
    // Three times: kill -9 the receiver once a seeded number more files
    // landed; the hook is down for the first two, and takes events (some
    // of them twice, from a receiver killed before it recorded that) from
    // then on.
    let mut seed = 0x9e37_79b9_u64;
    let mut receiver = serve();
    for round in 0..3 {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let target = (round * FILES / 3) + 5 + (seed >> 33) as usize % (FILES / 4);
        if round == 2 {
            hook.down.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        let mut client = upload();
        let started = std::time::Instant::now();
        while landed() < target && started.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        receiver.kill().unwrap();
        receiver.wait().unwrap();
        client.kill().unwrap();
        client.wait().unwrap();
        receiver = serve();
    }
    let finished = upload().wait().unwrap();
    assert!(finished.success(), "the last run lands the rest");
    assert_eq!(landed(), FILES);
    let started = std::time::Instant::now();
    let all: std::collections::BTreeSet<String> =
        (0..FILES).map(|i| format!("f{i:03}.bin")).collect();
    while hook.names().0 != all {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the hook heard of {} of {FILES} landings",
            hook.names().0.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    let (names, events) = hook.names();
    assert_eq!(names, all, "every landing, once by its key");
    assert!(events >= FILES, "{events} events");
}

#[test]
fn a_command_hook_is_told_and_a_store_without_events_refuses_hooks() {
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = out.path().join("events.jsonl");
    let addr = free_addr();
    let hook = format!("cat >> {}; echo >> {}", log.display(), log.display());
    let flag = [std::ffi::OsStr::new("--after-landing"), hook.as_ref()];
    let mut receiver = serve_with(dir.path(), &addr, &flag);
    let file = out.path().join("told.txt");
    std::fs::write(&file, b"tell the application").unwrap();
    let sent = fileuploader(&[
        "upload",
        "--url",
        &format!("http://{addr}/upload"),
        file.to_str().unwrap(),
    ]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    let started = std::time::Instant::now();
    let event = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    assert_eq!(
        (
            event["type"].as_str(),
            event["name"].as_str(),
            event["length"].as_u64()
        ),
        (Some("landed"), Some("told.txt"), Some(20))
    );
    let no_ca = fileuploader(&[
        "serve",
        "--dir",
        dir.path().to_str().unwrap(),
        "--after-landing",
        "https://app/landed",
        "--hook-cacert",
        "/nonexistent/ca.pem",
    ]);
    assert!(!no_ca.status.success());
    assert!(
        stderr(&no_ca).contains("error -10: --hook-cacert: /nonexistent/ca.pem"),
        "{}",
        stderr(&no_ca)
    );
}

/// The before-creation hook of these tests: refuses programs, lands
/// `scan-X.pdf` as `claims/X.pdf` tagged with its claim, names an unsafe
/// name for `bad.txt`, and lets anything else in as it is.
const ADMISSION_HOOK: &str = r#"in=$(cat)
claim=$(printf '%s' "$in" | sed -n 's/.*"name":"scan-\([a-z0-9]*\)\.pdf".*/\1/p')
case "$in" in
  *'"name":"virus.exe"'*) echo '{"refuse":{"status":415,"message":"programs are not taken here"}}' ;;
  *'"name":"bad.txt"'*) echo '{"name":"../escape.txt"}' ;;
  *) if [ -n "$claim" ]; then echo "{\"name\":\"claims/$claim.pdf\",\"metadata\":{\"claim\":\"$claim\"}}"; fi ;;
esac"#;

#[test]
fn a_before_creation_hook_refuses_renames_and_tags_uploads_in_every_protocol() {
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let script = out.path().join("admit.sh");
    std::fs::write(&script, ADMISSION_HOOK).unwrap();
    let log = out.path().join("events.jsonl");
    let (admit, tell) = (
        format!("sh {}", script.display()),
        format!("cat >> {}; echo >> {}", log.display(), log.display()),
    );
    let addr = free_addr();
    let flags = ["--before-creation", &admit, "--after-landing", &tell].map(std::ffi::OsStr::new);
    let _receiver = Reaped(serve_with(dir.path(), &addr, &flags));
    let url = format!("http://{addr}/upload");
    let send = |name: &str, protocol: &str| {
        let file = out.path().join(name);
        std::fs::write(
            &file,
            format!("the bytes of {name} over {protocol}").repeat(100),
        )
        .unwrap();
        let args = upload_over(&url, protocol, "1KiB");
        fileuploader(&[&args[..], &["--no-retry", "--json", file.to_str().unwrap()]].concat())
    };
    for protocol in ["segmented", "tus", "ietf"] {
        let refused = send("virus.exe", protocol);
        assert!(!refused.status.success(), "{protocol}");
        assert!(
            stderr(&refused).contains("programs are not taken here")
                || String::from_utf8_lossy(&refused.stdout).contains("programs are not taken here"),
            "{protocol}: {}",
            stderr(&refused)
        );
        let claim = format!("scan-{}.pdf", &protocol[..3]);
        let landed = send(&claim, protocol);
        assert!(landed.status.success(), "{protocol}: {}", stderr(&landed));
        let line = &json_lines(&landed)[0];
        let settled = format!("claims/{}.pdf", &protocol[..3]);
        assert_eq!(line["landed_as"].as_str(), Some(settled.as_str()), "{line}");
        assert_eq!(
            std::fs::read(dir.path().join(&settled)).unwrap(),
            std::fs::read(out.path().join(&claim)).unwrap()
        );
        let unsafe_name = send("bad.txt", protocol);
        assert!(!unsafe_name.status.success(), "{protocol}");
        let said = format!(
            "{}{}",
            stderr(&unsafe_name),
            String::from_utf8_lossy(&unsafe_name.stdout)
        );
        assert!(said.contains("answer it cannot use"), "{protocol}: {said}");
    }
    assert!(!dir.path().join("virus.exe").exists() && !out.path().join("escape.txt").exists());
    // A whole file in one request is asked about too.
    let body = "--B\r\nContent-Disposition: form-data; name=\"RemoteFile\"; filename=\"virus.exe\"\r\n\r\nMZ\r\n--B--\r\n";
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: multipart/form-data; boundary=B\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    assert_eq!(raw_request(&addr, &head, body.as_bytes()), Some(415));
    // Each landing's event carries the metadata the hook attached.
    let started = std::time::Instant::now();
    let events = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= 3 {
            break events;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{events:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut claims: Vec<&str> = events
        .iter()
        .map(|e| e["metadata"]["claim"].as_str().unwrap())
        .collect();
    claims.sort_unstable();
    assert_eq!(claims, ["iet", "seg", "tus"]);
}

#[test]
fn a_before_creation_hook_that_cannot_be_asked_refuses_uploads() {
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (addr, down) = (free_addr(), free_addr());
    let hook = format!("http://{down}/admit");
    let flags = ["--before-creation", &hook].map(std::ffi::OsStr::new);
    let _receiver = Reaped(serve_with(dir.path(), &addr, &flags));
    let file = out.path().join("a.txt");
    std::fs::write(&file, b"nobody may say yes").unwrap();
    let url = format!("http://{addr}/upload");
    for protocol in ["segmented", "tus"] {
        let sent = fileuploader(&[
            "upload",
            "--url",
            &url,
            "--protocol",
            protocol,
            "--no-retry",
            file.to_str().unwrap(),
        ]);
        assert!(!sent.status.success(), "{protocol}");
        assert!(
            stderr(&sent).contains("cannot ask its application"),
            "{protocol}: {}",
            stderr(&sent)
        );
    }
    assert!(!dir.path().join("a.txt").exists());
}

#[test]
fn receipts_are_signed_kept_and_verified_and_each_kind_of_tampering_is_caught() {
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let key = out.path().join("receipts.key");
    let made = fileuploader(&["receipt-key", key.to_str().unwrap()]);
    assert!(made.status.success(), "{}", stderr(&made));
    let public = out.path().join("receipts.key.pub");
    assert!(
        stderr(&made).contains(public.to_str().unwrap()),
        "{}",
        stderr(&made)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = fileuploader(&["receipt-key", key.to_str().unwrap()]);
    assert!(!again.status.success(), "a key is never written over");

    let addr = free_addr();
    let flags = ["--receipt-key", key.to_str().unwrap()].map(std::ffi::OsStr::new);
    let _receiver = Reaped(serve_with(dir.path(), &addr, &flags));
    let url = format!("http://{addr}/upload");
    let kept = out.path().join("kept");
    let file = out.path().join("contract.pdf");
    std::fs::write(&file, b"signed, sealed, delivered".repeat(3000)).unwrap();
    let public = public.to_str().unwrap();
    for protocol in ["segmented", "tus", "ietf"] {
        let args = upload_over(&url, protocol, "16KiB");
        let name = format!("{protocol}/contract.pdf");
        let extra = [
            "--name",
            &name,
            "--receipt-dir",
            kept.to_str().unwrap(),
            "--json",
        ];
        let sent = fileuploader(&[&args[..], &extra, &[file.to_str().unwrap()]].concat());
        assert!(sent.status.success(), "{protocol}: {}", stderr(&sent));
        let line = &json_lines(&sent)[0];
        let receipt = kept.join(format!("{protocol}/contract.pdf.receipt"));
        assert_eq!(line["receipt_file"].as_str(), receipt.to_str(), "{line}");
        assert_eq!(
            std::fs::read_to_string(&receipt).unwrap().trim(),
            line["receipt"].as_str().unwrap()
        );
        let checked = fileuploader(&[
            "verify",
            receipt.to_str().unwrap(),
            file.to_str().unwrap(),
            "--key",
            public,
        ]);
        assert!(checked.status.success(), "{protocol}: {}", stderr(&checked));
        let said = String::from_utf8_lossy(&checked.stdout).into_owned();
        assert!(
            said.contains("the receipt holds") && said.contains(&name),
            "{said}"
        );
    }
    let receipt = kept.join("segmented/contract.pdf.receipt");
    let compact = std::fs::read_to_string(&receipt).unwrap();
    let verify = |receipt: &Path, file: Option<&Path>, key: &str| {
        let mut args = vec!["verify", receipt.to_str().unwrap()];
        args.extend(file.map(|f| f.to_str().unwrap()));
        fileuploader(&[&args[..], &["--key", key]].concat())
    };
    let refused = |out: Output, why: &str| {
        assert!(!out.status.success(), "{why}");
        assert!(stderr(&out).starts_with("error 39:"), "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    };
    // A truncated file.
    let truncated = out.path().join("truncated.pdf");
    std::fs::write(&truncated, &std::fs::read(&file).unwrap()[..1000]).unwrap();
    refused(
        verify(&receipt, Some(&truncated), public),
        "not for this file",
    );
    // Another key.
    let other = out.path().join("other.key");
    assert!(fileuploader(&["receipt-key", other.to_str().unwrap()])
        .status
        .success());
    let other_public = out.path().join("other.key.pub");
    refused(
        verify(&receipt, None, other_public.to_str().unwrap()),
        "another key",
    );
    // A payload changed after signing: one more byte claimed.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = compact.trim().split('.').collect();
    let payload = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let length = std::fs::metadata(&file).unwrap().len();
    let changed = payload.replace(
        &format!("\"length\":{length}"),
        &format!("\"length\":{}", length + 1),
    );
    assert_ne!(changed, payload);
    let tampered = out.path().join("tampered.receipt");
    std::fs::write(
        &tampered,
        format!("{}.{}.{}", parts[0], b64.encode(changed), parts[2]),
    )
    .unwrap();
    refused(
        verify(&tampered, None, public),
        "changed after it was signed",
    );
    // Not a receipt at all.
    std::fs::write(&tampered, "hello").unwrap();
    refused(
        verify(&tampered, None, public),
        "not a fileuploader receipt",
    );
    // A receiver without receipts fails an upload that asks to keep them.
    let plain = receiver(dir.path());
    let args = upload_over(&plain, "segmented", "16KiB");
    let extra = [
        "--name",
        "unsigned.pdf",
        "--receipt-dir",
        kept.to_str().unwrap(),
    ];
    let sent = fileuploader(&[&args[..], &extra, &[file.to_str().unwrap()]].concat());
    assert!(!sent.status.success());
    assert!(
        stderr(&sent).contains("sent no receipt"),
        "{}",
        stderr(&sent)
    );
}

#[test]
fn the_applications_word_is_the_landing_answer_in_every_protocol() {
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let addr = free_addr();
    // The application files each landing and answers with its own id.
    let hook = r#"sed -n 's/.*"name":"\([^"]*\)".*/{"filed_as":"doc-\1"}/p'"#;
    let flags = ["--landing-answer", hook].map(std::ffi::OsStr::new);
    let _receiver = Reaped(serve_with(dir.path(), &addr, &flags));
    let url = format!("http://{addr}/upload");
    let file = out.path().join("page.pdf");
    std::fs::write(&file, b"a scanned page".repeat(5000)).unwrap();
    for protocol in ["segmented", "tus", "ietf"] {
        let name = format!("{protocol}.pdf");
        let args = upload_over(&url, protocol, "16KiB");
        let saved = out.path().join(format!("{protocol}.answer"));
        let extra = ["--name", &name, "--json", "-o", saved.to_str().unwrap()];
        let sent = fileuploader(&[&args[..], &extra, &[file.to_str().unwrap()]].concat());
        assert!(sent.status.success(), "{protocol}: {}", stderr(&sent));
        let line = &json_lines(&sent)[0];
        let word = format!("{{\"filed_as\":\"doc-{name}\"}}");
        assert_eq!(
            line["body"].as_str(),
            Some(word.as_str()),
            "{protocol}: {line}"
        );
        assert_eq!(line["landing"], "confirmed", "{protocol}: {line}");
        assert_eq!(std::fs::read_to_string(&saved).unwrap(), word, "{protocol}");
        assert_eq!(
            std::fs::read(dir.path().join(&name)).unwrap(),
            std::fs::read(&file).unwrap()
        );
    }
}

/// Runs `command` to its end; whether it succeeded, and its peak resident
/// memory in KiB as last read (`VmHWM`, every 10 ms). Not `wait4`'s
/// figure: a child spawned with the parent's memory shared until `exec`
/// counts the whole test process's peak as its own.
fn peak_of_run(mut command: Command) -> (bool, u64) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary runs");
    let mut peak = 0;
    loop {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
        let hwm = status.ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        });
        peak = peak.max(hwm.unwrap_or(0));
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return (status.success(), peak);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_folders_files_cost_the_command_almost_no_memory_each() {
    let sink = tempfile::tempdir().unwrap();
    let url = serving(
        fileuploader_server::Receiver::new(sink.path())
            .unwrap()
            .discard(true),
    );
    let src = tempfile::tempdir().unwrap();
    let peak = |files: u32| {
        let tree = src.path().join(format!("tree-{files}"));
        let files: Vec<(String, Vec<u8>)> = (0..files)
            .map(|i| (format!("d{}/f{i}.bin", i % 10), vec![i as u8; 1024]))
            .collect();
        write_tree(&tree, &files);
        let mut upload = command();
        upload
            .args(["upload", "--quiet", "-r", "--url", &url])
            .arg(&tree);
        let (ok, kib) = peak_of_run(upload);
        assert!(ok, "the upload of {} files succeeded", files.len());
        kib
    };
    let (few, many) = (peak(50), peak(2_000));
    // Every file's job, answer and summary kept to the end held about 11
    // KiB a file (22 MiB more for these 1 950 files); what is left is its
    // path and the run's counts.
    assert!(
        many < few + 4 * 1024,
        "2 000 files peaked at {many} KiB, 50 at {few} KiB"
    );
}
