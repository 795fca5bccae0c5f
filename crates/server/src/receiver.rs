//! The receiver's configuration: its store, limits and rules, set by a
//! builder; the doors and the accept loop read it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::appends;
pub use crate::auth::Access;
pub use crate::cors::Cors;
use crate::hooks::{Hook, Teller};
use crate::limits::Admission;
pub use crate::limits::Limits;
use crate::receipts::ReceiptKey;
use crate::store::{FsStore, Store, StoreError};
pub use crate::store::{OnConflict, Quota};
use crate::{Refusal, DEFAULT_EXPIRE, DEFAULT_MAX_UPLOAD_SIZE};
pub use fileuploader_wire::RangeSet;
use rustls_pki_types::CertificateDer;

/// The receiver: a store, a size limit, and the rules of who may upload
/// what. Cheap to clone; clones share the store.
#[derive(Debug, Clone)]
pub struct Receiver {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) max_upload_size: u64,
    /// The most one creation or append of the draft may carry, if bounded.
    pub(crate) max_append_size: Option<u64>,
    pub(crate) discard: bool,
    pub(crate) on_conflict: OnConflict,
    pub(crate) limits: Limits,
    pub(crate) access: Access,
    pub(crate) expire: Duration,
    pub(crate) quota: Quota,
    pub(crate) tls: Option<Tls>,
    pub(crate) grace: Duration,
    pub(crate) cors: Cors,
    /// Who is asked before an upload is created, if anyone.
    pub(crate) before_creation: Option<Teller>,
    /// What an `https://` hook's certificate may chain to, beside the
    /// system's roots.
    pub(crate) hook_roots: Vec<CertificateDer<'static>>,
    /// Who is told of each landing, if anyone.
    pub(crate) after_landing: Option<Hook>,
    /// Whose word answers a landing, if anyone's.
    pub(crate) landing_answer: Option<Teller>,
    /// The key that signs each landing's receipt, if any.
    pub(crate) receipts: Option<ReceiptKey>,
    /// Appends in flight, which a newer request for their upload ends.
    pub(crate) appends: appends::Appends,
    /// Requests in flight, all together and per credential.
    pub(crate) requests: Arc<Admission>,
    /// Where the Companion routes are served, when the store takes direct
    /// uploads.
    pub(crate) companion_prefix: String,
    /// The landings the operator heard of lately, shared by clones.
    pub(crate) told: Arc<crate::uploads::Told>,
}

/// The TLS side of the receiver, when it serves HTTPS.
#[derive(Clone)]
pub(crate) struct Tls(pub(crate) tokio_rustls::TlsAcceptor);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl Receiver {
    /// A receiver landing files in `dir` (created if missing), through an
    /// [`FsStore`]: partial uploads live in `dir/.fileuploader-partial/`
    /// until complete.
    ///
    /// # Errors
    ///
    /// When the directories cannot be created.
    pub fn new(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Self::with_store(FsStore::new(dir)?))
    }

    /// A receiver keeping uploads in `store`.
    pub fn with_store(store: impl Store) -> Self {
        Receiver {
            store: Arc::new(store),
            max_upload_size: DEFAULT_MAX_UPLOAD_SIZE,
            max_append_size: None,
            discard: false,
            on_conflict: OnConflict::default(),
            limits: Limits::default(),
            access: Access::default(),
            expire: DEFAULT_EXPIRE,
            quota: Quota::none(),
            tls: None,
            grace: Duration::from_secs(30),
            cors: Cors::default(),
            before_creation: None,
            hook_roots: Vec::new(),
            after_landing: None,
            landing_answer: None,
            receipts: None,
            appends: appends::Appends::default(),
            requests: Arc::default(),
            companion_prefix: crate::doors::companion::DEFAULT_PREFIX.to_owned(),
            told: Arc::default(),
        }
    }

    /// Serves the Companion routes (for `@uppy/aws-s3` and our client's
    /// `companion` protocol) below `prefix` (default `/s3`), when the
    /// store takes direct uploads (an S3 bucket): browsers then send their
    /// bytes straight to the bucket, on URLs the receiver signs under its
    /// rules. An empty prefix is taken as `/s3`.
    #[must_use]
    pub fn companion_prefix(mut self, prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        self.companion_prefix = if prefix.is_empty() {
            crate::doors::companion::DEFAULT_PREFIX.to_owned()
        } else if prefix.starts_with('/') {
            prefix.to_owned()
        } else {
            format!("/{prefix}")
        };
        self
    }

    /// Refuses uploads larger than `bytes` with 413 (default 16 GiB).
    #[must_use]
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.max_upload_size = bytes;
        self
    }

    /// Bounds what one creation or append of the resumable-upload draft
    /// may carry to `bytes`, announced as `Upload-Limit: max-append-size`
    /// (interop 6 on) and refused with 413 beyond (default: unbounded but
    /// by the upload's size). tus has no way to announce it, so tus
    /// requests are bounded by the upload's size only.
    #[must_use]
    pub fn max_append_size(mut self, bytes: Option<u64>) -> Self {
        self.max_append_size = bytes.map(|b| b.max(1));
        self
    }

    /// What landing does when a file of the same name is there already
    /// (default: refuse with 409).
    #[must_use]
    pub fn on_conflict(mut self, policy: OnConflict) -> Self {
        self.on_conflict = policy;
        self
    }

    /// Serves HTTPS with the certificate chain and private key in these PEM
    /// files (HTTP/2 by ALPN, else HTTP/1.1).
    ///
    /// # Errors
    ///
    /// When the files cannot be read or do not hold a matching chain and key.
    pub fn tls(mut self, cert_pem: &Path, key_pem: &Path) -> std::io::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |what: &Path, e: &dyn fmt::Display| {
            std::io::Error::other(format!("{}: {e}", what.display()))
        };
        let certs = CertificateDer::pem_file_iter(cert_pem)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(cert_pem, &e))?;
        let key = PrivateKeyDer::from_pem_file(key_pem).map_err(|e| bad(key_pem, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(cert_pem, &e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(cert_pem, &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        self.tls = Some(Tls(tokio_rustls::TlsAcceptor::from(Arc::new(config))));
        Ok(self)
    }

    /// How long a stopping receiver lets requests in flight finish
    /// (default 30 s).
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Which web origins may upload from a browser (default: none).
    #[must_use]
    pub fn cors(mut self, cors: Cors) -> Self {
        self.cors = cors;
        self
    }

    /// Who may use the receiver (default: anyone).
    #[must_use]
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// Discards partial uploads untouched for `ttl` (default 24 h); the
    /// janitor of [`serve`](Self::serve) checks every quarter of it, at
    /// most every minute.
    #[must_use]
    pub fn expire(mut self, ttl: Duration) -> Self {
        self.expire = ttl;
        self
    }

    /// Refuses (507) an upload that would bring the bytes held by uploads
    /// in progress above `bytes`, before it stores anything (a whole file:
    /// once its bytes would); see [`Quota`].
    #[must_use]
    pub fn quota(mut self, bytes: u64) -> Self {
        self.quota.total = Some(bytes);
        self
    }

    /// Refuses (507) an upload that would bring the bytes held by the
    /// uploads in progress of its credentials above `bytes`, so that one
    /// tenant cannot fill the room of all; see [`Quota`].
    #[must_use]
    pub fn quota_per_credential(mut self, bytes: u64) -> Self {
        self.quota.per_credential = Some(bytes);
        self
    }

    /// Discards the partial uploads untouched for the expiry time now;
    /// returns how many.
    ///
    /// # Errors
    ///
    /// When the records cannot be read or a partial file removed.
    pub async fn expire_now(&self) -> Result<usize, Refusal> {
        Ok(self.store.expire(self.expire).await?)
    }

    /// Records the landings of files clients placed in the store
    /// themselves, on forms and requests the receiver signed for them (see
    /// `docs/DEPLOYING.md`, "Browsers straight to the bucket"); returns
    /// how many landed. [`serve`](Receiver::serve) does this every second
    /// when its store takes direct uploads.
    ///
    /// # Errors
    ///
    /// When the store's watches cannot be listed.
    pub async fn settle_watches_now(&self) -> Result<usize, Refusal> {
        let Some(direct) = self.store.direct() else {
            return Ok(0);
        };
        let landed = direct.settle_watches().await?;
        for one in &landed {
            self.told.tell(one, crate::uploads::Via::Direct);
        }
        Ok(landed.len())
    }

    /// Sets the limits on connections, time and memory per request.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Asks `hook` before each upload that is to land is created, before
    /// any of its bytes are stored: it may refuse it (with a 4xx status
    /// and a message the client sees), settle the name it lands under, or
    /// attach metadata carried to its after-landing event. A hook that
    /// fails or does not answer in 10 s refuses the upload (503); see
    /// `docs/HOOKS.md` for what it is sent and may answer.
    #[must_use]
    pub fn before_creation(mut self, hook: Hook) -> Self {
        self.before_creation = Some(Teller::new(hook, &self.hook_roots));
        self
    }

    /// Trusts the certificates in PEM file `path` (a private CA's), beside
    /// the system's roots, for `https://` hooks.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds no certificate.
    pub fn hook_ca(mut self, path: &Path) -> std::io::Result<Self> {
        use rustls_pki_types::pem::PemObject;
        let bad = |e: &dyn fmt::Display| std::io::Error::other(format!("{}: {e}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| bad(&e))?;
        if certs.is_empty() {
            return Err(bad(&"no certificate in it"));
        }
        self.hook_roots = certs;
        for teller in [&mut self.before_creation, &mut self.landing_answer] {
            if let Some(told) = teller.take() {
                *teller = Some(Teller::new(told.hook().clone(), &self.hook_roots));
            }
        }
        Ok(self)
    }

    /// Asks `hook` for its word on each landing as the request that landed
    /// it waits (10 s at most): the body it answers (2xx, or a command's
    /// output, at most 64 KiB) becomes the body of the answer that reports
    /// the landing, in every protocol, so that the client's final answer
    /// is the application's (the id it filed the document under, say). A
    /// hook that fails or is late leaves the receiver's own answer; the
    /// file has landed either way. For notifications that must not be
    /// lost, use [`after_landing`](Self::after_landing).
    #[must_use]
    pub fn landing_answer(mut self, hook: Hook) -> Self {
        self.landing_answer = Some(Teller::new(hook, &self.hook_roots));
        self
    }

    /// Tells `hook` of every file that lands from now on, at least once,
    /// through the store's outbox (see [`Hook`]): each landing's event is
    /// kept in its own commit and delivered by [`serve`](Self::serve).
    ///
    /// # Errors
    ///
    /// A store that keeps no events.
    pub fn after_landing(mut self, hook: Hook) -> Result<Self, StoreError> {
        self.store.keep_events()?;
        self.after_landing = Some(hook);
        Ok(self)
    }

    /// Signs a receipt with `key` for every file that lands from now on,
    /// sent in the `Upload-Receipt` header of each answer that reports its
    /// landing (see [`receipts`](crate::receipts)); the store digests each
    /// landing (SHA-256) for it.
    ///
    /// # Errors
    ///
    /// A store that does not digest landings.
    pub fn receipts(mut self, key: ReceiptKey) -> Result<Self, StoreError> {
        self.store.keep_digests()?;
        self.receipts = Some(key);
        Ok(self)
    }

    /// The receipt of `landed` as this receiver signs it, if it signs
    /// receipts.
    pub(crate) fn receipt_of(&self, landed: &crate::store::Landed) -> Option<String> {
        self.receipts.as_ref().and_then(|key| key.sign(landed))
    }

    /// Reads and discards every body, answering 200: a sink for benchmarks.
    #[must_use]
    pub fn discard(mut self, on: bool) -> Self {
        self.discard = on;
        self
    }

    /// The store uploads are kept in.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Which byte ranges of upload `id` have arrived, and of how many;
    /// `None` for an upload not in progress.
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn status(&self, id: &str) -> Result<Option<(u64, RangeSet)>, Refusal> {
        let upload = self.store.upload(id).await?;
        Ok(upload.map(|u| (u.begun.total, u.received)))
    }
}

/// Where partial uploads are kept, below the receiver's directory.
pub fn partial_dir(dir: &Path) -> PathBuf {
    dir.join(".fileuploader-partial")
}
