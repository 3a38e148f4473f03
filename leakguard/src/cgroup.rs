//! The memory limit that applies to this process, from the cgroup tree (v2 and v1).
//!
//! # How the cgroup is found
//!
//! 1. `/proc/self/cgroup` names the process's cgroup in each hierarchy: `0::/path` for v2,
//!    `N:memory:/path` (possibly with other controllers) for the v1 memory controller.
//! 2. `/proc/self/mountinfo` names where each hierarchy is mounted (`cgroup2`, or a v1
//!    `cgroup` mount whose super options include `memory`) and which cgroup the mount shows
//!    at its mount point (the mount's *root*).
//! 3. The cgroup path is mapped to a directory below the mount point: the part of the path
//!    below the mount's root is appended to the mount point. Inside a container, with or
//!    without a cgroup namespace, the path can be `/` or the mount's root itself (both map
//!    to the mount point); a path the mount does not show (`/..` style paths of a process
//!    outside its namespace) falls back to the mount point. The reader never looks above
//!    the mount point.
//! 4. v2 is used when the memory controller is enabled there (some directory on the way up
//!    has `memory.max`, or the hierarchy's root lists `memory` in `cgroup.controllers`);
//!    otherwise v1's memory hierarchy is used (on a "hybrid" system, the v2 hierarchy has no
//!    controllers and memory lives in v1). Without either, there is no reading.
//! 5. The limit is the smallest one from the process's cgroup up to the mount point: a
//!    parent's limit also applies to its children.
//!
//! # Cost
//!
//! The reader keeps `/proc/self/cgroup`, the usage file and the OOM-kill counter file open
//! and re-reads them with `pread` at offset 0. A fast reading re-reads only the two counter
//! files (two system calls); if that fails it becomes a full reading that resolves
//! everything again. A full reading re-reads `/proc/self/cgroup` and every limit file up the
//! tree; the mount table (`/proc/self/mountinfo`, the most expensive file here, and larger
//! the more mounts a host has) is read again only when `/proc/self/cgroup` has changed,
//! i.e. the process was moved to another cgroup or a read failed. Note that the usage file
//! stays open as long as the process stays in the cgroup, which the kernel guarantees
//! exists as long as it has members.

use crate::error::{Error, Result};
use crate::process::pread_text;
use serde::Serialize;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// cgroup v1 reports "no limit" as `PAGE_COUNTER_MAX` pages, i.e. `i64::MAX` rounded down
/// to the page size (9223372036854771712 with 4 KiB pages). Any value at or above `i64::MAX`
/// rounded down to 64 KiB pages is treated as unlimited, which covers every page size.
pub const V1_UNLIMITED_THRESHOLD: u64 = (i64::MAX as u64) & !0xFFFF;

/// Which cgroup hierarchy the memory controller was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// cgroup v1 (`memory.limit_in_bytes`).
    V1,
    /// cgroup v2 (`memory.max`).
    V2,
}

/// The memory controller's view of this process's cgroup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgroupStats {
    /// v1 or v2.
    pub version: CgroupVersion,
    /// This process's cgroup path (from `/proc/self/cgroup`).
    pub path: String,
    /// The smallest memory limit on the way from this cgroup up to the root; `None` when
    /// unlimited (v2 `max`, v1 9223372036854771712).
    pub limit_bytes: Option<u64>,
    /// The cgroup the limit was found in, as a cgroup path (e.g. `/kubepods/pod1`) in the
    /// hierarchy as the mount shows it; `None` when unlimited.
    pub limit_source: Option<String>,
    /// The smallest v2 `memory.high` up the tree; `None` when unset or on v1.
    pub high_bytes: Option<u64>,
    /// The cgroup's current memory usage (`memory.current`, v1 `memory.usage_in_bytes`).
    pub current_bytes: Option<u64>,
    /// OOM kills in this cgroup (v2 `memory.events` `oom_kill`, v1 `memory.oom_control`).
    pub oom_kills: Option<u64>,
}

/// Reads [`CgroupStats`] starting from `/proc/self/cgroup`.
#[derive(Debug)]
pub struct CgroupReader {
    root: PathBuf,
    /// The process the cached state belongs to: a forked child starts over.
    pid: u32,
    /// `proc/self/cgroup`, kept open and re-read with `pread` on full readings.
    proc_cgroup: Option<File>,
    /// What the last full reading resolved.
    cache: Option<Cache>,
    /// Scratch buffer for file contents.
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Cache {
    /// The content of `/proc/self/cgroup` the cgroup was resolved from.
    proc_cgroup: String,
    /// The memory controller's cgroup; `None` when no memory controller applies.
    cgroup: Option<Box<Cgroup>>,
}

/// A resolved cgroup, the last reading of it, and the files a fast reading re-reads.
#[derive(Debug)]
struct Cgroup {
    location: Location,
    stats: CgroupStats,
    current: Option<OpenFile>,
    oom: Option<OpenFile>,
    /// `current` and `oom` have been opened. They stay open while the process stays in
    /// this cgroup: a cgroup that has members cannot be removed.
    counters_open: bool,
}

#[derive(Debug)]
struct OpenFile {
    path: PathBuf,
    file: File,
}

impl CgroupReader {
    /// A reader of the real system (root `/`).
    pub fn new() -> Self {
        Self::with_root("/")
    }

    /// A reader of a tree laid out like `/` under `root`: `proc/self/cgroup`,
    /// `proc/self/mountinfo` and the cgroup mounts it names (e.g. `sys/fs/cgroup/...`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            pid: std::process::id(),
            proc_cgroup: None,
            cache: None,
            buf: Vec::new(),
        }
    }

    /// Takes one reading; `Ok(None)` when no memory controller applies to this process.
    ///
    /// A `full` reading re-reads `/proc/self/cgroup`, every limit up the tree and the usage
    /// and OOM-kill counters; when the process's cgroup has changed (or on
    /// the first reading) it also re-reads the mount table and resolves the directory
    /// again. A fast reading reads only the usage and OOM-kill counters and repeats the
    /// rest; if those files cannot be read any more (the cgroup was removed), it becomes a
    /// full reading that resolves everything again. The first reading is always full.
    pub fn read(&mut self, full: bool) -> Result<Option<CgroupStats>> {
        let pid = std::process::id();
        if pid != self.pid {
            // After fork, the kept `/proc/self/cgroup` is the parent's.
            self.pid = pid;
            self.proc_cgroup = None;
            self.cache = None;
        }
        if !full && let Some(cache) = &mut self.cache {
            match &mut cache.cgroup {
                None => return Ok(None),
                Some(cgroup) => match cgroup.read_counters(&mut self.buf) {
                    Ok(()) => return Ok(Some(cgroup.stats.clone())),
                    Err(_) => self.cache = None,
                },
            }
        }
        let result = self.read_full();
        if result.is_err() {
            // Start from scratch next time.
            self.proc_cgroup = None;
            self.cache = None;
        }
        result
    }

    fn read_full(&mut self) -> Result<Option<CgroupStats>> {
        let path = self.root.join("proc/self/cgroup");
        if self.proc_cgroup.is_none() {
            self.proc_cgroup = Some(File::open(&path).map_err(|e| Error::Read {
                path: path.clone(),
                source: e,
            })?);
        }
        let text = match &self.proc_cgroup {
            Some(file) => pread_text(file, &mut self.buf, &path)?.to_owned(),
            None => String::new(),
        };
        let cgroup = match self.cache.take() {
            Some(cache) if cache.proc_cgroup == text => cache.cgroup,
            _ => resolve(&self.root, &text, &path)?.map(Box::new),
        };
        let mut cache = Cache {
            proc_cgroup: text,
            cgroup,
        };
        let stats = match &mut cache.cgroup {
            Some(cgroup) => {
                cgroup.refresh(&mut self.buf)?;
                Some(cgroup.stats.clone())
            }
            None => None,
        };
        self.cache = Some(cache);
        Ok(stats)
    }
}

impl Default for CgroupReader {
    fn default() -> Self {
        Self::new()
    }
}

impl Cgroup {
    fn new(version: CgroupVersion, path: &str, location: Location) -> Self {
        Self {
            location,
            stats: CgroupStats {
                version,
                path: path.to_owned(),
                limit_bytes: None,
                limit_source: None,
                high_bytes: None,
                current_bytes: None,
                oom_kills: None,
            },
            current: None,
            oom: None,
            counters_open: false,
        }
    }

    /// Re-reads the limits up the tree, opens the usage and OOM-kill files (once) and reads
    /// them.
    fn refresh(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        let leaf = self.location.leaf();
        match self.stats.version {
            CgroupVersion::V2 => {
                let (limit, source) =
                    smallest_limit(&self.location, "memory.max", parse_v2_limit, buf)?;
                let (high, _) = smallest_limit(&self.location, "memory.high", parse_v2_limit, buf)?;
                (self.stats.limit_bytes, self.stats.limit_source) = (limit, source);
                self.stats.high_bytes = high;
                if !self.counters_open {
                    self.current = open_optional(leaf.join("memory.current"))?;
                    self.oom = open_optional(leaf.join("memory.events"))?;
                }
            }
            CgroupVersion::V1 => {
                let (limit, source) =
                    smallest_limit(&self.location, "memory.limit_in_bytes", parse_v1_limit, buf)?;
                (self.stats.limit_bytes, self.stats.limit_source) = (limit, source);
                self.stats.high_bytes = None;
                if !self.counters_open {
                    self.current = open_optional(leaf.join("memory.usage_in_bytes"))?;
                    self.oom = open_optional(leaf.join("memory.oom_control"))?;
                }
            }
        }
        self.counters_open = true;
        self.read_counters(buf)
    }

    /// Re-reads usage and the OOM-kill counter.
    fn read_counters(&mut self, buf: &mut Vec<u8>) -> Result<()> {
        self.stats.current_bytes = match &self.current {
            Some(f) => Some(parse_bytes(pread_text(&f.file, buf, &f.path)?, &f.path)?),
            None => None,
        };
        self.stats.oom_kills = match &self.oom {
            Some(f) => parse_key_value(pread_text(&f.file, buf, &f.path)?, "oom_kill", &f.path)?,
            None => None,
        };
        Ok(())
    }
}

/// One line of `/proc/self/cgroup`.
#[derive(Debug)]
struct CgroupLine<'a> {
    hierarchy: &'a str,
    controllers: &'a str,
    path: &'a str,
}

/// One cgroup mount of `/proc/self/mountinfo`.
#[derive(Debug)]
struct Mount {
    /// The cgroup the mount shows at its mount point.
    root: String,
    /// Where it is mounted (absolute, in the reader's root).
    point: String,
    fstype: String,
    super_options: String,
}

/// Where a cgroup is on disk: `mount_dir` plus `below` components, shown by a mount whose
/// root cgroup is `mount_root`.
#[derive(Debug)]
struct Location {
    mount_dir: PathBuf,
    mount_root: Vec<String>,
    below: Vec<String>,
}

impl Location {
    /// The directory and cgroup path of this cgroup and each ancestor up to the mount
    /// point, leaf first.
    fn chain(&self) -> impl Iterator<Item = (PathBuf, String)> + '_ {
        (0..=self.below.len()).rev().map(move |depth| {
            let mut dir = self.mount_dir.clone();
            dir.extend(&self.below[..depth]);
            let parts: Vec<&str> = self
                .mount_root
                .iter()
                .chain(&self.below[..depth])
                .map(String::as_str)
                .collect();
            (dir, format!("/{}", parts.join("/")))
        })
    }

    fn leaf(&self) -> PathBuf {
        let mut dir = self.mount_dir.clone();
        dir.extend(&self.below);
        dir
    }
}

/// Finds the memory controller's cgroup directory from the content of `/proc/self/cgroup`
/// (read from `cgroup_path`) and the mount table.
fn resolve(root: &Path, cgroup_text: &str, cgroup_path: &Path) -> Result<Option<Cgroup>> {
    let lines = parse_proc_cgroup(cgroup_text, cgroup_path)?;
    if lines.is_empty() {
        return Ok(None);
    }
    let mountinfo_path = root.join("proc/self/mountinfo");
    let mountinfo_text = std::fs::read_to_string(&mountinfo_path).map_err(|e| Error::Read {
        path: mountinfo_path.clone(),
        source: e,
    })?;
    let mounts = parse_mountinfo(&mountinfo_text, &mountinfo_path)?;

    if let Some(line) = lines
        .iter()
        .find(|l| l.hierarchy == "0" && l.controllers.is_empty())
    {
        let v2_mounts: Vec<&Mount> = mounts.iter().filter(|m| m.fstype == "cgroup2").collect();
        if let Some(location) = locate(root, line.path, &v2_mounts)
            && v2_memory_enabled(&location)
        {
            return Ok(Some(Cgroup::new(CgroupVersion::V2, line.path, location)));
        }
    }
    if let Some(line) = lines
        .iter()
        .find(|l| l.controllers.split(',').any(|c| c == "memory"))
    {
        let v1_mounts: Vec<&Mount> = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory"))
            .collect();
        if let Some(location) = locate(root, line.path, &v1_mounts) {
            return Ok(Some(Cgroup::new(CgroupVersion::V1, line.path, location)));
        }
    }
    Ok(None)
}

fn parse_proc_cgroup<'a>(text: &'a str, path: &Path) -> Result<Vec<CgroupLine<'a>>> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        // The path itself may contain ':', so split at the first two only.
        let mut parts = line.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(hierarchy), Some(controllers), Some(cgroup)) if cgroup.starts_with('/') => {
                lines.push(CgroupLine {
                    hierarchy,
                    controllers,
                    path: cgroup,
                });
            }
            _ => {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    reason: format!("line {line:?} is not hierarchy-ID:controllers:/path"),
                });
            }
        }
    }
    Ok(lines)
}

/// The cgroup mounts of a mountinfo file (proc(5): `ID parent major:minor root point
/// options [optional fields] - fstype source super-options`).
fn parse_mountinfo(text: &str, path: &Path) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let malformed = || Error::Parse {
            path: path.to_path_buf(),
            reason: format!("malformed line {line:?}"),
        };
        let (before, after) = line.split_once(" - ").ok_or_else(malformed)?;
        let mut before = before.split_ascii_whitespace();
        let (Some(root), Some(point)) = (before.nth(3), before.next()) else {
            return Err(malformed());
        };
        let mut after = after.split_ascii_whitespace();
        let fstype = after.next().ok_or_else(malformed)?;
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let super_options = after.nth(1).unwrap_or_default();
        mounts.push(Mount {
            root: unescape_octal(root),
            point: unescape_octal(point),
            fstype: fstype.to_owned(),
            super_options: super_options.to_owned(),
        });
    }
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup path split into components after resolving `.` and `..` lexically; the second
/// value counts the `..` that would climb above `/` (a cgroup outside the namespace).
fn normalize(path: &str) -> (Vec<String>, usize) {
    let mut parts: Vec<String> = Vec::new();
    let mut above = 0;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    above += 1;
                }
            }
            p => parts.push(p.to_owned()),
        }
    }
    (parts, above)
}

/// Maps the cgroup path `cgroup` to a directory below one of `mounts`.
fn locate(root: &Path, cgroup: &str, mounts: &[&Mount]) -> Option<Location> {
    let (path, path_above) = normalize(cgroup);
    let mut candidates: Vec<Location> = Vec::new();
    // Mounts whose root contains the path first, the most specific root first.
    let mut ordered: Vec<(&Mount, Vec<String>, bool)> = mounts
        .iter()
        .map(|m| {
            let (mount_root, root_above) = normalize(&m.root);
            let contains =
                path_above == 0 && root_above == 0 && path.starts_with(mount_root.as_slice());
            // A root outside the namespace is shown as `/..`: name cgroups from `/` then.
            let mount_root = if root_above == 0 {
                mount_root
            } else {
                Vec::new()
            };
            (*m, mount_root, contains)
        })
        .collect();
    ordered.sort_by_key(|(_, mount_root, contains)| (!contains, usize::MAX - mount_root.len()));
    for (mount, mount_root, contains) in ordered {
        let mount_dir = root.join(mount.point.trim_start_matches('/'));
        if contains {
            // The usual case: the mount shows the path's cgroup at point + (path - root).
            candidates.push(Location {
                mount_dir: mount_dir.clone(),
                below: path[mount_root.len()..].to_vec(),
                mount_root: mount_root.clone(),
            });
        } else if path_above == 0 && !path.is_empty() {
            // The path and the mount root are seen from different namespaces: try the path
            // as relative to the mount point.
            candidates.push(Location {
                mount_dir: mount_dir.clone(),
                below: path.clone(),
                mount_root: mount_root.clone(),
            });
        }
        // Last resort: the cgroup the mount point shows (in a container, its own).
        candidates.push(Location {
            mount_dir,
            below: Vec::new(),
            mount_root,
        });
    }
    candidates.into_iter().find(|c| c.leaf().is_dir())
}

fn v2_memory_enabled(location: &Location) -> bool {
    if location
        .chain()
        .any(|(dir, _)| dir.join("memory.max").is_file())
    {
        return true;
    }
    std::fs::read_to_string(location.mount_dir.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_ascii_whitespace().any(|c| c == "memory"))
}

/// The smallest limit in `file` from the leaf up to the mount point, and its cgroup path.
/// Directories without the file (the hierarchy's root) are skipped.
fn smallest_limit(
    location: &Location,
    file: &str,
    parse: fn(&str, &Path) -> Result<Option<u64>>,
    buf: &mut Vec<u8>,
) -> Result<(Option<u64>, Option<String>)> {
    let mut best: (Option<u64>, Option<String>) = (None, None);
    for (dir, cgroup) in location.chain() {
        let Some(f) = open_optional(dir.join(file))? else {
            continue;
        };
        let text = pread_text(&f.file, buf, &f.path)?;
        if let Some(limit) = parse(text, &f.path)?
            && best.0.is_none_or(|b| limit < b)
        {
            best = (Some(limit), Some(cgroup));
        }
    }
    Ok(best)
}

fn open_optional(path: PathBuf) -> Result<Option<OpenFile>> {
    match File::open(&path) {
        Ok(file) => Ok(Some(OpenFile { path, file })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Read { path, source: e }),
    }
}

fn parse_bytes(text: &str, path: &Path) -> Result<u64> {
    let value = text.trim();
    value.parse().map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        reason: format!("expected a number of bytes, found {value:?}"),
    })
}

/// v2 `memory.max` / `memory.high`: a number of bytes, or `max` for none.
fn parse_v2_limit(text: &str, path: &Path) -> Result<Option<u64>> {
    if text.trim() == "max" {
        return Ok(None);
    }
    parse_bytes(text, path).map(Some)
}

/// v1 `memory.limit_in_bytes`: a number of bytes, the page-rounded `i64::MAX` for none.
fn parse_v1_limit(text: &str, path: &Path) -> Result<Option<u64>> {
    let value = parse_bytes(text, path)?;
    Ok((value < V1_UNLIMITED_THRESHOLD).then_some(value))
}

/// The value of the `key value` line for `key` (`memory.events`, `memory.oom_control`);
/// `None` when the kernel does not report it.
fn parse_key_value(text: &str, key: &str, path: &Path) -> Result<Option<u64>> {
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or_default();
            return value.parse().map(Some).map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                reason: format!("{key} is not a number: {value:?}"),
            });
        }
    }
    Ok(None)
}

/// Runs the cgroup text parsers on `text`, and the path resolution on what they return
/// against a root that does not exist (the `fuzzing` feature's entry point).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_parsers(text: &str) {
    let path = Path::new("/sys/fs/cgroup/fuzz");
    let _ = parse_v2_limit(text, path);
    let _ = parse_v1_limit(text, path);
    let _ = parse_key_value(text, "oom_kill", path);
    let _ = unescape_octal(text);
    let mounts = parse_mountinfo(text, path).unwrap_or_default();
    let mounts: Vec<&Mount> = mounts.iter().collect();
    let root = Path::new("/nonexistent-leakguard-fuzz-root");
    for line in parse_proc_cgroup(text, path).unwrap_or_default() {
        let _ = normalize(line.path);
        let _ = locate(root, line.path, &mounts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_normalized_lexically() {
        assert_eq!(normalize("/"), (vec![], 0));
        assert_eq!(normalize("/a/./b/"), (vec!["a".into(), "b".into()], 0));
        assert_eq!(normalize("/a/../.."), (vec![], 1));
        assert_eq!(normalize("/../../x"), (vec!["x".into()], 2));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_octal(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn v1_sentinel_and_above_are_unlimited() {
        let p = Path::new("memory.limit_in_bytes");
        assert_eq!(parse_v1_limit("9223372036854771712\n", p).ok(), Some(None));
        assert_eq!(parse_v1_limit("9223372036854775807\n", p).ok(), Some(None));
        // 64 KiB pages round i64::MAX further down.
        assert_eq!(parse_v1_limit("9223372036854710272\n", p).ok(), Some(None));
        assert_eq!(
            parse_v1_limit("536870912\n", p).ok(),
            Some(Some(536_870_912))
        );
    }
}
