//! End to end in a real browser: Debian's Chromium (driven by playwright-core) loads the
//! viewer page, connects to the broker over MQTT-over-WebSocket, offers, and decodes
//! H.264 with Opus audio. Camera side and browser run in separate network namespaces
//! joined by a veth link, with no route anywhere else.

mod common;

use common::browser::run_browser;
use common::netns::NetPair;
use common::{Edgecam, Mosquitto};
use serde_json::Value;

fn assert_watchable(result: &Value) {
    let stats = &result["stats"];
    assert_eq!(result["ok"], true, "browser did not play: {result:#}");
    assert!(
        stats["framesDecoded"].as_u64().unwrap_or(0) > 10,
        "{result:#}"
    );
    assert!(
        stats["audioPacketsReceived"].as_u64().unwrap_or(0) > 10,
        "{result:#}"
    );
    assert_eq!(stats["videoCodec"], "video/H264", "{result:#}");
    assert_eq!(stats["audioCodec"], "audio/opus", "{result:#}");
    assert!(stats["width"].as_u64().unwrap_or(0) > 0, "{result:#}");
    // Chromium may know its own side only as peer-reflexive; the camera's side must be
    // its host candidate: a direct path over the veth link, no relay.
    let pair = stats["candidatePair"].as_str().unwrap_or("");
    assert!(
        pair.contains("/host udp"),
        "direct host path over the veth link: {result:#}"
    );
    assert!(
        stats["firstFrameMs"].as_f64().is_some(),
        "first frame timed: {result:#}"
    );
}

#[test]
fn chromium_plays_via_external_mosquitto_over_websocket() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    let _broker = Mosquitto::start_in(&net.camera, 1883, 9001);
    let config = format!(
        "[camera]\nid = \"porch\"\nname = \"Porch\"\n[video]\nsource = \"test\"\nwidth = 640\nheight = 360\n\
         [audio]\nsource = \"test\"\n[signaling]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [http]\nlisten = \"0.0.0.0:8080\"\nbroker_ws_url = \"ws://{}:9001\"\n",
        net.camera_ip
    );
    let cam = Edgecam::start_in(Some(&net.camera), Some(&config));
    let result = run_browser(
        &net,
        &format!("http://{}:8080/?camera=porch", net.camera_ip),
        "external-mosquitto",
    );
    assert_watchable(&result);
    assert!(cam.log_text().contains("new session"), "{}", cam.log_text());
}

#[test]
fn chromium_plays_standalone_with_no_config_at_all() {
    let net = NetPair::new().expect("network namespaces (needs root)");
    // No config file: embedded broker, served page, test pattern and tone.
    let cam = Edgecam::start_in(Some(&net.camera), None);
    let result = run_browser(
        &net,
        &format!("http://{}:8080/", net.camera_ip),
        "standalone",
    );
    assert_watchable(&result);
    let log = cam.log_text();
    assert!(
        log.contains("no camera found: streaming the test pattern with a test tone"),
        "{log}"
    );
    assert!(log.contains("embedded MQTT broker"), "{log}");
}
