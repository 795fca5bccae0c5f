//! A Garage cluster on 127.0.0.1 (crates.io `garage` 2.5.0, installed with
//! `cargo install` when missing), an S3 client to look into its buckets,
//! and nginx in front of receivers: what the object-store checks of
//! `cargo xtask interop` and the bench rows of `cargo xtask bench` run on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

use crate::interop::{free_port, start, Peer};

/// The Garage version the checks run against.
const GARAGE_VERSION: &str = "2.5.0";
/// Garage's region name.
pub(crate) const REGION: &str = "garage";

/// The `garage` binary: on the PATH, in cargo's bin folder, or installed
/// there now (about 9 minutes on two cores).
fn garage_binary() -> Result<PathBuf, String> {
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map_or_else(|| home.join(".cargo"), PathBuf::from)
        .join("bin/garage");
    let installed = |path: &Path| {
        Command::new(path)
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(GARAGE_VERSION))
    };
    for candidate in [PathBuf::from("garage"), cargo_bin.clone()] {
        if installed(&candidate) {
            return Ok(candidate);
        }
    }
    eprintln!("garage: installing garage {GARAGE_VERSION} with cargo install (about 9 minutes)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["install", "garage", "--locked", "--version", GARAGE_VERSION])
        .status()
        .map_err(|e| format!("cargo install garage: {e}"))?;
    if !status.success() || !installed(&cargo_bin) {
        return Err(format!("cargo install garage {GARAGE_VERSION} failed"));
    }
    Ok(cargo_bin)
}

/// A running cluster, stopped when dropped.
pub(crate) struct Garage {
    binary: PathBuf,
    configs: Vec<PathBuf>,
    /// Each node's S3 address.
    pub(crate) endpoints: Vec<String>,
    pub(crate) key_id: String,
    pub(crate) secret: String,
    s3_ports: Vec<u16>,
    /// Each node's admin API (its metrics).
    admin_ports: Vec<u16>,
    nodes: Vec<Option<Peer>>,
}

impl Garage {
    /// Starts `nodes` nodes in `dir`, each replicating everything, with
    /// one access key; `buckets` are created for it.
    pub(crate) fn start(dir: &Path, nodes: usize, buckets: &[&str]) -> Result<Garage, String> {
        let binary = garage_binary()?;
        let secret = format!("{:064x}", u128::from(std::process::id()) << 64 | 0x5eed);
        let mut configs = Vec::new();
        let mut endpoints = Vec::new();
        let mut peers = Vec::new();
        let mut s3_ports = Vec::new();
        let mut admin_ports = Vec::new();
        for n in 0..nodes {
            let node = dir.join(format!("node{n}"));
            std::fs::create_dir_all(&node).map_err(|e| e.to_string())?;
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = node.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = {nodes}\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{secret}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                    node.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            peers.push(Some(node_process(&binary, &config, s3)?));
            configs.push(config);
            s3_ports.push(s3);
            admin_ports.push(admin);
            endpoints.push(format!("http://127.0.0.1:{s3}"));
        }
        let mut garage = Garage {
            binary,
            configs,
            endpoints,
            key_id: String::new(),
            secret: String::new(),
            s3_ports,
            admin_ports,
            nodes: peers,
        };
        let ids = (0..nodes)
            .map(|n| garage.cli_on(n, &["node", "id", "-q"]))
            .collect::<Result<Vec<_>, _>>()?;
        for id in &ids[1..] {
            garage.cli(&["node", "connect", id.trim()])?;
        }
        for (n, id) in ids.iter().enumerate() {
            let short = id.trim().split('@').next().unwrap_or_default();
            let zone = format!("dc{n}");
            garage.cli(&["layout", "assign", "-z", &zone, "-c", "1G", short])?;
        }
        garage.cli(&["layout", "apply", "--version", "1"])?;
        let key = garage.cli(&["key", "create", "fileuploader"])?;
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| format!("garage key create said no {name:?}: {key}"))
        };
        garage.key_id = field("Key ID:")?;
        garage.secret = field("Secret key:")?;
        for bucket in buckets {
            garage.cli(&["bucket", "create", bucket])?;
            garage.cli(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                bucket,
                "--key",
                "fileuploader",
            ])?;
        }
        Ok(garage)
    }

    /// Kills every node with SIGKILL: the store stops answering.
    pub(crate) fn kill(&mut self) {
        for node in &mut self.nodes {
            drop(node.take());
        }
    }

    /// Starts the killed nodes again, on their data.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        for (n, node) in self.nodes.iter_mut().enumerate() {
            if node.is_none() {
                *node = Some(node_process(
                    &self.binary,
                    &self.configs[n],
                    self.s3_ports[n],
                )?);
            }
        }
        Ok(())
    }

    /// Runs the `garage` command against node `n`; returns what it printed.
    fn cli_on(&self, n: usize, args: &[&str]) -> Result<String, String> {
        // Right after start-up a node may still be finding its peers.
        let started = Instant::now();
        loop {
            let out = Command::new(&self.binary)
                .arg("-c")
                .arg(&self.configs[n])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("garage {}: {e}", args.join(" ")))?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "garage {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        self.cli_on(0, args)
    }

    /// How many S3 requests of each kind (`ListObjectsV2`, `PutObject`,
    /// …) the nodes have served, from their metrics.
    pub(crate) fn requests(&self) -> Result<BTreeMap<String, u64>, String> {
        let mut counts = BTreeMap::new();
        for &port in &self.admin_ports {
            let (status, answer) = crate::s3::request(port, "GET", "/metrics", &[], b"")?;
            if status != 200 {
                return Err(format!("garage metrics answered {status}"));
            }
            for line in answer.lines() {
                let Some(rest) = line.strip_prefix("api_s3_request_counter{api_endpoint=\"") else {
                    continue;
                };
                let Some((kind, count)) = rest.split_once("\"} ") else {
                    continue;
                };
                let count: u64 = count
                    .trim()
                    .parse()
                    .map_err(|_| format!("metrics: {line}"))?;
                *counts.entry(kind.to_owned()).or_default() += count;
            }
        }
        Ok(counts)
    }

    /// The environment a receiver needs to use the cluster's key.
    pub(crate) fn credentials(&self, command: &mut Command) {
        command
            .env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env_remove("AWS_PROFILE");
    }

    /// An S3 client on node `n`, to look into buckets.
    pub(crate) fn client(&self, n: usize) -> Bucketeer {
        Bucketeer {
            client: self.sdk(n),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
        }
    }

    /// The SDK's client on node `n`, for async code.
    pub(crate) fn sdk(&self, n: usize) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoints[n])
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.key_id,
                &self.secret,
                None,
                None,
                "xtask",
            ))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }
}

/// One node's server, its log in its folder.
fn node_process(binary: &Path, config: &Path, s3: u16) -> Result<Peer, String> {
    let folder = config.parent().unwrap_or(Path::new("."));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(folder.join("garage.log"))
        .map_err(|e| e.to_string())?;
    start(
        Command::new(binary)
            .arg("-c")
            .arg(config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stderr(log),
        s3,
        "garage",
    )
}

/// Looks into a bucket, blocking.
pub(crate) struct Bucketeer {
    client: aws_sdk_s3::Client,
    runtime: tokio::runtime::Runtime,
}

impl Bucketeer {
    /// The object's bytes, or `None` when there is none.
    pub(crate) fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.runtime.block_on(async {
            match self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
            {
                Ok(object) => object
                    .body
                    .collect()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(|e| e.to_string()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(aws_sdk_s3::error::DisplayErrorContext(e).to_string()),
            }
        })
    }

    /// The keys below `prefix`.
    pub(crate) fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
        self.runtime.block_on(async {
            let mut keys = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page =
                    page.map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
            }
            Ok(keys)
        })
    }

    /// The multipart uploads open below `prefix`: key and upload id.
    fn open_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, String)>, String> {
        self.runtime.block_on(async {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
            Ok(page
                .uploads()
                .iter()
                .filter_map(|u| Some((u.key()?.to_owned(), u.upload_id()?.to_owned())))
                .collect())
        })
    }

    /// The keys of the multipart uploads open below `prefix`.
    pub(crate) fn open_multipart(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, String> {
        Ok(self
            .open_uploads(bucket, prefix)?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// The parts the bucket holds of the multipart uploads open below
    /// `prefix`, all together.
    pub(crate) fn parts_held(&self, bucket: &str, prefix: &str) -> Result<usize, String> {
        let mut held = 0;
        for (key, upload_id) in self.open_uploads(bucket, prefix)? {
            held += self.runtime.block_on(async {
                self.client
                    .list_parts()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map(|parts| parts.parts().len())
                    .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
            })?;
        }
        Ok(held)
    }

    /// Lets pages of any origin send objects to `bucket` from a browser,
    /// reading each answer's ETag (as Uppy's S3 uploads need).
    pub(crate) fn allow_browsers(&self, bucket: &str) -> Result<(), String> {
        use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
        let rule = CorsRule::builder()
            .allowed_origins("*")
            .set_allowed_methods(Some(
                ["GET", "PUT", "POST", "HEAD"].map(String::from).to_vec(),
            ))
            .allowed_headers("*")
            .expose_headers("ETag")
            .expose_headers("Location")
            .build()
            .map_err(|e| e.to_string())?;
        let cors = CorsConfiguration::builder()
            .cors_rules(rule)
            .build()
            .map_err(|e| e.to_string())?;
        self.runtime.block_on(async {
            self.client
                .put_bucket_cors()
                .bucket(bucket)
                .cors_configuration(cors)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
        })
    }

    /// Completes the multipart upload open at `key` from `parts` (number
    /// and ETag), as a receiver that then died would have.
    pub(crate) fn complete_open(
        &self,
        bucket: &str,
        key: &str,
        parts: &[(i32, String)],
    ) -> Result<(), String> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let (_, upload_id) = self
            .open_uploads(bucket, key)?
            .into_iter()
            .find(|(k, _)| k == key)
            .ok_or_else(|| format!("no multipart upload open at {key}"))?;
        let parts = parts
            .iter()
            .map(|(n, etag)| CompletedPart::builder().part_number(*n).e_tag(etag).build())
            .collect();
        self.runtime.block_on(async {
            self.client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
        })
    }

    /// Begins a multipart upload at `key` and leaves it open.
    pub(crate) fn leave_multipart_open(&self, bucket: &str, key: &str) -> Result<(), String> {
        self.runtime.block_on(async {
            self.client
                .create_multipart_upload()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())
        })
    }
}

/// nginx on `port` in front of `upstreams`, round robin, no stickiness,
/// bodies streamed both ways, each request logged to `dir/requests.log`
/// as `METHOD STATUS BYTES` (the request's length, head and body as far as
/// nginx read it); stopped when dropped.
pub(crate) fn nginx(dir: &Path, port: u16, upstreams: &[u16]) -> Result<Peer, String> {
    nginx_bounded(dir, port, upstreams, "0")
}

/// [`nginx`] with its `client_max_body_size` at `max_body` ("0": none;
/// nginx's own default is "1m").
pub(crate) fn nginx_bounded(
    dir: &Path,
    port: u16,
    upstreams: &[u16],
    max_body: &str,
) -> Result<Peer, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let servers: String = upstreams
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    let d = dir.display();
    let config = format!(
        "master_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  log_format sizes '$request_method $status $request_length';\n\
         \x20 access_log {d}/requests.log sizes;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         \x20 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         \x20 upstream receivers {{\n{servers}    keepalive 32;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size {max_body};\n\
         \x20   proxy_request_buffering off;\n    proxy_buffering off;\n    proxy_http_version 1.1;\n\
         \x20   location / {{\n      proxy_pass http://receivers;\n      proxy_set_header Host $http_host;\n\
         \x20     proxy_set_header Connection \"\";\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let binary = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| Command::new(b).arg("-v").output().is_ok())
        .ok_or("nginx is not installed (Debian: apt-get install nginx)")?;
    start(
        Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log")),
        port,
        "nginx",
    )
}
