//! `ProcReader` over fixture procfs trees: exact values, and errors that name the file.
#![allow(clippy::unwrap_used)]

use leakguard::Error;
use leakguard::process::{FdCounts, ProcReader};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const STATM: &str = "1000 250 100 10 0 500 0\n";
const STATUS: &str = "Name:\tmy (weird) comm\nUmask:\t0022\nState:\tS (sleeping)\n\
VmPeak:\t    9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1000 kB\nVmSwap:\t      12 kB\n\
Threads:\t7\nSigQ:\t0/1000\n";
/// comm contains spaces and parentheses; field 20 (threads) is 7, field 22 (start) 123456.
const STAT: &str = "4242 (my (weird) comm) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 \
20 0 7 0 123456 3133440 409 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 4096                 files     \n\
Max locked memory         8388608              8388608              bytes     \n";
const BOOT_STAT: &str =
    "cpu  1 2 3 4 5 6 7 0 0 0\nintr 0\nctxt 100\nbtime 1700000000\nprocesses 9\n";

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// A procfs tree with every file the reader needs.
fn fixture() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("self/fd")).unwrap();
    fs::write(root.join("self/statm"), STATM).unwrap();
    fs::write(root.join("self/status"), STATUS).unwrap();
    fs::write(root.join("self/stat"), STAT).unwrap();
    fs::write(root.join("self/limits"), LIMITS).unwrap();
    fs::write(root.join("stat"), BOOT_STAT).unwrap();
    // Link targets need not exist: only the link text is classified.
    for (fd, target) in [
        ("0", "/dev/null"),
        ("1", "socket:[123]"),
        ("2", "socket:[124]"),
        ("3", "pipe:[5]"),
        ("4", "anon_inode:[eventpoll]"),
        ("5", "net:[4026531840]"),
        ("6", "/tmp/gone (deleted)"),
    ] {
        symlink(target, root.join("self/fd").join(fd)).unwrap();
    }
    dir
}

fn expect_err_naming(result: leakguard::Result<impl std::fmt::Debug>, file: &Path, parse: bool) {
    let err = result.expect_err("a broken tree must be an error");
    let path: &PathBuf = match &err {
        Error::Read { path, .. } if !parse => path,
        Error::Parse { path, .. } if parse => path,
        other => panic!("unexpected error kind: {other:?}"),
    };
    assert_eq!(path, file);
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn full_reading_of_a_fixture_tree_gives_exact_values() {
    let dir = fixture();
    let stats = ProcReader::with_root(dir.path()).read(true).unwrap();
    let page = page_size();
    assert_eq!(stats.resident_bytes, 250 * page);
    assert_eq!(stats.virtual_bytes, 1000 * page);
    assert_eq!(stats.peak_resident_bytes, 2048 * 1024);
    assert_eq!(stats.swap_bytes, 12 * 1024);
    assert_eq!(stats.threads, 7);
    assert_eq!(stats.open_fds, 7);
    assert_eq!(
        stats.fds_by_type,
        Some(FdCounts {
            file: 2,
            socket: 2,
            pipe: 1,
            anon_inode: 1,
            other: 1,
        })
    );
    assert_eq!(stats.max_fds, Some(1024));
    let expected_start = 1_700_000_000.0 + 123_456.0 / ticks_per_second();
    assert!((stats.start_time_seconds - expected_start).abs() < 1e-6);
}

#[test]
fn fast_reading_repeats_the_full_values_and_reads_the_rest() {
    let dir = fixture();
    let mut reader = ProcReader::with_root(dir.path());
    let full = reader.read(true).unwrap();
    // Change what a fast reading reads and what it must not.
    fs::write(
        dir.path().join("self/statm"),
        "2000 600000 100 10 0 500 0\n",
    )
    .unwrap();
    fs::write(dir.path().join("self/limits"), "Max open files 1 1 files\n").unwrap();
    symlink("socket:[999]", dir.path().join("self/fd/7")).unwrap();
    let fast = reader.read(false).unwrap();
    let page = page_size();
    assert_eq!(fast.resident_bytes, 600_000 * page);
    assert_eq!(fast.virtual_bytes, 2000 * page);
    assert_eq!(fast.open_fds, 8);
    // Threads from self/stat field 20 outside procfs.
    assert_eq!(fast.threads, 7);
    // The peak can only be raised to the current resident size.
    assert_eq!(fast.peak_resident_bytes, 600_000 * page);
    assert_eq!(fast.swap_bytes, full.swap_bytes);
    assert_eq!(fast.fds_by_type, full.fds_by_type);
    assert_eq!(fast.max_fds, Some(1024));
    assert_eq!(fast.start_time_seconds, full.start_time_seconds);
    // The next full reading sees everything.
    let again = reader.read(true).unwrap();
    assert_eq!(again.max_fds, Some(1));
    assert_eq!(again.fds_by_type.map(|c| c.socket), Some(3));
}

#[test]
fn first_reading_is_full_even_when_asked_fast() {
    let dir = fixture();
    let stats = ProcReader::with_root(dir.path()).read(false).unwrap();
    assert_eq!(stats.max_fds, Some(1024));
    assert!(stats.fds_by_type.is_some());
    assert_eq!(stats.peak_resident_bytes, 2048 * 1024);
}

#[test]
fn unlimited_open_files_is_no_limit() {
    let dir = fixture();
    fs::write(
        dir.path().join("self/limits"),
        "Limit Soft Limit Hard Limit Units\nMax open files unlimited unlimited files\n",
    )
    .unwrap();
    let stats = ProcReader::with_root(dir.path()).read(true).unwrap();
    assert_eq!(stats.max_fds, None);
}

#[test]
fn missing_files_are_read_errors_naming_the_file() {
    for file in [
        "self/statm",
        "self/status",
        "self/limits",
        "self/stat",
        "stat",
    ] {
        let dir = fixture();
        fs::remove_file(dir.path().join(file)).unwrap();
        expect_err_naming(
            ProcReader::with_root(dir.path()).read(true),
            &dir.path().join(file),
            false,
        );
    }
    let dir = fixture();
    fs::remove_dir_all(dir.path().join("self/fd")).unwrap();
    expect_err_naming(
        ProcReader::with_root(dir.path()).read(true),
        &dir.path().join("self/fd"),
        false,
    );
}

#[test]
fn garbage_files_are_parse_errors_naming_the_file() {
    for (file, content) in [
        ("self/statm", "pages and pages\n"),
        ("self/statm", ""),
        ("self/status", "Name:\tx\nThreads:\t3\n"),
        (
            "self/status",
            "VmHWM:\t12 parsecs\nVmSwap:\t0 kB\nThreads:\t1\n",
        ),
        ("self/stat", "4242 no closing paren S 1\n"),
        ("self/stat", "4242 (short) S 1 2\n"),
        ("self/limits", "Max open files lots lots files\n"),
        ("self/limits", "nothing here\n"),
        ("stat", "cpu 1 2 3\n"),
        ("stat", "btime yesterday\n"),
        ("self/statm", "\u{0}\u{ff}\u{fe}"),
    ] {
        let dir = fixture();
        fs::write(dir.path().join(file), content).unwrap();
        expect_err_naming(
            ProcReader::with_root(dir.path()).read(true),
            &dir.path().join(file),
            true,
        );
    }
}

#[test]
fn invalid_utf8_is_a_parse_error() {
    let dir = fixture();
    fs::write(dir.path().join("self/statm"), [0xff, 0xfe, b' ', b'1']).unwrap();
    expect_err_naming(
        ProcReader::with_root(dir.path()).read(true),
        &dir.path().join("self/statm"),
        true,
    );
}

#[test]
fn a_reader_recovers_once_the_tree_is_repaired() {
    let dir = fixture();
    let mut reader = ProcReader::with_root(dir.path());
    fs::write(dir.path().join("self/status"), "garbage\n").unwrap();
    assert!(reader.read(true).is_err());
    fs::write(dir.path().join("self/status"), STATUS).unwrap();
    assert_eq!(reader.read(true).unwrap().threads, 7);
}
