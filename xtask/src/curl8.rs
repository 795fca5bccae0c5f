//! curl 8 beside the system's curl 7.88, for the bench's baseline: Debian's
//! bookworm-backports package, unpacked into the interop cache (never
//! installed over the system's), and run with its own libcurl.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::interop::run;

/// The backports release the package comes from.
const SUITE: &str = "bookworm-backports";

/// A curl to run: its program, and the folder of its libcurl if it is not
/// the system's.
#[derive(Debug, Clone)]
pub(crate) struct Curl {
    pub(crate) program: PathBuf,
    pub(crate) libs: Option<PathBuf>,
    /// What `curl --version` says first, such as `curl 8.14.1`.
    pub(crate) version: String,
}

impl Curl {
    /// The system's curl.
    pub(crate) fn system() -> Result<Curl, String> {
        Curl::at(PathBuf::from("curl"), None)
    }

    fn at(program: PathBuf, libs: Option<PathBuf>) -> Result<Curl, String> {
        let mut curl = Curl {
            program,
            libs,
            version: String::new(),
        };
        let out = curl
            .command()
            .arg("--version")
            .output()
            .map_err(|e| format!("{}: {e}", curl.program.display()))?;
        let first = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = first.split_whitespace().take(2).collect();
        if !out.status.success() || words.len() < 2 {
            return Err(format!(
                "{} --version failed: {}",
                curl.program.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        curl.version = words.join(" ");
        Ok(curl)
    }

    /// A command running this curl.
    pub(crate) fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        if let Some(libs) = &self.libs {
            c.env("LD_LIBRARY_PATH", libs);
        }
        c
    }
}

/// curl 8 from bookworm-backports, unpacked under `cache` when it is not
/// there yet: the suite is added to apt's sources only while its lists are
/// fetched and the packages downloaded (as root), so nothing else on the
/// machine changes.
pub(crate) fn curl8(cache: &Path) -> Result<Curl, String> {
    let root = cache.join("curl8");
    let program = root.join("usr/bin/curl");
    let libs = root.join("usr/lib/x86_64-linux-gnu");
    if !program.exists() {
        eprintln!(
            "bench: unpacking curl 8 from Debian's {SUITE} into {}",
            root.display()
        );
        let debs = cache.join("curl8-debs");
        std::fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
        let list = Path::new("/etc/apt/sources.list.d/fileuploader-bench-backports.list");
        std::fs::write(
            list,
            format!("deb http://deb.debian.org/debian {SUITE} main\n"),
        )
        .map_err(|e| format!("{}: {e} (the bench fetches curl 8 as root)", list.display()))?;
        let fetched = fetch(list, &debs);
        let _ = std::fs::remove_file(list);
        fetched?;
        for entry in std::fs::read_dir(&debs).map_err(|e| e.to_string())? {
            let deb = entry.map_err(|e| e.to_string())?.path();
            run(
                Command::new("dpkg").arg("-x").arg(&deb).arg(&root),
                "dpkg -x",
            )?;
        }
    }
    let curl = Curl::at(program, Some(libs))?;
    if !curl.version.starts_with("curl 8") {
        return Err(format!("{SUITE} gave {}, not curl 8", curl.version));
    }
    Ok(curl)
}

/// Fetches the suite's lists through `list` alone and downloads curl and
/// libcurl from it into `debs`.
fn fetch(list: &Path, debs: &Path) -> Result<(), String> {
    run(
        Command::new("apt-get")
            .arg("update")
            .arg(format!("-o=Dir::Etc::sourcelist={}", list.display()))
            .args(["-o=Dir::Etc::sourceparts=-", "-o=APT::Get::List-Cleanup=0"]),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get").current_dir(debs).args([
            "download",
            &format!("curl/{SUITE}"),
            &format!("libcurl4/{SUITE}"),
        ]),
        "apt-get download",
    )
}
