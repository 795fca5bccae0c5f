//! The conformance suite on the memory store, and on a store broken on
//! purpose (it acknowledges blocks before it keeps them), which the suite
//! must catch.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_store::conformance::{self, Fixture};
use fileuploader_store::{
    Block, BlockWriter, Landed, MemoryStore, NewUpload, OnConflict, Quota, Store, StoreError,
    Upload, WholeWriter, WriteBytes,
};
use fileuploader_wire::ContentRange;

/// A store over `memory`, whose files it shows; reopened, the same.
struct InMemory<S> {
    store: S,
    memory: MemoryStore,
}

impl<S: Store + Clone> InMemory<S> {
    fn fixture(wrap: impl Fn(MemoryStore) -> S) -> Box<dyn Fixture> {
        let memory = MemoryStore::new();
        Box::new(InMemory {
            store: wrap(memory.clone()),
            memory,
        })
    }
}

#[async_trait]
impl<S: Store + Clone> Fixture for InMemory<S> {
    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn file(&self, name: &str) -> Option<Vec<u8>> {
        self.memory.file(name)
    }
}

#[tokio::test]
async fn the_memory_store_keeps_every_promise() {
    conformance::run_all(|| async { InMemory::fixture(|m| m) }).await;
}

/// Tells a block acknowledged before (instead of) keeping it.
#[derive(Debug, Clone)]
struct Hasty(MemoryStore);

struct HastyBlock {
    inner: Box<dyn BlockWriter>,
    upload: Upload,
    start: u64,
}

#[async_trait]
impl WriteBytes for HastyBlock {
    async fn write(&mut self, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.write(bytes).await
    }
}

#[async_trait]
impl BlockWriter for HastyBlock {
    async fn finish(&mut self) -> Result<bool, StoreError> {
        self.inner.finish().await
    }

    async fn acknowledge(
        self: Box<Self>,
        len: u64,
        crc32c: Option<u32>,
    ) -> Result<Upload, StoreError> {
        let mut told = self.upload.clone();
        told.add(Block {
            start: self.start,
            end: self.start + len,
            crc32c,
        });
        Ok(told)
    }
}

#[async_trait]
impl Store for Hasty {
    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        self.0.upload(id).await
    }
    async fn begin(&self, new: NewUpload, quota: Quota) -> Result<Upload, StoreError> {
        self.0.begin(new, quota).await
    }
    async fn write_block(
        &self,
        upload: &Upload,
        range: ContentRange,
        sized: bool,
    ) -> Result<Box<dyn BlockWriter>, StoreError> {
        Ok(Box::new(HastyBlock {
            inner: self.0.write_block(upload, range, sized).await?,
            upload: upload.clone(),
            start: range.start,
        }))
    }
    async fn concatenate(
        &self,
        new: NewUpload,
        parts: &[Upload],
        quota: Quota,
    ) -> Result<Upload, StoreError> {
        self.0.concatenate(new, parts, quota).await
    }
    async fn write_whole(
        &self,
        owner: &str,
        quota: Quota,
    ) -> Result<Box<dyn WholeWriter>, StoreError> {
        self.0.write_whole(owner, quota).await
    }
    async fn land_blocks(
        &self,
        id: &str,
        name: &str,
        policy: OnConflict,
    ) -> Result<Landed, StoreError> {
        self.0.land_blocks(id, name, policy).await
    }
    async fn landed(&self, id: &str) -> Result<Option<Landed>, StoreError> {
        self.0.landed(id).await
    }
    async fn discard(&self, id: &str) -> Result<(), StoreError> {
        self.0.discard(id).await
    }
    async fn expire(&self, ttl: std::time::Duration) -> Result<usize, StoreError> {
        self.0.expire(ttl).await
    }
    async fn name_taken(&self, name: &str, id: Option<&str>) -> Result<bool, StoreError> {
        self.0.name_taken(name, id).await
    }
}

#[tokio::test]
#[should_panic(expected = "acknowledged blocks are kept")]
async fn a_store_that_acknowledges_before_it_keeps_fails_the_suite() {
    conformance::run_all(|| async { InMemory::fixture(Hasty) }).await;
}
