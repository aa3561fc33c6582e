//! Invite mode's gate (access-v1): a signed envelope (or anything else) on a session's
//! `to-camera` topic, then the bearer token and MQTT password checks.
#![no_main]

use edgecam::access::gate::{AccessPolicy, Gate};
use edgecam::access::keys::Secret;
use edgecam::signaling::protocol::SessionId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let policy = AccessPolicy {
        camera_id: "cam".into(),
        secret: Secret::from_bytes([7; 32]),
        revoked: ["mallory".to_owned()].into_iter().collect(),
    };
    let session = SessionId::parse("s1").expect("valid id");
    let mut gate = Gate::new(policy.clone());
    // Twice: the second pass goes through the replay cache.
    let _ = gate.admit(&session, data, 1_800_000_000_000, true);
    let _ = gate.admit(&session, data, 1_800_000_000_000, false);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = policy.admits_bearer(text, 1_800_000_000);
        let (user, pass) = text.split_once('\n').unwrap_or((text, ""));
        let _ = policy.admits_token(user, pass, 1_800_000_000);
    }
});
