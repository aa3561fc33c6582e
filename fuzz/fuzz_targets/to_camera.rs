//! An MQTT payload and topic as the camera receives them: topic → session id, payload
//! → protocol 1 message (signaling-v1, "Messages").
#![no_main]

use edgecam::signaling::protocol::{Id, Topics, parse_to_camera};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_to_camera(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let topics = Topics::new("edgecam", Id::parse("cam").expect("valid id"));
        let _ = topics.parse_to_camera(text);
    }
});
