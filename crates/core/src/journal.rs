//! Resume journals: which blocks of a source a server has acknowledged,
//! kept append-only and fsync'd so a run killed at any moment can be resumed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fileuploader_wire::resumable::{decode_text, encode_text};

use crate::protocol::Handle;
use crate::source::{lock, SourceIdentity};

/// The first line's first field: the format, and its version.
const MAGIC: &str = "fileuploader-journal 2";
/// The first format, whose handle was text; read once, then rewritten.
const MAGIC_V1: &str = "fileuploader-journal 1";

/// Whether a job keeps a resume journal, and where.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resume {
    /// No journal: every run uploads every block (the default).
    #[default]
    Off,
    /// Keep journals in this directory: a run of the same job after an
    /// interrupted one sends only the blocks the server had not
    /// acknowledged, and counts a source that landed before the
    /// interruption as landed once the receiver confirms it (same length
    /// and CRC32C). Applies to file sources; the journals are removed when
    /// the job succeeds.
    In(PathBuf),
    /// As [`In`](Self::In), but the journals stay after the job succeeds,
    /// as receipts of what landed, until [`Job::remove_journals`]: for a
    /// batch of jobs that is done only when every one of them is (a folder
    /// uploaded a file per job), so that resuming the batch asks the
    /// receiver about files that landed instead of sending them again.
    ///
    /// [`Job::remove_journals`]: crate::Job::remove_journals
    KeptIn(PathBuf),
}

impl Resume {
    /// Journals in [`default_journal_dir`].
    pub fn on() -> Self {
        Resume::In(default_journal_dir())
    }

    /// The directory journals are kept in, if any.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Resume::Off => None,
            Resume::In(dir) | Resume::KeptIn(dir) => Some(dir),
        }
    }
}

/// Where resume journals are kept by default: `$FILEUPLOADER_JOURNAL_DIR`, else
/// `$XDG_STATE_HOME/fileuploader/journals`, else
/// `~/.local/state/fileuploader/journals`, else a folder in the system's
/// temporary directory.
pub fn default_journal_dir() -> PathBuf {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("FILEUPLOADER_JOURNAL_DIR")
        .or_else(|| env("XDG_STATE_HOME").map(|d| d.join("fileuploader/journals")))
        .or_else(|| env("HOME").map(|d| d.join(".local/state/fileuploader/journals")))
        .unwrap_or_else(|| std::env::temp_dir().join("fileuploader-journals"))
}

/// One source's journal: a cache of its upload session (its [`Handle`] and
/// the blocks acknowledged, with their CRC32Cs and receipts), never the
/// judge of what the receiver holds.
///
/// The first line is `fileuploader-journal 2`, the key (receiver URL,
/// source path, block size), the source's fingerprint and the handle as
/// JSON, separated by tabs; each line after it is one acknowledged block.
#[derive(Debug)]
pub(crate) struct Journal {
    dir: PathBuf,
    path: PathBuf,
    /// The header line up to the handle.
    header: String,
    /// The open file and the handle its header names.
    file: Mutex<Option<(File, Handle)>>,
}

/// One acknowledged block, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournaledAck {
    pub(crate) index: u64,
    /// The CRC32C of its bytes, when one was computed.
    pub(crate) crc32c: Option<u32>,
    /// What the receiver gave for it (an ETag, an offset), if anything.
    pub(crate) receipt: Option<String>,
}

/// What a journal says when a run starts.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) journal: Journal,
    /// The session of the interrupted run, if there was one.
    pub(crate) handle: Option<Handle>,
    /// The blocks it saw acknowledged.
    pub(crate) acked: Vec<JournaledAck>,
    pub(crate) note: Option<String>,
}

impl Journal {
    /// Reads the journal for uploading `source` to `server_url` in
    /// `block_size` blocks: what an interrupted run of the same content
    /// kept, or nothing (with a note saying why) if the source changed.
    pub(crate) fn open(
        dir: &Path,
        server_url: &str,
        source: &SourceIdentity,
        block_size: u64,
    ) -> io::Result<Resumed> {
        fs::create_dir_all(dir)?;
        let key = format!("{server_url}\t{}\t{block_size}", source.path);
        let fingerprint = format!(
            "{}\t{}\t{:08x}",
            source.len, source.modified_ns, source.sample_crc32c
        );
        let base: String = Path::new(&source.path)
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || "._-".contains(*c))
                    .take(64)
                    .collect()
            })
            .unwrap_or_default();
        let path = dir.join(format!(
            "{base}-{:08x}.journal",
            crc32c::crc32c(key.as_bytes())
        ));

        let header = format!("{MAGIC}\t{key}\t{fingerprint}");
        let (handle, acked, note) = match fs::read_to_string(&path) {
            Ok(text) => {
                // Only whole lines count: a crash leaves at worst a torn
                // last line, which could be a prefix of another number.
                let mut lines = text
                    .split_inclusive('\n')
                    .filter_map(|l| l.strip_suffix('\n'));
                let first: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
                let same_key = first.get(1..4).map(|k| k.join("\t")) == Some(key.clone());
                let same_content =
                    first.get(4..7).map(|f| f.join("\t")) == Some(fingerprint.clone());
                let handle = match first.first().copied() {
                    Some(MAGIC) => first.get(7).and_then(|h| serde_json::from_str(h).ok()),
                    Some(MAGIC_V1) => first.get(7).map(|h| Handle::from_v1(h)),
                    _ => None,
                };
                match (handle, same_key, same_content) {
                    (Some(handle), true, true) => {
                        let acked: Vec<JournaledAck> = lines.filter_map(parse_ack).collect();
                        if first.first() == Some(&MAGIC_V1) {
                            rewrite(dir, &path, &header, &handle, &acked)?;
                        }
                        (Some(handle), acked, None)
                    }
                    (Some(_), true, false) => (
                        None,
                        Vec::new(),
                        Some(format!(
                            "{} changed since the interrupted upload (size, modification time or content); starting it over",
                            source.path
                        )),
                    ),
                    _ => (None, Vec::new(), Some(format!("the journal {} was not for this upload; starting over", path.display()))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, Vec::new(), None),
            Err(e) => return Err(e),
        };
        let file = match &handle {
            Some(handle) => Some((OpenOptions::new().append(true).open(&path)?, handle.clone())),
            None => None,
        };
        Ok(Resumed {
            journal: Journal {
                dir: dir.to_owned(),
                path,
                header,
                file: Mutex::new(file),
            },
            handle,
            acked,
            note,
        })
    }

    /// Keeps `handle` as the session to resume; a new handle starts the
    /// journal over, durably.
    pub(crate) fn keep_session(&self, handle: &Handle) -> io::Result<()> {
        let mut file = lock(&self.file);
        if file.as_ref().is_some_and(|(_, kept)| kept == handle) {
            return Ok(());
        }
        let mut f = File::create(&self.path)?;
        f.write_all(first_line(&self.header, handle).as_bytes())?;
        f.sync_all()?;
        sync_dir(&self.dir);
        *file = Some((f, handle.clone()));
        Ok(())
    }

    /// Records that block `index` was acknowledged, with its CRC32C and the
    /// receiver's receipt when there are any, durably.
    pub(crate) fn ack(&self, ack: &JournaledAck) -> io::Result<()> {
        let mut file = lock(&self.file);
        let Some((file, _)) = file.as_mut() else {
            return Err(io::Error::other("the journal has no session yet"));
        };
        let line = ack_line(ack);
        // One write per line, so a crash leaves at worst a partial last
        // line, which reading skips.
        file.write_all(line.as_bytes())?;
        file.sync_data()
    }

    /// Deletes the journal once its job is done.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Where the journal is.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The journal's first line: `header`, then `handle` as JSON.
fn first_line(header: &str, handle: &Handle) -> String {
    let json = serde_json::to_string(handle).expect("a handle is plain strings");
    format!("{header}\t{json}\n")
}

/// One acknowledged block's line.
fn ack_line(ack: &JournaledAck) -> String {
    let crc = ack
        .crc32c
        .map_or_else(|| "-".to_owned(), |c| format!("{c:08x}"));
    match &ack.receipt {
        Some(receipt) => format!("ack {} {crc} {}\n", ack.index, encode_text(receipt)),
        None => format!("ack {} {crc}\n", ack.index),
    }
}

/// Replaces the journal at `path` by one in this format, holding the same
/// session and acknowledgements: written beside it, synced, renamed over
/// it, so a crash leaves the old or the new one whole.
fn rewrite(
    dir: &Path,
    path: &Path,
    header: &str,
    handle: &Handle,
    acked: &[JournaledAck],
) -> io::Result<()> {
    let mut text = first_line(header, handle);
    for ack in acked {
        text.push_str(&ack_line(ack));
    }
    let temp = path.with_extension("journal.new");
    let mut f = File::create(&temp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&temp, path)?;
    sync_dir(dir);
    Ok(())
}

/// `ack N`, `ack N CRC` or `ack N CRC RECEIPT`, with `-` for no CRC.
fn parse_ack(line: &str) -> Option<JournaledAck> {
    let mut fields = line.strip_prefix("ack ")?.split(' ');
    let index = fields.next()?.parse().ok()?;
    let crc32c = fields.next().and_then(|c| u32::from_str_radix(c, 16).ok());
    let receipt = fields.next().map(decode_text);
    Some(JournaledAck {
        index,
        crc32c,
        receipt,
    })
}

/// Makes a new file's directory entry durable too; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(len: u64, sample: u32) -> SourceIdentity {
        SourceIdentity {
            path: "/data/scan.pdf".into(),
            len,
            modified_ns: 42,
            sample_crc32c: sample,
        }
    }

    fn id(n: u32) -> Handle {
        Handle::Id {
            id: format!("id-{n}"),
        }
    }

    #[test]
    fn resumes_the_same_content_and_starts_changed_content_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1/u";
        let first = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!((first.handle.as_ref(), first.acked.len()), (None, 0));
        assert!(first.note.is_none());
        let ack = |index, crc32c, receipt: Option<&str>| JournaledAck {
            index,
            crc32c,
            receipt: receipt.map(str::to_owned),
        };
        assert!(
            first.journal.ack(&ack(1, None, None)).is_err(),
            "no session kept yet"
        );
        first.journal.keep_session(&id(1)).unwrap();
        first.journal.ack(&ack(3, Some(0xabc), None)).unwrap();
        first
            .journal
            .ack(&ack(0, None, Some("\"etag 1\"%\n")))
            .unwrap();
        // A crash mid-line leaves a torn last line: "ack 9" of "ack 95".
        OpenOptions::new()
            .append(true)
            .open(first.journal.path())
            .unwrap()
            .write_all(b"ack 9")
            .unwrap();
        drop(first);

        let again = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!(again.handle, Some(id(1)), "the session survives");
        assert_eq!(
            again.acked,
            [
                ack(3, Some(0xabc), None),
                ack(0, None, Some("\"etag 1\"%\n"))
            ],
            "receipts survive escaping; the torn line is skipped"
        );
        again.journal.keep_session(&id(1)).unwrap();
        again.journal.ack(&ack(5, None, None)).unwrap();
        drop(again);
        let kept = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!(
            kept.acked.len(),
            2,
            "the torn line stays unreadable: {:?}",
            kept.acked
        );
        kept.journal.keep_session(&id(2)).unwrap();
        drop(kept);
        let restarted = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        assert_eq!(
            (restarted.handle.clone(), restarted.acked.len()),
            (Some(id(2)), 0),
            "a new session starts the journal over"
        );
        drop(restarted);

        let changed = Journal::open(dir.path(), url, &identity(100, 8), 10).unwrap();
        assert_eq!((changed.handle, changed.acked.len()), (None, 0));
        assert!(changed
            .note
            .unwrap()
            .contains("changed since the interrupted upload"));

        let other_blocks = Journal::open(dir.path(), url, &identity(100, 8), 20).unwrap();
        assert_eq!(
            other_blocks.handle, None,
            "another block size is another journal"
        );
        assert_ne!(other_blocks.journal.path(), changed.journal.path());
        changed.journal.remove().unwrap();
        assert!(!changed.journal.path().exists());
        changed.journal.remove().unwrap();
    }

    #[test]
    fn a_journal_of_the_first_format_is_read_once_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1/files";
        let made = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
        let path = made.journal.path().to_owned();
        drop(made);
        let key = format!("{url}\t/data/scan.pdf\t10\t100\t42\t00000007");
        let v1 = |handle: &str, acks: &str| {
            fs::write(
                &path,
                format!("fileuploader-journal 1\t{key}\t{handle}\n{acks}"),
            )
            .unwrap();
            Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap()
        };
        let cases = [
            (
                "http://127.0.0.1/files/ab%20c",
                Handle::Url {
                    url: "http://127.0.0.1/files/ab%20c".into(),
                },
            ),
            (
                "creation-with-upload k1",
                Handle::FirstRequest { key: "k1".into() },
            ),
            ("concatenation", Handle::Parts),
            (
                "0f3a9c",
                Handle::Id {
                    id: "0f3a9c".into(),
                },
            ),
        ];
        for (text, handle) in cases {
            let old = v1(text, "ack 0 0000abcd 0%2010%20http://h/p0\nack 1 -\nack 2");
            assert_eq!(old.handle.as_ref(), Some(&handle), "{text}");
            assert_eq!(
                old.acked,
                [
                    JournaledAck {
                        index: 0,
                        crc32c: Some(0xabcd),
                        receipt: Some("0 10 http://h/p0".into())
                    },
                    JournaledAck {
                        index: 1,
                        crc32c: None,
                        receipt: None
                    }
                ],
                "{text}: the torn last line is dropped"
            );
            old.journal
                .ack(&JournaledAck {
                    index: 3,
                    crc32c: None,
                    receipt: None,
                })
                .unwrap();
            drop(old);
            let text_now = fs::read_to_string(&path).unwrap();
            assert!(
                text_now.starts_with("fileuploader-journal 2\t"),
                "rewritten: {text_now}"
            );
            let new = Journal::open(dir.path(), url, &identity(100, 7), 10).unwrap();
            assert_eq!(new.handle, Some(handle), "read back from the new format");
            assert_eq!(
                new.acked.iter().map(|a| a.index).collect::<Vec<_>>(),
                [0, 1, 3],
                "appends go on after the rewrite"
            );
        }
        assert!(
            !path.with_extension("journal.new").exists(),
            "no temporary file left"
        );
    }
}
