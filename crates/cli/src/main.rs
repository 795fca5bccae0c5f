//! `fileuploader`: upload files in blocks, run the reference receiver, or try
//! both end to end with `demo`.

mod demo;
mod files;
mod receipts;
mod size;
mod upload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use fileuploader_server::receipts::ReceiptKey;
use fileuploader_server::Hook;

use crate::size::{parse_duration, parse_positive_size, parse_size};

/// Upload files over HTTP in blocks, several at a time.
#[derive(Debug, Parser)]
#[command(name = "fileuploader", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload files and folders to URL, block by block, several files at
    /// once (exit 0 when every file landed; otherwise "error CODE: MESSAGE"
    /// and exit 1; 130 when interrupted).
    Upload(UploadArgs),
    /// Run the reference receiver: land uploads in DIR.
    Serve(ServeArgs),
    /// Start a receiver on 127.0.0.1, upload a sample file to it with a
    /// progress bar, and check that the landed file's SHA-256 matches.
    Demo(DemoArgs),
    /// Print an upload URL signed with the receiver's signing key, for an
    /// application backend to hand to a client.
    Sign(SignArgs),
    /// Make an Ed25519 key for `serve --receipt-key`: the private key in
    /// FILE (mode 0600), the public key, which checks receipts, in FILE.pub.
    ReceiptKey(receipts::KeyArgs),
    /// Check a receipt a receiver signed: its signature against the
    /// receiver's public key and, given FILE, that it is that file's (exit 0
    /// when it holds; otherwise says what does not, and exits 1).
    Verify(receipts::VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `fileuploader man > fileuploader.1`.
    Man,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The receiver's upload URL.
    #[arg(long, value_name = "URL")]
    url: String,
    /// The file holding the signing key (`serve --signing-key-file`).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// The one name the URL may land.
    #[arg(long, value_name = "NAME", conflicts_with = "prefix")]
    name: Option<String>,
    /// A prefix every name it lands must start with.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// The largest upload it allows.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_size: Option<u64>,
    /// How long it stays valid.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    valid_for: std::time::Duration,
    /// Whom the URL is for (a user of the application): every URL signed
    /// for one subject reaches that subject's uploads (a fresh URL resumes
    /// what an expired one began), and receipts name it.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    subject: Option<String>,
}

/// How blocks are sent; shared by `upload` and `demo`.
#[derive(Debug, Clone, Args)]
struct TransferArgs {
    /// Bytes per block, each block one request; takes suffixes like 64KiB or
    /// 8MiB, as the library's default.
    #[arg(long, value_name = "BYTES", default_value = "8MiB", value_parser = size::parse_block_size)]
    block_size: u64,
    /// Blocks in flight at once: 1 to 16, or auto (found while sending:
    /// grown while throughput grows, cut on failures and when requests
    /// start to wait; 16 at most). The library's default is 1.
    #[arg(long, value_name = "N|auto", default_value = "4", value_parser = Threads::parse)]
    threads: Threads,
    /// Use HTTP/2: by ALPN over https, by prior knowledge over http.
    #[arg(long)]
    http2: bool,
    /// With --http2, spread the blocks over N connections (1 to 16), in
    /// turn: each is encrypted (over TLS) and parsed by the receiver on its
    /// own, so both ends use more than one core; 1 is HTTP/2's own way,
    /// and the library's default.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    http2_connections: u16,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
    /// Print a JSON summary per file on standard output.
    #[arg(long)]
    json: bool,
}

/// How many blocks may be in flight (`--threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Threads {
    /// The most at once.
    most: u16,
    /// Whether the job finds its own limit below `most`.
    auto: bool,
}

impl Threads {
    /// The ceiling of `--threads`, and of `auto`.
    const MOST: u16 = 16;

    fn parse(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Threads {
                most: Self::MOST,
                auto: true,
            });
        }
        match text.parse::<u16>() {
            Ok(n @ 1..=Self::MOST) => Ok(Threads {
                most: n,
                auto: false,
            }),
            _ => Err(format!(
                "{text:?} is not a number of blocks in flight: give 1 to {}, or auto",
                Self::MOST
            )),
        }
    }
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.auto {
            true => write!(f, "auto (at most {})", self.most),
            false => write!(f, "{}", self.most),
        }
    }
}

#[derive(Debug, Args)]
struct UploadArgs {
    /// Where to POST the blocks (http or https); with --protocol s3, the
    /// bucket and key, s3://BUCKET/KEY (a key ending in / is a folder).
    #[arg(long, value_name = "URL")]
    url: String,
    /// With --protocol s3: the address of the S3-compatible store (Garage,
    /// MinIO, …); AWS S3 when not given.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// With --protocol s3: the region to sign for (default: AWS_REGION,
    /// the profile's, else us-east-1).
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
    /// The form name of the file part.
    #[arg(long, value_name = "NAME", default_value = "RemoteFile")]
    key: String,
    /// The remote file name (one file only); default: the file's own name,
    /// or for a folder's files their path below it.
    #[arg(long, value_name = "REMOTE_NAME")]
    name: Option<String>,
    /// An extra form field sent with every block; repeatable.
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse_field)]
    fields: Vec<(String, String)>,
    /// An extra request header, replacing a default of the same name; repeatable.
    #[arg(short = 'H', long = "header", value_name = "'Name: value'", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Send `Authorization: Bearer TOKEN` (a receiver's --token).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "PEM")]
    cacert: Option<PathBuf>,
    /// Send through this HTTP proxy (http://HOST:PORT, or with USER:PASS@); without
    /// it, HTTPS_PROXY, HTTP_PROXY and NO_PROXY are honoured.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Keep a journal of acknowledged blocks, so that running the same
    /// command again after an interruption sends only the rest. Journals
    /// live in $FILEUPLOADER_JOURNAL_DIR, else
    /// $XDG_STATE_HOME/fileuploader/journals, else
    /// ~/.local/state/fileuploader/journals, and are removed on success.
    #[arg(long)]
    resume: bool,
    /// Send blocks without their X-Block-CRC32C checksum field, for a server
    /// that refuses unknown form fields or a like-for-like comparison with
    /// tools that send none. The receiver can then not refuse a block damaged on the way.
    #[arg(long)]
    no_checksum: bool,
    /// Write the body of the receiver's final answer (the one that reported
    /// the landing) to FILE, as curl's -o does; one file only.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Keep each file's signed receipt (from a receiver run with
    /// --receipt-key) in DIR, as DIR/NAME.receipt (NAME the landed name); a file whose
    /// receiver sends none fails (error 39). Receipts are checked against
    /// the bytes sent whether kept or not; `fileuploader verify` checks one
    /// later.
    #[arg(long, value_name = "DIR")]
    receipt_dir: Option<PathBuf>,
    /// Fail (error 36) unless the receiver confirms that each file landed.
    /// Without it, a receiver that acknowledges every block but cannot
    /// answer status queries counts as success, reported "unconfirmed".
    #[arg(long)]
    require_confirmation: bool,
    /// The wire protocol: the segmented multipart convention, tus 1.0, the
    /// IETF resumable-upload draft (interop version 9, or the older one a
    /// server takes), S3 multipart parts straight to a bucket on URLs a Companion backend signs (--url is the
    /// backend's, such as https://host/s3) or with this machine's AWS keys
    /// (s3, --url s3://BUCKET/KEY; needs the s3 feature), blocks grown to
    /// S3's 5 MiB parts at least, or whichever the server says it speaks when asked by
    /// OPTIONS. With tus and IETF, --url is the creation endpoint and the
    /// file name travels as metadata.
    #[arg(long, value_enum, value_name = "PROTOCOL", default_value = "segmented")]
    protocol: ProtocolArg,
    /// Upload what is in each FOLDER given, its subfolders too; each file's
    /// remote name is its path below the folder (`sub/a.txt`).
    #[arg(short, long)]
    recursive: bool,
    /// In folders, take hidden files and folders too (names starting with `.`).
    #[arg(long)]
    hidden: bool,
    /// In folders, follow symbolic links to files and folders (by default
    /// they are left out).
    #[arg(long)]
    follow_symlinks: bool,
    /// In folders, take only files whose path below the folder matches this
    /// glob (`*.pdf`, `**/*.jpg`); repeatable.
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// In folders, leave out files whose path below the folder matches this
    /// glob; repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Files uploaded at once; --threads bounds their blocks in flight
    /// together.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    files: u16,
    /// Give up on the whole run after this long (error 11), e.g. `30s`, `10m`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// Give up on a connection that is not made within this long (error 11).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    connect_timeout: Option<std::time::Duration>,
    /// Give up on a request that moves no byte either way for this long
    /// (error 11, then retried as the retry policy says).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Option<std::time::Duration>,
    /// Give up on a request that moves fewer than this many bytes per
    /// second, on average over --speed-time (error 11, then retried as the
    /// retry policy says); 0 never does. Under --limit-rate, at most half
    /// of each request's share of it.
    #[arg(long, value_name = "BYTES", default_value = "1KiB", value_parser = parse_size)]
    speed_limit: u64,
    /// The span over which --speed-limit is measured.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    speed_time: std::time::Duration,
    /// Send at most this many bytes per second across the whole run, e.g. `10MiB`.
    #[arg(long, value_name = "BYTES", value_parser = parse_positive_size)]
    limit_rate: Option<u64>,
    /// Send a failed block at most N more times (default 4; the reference
    /// never retries: --no-retry).
    #[arg(long, value_name = "N", conflicts_with = "no_retry")]
    retries: Option<u32>,
    /// Never send a failed block again (the reference behaviour).
    #[arg(long, conflicts_with = "hedge")]
    no_retry: bool,
    /// Send a block again beside a request that runs far past the recent
    /// ones, on another connection (one at a time, one block in twenty at
    /// most, none while the run is retrying failures), for protocols whose
    /// blocks may arrive twice. Off by default: a receiver must take two
    /// copies of a block at once.
    #[arg(long)]
    hedge: bool,
    /// Present this client certificate chain (PEM, with --cert-key) for
    /// mutual TLS.
    #[arg(long, value_name = "PEM", requires = "cert_key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM). Not --key: that names the form part.
    #[arg(long, value_name = "PEM", requires = "cert")]
    cert_key: Option<PathBuf>,
    /// Print each request, response and retry on standard error (-vv for
    /// more); FILEUPLOADER_LOG takes a tracing filter instead.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    transfer: TransferArgs,
    /// The files and folders to upload.
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The directory uploads land in (created if missing).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "store",
        conflicts_with = "store"
    )]
    dir: Option<PathBuf>,
    /// Keep uploads in an S3-compatible bucket instead, landing files
    /// below PREFIX: any number of receivers may share it. Credentials
    /// come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a
    /// profile of ~/.aws (AWS_PROFILE). Needs a build with the `s3`
    /// feature (`cargo install --path crates/cli --features s3`).
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    store: Option<String>,
    /// The address of the S3-compatible store (Garage, MinIO, …); AWS S3
    /// when not given.
    #[arg(long, value_name = "URL", requires = "store")]
    s3_endpoint: Option<String>,
    /// The region to sign requests for (default: AWS_REGION, the
    /// profile's, else us-east-1).
    #[arg(long, value_name = "REGION", requires = "store")]
    s3_region: Option<String>,
    /// The address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080", value_parser = parse_listen_addr)]
    addr: SocketAddr,
    /// Refuse uploads larger than this with 413.
    #[arg(long, value_name = "BYTES", default_value = "16GiB", value_parser = parse_size)]
    max_size: u64,
    /// The most one request of the resumable-upload draft (a creation or an
    /// append) may carry; announced in Upload-Limit, refused with 413 beyond.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_append_size: Option<u64>,
    /// Read and discard every body, answering 200: a sink for benchmarks.
    #[arg(long)]
    discard: bool,
    /// What landing does when a file of the same name is in DIR already:
    /// refuse the upload with 409 (before its first byte is stored when the
    /// name is taken already), overwrite the file, or rename the upload to
    /// "name (1).ext", "name (2).ext", ….
    #[arg(long, value_enum, value_name = "POLICY", default_value = "refuse")]
    on_conflict: OnConflictArg,
    /// Connections served at once; one more is answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// How long a client may take to send a request's head, and how long a
    /// connection with no request in flight stays open.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// How long a request body may go without a byte before it is answered
    /// 408.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// The slowest a request body may arrive, in bytes per second over
    /// --rate-window; slower is answered 408 and closed (0: no minimum).
    #[arg(long, value_name = "BYTES", default_value = "256", value_parser = parse_size)]
    min_rate: u64,
    /// The span over which --min-rate is measured.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    rate_window: std::time::Duration,
    /// How long an answer may wait on a client that does not read it
    /// before its connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    send_timeout: std::time::Duration,
    /// Requests in flight at once on one HTTP/2 connection.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    max_streams: u32,
    /// Requests in flight at once, all clients together; one more is
    /// answered 503.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests: u32,
    /// Requests in flight at once for one token or signed URL; one more is
    /// answered 503.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    max_requests_per_credential: u32,
    /// Discard partial uploads untouched this long (a part of a tus
    /// concatenation: while no part of its owner is touched).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    expire: std::time::Duration,
    /// Refuse (507) an upload that would bring the bytes held by uploads
    /// in progress (whole files as they arrive) above this.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    quota: Option<u64>,
    /// Refuse (507) an upload that would bring the bytes held by the
    /// uploads in progress of its token or signed URL above this.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    quota_per_credential: Option<u64>,
    /// Let in requests with `Authorization: Bearer TOKEN` only (with
    /// --token-file and --signing-key-file); repeatable.
    #[arg(long, value_name = "TOKEN")]
    token: Vec<String>,
    /// Serve HTTPS with the certificate chain in this PEM file (with --key).
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert, a PEM file.
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// A file of tokens, one per line.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Also let in upload URLs signed with the key in this file (`fileuploader sign`).
    #[arg(long, value_name = "FILE")]
    signing_key_file: Option<PathBuf>,
    /// Let pages of this web origin upload from a browser (CORS), e.g.
    /// `https://app.example`; `*` for any origin; repeatable.
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// Also let those pages send this request header (an application's
    /// own, such as `X-Tenant`, or one a client adds with `-H`); the
    /// protocols' own headers are always allowed; repeatable.
    #[arg(long, value_name = "NAME", requires = "cors_origin")]
    cors_allow_header: Vec<String>,
    /// Tell the application of every file that lands: POST its event (JSON,
    /// with an Idempotency-Key) to this http:// or https:// URL, or run this command
    /// with the event on standard input. Each event is kept with its
    /// landing until the hook takes it (2xx, or exit 0), and retried with
    /// backoff meanwhile, across restarts; see docs/HOOKS.md.
    #[arg(long, value_name = "URL|COMMAND")]
    after_landing: Option<String>,
    /// Ask the application before each upload is created, before any of
    /// its bytes are stored: POST the upload's JSON to this http(s):// URL, or
    /// run this command with it on standard input. Its answer (JSON) may
    /// refuse the upload with a status and message the client sees, settle
    /// another name, or attach metadata to its landing; a hook that fails
    /// or takes over 10 s refuses the upload (503). See docs/HOOKS.md.
    #[arg(long, value_name = "URL|COMMAND")]
    before_creation: Option<String>,
    /// Trust the CA certificates in this PEM file, beside the system's
    /// roots, for https:// hooks (a private CA's).
    #[arg(long, value_name = "FILE")]
    hook_cacert: Option<PathBuf>,
    /// Ask the application for its word on each landing while the client
    /// waits (10 s at most): what this http(s):// URL answers (2xx) to the
    /// landing's event, or this command prints, becomes the body of the
    /// answer that reports the landing, in every protocol (the client's
    /// --json body and -o). A hook that fails leaves the receiver's own
    /// answer; the file has landed either way.
    #[arg(long, value_name = "URL|COMMAND")]
    landing_answer: Option<String>,
    /// Sign a receipt for every file that lands with the Ed25519 key in
    /// FILE (PKCS#8 PEM, as `fileuploader receipt-key` or `openssl genpkey
    /// -algorithm ed25519` writes it): upload id, landed name, length,
    /// CRC32C and SHA-256 of the landed bytes, the sender's subject and the
    /// time, in the Upload-Receipt header of the answer that reports the
    /// landing.
    #[arg(long, value_name = "FILE")]
    receipt_key: Option<PathBuf>,
    /// With --store s3://…: serve the Companion routes (`@uppy/aws-s3`,
    /// `upload --protocol companion`) below this path, so browsers send
    /// their bytes straight to the bucket on URLs this receiver signs.
    #[arg(long, value_name = "PATH", default_value = "/s3")]
    companion_prefix: String,
}

/// `upload --protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProtocolArg {
    Segmented,
    Tus,
    Ietf,
    Companion,
    S3,
    Auto,
}

/// `--on-conflict`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OnConflictArg {
    Refuse,
    Overwrite,
    Rename,
}

impl From<OnConflictArg> for fileuploader_server::OnConflict {
    fn from(arg: OnConflictArg) -> Self {
        match arg {
            OnConflictArg::Refuse => Self::Refuse,
            OnConflictArg::Overwrite => Self::Overwrite,
            OnConflictArg::Rename => Self::Rename,
        }
    }
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Upload this file instead of a generated sample.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The size of the generated sample.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size)]
    size: u64,
    #[command(flatten)]
    transfer: TransferArgs,
}

/// A listening address: an IP address or a host name (`localhost:8080`)
/// with its port; a name listens on the first address it resolves to.
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs as _;
    let mut found = text.to_socket_addrs().map_err(|e| {
        format!("{text:?} is not HOST:PORT that resolves ({e}); try 127.0.0.1:8080 or 0.0.0.0:8080")
    })?;
    found
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address; try 127.0.0.1:8080"))
}

fn parse_field(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("{text:?} has an empty KEY"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not 'Name: value'"))?;
    if name.trim().is_empty() {
        return Err(format!("{text:?} has an empty header name"));
    }
    Ok((name.trim().to_owned(), value.trim_start().to_owned()))
}

/// Bounds glibc's malloc to two arenas for a receiver: with one arena per
/// thread that touched memory (its blocking pool runs hundreds), freed
/// request buffers stay spread over arenas, and 200 uploads at once peaked
/// 15 MiB higher. Where the allocator is not glibc's there is nothing to do.
fn fewer_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning value, before other threads run.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        fewer_malloc_arenas();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error -6: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Upload(args) => {
                if args.name.is_some() && args.paths.len() > 1 {
                    use clap::CommandFactory;
                    Cli::command()
                        .error(
                            clap::error::ErrorKind::ArgumentConflict,
                            "--name names one remote file, but several paths were given",
                        )
                        .exit();
                }
                // Retries are said as they happen (a silent server is
                // heard of at its first idle timeout, not when retries end),
                // unless --quiet.
                let quiet = if args.transfer.quiet {
                    "fileuploader_server=warn"
                } else {
                    "fileuploader::retry=warn,fileuploader_server=warn"
                };
                log_to_stderr(args.verbose, quiet);
                upload::run(args).await
            }
            Command::Completions { shell } => {
                use clap::CommandFactory;
                let mut command = Cli::command();
                clap_complete::generate(
                    shell,
                    &mut command,
                    "fileuploader",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
            Command::Man => {
                man().map_err(|e| Failure::new(fileuploader_core::code::FAILED, e.to_string()))
            }
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Sign(args) => sign(&args),
            Command::ReceiptKey(args) => receipts::make_key(&args),
            Command::Verify(args) => receipts::verify(&args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Interrupted (Ctrl-C): the shell's 128 + SIGINT.
        Err(e) if e.code == fileuploader_core::code::CANCELLED => {
            eprintln!("error {}: {}", e.code, e.message);
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error {}: {}", e.code, e.message);
            ExitCode::FAILURE
        }
    }
}

/// The manual page: the command, then each subcommand's synopsis,
/// description and options.
fn man() -> std::io::Result<()> {
    use clap::CommandFactory;
    let command = Cli::command();
    let out = &mut std::io::stdout().lock();
    clap_mangen::Man::new(command.clone()).render(out)?;
    for sub in command.get_subcommands() {
        let name = format!("fileuploader {}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone().bin_name(name));
        page.render_name_section(out)?;
        page.render_synopsis_section(out)?;
        page.render_description_section(out)?;
        page.render_options_section(out)?;
    }
    Ok(())
}

/// Logs the library's requests, responses and retries to standard error:
/// `-v` at info, `-vv` at debug, else what `quiet` says (the receiver's
/// warnings, and for `serve` a line per landed file); `FILEUPLOADER_LOG` (a
/// tracing filter, like `fileuploader=debug,hyper=info`) overrides them.
fn log_to_stderr(verbose: u8, quiet: &str) {
    let filter = match std::env::var("FILEUPLOADER_LOG") {
        Ok(filter) => filter,
        Err(_) if verbose == 0 => quiet.to_owned(),
        Err(_) if verbose == 1 => "fileuploader=info".to_owned(),
        Err(_) => "fileuploader=debug,fileuploader_core=debug,fileuploader_transport_hyper=debug"
            .to_owned(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A failure the command reports: `error <code>: <message>`.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
    /// The receiver's answer the failure came of, if it came of one.
    answer: Option<Box<fileuploader_core::FinalAnswer>>,
}

impl From<fileuploader_core::Error> for Failure {
    /// The message, then each cause the message does not already say.
    fn from(e: fileuploader_core::Error) -> Self {
        let mut message = e.message().to_owned();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            cause = c.source();
        }
        Failure {
            code: e.code(),
            message,
            answer: e.answer().cloned().map(Box::new),
        }
    }
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            answer: None,
        }
    }
}

/// Reads a key or token file, or says which and why not.
fn read_secret(path: &std::path::Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            fileuploader_core::code::FILE_NOT_FOUND,
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

fn sign(args: &SignArgs) -> Result<(), Failure> {
    let key = read_secret(&args.key_file)?;
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + args.valid_for.as_secs();
    let rule = match (&args.name, &args.prefix) {
        (Some(n), _) => Some(fileuploader_server::NameRule::Exactly(n.clone())),
        (None, Some(p)) => Some(fileuploader_server::NameRule::Prefix(p.clone())),
        (None, None) => None,
    };
    let url = fileuploader_server::sign_url(
        key.trim().as_bytes(),
        &args.url,
        expires,
        rule.as_ref(),
        args.max_size,
        args.subject.as_deref(),
    )
    .map_err(|e| {
        Failure::new(
            fileuploader_core::code::INVALID_URL,
            format!("{:?} is not a URL: {e}", args.url),
        )
    })?;
    println!("{url}");
    Ok(())
}

/// A flag whose value cannot be used: error -10, naming the flag.
fn bad_flag(flag: &str, e: impl std::fmt::Display) -> Failure {
    Failure::new(
        fileuploader_core::code::INVALID_OPTION,
        format!("{flag}: {e}"),
    )
}

/// The receiver's access rules from the flags. A token file that holds no
/// token, or a key file or token that is blank, stops start-up: access
/// never fails open.
fn access(args: &ServeArgs) -> Result<fileuploader_server::Access, Failure> {
    let refused = |e: fileuploader_server::BlankSecret, from: String| {
        Failure::new(
            fileuploader_core::code::INVALID_OPTION,
            format!("{from}: {e}"),
        )
    };
    let mut access = fileuploader_server::Access::open();
    for token in &args.token {
        access = access
            .token(token.clone())
            .map_err(|e| refused(e, "--token".into()))?;
    }
    if let Some(path) = &args.token_file {
        let tokens = tokens_in(&read_secret(path)?);
        if tokens.is_empty() {
            return Err(Failure::new(
                fileuploader_core::code::INVALID_OPTION,
                format!(
                    "--token-file {} holds no token (one per line; lines starting with # are comments), so the receiver would be open to anyone; put tokens in it",
                    path.display()
                ),
            ));
        }
        for token in tokens {
            access = access
                .token(token)
                .map_err(|e| refused(e, format!("--token-file {}", path.display())))?;
        }
    }
    if let Some(path) = &args.signing_key_file {
        access = access
            .signing_key(read_secret(path)?.trim().as_bytes().to_vec())
            .map_err(|e| refused(e, format!("--signing-key-file {}", path.display())))?;
    }
    Ok(access)
}

/// The tokens of a token file: one per line, trimmed; blank lines and
/// lines starting with `#` are skipped.
fn tokens_in(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// The receiver's CORS rules from the flags, if any origin is given.
fn cors(args: &ServeArgs) -> Result<Option<fileuploader_server::Cors>, Failure> {
    let cors = match args.cors_origin.as_slice() {
        [] => return Ok(None),
        origins if origins.iter().any(|o| o == "*") => Ok(fileuploader_server::Cors::any()),
        origins => fileuploader_server::Cors::origins(origins),
    };
    cors.and_then(|c| c.allow_headers(&args.cors_allow_header))
        .map(Some)
        .map_err(|e| Failure::new(fileuploader_core::code::INVALID_OPTION, e.to_string()))
}

/// Connections the kernel may hold for the receiver before it accepts them
/// (the system's own default is often 128).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A receiver keeping uploads in the bucket at `location`.
#[cfg(feature = "s3")]
async fn bucket(
    location: &str,
    args: &ServeArgs,
) -> Result<fileuploader_server::Receiver, Failure> {
    let location: fileuploader_store_s3::S3Location = location.parse().map_err(|e| {
        Failure::new(
            fileuploader_core::code::INVALID_OPTION,
            format!("--store: {e}"),
        )
    })?;
    let options = fileuploader_store_s3::S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        key: None,
    };
    let store = fileuploader_store_s3::S3Store::connect(&location, &options)
        .await
        .map_err(|e| Failure::new(fileuploader_core::code::ACCESS_DENIED, e.to_string()))?;
    Ok(fileuploader_server::Receiver::with_store(store))
}

/// `upload --protocol s3`: the bucket at `--url` as the parts' backend,
/// and the `http(s)://` address its objects have there.
#[cfg(feature = "s3")]
async fn bucket_parts(
    args: &UploadArgs,
) -> Result<
    (
        std::sync::Arc<dyn fileuploader_core::protocol::Protocol>,
        String,
    ),
    Failure,
> {
    use fileuploader_store_s3::client::{BucketParts, S3Target};
    let target: S3Target = args
        .url
        .parse()
        .map_err(|e| Failure::new(fileuploader_core::code::INVALID_URL, format!("--url: {e}")))?;
    let options = fileuploader_store_s3::S3Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        key: None,
    };
    let backend = BucketParts::connect(&target, &options)
        .await
        .map_err(|e| Failure::new(fileuploader_core::code::ACCESS_DENIED, e.to_string()))?;
    let url = backend.object_url(&target.key);
    let parts = fileuploader_core::protocol::Parts::new(std::sync::Arc::new(backend));
    Ok((std::sync::Arc::new(parts), url))
}

/// Without the `s3` feature: says how to get it.
#[cfg(not(feature = "s3"))]
async fn bucket_parts(
    _args: &UploadArgs,
) -> Result<
    (
        std::sync::Arc<dyn fileuploader_core::protocol::Protocol>,
        String,
    ),
    Failure,
> {
    Err(without_s3())
}

/// Why a build without the `s3` feature cannot use a bucket, and how to
/// get one that can.
#[cfg(not(feature = "s3"))]
fn without_s3() -> Failure {
    Failure::new(
        fileuploader_core::code::INVALID_OPTION,
        "this fileuploader was built without S3 support; build it with the s3 feature: cargo install --path crates/cli --features s3 (or cargo build --release -p fileuploader-cli --features s3)",
    )
}

/// Without the `s3` feature: says how to get it.
#[cfg(not(feature = "s3"))]
async fn bucket(
    _location: &str,
    _args: &ServeArgs,
) -> Result<fileuploader_server::Receiver, Failure> {
    Err(without_s3())
}

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    log_to_stderr(0, "fileuploader_server=info");
    let (receiver, into) = match (&args.store, &args.dir) {
        (Some(location), _) => (bucket(location, &args).await?, location.clone()),
        (None, dir) => {
            let dir = dir.clone().unwrap_or_default();
            let receiver = fileuploader_server::Receiver::new(&dir).map_err(|e| {
                Failure::new(
                    fileuploader_core::code::ACCESS_DENIED,
                    format!("cannot use {}: {e}", dir.display()),
                )
            })?;
            (receiver, dir.display().to_string())
        }
    };
    let receiver = receiver
        .max_upload_size(args.max_size)
        .max_append_size(args.max_append_size)
        .discard(args.discard)
        .on_conflict(args.on_conflict.into())
        .limits({
            let mut limits = fileuploader_server::Limits::default();
            limits.max_connections = args.max_connections as usize;
            limits.header_timeout = args.header_timeout;
            limits.idle_timeout = args.idle_timeout;
            limits.min_rate = args.min_rate;
            limits.rate_window = args.rate_window;
            limits.send_timeout = args.send_timeout;
            limits.max_streams = args.max_streams;
            limits.max_requests = args.max_requests as usize;
            limits.max_requests_per_credential = args.max_requests_per_credential as usize;
            limits
        })
        .expire(args.expire)
        .companion_prefix(&args.companion_prefix)
        .access(access(&args)?);
    let receiver = match args.quota {
        Some(bytes) => receiver.quota(bytes),
        None => receiver,
    };
    let receiver = match args.quota_per_credential {
        Some(bytes) => receiver.quota_per_credential(bytes),
        None => receiver,
    };
    let receiver = match cors(&args)? {
        Some(cors) => receiver.cors(cors),
        None => receiver,
    };
    let receiver = match &args.hook_cacert {
        Some(path) => receiver
            .hook_ca(path)
            .map_err(|e| bad_flag("--hook-cacert", e))?,
        None => receiver,
    };
    let receiver = match &args.after_landing {
        Some(hook) => {
            let hook = Hook::parse(hook).map_err(|e| bad_flag("--after-landing", e))?;
            receiver
                .after_landing(hook)
                .map_err(|e| bad_flag("--after-landing", e))?
        }
        None => receiver,
    };
    let receiver = match &args.before_creation {
        Some(hook) => receiver
            .before_creation(Hook::parse(hook).map_err(|e| bad_flag("--before-creation", e))?),
        None => receiver,
    };
    let receiver = match &args.landing_answer {
        Some(hook) => {
            receiver.landing_answer(Hook::parse(hook).map_err(|e| bad_flag("--landing-answer", e))?)
        }
        None => receiver,
    };
    let receiver = match &args.receipt_key {
        Some(path) => {
            let key = ReceiptKey::from_pem_file(path).map_err(|e| bad_flag("--receipt-key", e))?;
            receiver
                .receipts(key)
                .map_err(|e| bad_flag("--receipt-key", e))?
        }
        None => receiver,
    };
    let listener = listen(args.addr).map_err(|e| {
        Failure::new(
            fileuploader_core::code::CONNECT,
            format!("cannot listen on {}: {e}", args.addr),
        )
    })?;
    let (receiver, scheme) = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let tls = receiver.tls(cert, key).map_err(|e| {
                Failure::new(
                    fileuploader_core::code::TLS,
                    format!("cannot serve TLS: {e}"),
                )
            })?;
            (tls, "https")
        }
        _ => (receiver, "http"),
    };
    eprintln!("receiving on {scheme}://{}/ into {into}", args.addr);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| {
        Failure::new(
            fileuploader_core::code::FAILED,
            format!("cannot watch SIGTERM: {e}"),
        )
    })?;
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("stopping: no new connections; finishing requests in flight");
    };
    receiver.serve_until(listener, stop).await.map_err(|e| {
        Failure::new(
            fileuploader_core::code::FAILED,
            format!("receiver stopped: {e}"),
        )
    })
}
