//! `ProcReader` on this process's real `/proc`.
#![allow(clippy::unwrap_used)]

use leakguard::process::ProcReader;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MIB: u64 = 1024 * 1024;

#[test]
fn resident_rises_when_64_mib_are_touched() {
    let mut reader = ProcReader::new();
    reader.read(true).unwrap();
    let before = reader.read(false).unwrap();
    let size = 64 * MIB as usize;
    let mut block: Vec<u8> = Vec::with_capacity(size);
    // Touch every page so it becomes resident.
    block.resize(size, 1);
    std::hint::black_box(&mut block);
    let fast = reader.read(false).unwrap();
    assert!(
        fast.resident_bytes >= before.resident_bytes + 48 * MIB,
        "resident {} -> {}",
        before.resident_bytes,
        fast.resident_bytes
    );
    assert!(fast.virtual_bytes >= before.virtual_bytes + 48 * MIB);
    assert!(fast.peak_resident_bytes >= fast.resident_bytes);
    let full = reader.read(true).unwrap();
    assert!(full.resident_bytes >= before.resident_bytes + 48 * MIB);
    assert!(full.peak_resident_bytes >= full.resident_bytes);
    drop(block);
}

#[test]
fn start_time_is_in_the_recent_past_and_stable() {
    let mut reader = ProcReader::new();
    let stats = reader.read(true).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let age = now - stats.start_time_seconds;
    // Clock ticks (1/100 s) and btime (whole seconds) round: allow a second either side.
    assert!(
        age > -1.0,
        "start time {} is after now {now}",
        stats.start_time_seconds
    );
    assert!(age < 3600.0, "start time is {age} s ago");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        reader.read(true).unwrap().start_time_seconds,
        stats.start_time_seconds
    );
    assert_eq!(
        reader.read(false).unwrap().start_time_seconds,
        stats.start_time_seconds
    );
}

#[test]
fn max_fds_is_the_soft_rlimit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills in the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let expected = (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur);
    let stats = ProcReader::new().read(true).unwrap();
    assert_eq!(stats.max_fds, expected);
}

#[test]
fn fast_reading_repeats_the_last_full_reading() {
    let mut reader = ProcReader::new();
    let full = reader.read(true).unwrap();
    let fast = reader.read(false).unwrap();
    assert!(full.fds_by_type.is_some());
    assert_eq!(fast.fds_by_type, full.fds_by_type);
    assert_eq!(fast.max_fds, full.max_fds);
    assert_eq!(fast.swap_bytes, full.swap_bytes);
    assert!(fast.peak_resident_bytes >= full.peak_resident_bytes);
    assert!(fast.resident_bytes > 0 && fast.virtual_bytes >= fast.resident_bytes);
    assert!(fast.threads >= 1 && fast.open_fds >= 3);
}

#[test]
fn readings_match_proc_status() {
    let status_kib = |key: &str| -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    // VmHWM only grows (other tests allocate meanwhile): bracket the reading.
    let hwm_before = status_kib("VmHWM:");
    let stats = ProcReader::new().read(true).unwrap();
    let hwm_after = status_kib("VmHWM:");
    assert!(hwm_before <= stats.peak_resident_bytes && stats.peak_resident_bytes <= hwm_after);
    assert!(stats.swap_bytes <= status_kib("VmSwap:") + 64 * MIB);
}
