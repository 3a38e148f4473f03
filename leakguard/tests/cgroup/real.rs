//! `CgroupReader::new()` on the real system, checked against an independent minimal reading
//! of the same files. Correct on v1, hybrid and pure-v2 machines, and without cgroups.
#![allow(clippy::unwrap_used)]

use leakguard::cgroup::{CgroupReader, CgroupVersion};
use std::path::{Path, PathBuf};

/// The directory of this process's cgroup in a hierarchy, the common case only: the mount's
/// root is "/" or a prefix of the path. Returns the mount point and the path below it.
fn cgroup_dir(fstype: &str, option: Option<&str>, path: &str) -> Option<(PathBuf, String)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        let (before, after) = line.split_once(" - ").unwrap();
        let before: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        if after[0] != fstype || option.is_some_and(|o| !after[2].split(',').any(|x| x == o)) {
            continue;
        }
        let (root, point) = (before[3], before[4]);
        let below = if root == "/" {
            path
        } else {
            path.strip_prefix(root)?
        };
        return Some((
            PathBuf::from(point),
            below.trim_start_matches('/').to_owned(),
        ));
    }
    None
}

/// The smallest limit in `file` from the cgroup's directory up to the mount point.
fn smallest(point: &Path, below: &str, file: &str, unlimited: fn(&str) -> bool) -> Option<u64> {
    let mut parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
    let mut best: Option<u64> = None;
    loop {
        let dir = parts.iter().fold(point.to_path_buf(), |d, p| d.join(p));
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            let text = text.trim();
            if !unlimited(text) {
                let value: u64 = text.parse().unwrap();
                best = Some(best.map_or(value, |b| b.min(value)));
            }
        }
        if parts.pop().is_none() {
            return best;
        }
    }
}

fn read_number(point: &Path, below: &str, file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(point.join(below).join(file)).ok()?;
    text.trim().parse().ok()
}

fn oom_kills(point: &Path, below: &str, file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(point.join(below).join(file)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .map(|v| v.trim().parse().unwrap())
}

#[test]
fn real_cgroup_matches_the_files() {
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut reader = CgroupReader::new();
    let stats = reader.read(true).unwrap();
    eprintln!("/proc/self/cgroup:\n{proc_cgroup}reading: {stats:#?}");
    let v1_path = proc_cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let v2_path = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"));
    let v2_dir = v2_path.and_then(|p| cgroup_dir("cgroup2", None, p));
    let v2_memory = v2_dir.as_ref().is_some_and(|(point, below)| {
        point.join(below).join("memory.max").exists()
            || std::fs::read_to_string(point.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
    });
    let v1_dir = v1_path.and_then(|p| cgroup_dir("cgroup", Some("memory"), p));

    let Some(stats) = stats else {
        assert!(!v2_memory, "v2 memory controller present but no reading");
        assert!(
            v1_dir.is_none(),
            "v1 memory controller present but no reading"
        );
        return;
    };
    let (point, below, limit, current, ooms) = if v2_memory {
        assert_eq!(stats.version, CgroupVersion::V2);
        assert_eq!(Some(stats.path.as_str()), v2_path);
        let (point, below) = v2_dir.unwrap();
        let limit = smallest(&point, &below, "memory.max", |t| t == "max");
        let high = smallest(&point, &below, "memory.high", |t| t == "max");
        assert_eq!(stats.high_bytes, high);
        let current = read_number(&point, &below, "memory.current");
        let ooms = oom_kills(&point, &below, "memory.events");
        (point, below, limit, current, ooms)
    } else {
        assert_eq!(stats.version, CgroupVersion::V1);
        assert_eq!(Some(stats.path.as_str()), v1_path);
        let (point, below) = v1_dir.unwrap();
        let limit = smallest(&point, &below, "memory.limit_in_bytes", |t| {
            t.parse::<u64>()
                .is_ok_and(|v| v >= 9_223_372_036_854_710_272)
        });
        let current = read_number(&point, &below, "memory.usage_in_bytes");
        let ooms = oom_kills(&point, &below, "memory.oom_control");
        assert_eq!(stats.high_bytes, None);
        (point, below, limit, current, ooms)
    };
    eprintln!("independent: {point:?} {below:?} limit {limit:?} current {current:?}");
    assert_eq!(stats.limit_bytes, limit);
    assert_eq!(stats.limit_source.is_some(), limit.is_some());
    assert_eq!(stats.oom_kills, ooms);
    // Usage moves while the tests run: compare within 256 MiB.
    let close = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => a.abs_diff(b) < 256 << 20,
        (a, b) => a == b,
    };
    assert!(
        close(stats.current_bytes, current),
        "{:?} vs {current:?}",
        stats.current_bytes
    );

    // A fast reading keeps the limit and re-reads usage.
    let fast = reader.read(false).unwrap().unwrap();
    assert_eq!(fast.limit_bytes, stats.limit_bytes);
    assert_eq!(fast.limit_source, stats.limit_source);
    assert!(close(fast.current_bytes, current));
}
