//! What every protocol door of the receiver does with a store: find or
//! begin an upload for the credentials that ask, pour a block's bytes into
//! its writer while counting them, and acknowledge, then land, what was
//! checked. Whether an upload landed is decided here and nowhere else
//! ([`Outcome`], [`settle`], and [`land_arrival`], which every landing goes
//! through); every door answers from it in its own protocol.

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use sha2::Digest as _;

use crate::hooks::{Admission, Creating, Teller, Word};
use crate::refusal::Refusal;
use crate::store::{
    Arrival, BlockWriter, ClaimedPart, DirectUpload, Landed, NewUpload, OnConflict, Quota, Store,
    StoreError, Upload, WholeWriter, WriteBytes,
};
use fileuploader_wire::Statement;

/// What one request may do, as the receiver's settings and its
/// credentials say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance<'a> {
    /// Who asks; an upload answers only to who began it.
    pub(crate) owner: &'a str,
    pub(crate) terms: Terms<'a>,
    /// The most bytes uploads in progress may hold.
    pub(crate) quota: Quota,
    /// The hook asked before an upload is created, if any.
    pub(crate) gate: Option<&'a Teller>,
}

impl Allowance<'_> {
    /// Asks the before-creation hook, if there is one, about an upload to
    /// be created as `name` (under `id`, of `length` bytes): `None` when
    /// there is no hook, else the name and metadata it settled; refused as
    /// the hook says, or when it cannot be asked.
    pub(crate) async fn admit(
        &self,
        id: Option<&str>,
        name: &str,
        length: Option<u64>,
    ) -> Result<Option<Admission>, Refusal> {
        let Some(gate) = self.gate else {
            return Ok(None);
        };
        let creating = Creating {
            id,
            name,
            length,
            owner: self.owner,
            via: self.terms.via,
        };
        crate::hooks::admit(gate, creating).await.map(Some)
    }
}

/// How a request lands what it completes: by the same-name policy,
/// through which protocol (for the operator's line), and who gives the
/// answer's word.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Terms<'a> {
    pub(crate) policy: OnConflict,
    pub(crate) via: Via,
    /// The hook whose word answers a landing, if any.
    pub(crate) answerer: Option<&'a Teller>,
    /// The landings the operator heard of lately.
    pub(crate) told: &'a Told,
}

/// The protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The segmented multipart convention (or a whole file in one request).
    Segmented,
    Tus,
    /// The IETF resumable-upload draft, at this interop version.
    Draft(u32),
    /// Straight to the store, on URLs the receiver signed (the Companion
    /// routes).
    Direct,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Segmented => f.write_str("segmented multipart"),
            Via::Tus => f.write_str("tus 1.0"),
            Via::Draft(v) => write!(f, "IETF draft (interop {v})"),
            Via::Direct => f.write_str("S3 multipart, signed by the receiver"),
        }
    }
}

/// What the receiver knows of an upload, told to the credentials that
/// ask: the one answer every door and every read gives, decided here.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing, for these credentials: never begun, discarded, expired,
    /// or another's.
    Unknown,
    /// Some of its bytes are missing, or it is a part waiting to be
    /// concatenated.
    InProgress(Upload),
    /// It landed, as this record says; with the application's word on it
    /// when this request landed it and the landing-answer hook spoke.
    Landed(Landed, Option<Word>),
    /// Every byte is here but it could not land, for this reason; asking
    /// again tries again (a name freed, a disk mended).
    Failed(Upload, Refusal),
}

impl Outcome {
    /// What the segmented protocol's status query says of it, to the
    /// client that named it `id`.
    pub(crate) fn statement(self, id: &str) -> Statement {
        match self {
            Outcome::Unknown => Statement::Unknown {
                upload_id: id.to_owned(),
            },
            Outcome::InProgress(upload) => partial(&upload, id),
            Outcome::Landed(landed, _) => landed_statement(&landed, id),
            Outcome::Failed(upload, refusal) => {
                let mut statement = partial(&upload, id);
                if let Statement::Partial { error, .. } = &mut statement {
                    *error = Some(refusal.message().to_owned());
                }
                statement
            }
        }
    }
}

/// What the segmented protocol says of an upload in progress, to the
/// client that named it `id`.
pub(crate) fn partial(upload: &Upload, id: &str) -> Statement {
    Statement::Partial {
        upload_id: id.to_owned(),
        total: upload.begun.total,
        received: upload.received.ranges().to_vec(),
        error: upload.landing_error.clone(),
    }
}

/// What the segmented protocol says of a landed file, to the client that
/// named its upload `id` ("" for a whole file sent without one).
pub(crate) fn landed_statement(landed: &Landed, id: &str) -> Statement {
    Statement::landed(id, &landed.name, landed.length, landed.crc32c)
}

/// An upload id that follows from `owner` and `words`: the final upload of
/// the same parts, or the upload of the same idempotency key, is the same.
pub(crate) fn derived_id(owner: &str, words: &[&str]) -> String {
    let mut hash = sha2::Sha256::new();
    hash.update(owner.as_bytes());
    for word in words {
        hash.update(b"\n");
        hash.update(word.as_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

/// The id under which the upload a client names `id` is kept, for
/// `owner`: the credentials' own, so that no others can begin, land or
/// reach anything under it, even knowing `id` before its first block
/// arrives. Where access is open (one owner, "") it is `id` itself.
pub(crate) fn kept_as(owner: &str, id: &str) -> String {
    match owner {
        "" => id.to_owned(),
        owner => derived_id(owner, &[UPLOAD_ID_WORD, id]),
    }
}

/// What [`kept_as`] derives an id from, beside the owner and the client's
/// id: no tus idempotency key or list of parts reads the same.
const UPLOAD_ID_WORD: &str = "X-Upload-Id";

/// Upload `id` in progress if `owner` began it: to anyone else it does not
/// exist.
pub(crate) async fn find_owned(
    store: &dyn Store,
    id: &str,
    owner: &str,
) -> Result<Option<Upload>, Refusal> {
    Ok(store.upload(id).await?.filter(|u| u.begun.owner == owner))
}

/// The landing of upload `id` if it landed for `owner`.
pub(crate) async fn landed_for(
    store: &dyn Store,
    id: &str,
    owner: &str,
) -> Result<Option<Landed>, Refusal> {
    Ok(store.landed(id).await?.filter(|l| l.owner == owner))
}

/// The landing of upload `id` if it landed for `owner`; refused when it
/// landed for other credentials.
async fn landed_unless_anothers(
    store: &dyn Store,
    id: &str,
    owner: &str,
) -> Result<Option<Landed>, Refusal> {
    match store.landed(id).await? {
        Some(landed) if landed.owner != owner => Err(anothers()),
        landed => Ok(landed),
    }
}

/// An upload id other credentials began or landed: refused to these.
fn anothers() -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "this upload id belongs to other credentials",
    )
}

/// What upload `id` has come to, for `owner`. An upload whose every byte
/// is acknowledged but that has not landed (a receiver stopped between the
/// block that completed it and its landing, a store's listing behind that
/// block, or a landing that failed) is landed now, by `terms`.
pub(crate) async fn settle(
    store: &dyn Store,
    id: &str,
    owner: &str,
    terms: Terms<'_>,
) -> Result<Outcome, Refusal> {
    if let Some(upload) = find_owned(store, id, owner).await? {
        if whole(&upload) {
            return land(store, upload, None, terms).await;
        }
        return Ok(Outcome::InProgress(upload));
    }
    Ok(match landed_for(store, id, owner).await? {
        Some(statement) => Outcome::Landed(statement, None),
        None => Outcome::Unknown,
    })
}

/// Whether `upload` holds every byte and is no part of another: it lands.
fn whole(upload: &Upload) -> bool {
    upload.complete() && !upload.begun.partial
}

/// Lands complete `upload` as `name` (else its own name; always its own
/// when the before-creation hook settled it), by `terms`. A landing that
/// fails stays on the upload's record with its reason, and may be tried
/// again.
pub(crate) async fn land(
    store: &dyn Store,
    upload: Upload,
    name: Option<String>,
    terms: Terms<'_>,
) -> Result<Outcome, Refusal> {
    let policy = terms.policy;
    let name = match name {
        Some(name) if upload.begun.metadata.is_none() => name,
        _ => upload.begun.name.clone(),
    };
    if let Some(error) = &upload.landing_error {
        // Failed before, and the name is still taken: nothing to try.
        let id = Some(upload.begun.id.as_str());
        if policy == OnConflict::Refuse && store.name_taken(&name, id).await? {
            let refusal = Refusal::new(StatusCode::CONFLICT, error.clone());
            return Ok(Outcome::Failed(upload, refusal));
        }
    }
    match land_arrival(store, Arrival::blocks(&upload.begun.id), &name, terms).await {
        Ok((landed, word)) => Ok(Outcome::Landed(landed, word)),
        Err(refusal) => match store.upload(&upload.begun.id).await? {
            Some(after) if after.landing_error.is_some() => {
                Ok(Outcome::Failed(after, refusal.into()))
            }
            _ => Err(refusal.into()),
        },
    }
}

/// Refuses (409) a name taken already when the policy is to refuse (a
/// file upload `id` left there unrecorded does not take it).
pub(crate) async fn check_name(
    store: &dyn Store,
    name: &str,
    policy: OnConflict,
    id: Option<&str>,
) -> Result<(), Refusal> {
    if policy == OnConflict::Refuse && store.name_taken(name, id).await? {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("a file named {name} is in the receiver's directory already"),
        ));
    }
    Ok(())
}

/// Finds upload `new.id` for its owner, or begins it: refused when other
/// credentials hold the id, the name is taken (by the policy) or the quota
/// would be exceeded. An upload that landed already is told as landed.
pub(crate) async fn open(
    store: &dyn Store,
    new: NewUpload,
    allowance: Allowance<'_>,
) -> Result<Outcome, Refusal> {
    match store.upload_for_block(&new.id).await? {
        Some(upload) if upload.begun.owner != allowance.owner => Err(anothers()),
        Some(upload) if upload.begun.total != new.total => Err(Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "upload {} is {} bytes long, this block says {}",
                new.id, upload.begun.total, new.total
            ),
        )),
        Some(upload) => Ok(Outcome::InProgress(upload)),
        None => {
            if let Some(statement) = landed_unless_anothers(store, &new.id, allowance.owner).await?
            {
                return Ok(Outcome::Landed(statement, None));
            }
            let mut new = new;
            if !new.partial {
                let length = Some(new.total);
                if let Some(admitted) = allowance.admit(Some(&new.id), &new.name, length).await? {
                    new.name = admitted.name;
                    new.metadata = Some(admitted.metadata);
                }
            }
            // A new upload in blocks: a file an earlier beginning of its
            // id left unrecorded (since expired) still takes the name, or
            // the landing would take that file for its own. Only a whole
            // file's bytes replace one.
            check_name(store, &new.name, allowance.terms.policy, None).await?;
            Ok(Outcome::InProgress(
                store.begin(new, allowance.quota).await?,
            ))
        }
    }
}

/// Before a whole file's bytes are taken: refused when other credentials
/// hold its upload id; its landing when the same file landed under that
/// id already (a request sent again, its answer lost); else nothing, and
/// the name is checked by the policy.
pub(crate) async fn open_whole(
    store: &dyn Store,
    id: Option<&str>,
    name: &str,
    allowance: Allowance<'_>,
) -> Result<Option<Landed>, Refusal> {
    if let Some(id) = id {
        match store.upload(id).await? {
            Some(upload) if upload.begun.owner != allowance.owner => return Err(anothers()),
            Some(_) => {}
            None => {
                if let Some(statement) = landed_unless_anothers(store, id, allowance.owner).await? {
                    return Ok(Some(statement));
                }
            }
        }
    }
    check_name(store, name, allowance.terms.policy, id).await?;
    Ok(None)
}

/// Lands a whole file's bytes as `name`, unless the same file landed under
/// its id already; with the before-creation hook's `metadata`, if it was
/// asked; with the application's word on it, if it spoke.
pub(crate) async fn land_whole(
    store: &dyn Store,
    writer: Box<dyn WholeWriter>,
    name: &str,
    id: Option<&str>,
    allowance: Allowance<'_>,
    metadata: Option<String>,
) -> Result<(Landed, Option<Word>), Refusal> {
    if let Some(landed) = open_whole(store, id, name, allowance).await? {
        return Ok((landed, None));
    }
    let arrival = Arrival::whole(writer, id, allowance.owner).with_metadata(metadata);
    Ok(land_arrival(store, arrival, name, allowance.terms).await?)
}

/// Lands direct upload `direct` from the `parts` its client names, no
/// larger than `max_size`; its name was settled as it began.
pub(crate) async fn land_direct(
    store: &dyn Store,
    direct: &DirectUpload,
    parts: Vec<ClaimedPart>,
    max_size: Option<u64>,
    terms: Terms<'_>,
) -> Result<(Landed, Option<Word>), Refusal> {
    let arrival = Arrival::Direct {
        id: direct.begun.id.clone(),
        parts,
        max_size,
    };
    Ok(land_arrival(store, arrival, &direct.begun.name, terms).await?)
}

/// Lands `arrival` as `name` by `terms`: the one place a file lands,
/// whichever door it came through and however it was sent. The store
/// lands it durably and records the landing; then the operator hears of
/// it, and the landing-answer hook, if any, is asked for its word.
async fn land_arrival(
    store: &dyn Store,
    arrival: Arrival,
    name: &str,
    terms: Terms<'_>,
) -> Result<(Landed, Option<Word>), StoreError> {
    let landed = store.land(arrival, name, terms.policy).await?;
    terms.told.tell(&landed, terms.via);
    let word = match terms.answerer {
        Some(teller) => crate::hooks::word_on(teller, &landed).await,
        None => None,
    };
    Ok((landed, word))
}

/// How many landings [`Told`] remembers: far more than land at once.
const TOLD_KEPT: usize = 1024;

/// The landings this receiver told the operator of lately, so that each
/// is told once: every request that finds an upload complete asks the
/// store to land it (a block, the status query after it), and each gets
/// the one landing back.
#[derive(Debug, Default)]
pub(crate) struct Told {
    recent: std::sync::Mutex<std::collections::VecDeque<(String, String)>>,
}

impl Told {
    /// The operator's line for a file that landed, unless this receiver
    /// told it already: name, bytes, upload, the protocol and whose
    /// credentials sent it.
    pub(crate) fn tell(&self, landed: &Landed, via: Via) {
        if !self.first_time(landed) {
            return;
        }
        let by = if landed.owner.is_empty() {
            "anyone (open access)"
        } else {
            &landed.owner
        };
        tracing::info!(
            "landed {:?}: {} bytes, upload {:?} over {via}, sent by {by}",
            landed.name,
            landed.length,
            landed.id
        );
    }

    /// Whether `landed` is new to this receiver, remembering it. A whole
    /// file sent without an upload id always is: each such landing is its
    /// own.
    fn first_time(&self, landed: &Landed) -> bool {
        if landed.id.is_empty() {
            return true;
        }
        let key = (landed.id.clone(), landed.name.clone());
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.contains(&key) {
            return false;
        }
        if recent.len() == TOLD_KEPT {
            recent.pop_front();
        }
        recent.push_back(key);
        true
    }
}

/// A request body's bytes, in pieces as they arrive.
#[async_trait]
pub(crate) trait Chunks: Send {
    /// The next piece, or `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Refusal>;
}

/// How many bytes were poured, and their CRC32C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Poured {
    pub(crate) len: u64,
    pub(crate) crc32c: u32,
}

/// Moves every piece of `chunks` into `writer`, counting; refuses with
/// `too_long` before taking a byte past `max`.
pub(crate) async fn pour(
    chunks: &mut dyn Chunks,
    writer: &mut dyn WriteBytes,
    max: u64,
    too_long: impl Fn() -> Refusal + Send,
) -> Result<Poured, Refusal> {
    let mut poured = Poured { len: 0, crc32c: 0 };
    while let Some(chunk) = chunks.next_chunk().await? {
        if poured.len + chunk.len() as u64 > max {
            return Err(too_long());
        }
        poured.len += chunk.len() as u64;
        poured.crc32c = crc32c::crc32c_append(poured.crc32c, &chunk);
        writer.write(chunk).await?;
    }
    Ok(poured)
}

/// Acknowledges the first `len` bytes of a checked block and, if the
/// upload is then complete, lands it (as `name` if given, else its own
/// name); returns what the upload has come to.
pub(crate) async fn acknowledge(
    store: &dyn Store,
    mut writer: Box<dyn BlockWriter>,
    len: u64,
    crc32c: Option<u32>,
    name: Option<String>,
    terms: Terms<'_>,
) -> Result<Outcome, Refusal> {
    if !writer.finish().await? {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "the block overlaps acknowledged bytes of the upload and differs from them",
        ));
    }
    let upload = writer.acknowledge(len, crc32c).await?;
    if !whole(&upload) {
        return Ok(Outcome::InProgress(upload));
    }
    land(store, upload, name, terms).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(id: &str, name: &str) -> Landed {
        Landed::new(id, "", name, 3, None)
    }

    #[test]
    fn each_landing_is_told_once_and_each_whole_file_without_an_id_each_time() {
        let told = Told::default();
        assert!(told.first_time(&landed("u1", "a.bin")));
        assert!(!told.first_time(&landed("u1", "a.bin")));
        assert!(told.first_time(&landed("u2", "a.bin")));
        assert!(told.first_time(&landed("", "b.bin")));
        assert!(told.first_time(&landed("", "b.bin")));
    }

    #[test]
    fn the_oldest_landing_is_forgotten_first_once_enough_are_told() {
        let told = Told::default();
        for i in 0..=TOLD_KEPT {
            assert!(told.first_time(&landed(&format!("u{i}"), "a.bin")));
        }
        assert!(told.first_time(&landed("u0", "a.bin")));
        assert!(!told.first_time(&landed(&format!("u{TOLD_KEPT}"), "a.bin")));
    }
}
