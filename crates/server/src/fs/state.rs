//! The receiver's upload records in SQLite, written durably: a block is
//! acknowledged only once its bytes are on disk (`fdatasync` of its partial
//! file) and its record is committed. One committer thread takes every
//! change, so concurrent blocks share one sync of each file and one commit
//! (group commit), and each caller learns when its change is durable.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use fileuploader_wire::sync::lock;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use fileuploader_store::{Block, Event, Landed, NewUpload, Quota};

/// The most changes one commit takes.
const BATCH: usize = 512;

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
}

type Reply = oneshot::Sender<io::Result<()>>;

/// The records: a reader for queries and the committer for changes.
#[derive(Debug)]
pub(crate) struct State {
    reader: Mutex<Connection>,
    changes: Mutex<mpsc::Sender<(Change, Reply)>>,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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
             partial INTEGER NOT NULL DEFAULT 0, metadata TEXT);
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

impl State {
    /// Opens (or creates) the records at `path` and starts the committer.
    pub(crate) fn open(path: &Path) -> io::Result<State> {
        let writer = open(path).map_err(failed)?;
        let reader = open(path).map_err(failed)?;
        let (tx, rx) = mpsc::channel::<(Change, Reply)>();
        std::thread::Builder::new()
            .name("fu-committer".into())
            .spawn(move || commit_loop(writer, rx))?;
        Ok(State {
            reader: Mutex::new(reader),
            changes: Mutex::new(tx),
        })
    }

    /// Applies `change` durably; returns once it is committed. Blocks:
    /// call it from the blocking pool.
    pub(crate) fn apply(&self, change: Change) -> io::Result<()> {
        let (reply, done) = oneshot::channel();
        lock(&self.changes)
            .send((change, reply))
            .map_err(|_| closed())?;
        done.blocking_recv().map_err(|_| closed())?
    }

    /// The record of upload `id`, if it is in progress.
    pub(crate) fn head(&self, id: &str) -> io::Result<Option<Head>> {
        let conn = lock(&self.reader);
        conn.query_row(
            "SELECT total, name, owner, landing_error, partial, metadata FROM uploads WHERE id = ?1",
            params![id],
            |r| {
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
                })
            },
        )
        .optional()
        .map_err(failed)
    }

    /// The blocks of upload `id` acknowledged after `seq`, each with its
    /// own `seq`, oldest first.
    pub(crate) fn acks_after(&self, id: &str, seq: i64) -> io::Result<Vec<(i64, Block)>> {
        let conn = lock(&self.reader);
        let mut query = conn
            .prepare_cached(
                "SELECT seq, start, end, crc FROM acks WHERE id = ?1 AND seq > ?2 ORDER BY seq",
            )
            .map_err(failed)?;
        query
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
            })
            .and_then(|rows| rows.collect())
            .map_err(failed)
    }

    /// The landing of upload `id`, if it landed.
    pub(crate) fn landed(&self, id: &str) -> io::Result<Option<Landed>> {
        let conn = lock(&self.reader);
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT owner, statement FROM landed WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(failed)?;
        // The column keeps the record (version 2), or the landing statement
        // a receiver before it wrote there: both read.
        Ok(row.and_then(|(owner, text)| Landed::from_record(&text, Some(&owner))))
    }

    /// The ids of uploads in progress untouched since `before` (ms since
    /// the epoch).
    pub(crate) fn untouched_since(&self, before: i64) -> io::Result<Vec<String>> {
        let conn = lock(&self.reader);
        let mut query = conn
            .prepare("SELECT id FROM uploads WHERE touched < ?1")
            .map_err(failed)?;
        query
            .query_map(params![before], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(failed)
    }

    /// Claims for deliverer `me` events due by `now` (ms), or claimed by
    /// deliverers in `dead` (processes that ended holding them), oldest
    /// first, at most `limit`: each due again only at `until` (ms), unless
    /// its delivery is recorded first.
    pub(crate) fn claim_events(&self, claim: Claim<'_>, limit: usize) -> io::Result<Vec<Event>> {
        let conn = lock(&self.reader);
        let (now, until, me) = (claim.now, claim.until, claim.me);
        // What the ended deliverers held is due now, all of it at once:
        // they are told of once only.
        let dead = serde_json::to_string(claim.dead).map_err(io::Error::other)?;
        conn.execute(
            "UPDATE outbox SET due = ?1, claimed_by = NULL
             WHERE claimed_by IN (SELECT value FROM json_each(?2))",
            params![now, dead],
        )
        .map_err(failed)?;
        // One statement, so one transaction: of processes sharing the
        // records, each event goes to one, whose claim makes it due again
        // only at `until`.
        let mut query = conn
            .prepare(
                "UPDATE outbox SET due = ?3, claimed_by = ?4 WHERE key IN
                     (SELECT key FROM outbox WHERE due <= ?1 ORDER BY due LIMIT ?2)
                 RETURNING key, landed, owner, attempts",
            )
            .map_err(failed)?;
        let rows = query
            .query_map(params![now, limit as i64, until, me], event_row)
            .and_then(|rows| rows.collect());
        Ok(events(rows.map_err(failed)?))
    }

    /// Events due by `now` (ms), oldest first, at most `limit`, claimed by
    /// nobody: what a deliverer takes when the records cannot be written
    /// (a full disk), better told twice than not at all.
    pub(crate) fn due_events(&self, now: i64, limit: usize) -> io::Result<Vec<Event>> {
        let conn = lock(&self.reader);
        let mut query = conn
            .prepare(
                "SELECT key, landed, owner, attempts FROM outbox WHERE due <= ?1 ORDER BY due LIMIT ?2",
            )
            .map_err(failed)?;
        let rows = query
            .query_map(params![now, limit as i64], event_row)
            .and_then(|rows| rows.collect());
        Ok(events(rows.map_err(failed)?))
    }

    /// The temporary files whole files are charged for.
    pub(crate) fn reservations(&self) -> io::Result<Vec<String>> {
        let conn = lock(&self.reader);
        let mut query = conn.prepare("SELECT key FROM reserved").map_err(failed)?;
        query
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(failed)
    }

    /// The ids of every upload in progress.
    pub(crate) fn uploads(&self) -> io::Result<Vec<String>> {
        let conn = lock(&self.reader);
        let mut query = conn.prepare("SELECT id FROM uploads").map_err(failed)?;
        query
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(failed)
    }
}

/// Takes changes as they come, a batch at a time: syncs each file the batch
/// wrote, commits the batch in one transaction, then answers each caller.
/// A file that cannot be synced (removed by a discard meanwhile, a failing
/// disk) fails only the changes that wrote it; the others commit.
fn commit_loop(mut conn: Connection, changes: mpsc::Receiver<(Change, Reply)>) {
    while let Ok(first) = changes.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match changes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
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
        let sync_failure = |change: &Change| match change {
            Change::Ack { file, .. } => unsynced.iter().find(|(f, _)| f == file),
            _ => None,
        };
        let (failed_sync, to_commit): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(change, _)| sync_failure(change).is_some());
        for (change, reply) in failed_sync {
            if let Some((_, e)) = sync_failure(&change) {
                let _ = reply.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
        }
        let results = commit(&mut conn, &to_commit).map_err(failed);
        for (i, (_, reply)) in to_commit.into_iter().enumerate() {
            let result = match &results {
                Ok(each) => each[i]
                    .clone()
                    .map_err(|(kind, why)| io::Error::new(kind, why)),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = reply.send(result);
        }
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

/// Applies a batch in one transaction; each change's own outcome, or the
/// transaction's failure.
fn commit(
    conn: &mut Connection,
    batch: &[(Change, Reply)],
) -> rusqlite::Result<Vec<Result<(), Refused>>> {
    let tx = conn.transaction()?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (change, _) in batch {
        let mut outcome = Ok(());
        match change {
            Change::Begin(new, quota) => {
                let known = tx
                    .query_row(
                        "SELECT 1 FROM uploads WHERE id = ?1",
                        params![new.id],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                match over_quota(&tx, quota, &new.owner, new.total, "")? {
                    Some(why) if !known => outcome = Err((io::ErrorKind::QuotaExceeded, why)),
                    _ => {
                        tx.execute(
                            "INSERT OR IGNORE INTO uploads (id, total, name, owner, touched, partial, metadata) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                            params![new.id, new.total as i64, new.name, new.owner, now_ms(), new.partial, new.metadata],
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
                let touched = tx.execute(
                    "UPDATE uploads SET touched = ?2 WHERE id = ?1",
                    params![id, now_ms()],
                )?;
                if touched == 0 {
                    // Expired or discarded while the block was on its way.
                    outcome = Err((io::ErrorKind::Other, format!("upload {id} was discarded")));
                } else {
                    tx.execute(
                        "INSERT OR REPLACE INTO acks (id, start, end, crc) VALUES (?1, ?2, ?3, ?4)",
                        params![id, *start as i64, *end as i64, crc.map(i64::from)],
                    )?;
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
        commit_loop(writer, rx);
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
