//! The parsers of `/proc/self/status`, `/proc/self/stat`, `/proc/self/limits` and `/proc/stat`
//! on arbitrary text: a value or an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        leakguard::fuzzing::proc_files(text);
    }
});
