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

/// A jemalloc `heap_v2` text of `stacks` distinct stacks of 64 frames, made as it is read
/// (the test holds none of it): stack `i` has `1024 + (i * 7919) % stacks` bytes in one
/// sampled object, so the largest are spread through the text, and its leaf address is
/// `i + 1`.
struct SyntheticDump {
    stacks: usize,
    next: usize,
    line: Vec<u8>,
    at: usize,
}

impl SyntheticDump {
    fn new(stacks: usize) -> Self {
        SyntheticDump {
            stacks,
            next: 0,
            line: b"heap_v2/524288\n  t*: 1: 1 [0: 0]\n".to_vec(),
            at: 0,
        }
    }

    fn bytes_of(&self, i: usize) -> usize {
        1024 + (i * 7919) % self.stacks
    }
}

impl std::io::Read for SyntheticDump {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write as _;
        if self.at == self.line.len() {
            self.line.clear();
            self.at = 0;
            if self.next < self.stacks {
                let i = self.next;
                write!(self.line, "@ 0x{:x}", i + 1)?;
                for k in 1..64 {
                    write!(self.line, " 0x7f00{:08x}", (i * 64 + k) as u64)?;
                }
                writeln!(self.line, "\n  t*: 1: {} [0: 0]", self.bytes_of(i))?;
                self.next += 1;
            } else if self.next == self.stacks {
                self.line
                    .extend_from_slice(b"\nMAPPED_LIBRARIES:\n00400000-00452000 r-xp 0 0:0 1 /x\n");
                self.next += 1;
            } else {
                return Ok(0);
            }
        }
        let n = out.len().min(self.line.len() - self.at);
        out[..n].copy_from_slice(&self.line[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Parses a synthetic dump of `stacks` stacks as it is read; returns the profile, the text's
/// length and the peak extra heap of parsing it.
fn parse_synthetic(stacks: usize) -> (leakguard::profile::HeapProfile, u64, u64) {
    struct Counting<R>(R, u64);
    impl<R: std::io::Read> std::io::Read for Counting<R> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(out)?;
            self.1 += n as u64;
            Ok(n)
        }
    }
    let mut text = Counting(SyntheticDump::new(stacks), 0);
    thread_peak_reset();
    let p = leakguard::profile::HeapProfile::read_jeheap(
        std::io::BufReader::with_capacity(64 << 10, &mut text),
        0.0,
    )
    .unwrap();
    let peak = thread_peak();
    (p, text.1, peak)
}

#[test]
fn a_heap_dump_is_parsed_as_it_is_read_in_bounded_memory_keeping_the_largest_stacks() {
    use leakguard::profile::{MAX_STACKS, MAX_STACKS_WHILE_PARSING};
    let (small, small_len, small_peak) = parse_synthetic(MAX_STACKS_WHILE_PARSING);
    let stacks = 50_021; // prime: `i * 7919 % stacks` takes every value once
    let (p, len, peak) = parse_synthetic(stacks);
    eprintln!(
        "parsing a heap dump: {small_peak} bytes at the peak for {small_len} bytes of text, \
         {peak} bytes for {len} bytes of text"
    );
    assert!(len > 40 << 20, "{len}");
    // Bounded: the stacks held while parsing (at most 8192 of 64 frames, 4 MiB of
    // addresses, and their index), the read buffer and one line; not the text.
    assert!(
        peak < 8 << 20,
        "parsing {len} bytes of heap dump needed {peak} bytes at its peak"
    );
    assert!(
        peak < small_peak + (1 << 20),
        "{peak} for {len} bytes of text, {small_peak} for {small_len}"
    );
    assert_eq!(small.stacks.len(), MAX_STACKS);
    // The largest stacks are kept, largest first, and the others counted.
    assert_eq!(p.stacks.len(), MAX_STACKS);
    assert_eq!(p.dropped_stacks, stacks - MAX_STACKS);
    let dump = SyntheticDump::new(stacks);
    let mut raw: Vec<usize> = p
        .stacks
        .iter()
        .map(|s| dump.bytes_of(s.addrs[0] - 1))
        .collect();
    assert!(raw.windows(2).all(|w| w[0] > w[1]), "largest first");
    raw.sort_unstable();
    let expected: Vec<usize> = (1024 + stacks - MAX_STACKS..1024 + stacks).collect();
    assert_eq!(
        raw, expected,
        "exactly the largest {MAX_STACKS} stacks are kept"
    );
    assert!(p.stacks.iter().all(|s| s.addrs.len() == 64));
}
