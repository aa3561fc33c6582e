//! An H.264 access unit as a UVC camera hands it over in passthrough: NAL unit split,
//! IDR with SPS/PPS detection, `profile-level-id` from the SPS.
#![no_main]

use edgecam::media::h264;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for nal in h264::nal_units(data) {
        let _ = h264::nal_type(nal);
    }
    let _ = h264::is_self_contained_idr(data);
    let _ = h264::profile_level_id(data);
});
