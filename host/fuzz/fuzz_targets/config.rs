//! The config loader on arbitrary text: a config is accepted or refused with a
//! message naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = boulder::config::Config::parse(text, Path::new("/fuzz/boulder.toml")) {
        assert!(
            e.to_string().starts_with("config /fuzz/boulder.toml"),
            "{e}"
        );
    }
});
