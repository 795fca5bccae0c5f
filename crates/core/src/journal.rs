//! Resume journals: which blocks of a source a server has acknowledged,
//! kept append-only and fsync'd so a run killed at any moment can be resumed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::source::{lock, SourceIdentity};

const MAGIC: &str = "fileuploader-journal 1";

/// Whether a job keeps a resume journal, and where.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resume {
    /// No journal: every run uploads every block (the default).
    #[default]
    Off,
    /// Keep journals in this directory: a run of the same job after an
    /// interrupted one sends only the blocks the server had not
    /// acknowledged. Applies to file sources; the journal is removed when
    /// the job succeeds.
    In(PathBuf),
}

impl Resume {
    /// Journals in [`default_journal_dir`].
    pub fn on() -> Self {
        Resume::In(default_journal_dir())
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

/// One source's journal, open for appending acknowledgements.
#[derive(Debug)]
pub(crate) struct Journal {
    file: Mutex<File>,
    path: PathBuf,
}

/// What a journal says when a run starts.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) journal: Journal,
    pub(crate) upload_id: String,
    pub(crate) acked: Vec<u64>,
    pub(crate) note: Option<String>,
}

impl Journal {
    /// Opens the journal for uploading `source` to `server_url` in
    /// `block_size` blocks: resumes it if it describes the same content, or
    /// starts it over (with a note saying why) if the source changed.
    pub(crate) fn open(
        dir: &Path,
        server_url: &str,
        source: &SourceIdentity,
        block_size: u64,
        new_upload_id: impl FnOnce() -> String,
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

        let (upload_id, acked, note) = match fs::read_to_string(&path) {
            Ok(text) => {
                let mut lines = text.lines();
                let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
                let same_key = header.get(1..4).map(|k| k.join("\t")) == Some(key.clone());
                let same_content =
                    header.get(4..7).map(|f| f.join("\t")) == Some(fingerprint.clone());
                match (header.first() == Some(&MAGIC) && same_key, same_content, header.get(7)) {
                    (true, true, Some(id)) => {
                        let acked = lines.filter_map(|l| l.strip_prefix("ack ")?.parse().ok()).collect();
                        (id.to_string(), acked, None)
                    }
                    (true, _, _) => (
                        new_upload_id(),
                        Vec::new(),
                        Some(format!(
                            "{} changed since the interrupted upload (size, modification time or content); starting it over",
                            source.path
                        )),
                    ),
                    _ => (new_upload_id(), Vec::new(), Some(format!("the journal {} was not for this upload; starting over", path.display()))),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (new_upload_id(), Vec::new(), None),
            Err(e) => return Err(e),
        };
        let file = if acked.is_empty() {
            let mut file = File::create(&path)?;
            writeln!(file, "{MAGIC}\t{key}\t{fingerprint}\t{upload_id}")?;
            file.sync_all()?;
            sync_dir(dir);
            file
        } else {
            OpenOptions::new().append(true).open(&path)?
        };
        Ok(Resumed {
            journal: Journal {
                file: Mutex::new(file),
                path,
            },
            upload_id,
            acked,
            note,
        })
    }

    /// Records that block `index` was acknowledged, durably.
    pub(crate) fn ack(&self, index: u64) -> io::Result<()> {
        let mut file = lock(&self.file);
        // One write per line, so a crash leaves at worst a partial last
        // line, which reading skips.
        file.write_all(format!("ack {index}\n").as_bytes())?;
        file.sync_data()
    }

    /// Deletes the journal once its upload has succeeded.
    pub(crate) fn remove(&self) -> io::Result<()> {
        fs::remove_file(&self.path)
    }

    /// Where the journal is.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
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

    #[test]
    fn resumes_the_same_content_and_starts_changed_content_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = "http://127.0.0.1/u";
        let first =
            Journal::open(dir.path(), url, &identity(100, 7), 10, || "id-1".into()).unwrap();
        assert_eq!(
            (
                first.upload_id.as_str(),
                first.acked.len(),
                first.note.is_none()
            ),
            ("id-1", 0, true)
        );
        first.journal.ack(3).unwrap();
        first.journal.ack(0).unwrap();
        // A crash mid-line leaves a torn last line.
        OpenOptions::new()
            .append(true)
            .open(first.journal.path())
            .unwrap()
            .write_all(b"ack 9")
            .unwrap();
        drop(first);

        let again =
            Journal::open(dir.path(), url, &identity(100, 7), 10, || "id-2".into()).unwrap();
        assert_eq!(again.upload_id, "id-1", "the upload id survives");
        assert_eq!(again.acked, [3, 0, 9]);
        drop(again);

        let changed =
            Journal::open(dir.path(), url, &identity(100, 8), 10, || "id-3".into()).unwrap();
        assert_eq!(
            (changed.upload_id.as_str(), changed.acked.len()),
            ("id-3", 0)
        );
        assert!(changed
            .note
            .unwrap()
            .contains("changed since the interrupted upload"));

        let other_blocks =
            Journal::open(dir.path(), url, &identity(100, 8), 20, || "id-4".into()).unwrap();
        assert_eq!(
            other_blocks.upload_id, "id-4",
            "another block size is another journal"
        );
        assert_ne!(other_blocks.journal.path(), changed.journal.path());
        changed.journal.remove().unwrap();
        assert!(!changed.journal.path().exists());
    }
}
