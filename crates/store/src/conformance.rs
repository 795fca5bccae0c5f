//! The conformance suite every [`Store`] runs: what the receiver relies on,
//! checked through the trait alone and judged by what is stored.
//!
//! A store's own tests give [`run_all`] a way to make a fresh
//! [`Fixture`]: the store, the same storage opened again (as a receiver
//! restarted would open it), and a look at the files that landed. Each
//! scenario panics with what it found when the store breaks a promise.
//!
//! ```
//! use std::sync::Arc;
//! use fileuploader_store::conformance::{self, Fixture};
//! use fileuploader_store::{MemoryStore, Store};
//!
//! struct InMemory(MemoryStore);
//!
//! #[async_trait::async_trait]
//! impl Fixture for InMemory {
//!     fn store(&self) -> Arc<dyn Store> {
//!         Arc::new(self.0.clone())
//!     }
//!     async fn reopen(&self) -> Arc<dyn Store> {
//!         Arc::new(self.0.clone())
//!     }
//!     async fn file(&self, name: &str) -> Option<Vec<u8>> {
//!         self.0.file(name)
//!     }
//! }
//!
//! # futures_util::FutureExt::now_or_never(async {
//! conformance::run_all(|| async { Box::new(InMemory(MemoryStore::new())) as Box<dyn Fixture> })
//!     .await;
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fileuploader_wire::ContentRange;

use crate::{Arrival, ErrorKind, Landed, NewUpload, OnConflict, Quota, Store, StoreError, Upload};

/// A store under test.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// The store.
    fn store(&self) -> Arc<dyn Store>;

    /// The same storage opened again, as a restarted receiver opens it:
    /// whatever was acknowledged must be there.
    async fn reopen(&self) -> Arc<dyn Store>;

    /// The bytes of the file that landed as `name`, if one did.
    async fn file(&self, name: &str) -> Option<Vec<u8>>;
}

/// Runs every scenario, each on a fresh fixture from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Box<dyn Fixture>>,
{
    acknowledged_blocks_survive_reopening(&*make().await).await;
    overlaps_are_compared_and_ranges_held_apart(&*make().await).await;
    a_dropped_writer_leaves_no_trace(&*make().await).await;
    a_complete_upload_lands_once_however_many_ask(&*make().await).await;
    taken_names_follow_the_policy(&*make().await).await;
    whole_files_and_concatenations_land(&*make().await).await;
    empty_files_land(&*make().await).await;
    discarded_and_expired_uploads_are_gone(&*make().await).await;
    an_acknowledged_block_restarts_the_expiry_clock(&*make().await).await;
    a_part_done_early_waits_for_its_final(&*make().await).await;
    quotas_refuse_before_anything_is_stored(&*make().await).await;
    landings_leave_events_until_delivered(&*make().await).await;
    landings_are_digested_when_asked(&*make().await).await;
    an_id_others_hold_is_never_landed_over(&*make().await).await;
    an_id_others_hold_is_never_begun_again(&*make().await).await;
    a_block_is_never_given_a_beginning_that_is_gone(&*make().await).await;
}

/// Lands upload `id` of `store` as `name` (refusing a taken name), and
/// checks that the file there holds `bytes`; returns the landing.
async fn lands_as(
    fixture: &dyn Fixture,
    store: &dyn Store,
    id: &str,
    name: &str,
    bytes: &[u8],
) -> Landed {
    let landed = store
        .land(Arrival::blocks(id), name, OnConflict::Refuse)
        .await
        .unwrap_or_else(|e| panic!("land {id} as {name}: {e}"));
    assert_eq!(fixture.file(name).await.as_deref(), Some(bytes), "{name}");
    landed
}

/// How many uploads `store` expires with a time to live of `ms`.
async fn expired(store: &dyn Store, ms: u64) -> usize {
    store
        .expire(Duration::from_millis(ms))
        .await
        .expect("expired")
}

fn new_upload(id: &str, total: u64, name: &str, owner: &str) -> NewUpload {
    NewUpload {
        id: id.to_owned(),
        total,
        name: name.to_owned(),
        owner: owner.to_owned(),
        partial: false,
        metadata: None,
    }
}

fn range(start: u64, end: u64, total: u64) -> ContentRange {
    ContentRange { start, end, total }
}

/// Writes `bytes` at `start` of `upload` and acknowledges them with their
/// CRC32C; returns the upload as the store then says it is.
async fn put(store: &dyn Store, upload: &Upload, start: u64, bytes: &[u8]) -> Upload {
    let end = start + bytes.len() as u64;
    let mut writer = store
        .write_block(upload, range(start, end, upload.begun.total), true)
        .await
        .unwrap_or_else(|e| panic!("write bytes {start}-{end}: {e}"));
    writer
        .write(Bytes::copy_from_slice(bytes))
        .await
        .expect("bytes taken");
    assert!(
        writer.finish().await.expect("finished"),
        "bytes {start}-{end} differ from acknowledged ones"
    );
    writer
        .acknowledge(bytes.len() as u64, Some(crc32c::crc32c(bytes)))
        .await
        .unwrap_or_else(|e| panic!("acknowledge bytes {start}-{end}: {e}"))
}

fn kind(result: Result<impl std::fmt::Debug, StoreError>) -> ErrorKind {
    match result {
        Ok(v) => panic!("expected a failure, got {v:?}"),
        Err(e) => e.kind(),
    }
}

/// Begun uploads and acknowledged blocks are read back as they were,
/// also by the storage opened again; beginning twice finds the first.
pub async fn acknowledged_blocks_survive_reopening(fixture: &dyn Fixture) {
    let store = fixture.store();
    let upload = store
        .begin(new_upload("kept", 12, "kept.bin", "alice"), Quota::none())
        .await
        .expect("begun");
    assert_eq!(upload.received.covered(), 0);
    put(&*store, &upload, 0, b"hello").await;
    // Given the upload as it was before the first block: the answer holds
    // at least that and its own block (a store shared by receivers may
    // not look again on a block's way), and nothing the store does not.
    let after = put(&*store, &upload, 9, b"rld").await;
    let answered = after.received.ranges();
    assert!(
        answered == [(9, 12)] || answered == [(0, 5), (9, 12)],
        "an acknowledgement answers with its block and what the store holds, not {answered:?}"
    );
    let read = store.upload("kept").await.expect("read").expect("there");
    assert_eq!(
        read.received.ranges(),
        [(0, 5), (9, 12)],
        "acknowledged blocks are kept"
    );
    let again = store
        .begin(new_upload("kept", 12, "kept.bin", "alice"), Quota::none())
        .await
        .expect("begun again");
    assert_eq!(
        again.received.ranges(),
        [(0, 5), (9, 12)],
        "the first upload, found"
    );

    let reopened = fixture.reopen().await;
    let read = reopened
        .upload("kept")
        .await
        .expect("read")
        .expect("still there");
    assert_eq!(read.begun, upload.begun);
    assert_eq!(
        read.received.ranges(),
        [(0, 5), (9, 12)],
        "acknowledged blocks survive reopening"
    );
    assert_eq!(read.blocks.len(), 2);
    assert_eq!(read.blocks[0].crc32c, Some(crc32c::crc32c(b"hello")));
    put(&*reopened, &read, 5, b", wo").await;
    let landed = lands_as(fixture, &*reopened, "kept", "kept.bin", b"hello, world").await;
    assert_eq!((landed.length, landed.owner.as_str()), (12, "alice"));
    assert_eq!(reopened.upload("missing").await.expect("read"), None);
}

/// Bytes over acknowledged ones are compared, never written (or, where a
/// store compares only whole blocks, refused as a conflict); two writers of
/// one range are held apart, or both kept safely.
pub async fn overlaps_are_compared_and_ranges_held_apart(fixture: &dyn Fixture) {
    let store = fixture.store();
    let upload = store
        .begin(new_upload("overlap", 8, "overlap.bin", ""), Quota::none())
        .await
        .expect("begun");
    let upload = put(&*store, &upload, 0, b"abcd").await;
    let upload = put(&*store, &upload, 0, b"abcd").await;
    assert_eq!(
        upload.received.ranges(),
        [(0, 4)],
        "a block sent again with the same bytes is taken"
    );
    // Different bytes over acknowledged ones: told, or refused outright.
    for (start, bytes) in [(0, &b"zzzz"[..]), (2, b"zzzz")] {
        let end = start + 4;
        match store.write_block(&upload, range(start, end, 8), true).await {
            Ok(mut writer) => {
                writer
                    .write(Bytes::from_static(bytes))
                    .await
                    .expect("taken");
                assert!(
                    !writer.finish().await.expect("finished"),
                    "bytes {start}-{end} differ from acknowledged ones and are not told so"
                );
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    // Two writers of one range with the same bytes: held apart, or both
    // kept; the file lands whole either way.
    let first = store.write_block(&upload, range(4, 8, 8), true).await;
    let second = store.write_block(&upload, range(4, 8, 8), true).await;
    let mut upload = upload;
    for writer in [first, second] {
        match writer {
            Ok(mut writer) => {
                writer
                    .write(Bytes::from_static(b"efgh"))
                    .await
                    .expect("taken");
                assert!(writer.finish().await.expect("finished"));
                upload = writer
                    .acknowledge(4, Some(crc32c::crc32c(b"efgh")))
                    .await
                    .expect("acknowledged");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Busy, "{e}"),
        }
    }
    assert!(upload.complete(), "{:?}", upload.received);
    store
        .land(
            Arrival::blocks("overlap"),
            "overlap.bin",
            OnConflict::Refuse,
        )
        .await
        .expect("landed");
    assert_eq!(
        fixture.file("overlap.bin").await.as_deref(),
        Some(&b"abcdefgh"[..]),
        "acknowledged bytes are never overwritten"
    );
}

/// A writer dropped before it acknowledged leaves nothing acknowledged,
/// and its range free.
pub async fn a_dropped_writer_leaves_no_trace(fixture: &dyn Fixture) {
    let store = fixture.store();
    let upload = store
        .begin(new_upload("dropped", 4, "dropped.bin", ""), Quota::none())
        .await
        .expect("begun");
    let mut writer = store
        .write_block(&upload, range(0, 4, 4), true)
        .await
        .expect("reserved");
    writer
        .write(Bytes::from_static(b"lost"))
        .await
        .expect("taken");
    drop(writer);
    let read = store.upload("dropped").await.expect("read").expect("there");
    assert_eq!(read.received.covered(), 0, "nothing acknowledged");
    assert_eq!(
        fixture
            .reopen()
            .await
            .upload("dropped")
            .await
            .expect("read")
            .map(|u| u.received.covered()),
        Some(0)
    );
    put(&*store, &read, 0, b"kept").await;
    store
        .land(
            Arrival::blocks("dropped"),
            "dropped.bin",
            OnConflict::Refuse,
        )
        .await
        .expect("landed");
    assert_eq!(
        fixture.file("dropped.bin").await.as_deref(),
        Some(&b"kept"[..])
    );
}

/// Landing asked for at once by many lands one file, and each asker hears
/// the same landing; asked again later, the same.
pub async fn a_complete_upload_lands_once_however_many_ask(fixture: &dyn Fixture) {
    let store = fixture.store();
    let upload = store
        .begin(new_upload("once", 6, "once.bin", "bob"), Quota::none())
        .await
        .expect("begun");
    put(&*store, &upload, 0, b"landed").await;
    let askers =
        (0..8).map(|_| store.land(Arrival::blocks("once"), "once.bin", OnConflict::Rename));
    let said = futures_util::future::join_all(askers).await;
    for landed in &said {
        let landed = landed
            .as_ref()
            .unwrap_or_else(|e| panic!("a landing failed: {e}"));
        assert_eq!(landed.name, "once.bin", "one file, one name: {said:?}");
        assert_eq!(
            (landed.length, landed.crc32c),
            (6, Some(crc32c::crc32c(b"landed")))
        );
    }
    assert!(
        !store.name_taken("once (1).bin", None).await.expect("asked"),
        "landed twice"
    );
    assert_eq!(
        fixture.file("once.bin").await.as_deref(),
        Some(&b"landed"[..])
    );
    assert_eq!(
        store.upload("once").await.expect("read"),
        None,
        "no longer in progress"
    );
    let record = fixture
        .reopen()
        .await
        .landed("once")
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(
        (
            record.id.as_str(),
            record.owner.as_str(),
            record.name.as_str()
        ),
        ("once", "bob", "once.bin")
    );
    let again = store
        .land(Arrival::blocks("once"), "other.bin", OnConflict::Refuse)
        .await
        .expect("landed before");
    assert_eq!(again.name, "once.bin");
}

/// A taken name is refused (the upload kept, its reason recorded),
/// renamed, or overwritten, as the policy says.
pub async fn taken_names_follow_the_policy(fixture: &dyn Fixture) {
    let store = fixture.store();
    let mut next = 0;
    let mut complete = |bytes: &'static [u8]| {
        next += 1;
        let (store, id) = (store.clone(), format!("taken-{next}"));
        async move {
            let upload = store
                .begin(
                    new_upload(&id, bytes.len() as u64, "a.txt", ""),
                    Quota::none(),
                )
                .await
                .expect("begun");
            put(&*store, &upload, 0, bytes).await;
            id
        }
    };
    let first = complete(b"first").await;
    store
        .land(Arrival::blocks(&first), "a.txt", OnConflict::Refuse)
        .await
        .expect("landed");
    assert!(store.name_taken("a.txt", None).await.expect("asked"));

    let refused = complete(b"second").await;
    assert_eq!(
        kind(
            store
                .land(Arrival::blocks(&refused), "a.txt", OnConflict::Refuse)
                .await
        ),
        ErrorKind::Conflict
    );
    let kept = store
        .upload(&refused)
        .await
        .expect("read")
        .expect("kept after a refused landing");
    assert!(kept.landing_error.is_some(), "the reason is recorded");
    assert_eq!(fixture.file("a.txt").await.as_deref(), Some(&b"first"[..]));

    let renamed = store
        .land(Arrival::blocks(&refused), "a.txt", OnConflict::Rename)
        .await
        .expect("renamed");
    assert_eq!(renamed.name, "a (1).txt");
    assert_eq!(
        fixture.file("a (1).txt").await.as_deref(),
        Some(&b"second"[..])
    );

    let over = complete(b"third").await;
    let landed = store
        .land(Arrival::blocks(&over), "a.txt", OnConflict::Overwrite)
        .await
        .expect("overwritten");
    assert_eq!(landed.name, "a.txt");
    assert_eq!(fixture.file("a.txt").await.as_deref(), Some(&b"third"[..]));
}

/// A file sent whole lands with its length and CRC32C, recorded under its
/// id for its owner; complete uploads concatenate into one that lands.
pub async fn whole_files_and_concatenations_land(fixture: &dyn Fixture) {
    let store = fixture.store();
    let mut whole = store
        .write_whole("carol", Quota::none())
        .await
        .expect("opened");
    for piece in [&b"one "[..], b"request"] {
        whole
            .write(Bytes::copy_from_slice(piece))
            .await
            .expect("taken");
    }
    let landed = store
        .land(
            Arrival::whole(whole, Some("whole-1"), "carol"),
            "whole.txt",
            OnConflict::Refuse,
        )
        .await
        .expect("landed");
    assert_eq!(
        (landed.length, landed.crc32c),
        (11, Some(crc32c::crc32c(b"one request")))
    );
    assert_eq!(
        fixture.file("whole.txt").await.as_deref(),
        Some(&b"one request"[..])
    );
    let record = fixture
        .reopen()
        .await
        .landed("whole-1")
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(
        (record.owner.as_str(), record.name.as_str()),
        ("carol", "whole.txt")
    );

    let mut parts = Vec::new();
    for (i, bytes) in [&b"con"[..], b"cat"].into_iter().enumerate() {
        let mut new = new_upload(&format!("part-{i}"), 3, "", "carol");
        new.partial = true;
        let part = store.begin(new, Quota::none()).await.expect("begun");
        parts.push(put(&*store, &part, 0, bytes).await);
    }
    let joined = store
        .concatenate(
            new_upload("joined", 6, "joined.txt", "carol"),
            &parts,
            Quota::none(),
        )
        .await
        .expect("concatenated");
    assert!(joined.complete());
    assert_eq!(joined.expected_crc32c(), Some(crc32c::crc32c(b"concat")));
    lands_as(fixture, &*store, "joined", "joined.txt", b"concat").await;
}

/// An empty file lands, sent whole and as an upload of no bytes, and
/// reads back empty.
pub async fn empty_files_land(fixture: &dyn Fixture) {
    let store = fixture.store();
    let whole = store
        .write_whole("dave", Quota::none())
        .await
        .expect("opened");
    let landed = store
        .land(
            Arrival::whole(whole, Some("empty-whole"), "dave"),
            "empty-whole.txt",
            OnConflict::Refuse,
        )
        .await
        .expect("an empty whole file landed");
    assert_eq!((landed.length, landed.crc32c), (0, Some(0)));
    assert_eq!(
        fixture.file("empty-whole.txt").await.as_deref(),
        Some(&b""[..])
    );
    let upload = store
        .begin(new_upload("empty", 0, "empty.txt", "dave"), Quota::none())
        .await
        .expect("begun");
    assert!(upload.complete(), "no bytes to wait for");
    let landed = lands_as(fixture, &*store, "empty", "empty.txt", b"").await;
    assert_eq!(landed.length, 0);
}

/// Discarded uploads are gone at once; expiry takes those untouched for
/// its time and says how many.
pub async fn discarded_and_expired_uploads_are_gone(fixture: &dyn Fixture) {
    let store = fixture.store();
    for id in ["discarded", "expired"] {
        let upload = store
            .begin(new_upload(id, 4, &format!("{id}.bin"), ""), Quota::none())
            .await
            .expect("begun");
        put(&*store, &upload, 0, b"ab").await;
    }
    store.discard("discarded").await.expect("discarded");
    assert_eq!(store.upload("discarded").await.expect("read"), None);
    store
        .discard("never-begun")
        .await
        .expect("nothing to discard is no error");
    assert_eq!(expired(&*store, 3_600_000).await, 0, "all fresh");
    // Expiry counts time in milliseconds: let some pass.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(expired(&*store, 10).await, 1);
    assert_eq!(store.upload("expired").await.expect("read"), None);
    assert_eq!(
        fixture
            .reopen()
            .await
            .upload("expired")
            .await
            .expect("read"),
        None
    );
}

/// An upload's time to expiry counts from its newest acknowledged block,
/// however short that time and however recently the upload was begun:
/// a store that records activity coarsely must still never expire early.
pub async fn an_acknowledged_block_restarts_the_expiry_clock(fixture: &dyn Fixture) {
    let store = fixture.store();
    let upload = store
        .begin(new_upload("active", 4, "active.bin", ""), Quota::none())
        .await
        .expect("begun");
    std::thread::sleep(Duration::from_millis(150));
    put(&*store, &upload, 0, b"ab").await;
    assert_eq!(expired(&*store, 100).await, 0, "its block came just now");
    let upload = store
        .upload("active")
        .await
        .expect("read")
        .expect("still there");
    put(&*store, &upload, 2, b"cd").await;
    lands_as(fixture, &*store, "active", "active.bin", b"abcd").await;
}

/// A part of a concatenation done early outlives the time to live while
/// its owner writes other parts (its final comes once they are done);
/// another owner's idle part does not.
pub async fn a_part_done_early_waits_for_its_final(fixture: &dyn Fixture) {
    let store = fixture.store();
    let part = |id: &str, total: u64, owner: &str| NewUpload {
        partial: true,
        ..new_upload(id, total, id, owner)
    };
    let early = store
        .begin(part("early", 2, "erin"), Quota::none())
        .await
        .expect("begun");
    let early = put(&*store, &early, 0, b"ab").await;
    let late = store
        .begin(part("late", 4, "erin"), Quota::none())
        .await
        .expect("begun");
    store
        .begin(part("idle", 4, "frank"), Quota::none())
        .await
        .expect("begun");
    std::thread::sleep(Duration::from_millis(150));
    let late = put(&*store, &late, 0, b"cd").await;
    assert_eq!(expired(&*store, 100).await, 1, "frank's idle part went");
    assert_eq!(store.upload("idle").await.expect("read"), None);
    assert!(store.upload("early").await.expect("read").is_some());
    let late = put(&*store, &late, 2, b"ef").await;
    let joined = store
        .concatenate(
            new_upload("joined-late", 6, "joined-late.bin", "erin"),
            &[early, late],
            Quota::none(),
        )
        .await
        .expect("concatenated");
    assert!(joined.complete());
    lands_as(
        fixture,
        &*store,
        "joined-late",
        "joined-late.bin",
        b"abcdef",
    )
    .await;
}

/// Quotas refuse an upload that does not fit, all together and per
/// credential, before anything of it is stored.
pub async fn quotas_refuse_before_anything_is_stored(fixture: &dyn Fixture) {
    let store = fixture.store();
    let quota = Quota {
        total: Some(100),
        per_credential: Some(60),
    };
    store
        .begin(new_upload("q1", 50, "q1", "dave"), quota)
        .await
        .expect("fits");
    assert_eq!(
        kind(store.begin(new_upload("q2", 20, "q2", "dave"), quota).await),
        ErrorKind::Full,
        "over dave's 60"
    );
    store
        .begin(new_upload("q3", 40, "q3", "erin"), quota)
        .await
        .expect("fits");
    assert_eq!(
        kind(
            store
                .begin(new_upload("q4", 20, "q4", "frank"), quota)
                .await
        ),
        ErrorKind::Full,
        "over the 100 of all"
    );
    assert_eq!(
        store.upload("q2").await.expect("read"),
        None,
        "nothing stored"
    );
    assert_eq!(
        store.upload("q4").await.expect("read"),
        None,
        "nothing stored"
    );
    // A whole file's bytes are charged as they arrive (a store may charge
    // them in steps, so the refusal may come with the landing).
    let mut whole = store.write_whole("frank", quota).await.expect("opened");
    let over = match whole.write(Bytes::from(vec![0u8; 20])).await {
        Ok(()) => store
            .land(
                Arrival::whole(whole, Some("q5"), "frank"),
                "over.bin",
                OnConflict::Refuse,
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    assert_eq!(kind(over), ErrorKind::Full, "a whole file over the quota");
    assert_eq!(fixture.file("over.bin").await, None, "nothing landed");
}

/// A store that keeps events leaves one per landing, in the landing's own
/// commit, kept across reopening until delivered; a claimed event goes to
/// no other receiver until its claimant says how its delivery went, and a
/// failed delivery is due again later. A store without an outbox says so.
pub async fn landings_leave_events_until_delivered(fixture: &dyn Fixture) {
    let store = fixture.store();
    if let Err(e) = store.keep_events() {
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        assert!(store
            .claim_events(10, Duration::ZERO)
            .await
            .expect("asked")
            .is_empty());
        return;
    }
    let mut new = new_upload("told", 4, "told.bin", "erin");
    new.metadata = Some(r#"{"claim":1}"#.to_owned());
    let upload = store.begin(new, Quota::none()).await.expect("begun");
    put(&*store, &upload, 0, b"tell").await;
    store
        .land(Arrival::blocks("told"), "told.bin", OnConflict::Refuse)
        .await
        .expect("landed");
    store
        .land(Arrival::blocks("told"), "told.bin", OnConflict::Refuse)
        .await
        .expect("asked again, it answers its landing");
    let mut whole = store
        .write_whole("erin", Quota::none())
        .await
        .expect("opened");
    whole
        .write(Bytes::from_static(b"all"))
        .await
        .expect("taken");
    store
        .land(
            Arrival::whole(whole, None, "erin").with_metadata(Some(r#"{"claim":2}"#.into())),
            "whole.bin",
            OnConflict::Refuse,
        )
        .await
        .expect("landed");
    let store = fixture.reopen().await;
    let hour = Duration::from_secs(3600);
    let mut events = store.claim_events(10, hour).await.expect("read");
    events.sort_by(|a, b| a.landed.name.cmp(&b.landed.name));
    let names: Vec<&str> = events.iter().map(|e| e.landed.name.as_str()).collect();
    assert_eq!(
        names,
        ["told.bin", "whole.bin"],
        "one event per landing, kept"
    );
    let told = &events[0];
    assert_eq!(
        (told.key.as_str(), told.landed.length, told.attempts),
        ("told", 4, 0),
        "the upload id is the event's key"
    );
    assert!(
        !events[1].key.is_empty(),
        "a whole file's event has a key too"
    );
    let metadata: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.landed.metadata.as_deref())
        .collect();
    assert_eq!(
        metadata,
        [Some(r#"{"claim":1}"#), Some(r#"{"claim":2}"#)],
        "the before-creation hook's metadata travels with each landing"
    );
    assert_eq!(
        store
            .landed("told")
            .await
            .expect("read")
            .and_then(|l| l.metadata),
        Some(r#"{"claim":1}"#.to_owned()),
        "and stays on its record"
    );
    let other = fixture.reopen().await;
    assert!(
        other.claim_events(10, hour).await.expect("read").is_empty(),
        "a claimed event goes to no other receiver"
    );
    store.event_failed("told", hour).await.expect("recorded");
    store
        .event_failed(&events[1].key, Duration::ZERO)
        .await
        .expect("recorded");
    let due = other.claim_events(10, hour).await.expect("read");
    assert_eq!(
        due.iter()
            .map(|e| (e.key.as_str(), e.attempts))
            .collect::<Vec<_>>(),
        [(events[1].key.as_str(), 1)],
        "a failed delivery waits its turn; once told how it went, a claim ends"
    );
    other.event_delivered(&due[0].key).await.expect("recorded");
    assert!(store.claim_events(10, hour).await.expect("read").is_empty());
}

/// A store that digests landings keeps each landed file's SHA-256 on its
/// record, for blocks and whole files alike, across a reopening; one that
/// cannot says so.
pub async fn landings_are_digested_when_asked(fixture: &dyn Fixture) {
    use sha2::Digest;
    let store = fixture.store();
    if let Err(e) = store.keep_digests() {
        assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        return;
    }
    let upload = store
        .begin(
            new_upload("digested", 9, "digested.bin", "gina"),
            Quota::none(),
        )
        .await
        .expect("begun");
    put(&*store, &upload, 4, b"after").await;
    put(&*store, &upload, 0, b"four").await;
    let landed = store
        .land(
            Arrival::blocks("digested"),
            "digested.bin",
            OnConflict::Refuse,
        )
        .await
        .expect("landed");
    let expected: [u8; 32] = sha2::Sha256::digest(b"fourafter").into();
    assert_eq!(landed.sha256, Some(expected), "the landing is digested");
    let mut whole = store
        .write_whole("gina", Quota::none())
        .await
        .expect("opened");
    whole
        .write(Bytes::from_static(b"whole"))
        .await
        .expect("taken");
    let whole = store
        .land(
            Arrival::whole(whole, Some("digested-whole"), "gina"),
            "whole.bin",
            OnConflict::Refuse,
        )
        .await
        .expect("landed");
    let expected_whole: [u8; 32] = sha2::Sha256::digest(b"whole").into();
    assert_eq!(whole.sha256, Some(expected_whole), "a whole file too");
    let store = fixture.reopen().await;
    for (id, digest) in [("digested", expected), ("digested-whole", expected_whole)] {
        let kept = store.landed(id).await.expect("read").expect("landed");
        assert_eq!(
            kept.sha256,
            Some(digest),
            "{id}: the digest is on its record"
        );
    }
}

/// Lands a whole file `(id, name, bytes)` of `owner`'s by `policy`.
async fn whole_under(
    store: &dyn Store,
    owner: &str,
    (id, name, bytes): (Option<&str>, &str, &[u8]),
    policy: OnConflict,
) -> Result<Landed, StoreError> {
    let mut whole = store
        .write_whole(owner, Quota::none())
        .await
        .expect("opened");
    whole
        .write(Bytes::copy_from_slice(bytes))
        .await
        .expect("taken");
    store
        .land(Arrival::whole(whole, id, owner), name, policy)
        .await
}

/// Two uploads of one id by different credentials, each begun before the
/// other was known (a whole file and blocks, say): the id stays with the
/// one that holds it, in progress or landed, and the other's landing is
/// refused ([`ErrorKind::Forbidden`]) with nothing placed; the holder lands
/// as its own, with its own event.
pub async fn an_id_others_hold_is_never_landed_over(fixture: &dyn Fixture) {
    let store = fixture.store();
    let events = store.keep_events().is_ok();
    let upload = store
        .begin(new_upload("held", 4, "mine.bin", "ann"), Quota::none())
        .await
        .expect("begun");
    put(&*store, &upload, 0, b"mine").await;
    let whole_of_bob = || {
        let file = (Some("held"), "mine.bin", &b"evil"[..]);
        whole_under(&*store, "bob", file, OnConflict::Overwrite)
    };
    let refused = whole_of_bob().await.expect_err("ann's upload holds the id");
    assert_eq!(refused.kind(), ErrorKind::Forbidden, "{refused}");
    assert_eq!(fixture.file("mine.bin").await, None, "nothing placed");
    let landed = store
        .land(Arrival::blocks("held"), "mine.bin", OnConflict::Overwrite)
        .await
        .expect("ann's lands");
    assert_eq!(
        (landed.owner.as_str(), landed.name.as_str()),
        ("ann", "mine.bin")
    );
    let refused = whole_of_bob()
        .await
        .expect_err("ann's landing holds the id");
    assert_eq!(refused.kind(), ErrorKind::Forbidden, "{refused}");
    assert_eq!(
        fixture.file("mine.bin").await.as_deref(),
        Some(&b"mine"[..]),
        "the landed file is untouched"
    );
    if events {
        let told = store
            .claim_events(10, Duration::from_secs(3600))
            .await
            .expect("read");
        let names: Vec<(&str, &str)> = told
            .iter()
            .map(|e| (e.landed.owner.as_str(), e.landed.name.as_str()))
            .collect();
        assert_eq!(names, [("ann", "mine.bin")], "one event, ann's");
    }
}

/// An id other credentials hold, landed or in progress, is refused
/// ([`ErrorKind::Forbidden`]) to a beginning, with nothing recorded: a
/// block of it acknowledged could never land (a whole file landed under
/// the id after the door looked, say, and before the upload began).
pub async fn an_id_others_hold_is_never_begun_again(fixture: &dyn Fixture) {
    let store = fixture.store();
    let file = (Some("landed"), "bob.bin", &b"bobs"[..]);
    whole_under(&*store, "bob", file, OnConflict::Refuse)
        .await
        .expect("bob's whole file lands");
    let refused = store
        .begin(new_upload("landed", 4, "ann.bin", "ann"), Quota::none())
        .await
        .expect_err("bob's landing holds the id");
    assert_eq!(refused.kind(), ErrorKind::Forbidden, "{refused}");
    assert!(
        store.upload("landed").await.expect("read").is_none(),
        "nothing begun under bob's landing"
    );

    let upload = store
        .begin(new_upload("held", 4, "bob2.bin", "bob"), Quota::none())
        .await
        .expect("begun");
    let refused = store
        .begin(new_upload("held", 4, "ann.bin", "ann"), Quota::none())
        .await
        .expect_err("bob's upload holds the id");
    assert_eq!(refused.kind(), ErrorKind::Forbidden, "{refused}");
    put(&*store, &upload, 0, b"bob2").await;
    let landed = store
        .land(Arrival::blocks("held"), "bob2.bin", OnConflict::Refuse)
        .await
        .expect("bob's upload lands");
    assert_eq!(landed.owner, "bob");
    assert_eq!(
        fixture.file("bob2.bin").await.as_deref(),
        Some(&b"bob2"[..])
    );
}

/// What [`Store::upload_for_block`] answers is the upload as begun now:
/// an upload another receiver discarded and began again under the same
/// id, the same length and name, is the new one, with none of the old
/// one's blocks, though this receiver saw them (a block it took for
/// acknowledged would be compared, not stored, and lost).
pub async fn a_block_is_never_given_a_beginning_that_is_gone(fixture: &dyn Fixture) {
    let (store, other) = (fixture.store(), fixture.reopen().await);
    let new = || new_upload("again", 8, "again.bin", "ann");
    store.begin(new(), Quota::none()).await.expect("begun");
    let first = store
        .upload_for_block("again")
        .await
        .expect("read")
        .expect("in progress");
    let first = put(&*store, &first, 0, b"abcd").await;
    assert_eq!(first.received.ranges(), [(0, 4)]);
    let seen = store.upload_for_block("again").await.expect("read");
    assert_eq!(seen.map(|u| u.received), Some(first.received));

    other.discard("again").await.expect("discarded");
    other
        .begin(new(), Quota::none())
        .await
        .expect("begun again");
    let again = store
        .upload_for_block("again")
        .await
        .expect("read")
        .expect("in progress again");
    assert!(
        again.received.ranges().is_empty(),
        "the upload begun again holds nothing: {:?}",
        again.received
    );
    put(&*store, &again, 0, b"wxyz").await;
    let again = other
        .upload("again")
        .await
        .expect("read")
        .expect("in progress");
    put(&*other, &again, 4, b"efgh").await;
    lands_as(fixture, &*store, "again", "again.bin", b"wxyzefgh").await;
    assert!(store
        .upload_for_block("again")
        .await
        .expect("read")
        .is_none());
}
