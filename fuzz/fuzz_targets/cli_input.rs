//! `leakguard analyze` input: CSV or a Prometheus `query_range` answer, read, checked, replayed
//! through the detector and rendered.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    leakguard::fuzzing::cli_input(data);
});
