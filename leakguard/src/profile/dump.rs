//! Post-mortem dumps: the heap profile and the report, written to `LEAKGUARD_DUMP_DIR` before
//! a graceful restart and on `POST /debug/leakguard/dump`.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Dumps kept in the directory: when a new one is written, the oldest beyond this many are
/// removed (only leakguard's own files, `leakguard-*.report.json` and `leakguard-*.heap.pb.gz`).
pub const DUMPS_KEPT: usize = 10;

/// Largest report a dump writes, bytes: a larger one is left out of the dump file, which says
/// so (`report_left_out`). The guard's own report is far smaller (its parts are bounded).
pub const MAX_REPORT_BYTES: usize = 16 << 20;

/// Largest heap profile a dump writes, bytes (gzipped pprof): a larger one is left out, and the
/// dump says so. A profile keeps at most [`MAX_STACKS`](super::MAX_STACKS) stacks.
pub const MAX_PROFILE_BYTES: usize = 16 << 20;

/// Writes a heap profile to a dump file as it encodes it.
pub(crate) type WriteProfile<'a> =
    Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + 'a>;

/// A heap profile for a dump: encoded already, or encoded as it is written to the file.
pub(crate) enum ProfileBody<'a> {
    /// Encoded (gzipped pprof); left out beyond [`MAX_PROFILE_BYTES`].
    Encoded(Vec<u8>),
    /// Written as it is encoded, through the dump's write buffer: bounded by its encoder.
    #[cfg_attr(not(feature = "profiling"), allow(dead_code))]
    Streamed(WriteProfile<'a>),
}

/// The buffer dump files are written through.
const WRITE_BUFFER: usize = 64 << 10;

/// What a dump wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DumpOutcome {
    /// Files written: the report, and the heap profile when one could be taken.
    pub files: Vec<PathBuf>,
    /// Why there is no heap profile, if there is none.
    pub profile_error: Option<String>,
    /// What the heap profile left out, if anything (its smaller stacks beyond the bound).
    pub profile_cut: Option<String>,
    /// Why the heap profile is not symbolized, if it is not: its locations are addresses in
    /// the process's mappings, which `go tool pprof <binary> <file>` symbolizes.
    pub profile_unsymbolized: Option<String>,
    /// Files of older dumps removed to keep at most [`DUMPS_KEPT`].
    pub removed: Vec<PathBuf>,
}

fn io_error(what: String, source: std::io::Error) -> Error {
    Error::Io { what, source }
}

/// Creates `path` for writing: a new file (never an existing one, never through a symbolic
/// link) readable by the owner only (0600), whatever the umask. Heap profiles and reports
/// show what the service holds.
pub(crate) fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path` through a temporary name, so a reader never sees half a file; the
/// file is created as [`create_private`] does (a name planted beforehand makes it fail, and
/// the rename replaces a link at `path` rather than writing through it).
#[cfg(test)]
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_file_with(path, |w| w.write_all(bytes))
}

/// [`write_file`] with the content written by `fill`, through a small buffer: nothing is
/// built whole in memory.
fn write_file_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    use std::io::Write as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let created = match create_private(&tmp) {
        Ok(file) => file,
        Err(source) => {
            return Err(io_error(
                format!(
                    "cannot write {} (creating {})",
                    path.display(),
                    tmp.display()
                ),
                source,
            ));
        }
    };
    let written = {
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, created);
        fill(&mut out).and_then(|()| out.flush())
    }
    .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(source) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(format!("cannot write {}", path.display()), source));
    }
    Ok(())
}

/// The stem of one of leakguard's dump files (`leakguard-<millis>-<pid>-<seq>`), if it is one.
fn dump_stem(name: &str) -> Option<&str> {
    let stem = name
        .strip_suffix(".report.json")
        .or_else(|| name.strip_suffix(".heap.pb.gz"))?;
    stem.starts_with("leakguard-").then_some(stem)
}

/// Removes the files of the oldest dumps beyond `keep`.
fn prune(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            dump_stem(&name).map(|s| (s.to_owned(), e.path()))
        })
        .collect();
    let mut stems: Vec<&str> = files.iter().map(|(s, _)| s.as_str()).collect();
    stems.sort_unstable();
    stems.dedup();
    if stems.len() <= keep {
        return Vec::new();
    }
    let old: Vec<String> = stems[..stems.len() - keep]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    files.retain(|(s, _)| old.contains(s));
    files
        .into_iter()
        .filter(|(_, p)| std::fs::remove_file(p).is_ok())
        .map(|(_, p)| p)
        .collect()
}

/// A new dump's file stem: `leakguard-<millis>-<pid>-<seq>`.
fn new_stem(unix_seconds: f64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "leakguard-{:013}-{}-{}",
        (unix_seconds.max(0.0) * 1000.0) as u64,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Values written as JSON straight to a writer.
mod erased {
    /// A value that writes itself as JSON.
    pub(super) trait Json {
        fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
            serde_json::to_writer(w, self).map_err(std::io::Error::other)
        }
    }
}

/// Writes one dump into `dir`: `leakguard-<millis>-<pid>-<seq>.report.json` (the reason and
/// the report) and, when `profile` is `Ok`, `….heap.pb.gz` (gzipped pprof); then removes the
/// oldest dumps beyond [`DUMPS_KEPT`].
///
/// A missing or unwritable directory is an [`Error::Io`] that names it; nothing panics.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let out = leakguard::profile::write_dump(
///     dir.path(), "requested by an operator", "{}", Err("profiling is off".into()), 1.7e9)?;
/// assert_eq!(out.files.len(), 1);
/// assert_eq!(out.profile_error.as_deref(), Some("profiling is off"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_dump(
    dir: &Path,
    reason: &str,
    report_json: &str,
    profile: std::result::Result<Vec<u8>, String>,
    unix_seconds: f64,
) -> Result<DumpOutcome> {
    write_dump_noting(
        dir,
        reason,
        report_json,
        profile.map(ProfileBody::Encoded),
        None,
        None,
        unix_seconds,
    )
}

/// [`write_dump`], with `cut`: what was left out of the heap profile (said in the dump's
/// report as `heap_profile_cut`), and `unsymbolized`: why the profile is not symbolized, if
/// it is not (`heap_profile_unsymbolized`). The profile may be written as it is encoded
/// ([`ProfileBody::Streamed`]).
///
/// The report file is written as it is encoded, through a small buffer: the report text is
/// embedded as it is (checked to be JSON without building it as a tree), so the dump needs
/// no memory in proportion to the report beyond the text it is given. A report larger than
/// [`MAX_REPORT_BYTES`] or a profile larger than [`MAX_PROFILE_BYTES`] is left out, and the
/// dump says so.
pub(crate) fn write_dump_noting(
    dir: &Path,
    reason: &str,
    report_json: &str,
    profile: std::result::Result<ProfileBody<'_>, String>,
    cut: Option<String>,
    unsymbolized: Option<String>,
    unix_seconds: f64,
) -> Result<DumpOutcome> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io_error(
                format!("the dump directory {} is not a directory", dir.display()),
                std::io::Error::from(std::io::ErrorKind::NotADirectory),
            ));
        }
        Err(source) => {
            return Err(io_error(
                format!("the dump directory {} is not usable", dir.display()),
                source,
            ));
        }
    }
    let stem = new_stem(unix_seconds);
    let profile = profile.and_then(|body| match body {
        ProfileBody::Encoded(bytes) if bytes.len() > MAX_PROFILE_BYTES => Err(format!(
            "left out: the heap profile is {} bytes, more than the {MAX_PROFILE_BYTES} a dump writes",
            bytes.len()
        )),
        body => Ok(body),
    });
    let cut = cut.filter(|_| profile.is_ok());
    let unsymbolized = unsymbolized.filter(|_| profile.is_ok());
    let report_left_out = (report_json.len() > MAX_REPORT_BYTES).then(|| {
        format!(
            "the report is {} bytes, more than the {MAX_REPORT_BYTES} a dump writes",
            report_json.len()
        )
    });
    let report_is_json = report_left_out.is_none()
        && serde_json::from_str::<serde::de::IgnoredAny>(report_json).is_ok();
    let heap_profile = profile.as_ref().ok().map(|_| format!("{stem}.heap.pb.gz"));
    let report_path = dir.join(format!("{stem}.report.json"));
    write_file_with(&report_path, |w| {
        let field = |w: &mut dyn std::io::Write, name: &str, value: &dyn erased::Json| {
            write!(w, "  \"{name}\": ")?;
            value.write_json(w)?;
            w.write_all(b",\n")
        };
        w.write_all(b"{\n")?;
        field(w, "reason", &reason)?;
        field(w, "written_at", &unix_seconds)?;
        field(w, "heap_profile", &heap_profile)?;
        field(w, "heap_profile_error", &profile.as_ref().err())?;
        field(w, "heap_profile_cut", &cut)?;
        field(w, "heap_profile_unsymbolized", &unsymbolized)?;
        field(w, "report_left_out", &report_left_out)?;
        w.write_all(b"  \"report\": ")?;
        if report_left_out.is_some() {
            w.write_all(b"null")?;
        } else if report_is_json {
            w.write_all(report_json.as_bytes())?;
        } else {
            serde_json::to_writer(&mut *w, report_json).map_err(std::io::Error::other)?;
        }
        w.write_all(b"\n}\n")
    })?;
    let mut files = vec![report_path];
    let profile_error = match profile {
        Ok(body) => {
            let path = dir.join(format!("{stem}.heap.pb.gz"));
            match body {
                ProfileBody::Encoded(bytes) => write_file_with(&path, |w| w.write_all(&bytes))?,
                ProfileBody::Streamed(write) => write_file_with(&path, write)?,
            }
            files.push(path);
            None
        }
        Err(e) => Some(e),
    };
    let removed = prune(dir, DUMPS_KEPT);
    Ok(DumpOutcome {
        files,
        profile_error,
        profile_cut: cut,
        profile_unsymbolized: unsymbolized,
        removed,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dump_files_are_private_and_a_planted_link_is_not_followed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let out = write_dump(dir.path(), "test", "{}", Ok(vec![1]), 1_700_000_000.0).unwrap();
        for file in &out.files {
            let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        // Someone plants a link where the next file will be created: the victim is not
        // written through it.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_private(&planted).is_err());
        assert!(write_file(&planted, b"overwritten").is_ok());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let mut tmp = planted.as_os_str().to_owned();
        tmp.push(".tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_file(&planted, b"overwritten").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

    #[test]
    fn dumps_are_written_and_the_oldest_removed_beyond_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        // Someone else's file in the same directory is never touched.
        std::fs::write(dir.path().join("notes.txt"), "keep").unwrap();
        let mut all = Vec::new();
        for i in 0..DUMPS_KEPT + 3 {
            let out = write_dump(
                dir.path(),
                "test",
                "{\"state\":\"normal\"}",
                Ok(vec![1, 2, 3]),
                1_700_000_000.0 + i as f64,
            )
            .unwrap();
            assert_eq!(out.files.len(), 2);
            assert!(out.profile_error.is_none());
            all.push(out);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2 * DUMPS_KEPT + 1, "{names:?}");
        assert!(names.contains(&"notes.txt".to_owned()));
        for old in &all[..3] {
            assert!(old.files.iter().all(|f| !f.exists()));
        }
        for kept in &all[3..] {
            assert!(kept.files.iter().all(|f| f.exists()));
        }
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&all[12].files[0]).unwrap()).unwrap();
        assert_eq!(report["reason"], "test");
        assert_eq!(report["report"]["state"], "normal");
        assert_eq!(std::fs::read(&all[12].files[1]).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn a_missing_or_unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = write_dump(&missing, "t", "{}", Err("off".into()), 0.0).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(e.to_string().contains("not usable"), "{e}");

        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let e = write_dump(&file, "t", "{}", Err("off".into()), 0.0).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");

        // A directory nobody can create files in, root included.
        let e = write_dump(Path::new("/proc"), "t", "{}", Err("off".into()), 0.0).unwrap_err();
        assert!(
            e.to_string().contains("cannot write /proc/leakguard-"),
            "{e}"
        );
    }
}
