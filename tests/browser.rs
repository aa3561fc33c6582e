//! End to end in a real browser: Debian's Chromium (driven by playwright-core) loads the
//! viewer page, connects to the broker over MQTT-over-WebSocket, offers, and decodes
//! H.264 with Opus audio. Camera side and browser run in separate network namespaces
//! joined by a veth link, with no route anywhere else.

mod common;

use common::netns::NetPair;
use common::{Edgecam, Mosquitto};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn run_browser(net: &NetPair, url: &str, name: &str) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join(format!("{name}.png"));
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &net.viewer, "node"])
        .arg(dir.join("view.mjs"))
        .args(["--url", url, "--timeout-ms", "45000", "--screenshot"])
        .arg(&shot)
        .arg("--user-data-dir")
        .arg(profile.path())
        .output()
        .expect("node is installed (scripts/setup.sh --test)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let result: Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "browser driver printed no result.\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(shot.exists(), "screenshot saved");
    result
}

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
