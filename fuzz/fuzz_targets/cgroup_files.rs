//! The parsers of `/proc/self/cgroup`, `/proc/self/mountinfo` and the cgroup memory files, and
//! the resolution of a cgroup path below a mount, on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        leakguard::fuzzing::cgroup_files(text);
    }
});
