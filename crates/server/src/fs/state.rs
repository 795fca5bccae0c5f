//! The receiver's upload records in SQLite, written durably: a block is
//! acknowledged only once its bytes are on disk (`fdatasync` of its partial
//! file) and its record is committed. One committer thread takes every
//! change, so concurrent blocks share one sync of each file and one commit
//! (group commit), and each caller learns when its change is durable.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use fileuploader_wire::sync::lock;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use fileuploader_store::{Block, Event, Landed, NewUpload, Quota, Upload};

/// The most changes one commit takes.
const BATCH: usize = 512;
/// The most idle reader connections kept open.
const IDLE_READERS: usize = 16;

/// A change to the records.
#[derive(Debug)]
pub(crate) enum Change {
    /// A new upload, charged to the quota.
    Begin(NewUpload, Quota),
    /// Charges `bytes` in all (replacing its earlier charge) to the quota
    /// for the whole file arriving into temporary file `key`.
    Reserve {
        key: String,
        owner: String,
        bytes: u64,
        quota: Quota,
    },
    /// The whole file in `key` landed or ended: its charge goes.
    Release { key: String },
    /// A verified block, its bytes written to `file` (synced first).
    Ack {
        id: String,
        start: u64,
        end: u64,
        crc: Option<u32>,
        file: PathBuf,
    },
    /// Why the complete upload could not land (or `None` to clear it).
    LandingError { id: String, error: Option<String> },
    /// The upload landed: its records go, its landing record stays (for an
    /// upload with an id), and its event under `event`, its key, when the
    /// store keeps events (the outbox), in the same commit.
    Landed {
        landed: Landed,
        event: Option<String>,
    },
    /// Event `key` was delivered: it goes.
    Delivered { key: String },
    /// Event `key` could not be delivered: it is due again at `due` (ms).
    Undelivered { key: String, due: i64 },
    /// The upload is in use (a request is writing it): not to expire yet.
    Touch { id: String },
    /// The upload is discarded.
    Discard { id: String },
}

/// A deliverer's claim on due events: when, until when, who, and which
/// deliverers ended holding claims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim<'a> {
    pub(crate) now: i64,
    pub(crate) until: i64,
    pub(crate) me: &'a str,
    pub(crate) dead: &'a [String],
}

/// An upload's own record, without its blocks.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) begun: NewUpload,
    pub(crate) landing_error: Option<String>,
    /// Random, one per beginning: an upload discarded and begun again
    /// under the same id, even with the same length and name, is another
    /// one, and nothing read of the first is kept for it.
    pub(crate) beginning: i64,
}

/// What a change's caller learns once it is durable: for a block, its
/// upload as recorded then.
type Reply = oneshot::Sender<io::Result<Option<Upload>>>;

/// Uploads as last read, each with the newest block `seq` read, shared by
/// every reader and the committer.
type Cache = Arc<Mutex<HashMap<String, Cached>>>;

/// What this process read of one upload.
#[derive(Debug)]
struct Cached {
    /// The newest block `seq` read.
    seq: i64,
    /// The beginning it is of ([`Head::beginning`]).
    beginning: i64,
    upload: Upload,
}

impl Cached {
    /// Nothing read yet of the upload `head` records.
    fn of(head: &Head) -> Self {
        Cached {
            seq: 0,
            beginning: head.beginning,
            upload: Upload::new(head.begun.clone()),
        }
    }

    /// Whether this is what was read of the upload `head` records.
    fn is_of(&self, head: &Head) -> bool {
        self.beginning == head.beginning && self.upload.begun == head.begun
    }
}

/// The records: readers for queries, the committer for changes, and what
/// this process read of each upload.
#[derive(Debug)]
pub(crate) struct State {
    path: PathBuf,
    /// Idle reader connections: each query takes one, so queries of
    /// different requests do not wait for each other.
    readers: Mutex<Vec<Connection>>,
    changes: mpsc::Sender<(Change, Reply)>,
    cache: Cache,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A connection that only reads: the records were set up by [`open`].
fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Each acknowledged block gets the next `seq`, never reused, so a
    // reader that has seen an upload's blocks up to some `seq` reads only
    // the newer ones.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS uploads (
             id TEXT PRIMARY KEY, total INTEGER NOT NULL, name TEXT NOT NULL,
             owner TEXT NOT NULL, touched INTEGER NOT NULL, landing_error TEXT,
             partial INTEGER NOT NULL DEFAULT 0, metadata TEXT,
             beginning INTEGER NOT NULL DEFAULT 0);
         CREATE TABLE IF NOT EXISTS acks (
             seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
             start INTEGER NOT NULL, end INTEGER NOT NULL, crc INTEGER,
             UNIQUE (id, start));
         CREATE INDEX IF NOT EXISTS acks_by_upload ON acks (id, seq);
         CREATE TABLE IF NOT EXISTS landed (
             id TEXT PRIMARY KEY, statement TEXT NOT NULL, at INTEGER NOT NULL,
             owner TEXT NOT NULL DEFAULT '');
         CREATE TABLE IF NOT EXISTS reserved (
             key TEXT PRIMARY KEY, owner TEXT NOT NULL, bytes INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS outbox (
             key TEXT PRIMARY KEY, landed TEXT NOT NULL, owner TEXT NOT NULL,
             attempts INTEGER NOT NULL DEFAULT 0, due INTEGER NOT NULL,
             claimed_by TEXT);",
    )?;
    // Records from before `acks` kept blocks in `blocks`: move them over.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let old = tx
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'blocks'",
            [],
            |_| Ok(()),
        )
        .optional()?;
    // Records from before concatenation have no `partial` column.
    let has_partial = tx.prepare("SELECT partial FROM uploads LIMIT 0").is_ok();
    if !has_partial {
        tx.execute_batch("ALTER TABLE uploads ADD COLUMN partial INTEGER NOT NULL DEFAULT 0")?;
    }
    // Records from before hooks have no `metadata` column.
    let has_metadata = tx.prepare("SELECT metadata FROM uploads LIMIT 0").is_ok();
    if !has_metadata {
        tx.execute_batch("ALTER TABLE uploads ADD COLUMN metadata TEXT")?;
    }
    // Records from before beginnings were told apart have no `beginning`.
    let has_beginning = tx.prepare("SELECT beginning FROM uploads LIMIT 0").is_ok();
    if !has_beginning {
        tx.execute_batch("ALTER TABLE uploads ADD COLUMN beginning INTEGER NOT NULL DEFAULT 0")?;
    }
    // Outboxes from before claims have no `claimed_by` column.
    let has_claims = tx.prepare("SELECT claimed_by FROM outbox LIMIT 0").is_ok();
    if !has_claims {
        tx.execute_batch("ALTER TABLE outbox ADD COLUMN claimed_by TEXT")?;
    }
    // Landings from before owners were recorded with them have no `owner`.
    let has_owner = tx.prepare("SELECT owner FROM landed LIMIT 0").is_ok();
    if !has_owner {
        tx.execute_batch("ALTER TABLE landed ADD COLUMN owner TEXT NOT NULL DEFAULT ''")?;
    }
    if old.is_some() {
        tx.execute_batch(
            "INSERT OR REPLACE INTO acks (id, start, end, crc)
                 SELECT id, start, end, crc FROM blocks ORDER BY id, start;
             DROP TABLE blocks;",
        )?;
    }
    // Landings recorded before version 2 kept the segmented protocol's
    // statement: read once, and rewritten as records.
    let before: Vec<(String, String, String)> = tx
        .prepare("SELECT id, statement, owner FROM landed WHERE statement NOT LIKE '{\"v\":2,%'")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, text, owner) in before {
        if let Some(landed) = Landed::from_record(&text, Some(&owner)) {
            tx.execute(
                "UPDATE landed SET statement = ?2 WHERE id = ?1",
                params![id, landed.to_record()],
            )?;
        }
    }
    tx.commit()?;
    Ok(conn)
}

/// A failure of the records as I/O: a full disk or database is
/// [`io::ErrorKind::StorageFull`], which the receiver answers with 507.
fn failed(e: rusqlite::Error) -> io::Error {
    let kind = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => io::ErrorKind::StorageFull,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// An outbox row: key, landing record, owner, attempts.
type EventRow = (String, String, String, u32);

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// The events of outbox rows; a row whose record cannot be read is left.
fn events(rows: Vec<EventRow>) -> Vec<Event> {
    rows.into_iter()
        .filter_map(|(key, text, owner, attempts)| {
            let landed = Landed::from_record(&text, Some(&owner))?;
            Some(Event {
                key,
                landed,
                attempts,
            })
        })
        .collect()
}

fn closed() -> io::Error {
    io::Error::other("the receiver's records are closed")
}

/// The record of upload `id`, if it is in progress.
fn head(conn: &Connection, id: &str) -> rusqlite::Result<Option<Head>> {
    conn.prepare_cached(
        "SELECT total, name, owner, landing_error, partial, metadata, beginning FROM uploads WHERE id = ?1",
    )?
    .query_row(params![id], |r| {
        Ok(Head {
            begun: NewUpload {
                id: id.to_owned(),
                total: r.get::<_, i64>(0)? as u64,
                name: r.get(1)?,
                owner: r.get(2)?,
                partial: r.get(4)?,
                metadata: r.get(5)?,
            },
            landing_error: r.get(3)?,
            beginning: r.get(6)?,
        })
    })
    .optional()
}

/// The blocks of upload `id` acknowledged after `seq`, each with its own
/// `seq`, oldest first.
fn acks_after(conn: &Connection, id: &str, seq: i64) -> rusqlite::Result<Vec<(i64, Block)>> {
    conn.prepare_cached(
        "SELECT seq, start, end, crc FROM acks WHERE id = ?1 AND seq > ?2 ORDER BY seq",
    )?
    .query_map(params![id, seq], |r| {
        let crc: Option<i64> = r.get(3)?;
        Ok((
            r.get(0)?,
            Block {
                start: r.get::<_, i64>(1)? as u64,
                end: r.get::<_, i64>(2)? as u64,
                crc32c: crc.map(|c| c as u32),
            },
        ))
    })?
    .collect()
}

/// Upload `id` as recorded now: its record, and the blocks `cache` held
/// before plus those acknowledged since. The cache entry is brought up to
/// date in place, never taken out, so that requests for one upload at once
/// each read only the blocks acknowledged since (taking it out would make
/// every other one read them all again); it is locked only while it
/// changes, not while the records are read.
fn read_upload(conn: &Connection, cache: &Cache, id: &str) -> rusqlite::Result<Option<Upload>> {
    let Some(head) = head(conn, id)? else {
        lock(cache).remove(id);
        return Ok(None);
    };
    let seen = match lock(cache).get(id) {
        Some(cached) if cached.is_of(&head) => cached.seq,
        _ => 0,
    };
    let newer = acks_after(conn, id, seen)?;
    let mut cache = lock(cache);
    let cached = cache
        .entry(id.to_owned())
        .or_insert_with(|| Cached::of(&head));
    if !cached.is_of(&head) {
        *cached = Cached::of(&head);
    }
    // Begun again meanwhile (another reader found it so): what was read
    // after `seen` is not all there is.
    let newer = match cached.seq < seen {
        true => acks_after(conn, id, cached.seq)?,
        false => newer,
    };
    for (seq, block) in newer {
        if seq > cached.seq {
            cached.upload.add(block);
            cached.seq = seq;
        }
    }
    cached.upload.landing_error = head.landing_error;
    Ok(Some(cached.upload.clone()))
}

impl State {
    /// Opens (or creates) the records at `path` and starts the committer.
    pub(crate) fn open(path: &Path) -> io::Result<State> {
        let writer = open(path).map_err(failed)?;
        let (tx, rx) = mpsc::channel::<(Change, Reply)>();
        let cache = Cache::default();
        let committed = cache.clone();
        std::thread::Builder::new()
            .name("fu-committer".into())
            .spawn(move || commit_loop(writer, rx, &committed))?;
        Ok(State {
            path: path.to_owned(),
            readers: Mutex::default(),
            changes: tx,
            cache,
        })
    }

    /// Runs `query` on an idle reader connection (a new one if none is).
    fn read<T>(&self, query: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> io::Result<T> {
        let idle = lock(&self.readers).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path).map_err(failed)?,
        };
        let result = query(&conn).map_err(failed);
        let mut readers = lock(&self.readers);
        if readers.len() < IDLE_READERS {
            readers.push(conn);
        }
        result
    }

    /// Hands `change` to the committer; the receiver says when it is
    /// durable.
    fn send(&self, change: Change) -> io::Result<oneshot::Receiver<io::Result<Option<Upload>>>> {
        let (reply, done) = oneshot::channel();
        self.changes.send((change, reply)).map_err(|_| closed())?;
        Ok(done)
    }

    /// Applies `change` durably; returns once it is committed. Blocks:
    /// call it from the blocking pool.
    pub(crate) fn apply(&self, change: Change) -> io::Result<()> {
        self.send(change)?.blocking_recv().map_err(|_| closed())??;
        Ok(())
    }

    /// Applies `changes` durably, committed together where they can be;
    /// returns once all are, or with the first one refused. Blocks: call it
    /// from the blocking pool.
    pub(crate) fn apply_all(&self, changes: Vec<Change>) -> io::Result<()> {
        let sent: Vec<_> = changes
            .into_iter()
            .map(|change| self.send(change))
            .collect::<io::Result<_>>()?;
        for done in sent {
            done.blocking_recv().map_err(|_| closed())??;
        }
        Ok(())
    }

    /// Records a block (a [`Change::Ack`]) durably, without holding a
    /// thread while it waits; returns its upload as recorded once it is
    /// committed, or `None` if the upload is gone.
    pub(crate) async fn acknowledge(&self, change: Change) -> io::Result<Option<Upload>> {
        self.send(change)?.await.map_err(|_| closed())?
    }

    /// Upload `id` as recorded now, if it is in progress.
    pub(crate) fn upload(&self, id: &str) -> io::Result<Option<Upload>> {
        self.read(|conn| read_upload(conn, &self.cache, id))
    }

    /// Forgets what was read of upload `id` (it landed or was discarded).
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.cache).remove(id);
    }

    /// The record of upload `id`, if it is in progress.
    #[cfg(test)]
    pub(crate) fn head(&self, id: &str) -> io::Result<Option<Head>> {
        self.read(|conn| head(conn, id))
    }

    /// The blocks of upload `id` acknowledged after `seq`, each with its
    /// own `seq`, oldest first.
    #[cfg(test)]
    pub(crate) fn acks_after(&self, id: &str, seq: i64) -> io::Result<Vec<(i64, Block)>> {
        self.read(|conn| acks_after(conn, id, seq))
    }

    /// The landing of upload `id`, if it landed.
    pub(crate) fn landed(&self, id: &str) -> io::Result<Option<Landed>> {
        let row: Option<(String, String)> = self.read(|conn| {
            conn.prepare_cached("SELECT owner, statement FROM landed WHERE id = ?1")?
                .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })?;
        // The column keeps the record (version 2), or the landing statement
        // a receiver before it wrote there: both read.
        Ok(row.and_then(|(owner, text)| Landed::from_record(&text, Some(&owner))))
    }

    /// The ids of uploads in progress untouched since `before` (ms since
    /// the epoch).
    pub(crate) fn untouched_since(&self, before: i64) -> io::Result<Vec<String>> {
        self.read(|conn| {
            conn.prepare("SELECT id FROM uploads WHERE touched < ?1")?
                .query_map(params![before], |r| r.get(0))?
                .collect()
        })
    }

    /// Of the uploads `ids`, the parts of concatenations (partial uploads)
    /// whose owner touched a part since `before` (ms since the epoch): a
    /// part done early waits for its final, which comes once the owner's
    /// last part is done.
    pub(crate) fn parts_kept_by_owner(
        &self,
        ids: &[String],
        before: i64,
    ) -> io::Result<Vec<String>> {
        let ids = serde_json::to_string(ids).map_err(io::Error::other)?;
        self.read(|conn| {
            conn.prepare(
                "SELECT u.id FROM uploads u WHERE u.partial AND u.id IN (SELECT value FROM json_each(?1))
                 AND EXISTS (SELECT 1 FROM uploads v WHERE v.partial AND v.owner = u.owner AND v.touched >= ?2)",
            )?
            .query_map(params![ids, before], |r| r.get(0))?
            .collect()
        })
    }

    /// Claims for deliverer `me` events due by `now` (ms), or claimed by
    /// deliverers in `dead` (processes that ended holding them), oldest
    /// first, at most `limit`: each due again only at `until` (ms), unless
    /// its delivery is recorded first.
    pub(crate) fn claim_events(&self, claim: Claim<'_>, limit: usize) -> io::Result<Vec<Event>> {
        let (now, until, me) = (claim.now, claim.until, claim.me);
        // What the ended deliverers held is due now, all of it at once:
        // they are told of once only.
        let dead = serde_json::to_string(claim.dead).map_err(io::Error::other)?;
        let rows = self.read(|conn| {
            conn.execute(
                "UPDATE outbox SET due = ?1, claimed_by = NULL
                 WHERE claimed_by IN (SELECT value FROM json_each(?2))",
                params![now, dead],
            )?;
            // One statement, so one transaction: of processes sharing the
            // records, each event goes to one, whose claim makes it due
            // again only at `until`.
            conn.prepare(
                "UPDATE outbox SET due = ?3, claimed_by = ?4 WHERE key IN
                     (SELECT key FROM outbox WHERE due <= ?1 ORDER BY due LIMIT ?2)
                 RETURNING key, landed, owner, attempts",
            )?
            .query_map(params![now, limit as i64, until, me], event_row)?
            .collect()
        })?;
        Ok(events(rows))
    }

    /// Events due by `now` (ms), oldest first, at most `limit`, claimed by
    /// nobody: what a deliverer takes when the records cannot be written
    /// (a full disk), better told twice than not at all.
    pub(crate) fn due_events(&self, now: i64, limit: usize) -> io::Result<Vec<Event>> {
        let rows = self.read(|conn| {
            conn.prepare(
                "SELECT key, landed, owner, attempts FROM outbox WHERE due <= ?1 ORDER BY due LIMIT ?2",
            )?
            .query_map(params![now, limit as i64], event_row)?
            .collect()
        })?;
        Ok(events(rows))
    }

    /// The temporary files whole files are charged for.
    pub(crate) fn reservations(&self) -> io::Result<Vec<String>> {
        self.read(|conn| {
            conn.prepare("SELECT key FROM reserved")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    /// The ids of every upload in progress.
    pub(crate) fn uploads(&self) -> io::Result<Vec<String>> {
        self.read(|conn| {
            conn.prepare("SELECT id FROM uploads")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }
}

/// A batch of changes whose files are synced, with the changes whose file
/// could not be, and why.
type Synced = (Vec<(Change, Reply)>, Vec<(Change, Reply, io::Error)>);

/// The committer: takes changes as they come, a batch at a time, syncs
/// each file the batch wrote (the blocks' bytes are durable before any
/// record says so), commits the batch in one transaction, then answers
/// each caller. One thread does both, one after the other: on this
/// machine's disk two syncs at once (the files' and the records') each
/// take about three times as long as one alone, so overlapping the next
/// batch's files with this batch's commit was slower (100 MiB in 10 KiB
/// blocks: 4.2-4.7 s against 3.8-3.9 s at 4 in flight, 2.2-2.4 s against
/// 2.0-2.1 s at 16).
fn commit_loop(mut conn: Connection, changes: mpsc::Receiver<(Change, Reply)>, cache: &Cache) {
    while let Ok(first) = changes.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match changes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        commit_synced(&mut conn, sync_files(batch), cache);
    }
}

/// Syncs each file `batch` wrote. A file that cannot be synced (removed
/// by a discard meanwhile, a failing disk) fails only the changes that
/// wrote it.
fn sync_files(batch: Vec<(Change, Reply)>) -> Synced {
    let files: BTreeSet<&PathBuf> = batch
        .iter()
        .filter_map(|(c, _)| match c {
            Change::Ack { file, .. } => Some(file),
            _ => None,
        })
        .collect();
    let unsynced: Vec<(PathBuf, io::Error)> = files
        .into_iter()
        .filter_map(|f| {
            let synced = File::open(f).and_then(|file| file.sync_data());
            synced.err().map(|e| {
                let e = io::Error::new(e.kind(), format!("sync {}: {e}", f.display()));
                (f.clone(), e)
            })
        })
        .collect();
    let mut ready = (Vec::with_capacity(batch.len()), Vec::new());
    for (change, reply) in batch {
        let failed = match &change {
            Change::Ack { file, .. } => unsynced.iter().find(|(f, _)| f == file),
            _ => None,
        };
        match failed {
            Some((_, e)) => ready
                .1
                .push((change, reply, io::Error::new(e.kind(), e.to_string()))),
            None => ready.0.push((change, reply)),
        }
    }
    ready
}

/// Commits a synced batch in one transaction, then answers each caller (a
/// block's with its upload as recorded then, read once per upload and
/// batch).
fn commit_synced(conn: &mut Connection, (to_commit, failed_sync): Synced, cache: &Cache) {
    for (_, reply, e) in failed_sync {
        let _ = reply.send(Err(e));
    }
    let results = commit(conn, &to_commit).map_err(failed);
    let mut read: HashMap<String, Option<Upload>> = HashMap::new();
    for (i, (change, reply)) in to_commit.into_iter().enumerate() {
        let result = match &results {
            Ok(each) => each[i].clone().map_err(refused),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        let result = match (result, change) {
            (Ok(()), Change::Ack { id, .. }) => match read.get(&id) {
                Some(upload) => Ok(upload.clone()),
                None => read_upload(conn, cache, &id)
                    .map_err(failed)
                    .inspect(|upload| {
                        read.insert(id, upload.clone());
                    }),
            },
            (result, _) => result.map(|()| None),
        };
        let _ = reply.send(result);
    }
}

/// Why charging `more` bytes to `owner` breaks `quota`, counting every
/// upload in progress and every whole file's charge but `except`'s.
fn over_quota(
    tx: &rusqlite::Transaction<'_>,
    quota: &Quota,
    owner: &str,
    more: u64,
    except: &str,
) -> rusqlite::Result<Option<String>> {
    if !quota.is_limited() {
        return Ok(None);
    }
    let held = |by_owner: bool| -> rusqlite::Result<u64> {
        let filter = if by_owner {
            "WHERE owner = ?1"
        } else {
            "WHERE ?1 = ?1"
        };
        let uploads: i64 = tx.query_row(
            &format!("SELECT COALESCE(SUM(total), 0) FROM uploads {filter}"),
            params![owner],
            |r| r.get(0),
        )?;
        let reserved: i64 = tx.query_row(
            &format!("SELECT COALESCE(SUM(bytes), 0) FROM reserved {filter} AND key != ?2"),
            params![owner, except],
            |r| r.get(0),
        )?;
        Ok((uploads + reserved) as u64)
    };
    Ok(quota.refusal(owner, more, held(false)?, held(true)?))
}

/// What a change's refusal is: its kind (the receiver's status follows from
/// it) and why.
type Refused = (io::ErrorKind, String);

/// A change refused because its upload id belongs to other credentials
/// (inside an [`io::Error`], so that it is told apart from a file the
/// receiver may not open).
#[derive(Debug)]
pub(crate) struct OthersId(pub(crate) String);

impl std::fmt::Display for OthersId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OthersId {}

/// A change's refusal as the error its caller gets.
fn refused((kind, why): Refused) -> io::Error {
    match kind {
        io::ErrorKind::PermissionDenied => io::Error::new(kind, OthersId(why)),
        kind => io::Error::new(kind, why),
    }
}

/// Who holds upload id `id` in the records: the owner of its upload in
/// progress, and the owner of its landing.
fn holders(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
) -> rusqlite::Result<(Option<String>, Option<String>)> {
    let owner = |table: &str| {
        let sql = format!("SELECT owner FROM {table} WHERE id = ?1");
        tx.query_row(&sql, params![id], |r| r.get(0)).optional()
    };
    Ok((owner("uploads")?, owner("landed")?))
}

/// Applies a batch in one transaction; each change's own outcome, or the
/// transaction's failure.
fn commit(
    conn: &mut Connection,
    batch: &[(Change, Reply)],
) -> rusqlite::Result<Vec<Result<(), Refused>>> {
    // Immediate: the write lock is taken (waiting as long as the busy
    // timeout) before anything is read. A transaction that read first and
    // then wrote would fail at once ("database is locked") whenever another
    // process sharing the records committed in between.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (change, _) in batch {
        let mut outcome = Ok(());
        match change {
            Change::Begin(new, quota) => {
                let (known, landed) = holders(&tx, &new.id)?;
                let others = known.iter().chain(&landed).any(|o| *o != new.owner);
                match over_quota(&tx, quota, &new.owner, new.total, "")? {
                    // Checked in the transaction that records the upload:
                    // a whole file landed under the id since the door
                    // looked, or another's upload begun at the same moment.
                    _ if others => {
                        let why = fileuploader_store::StoreError::others_id(&new.id);
                        outcome = Err((io::ErrorKind::PermissionDenied, why.message().to_owned()));
                    }
                    Some(why) if known.is_none() => {
                        outcome = Err((io::ErrorKind::QuotaExceeded, why));
                    }
                    _ => {
                        tx.execute(
                            "INSERT OR IGNORE INTO uploads (id, total, name, owner, touched, partial, metadata, beginning) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                            params![new.id, new.total as i64, new.name, new.owner, now_ms(), new.partial, new.metadata, rand::random::<i64>()],
                        )?;
                    }
                }
            }
            Change::Reserve {
                key,
                owner,
                bytes,
                quota,
            } => match over_quota(&tx, quota, owner, *bytes, key)? {
                Some(why) => outcome = Err((io::ErrorKind::QuotaExceeded, why)),
                None => {
                    tx.execute(
                        "INSERT OR REPLACE INTO reserved (key, owner, bytes) VALUES (?1, ?2, ?3)",
                        params![key, owner, *bytes as i64],
                    )?;
                }
            },
            Change::Release { key } => {
                tx.execute("DELETE FROM reserved WHERE key = ?1", params![key])?;
            }
            Change::Ack {
                id,
                start,
                end,
                crc,
                ..
            } => {
                let touched: Option<i64> = tx
                    .prepare_cached("SELECT touched FROM uploads WHERE id = ?1")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?;
                let now = now_ms();
                match touched {
                    // Expired or discarded while the block was on its way.
                    None => {
                        outcome = Err((io::ErrorKind::Other, format!("upload {id} was discarded")))
                    }
                    Some(touched) => {
                        // Every block restarts the expiry clock, to the
                        // millisecond: a store-wide sweep may run with any
                        // time to live, however short.
                        if touched < now {
                            tx.prepare_cached("UPDATE uploads SET touched = ?2 WHERE id = ?1")?
                                .execute(params![id, now])?;
                        }
                        tx.prepare_cached(
                            "INSERT OR REPLACE INTO acks (id, start, end, crc) VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![id, *start as i64, *end as i64, crc.map(i64::from)])?;
                    }
                }
            }
            Change::LandingError { id, error } => {
                tx.execute(
                    "UPDATE uploads SET landing_error = ?2 WHERE id = ?1",
                    params![id, error],
                )?;
            }
            Change::Landed { landed, event } => {
                let id = &landed.id;
                let (in_progress, landed_by) = match id.is_empty() {
                    true => (None, None),
                    false => holders(&tx, id)?,
                };
                if in_progress
                    .iter()
                    .chain(&landed_by)
                    .any(|o| *o != landed.owner)
                {
                    // Two uploads of one id by different credentials, each
                    // begun before the other's was known (a whole file and
                    // blocks, say): the id stays with the one that holds it,
                    // landed or in progress, with its record and its event;
                    // the other is refused.
                    let why = fileuploader_store::StoreError::others_id(id)
                        .message()
                        .to_owned();
                    outcome = Err((io::ErrorKind::PermissionDenied, why));
                } else {
                    if !id.is_empty() {
                        tx.execute("DELETE FROM acks WHERE id = ?1", params![id])?;
                        tx.execute("DELETE FROM uploads WHERE id = ?1", params![id])?;
                        tx.execute(
                            "INSERT OR REPLACE INTO landed (id, statement, at, owner) VALUES (?1, ?2, ?3, ?4)",
                            params![id, landed.to_record(), now_ms(), landed.owner],
                        )?;
                    }
                    if let Some(key) = event {
                        // Landed again (a retried landing): one event still.
                        tx.execute(
                            "INSERT OR IGNORE INTO outbox (key, landed, owner, due) VALUES (?1, ?2, ?3, ?4)",
                            params![key, landed.to_record(), landed.owner, now_ms()],
                        )?;
                    }
                }
            }
            Change::Delivered { key } => {
                tx.execute("DELETE FROM outbox WHERE key = ?1", params![key])?;
            }
            Change::Undelivered { key, due } => {
                tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, due = ?2, claimed_by = NULL WHERE key = ?1",
                    params![key, due],
                )?;
            }
            Change::Touch { id } => {
                tx.execute(
                    "UPDATE uploads SET touched = ?2 WHERE id = ?1",
                    params![id, now_ms()],
                )?;
            }
            Change::Discard { id } => {
                tx.execute("DELETE FROM acks WHERE id = ?1", params![id])?;
                tx.execute("DELETE FROM uploads WHERE id = ?1", params![id])?;
            }
        }
        outcomes.push(outcome);
    }
    tx.commit()?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landings_recorded_before_version_2_are_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(open(&path).unwrap());
        let old = r#"{"state":"landed","upload_id":"u1","name":"scan.pdf","length":25,"crc32c":"1a2b3c4d"}"#;
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO landed (id, statement, at, owner) VALUES ('u1', ?1, 0, 'alice')",
                params![old],
            )
            .unwrap();
        let state = State::open(&path).unwrap();
        let landed = state.landed("u1").unwrap().unwrap();
        assert_eq!(
            landed,
            Landed::new("u1", "alice", "scan.pdf", 25, Some(0x1a2b_3c4d))
        );
        let kept: String = Connection::open(&path)
            .unwrap()
            .query_row("SELECT statement FROM landed WHERE id = 'u1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept, landed.to_record(), "rewritten in this version's form");
    }

    #[test]
    fn full_records_answer_as_a_full_disk() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x BLOB); PRAGMA max_page_count = 2;")
            .unwrap();
        let full = conn
            .execute("INSERT INTO t VALUES (zeroblob(100000))", [])
            .unwrap_err();
        let full = failed(full);
        assert_eq!(full.kind(), io::ErrorKind::StorageFull);
        let refusal = crate::fs::io_refusal("begin upload", &full);
        assert_eq!(refusal.kind(), fileuploader_store::ErrorKind::Full);
    }

    fn begin(id: &str) -> Change {
        Change::Begin(
            NewUpload {
                id: id.into(),
                total: 4,
                name: "n".into(),
                owner: String::new(),
                partial: false,
                metadata: None,
            },
            Quota::none(),
        )
    }

    #[test]
    fn a_block_of_a_discarded_upload_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("s.sqlite")).unwrap();
        let file = dir.path().join("part");
        std::fs::write(&file, b"ab").unwrap();
        let ack = |id: &str| Change::Ack {
            id: id.into(),
            start: 0,
            end: 2,
            crc: Some(7),
            file: file.clone(),
        };
        state.apply(begin("u")).unwrap();
        state.apply(ack("u")).unwrap();
        let acks = state.acks_after("u", 0).unwrap();
        assert_eq!(acks.len(), 1);
        assert_eq!(
            acks[0].1,
            Block {
                start: 0,
                end: 2,
                crc32c: Some(7)
            }
        );
        state.apply(Change::Discard { id: "u".into() }).unwrap();
        let late = state.apply(ack("u")).unwrap_err();
        assert!(late.to_string().contains("discarded"), "{late}");
        assert!(state.head("u").unwrap().is_none(), "no orphan record");
        assert!(state.acks_after("u", 0).unwrap().is_empty());
    }

    #[test]
    fn two_committers_on_one_database_wait_for_each_other_instead_of_failing() {
        // Two receivers sharing a directory: each has its own committer.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let (one, two) = (State::open(&path).unwrap(), State::open(&path).unwrap());
        let file = dir.path().join("part");
        std::fs::write(&file, b"abcd").unwrap();
        one.apply(begin("u1")).unwrap();
        two.apply(begin("u2")).unwrap();
        let acks = |state: &State, id: &str| {
            for start in 0..300u64 {
                state
                    .apply(Change::Ack {
                        id: id.into(),
                        start,
                        end: start + 1,
                        crc: None,
                        file: file.clone(),
                    })
                    .unwrap();
            }
        };
        std::thread::scope(|s| {
            s.spawn(|| acks(&one, "u1"));
            s.spawn(|| acks(&two, "u2"));
        });
        assert_eq!(one.acks_after("u2", 0).unwrap().len(), 300);
        assert_eq!(two.acks_after("u1", 0).unwrap().len(), 300);
    }

    #[test]
    fn a_file_that_cannot_be_synced_fails_only_its_own_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let writer = open(&path).unwrap();
        let state = State::open(&path).unwrap();
        state.apply(begin("kept")).unwrap();
        state.apply(begin("gone")).unwrap();
        let kept = dir.path().join("kept");
        std::fs::write(&kept, b"ab").unwrap();
        let ack = |id: &str, file: PathBuf| Change::Ack {
            id: id.into(),
            start: 0,
            end: 2,
            crc: None,
            file,
        };
        // Both in one batch: queued before the committer starts.
        let (tx, rx) = mpsc::channel();
        let (ok, ok_done) = oneshot::channel();
        let (bad, bad_done) = oneshot::channel();
        tx.send((ack("gone", dir.path().join("removed meanwhile")), bad))
            .unwrap();
        tx.send((ack("kept", kept), ok)).unwrap();
        drop(tx);
        commit_loop(writer, rx, &Cache::default());
        let e = bad_done.blocking_recv().unwrap().unwrap_err();
        assert!(e.to_string().contains("removed meanwhile"), "{e}");
        ok_done.blocking_recv().unwrap().unwrap();
        assert_eq!(state.acks_after("kept", 0).unwrap().len(), 1);
        assert!(state.acks_after("gone", 0).unwrap().is_empty());
    }

    #[test]
    fn a_reader_reads_only_blocks_acknowledged_after_what_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("s.sqlite")).unwrap();
        let file = dir.path().join("part");
        std::fs::write(&file, b"abcd").unwrap();
        let ack = |start: u64, crc: u32| Change::Ack {
            id: "u".into(),
            start,
            end: start + 2,
            crc: Some(crc),
            file: file.clone(),
        };
        state.apply(begin("u")).unwrap();
        state.apply(ack(0, 1)).unwrap();
        let seen = state.acks_after("u", 0).unwrap().last().unwrap().0;
        state.apply(ack(2, 2)).unwrap();
        state.apply(ack(0, 3)).unwrap();
        let newer: Vec<_> = state
            .acks_after("u", seen)
            .unwrap()
            .into_iter()
            .map(|(_, b)| (b.start, b.crc32c))
            .collect();
        assert_eq!(
            newer,
            [(2, Some(2)), (0, Some(3))],
            "a replaced block is newer too"
        );
    }

    #[test]
    fn records_from_before_acks_and_partial_uploads_are_carried_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE uploads (id TEXT PRIMARY KEY, total INTEGER NOT NULL, name TEXT NOT NULL,
                 owner TEXT NOT NULL, touched INTEGER NOT NULL, landing_error TEXT);
             INSERT INTO uploads VALUES ('u', 4, 'n', '', 0, NULL);
             CREATE TABLE blocks (id TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, crc INTEGER, PRIMARY KEY (id, start));
             INSERT INTO blocks VALUES ('u', 0, 2, 5), ('u', 2, 4, NULL);",
        )
        .unwrap();
        drop(old);
        let state = State::open(&path).unwrap();
        let blocks: Vec<_> = state
            .acks_after("u", 0)
            .unwrap()
            .into_iter()
            .map(|(_, b)| (b.start, b.end, b.crc32c))
            .collect();
        assert_eq!(blocks, [(0, 2, Some(5)), (2, 4, None)]);
        let head = state.head("u").unwrap().unwrap();
        assert!(!head.begun.partial && head.begun.total == 4);
    }
}
