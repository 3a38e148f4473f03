//! The `LEAKGUARD_*` environment as a whole: lines `NAME=value`. A bad set is refused with an
//! error naming a variable and leaves the configuration as it was; a good one validates.
//! Every variable the guard reads goes through `Config::apply_env`, `LEAKGUARD_DUMP_DIR`
//! included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("LEAKGUARD_{}", k.trim()), v.to_owned()))
        .collect();
    let mut config = leakguard::Config::default();
    let before = format!("{config:?}");
    match config.apply_env(|k| vars.get(k).cloned()) {
        Ok(()) => {
            config
                .validate()
                .expect("an applied configuration validates");
        }
        Err(e) => {
            assert!(e.to_string().contains("LEAKGUARD_"), "unnamed error: {e}");
            assert_eq!(
                format!("{config:?}"),
                before,
                "a refused environment changed the config"
            );
        }
    }
});
