//! `fileuploader receipt-key` and `fileuploader verify`: making the key a
//! receiver signs receipts with, and checking a receipt later.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use fileuploader_core::code;
use fileuploader_server::receipts::{self, ReceiptKey, Unverified};

use crate::Failure;

/// `fileuploader receipt-key`.
#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// Where the private key goes; the public key goes to FILE.pub.
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// `fileuploader verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The receipt, as `upload --receipt-dir` kept it.
    #[arg(value_name = "RECEIPT")]
    receipt: PathBuf,
    /// The file the receipt should be for.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// The receiver's public key (the FILE.pub of `receipt-key`).
    #[arg(long, value_name = "PUB")]
    key: PathBuf,
}

/// Writes a new key pair, never over a file that is there.
pub(crate) fn make_key(args: &KeyArgs) -> Result<(), Failure> {
    let public = args.file.with_extension(match args.file.extension() {
        Some(ext) => format!("{}.pub", ext.to_string_lossy()),
        None => "pub".to_owned(),
    });
    let (private_pem, public_pem) =
        ReceiptKey::generate().map_err(|e| Failure::new(code::FAILED, e))?;
    write_new(&args.file, &private_pem, 0o600)?;
    write_new(&public, &public_pem, 0o644)?;
    eprintln!(
        "wrote the private key to {} (give it to `serve --receipt-key`) and the public key to {} (give it to `verify --key`)",
        args.file.display(),
        public.display()
    );
    Ok(())
}

/// Writes `text` to a new file at `path` with `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |e: std::io::Error| {
        let code = match e.kind() {
            std::io::ErrorKind::AlreadyExists => code::INVALID_OPTION,
            _ => code::FAILED,
        };
        Failure::new(code, format!("cannot write {}: {e}", path.display()))
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .map_err(failed)
}

/// Checks a receipt, says what it vouches for, or fails with what does
/// not hold (error 39).
pub(crate) fn verify(args: &VerifyArgs) -> Result<(), Failure> {
    let unreadable = |path: &Path, e: std::io::Error| {
        let code = match e.kind() {
            std::io::ErrorKind::NotFound => code::FILE_NOT_FOUND,
            _ => code::READ_FAILED,
        };
        Failure::new(code, format!("cannot read {}: {e}", path.display()))
    };
    let compact =
        std::fs::read_to_string(&args.receipt).map_err(|e| unreadable(&args.receipt, e))?;
    let key = receipts::public_key_from_pem_file(&args.key)
        .map_err(|e| Failure::new(code::INVALID_OPTION, e))?;
    let bytes = match &args.file {
        Some(file) => Some(digests(file).map_err(|e| unreadable(file, e))?),
        None => None,
    };
    let receipt = receipts::verify(&compact, &key, bytes).map_err(|e| {
        let what = match (&e, &args.file) {
            (Unverified::OtherBytes(_), Some(file)) => file,
            _ => &args.receipt,
        };
        let what = what.display();
        Failure::new(code::RECEIPT_MISMATCH, format!("{what}: {e}"))
    })?;
    let of_file = match &args.file {
        Some(file) => format!(", and it is {}'s", file.display()),
        None => String::new(),
    };
    let subject = match receipt.subject.as_str() {
        "" => "anyone (open access)",
        subject => subject,
    };
    println!(
        "the receipt holds: {:?} landed, {} bytes, SHA-256 {}, upload {:?}, sent by {subject}, signed at {} (Unix time){of_file}",
        receipt.name, receipt.length, receipt.sha256, receipt.upload_id, receipt.issued_at
    );
    Ok(())
}

/// The length, CRC32C and SHA-256 of the file at `path`.
fn digests(path: &Path) -> std::io::Result<(u64, u32, [u8; 32])> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let (mut len, mut crc, mut sha) = (0u64, 0u32, sha2::Sha256::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok((len, crc, sha.finalize().into())),
            n => {
                len += n as u64;
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                sha.update(&buf[..n]);
            }
        }
    }
}
