//! What a post-mortem dump needs in memory, measured with jemalloc's per-thread peak
//! (`thread.peak`): the dump runs at the edge of the limit (before a restart), so it must not
//! need memory in proportion to what it writes beyond the text it is given.
#![cfg(feature = "jemalloc")]
#![allow(clippy::unwrap_used)]

#[global_allocator]
static A: leakguard::Jemalloc = leakguard::Jemalloc;

fn thread_peak_reset() {
    // SAFETY: `thread.peak.reset` is a void mallctl: no old or new value.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.peak.reset".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(rc, 0, "thread.peak.reset");
}

/// The calling thread's peak of allocated minus freed bytes since the last reset.
fn thread_peak() -> u64 {
    // SAFETY: `thread.peak.read` is documented as a readable uint64_t.
    unsafe { tikv_jemalloc_ctl::raw::read::<u64>(b"thread.peak.read\0") }.unwrap()
}

/// A report of `n` entries, about 100 bytes each, as a JSON text.
fn big_report(n: usize) -> String {
    let mut s = String::from("{\"state\":\"critical\",\"entries\":[");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"name\":\"entry-{i}\",\"bytes\":{},\"share\":0.{i:06},\"note\":\"a \\\"quoted\\\" word\"}}",
            i * 4096
        ));
    }
    s.push_str("]}");
    s
}

/// The peak extra heap of writing one dump of `report` (with a 1 MiB profile), bytes.
fn peak_of_a_dump(dir: &std::path::Path, report: &str) -> u64 {
    let profile = vec![0x1f_u8; 1 << 20];
    thread_peak_reset();
    let out = leakguard::profile::write_dump(dir, "test", report, Ok(profile), 1.7e9).unwrap();
    let peak = thread_peak();
    assert_eq!(out.files.len(), 2);
    // What was written is the report, whole and readable.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out.files[0]).unwrap()).unwrap();
    assert_eq!(written["reason"], "test");
    assert_eq!(written["report"]["state"], "critical");
    peak
}

#[test]
fn a_dump_needs_no_memory_in_proportion_to_its_report() {
    let dir = tempfile::tempdir().unwrap();
    // Warm up (the directory listing of the pruning, buffers of the first write).
    peak_of_a_dump(dir.path(), &big_report(10));
    let small = peak_of_a_dump(dir.path(), &big_report(1_000));
    let report = big_report(100_000);
    assert!(report.len() > 8 << 20, "{}", report.len());
    let large = peak_of_a_dump(dir.path(), &report);
    eprintln!(
        "peak extra heap of a dump: {small} bytes with a {} KiB report, {large} bytes with a {} KiB one",
        big_report(1_000).len() >> 10,
        report.len() >> 10
    );
    // The profile given (1 MiB) is not copied, the report is not built as a tree nor encoded
    // again as a whole: what the dump needs stays under half a MiB whatever the report's size.
    assert!(
        large < 512 << 10,
        "a dump of a {} byte report needed {large} bytes at its peak (with a small report: {small})",
        report.len()
    );
}

#[test]
fn a_report_beyond_the_cap_is_left_out_and_the_dump_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let huge = format!(
        "\"{}\"",
        "x".repeat(leakguard::profile::MAX_REPORT_BYTES + 1)
    );
    let out = leakguard::profile::write_dump(dir.path(), "test", &huge, Err("off".into()), 1.7e9)
        .unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out.files[0]).unwrap()).unwrap();
    assert!(
        written["report"].is_null(),
        "{}",
        written["report_left_out"]
    );
    assert!(
        written["report_left_out"]
            .as_str()
            .unwrap()
            .contains("more than the"),
        "{written}"
    );
    assert!(std::fs::metadata(&out.files[0]).unwrap().len() < 4096);
}
