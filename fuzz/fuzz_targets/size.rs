//! Sizes, durations, fractions, addresses and restart actions as operators write them in
//! `LEAKGUARD_*` variables: any text gives a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = leakguard::parse_size("LEAKGUARD_LIMIT", text)
        && bytes < 1 << 60
    {
        // What leakguard prints, it reads back, to the printed precision (one decimal: 5%).
        // (Near u64::MAX the rounded value no longer fits: sizes of an exbibyte are not
        // limits anyone sets.)
        let shown = leakguard::format_bytes(bytes);
        let again = leakguard::parse_size("LEAKGUARD_LIMIT", &shown)
            .unwrap_or_else(|e| panic!("{text:?} -> {bytes} -> {shown:?} does not parse: {e}"));
        assert!(
            again.abs_diff(bytes) <= bytes / 20 + 1,
            "{text:?} -> {bytes} -> {shown:?} -> {again}"
        );
    }
    if let Ok(d) = leakguard::parse_duration("LEAKGUARD_INTERVAL", text) {
        let _ = d.as_secs_f64();
    }
    if let Ok(f) = leakguard::parse_fraction("LEAKGUARD_WARN", text) {
        assert!(f.is_finite(), "{text:?} -> {f}");
    }
    let _ = leakguard::parse_addr("LEAKGUARD_ADDR", text);
    if let Ok(action) = leakguard::RestartAction::parse("LEAKGUARD_RESTART_ACTION", text) {
        let _ = action.to_string();
    }
});
