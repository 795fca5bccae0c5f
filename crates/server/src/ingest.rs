//! What every protocol door of the receiver does with a store: find or
//! begin an upload for the credentials that ask, pour a block's bytes into
//! its writer while counting them, and acknowledge, then land, what was
//! checked.

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;

use crate::store::{BlockWriter, NewUpload, OnConflict, Store, Upload, WriteBytes};
use crate::{Refusal, Statement};

/// What one request may do, as the receiver's settings and its
/// credentials say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance<'a> {
    /// Who asks; an upload answers only to who began it.
    pub(crate) owner: &'a str,
    pub(crate) policy: OnConflict,
    /// The most bytes partial uploads may hold together.
    pub(crate) quota: Option<u64>,
}

/// An upload a request names: in progress, or landed already.
#[derive(Debug)]
pub(crate) enum Opened {
    InProgress(Upload),
    Landed(Statement),
}

/// Upload `id` in progress if `owner` began it: to anyone else it does not
/// exist.
pub(crate) async fn find_owned(
    store: &dyn Store,
    id: &str,
    owner: &str,
) -> Result<Option<Upload>, Refusal> {
    Ok(store.upload(id).await?.filter(|u| u.begun.owner == owner))
}

/// What the receiver can say of upload `id` to `owner`. An upload whose
/// every byte is acknowledged but that has not landed (a store's listing
/// behind the block that completed it) lands now, by `policy`.
pub(crate) async fn statement(
    store: &dyn Store,
    id: &str,
    owner: &str,
    policy: OnConflict,
) -> Result<Statement, Refusal> {
    if let Some(upload) = find_owned(store, id, owner).await? {
        if lands_now(&upload) {
            return store.land(id, &upload.begun.name, policy).await;
        }
        return Ok(upload.statement());
    }
    Ok(store
        .landed(id)
        .await?
        .unwrap_or_else(|| Statement::Unknown {
            upload_id: id.to_owned(),
        }))
}

/// Whether `upload` holds every byte, is no part of another, and has not
/// failed to land, yet has not landed: a receiver stopped between the block
/// that completed it and its landing, or a store's listing behind that
/// block. Whoever asks about it lands it first.
pub(crate) fn lands_now(upload: &Upload) -> bool {
    upload.complete() && !upload.begun.partial && upload.landing_error.is_none()
}

/// Refuses (409) a name taken already when the policy is to refuse.
pub(crate) async fn check_name(
    store: &dyn Store,
    name: &str,
    policy: OnConflict,
) -> Result<(), Refusal> {
    if policy == OnConflict::Refuse && store.name_taken(name).await? {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("a file named {name} is in the receiver's directory already"),
        ));
    }
    Ok(())
}

/// Finds upload `new.id` for its owner, or begins it: refused when the
/// name is taken (by the policy) or the quota would be exceeded.
pub(crate) async fn open(
    store: &dyn Store,
    new: NewUpload,
    allowance: Allowance<'_>,
) -> Result<Opened, Refusal> {
    match store.upload(&new.id).await? {
        Some(upload) if upload.begun.owner != allowance.owner => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "this upload id belongs to other credentials",
        )),
        Some(upload) if upload.begun.total != new.total => Err(Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "upload {} is {} bytes long, this block says {}",
                new.id, upload.begun.total, new.total
            ),
        )),
        Some(upload) => Ok(Opened::InProgress(upload)),
        None => {
            if let Some(statement) = store.landed(&new.id).await? {
                return Ok(Opened::Landed(statement));
            }
            check_name(store, &new.name, allowance.policy).await?;
            if let Some(quota) = allowance.quota {
                let held = store.bytes_held().await?;
                if held.saturating_add(new.total) > quota {
                    return Err(Refusal::new(
                        StatusCode::INSUFFICIENT_STORAGE,
                        format!(
                            "partial uploads hold {held} of the receiver's {quota} bytes; this one needs {}",
                            new.total
                        ),
                    ));
                }
            }
            store.begin(new).await.map(Opened::InProgress)
        }
    }
}

/// A request body's bytes, in pieces as they arrive.
#[async_trait]
pub(crate) trait Chunks: Send {
    /// The next piece, or `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Refusal>;
}

#[async_trait]
impl Chunks for multer::Field<'_> {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, Refusal> {
        self.chunk().await.map_err(crate::malformed)
    }
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

/// A block acknowledged: the upload after it, and its landing statement if
/// the block completed it.
#[derive(Debug)]
pub(crate) struct Acknowledged {
    pub(crate) upload: Upload,
    pub(crate) landed: Option<Statement>,
}

/// Acknowledges the first `len` bytes of a checked block and, if the
/// upload is then complete, lands it (as `name` if given, else its own
/// name).
pub(crate) async fn acknowledge(
    store: &dyn Store,
    mut writer: Box<dyn BlockWriter>,
    len: u64,
    crc32c: Option<u32>,
    name: Option<String>,
    policy: OnConflict,
) -> Result<Acknowledged, Refusal> {
    if !writer.finish().await? {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "the block overlaps acknowledged bytes of the upload and differs from them",
        ));
    }
    let upload = writer.acknowledge(len, crc32c).await?;
    if !upload.complete() || upload.begun.partial {
        return Ok(Acknowledged {
            upload,
            landed: None,
        });
    }
    let name = name.unwrap_or_else(|| upload.begun.name.clone());
    let landed = store.land(&upload.begun.id, &name, policy).await?;
    Ok(Acknowledged {
        upload,
        landed: Some(landed),
    })
}
