//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `conformance`: the conformance suite against every transport in the
//!   repository, as a table.
//! - `fuzz [SECONDS]`: each cargo-fuzz target for SECONDS (default 60).
//! - `bench [--quick] [--runs N] [--only direct]`: fileuploader against curl
//!   on 127.0.0.1 (only the uploads straight to a bucket with `--only direct`).
//! - `chaos`: seeded faults between and inside real processes, judged by
//!   what landed.
//! - `interop [s3|companion|peers]`: fileuploader against tus peers nobody
//!   here wrote (npm and PyPI, installed when missing), both directions,
//!   Uppy in a browser and nginx before our receiver (only these with
//!   `peers`); receivers sharing a Garage bucket behind nginx (only these
//!   with `s3`); uploads straight to Garage, signed by our receiver and by
//!   Uppy's Companion (only these with `companion`).

mod bench;
mod chaos;
mod companion;
mod curl8;
mod garage;
mod interop;
mod raw_transport;
mod s3;
mod store_suite;

use std::process::ExitCode;
use std::sync::Arc;

use fileuploader_core::Transport;
use fileuploader_mock_server::conformance::{self, Outcome, TransportFactory};
use fileuploader_transport_hyper::HyperTransport;

use crate::raw_transport::RawHttp1Transport;

const TASKS: &[(&str, &str)] = &[
    (
        "conformance",
        "run the conformance suite against every transport and print a table",
    ),
    (
        "bench [--quick] [--runs N] [--only direct|stores|stalls|durable|https|files]",
        "upload speed, request rate, CPU and memory against curl 8.14 and 7.88 on 127.0.0.1, plain and over TLS (N >= 3 alternating runs; 5, or 3 with --quick); --only: uploads straight to Garage, receivers on Garage and on a directory, the stalling proxy with and without hedging, small blocks into a durable receiver beside --discard and the durable floor, HTTPS alone, or many small files alone",
    ),
    (
        "chaos [--quick] [--runs N] [--jobs J] [--seed S --scenario NAME]",
        "seeded faults (fault proxy, SIGKILL of receiver and clients) judged by what landed",
    ),
    (
        "interop [s3|companion|peers]",
        "our client and receiver against @tus/server, tuspyserver, resumable-upload, tus-js-client, Uppy in chromium and nginx before our receiver (only those with peers); receivers on a Garage cluster behind nginx (only those with s3); direct uploads to Garage signed by our receiver and by Companion (only those with companion)",
    ),
    (
        "fuzz [SECS]",
        "run each fuzz target for SECS seconds (default 60); needs cargo-fuzz",
    ),
];

/// The repository's root.
fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Builds the `fileuploader` binary in release mode; returns its path.
fn release_binary() -> Result<std::path::PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .current_dir(root())
        .args(["build", "--release", "-q", "-p", "fileuploader-cli"])
        .args(["--features", "s3"])
        .status();
    if !built.is_ok_and(|s| s.success()) {
        return Err("cargo build --release -p fileuploader-cli --features s3 failed".into());
    }
    Ok(release_dir().join("fileuploader"))
}

/// Where cargo puts release builds: its target directory may be set
/// elsewhere.
fn release_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root().join("target"), |dir| root().join(dir))
        .join("release")
}

/// The targets in `fuzz/fuzz_targets`.
const FUZZ_TARGETS: &[&str] = &["request_headers", "receiver_request", "job_encoding"];

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None | Some("help" | "--help" | "-h") => {
            println!("cargo xtask <task>\n\ntasks:");
            for (name, what) in TASKS {
                println!("  {name:<16} {what}");
            }
            ExitCode::SUCCESS
        }
        Some("conformance") => conformance(),
        Some("chaos") => match chaos::chaos(std::env::args().skip(2)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chaos: {e}");
                ExitCode::FAILURE
            }
        },
        Some("interop") => match interop::Scope::from_arg(std::env::args().nth(2).as_deref())
            .and_then(interop::interop)
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("interop: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fuzz") => fuzz(std::env::args().nth(2).as_deref()),
        Some("bench") => {
            match bench::Plan::from_args(std::env::args().skip(2)).and_then(bench::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(other) => {
            eprintln!("unknown task {other:?}; `cargo xtask` lists the tasks");
            ExitCode::from(2)
        }
    }
}

/// Runs every fuzz target for a bounded time. cargo-fuzz needs nightly
/// features, which the stable toolchain allows with `RUSTC_BOOTSTRAP=1`.
fn fuzz(seconds: Option<&str>) -> ExitCode {
    let Ok(seconds) = seconds.unwrap_or("60").parse::<u32>() else {
        eprintln!("fuzz takes a whole number of seconds per target");
        return ExitCode::from(2);
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let installed = std::process::Command::new(&cargo)
        .args(["fuzz", "--version"])
        .output();
    if !installed.is_ok_and(|o| o.status.success()) {
        eprintln!("cargo-fuzz is not installed: cargo install cargo-fuzz");
        return ExitCode::from(2);
    }
    let mut failed = Vec::new();
    for target in FUZZ_TARGETS {
        println!("== fuzz {target} for {seconds} s");
        let status = std::process::Command::new(&cargo)
            .current_dir(root)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "--fuzz-dir", "fuzz", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            failed.push(*target);
        }
    }
    println!(
        "\n{} passed, {} failed",
        FUZZ_TARGETS.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("failing targets: {failed:?}; crash inputs are in fuzz/artifacts/");
        ExitCode::FAILURE
    }
}

/// The stall timeout of the transports under test.
const STALL: std::time::Duration = std::time::Duration::from_secs(2);

/// The transports in this repository, by name.
fn transports() -> Vec<(&'static str, TransportFactory)> {
    fn hyper(http2: bool) -> TransportFactory {
        Arc::new(
            // A short stall timeout keeps the stall scenario short.
            move || match HyperTransport::builder()
                .http2(http2)
                .stall_timeout(STALL)
                .build()
            {
                Ok(t) => Arc::new(t) as Arc<dyn Transport>,
                Err(e) => panic!("the hyper transport does not build: {e}"),
            },
        )
    }
    vec![
        ("hyper-http1", hyper(false)),
        ("hyper-http2", hyper(true)),
        (
            "raw-http1",
            Arc::new(|| {
                Arc::new(RawHttp1Transport::with_stall_timeout(STALL)) as Arc<dyn Transport>
            }),
        ),
    ]
}

/// The reference receiver, for the suite's protocol scenarios.
fn receiver() -> Option<conformance::ReceiverFactory> {
    Some(conformance::receiver(|dir, listener| async move {
        fileuploader_server::Receiver::new(dir)?
            .serve(listener)
            .await
    }))
}

fn conformance() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let results: Vec<(&str, Vec<Outcome>)> = runtime.block_on(async {
        let mut results = Vec::new();
        for (name, factory) in transports() {
            results.push((name, conformance::run_all(factory, receiver()).await));
        }
        results
    });
    print!("| scenario |");
    for (name, _) in &results {
        print!(" {name} |");
    }
    println!("\n|---|{}", "---|".repeat(results.len()));
    let (mut passed, mut failed) = (0, 0);
    for (i, scenario) in conformance::scenarios().iter().enumerate() {
        print!("| {} |", scenario.name);
        for (_, outcomes) in &results {
            match &outcomes[i].result {
                Ok(()) => {
                    passed += 1;
                    print!(" pass ({} ms) |", outcomes[i].elapsed.as_millis());
                }
                Err(_) => {
                    failed += 1;
                    print!(" FAIL |");
                }
            }
        }
        println!();
    }
    for (name, outcomes) in &results {
        for o in outcomes {
            if let Err(e) = &o.result {
                println!("\n{name} / {}: {e}", o.name);
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_example_raw_transport_passes_the_suite() {
        let factory: TransportFactory = Arc::new(|| {
            Arc::new(RawHttp1Transport::with_stall_timeout(STALL)) as Arc<dyn Transport>
        });
        conformance::assert_all_passed(&conformance::run_all(factory, receiver()).await);
    }
}
