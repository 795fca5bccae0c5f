//! The store conformance suite (`fileuploader_store::conformance`) on the
//! S3 store against the Garage cluster of `cargo xtask interop`, each
//! scenario under a prefix of its own; a landing record in the form older
//! receivers wrote, read and rewritten; a damaged upload record, which
//! does not stop expiry; and a whole file cut off before its landing was
//! recorded, landed again under its id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use fileuploader_store::conformance::{self, Fixture};
use fileuploader_store::{Arrival, Landed, NewUpload, OnConflict, Quota, Store};
use fileuploader_store_s3::{S3Location, S3Options, S3Store};

use crate::garage::{Garage, REGION};

/// One scenario's store: a prefix of `bucket` through node 0.
struct InBucket {
    store: S3Store,
    location: S3Location,
    options: S3Options,
    sdk: aws_sdk_s3::Client,
}

#[async_trait]
impl Fixture for InBucket {
    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(
            S3Store::connect(&self.location, &self.options)
                .await
                .expect("the bucket answers again"),
        )
    }

    async fn file(&self, name: &str) -> Option<Vec<u8>> {
        let object = self
            .sdk
            .get_object()
            .bucket(&self.location.bucket)
            .key(format!("{}/{name}", self.location.prefix))
            .send()
            .await
            .ok()?;
        Some(object.body.collect().await.ok()?.to_vec())
    }
}

impl InBucket {
    /// A store below `prefix` of `bucket`.
    async fn open(
        options: &S3Options,
        sdk: &aws_sdk_s3::Client,
        bucket: &str,
        prefix: String,
    ) -> Self {
        let location = S3Location {
            bucket: bucket.to_owned(),
            prefix,
        };
        let store = S3Store::connect(&location, options)
            .await
            .expect("the bucket answers");
        InBucket {
            store,
            location,
            options: options.clone(),
            sdk: sdk.clone(),
        }
    }

    /// A landing record as receivers before version 2 wrote it (the
    /// segmented statement beside its owner) is read, and rewritten in
    /// this version's form.
    async fn older_records_read_and_rewritten(&self) {
        let key = format!("{}/.fileuploader-state/landed/old-1", self.location.prefix);
        let old = r#"{"owner":"alice","statement":{"state":"landed","upload_id":"old-1","name":"old.pdf","length":25,"crc32c":"1a2b3c4d"}}"#;
        self.sdk
            .put_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .body(old.as_bytes().to_vec().into())
            .send()
            .await
            .expect("the old record is stored");
        let landed = self
            .store
            .landed("old-1")
            .await
            .expect("read")
            .expect("there");
        assert_eq!(
            landed,
            Landed::new("old-1", "alice", "old.pdf", 25, Some(0x1a2b_3c4d)),
            "an older landing record reads"
        );
        let kept = self
            .sdk
            .get_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .send()
            .await
            .expect("the record is there")
            .body
            .collect()
            .await
            .expect("read")
            .to_vec();
        assert_eq!(
            String::from_utf8_lossy(&kept),
            landed.to_record(),
            "an older landing record is rewritten in this version's form"
        );
    }

    /// An upload record that cannot be read (damaged in the bucket) does
    /// not stop the expiry sweep: it expires with the other stale uploads.
    async fn a_damaged_record_does_not_stop_expiry(&self) {
        for id in ["sound", "damaged"] {
            let new = NewUpload {
                id: id.to_owned(),
                total: 4,
                name: format!("{id}.bin"),
                owner: String::new(),
                partial: false,
                metadata: None,
            };
            self.store.begin(new, Quota::none()).await.expect("begun");
        }
        let key = format!(
            "{}/.fileuploader-state/u/damaged/meta-4",
            self.location.prefix
        );
        self.sdk
            .put_object()
            .bucket(&self.location.bucket)
            .key(&key)
            .body(b"{not a record".to_vec().into())
            .send()
            .await
            .expect("the record is damaged");
        // The bucket keeps times to the second.
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        let expired = self
            .store
            .expire(std::time::Duration::from_secs(1))
            .await
            .expect("a damaged record does not stop expiry");
        assert_eq!(expired, 2, "the sound and the damaged upload expire");
        for id in ["sound", "damaged"] {
            assert_eq!(self.store.upload(id).await.expect("read"), None, "{id}");
        }
    }
}

impl InBucket {
    /// A whole file whose landing was cut off between its object and its
    /// record (its request's client gone, the store failing) leaves its
    /// object at the name, marked as its upload's: the same upload sent
    /// again is not refused the name, and its bytes replace the object.
    async fn a_whole_file_cut_off_before_its_record_lands_again(&self) {
        let land = |bytes: &'static [u8]| async move {
            let mut writer = self
                .store
                .write_whole("", Quota::none())
                .await
                .expect("a writer");
            writer
                .write(bytes::Bytes::from_static(bytes))
                .await
                .expect("taken");
            let arrival = Arrival::whole(writer, Some("cut"), "");
            self.store
                .land(arrival, "cut.bin", OnConflict::Refuse)
                .await
        };
        land(b"first").await.expect("landed");
        let record = format!("{}/.fileuploader-state/landed/cut", self.location.prefix);
        self.sdk
            .delete_object()
            .bucket(&self.location.bucket)
            .key(&record)
            .send()
            .await
            .expect("the record is gone, as if never written");
        let taken = |id| self.store.name_taken("cut.bin", id);
        assert!(
            !taken(Some("cut")).await.expect("asked"),
            "not taken for its own upload"
        );
        assert!(
            taken(Some("other")).await.expect("asked"),
            "taken for another"
        );
        assert!(
            taken(None).await.expect("asked"),
            "taken for a file without an id"
        );
        let landed = land(b"second").await.expect("landed again");
        assert_eq!((landed.name.as_str(), landed.length), ("cut.bin", 6));
        assert_eq!(self.file("cut.bin").await.as_deref(), Some(&b"second"[..]));
        let recorded = self.store.landed("cut").await.expect("read");
        assert_eq!(recorded.map(|l| l.length), Some(6), "recorded this time");
    }
}

/// Runs the suite on `bucket`; the first broken promise, as its panic said.
pub(crate) fn run(garage: &Garage, bucket: &str) -> Result<(), String> {
    let options = S3Options {
        endpoint: Some(garage.endpoints[0].clone()),
        region: Some(REGION.to_owned()),
        key: Some((garage.key_id.clone(), garage.secret.clone())),
    };
    let sdk = garage.sdk(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let bucket = bucket.to_owned();
    let scenario = Arc::new(AtomicUsize::new(0));
    let suite = async move {
        let make = || {
            let (options, sdk, bucket) = (options.clone(), sdk.clone(), bucket.clone());
            let n = scenario.fetch_add(1, Ordering::Relaxed);
            async move {
                Box::new(InBucket::open(&options, &sdk, &bucket, format!("conformance-{n}")).await)
                    as Box<dyn Fixture>
            }
        };
        conformance::run_all(&make).await;
        InBucket::open(&options, &sdk, &bucket, "conformance-old".to_owned())
            .await
            .older_records_read_and_rewritten()
            .await;
        InBucket::open(&options, &sdk, &bucket, "conformance-damaged".to_owned())
            .await
            .a_damaged_record_does_not_stop_expiry()
            .await;
        InBucket::open(&options, &sdk, &bucket, "conformance-cut".to_owned())
            .await
            .a_whole_file_cut_off_before_its_record_lands_again()
            .await;
    };
    runtime.block_on(async {
        tokio::spawn(suite)
            .await
            .map_err(|e| match e.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "the suite panicked".to_owned()),
                Err(e) => e.to_string(),
            })
    })
}
