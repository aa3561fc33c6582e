//! A message on a viewer's `control` data channel (`edgecam::peer::control`), as text
//! and as binary, at advancing times so the budgets refill: whatever comes, the reply is
//! JSON with `"ok": false` and an error code, or a command to run.
#![no_main]

use edgecam::peer::control::{Action, Control};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let mut control = Control::default();
    let t0 = Instant::now();
    for (i, text) in [true, false].into_iter().enumerate() {
        let now = t0 + Duration::from_secs(i as u64 * 10);
        if let Action::Reply(reply) = control.handle(now, data, text) {
            let v: serde_json::Value = serde_json::from_str(&reply).expect("replies are JSON");
            assert_eq!(v["ok"], false);
            assert!(v["error"].is_string());
        }
    }
});
