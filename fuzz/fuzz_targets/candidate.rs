//! A remote ICE candidate line as a viewer trickles it: the parser webrtc-rs applies to
//! it (`add_ice_candidate`), which edgecam also uses for its candidate diagnostics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = rtc::ice::candidate::unmarshal_candidate(line);
        let _ = rtc::ice::candidate::unmarshal_candidate(line.trim_start_matches("candidate:"));
    }
});
