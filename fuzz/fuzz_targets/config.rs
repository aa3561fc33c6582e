//! The configuration file (TOML → validated `Config`) and the broker URL on its own.
#![no_main]

use edgecam::config::{BrokerUrl, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, "fuzz");
        let _ = BrokerUrl::parse(text);
    }
});
