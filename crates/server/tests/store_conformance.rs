//! The store conformance suite on the receiver's embedded store, a
//! directory on disk: reopening is a new `FsStore` on the same directory,
//! as a restarted receiver makes.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use fileuploader_server::store::conformance::{self, Fixture};
use fileuploader_server::store::{FsStore, Store};

struct OnDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: FsStore,
}

#[async_trait]
impl Fixture for OnDisk {
    fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    async fn reopen(&self) -> Arc<dyn Store> {
        Arc::new(FsStore::new(&self.path).expect("the directory opens again"))
    }

    async fn file(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path.join(name)).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_store_keeps_every_promise() {
    conformance::run_all(|| async {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().to_owned();
        let store = FsStore::new(&path).expect("the store opens");
        Box::new(OnDisk {
            _dir: dir,
            path,
            store,
        }) as Box<dyn Fixture>
    })
    .await;
}
