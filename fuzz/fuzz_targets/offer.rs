//! The offer checks: SDP, its H.264 fmtp lines and `profile-level-id`, against the
//! camera's encoder (the first byte picks which, and whether it has a VP8 rung).
#![no_main]

use edgecam::peer::sdp::{SendCapability, check_offer};
use libfuzzer_sys::fuzz_target;

const PROFILES: [&str; 4] = ["42e01f", "42c01f", "640c1f", "4d401f"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(sdp) = std::str::from_utf8(rest) else {
        return;
    };
    let cap = SendCapability {
        profile_level_id: PROFILES[usize::from(pick) % PROFILES.len()].to_owned(),
        vp8: pick & 0x80 != 0,
    };
    let _ = check_offer(sdp, &cap);
});
