//! What `upload` is given, made into a list of files with their remote
//! names: files as they are, folders (with `--recursive`) walked, each file
//! named by its path relative to the folder, `/`-separated.
//!
//! - Hidden files and folders (a name starting with `.`) inside a folder
//!   are left out unless `--hidden`; a path given by name is always taken.
//! - Symbolic links inside a folder are left out unless `--follow-symlinks`,
//!   which follows them to files and folders (a link cycle is reported,
//!   not followed forever).
//! - `--include GLOB` keeps only the files of a folder whose relative path
//!   matches one of the globs, `--exclude GLOB` leaves out those that match
//!   one (`*` stays within a folder, `**` crosses folders).

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::Failure;

/// Which files of a folder are taken.
#[derive(Debug, Default)]
pub(crate) struct Selection {
    pub(crate) recursive: bool,
    pub(crate) hidden: bool,
    pub(crate) follow_symlinks: bool,
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

/// What a walk of folders left out, and why: said, never silent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// Hidden files and folders (without `--hidden`).
    pub(crate) hidden: usize,
    /// Symbolic links (without `--follow-symlinks`).
    pub(crate) links: usize,
    /// Files `--include` or `--exclude` left out.
    pub(crate) filtered: usize,
}

impl Skipped {
    /// A note saying what was left out, if anything was.
    pub(crate) fn note(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.hidden > 0 {
            parts.push(format!(
                "{} hidden files or folders (--hidden takes them)",
                self.hidden
            ));
        }
        if self.links > 0 {
            parts.push(format!(
                "{} symbolic links (--follow-symlinks follows them)",
                self.links
            ));
        }
        if self.filtered > 0 {
            parts.push(format!(
                "{} files that --include/--exclude leave out",
                self.filtered
            ));
        }
        (!parts.is_empty()).then(|| format!("left out {}", parts.join(", ")))
    }
}

/// One file to upload, or why a path given cannot be.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The file on disk.
    pub(crate) path: PathBuf,
    /// Its remote name: the file's own name, or its path below the folder
    /// it was found in.
    pub(crate) name: String,
    /// Why it cannot be uploaded, found while walking.
    pub(crate) problem: Option<Failure>,
}

fn globs(patterns: &[String], flag: &str) -> Result<Option<GlobSet>, Failure> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|e| {
            Failure::new(
                fileuploader_core::code::INVALID_OPTION,
                format!("{flag} {p:?}: {e}"),
            )
        })?;
        set.add(glob);
    }
    set.build().map(Some).map_err(|e| {
        Failure::new(
            fileuploader_core::code::INVALID_OPTION,
            format!("{flag}: {e}"),
        )
    })
}

fn name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// The files `paths` stand for, in order, each folder's sorted by path.
///
/// # Errors
///
/// A malformed glob (code -10). A path that is missing, unreadable or a
/// folder without `--recursive` is an entry with its problem, so the other
/// files still go.
pub(crate) fn collect(
    paths: &[PathBuf],
    selection: &Selection,
) -> Result<(Vec<Entry>, Skipped), Failure> {
    let include = globs(&selection.include, "--include")?;
    let exclude = globs(&selection.exclude, "--exclude")?;
    let mut entries = Vec::new();
    let mut skipped = Skipped::default();
    for path in paths {
        let problem = |code, message: String| Entry {
            path: path.clone(),
            name: name_of(path),
            problem: Some(Failure::new(code, message)),
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    fileuploader_core::code::FILE_NOT_FOUND
                } else {
                    fileuploader_core::code::READ_FAILED
                };
                entries.push(problem(code, format!("{}: {e}", path.display())));
                continue;
            }
        };
        if !meta.is_dir() {
            entries.push(Entry {
                path: path.clone(),
                name: name_of(path),
                problem: None,
            });
            continue;
        }
        if !selection.recursive {
            entries.push(problem(
                fileuploader_core::code::INVALID_OPTION,
                format!(
                    "{} is a folder: add -r to upload what is in it",
                    path.display()
                ),
            ));
            continue;
        }
        let hidden_left = std::cell::Cell::new(0);
        let walk = walkdir::WalkDir::new(path)
            .follow_links(selection.follow_symlinks)
            .sort_by_file_name()
            .min_depth(1)
            .into_iter()
            .filter_entry(|e| {
                let keep = selection.hidden || !hidden(e.file_name());
                if !keep {
                    hidden_left.set(hidden_left.get() + 1);
                }
                keep
            });
        for found in walk {
            let found = match found {
                Ok(found) => found,
                Err(e) => {
                    let at = e.path().map_or_else(|| path.clone(), Path::to_owned);
                    entries.push(Entry {
                        name: name_of(&at),
                        path: at,
                        problem: Some(Failure::new(
                            fileuploader_core::code::READ_FAILED,
                            e.to_string(),
                        )),
                    });
                    continue;
                }
            };
            if !found.file_type().is_file() {
                skipped.links += usize::from(found.file_type().is_symlink());
                continue;
            }
            let relative = found.path().strip_prefix(path).unwrap_or(found.path());
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if include.as_ref().is_some_and(|g| !g.is_match(&name))
                || exclude.as_ref().is_some_and(|g| g.is_match(&name))
            {
                skipped.filtered += 1;
                continue;
            }
            entries.push(Entry {
                path: found.into_path(),
                name,
                problem: None,
            });
        }
        skipped.hidden += hidden_left.get();
    }
    Ok((entries, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match &e.problem {
                Some(p) => format!("{}!{}", e.name, p.code),
                None => e.name.clone(),
            })
            .collect()
    }

    #[test]
    fn folders_are_walked_with_hidden_links_and_globs_as_told() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("d");
        for (path, bytes) in [
            ("a.txt", "a"),
            ("sub/b.log", "b"),
            ("sub/deep/c.txt", "c"),
            (".hidden/h.txt", "h"),
            (".dot.txt", "d"),
        ] {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("far.txt"), "f").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("link")).unwrap();

        let plain = Selection {
            recursive: true,
            ..Selection::default()
        };
        let (got, skipped) = collect(std::slice::from_ref(&dir), &plain).unwrap();
        assert_eq!(names(&got), ["a.txt", "sub/b.log", "sub/deep/c.txt"]);
        assert_eq!(
            skipped,
            Skipped {
                hidden: 2,
                links: 1,
                filtered: 0
            },
            "left out, and counted"
        );

        let all = Selection {
            recursive: true,
            hidden: true,
            follow_symlinks: true,
            ..Selection::default()
        };
        let (got, skipped) = collect(std::slice::from_ref(&dir), &all).unwrap();
        assert_eq!(skipped.note(), None);
        assert_eq!(
            names(&got),
            [
                ".dot.txt",
                ".hidden/h.txt",
                "a.txt",
                "link/far.txt",
                "sub/b.log",
                "sub/deep/c.txt"
            ]
        );

        let globbed = Selection {
            recursive: true,
            include: vec!["**/*.txt".into()],
            exclude: vec!["sub/deep/**".into()],
            ..Selection::default()
        };
        let (got, skipped) = collect(std::slice::from_ref(&dir), &globbed).unwrap();
        assert_eq!(names(&got), ["a.txt"]);
        assert_eq!(skipped.filtered, 2);

        let (without_r, _) = collect(
            &[dir.clone(), root.path().join("nope")],
            &Selection::default(),
        )
        .unwrap();
        assert_eq!(names(&without_r), ["d!-10", "nope!27"]);
        assert!(collect(
            &[dir],
            &Selection {
                recursive: true,
                include: vec!["[".into()],
                ..Selection::default()
            }
        )
        .is_err());
    }
}
